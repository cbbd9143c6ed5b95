//! Every NonStop error becomes a fault here, and only here.
//!
//! The layout follows NonStop SOAP 3 (Table 4-3): header errors are `SOAP-ENV:Client.Process` with
//! the faultstring "Error processing the header of XML document"; backend and broker errors are
//! `SOAP-ENV:Server…`. The detail always holds `<detailCode>N</detailCode>` and
//! `<detailString ts="RFC 3339 time">text</detailString>`. SOAP 1.2 uses `Sender` / `Receiver` with the
//! same detail. Internal errors (-1) are logged with the same `ts` (by the engine, when it classifies
//! the failure), so an operator can find the log line from the client's fault.
//!
//! Engine failures arrive classified ([`Failure`]): this table maps their kinds, and the session
//! rules, to NonStop's detail codes; the engine's own words serve as the detail text where NonStop
//! had no fixed one (retries, system errors).

use super::NonStopContext;
use crate::dialect::rfc3339_utc;
use crate::engine::{
    DialogTransaction, Failure, FailureKind, RetryCause, Rule, TxnCommand, UnmarshalProblem,
};
use crate::soap::{self, Fault, FaultCode, SoapVersion};
use std::borrow::Cow;

/// Everything that can go wrong in a NonStop request.
#[derive(Debug)]
pub enum NonStopError {
    /// -1010: an element of the NonStop namespace we do not know.
    InvalidTag(String),
    /// -1010: a second Session element.
    DuplicateTag(String),
    /// -1011: an attribute we do not know (attribute, element).
    InvalidAttribute(String, String),
    /// -1004
    BadSessionCommand(String),
    /// -1005
    BadTransactionCommand(String),
    /// -1006
    BadBeginNewTransaction(String),
    /// -1007
    BadOutputEncoding(String),
    /// -1003
    IdWithBegin,
    /// -1002
    NoIdNoBegin,
    /// -1020
    TxnCommandInBegin,
    /// -215: the Body holds no service request where one is needed.
    EmptyBody,
    /// Failures of the session engine.
    Engine(Box<Failure>),
}

/// The header-error faultstring of NonStop SOAP.
pub const HEADER_FAULT: &str = "Error processing the header of XML document";

struct Spec {
    code: FaultCode,
    /// 1.1 dotted sub-code ("Process" → `SOAP-ENV:Client.Process`).
    subcode: Option<&'static str>,
    faultstring: Cow<'static, str>,
    detail_code: i32,
    text: String,
}

fn header(detail_code: i32, text: String) -> Spec {
    Spec {
        code: FaultCode::Sender,
        subcode: Some("Process"),
        faultstring: Cow::Borrowed(HEADER_FAULT),
        detail_code,
        text,
    }
}

fn server(
    subcode: Option<&'static str>,
    faultstring: &'static str,
    detail_code: i32,
    text: String,
) -> Spec {
    Spec {
        code: FaultCode::Receiver,
        subcode,
        faultstring: Cow::Borrowed(faultstring),
        detail_code,
        text,
    }
}

/// The fault for an error. `session_header` is the live session's header block, carried by faults of
/// requests whose session lives on (a reply without it tells the client the session is over).
pub fn to_fault(
    error: &NonStopError,
    version: SoapVersion,
    _cx: &NonStopContext,
    session_header: Option<String>,
) -> Fault {
    let ts_ms = match error {
        NonStopError::Engine(f) => f.at_ms,
        _ => cookie_store::now_ms(),
    };
    let spec = match error {
        NonStopError::InvalidTag(tag) => header(-1010, format!("Invalid tag {tag} found in the Header element.")),
        NonStopError::DuplicateTag(tag) => header(
            -1010,
            format!("Invalid tag {tag} found in the Header element: only one {tag} element is allowed."),
        ),
        NonStopError::InvalidAttribute(attr, tag) => {
            header(-1011, format!("Invalid attribute {attr} found in tag {tag}."))
        }
        NonStopError::BadSessionCommand(_) => header(
            -1004,
            "SessionCommand attribute value can only be \"Begin\", \"End\", or \"AbortSubsession\".".into(),
        ),
        NonStopError::BadTransactionCommand(_) => {
            header(-1005, "CurrentTransactionCommand attribute value can only be \"Abort\" or \"End\".".into())
        }
        NonStopError::BadBeginNewTransaction(_) => {
            header(-1006, "BeginNewTransaction attribute value can only be \"yes\" or \"no\".".into())
        }
        NonStopError::BadOutputEncoding(v) => header(-1007, format!("Bad OutputEncoding value {v} was specified.")),
        NonStopError::IdWithBegin => header(
            -1003,
            "SessionID attribute must not be set when SessionCommand attribute value is \"Begin\".".into(),
        ),
        NonStopError::NoIdNoBegin => header(
            -1002,
            "Tag Session must set SessionID attribute or set SessionCommand attribute to \"Begin\".".into(),
        ),
        NonStopError::TxnCommandInBegin => header(
            -1020,
            "CurrentTransactionCommand attribute must not be set when SessionCommand attribute value is \"Begin\"."
                .into(),
        ),
        NonStopError::EmptyBody => Spec {
            code: FaultCode::Sender,
            subcode: None,
            faultstring: Cow::Borrowed("Service not found"),
            detail_code: -215,
            text: "service: (none) not found: the Body holds no service request".into(),
        },
        NonStopError::Engine(f) => return engine_fault(f, version, session_header),
    };
    build(spec, ts_ms, None)
}

fn engine_fault(failure: &Failure, _version: SoapVersion, session_header: Option<String>) -> Fault {
    let spec = match &failure.kind {
        FailureKind::UnknownSession { id } => header(
            -1001,
            format!(
                "SessionID {id} was not found in the server, or SOAP session identified by the SessionID has expired. \
                 Please check the SessionID or start a new session if necessary."
            ),
        ),
        FailureKind::Rule(rule) => rule_spec(rule),
        FailureKind::SessionLimit { limit } => server(
            None,
            "Session limit reached",
            -1,
            format!("System error: a new session cannot be created: {limit}."),
        ),
        FailureKind::SessionNotCreated => server(None, "System error", -1, SEE_THE_LOG.into()),
        FailureKind::TransactionAborted { at_commit: true, reason } => server(
            None,
            "Transaction aborted",
            -1021,
            format!("Transaction aborted at commit: {reason}."),
        ),
        FailureKind::TransactionAborted { at_commit: false, reason } => server(
            None,
            "Transaction aborted",
            -1021,
            format!("Transaction aborted: {reason}."),
        ),
        FailureKind::DialogAborted { class, transaction } => {
            let (code, what) = match transaction {
                DialogTransaction::Aborted => (-353, "the transaction was aborted"),
                DialogTransaction::LeftToClient => {
                    (-354, "the transaction is still open; commit or abort it")
                }
                DialogTransaction::None => (-355, "no transaction was in progress"),
            };
            server(
                None,
                "Subsession aborted",
                code,
                format!("The subsession was aborted by the target service (server class {class}); {what}."),
            )
        }
        FailureKind::DialogLost { class: Some(class) } => server(
            None,
            "Subsession lost",
            -356,
            format!("The subsession ended because the process holding it stopped (server class {class})."),
        ),
        FailureKind::DialogLost { class: None } => server(
            None,
            "Subsession lost",
            -356,
            "The subsession ended because the process holding it stopped.".into(),
        ),
        FailureKind::Application { class, code, string, detail } => {
            return application_fault(class, code, string, detail, session_header)
        }
        // NonStop SOAP's unmarshal errors (request → DDL record, -2xx) and marshal errors (reply
        // record → XML, -401).
        FailureKind::Unmarshal { field, message, problem } => Spec {
            code: FaultCode::Sender,
            subcode: None,
            faultstring: Cow::Borrowed("Unmarshal error"),
            detail_code: match problem {
                UnmarshalProblem::UnknownField => -219,
                UnmarshalProblem::Redefined => -205,
                UnmarshalProblem::Value => -208,
            },
            text: format!("Field {field}: {message}."),
        },
        FailureKind::Marshal { message, .. } => server(None, "Marshal error", -401, message.clone()),
        FailureKind::Retry { cause, message } => server(
            None,
            match cause {
                RetryCause::StoreUnavailable => "Session store unavailable",
                RetryCause::Busy => "Service busy",
            },
            -352,
            message.clone(),
        ),
        FailureKind::Unreachable { class } => server(
            Some("InternalError"),
            "Target service unreachable",
            -301,
            format!("Error communicating with target service {class}."),
        ),
        FailureKind::Interrupted { message } => server(
            Some("InternalError"),
            "Target service unreachable",
            -302,
            message.clone(),
        ),
        FailureKind::TimedOut { class, timeout_ms } => server(
            None,
            "Service Request timed out",
            -351,
            format!("Service Request timed out ({class}, {timeout_ms} ms)."),
        ),
        FailureKind::Internal { title, message } => Spec {
            code: FaultCode::Receiver,
            subcode: None,
            faultstring: Cow::Owned(title.clone()),
            detail_code: -1,
            text: message.clone(),
        },
    };
    build(spec, failure.at_ms, session_header)
}

/// The words of a system error whose details only the log holds.
const SEE_THE_LOG: &str =
    "System error occurred from process of a SOAP session. See the broker log.";

/// The session rules, each with its NonStop detail code.
fn rule_spec(rule: &Rule) -> Spec {
    match rule {
        Rule::NoSubsession => header(-1015, "Attempting to abort a subsession which has not started.".into()),
        Rule::SessionRequired { service } => header(
            -210,
            format!("no session element in header - Target service requires session (service {service})."),
        ),
        Rule::UnknownService { service } => Spec {
            code: FaultCode::Sender,
            subcode: None,
            faultstring: Cow::Borrowed("Service not found"),
            detail_code: -215,
            text: format!("service: {service} not found"),
        },
        Rule::TransactionInProgress => header(
            -1012,
            "Attempting to start a new transaction when the current transaction is still in progress.".into(),
        ),
        Rule::NoTransaction(TxnCommand::Commit) => {
            header(-1013, "Attempting to commit a transaction which has not started.".into())
        }
        Rule::NoTransaction(TxnCommand::Abort) => {
            header(-1014, "Attempting to abort a transaction which has not started.".into())
        }
        Rule::NotTransactional { service } => {
            header(-1022, format!("Service {service} does not support transactions."))
        }
        Rule::SubsessionOpen => header(
            -1016,
            "End session is not allowed while the current subsession is in progress.".into(),
        ),
        Rule::CommandInDialog(TxnCommand::Commit) => header(
            -1017,
            "Commit transaction is not allowed while the current subsession is in progress. Abort the subsession instead."
                .into(),
        ),
        Rule::CommandInDialog(TxnCommand::Abort) => header(
            -1018,
            "Abort transaction is not allowed while the current subsession is in progress. Abort the subsession instead."
                .into(),
        ),
        Rule::OtherSubsession { open, requested } => header(
            -1019,
            format!("A subsession with server class {open} is in progress; abort it before calling {requested}."),
        ),
    }
}

fn build(spec: Spec, ts_ms: u64, session_header: Option<String>) -> Fault {
    let mut detail = String::with_capacity(160 + spec.text.len());
    detail.push_str("<detailCode>");
    detail.push_str(&spec.detail_code.to_string());
    detail.push_str("</detailCode><detailString ts=\"");
    detail.push_str(&rfc3339_utc(ts_ms));
    detail.push_str("\">");
    soap::escape_text(&spec.text, &mut detail);
    detail.push_str("</detailString>");
    let mut fault = Fault::new(spec.code, spec.faultstring);
    fault.subcode = spec.subcode.map(str::to_string);
    fault.detail = Some(detail);
    fault.extra_headers = session_header.into_iter().collect();
    fault.outcome = Some(std::borrow::Cow::Owned(spec.detail_code.to_string()));
    fault
}

/// An application fault passes through as the backend gave it; `SOAP-ENV:Server` when it gave no code.
fn application_fault(
    class: &str,
    code: &str,
    string: &str,
    detail: &bytes::Bytes,
    session_header: Option<String>,
) -> Fault {
    let local = code.rsplit(':').next().unwrap_or(code);
    let (base, sub) = match local.split_once('.') {
        Some((b, s)) => (b, Some(s)),
        None => (local, None),
    };
    let fault_code = match base {
        "Client" | "Sender" => FaultCode::Sender,
        "MustUnderstand" => FaultCode::MustUnderstand,
        _ => FaultCode::Receiver,
    };
    tracing::debug!(class = %class, code = %code, "application fault");
    let mut fault = Fault::new(fault_code, string.to_string());
    fault.subcode = sub.map(str::to_string);
    if !detail.is_empty() {
        fault.detail = Some(safe_detail(detail));
    }
    fault.extra_headers = session_header.into_iter().collect();
    fault
}

/// A backend's fault detail, as XML when it is a well-formed fragment, else as escaped text: a
/// misbehaving server class must never make the broker write a malformed envelope.
fn safe_detail(detail: &[u8]) -> String {
    let text = String::from_utf8_lossy(detail);
    if is_well_formed_fragment(&text) {
        return text.into_owned();
    }
    tracing::warn!("backend fault detail is not well-formed XML; sending it as text");
    let mut escaped = String::with_capacity(text.len() + 16);
    soap::escape_text(&text, &mut escaped);
    escaped
}

/// Whether `text` is a sequence of balanced elements and text with no DTD or processing instruction.
fn is_well_formed_fragment(text: &str) -> bool {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut depth: usize = 0;
    loop {
        match reader.read_event() {
            Ok(Event::Start(_)) => depth += 1,
            Ok(Event::End(_)) => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            Ok(Event::Eof) => return depth == 0,
            Ok(Event::DocType(_)) | Ok(Event::PI(_)) | Ok(Event::Decl(_)) => return false,
            Ok(Event::GeneralRef(r)) => {
                // Only the predefined entities and character references may appear.
                let name = r.into_inner();
                let ok = matches!(&*name, "lt" | "gt" | "amp" | "apos" | "quot")
                    || name.starts_with('#');
                if !ok {
                    return false;
                }
            }
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineError;

    fn engine(e: EngineError) -> Fault {
        to_fault(
            &NonStopError::Engine(Box::new(Failure::from(e))),
            SoapVersion::V11,
            &NonStopContext::default(),
            Some("<nsk:Session/>".into()),
        )
    }

    #[test]
    fn an_unreachable_store_and_an_unreachable_holder_are_retriable_not_system_errors() {
        let f = engine(EngineError::Store(cookie_store::StoreError::Unavailable(
            "connection refused".into(),
        )));
        assert_eq!(f.reason, "Session store unavailable");
        let detail = f.detail.unwrap_or_default();
        assert!(detail.contains("<detailCode>-352</detailCode>"), "{detail}");
        assert!(detail.contains("unreachable; retry later"), "{detail}");
        assert_eq!(f.code, FaultCode::Receiver);
        // Another store error stays the internal error.
        let f = engine(EngineError::Store(cookie_store::StoreError::Config(
            "x".into(),
        )));
        assert!(f
            .detail
            .unwrap_or_default()
            .contains("<detailCode>-1</detailCode>"));

        let f = engine(EngineError::HolderUnreachable {
            broker: "b2".into(),
        });
        let detail = f.detail.unwrap_or_default();
        assert!(detail.contains("<detailCode>-352</detailCode>"), "{detail}");
        assert!(
            detail.contains("The broker holding this session, b2, did not answer; retry."),
            "{detail}"
        );
        assert_eq!(
            f.extra_headers,
            vec!["<nsk:Session/>".to_string()],
            "the session lives on"
        );

        let f = engine(EngineError::ForwardingDisabled {
            broker: "b3".into(),
        });
        assert_eq!(f.reason, "Forwarding disabled");
        let detail = f.detail.unwrap_or_default();
        assert!(detail.contains("held by broker b3"), "{detail}");
        assert!(detail.contains("forwarding is disabled"), "{detail}");
    }

    #[test]
    fn backend_detail_passes_when_well_formed_and_is_escaped_otherwise() {
        assert_eq!(
            safe_detail(b"<e:why xmlns:e=\"u\">no &amp; funds</e:why>"),
            "<e:why xmlns:e=\"u\">no &amp; funds</e:why>"
        );
        assert_eq!(safe_detail(b"plain words"), "plain words");
        assert_eq!(safe_detail(b"<open>"), "&lt;open&gt;");
        assert_eq!(safe_detail(b"</x>"), "&lt;/x&gt;");
        assert_eq!(safe_detail(b"<a></b>"), "&lt;a&gt;&lt;/b&gt;");
        assert_eq!(safe_detail(b"&lol;"), "&amp;lol;");
        assert!(safe_detail(b"<!DOCTYPE x><x/>").starts_with("&lt;!DOCTYPE"));
    }
}
