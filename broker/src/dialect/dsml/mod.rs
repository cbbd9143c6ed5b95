//! # The DSML dialect (`spec/dsml.md`)
//!
//! Modelled on the SOAP session extensions of [MS-DSML] and DSML Services for Windows. SOAP 1.1
//! only. Clients steer sessions with one header element in the namespace
//! `urn:schema-microsoft-com:activedirectory:dsmlv2`:
//!
//! ```xml
//! <ad:BeginSession xmlns:ad="urn:schema-microsoft-com:activedirectory:dsmlv2" se:mustUnderstand="1"/>
//! <ad:Session      xmlns:ad="…" ad:SessionID="…" se:mustUnderstand="1"/>
//! <ad:EndSession   xmlns:ad="…" ad:SessionID="…" se:mustUnderstand="1"/>
//! ```
//!
//! (prefixed or in a default namespace; the ID qualified, as the Microsoft client writes it, or
//! unqualified, as the schema declares it). The Body holds exactly one DSML `batchRequest`, which is
//! routed to the endpoint's service named `batchRequest` like any other service call; the reply
//! Body holds the backend's `batchResponse`. Every successful reply of a request that named a
//! session carries `<ad:Session xmlns:ad="…" ad:SessionID="…"/>`, after EndSession too (with the ID
//! just removed), never marked mustUnderstand.
//!
//! The session engine does the rest, as for every dialect: limits in total and per client IP,
//! IP and credential matching, the idle timeout reset by every request (endpoint settings with
//! DSML's defaults, see the configuration reference). Every error becomes one of DSML's three
//! faults in one place, [`faults`].

pub mod faults;
mod read;
pub mod wsdl;

pub use faults::DsmlError;
pub use read::{DSML_CORE_NS, NS};

use super::{body, Dialect, HttpInfo, HttpReply, ReadResult, Rejection};
use crate::engine::{Failure, FailureKind, Reply, Response};
use crate::soap::{self, Envelope, SoapError, SoapVersion};
use actix_web::http::StatusCode;

/// The envelope prefix of every DSML reply: [MS-DSML] §3.1.4.4 writes its faults as `SOAP:Client`,
/// and the success replies use the same prefix for consistency.
pub const ENVELOPE_PREFIX: &str = "SOAP";

/// The reply to a request whose session lost its directory connection (see `write_reply`).
pub const CONNECTION_LOST: &str = "<batchResponse xmlns=\"urn:oasis:names:tc:DSML:2:0:core\"><errorResponse type=\"connectionClosed\"><message>this session's directory connection was lost with the broker or worker that held it; this batch did not complete; the session's next request gets a fresh connection (paged searches begin again)</message></errorResponse></batchResponse>";

/// The reply to a batchRequest followed by another element in the Body (nothing of it ran).
pub const SECOND_BODY_ELEMENT: &str = "<batchResponse xmlns=\"urn:oasis:names:tc:DSML:2:0:core\"><errorResponse type=\"malformedRequest\"><message>the SOAP Body holds an element after the batchRequest; a DSML request is one batchRequest; nothing of this batch ran</message></errorResponse></batchResponse>";

/// The service a `batchRequest` is routed to on a DSML endpoint.
pub const SERVICE: &str = "batchRequest";

/// What a DSML reply must remember from its request.
#[derive(Debug, Clone, Default)]
pub struct DsmlContext {
    /// The session the request named (Session / EndSession), echoed in the reply even after
    /// EndSession removed it.
    pub session_id: Option<String>,
}

/// The DSML dialect of one endpoint.
pub struct Dsml {
    max_requests_per_batch: usize,
}

impl Dsml {
    /// `max_requests_per_batch`: the endpoint's limit on operations in one `batchRequest`.
    pub fn new(max_requests_per_batch: usize) -> Dsml {
        Dsml {
            max_requests_per_batch,
        }
    }
}

impl Dialect for Dsml {
    type ReplyContext = DsmlContext;
    type Error = DsmlError;
    const NAME: &'static str = "dsml";

    /// SOAP 1.1 only: a SOAP 1.2 envelope gets a SOAP 1.1 VersionMismatch fault.
    fn accepts_version(&self, version: SoapVersion) -> bool {
        version == SoapVersion::V11
    }

    fn understands(&self, namespace: Option<&str>, local_name: &str) -> bool {
        namespace == Some(NS) && matches!(local_name, "BeginSession" | "Session" | "EndSession")
    }

    fn read_request(&self, envelope: Envelope, http: &HttpInfo) -> ReadResult<Self> {
        let (mut request, cx) = read::read(envelope, self.max_requests_per_batch)
            .map_err(|(error, context)| Rejection { error, context })?;
        request.principal = http.principal.clone();
        request.client_ip = http.client_ip;
        if let Some(call) = &mut request.call {
            call.credential = http.credential.clone();
        }
        Ok((request, cx))
    }

    fn write_error(&self, _version: SoapVersion, cx: DsmlContext, error: DsmlError) -> HttpReply {
        match error {
            // Bad DSML, not bad SOAP: the gateway's errorResponse, in a batchResponse. The session
            // the request named (if any) is echoed as the client sent it; it was not used.
            DsmlError::SecondBodyElement => {
                tracing::debug!("DSML malformed request: an element after the batchRequest");
                batch_reply(
                    cx.session_id.as_deref(),
                    bytes::Bytes::from_static(SECOND_BODY_ELEMENT.as_bytes()),
                )
            }
            error => faults::render(&faults::to_fault(&error)),
        }
    }

    fn write_reply(&self, _version: SoapVersion, cx: DsmlContext, response: Response) -> HttpReply {
        // The live session (Begin, Session), else the one EndSession just removed.
        let id = response
            .session
            .as_ref()
            .map(|s| s.id.clone())
            .or(cx.session_id);
        let reply = match response.result {
            Ok(reply) => reply,
            // The session's directory connection went with the broker (or worker) that held it:
            // DSML's connectionClosed, in a batchResponse, and the session lives on (its next
            // request gets a fresh connection).
            Err(Failure {
                kind: FailureKind::DialogLost { .. },
                ..
            }) if id.is_some() => {
                Reply::Body(bytes::Bytes::from_static(CONNECTION_LOST.as_bytes()))
            }
            Err(e) => {
                return faults::render(&faults::to_fault(&DsmlError::Engine(Box::new(e))));
            }
        };
        let body = match reply {
            Reply::Body(b) => b,
            // The engine always calls the batchRequest service; should it answer nothing, the
            // client still needs a batchResponse to parse.
            Reply::Empty | Reply::Ended => bytes::Bytes::from_static(
                b"<batchResponse xmlns=\"urn:oasis:names:tc:DSML:2:0:core\"/>",
            ),
        };
        batch_reply(id.as_deref(), body)
    }

    /// Always SOAP 1.1: VersionMismatch and MustUnderstand as the SOAP layer words them (without
    /// the SOAP 1.2 Upgrade header: this endpoint does not speak 1.2); any other envelope error is
    /// DSML's "Bad Request".
    fn write_soap_error(&self, _version: SoapVersion, error: &SoapError) -> HttpReply {
        faults::render(&faults::soap_fault(error))
    }
}

/// A `batchResponse` in its envelope, with the session header when there is a session. A large
/// one (a search of thousands of entries) is sent as the class wrote it, not copied.
fn batch_reply(session: Option<&str>, batch_response: bytes::Bytes) -> HttpReply {
    let header = session.map(session_header);
    let headers: Vec<&str> = header.iter().map(String::as_str).collect();
    HttpReply {
        status: StatusCode::OK,
        content_type: SoapVersion::V11.content_type().to_string(),
        body: body::envelope(SoapVersion::V11, ENVELOPE_PREFIX, &headers, batch_response),
        outcome: crate::dialect::OK,
    }
}

/// `<ad:Session xmlns:ad="urn:schema-microsoft-com:activedirectory:dsmlv2" ad:SessionID="…"/>`:
/// the qualified ID that the Microsoft client looks for first; never mustUnderstand.
pub fn session_header(id: &str) -> String {
    let mut h = String::with_capacity(96 + id.len());
    h.push_str("<ad:Session xmlns:ad=\"");
    h.push_str(NS);
    h.push_str("\" ad:SessionID=\"");
    soap::escape_attr(id, &mut h);
    h.push_str("\"/>");
    h
}
