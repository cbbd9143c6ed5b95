//! Reading the DSML session header and the `batchRequest` into an engine request. Everything that
//! needs the store (unknown, expired or foreign sessions, limits) is the engine's.

use super::{DsmlContext, DsmlError, SERVICE};
use crate::engine::{Request, ServiceCall, SessionDirective};
use crate::soap::{BodyElement, Envelope, HeaderBlock};
use quick_xml::events::Event;

/// The namespace of the DSML session headers ([MS-DSML] §2.2.1).
pub const NS: &str = "urn:schema-microsoft-com:activedirectory:dsmlv2";
/// The DSML v2 core namespace of `batchRequest` / `batchResponse`.
pub const DSML_CORE_NS: &str = "urn:oasis:names:tc:DSML:2:0:core";

/// A refused request and what its reply needs to know.
type Refused = (DsmlError, DsmlContext);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Begin,
    Session,
    End,
}

pub(super) fn read(envelope: Envelope, max_ops: usize) -> Result<(Request, DsmlContext), Refused> {
    let mut cx = DsmlContext::default();

    // One session header at most ("for any given SOAP header, the operation can appear only once").
    let mut session: Option<(Command, &HeaderBlock)> = None;
    for block in &envelope.headers {
        if block.namespace.as_deref() != Some(NS) {
            continue; // not ours; mustUnderstand was already checked by the SOAP layer
        }
        let command = match block.local_name.as_str() {
            "BeginSession" => Command::Begin,
            "Session" => Command::Session,
            "EndSession" => Command::End,
            // Another element of our namespace: not understood. A mandatory one was refused by the
            // SOAP layer's mustUnderstand check; an optional one is ignored, as SOAP says.
            _ => continue,
        };
        if session.is_some() {
            return Err((DsmlError::SeveralSessionHeaders, cx));
        }
        session = Some((command, block));
    }

    let mut request = Request::new("dsml");
    match session {
        None => {}
        Some((Command::Begin, block)) => {
            if session_id(block).is_some() {
                return Err((DsmlError::IdWithBeginSession, cx));
            }
            request.session = SessionDirective::Begin;
        }
        Some((command, block)) => {
            let Some(id) = session_id(block) else {
                return Err((DsmlError::MissingSessionId, cx));
            };
            cx.session_id = Some(id.to_string());
            request.session = SessionDirective::Continue(id.to_string());
            request.end_session = command == Command::End;
            // EndSession ends the session whatever its batch did, closing its directory
            // connection (an open dialog) rather than refusing to end.
            request.end_regardless = command == Command::End;
        }
    }

    // Exactly one batchRequest; an empty one is a valid batch of no operations.
    let Some(body) = envelope.body else {
        return Err((DsmlError::EmptyBody, cx));
    };
    if body.namespace.as_deref() != Some(DSML_CORE_NS) || body.local_name != "batchRequest" {
        return Err((
            DsmlError::NotBatchRequest {
                namespace: body.namespace,
                local_name: body.local_name,
            },
            cx,
        ));
    }
    // The Body holds one batchRequest; anything after it is a malformed request.
    if envelope.more_body_elements {
        return Err((DsmlError::SecondBodyElement, cx));
    }
    if let Err(e) = check_operations(&body, max_ops) {
        return Err((e, cx));
    }
    request.call = Some(ServiceCall {
        credential: None,
        service: SERVICE.to_string(),
        payload: body.xml,
    });
    Ok((request, cx))
}

/// The header's `SessionID`: qualified (`ad:SessionID`, what the Microsoft client sends) or
/// unqualified (what the schema declares). An empty value counts as none.
fn session_id(block: &HeaderBlock) -> Option<&str> {
    block
        .attr(Some(NS), "SessionID")
        .or_else(|| block.attr(None, "SessionID"))
        .map(str::trim)
        .filter(|id| !id.is_empty())
}

/// Refuse a batch of more than `max` operations (child elements of `batchRequest`) before anything
/// runs. The element was checked well-formed by the envelope parser; counting stops at `max + 1`.
fn check_operations(body: &BodyElement, max: usize) -> Result<(), DsmlError> {
    if body.is_empty {
        return Ok(());
    }
    let mut reader = quick_xml::Reader::from_reader(body.xml.as_ref());
    let mut depth: usize = 0;
    let mut operations: usize = 0;
    loop {
        match reader.read_event() {
            Ok(Event::Start(_)) => {
                if depth == 1 {
                    operations += 1;
                }
                depth += 1;
            }
            Ok(Event::Empty(_)) if depth == 1 => operations += 1,
            Ok(Event::End(_)) => depth = depth.saturating_sub(1),
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(DsmlError::Unreadable(e.to_string())),
        }
        if operations > max {
            return Err(DsmlError::TooManyOperations { max });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soap::{parse_envelope, Limits, Roles};

    fn envelope(header: &str, body: &str) -> Envelope {
        let text = format!(
            "<se:Envelope xmlns:se=\"http://schemas.xmlsoap.org/soap/envelope/\"><se:Header>{header}</se:Header><se:Body>{body}</se:Body></se:Envelope>"
        );
        parse_envelope(text.as_bytes(), &Limits::default(), &Roles::default()).expect("envelope")
    }

    const BATCH: &str = "<batchRequest xmlns=\"urn:oasis:names:tc:DSML:2:0:core\"/>";

    #[test]
    fn session_headers_in_every_form() {
        let (r, cx) = read(
            envelope(
                &format!("<ad:Session xmlns:ad=\"{NS}\" ad:SessionID=\"abc\"/>"),
                BATCH,
            ),
            10,
        )
        .expect("qualified");
        assert_eq!(r.session, SessionDirective::Continue("abc".into()));
        assert!(!r.end_session);
        assert_eq!(cx.session_id.as_deref(), Some("abc"));

        let (r, _) = read(
            envelope(
                &format!("<EndSession xmlns=\"{NS}\" SessionID=\"xyz\"/>"),
                BATCH,
            ),
            10,
        )
        .expect("default namespace, unqualified");
        assert_eq!(r.session, SessionDirective::Continue("xyz".into()));
        assert!(r.end_session);

        let (r, cx) = read(
            envelope(&format!("<BeginSession xmlns=\"{NS}\"/>"), BATCH),
            10,
        )
        .expect("begin");
        assert_eq!(r.session, SessionDirective::Begin);
        assert_eq!(cx.session_id, None);
        let call = r.call.expect("the batch is the call");
        assert_eq!(call.service, "batchRequest");

        let (r, _) = read(envelope("", BATCH), 10).expect("no header");
        assert_eq!(r.session, SessionDirective::None);
    }

    #[test]
    fn malformed_requests_are_refused() {
        let two = format!(
            "<BeginSession xmlns=\"{NS}\"/><ad:Session xmlns:ad=\"{NS}\" ad:SessionID=\"a\"/>"
        );
        assert!(matches!(
            read(envelope(&two, BATCH), 10),
            Err((DsmlError::SeveralSessionHeaders, _))
        ));
        assert!(matches!(
            read(envelope("", &format!("{BATCH}<extra/>")), 10),
            Err((DsmlError::SecondBodyElement, _))
        ));
        assert!(matches!(
            read(envelope("", ""), 10),
            Err((DsmlError::EmptyBody, _))
        ));
        assert!(matches!(
            read(envelope("", "<batchRequest/>"), 10),
            Err((DsmlError::NotBatchRequest { .. }, _))
        ));
        assert!(matches!(
            read(envelope(&format!("<Session xmlns=\"{NS}\"/>"), BATCH), 10),
            Err((DsmlError::MissingSessionId, _))
        ));
        let ops = "<batchRequest xmlns=\"urn:oasis:names:tc:DSML:2:0:core\"><delRequest dn=\"a\"/><delRequest dn=\"b\"><control type=\"1\"/></delRequest><delRequest dn=\"c\"></delRequest></batchRequest>";
        assert!(read(envelope("", ops), 3).is_ok());
        assert!(matches!(
            read(envelope("", ops), 2),
            Err((DsmlError::TooManyOperations { max: 2 }, _))
        ));
    }
}
