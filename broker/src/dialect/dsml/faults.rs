//! Every DSML error becomes a fault here, and only here.
//!
//! [MS-DSML] §3.1.4.4 knows three faults, always SOAP 1.1, HTTP 500, with no Header (so never a
//! Session header) and a `detail` that is text:
//!
//! | faultcode | faultstring | detail | when |
//! | --- | --- | --- | --- |
//! | `SOAP:Client` | SOAP Invalid Request | Bad Session Request | unknown, expired or foreign (IP, identity) session; a session limit reached; a session that cannot be created; a Session/EndSession without an ID |
//! | `SOAP:Client` | SOAP Invalid Request | Bad Request | malformed request: empty Body, not a `batchRequest`, several session headers, too many operations, an envelope that is not well-formed SOAP |
//! | `SOAP:Server` | SOAP Server Application Faulted | Internal DSML Server Error | anything else: backend, store, configuration |
//!
//! Unknown and foreign sessions give the same bytes: nothing tells a caller that a session exists.
//! The reasons only reach the log: client errors at debug level, server errors at error level with
//! the details (never a whole session ID).

use super::ENVELOPE_PREFIX;
use crate::dialect::HttpReply;
use crate::engine::{Failure, FailureKind, RetryCause};
use crate::soap::{self, Fault, FaultCode, SoapError, SoapVersion};

/// The faultstring of both client faults.
pub const CLIENT_FAULTSTRING: &str = "SOAP Invalid Request";
/// The detail of a session that cannot be used or created.
pub const BAD_SESSION_REQUEST: &str = "Bad Session Request";
/// The detail of a malformed request.
pub const BAD_REQUEST: &str = "Bad Request";
/// The faultstring of the server fault.
pub const SERVER_FAULTSTRING: &str = "SOAP Server Application Faulted";
/// The detail of the server fault.
pub const SERVER_DETAIL: &str = "Internal DSML Server Error";

/// Everything that can go wrong in a DSML request before or after the engine.
#[derive(Debug)]
pub enum DsmlError {
    /// The Body holds no element.
    EmptyBody,
    /// The Body's element is not `{urn:oasis:names:tc:DSML:2:0:core}batchRequest`.
    NotBatchRequest {
        namespace: Option<String>,
        local_name: String,
    },
    /// More than one of BeginSession, Session, EndSession.
    SeveralSessionHeaders,
    /// A `SessionID` on BeginSession (the server allocates IDs).
    IdWithBeginSession,
    /// Session or EndSession without a (non-empty) `SessionID`.
    MissingSessionId,
    /// More operations in the batch than the endpoint's `max_requests_per_batch`.
    TooManyOperations { max: usize },
    /// The batchRequest could not be read.
    Unreadable(String),
    /// Another element follows the `batchRequest` in the Body: answered, as the DSMLv2 gateway
    /// answers bad DSML, with a `batchResponse` holding `errorResponse type="malformedRequest"`
    /// (see `Dsml::write_error`), not with a fault; nothing of the batch ran.
    SecondBodyElement,
    /// Failures of the session engine.
    Engine(Box<Failure>),
}

/// Which of the three faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    BadSessionRequest,
    BadRequest,
    Server,
}

/// The fault for an error.
pub fn to_fault(error: &DsmlError) -> Fault {
    let kind = match error {
        DsmlError::EmptyBody
        | DsmlError::NotBatchRequest { .. }
        | DsmlError::SeveralSessionHeaders
        | DsmlError::IdWithBeginSession
        | DsmlError::TooManyOperations { .. }
        | DsmlError::SecondBodyElement
        | DsmlError::Unreadable(_) => {
            tracing::debug!(error = ?error, "DSML bad request");
            Kind::BadRequest
        }
        DsmlError::MissingSessionId => {
            tracing::debug!("DSML session header without a SessionID");
            Kind::BadSessionRequest
        }
        DsmlError::Engine(f) => engine_kind(f),
    };
    fault(kind)
}

/// Which fault an engine failure is. The engine logged the details when it classified it.
fn engine_kind(failure: &Failure) -> Kind {
    match &failure.kind {
        FailureKind::UnknownSession { .. } => {
            tracing::debug!(error = %failure, "DSML bad session request");
            Kind::BadSessionRequest
        }
        // A limit reached, or the store refused the new record: [MS-DSML]'s "allocation fails"
        // case, a session request that cannot be processed.
        FailureKind::SessionLimit { .. } | FailureKind::SessionNotCreated => {
            tracing::info!(error = %failure, "DSML BeginSession refused");
            Kind::BadSessionRequest
        }
        // The store is down: the server fault (a retry later may succeed), even for a
        // BeginSession, whose session was not refused but could not be looked at.
        FailureKind::Retry {
            cause: RetryCause::StoreUnavailable,
            ..
        } => {
            tracing::warn!("DSML request failed: the session store is unavailable");
            Kind::Server
        }
        // Backend, store, configuration, and everything else (DSML sends no transaction or
        // subsession commands): a wildcard, so that kinds added later map to the server fault
        // without touching this dialect.
        _ => {
            tracing::error!(error = %failure, "DSML request failed");
            Kind::Server
        }
    }
}

/// The fault for a generic SOAP error: VersionMismatch and MustUnderstand as the SOAP layer words
/// them, always SOAP 1.1 and without the Upgrade header (this endpoint speaks no SOAP 1.2); every
/// other envelope error is a malformed request.
pub fn soap_fault(error: &SoapError) -> Fault {
    match error {
        SoapError::VersionMismatch(_)
        | SoapError::VersionNotServed(_)
        | SoapError::MustUnderstand(_) => {
            let mut f = error.to_fault(SoapVersion::V11);
            f.upgrade = false;
            f
        }
        _ => {
            tracing::debug!(error = %error, "DSML bad request (envelope)");
            fault(Kind::BadRequest)
        }
    }
}

fn fault(kind: Kind) -> Fault {
    let (code, faultstring, detail) = match kind {
        Kind::BadSessionRequest => (FaultCode::Sender, CLIENT_FAULTSTRING, BAD_SESSION_REQUEST),
        Kind::BadRequest => (FaultCode::Sender, CLIENT_FAULTSTRING, BAD_REQUEST),
        Kind::Server => (FaultCode::Receiver, SERVER_FAULTSTRING, SERVER_DETAIL),
    };
    let mut f = Fault::new(code, faultstring);
    f.detail = Some(detail.to_string());
    f
}

/// Render a DSML fault: SOAP 1.1 with the `SOAP` prefix, HTTP 500.
pub fn render(fault: &Fault) -> HttpReply {
    let mut body = Vec::with_capacity(320);
    soap::write_fault_with_prefix(SoapVersion::V11, fault, ENVELOPE_PREFIX, &mut body);
    HttpReply {
        status: fault.status(SoapVersion::V11),
        content_type: SoapVersion::V11.content_type().to_string(),
        body: body.into(),
        outcome: fault.outcome_label(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineError;
    use cookie_store::StoreError;

    fn text(error: DsmlError) -> String {
        let reply = render(&to_fault(&error));
        assert_eq!(reply.status.as_u16(), 500);
        String::from_utf8(reply.body.into_vec()).expect("utf-8")
    }

    #[test]
    fn the_three_faults_have_their_exact_texts() {
        assert_eq!(
            text(DsmlError::EmptyBody),
            "<SOAP:Envelope xmlns:SOAP=\"http://schemas.xmlsoap.org/soap/envelope/\"><SOAP:Body><SOAP:Fault>\
             <faultcode>SOAP:Client</faultcode><faultstring>SOAP Invalid Request</faultstring>\
             <detail>Bad Request</detail></SOAP:Fault></SOAP:Body></SOAP:Envelope>"
        );
        let unknown = text(DsmlError::Engine(Box::new(Failure::from(
            EngineError::UnknownSession("0123456789abcdef0123456789abcdef".into()),
        ))));
        assert!(unknown.contains("<faultcode>SOAP:Client</faultcode><faultstring>SOAP Invalid Request</faultstring><detail>Bad Session Request</detail>"), "{unknown}");
        assert!(!unknown.contains("0123456789"), "{unknown}");
        let server = text(DsmlError::Engine(Box::new(Failure::from(
            EngineError::BackendFailed {
                class: "directory".into(),
                message: "boom".into(),
            },
        ))));
        assert!(server.contains("<faultcode>SOAP:Server</faultcode><faultstring>SOAP Server Application Faulted</faultstring><detail>Internal DSML Server Error</detail>"), "{server}");
        assert!(!server.contains("Header"), "{server}");
    }

    #[test]
    fn a_session_the_store_refused_to_create_is_a_bad_session_request_but_an_unreachable_store_is_the_server_fault(
    ) {
        let engine = |e: EngineError| DsmlError::Engine(Box::new(Failure::from(e)));
        let refused = StoreError::Config("the record was refused".into());
        assert_eq!(
            to_fault(&engine(EngineError::SessionNotCreated(refused)))
                .detail
                .as_deref(),
            Some(BAD_SESSION_REQUEST)
        );
        // Any other store failure is the server's.
        let failed = StoreError::Config("a write failed".into());
        assert_eq!(
            to_fault(&engine(EngineError::Store(failed)))
                .detail
                .as_deref(),
            Some(SERVER_DETAIL)
        );
        // The store being down is the server fault (retry later), at BeginSession too.
        let down = StoreError::Unavailable("the daemon is down".into());
        assert_eq!(
            to_fault(&engine(EngineError::Store(down)))
                .detail
                .as_deref(),
            Some(SERVER_DETAIL)
        );
    }

    #[test]
    fn version_mismatch_is_soap_11_without_upgrade() {
        let f = soap_fault(&SoapError::VersionMismatch(Some(
            "http://www.w3.org/2003/05/soap-envelope".into(),
        )));
        let reply = render(&f);
        let body = String::from_utf8(reply.body.into_vec()).expect("utf-8");
        assert!(
            body.contains("<faultcode>SOAP:VersionMismatch</faultcode>"),
            "{body}"
        );
        assert!(!body.contains("Upgrade"), "{body}");
        assert!(body.starts_with(
            "<SOAP:Envelope xmlns:SOAP=\"http://schemas.xmlsoap.org/soap/envelope/\">"
        ));
    }
}
