//! # `echo`: the context-free sample class
//!
//! `Echo` answers `<Echo>…</Echo>` with `<EchoResponse>…</EchoResponse>` holding the same
//! children and text, in the request element's namespace (its prefix and namespace declarations
//! are kept). Any other operation is a `Client` fault, "unknown operation X".
//!
//! ## Test aids
//!
//! Two children of `Echo` change the server's behaviour, so tests can play a slow or a crashing
//! legacy server with the real binary:
//!
//! - `<sleepMs>N</sleepMs>`: wait N milliseconds (at most 60 000) before answering; the answer
//!   still echoes everything, `sleepMs` included.
//! - `<crash/>`: exit immediately with status 3, without answering.
//!
//! ## Why xmltree is acceptable here
//!
//! xmltree recurses once per nesting level and can overflow the stack on deep input, so it must
//! never parse untrusted XML. Here the payload has already been through the broker's front end,
//! which enforces the body size and nesting depth limits before anything reaches a server class.
//! (In HTTP mode, without a broker in front, the same holds for the benchmark's own well-formed
//! requests; it is a sample, not an internet-facing service.) xmltree also drops the prefixes of
//! namespaced *attributes*; the element's own prefix and declarations, which are what a response
//! needs, survive.

use super::{Action, SampleClass};
use crate::protocol::Request;
use crate::ReplyStatus;
use bytes::Bytes;
use std::time::Duration;
use xmltree::{Element, EmitterConfig};

/// The longest `sleepMs` honoured.
const MAX_SLEEP_MS: u64 = 60_000;

pub struct Echo;

impl SampleClass for Echo {
    fn server_name(&self) -> String {
        format!("sample-server echo {}", env!("CARGO_PKG_VERSION"))
    }

    fn request(&mut self, request: &Request) -> Action {
        respond(Some(&request.operation), &request.payload)
    }
}

/// The echo work, shared by the wire-protocol and the HTTP modes. `operation` defaults to the
/// root element's local name (HTTP requests without `X-Service`).
pub fn respond(operation: Option<&str>, payload: &[u8]) -> Action {
    let mut root = match Element::parse(payload) {
        Ok(root) => root,
        Err(e) => return Action::fault("Client", format!("the payload is not XML: {e}")),
    };
    let operation = operation.unwrap_or(&root.name).to_string();
    if operation != "Echo" {
        return Action::fault("Client", format!("unknown operation {operation}"));
    }
    if root.get_child("crash").is_some() {
        return Action::Exit(3);
    }
    let delay = root
        .get_child("sleepMs")
        .and_then(|e| e.get_text())
        .and_then(|t| t.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, |ms| {
            Duration::from_millis(ms.min(MAX_SLEEP_MS))
        });

    // Same prefix, namespace and declarations; only the local name changes.
    root.name = format!("{operation}Response");
    let mut out = Vec::with_capacity(payload.len() + 16);
    let config = EmitterConfig::new()
        .write_document_declaration(false)
        .perform_indent(false);
    if let Err(e) = root.write_with_config(&mut out, config) {
        return Action::Reply {
            status: ReplyStatus::Error(format!("cannot write the response: {e}")),
            payload: Bytes::new(),
            delay: Duration::ZERO,
        };
    }
    Action::Reply {
        status: ReplyStatus::Ok,
        payload: Bytes::from(out),
        delay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(action: Action) -> String {
        match action {
            Action::Reply { payload, .. } => String::from_utf8(payload.to_vec()).unwrap(),
            Action::Exit(code) => format!("exit {code}"),
        }
    }

    #[test]
    fn echoes_in_the_request_namespace() {
        let out = text(respond(
            Some("Echo"),
            br#"<e:Echo xmlns:e="urn:echo"><e:a>1</e:a><b>two &amp; three</b></e:Echo>"#,
        ));
        assert_eq!(
            out,
            r#"<e:EchoResponse xmlns:e="urn:echo"><e:a>1</e:a><b>two &amp; three</b></e:EchoResponse>"#
        );
        let out = text(respond(None, br#"<Echo xmlns="urn:d"><x/></Echo>"#));
        assert_eq!(out, r#"<EchoResponse xmlns="urn:d"><x /></EchoResponse>"#);
    }

    #[test]
    fn faults_and_aids() {
        match respond(Some("Nope"), b"<Nope/>") {
            Action::Reply {
                status: ReplyStatus::Fault { code, string },
                ..
            } => {
                assert_eq!(code, "Client");
                assert_eq!(string, "unknown operation Nope");
            }
            _ => panic!("expected a fault"),
        }
        assert!(matches!(
            respond(Some("Echo"), b"<Echo><crash/></Echo>"),
            Action::Exit(3)
        ));
        match respond(Some("Echo"), b"<Echo><sleepMs>25</sleepMs></Echo>") {
            Action::Reply { delay, .. } => assert_eq!(delay, Duration::from_millis(25)),
            _ => panic!("expected a reply"),
        }
    }
}
