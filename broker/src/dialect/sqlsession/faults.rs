//! Every sqlSession error becomes a fault here, and only here.
//!
//! SQL Server's shape ([MS-SSNWS] §4.2.7, ms189538): HTTP 500 for every fault, `xml:space="preserve"`
//! on the envelope, `faultactor` (SOAP 1.2: `Node`) naming SQL Server's SOAP namespace, and the SOAP
//! 1.2 code with two levels of `sqlsoapfaultcode:` subcodes, embedded in `detail` of a SOAP 1.1
//! fault. The faultstring reads `There was an error in the incoming SOAP request packet: Client,
//! SoapHeader, SessionIdIsInvalid`: side, category, code.
//!
//! | failure | side | category, code | Header |
//! | --- | --- | --- | --- |
//! | unknown, expired, malformed or another principal's `sessionId` | Client | SoapHeader, SessionIdIsInvalid | `sqlSession terminate="true"` |
//! | initiate on an endpoint without sessions | Client | SoapHeader, SessionsNotEnabled | – |
//! | two `sqlSession` (or notification) headers, a bad attribute, initiate with a sessionId, notifications without initiate | Client | SoapHeader, InvalidHeader | – |
//! | not a SOAP envelope | Client | InvalidXml | – |
//! | a method the endpoint does not offer | Client | SoapMethod, MethodNotFound | – |
//! | a batch that cannot run as sent (its parameters, its size) | Client | SoapMethod, InvalidParameter | – |
//! | the endpoint's session limit | Server | SoapHeader, SessionLimitReached | – |
//! | every database connection busy or held by a session (queue full) | Server | SqlConnection, ConnectionLimitReached | – |
//! | the session's connection was lost with the broker holding it | Server | SqlConnection, SessionConnectionLost | – |
//! | anything else (the database unreachable, a timeout, an internal error) | Server | SqlServer, InternalError | – |
//!
//! A terminate whose body failed ended the session all the same: its fault carries
//! `sqlSession terminate="true" sessionId="…"` in the Header, as a successful terminate does.
//!
//! The session fault is one and the same for every cause, byte for byte: no ID, no reason, no
//! time. Only the log tells them apart. The other faults add a short reason after the code triple,
//! which SQL Server's own texts lack; they name nothing secret.

use super::{SqlContext, FAULT_ACTOR};
use crate::dialect::HttpReply;
use crate::engine::{Failure, FailureKind, RetryCause, Rule};
use crate::soap::{self, SoapError, SoapVersion};
use actix_web::http::StatusCode;

/// The namespace of the fault subcodes.
pub const FAULT_CODE_NS: &str = "http://schemas.microsoft.com/sqlserver/2004/SOAP/SqlSoapFaultCode";

/// Everything that can go wrong in a sqlSession request before or after the engine.
#[derive(Debug)]
pub enum SqlError {
    /// Two `sqlSession` (or `environmentChangeNotifications`) headers.
    SeveralHeaders(&'static str),
    /// An attribute whose value is not of its type.
    BadAttribute {
        attribute: &'static str,
    },
    /// `initiate` with `sessionId` or `terminate`.
    InitiateWithSession,
    /// `initiate` on an endpoint with `sessions = false`.
    SessionsDisabled,
    /// Neither `initiate` nor a `sessionId`.
    NoSessionId,
    NotificationsWithoutInitiate,
    NotificationsNotEmpty,
    /// The SOAP layer refused the envelope.
    Soap(String),
    /// Failures of the session engine.
    Engine(Box<Failure>),
}

/// One fault, before it is written.
struct SqlFault {
    sender: bool,
    codes: &'static [&'static str],
    reason: Option<String>,
    terminate_header: bool,
}

fn client(codes: &'static [&'static str], reason: impl Into<String>) -> SqlFault {
    SqlFault {
        sender: true,
        codes,
        reason: Some(reason.into()),
        terminate_header: false,
    }
}

fn server(codes: &'static [&'static str], reason: impl Into<String>) -> SqlFault {
    SqlFault {
        sender: false,
        codes,
        reason: Some(reason.into()),
        terminate_header: false,
    }
}

const SESSION: &[&str] = &["SoapHeader", "SessionIdIsInvalid"];
const HEADER: &[&str] = &["SoapHeader", "InvalidHeader"];
const INTERNAL: &[&str] = &["SqlServer", "InternalError"];

fn classify(error: &SqlError) -> SqlFault {
    match error {
        SqlError::SeveralHeaders(name) => client(HEADER, format!("only one {name} header may appear in a request")),
        SqlError::BadAttribute { attribute } => client(HEADER, format!("the {attribute} attribute has a value of the wrong type")),
        SqlError::InitiateWithSession => client(HEADER, "initiate cannot be combined with sessionId or terminate"),
        SqlError::SessionsDisabled => client(&["SoapHeader", "SessionsNotEnabled"], "sessions are not enabled on this endpoint"),
        SqlError::NoSessionId => client(HEADER, "sqlSession needs initiate=\"true\" or a sessionId"),
        SqlError::NotificationsWithoutInitiate => client(HEADER, "environmentChangeNotifications may only appear with sqlSession initiate=\"true\""),
        SqlError::NotificationsNotEmpty => client(HEADER, "environmentChangeNotifications must be empty"),
        SqlError::Soap(reason) => client(&["InvalidXml"], reason.clone()),
        SqlError::Engine(failure) => match &failure.kind {
            FailureKind::UnknownSession { .. } => SqlFault {
                sender: true,
                codes: SESSION,
                reason: None,
                terminate_header: true,
            },
            FailureKind::Rule(Rule::UnknownService { service }) => client(
                &["SoapMethod", "MethodNotFound"],
                format!("this endpoint has no method {service:?}"),
            ),
            FailureKind::Rule(rule) => client(&["SoapMethod", "InvalidRequest"], format!("{rule:?}")),
            FailureKind::Application { string, .. } => {
                client(&["SoapMethod", "InvalidParameter"], string.clone())
            }
            FailureKind::SessionLimit { .. } | FailureKind::SessionNotCreated => server(
                &["SoapHeader", "SessionLimitReached"],
                "no new session can be started now",
            ),
            FailureKind::Retry { cause: RetryCause::Busy, .. } => server(
                &["SqlConnection", "ConnectionLimitReached"],
                "every database connection of this endpoint is in use; try again later",
            ),
            FailureKind::DialogLost { .. } | FailureKind::DialogAborted { .. } => server(
                &["SqlConnection", "SessionConnectionLost"],
                "the session's database connection was lost (the broker holding it stopped): its temporary tables, SET options and open transaction are gone; the session's next request opens a new connection",
            ),
            FailureKind::TimedOut { timeout_ms, .. } => server(
                INTERNAL,
                format!("the database did not answer within {timeout_ms} ms"),
            ),
            FailureKind::Unreachable { .. } => server(INTERNAL, "the database cannot be reached"),
            _ => server(INTERNAL, format!("see the broker log at {}", failure.timestamp())),
        },
    }
}

/// Render an error as SQL Server does (see the module docs).
pub fn render(
    version: SoapVersion,
    cx: &SqlContext,
    error: &SqlError,
    sender_400: bool,
) -> HttpReply {
    let fault = classify(error);
    match error {
        SqlError::Engine(f) if !matches!(f.kind, FailureKind::UnknownSession { .. }) => {
            tracing::debug!(failure = %f, "sqlsession fault");
        }
        _ => {}
    }
    let side = if fault.sender { "Client" } else { "Server" };
    let mut reason = String::from(if fault.sender {
        "There was an error in the incoming SOAP request packet:  "
    } else {
        "There was an error processing the SOAP request:  "
    });
    reason.push_str(side);
    for c in fault.codes {
        reason.push_str(", ");
        reason.push_str(c);
    }
    if let Some(r) = &fault.reason {
        reason.push_str(" (");
        reason.push_str(r);
        reason.push(')');
    }
    let mut out = String::with_capacity(1536);
    let env_ns = match version {
        SoapVersion::V11 => "http://schemas.xmlsoap.org/soap/envelope/",
        SoapVersion::V12 => "http://www.w3.org/2003/05/soap-envelope",
    };
    out.push_str("<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"");
    out.push_str(env_ns);
    out.push_str("\" xml:space=\"preserve\">");
    if fault.terminate_header {
        out.push_str("<SOAP-ENV:Header><sqloptions:sqlSession xmlns:sqloptions=\"");
        out.push_str(cx.namespace);
        out.push_str("\" terminate=\"true\"/></SOAP-ENV:Header>");
    } else if let (Some(id), SqlError::Engine(_)) =
        (cx.session_id.as_ref().filter(|_| cx.terminate), error)
    {
        // A terminate whose body failed: the session ended all the same, and the fault says so.
        out.push_str("<SOAP-ENV:Header>");
        out.push_str(&super::terminate_header(cx.namespace, id));
        out.push_str("</SOAP-ENV:Header>");
    }
    out.push_str("<SOAP-ENV:Body><SOAP-ENV:Fault xmlns:sqlsoapfaultcode=\"");
    out.push_str(FAULT_CODE_NS);
    out.push_str("\">");
    match version {
        SoapVersion::V11 => {
            out.push_str("<faultcode>SOAP-ENV:");
            out.push_str(side);
            out.push_str("</faultcode><faultstring>");
            soap::escape_text(&reason, &mut out);
            out.push_str("</faultstring><faultactor>");
            out.push_str(FAULT_ACTOR);
            out.push_str("</faultactor><detail xmlns:SOAP-1_2-ENV=\"http://www.w3.org/2003/05/soap-envelope\">");
            write_12_body("SOAP-1_2-ENV", fault.sender, fault.codes, &reason, &mut out);
            out.push_str("</detail>");
        }
        SoapVersion::V12 => write_12_body("SOAP-ENV", fault.sender, fault.codes, &reason, &mut out),
    }
    out.push_str("</SOAP-ENV:Fault></SOAP-ENV:Body></SOAP-ENV:Envelope>");
    // SQL Server's: 500 for every fault, Sender ones included; SOAP 1.2's 400 when configured.
    let status = if sender_400 && fault.sender && version == SoapVersion::V12 {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    HttpReply {
        status,
        content_type: version.content_type().to_string(),
        body: out.into_bytes().into(),
        // SQL Server's most specific subcode (`SessionNotFound`, `MethodNotFound`…).
        outcome: std::borrow::Cow::Borrowed(fault.codes.last().copied().unwrap_or(side)),
    }
}

/// Code (with nested subcodes), Reason and Node of a SOAP 1.2 fault, with prefix `p`.
fn write_12_body(p: &str, sender: bool, codes: &[&str], reason: &str, out: &mut String) {
    let value = |v: &str, out: &mut String| {
        out.push('<');
        out.push_str(p);
        out.push_str(":Value>");
        out.push_str(v);
        out.push_str("</");
        out.push_str(p);
        out.push_str(":Value>");
    };
    out.push('<');
    out.push_str(p);
    out.push_str(":Code>");
    value(
        &format!("{p}:{}", if sender { "Sender" } else { "Receiver" }),
        out,
    );
    for c in codes {
        out.push('<');
        out.push_str(p);
        out.push_str(":Subcode>");
        value(&format!("sqlsoapfaultcode:{c}"), out);
    }
    for _ in codes {
        out.push_str("</");
        out.push_str(p);
        out.push_str(":Subcode>");
    }
    out.push_str("</");
    out.push_str(p);
    out.push_str(":Code><");
    out.push_str(p);
    out.push_str(":Reason><");
    out.push_str(p);
    out.push_str(":Text xml:lang=\"en-US\">");
    soap::escape_text(reason, out);
    out.push_str("</");
    out.push_str(p);
    out.push_str(":Text></");
    out.push_str(p);
    out.push_str(":Reason><");
    out.push_str(p);
    out.push_str(":Node>");
    out.push_str(FAULT_ACTOR);
    out.push_str("</");
    out.push_str(p);
    out.push_str(":Node>");
}

/// A SOAP-layer error: VersionMismatch and MustUnderstand as the SOAP layer words them; any other
/// envelope error is SQL Server's `InvalidXml`.
pub fn soap_error(version: SoapVersion, error: &SoapError, sender_400: bool) -> HttpReply {
    let fault = error.to_fault(version);
    if matches!(
        fault.code,
        soap::FaultCode::VersionMismatch | soap::FaultCode::MustUnderstand
    ) {
        return crate::dialect::render_fault(version, &fault);
    }
    render(
        version,
        &SqlContext::default(),
        &SqlError::Soap(fault.reason),
        sender_400,
    )
}
