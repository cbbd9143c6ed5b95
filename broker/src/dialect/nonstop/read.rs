//! Reading the NonStop header into an engine request, in the order `spec/nonstop.md` gives:
//! header syntax first (-1010, -1011, -1004…-1007), then the session attributes' combinations
//! (-1003, -1002, -1020). Everything that needs the store (-1001 and later) is the engine's.

use super::{NonStopContext, NonStopError};
use crate::dialect::OutputEncoding;
use crate::engine::{Request, ServiceCall, SessionDirective, TxnCommand};
use crate::soap::{Envelope, HeaderBlock};

/// The NonStop header namespace.
pub const NS: &str = "urn:compaq_nsk_oss_SoapHeader";
/// The same with the trailing slash of the manual's example; accepted and echoed.
pub const NS_SLASH: &str = "urn:compaq_nsk_oss_SoapHeader/";

/// The Session element's attributes as written.
#[derive(Debug, Default)]
struct SessionAttrs {
    session_id: Option<String>,
    command: Option<Command>,
    begin_new: bool,
    txn_command: Option<TxnCommand>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Begin,
    End,
    AbortSubsession,
}

/// A header error with the context gathered so far (the reply still honours a valid Encoding).
type Refused = Box<(NonStopError, NonStopContext)>;

pub(super) fn read(envelope: Envelope) -> Result<(Request, NonStopContext), Refused> {
    let mut cx = NonStopContext::default();
    let mut session: Option<SessionAttrs> = None;

    for block in &envelope.headers {
        let namespace = match block.namespace.as_deref() {
            Some(NS) => NS,
            Some(NS_SLASH) => NS_SLASH,
            _ => continue, // not ours; mustUnderstand was already checked by the SOAP layer
        };
        // A nil block is a header parameter a generated client left null: no header.
        if block.is_nil() {
            continue;
        }
        match block.local_name.as_str() {
            "Session" => {
                if session.is_some() {
                    return Err(Box::new((NonStopError::DuplicateTag("Session".into()), cx)));
                }
                cx.namespace = namespace;
                session = Some(read_session(block).map_err(|e| Box::new((e, cx.clone())))?);
            }
            "Encoding" => {
                let (encoding, from_header) =
                    read_encoding(block).map_err(|e| Box::new((e, cx.clone())))?;
                cx.encoding = encoding;
                cx.encoding_from_header = from_header;
            }
            other => return Err(Box::new((NonStopError::InvalidTag(other.to_string()), cx))),
        }
    }

    let mut request = Request::new("nonstop");
    request.call = envelope.body.map(|b| ServiceCall {
        credential: None,
        service: b.local_name,
        payload: b.xml,
    });

    let Some(s) = session else {
        // No Session element: the request runs outside any session.
        if request.call.is_none() {
            return Err(Box::new((NonStopError::EmptyBody, cx)));
        }
        return Ok((request, cx));
    };

    match (s.command, s.session_id) {
        (Some(Command::Begin), Some(_)) => return Err(Box::new((NonStopError::IdWithBegin, cx))),
        (Some(Command::Begin), None) => {
            if s.txn_command.is_some() {
                return Err(Box::new((NonStopError::TxnCommandInBegin, cx)));
            }
            request.session = SessionDirective::Begin;
        }
        (_, None) => return Err(Box::new((NonStopError::NoIdNoBegin, cx))),
        (command, Some(id)) => {
            request.session = SessionDirective::Continue(id);
            request.end_session = command == Some(Command::End);
            request.abort_subsession = command == Some(Command::AbortSubsession);
            // A plain continue must call a service; End and AbortSubsession may come without a body.
            if command.is_none()
                && request.call.is_none()
                && s.txn_command.is_none()
                && !s.begin_new
            {
                return Err(Box::new((NonStopError::EmptyBody, cx)));
            }
        }
    }
    request.transaction.begin_new = s.begin_new;
    request.transaction.command = s.txn_command;
    Ok((request, cx))
}

fn read_session(block: &HeaderBlock) -> Result<SessionAttrs, NonStopError> {
    let mut attrs = SessionAttrs::default();
    let mut seen_id = false;
    for a in &block.attributes {
        match a.namespace.as_deref() {
            None => {}
            // Qualified attributes in our namespace are not NonStop's; foreign ones (xsi:type…) are
            // tolerated.
            Some(NS) | Some(NS_SLASH) => {
                return Err(NonStopError::InvalidAttribute(
                    a.local_name.clone(),
                    "Session".into(),
                ))
            }
            Some(_) => continue,
        }
        match a.local_name.as_str() {
            "SessionID" | "SessionId" => {
                if seen_id {
                    return Err(NonStopError::InvalidAttribute(
                        a.local_name.clone(),
                        "Session".into(),
                    ));
                }
                seen_id = true;
                attrs.session_id = Some(a.value.clone());
            }
            "SessionCommand" => {
                attrs.command = Some(match a.value.as_str() {
                    "Begin" => Command::Begin,
                    "End" => Command::End,
                    "AbortSubsession" => Command::AbortSubsession,
                    _ => return Err(NonStopError::BadSessionCommand(a.value.clone())),
                })
            }
            "BeginNewTransaction" => {
                attrs.begin_new = match a.value.as_str() {
                    "yes" => true,
                    "no" => false,
                    _ => return Err(NonStopError::BadBeginNewTransaction(a.value.clone())),
                }
            }
            "CurrentTransactionCommand" => {
                attrs.txn_command = Some(match a.value.as_str() {
                    "End" => TxnCommand::Commit,
                    "Abort" => TxnCommand::Abort,
                    _ => return Err(NonStopError::BadTransactionCommand(a.value.clone())),
                })
            }
            // What replies carry (`Subsession="on"`): a client that sends the reply's Session
            // back (a JAX-WS INOUT holder does) tells the broker nothing it does not know.
            "Subsession" => {}
            other => {
                return Err(NonStopError::InvalidAttribute(
                    other.to_string(),
                    "Session".into(),
                ))
            }
        }
    }
    Ok(attrs)
}

fn read_encoding(block: &HeaderBlock) -> Result<(OutputEncoding, bool), NonStopError> {
    let mut label: Option<&str> = None;
    for a in &block.attributes {
        match (a.namespace.as_deref(), a.local_name.as_str()) {
            (None, "OutputEncoding") => label = Some(a.value.as_str()),
            (None, other) | (Some(NS), other) | (Some(NS_SLASH), other) => {
                return Err(NonStopError::InvalidAttribute(
                    other.to_string(),
                    "Encoding".into(),
                ))
            }
            _ => {}
        }
    }
    let Some(label) = label else {
        return Err(NonStopError::BadOutputEncoding(String::new()));
    };
    // Nothing writes UTF-16 replies here (nor the "replacement" pseudo-encoding): refuse what we
    // could not honour rather than silently answer in UTF-8.
    match OutputEncoding::for_label(label) {
        Some(enc) => Ok((enc, true)),
        None => Err(NonStopError::BadOutputEncoding(label.to_string())),
    }
}
