//! Running a batch's operations on one LDAP connection and writing the `batchResponse`.
//!
//! Each operation becomes one LDAP operation with its controls; its LDAP result (code, matchedDN,
//! diagnostic message, referrals, response controls) becomes the DSML response element of its
//! kind, with its `requestID`. A search's entries are written as they arrive (ldap3's streaming
//! search), so a large result is held once, as the reply being written, never also as a list of
//! entries. String values are written as text, values that are not UTF-8 as
//! `xsi:type="xsd:base64Binary"`.
//!
//! `onError="exit"` stops after the first operation whose answer is an `errorResponse` or an LDAP
//! result other than success, compareFalse, compareTrue or referral (as OpenDJ's gateway does);
//! what was produced so far is the reply. `processing="parallel"` lets the directory work on
//! several operations at once (each its own message ID on the one connection); the answers are
//! written in request order unless `responseOrder="unordered"`.
//!
//! A connection that fails mid-batch answers the failed operation, and every one after it, with
//! `errorResponse type="connectionClosed"`, and reports the connection lost so that it is
//! replaced.

use super::dsml::{BatchRequest, Kind, ModOp, Operation, Search, DSML_NS};
use base64::Engine as _;
use ldap3::controls::RawControl;
use ldap3::{Ldap, LdapError, LdapResult, Mod, SearchEntry};
use std::collections::HashSet;

/// The outcome of a batch on the connection.
pub struct Outcome {
    /// The `batchResponse`, self-contained XML.
    pub xml: String,
    /// The connection failed during the batch: the worker reconnects (outside a session) or the
    /// session's connection is gone.
    pub connection_lost: bool,
}

/// Writes elements with the request's prefix for the DSML namespace.
struct Out {
    xml: String,
    prefix: Option<String>,
}

impl Out {
    fn name(&mut self, local: &str) {
        if let Some(p) = &self.prefix {
            self.xml.push_str(p);
            self.xml.push(':');
        }
        self.xml.push_str(local);
    }

    fn open(&mut self, local: &str, attrs: &[(&str, &str)], empty: bool) {
        self.xml.push('<');
        self.name(local);
        for (k, v) in attrs {
            self.xml.push(' ');
            self.xml.push_str(k);
            self.xml.push_str("=\"");
            self.xml.push_str(&quick_xml::escape::escape(*v));
            self.xml.push('"');
        }
        self.xml.push_str(if empty { "/>" } else { ">" });
    }

    fn close(&mut self, local: &str) {
        self.xml.push_str("</");
        self.name(local);
        self.xml.push('>');
    }

    fn leaf(&mut self, local: &str, text: &str) {
        self.open(local, &[], false);
        self.xml.push_str(&quick_xml::escape::escape(text));
        self.close(local);
    }

    fn value(&mut self, local: &str, bytes: &[u8]) {
        match std::str::from_utf8(bytes) {
            Ok(text)
                if !text
                    .chars()
                    .any(|c| c.is_control() && c != '\t' && c != '\n') =>
            {
                self.leaf(local, text)
            }
            _ => {
                self.open(local, &[("xsi:type", "xsd:base64Binary")], false);
                self.xml
                    .push_str(&base64::engine::general_purpose::STANDARD.encode(bytes));
                self.close(local);
            }
        }
    }
}

/// The `descr` DSMLv2 gives each LDAP result code.
pub fn descr(code: u32) -> &'static str {
    match code {
        0 => "success",
        1 => "operationsError",
        2 => "protocolError",
        3 => "timeLimitExceeded",
        4 => "sizeLimitExceeded",
        5 => "compareFalse",
        6 => "compareTrue",
        7 => "authMethodNotSupported",
        8 => "strongAuthRequired",
        10 => "referral",
        11 => "adminLimitExceeded",
        12 => "unavailableCriticalExtension",
        13 => "confidentialityRequired",
        14 => "saslBindInProgress",
        16 => "noSuchAttribute",
        17 => "undefinedAttributeType",
        18 => "inappropriateMatching",
        19 => "constraintViolation",
        20 => "attributeOrValueExists",
        21 => "invalidAttributeSyntax",
        32 => "noSuchObject",
        33 => "aliasProblem",
        34 => "invalidDNSyntax",
        36 => "aliasDereferencingProblem",
        48 => "inappropriateAuthentication",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        54 => "loopDetect",
        64 => "namingViolation",
        65 => "objectClassViolation",
        66 => "notAllowedOnNonLeaf",
        67 => "notAllowedOnRDN",
        68 => "entryAlreadyExists",
        69 => "objectClassModsProhibited",
        71 => "affectsMultipleDSAs",
        _ => "other",
    }
}

/// Whether an LDAP result lets `onError="exit"` go on.
fn not_an_error(code: u32) -> bool {
    matches!(code, 0 | 5 | 6 | 10)
}

/// One operation's answer, as XML, and whether it counts as an error.
struct Answer {
    xml: String,
    error: bool,
    lost: bool,
}

/// Run the batch on `ldap` and write its `batchResponse`.
pub async fn run(ldap: &mut Ldap, batch: BatchRequest) -> Outcome {
    let mut out = Out {
        xml: String::with_capacity(1024),
        prefix: batch.prefix.clone(),
    };
    let xmlns = match &batch.prefix {
        Some(p) => format!("xmlns:{p}"),
        None => "xmlns".to_string(),
    };
    let mut attrs: Vec<(&str, &str)> = vec![
        (xmlns.as_str(), DSML_NS),
        ("xmlns:xsd", "http://www.w3.org/2001/XMLSchema"),
        ("xmlns:xsi", "http://www.w3.org/2001/XMLSchema-instance"),
    ];
    if let Some(id) = &batch.request_id {
        attrs.push(("requestID", id));
    }
    out.open("batchResponse", &attrs, false);
    let mut lost = false;
    let resume = batch.resume;
    let prefix = batch.prefix.clone();
    if batch.parallel {
        // Every operation on its own clone of the handle: one connection, several message IDs.
        let answers = futures_util::future::join_all(batch.operations.into_iter().map(|op| {
            let mut ldap = ldap.clone();
            let prefix = prefix.clone();
            async move { answer(&mut ldap, op, prefix).await }
        }))
        .await;
        // Parallel operations were all sent: onError="exit" cannot take one back, so every
        // answer is written (in request order; unordered is satisfied by any order).
        for a in answers {
            lost |= a.lost;
            out.xml.push_str(&a.xml);
        }
    } else {
        for op in batch.operations {
            if lost {
                out.xml.push_str(&error_response(
                    &prefix,
                    op.request_id.as_deref(),
                    "connectionClosed",
                    "the directory connection closed earlier in this batch",
                ));
                if !resume {
                    break;
                }
                continue;
            }
            let (error, op_lost) = match op.kind {
                // A search's entries go straight into the reply.
                Ok(Kind::Search(search)) => {
                    search_into(
                        ldap,
                        search,
                        op.controls,
                        &mut out,
                        op.request_id.as_deref(),
                    )
                    .await
                }
                kind => {
                    let op = Operation { kind, ..op };
                    let a = answer(ldap, op, prefix.clone()).await;
                    out.xml.push_str(&a.xml);
                    (a.error, a.lost)
                }
            };
            lost |= op_lost;
            if error && !resume {
                break;
            }
        }
    }
    out.close("batchResponse");
    Outcome {
        xml: out.xml,
        connection_lost: lost,
    }
}

fn error_response(prefix: &Option<String>, id: Option<&str>, kind: &str, message: &str) -> String {
    let mut out = Out {
        xml: String::new(),
        prefix: prefix.clone(),
    };
    let mut attrs = vec![("type", kind)];
    if let Some(id) = id {
        attrs.insert(0, ("requestID", id));
    }
    out.open("errorResponse", &attrs, false);
    out.leaf("message", message);
    out.close("errorResponse");
    out.xml
}

/// Whether an ldap3 error means the connection is gone (rather than one operation failing).
fn is_connection_error(e: &LdapError) -> bool {
    matches!(
        e,
        LdapError::Io { .. }
            | LdapError::EndOfStream
            | LdapError::OpSend { .. }
            | LdapError::ResultRecv { .. }
            | LdapError::IdScrubSend { .. }
    )
}

fn failed(prefix: &Option<String>, id: Option<&str>, e: &LdapError) -> Answer {
    let lost = is_connection_error(e);
    let (kind, message) = if lost {
        (
            "connectionClosed",
            format!("the directory connection closed: {e}"),
        )
    } else {
        ("gatewayInternalError", format!("{e}"))
    };
    Answer {
        xml: error_response(prefix, id, kind, &message),
        error: true,
        lost,
    }
}

/// Write an LDAPResult's content (controls, resultCode, errorMessage, referrals) inside an
/// already opened element.
fn result_body(out: &mut Out, r: &LdapResult) {
    for c in &r.ctrls {
        write_control(out, &c.1);
    }
    let code = r.rc.to_string();
    out.open(
        "resultCode",
        &[("code", code.as_str()), ("descr", descr(r.rc))],
        true,
    );
    if !r.text.is_empty() {
        out.leaf("errorMessage", &r.text);
    }
    for referral in &r.refs {
        out.leaf("referral", referral);
    }
}

fn write_control(out: &mut Out, c: &RawControl) {
    let crit = if c.crit { "true" } else { "false" };
    out.open(
        "control",
        &[("type", c.ctype.as_str()), ("criticality", crit)],
        c.val.is_none(),
    );
    if let Some(v) = &c.val {
        out.open("controlValue", &[("xsi:type", "xsd:base64Binary")], false);
        out.xml
            .push_str(&base64::engine::general_purpose::STANDARD.encode(v));
        out.close("controlValue");
        out.close("control");
    }
}

/// A result element (`addResponse`, `searchResultDone`, …) for `r`.
fn result_element(prefix: &Option<String>, name: &str, id: Option<&str>, r: &LdapResult) -> String {
    let mut out = Out {
        xml: String::new(),
        prefix: prefix.clone(),
    };
    let mut attrs: Vec<(&str, &str)> = Vec::new();
    if let Some(id) = id {
        attrs.push(("requestID", id));
    }
    if !r.matched.is_empty() {
        attrs.push(("matchedDN", r.matched.as_str()));
    }
    out.open(name, &attrs, false);
    result_body(&mut out, r);
    out.close(name);
    out.xml
}

fn set(values: Vec<Vec<u8>>) -> HashSet<Vec<u8>> {
    values.into_iter().collect()
}

async fn answer(ldap: &mut Ldap, op: Operation, prefix: Option<String>) -> Answer {
    let id = op.request_id.as_deref();
    let kind = match op.kind {
        Ok(kind) => kind,
        Err(message) => {
            return Answer {
                xml: error_response(&prefix, id, "malformedRequest", &message),
                error: true,
                lost: false,
            }
        }
    };
    let controls = op.controls;
    let simple = |name: &str, result: Result<LdapResult, LdapError>| match result {
        Ok(r) => Answer {
            error: !not_an_error(r.rc),
            xml: result_element(&prefix, name, id, &r),
            lost: false,
        },
        Err(e) => failed(&prefix, id, &e),
    };
    match kind {
        Kind::Search(search) => {
            let mut out = Out {
                xml: String::with_capacity(512),
                prefix: prefix.clone(),
            };
            let (error, lost) = search_into(ldap, search, controls, &mut out, id).await;
            Answer {
                xml: out.xml,
                error,
                lost,
            }
        }
        Kind::Add { dn, attributes } => {
            let attrs: Vec<(Vec<u8>, HashSet<Vec<u8>>)> = attributes
                .into_iter()
                .map(|(name, values)| (name.into_bytes(), set(values)))
                .collect();
            let r = ldap.with_controls(controls).add(&dn, attrs).await;
            simple("addResponse", r)
        }
        Kind::Modify { dn, modifications } => {
            let mods: Vec<Mod<Vec<u8>>> = modifications
                .into_iter()
                .map(|m| {
                    let (name, values) = (m.attribute.into_bytes(), set(m.values));
                    match m.op {
                        ModOp::Add => Mod::Add(name, values),
                        ModOp::Delete => Mod::Delete(name, values),
                        ModOp::Replace => Mod::Replace(name, values),
                    }
                })
                .collect();
            let r = ldap.with_controls(controls).modify(&dn, mods).await;
            simple("modifyResponse", r)
        }
        Kind::Delete { dn } => {
            let r = ldap.with_controls(controls).delete(&dn).await;
            simple("delResponse", r)
        }
        Kind::ModDn {
            dn,
            new_rdn,
            delete_old_rdn,
            new_superior,
        } => {
            let r = ldap
                .with_controls(controls)
                .modifydn(&dn, &new_rdn, delete_old_rdn, new_superior.as_deref())
                .await;
            simple("modDNResponse", r)
        }
        Kind::Compare {
            dn,
            attribute,
            value,
        } => {
            let r = ldap
                .with_controls(controls)
                .compare(&dn, &attribute, value)
                .await
                .map(|c| c.0);
            simple("compareResponse", r)
        }
        Kind::Extended { name, value } => {
            let exop = ldap3::exop::Exop {
                name: Some(name),
                val: value,
            };
            match ldap.with_controls(controls).extended(exop).await {
                Err(e) => failed(&prefix, id, &e),
                Ok(ldap3::result::ExopResult(exop, r)) => {
                    let mut xml = result_element(&prefix, "extendedResponse", id, &r);
                    // responseName and response follow the LDAPResult's content.
                    let mut tail = Out {
                        xml: String::new(),
                        prefix: prefix.clone(),
                    };
                    if let Some(n) = &exop.name {
                        tail.leaf("responseName", n);
                    }
                    if let Some(v) = &exop.val {
                        tail.open("response", &[("xsi:type", "xsd:base64Binary")], false);
                        tail.xml
                            .push_str(&base64::engine::general_purpose::STANDARD.encode(v));
                        tail.close("response");
                    }
                    let close = format!(
                        "</{}extendedResponse>",
                        prefix.as_ref().map(|p| format!("{p}:")).unwrap_or_default()
                    );
                    if let Some(at) = xml.rfind(&close) {
                        xml.insert_str(at, &tail.xml);
                    }
                    Answer {
                        error: !not_an_error(r.rc),
                        xml,
                        lost: false,
                    }
                }
            }
        }
        // DSML defines no response to an abandon. Operations of a sequential batch are done by
        // the time a later abandon is read, so there is nothing to abandon.
        Kind::Abandon { .. } => Answer {
            xml: String::new(),
            error: false,
            lost: false,
        },
        Kind::Auth => {
            let r = LdapResult {
                rc: 7,
                matched: String::new(),
                text: "authRequest is not offered: the session's bind is the endpoint's \
                       configuration"
                    .to_string(),
                refs: Vec::new(),
                ctrls: Vec::new(),
            };
            simple("authResponse", Ok(r))
        }
    }
}

/// A search, its response written straight into `out` (the batch's own reply, so that a large
/// result is not built once here and copied into the batch after). On failure what was written
/// is taken back and the errorResponse written instead. Returns (error, connection lost).
async fn search_into(
    ldap: &mut Ldap,
    s: Search,
    controls: Vec<RawControl>,
    out: &mut Out,
    id: Option<&str>,
) -> (bool, bool) {
    let prefix = &out.prefix.clone();
    let fail = |out: &mut Out, mark: usize, a: Answer| {
        out.xml.truncate(mark);
        out.xml.push_str(&a.xml);
        (a.error, a.lost)
    };
    let mark = out.xml.len();
    let opts = ldap3::SearchOptions::new()
        .deref(s.deref)
        .typesonly(s.types_only)
        .sizelimit(s.size_limit)
        .timelimit(s.time_limit);
    let attrs: Vec<String> = s.attributes;
    let mut stream = match ldap
        .with_search_options(opts)
        .with_controls(controls)
        .streaming_search(&s.base, s.scope, &s.filter, attrs)
        .await
    {
        Ok(stream) => stream,
        Err(e) => return fail(out, mark, failed(prefix, id, &e)),
    };
    let id_attr: Vec<(&str, &str)> = id.map(|i| vec![("requestID", i)]).unwrap_or_default();
    out.open("searchResponse", &id_attr, false);
    loop {
        match stream.next().await {
            Ok(Some(entry)) if entry.is_ref() => {
                out.open("searchResultReference", &id_attr, false);
                for r in ldap3::parse_refs(entry.0) {
                    out.leaf("ref", &r);
                }
                out.close("searchResultReference");
            }
            Ok(Some(entry)) if entry.is_intermediate() => {}
            Ok(Some(entry)) => {
                let entry_controls = entry.1.clone();
                let e = SearchEntry::construct(entry);
                let mut attrs = id_attr.clone();
                attrs.push(("dn", e.dn.as_str()));
                out.open("searchResultEntry", &attrs, false);
                for c in &entry_controls {
                    write_control(out, &c.1);
                }
                let mut names: Vec<&String> = e.attrs.keys().chain(e.bin_attrs.keys()).collect();
                names.sort();
                names.dedup();
                for name in names {
                    out.open("attr", &[("name", name.as_str())], false);
                    for v in e.attrs.get(name).into_iter().flatten() {
                        out.value("value", v.as_bytes());
                    }
                    for v in e.bin_attrs.get(name).into_iter().flatten() {
                        out.value("value", v);
                    }
                    out.close("attr");
                }
                out.close("searchResultEntry");
            }
            Ok(None) => break,
            Err(e) => {
                let lost = is_connection_error(&e);
                let _ = stream.finish().await;
                let mut a = failed(prefix, id, &e);
                a.lost = lost;
                return fail(out, mark, a);
            }
        }
    }
    let r = stream.finish().await;
    let done = result_element(prefix, "searchResultDone", id, &r);
    out.xml.push_str(&done);
    out.close("searchResponse");
    (!not_an_error(r.rc), false)
}
