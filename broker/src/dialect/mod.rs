//! # Dialects: how a session protocol reads and writes SOAP headers
//!
//! Every session dialect the broker speaks (NonStop and DSML today; SQL Server `sqlSession` later)
//! implements [`Dialect`]. A request passes through its phases in this order, each a trait method:
//!
//! 1. [`Dialect::accepts_version`]: right after the envelope is parsed. Default: SOAP 1.1 and 1.2.
//!    A refused version is answered with a `VersionMismatch` fault.
//! 2. [`Dialect::understands`]: the SOAP mustUnderstand check asks it about each targeted header
//!    block. No default: a dialect must say which blocks are its own.
//! 3. [`Dialect::read_request`]: turns the dialect's headers and the body into a dialect-neutral
//!    [`engine::Request`](crate::engine::Request) plus whatever the dialect needs to remember for the
//!    reply (its `ReplyContext`: the namespace form the client used, the output encoding…), or a
//!    dialect error (header syntax faults) that [`Dialect::write_error`] renders.
//! 4. The session engine runs the request.
//! 5. [`Dialect::write_reply`]: renders the engine's [`Response`], success
//!    or fault, with the dialect's headers.
//!
//! Generic SOAP errors found before the dialect is involved (malformed XML, limits, mustUnderstand)
//! are rendered by [`Dialect::write_soap_error`]; its default renders the plain SOAP fault.

pub mod body;
pub mod dsml;
pub mod encoding;
pub mod nonstop;
pub mod sqlsession;

pub use encoding::{encode_output, OutputEncoding};

use crate::engine::{Request, Response};
use crate::soap::{self, Envelope, Fault, SoapError, SoapVersion};
use actix_web::http::StatusCode;
use std::net::IpAddr;

/// What the HTTP layer knows about a request that a dialect may need.
#[derive(Debug, Clone, Default)]
pub struct HttpInfo {
    pub client_ip: Option<IpAddr>,
    pub principal: Option<String>,
    /// With `auth = "directory"`: the client's Basic credentials, for the class to bind with.
    pub credential: Option<adapters::Credential>,
    /// The SOAPAction header (1.1) or `action` media-type parameter (1.2), unquoted.
    pub soap_action: Option<String>,
    /// The request's valid W3C `traceparent`, if it had one.
    pub trace: Option<crate::tracecontext::TraceParent>,
}

/// A rendered HTTP reply.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: StatusCode,
    pub content_type: String,
    pub body: body::ReplyBody,
    /// The request's outcome for the metrics: `ok`, or the fault's code (the dialect's own where
    /// it has one, such as NonStop's `-1001`).
    pub outcome: std::borrow::Cow<'static, str>,
}

/// The outcome of a request answered without a fault.
pub const OK: std::borrow::Cow<'static, str> = std::borrow::Cow::Borrowed("ok");

/// A request the dialect refused while reading it: the error and what the reply needs to know.
#[derive(Debug)]
pub struct Rejection<E, C> {
    pub error: E,
    pub context: C,
}

/// What [`Dialect::read_request`] returns.
pub type ReadResult<D> = Result<
    (Request, <D as Dialect>::ReplyContext),
    Rejection<<D as Dialect>::Error, <D as Dialect>::ReplyContext>,
>;

/// A session dialect. See the module docs for when each phase runs.
pub trait Dialect: Send + Sync + 'static {
    /// What the dialect remembers between reading a request and writing its reply.
    type ReplyContext: Send + 'static;
    /// The dialect's header errors.
    type Error: std::fmt::Debug + Send + 'static;

    /// The dialect's name as configured (`nonstop`).
    const NAME: &'static str;

    /// Whether the endpoint accepts this SOAP version. Default: both.
    fn accepts_version(&self, _version: SoapVersion) -> bool {
        true
    }

    /// Whether a header block (namespace URI, local name) is one this dialect processes.
    fn understands(&self, namespace: Option<&str>, local_name: &str) -> bool;

    /// Read the dialect's headers and the body into an engine request.
    fn read_request(&self, envelope: Envelope, http: &HttpInfo) -> ReadResult<Self>
    where
        Self: Sized;

    /// Render a header error found by `read_request`.
    fn write_error(
        &self,
        version: SoapVersion,
        cx: Self::ReplyContext,
        error: Self::Error,
    ) -> HttpReply;

    /// Render the engine's response.
    fn write_reply(
        &self,
        version: SoapVersion,
        cx: Self::ReplyContext,
        response: Response,
    ) -> HttpReply;

    /// Render a generic SOAP error (malformed envelope, limits, mustUnderstand). Default: the plain
    /// SOAP fault of `soap.md`.
    fn write_soap_error(&self, version: SoapVersion, error: &SoapError) -> HttpReply {
        render_fault(version, &error.to_fault(version))
    }
}

/// Render a fault as an HTTP reply in UTF-8. A VersionMismatch fault is always SOAP 1.1.
pub fn render_fault(version: SoapVersion, fault: &Fault) -> HttpReply {
    let version = if fault.code == soap::FaultCode::VersionMismatch {
        SoapVersion::V11
    } else {
        version
    };
    let mut body = Vec::with_capacity(512);
    soap::write_fault(version, fault, &mut body);
    HttpReply {
        status: fault.status(version),
        content_type: version.content_type().to_string(),
        body: body.into(),
        outcome: fault.outcome_label(),
    }
}

/// Format milliseconds since the epoch as an RFC 3339 UTC timestamp (`2026-11-21T10:04:05.123Z`).
/// Instants after the year 9999, which RFC 3339 cannot write, are written as its last millisecond.
pub fn rfc3339_utc(ms: u64) -> String {
    // humantime refuses (a formatting error, a panic in `to_string`) from the year 10000 on.
    const LAST_MS: u64 = 253_402_300_799_999;
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.min(LAST_MS));
    humantime::format_rfc3339_millis(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_utc(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
        assert_eq!(rfc3339_utc(u64::MAX), "9999-12-31T23:59:59.999Z");
    }
}
