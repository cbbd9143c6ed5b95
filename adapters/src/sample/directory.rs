//! # `directory`: a stand-in for the DSML endpoint's LDAP backend
//!
//! ```text
//! sample-server directory
//! ```
//!
//! **This is not a directory.** There is no LDAP server and no data behind it: it exists so that
//! the `/dsml` endpoint (its session headers, its faults, the `batchRequest`/`batchResponse`
//! envelope) can run end to end in the embedded default, which has no directory to talk to (the `ldap`
//! adapter, `adapters/src/ldap/`, is the real backend). It answers every DSML
//! operation with LDAP result code 53, `unwillingToPerform`, and an `errorMessage` that says so,
//! never with a success that would pretend an entry was found, added or changed.
//!
//! ## What it answers
//!
//! A DSML v2 `batchRequest` (namespace `urn:oasis:names:tc:DSML:2:0:core`, default or prefixed;
//! a batch in no namespace is accepted too) gets a `batchResponse` in the same namespace and with
//! the same prefix, carrying the batch's `requestID` when it has one, and one response per
//! operation, in order, each carrying that operation's `requestID`:
//!
//! | request | response |
//! | --- | --- |
//! | `searchRequest` | `searchResponse` holding one `searchResultDone` (no entries) |
//! | `addRequest`, `modifyRequest`, `delRequest`, `modDNRequest`, `compareRequest`, `extendedRequest`, `authRequest` | `addResponse`, `modifyResponse`, `delResponse`, `modDNResponse`, `compareResponse`, `extendedResponse`, `authResponse` |
//! | `abandonRequest` | nothing (DSML defines no response to an abandon) |
//! | anything else | `errorResponse type="malformedRequest"` with a `message` |
//!
//! Each LDAP result (the `searchResultDone`, or the response element itself) holds
//! `<resultCode code="53" descr="unwillingToPerform"/>` and an `<errorMessage>`. For example:
//!
//! ```xml
//! <batchRequest xmlns="urn:oasis:names:tc:DSML:2:0:core" requestID="b1">
//!   <searchRequest requestID="1" dn="dc=example" scope="baseObject" derefAliases="neverDerefAliases">…</searchRequest>
//! </batchRequest>
//! →
//! <batchResponse xmlns="urn:oasis:names:tc:DSML:2:0:core" requestID="b1">
//!   <searchResponse requestID="1"><searchResultDone requestID="1">
//!     <resultCode code="53" descr="unwillingToPerform"/><errorMessage>…</errorMessage>
//!   </searchResultDone></searchResponse>
//! </batchResponse>
//! ```
//!
//! (without the line breaks). An empty `<batchRequest/>` gets an empty `<batchResponse/>`. A
//! payload that is not a `batchRequest` is a `Client` fault. The class is context-free and not
//! transactional (the default `control`).

use super::xml::{self, Writer};
use super::{Action, SampleClass};
use crate::protocol::Request;
use crate::ReplyStatus;
use xmltree::{Element, XMLNode};

/// The DSML v2 core namespace.
pub const DSML_NS: &str = "urn:oasis:names:tc:DSML:2:0:core";

/// What every operation is told.
pub const STAND_IN_MESSAGE: &str = "sample-server directory is a stand-in with no directory \
     behind it: nothing was searched, read or changed (an ldap class reaches a real directory: docs/dsml.md)";

/// Each DSML operation and the response element that answers it (`None`: no response).
const OPERATIONS: &[(&str, Option<&str>)] = &[
    ("searchRequest", Some("searchResponse")),
    ("addRequest", Some("addResponse")),
    ("modifyRequest", Some("modifyResponse")),
    ("delRequest", Some("delResponse")),
    ("modDNRequest", Some("modDNResponse")),
    ("compareRequest", Some("compareResponse")),
    ("extendedRequest", Some("extendedResponse")),
    ("authRequest", Some("authResponse")),
    ("abandonRequest", None),
];

pub struct Directory;

impl SampleClass for Directory {
    fn server_name(&self) -> String {
        format!(
            "sample-server directory {} (a stand-in, no directory behind it)",
            env!("CARGO_PKG_VERSION")
        )
    }

    fn request(&mut self, request: &Request) -> Action {
        respond(&request.payload).unwrap_or_else(|action| action)
    }
}

/// Answer one `batchRequest` payload.
pub fn respond(payload: &[u8]) -> Result<Action, Action> {
    let root = xml::parse(payload)?;
    let namespace_ok = match root.namespace.as_deref() {
        None | Some("") => true,
        Some(ns) => ns == DSML_NS,
    };
    if root.name != "batchRequest" || !namespace_ok {
        return Err(Action::fault(
            "Client",
            format!(
                "expected a DSML v2 batchRequest (namespace {DSML_NS}), got <{}>{}",
                xml::one_line(&root.name),
                root.namespace
                    .as_deref()
                    .map(|ns| format!(" in namespace {}", xml::one_line(ns)))
                    .unwrap_or_default()
            ),
        ));
    }

    let mut w = Writer::like(&root);
    let batch_id = request_id(&root);
    let operations: Vec<&Element> = root
        .children
        .iter()
        .filter_map(XMLNode::as_element)
        .collect();
    if operations.is_empty() {
        w.empty("batchResponse", &batch_id);
        return Ok(xml::reply(ReplyStatus::Ok, w.finish()));
    }
    w.open("batchResponse", &batch_id);
    for operation in operations {
        let id = request_id(operation);
        let known = operation.namespace == root.namespace;
        match OPERATIONS
            .iter()
            .find(|(name, _)| known && *name == operation.name)
        {
            Some((_, None)) => {} // abandonRequest: DSML defines no response
            Some((_, Some("searchResponse"))) => {
                w.open("searchResponse", &id);
                unwilling(&mut w, "searchResultDone", &id);
                w.close("searchResponse");
            }
            Some((_, Some(response))) => unwilling(&mut w, response, &id),
            None => {
                let mut attributes = id.clone();
                attributes.push(("type", "malformedRequest"));
                w.open("errorResponse", &attributes)
                    .leaf(
                        "message",
                        &format!(
                            "<{}> is not a DSML v2 operation",
                            xml::one_line(&operation.name)
                        ),
                    )
                    .close("errorResponse");
            }
        }
    }
    w.close("batchResponse");
    Ok(xml::reply(ReplyStatus::Ok, w.finish()))
}

/// `[("requestID", …)]` when the element has one, to echo it.
fn request_id(element: &Element) -> Vec<(&'static str, &str)> {
    element
        .attributes
        .get("requestID")
        .map(|id| vec![("requestID", id.as_str())])
        .unwrap_or_default()
}

/// One LDAP result saying that nothing was done.
fn unwilling(w: &mut Writer, name: &str, id: &[(&str, &str)]) {
    w.open(name, id)
        .empty(
            "resultCode",
            &[("code", "53"), ("descr", "unwillingToPerform")],
        )
        .leaf("errorMessage", STAND_IN_MESSAGE)
        .close(name);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn text(result: Result<Action, Action>) -> String {
        match result {
            Ok(Action::Reply {
                status: ReplyStatus::Ok,
                payload,
                ..
            }) => String::from_utf8(payload.to_vec()).unwrap(),
            _ => "not an ok reply".to_string(),
        }
    }

    #[test]
    fn empty_batch() {
        assert_eq!(
            text(respond(
                format!(r#"<batchRequest xmlns="{DSML_NS}"/>"#).as_bytes()
            )),
            format!(r#"<batchResponse xmlns="{DSML_NS}"/>"#)
        );
        assert_eq!(
            text(respond(
                format!(
                    r#"<d:batchRequest xmlns:d="{DSML_NS}" requestID="x&amp;y"></d:batchRequest>"#
                )
                .as_bytes()
            )),
            format!(r#"<d:batchResponse xmlns:d="{DSML_NS}" requestID="x&amp;y"/>"#)
        );
    }

    #[test]
    fn prefixed_operations_keep_the_prefix() {
        let out = text(respond(
            format!(
                r#"<d:batchRequest xmlns:d="{DSML_NS}"><d:delRequest requestID="7" dn="cn=x"/><d:abandonRequest abandonID="7"/></d:batchRequest>"#
            )
            .as_bytes(),
        ));
        assert_eq!(
            out,
            format!(
                r#"<d:batchResponse xmlns:d="{DSML_NS}"><d:delResponse requestID="7"><d:resultCode code="53" descr="unwillingToPerform"/><d:errorMessage>{STAND_IN_MESSAGE}</d:errorMessage></d:delResponse></d:batchResponse>"#
            )
        );
    }

    #[test]
    fn not_a_batch_is_a_fault() {
        for payload in [
            "<searchRequest/>".to_string(),
            r#"<batchRequest xmlns="urn:other"/>"#.to_string(),
            "not xml".to_string(),
        ] {
            assert!(matches!(
                respond(Bytes::from(payload).as_ref()),
                Err(Action::Reply {
                    status: ReplyStatus::Fault { .. },
                    ..
                })
            ));
        }
    }
}
