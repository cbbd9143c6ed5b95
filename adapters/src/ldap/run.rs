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
//!
//! ## Windowed searches
//!
//! The LDAP client decodes whatever the directory sends as fast as it arrives and queues it for
//! the reader without a bound, so a search of ten thousand entries would sit in that queue as
//! decoded entries (measured: 25 MB for a 1.4 MB reply, heaptrack) however promptly they are
//! written. A search that sets no `sizeLimit` and carries no controls is therefore asked for in
//! windows of `search_window` entries with the simple paged results control (RFC 2696,
//! non-critical), one page after the other on the same connection, and written as one
//! `searchResponse`: the client sees one search, the adapter holds at most one window of decoded
//! entries. The window is the adapter's: its control is removed from the `searchResultDone`.
//!
//! Not windowed, and sent as they came: a base search (one entry at most), a search with a `sizeLimit` (its size bounds it, and a
//! directory's limits treat paged searches apart), one with controls of its own (the client's own
//! paging, sorting, VLV), every search on a connection whose session has a paged search of its
//! own in progress (a directory such as OpenLDAP keeps one paged search per connection, so a
//! window would spoil the session's cookie), and all but one search of a parallel batch. A
//! `timeLimit` is spent across the pages. When the first page is refused (the directory does not
//! page for this user: protocolError, adminLimitExceeded, unavailableCriticalExtension,
//! unwillingToPerform) before any entry, the search is sent again without the window; a directory
//! that ignores the control answers the whole search at once, as before.

use super::dsml::{BatchRequest, Kind, ModOp, Operation, Search, DSML_NS};
use base64::Engine as _;
use ldap3::controls::RawControl;
use ldap3::{Ldap, LdapError, LdapResult, Mod, SearchEntry};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

/// The paged results control (RFC 2696).
const PAGED_RESULTS_OID: &str = "1.2.840.113556.1.4.319";

/// What a connection remembers between batches about paging (see "Windowed searches").
#[derive(Debug, Default)]
pub struct Paging {
    /// `search_window` (0: no windows).
    pub window: u32,
    /// The session's own paged search is in progress on this connection: its last page came back
    /// with a cookie to go on with.
    pub client_paging: bool,
}

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
    /// A search with the client's own paged results control: whether its paging goes on.
    client_paging: Option<bool>,
}

/// What ties an `abandonRequest` of a parallel batch to the search it names (see
/// [`pair_abandons`]). Empty for every other operation.
#[derive(Default)]
struct Hook {
    /// The search: where to report its message ID once it is sent.
    started: Option<oneshot::Sender<i32>>,
    /// The abandon: the search's message ID, once it is sent.
    target: Option<oneshot::Receiver<i32>>,
    /// Set by the abandon before it is sent: the search's end of stream is its abandonment.
    abandoned: Arc<AtomicBool>,
}

/// In a parallel batch an `abandonRequest` can reach a search still running: each one naming a
/// search of the same batch by its requestID gets that search's message ID when the search is
/// sent, and sends LDAP's Abandon for it. Others (an operation that is not a search, one of another
/// batch, one already answered) have nothing to abandon, as in a sequential batch. Returns the hooks
/// by operation index.
fn pair_abandons(ops: &[Operation]) -> HashMap<usize, Hook> {
    let mut hooks = HashMap::new();
    for (a, op) in ops.iter().enumerate() {
        let Ok(Kind::Abandon { request_id }) = &op.kind else {
            continue;
        };
        let target = ops.iter().enumerate().position(|(i, t)| {
            i != a
                && matches!(t.kind, Ok(Kind::Search(_)))
                && t.request_id.as_deref() == Some(request_id.as_str())
        });
        let Some(t) = target else { continue };
        if hooks.contains_key(&t) {
            continue; // abandoned once is enough
        }
        let (tx, rx) = oneshot::channel();
        let abandoned = Arc::new(AtomicBool::new(false));
        hooks.insert(
            t,
            Hook {
                started: Some(tx),
                target: None,
                abandoned: abandoned.clone(),
            },
        );
        hooks.insert(
            a,
            Hook {
                started: None,
                target: Some(rx),
                abandoned,
            },
        );
    }
    hooks
}

/// The window a search is asked for in, if it may have one (see "Windowed searches").
fn window_for(op: &Operation, paging: &Paging) -> Option<i32> {
    match &op.kind {
        Ok(Kind::Search(s))
            if paging.window > 0
                && s.scope != ldap3::Scope::Base
                && s.size_limit == 0
                && op.controls.is_empty()
                && !paging.client_paging =>
        {
            i32::try_from(paging.window).ok()
        }
        _ => None,
    }
}

/// Run the batch on `ldap` and write its `batchResponse`.
pub async fn run(ldap: &mut Ldap, batch: BatchRequest, paging: &mut Paging) -> Outcome {
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
        // One window at a time on a connection: the batch's first search that may have one.
        let windowed = batch
            .operations
            .iter()
            .position(|op| window_for(op, paging).is_some());
        let window = windowed.and_then(|i| window_for(&batch.operations[i], paging));
        let mut abandons = pair_abandons(&batch.operations);
        // Every operation on its own clone of the handle: one connection, several message IDs.
        let answers = futures_util::future::join_all(batch.operations.into_iter().enumerate().map(
            |(i, op)| {
                let mut ldap = ldap.clone();
                let prefix = prefix.clone();
                let window = if Some(i) == windowed { window } else { None };
                let hook = abandons.remove(&i).unwrap_or_default();
                async move { answer(&mut ldap, op, prefix, window, hook).await }
            },
        ))
        .await;
        // Parallel operations were all sent: onError="exit" cannot take one back, so every
        // answer is written (in request order; unordered is satisfied by any order).
        for a in answers {
            lost |= a.lost;
            if let Some(p) = a.client_paging {
                paging.client_paging = p;
            }
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
            let window = window_for(&op, paging);
            let (error, op_lost) = match op.kind {
                // A search's entries go straight into the reply.
                Ok(Kind::Search(search)) => {
                    let done = search_into(
                        ldap,
                        search,
                        op.controls,
                        &mut out,
                        op.request_id.as_deref(),
                        window,
                        Hook::default(),
                    )
                    .await;
                    if let Some(p) = done.client_paging {
                        paging.client_paging = p;
                    }
                    (done.error, done.lost)
                }
                kind => {
                    let op = Operation { kind, ..op };
                    let a = answer(ldap, op, prefix.clone(), None, Hook::default()).await;
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
        client_paging: None,
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

async fn answer(
    ldap: &mut Ldap,
    op: Operation,
    prefix: Option<String>,
    window: Option<i32>,
    hook: Hook,
) -> Answer {
    let id = op.request_id.as_deref();
    let kind = match op.kind {
        Ok(kind) => kind,
        Err(message) => {
            return Answer {
                xml: error_response(&prefix, id, "malformedRequest", &message),
                error: true,
                lost: false,
                client_paging: None,
            }
        }
    };
    let controls = op.controls;
    let simple = |name: &str, result: Result<LdapResult, LdapError>| match result {
        Ok(r) => Answer {
            error: !not_an_error(r.rc),
            xml: result_element(&prefix, name, id, &r),
            lost: false,
            client_paging: None,
        },
        Err(e) => failed(&prefix, id, &e),
    };
    match kind {
        Kind::Search(search) => {
            let mut out = Out {
                xml: String::with_capacity(512),
                prefix: prefix.clone(),
            };
            // A search that may be abandoned is one request on the wire: no window.
            let window = window.filter(|_| hook.started.is_none());
            let done = search_into(ldap, search, controls, &mut out, id, window, hook).await;
            Answer {
                xml: out.xml,
                error: done.error,
                lost: done.lost,
                client_paging: done.client_paging,
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
                        client_paging: None,
                    }
                }
            }
        }
        // DSML defines no response to an abandon. Operations of a sequential batch are done by
        // the time a later abandon is read, so there is nothing to abandon; in a parallel batch
        // the search it names is abandoned once it is sent (see `pair_abandons`).
        Kind::Abandon { .. } => {
            if let Some(target) = hook.target {
                if let Ok(msgid) = target.await {
                    hook.abandoned.store(true, Ordering::SeqCst);
                    let _ = ldap.abandon(msgid).await;
                }
            }
            Answer {
                xml: String::new(),
                error: false,
                lost: false,
                client_paging: None,
            }
        }
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

/// How a search ended, for the batch.
struct SearchDone {
    error: bool,
    lost: bool,
    /// The search carried the client's own paged results control: whether its paging goes on.
    client_paging: Option<bool>,
}

/// A search, its response written straight into `out` (the batch's own reply, so that a large
/// result is not built once here and copied into the batch after); in windows of `window`
/// entries when it has one (see "Windowed searches"). On failure what was written is taken back
/// and the errorResponse written instead.
async fn search_into(
    ldap: &mut Ldap,
    s: Search,
    controls: Vec<RawControl>,
    out: &mut Out,
    id: Option<&str>,
    window: Option<i32>,
    mut hook: Hook,
) -> SearchDone {
    let prefix = out.prefix.clone();
    let client_pages = controls.iter().any(|c| c.ctype == PAGED_RESULTS_OID);
    let mark = out.xml.len();
    let id_attr: Vec<(&str, &str)> = id.map(|i| vec![("requestID", i)]).unwrap_or_default();
    out.open("searchResponse", &id_attr, false);
    let entries_at = out.xml.len();
    let in_windows = match window {
        Some(size) => match windowed(ldap, &s, size, out, &id_attr).await {
            Windowed::Done(r) => Some(r),
            Windowed::Refused => {
                tracing::debug!(base = %s.base, "ldap: the directory does not page this search; sent whole");
                out.xml.truncate(entries_at);
                None
            }
        },
        None => None,
    };
    let mut result = match in_windows {
        Some(r) => r,
        // Sent whole. A search an abandon may name has no window, so only here is it reported.
        None => {
            let started = hook.started.take();
            let opts = options(&s, s.time_limit);
            page(ldap, &s, opts, controls, out, &id_attr, started).await
        }
    };
    let r = match result.as_mut() {
        Ok(r) => r,
        // Abandoned (by an abandonRequest of its parallel batch): the directory sends it nothing
        // more, not even a result.
        Err(LdapError::EndOfStream) if hook.abandoned.load(Ordering::SeqCst) => {
            out.xml.truncate(mark);
            out.xml.push_str(&error_response(
                &prefix,
                id,
                "other",
                "abandoned by an abandonRequest of this batch",
            ));
            return SearchDone {
                error: true,
                lost: false,
                client_paging: client_pages.then_some(false),
            };
        }
        Err(e) => {
            let mut a = failed(&prefix, id, e);
            a.lost = is_connection_error(e);
            out.xml.truncate(mark);
            out.xml.push_str(&a.xml);
            return SearchDone {
                error: true,
                lost: a.lost,
                client_paging: client_pages.then_some(false),
            };
        }
    };
    let client_paging = client_pages.then(|| paged_cookie(r).is_some_and(|c| !c.is_empty()));
    let done = result_element(&prefix, "searchResultDone", id, r);
    out.xml.push_str(&done);
    out.close("searchResponse");
    SearchDone {
        error: !not_an_error(r.rc),
        lost: false,
        client_paging,
    }
}

fn options(s: &Search, time_limit: i32) -> ldap3::SearchOptions {
    ldap3::SearchOptions::new()
        .deref(s.deref)
        .typesonly(s.types_only)
        .sizelimit(s.size_limit)
        .timelimit(time_limit)
}

/// How a windowed search ended.
enum Windowed {
    /// Its last page's result (the window's control removed), or how it failed.
    Done(Result<LdapResult, LdapError>),
    /// The directory refused the first page before any entry: send the search whole.
    Refused,
}

/// A search asked for `size` entries at a time, its entries written into `out` page after page.
async fn windowed(
    ldap: &mut Ldap,
    s: &Search,
    size: i32,
    out: &mut Out,
    id_attr: &[(&str, &str)],
) -> Windowed {
    let started = Instant::now();
    let mut cookie: Vec<u8> = Vec::new();
    let mut first = true;
    loop {
        // The client's timeLimit covers the whole search: each page gets what is left of it.
        let time_limit = if s.time_limit > 0 {
            let spent = i32::try_from(started.elapsed().as_secs()).unwrap_or(i32::MAX);
            let left = s.time_limit.saturating_sub(spent);
            if left <= 0 {
                release(ldap, s, cookie).await;
                return Windowed::Done(Ok(LdapResult {
                    rc: 3,
                    matched: String::new(),
                    text: "the search's timeLimit passed".to_string(),
                    refs: Vec::new(),
                    ctrls: Vec::new(),
                }));
            }
            left
        } else {
            0
        };
        let control: RawControl = ldap3::controls::PagedResults {
            size,
            cookie: std::mem::take(&mut cookie),
        }
        .into();
        let before = out.xml.len();
        let mut r = match page(
            ldap,
            s,
            options(s, time_limit),
            vec![control],
            out,
            id_attr,
            None,
        )
        .await
        {
            Ok(r) => r,
            Err(e) => return Windowed::Done(Err(e)),
        };
        let next = paged_cookie(&r);
        r.ctrls.retain(|c| c.1.ctype != PAGED_RESULTS_OID);
        if first && out.xml.len() == before && matches!(r.rc, 2 | 11 | 12 | 53) {
            return Windowed::Refused;
        }
        first = false;
        match next {
            Some(c) if r.rc == 0 && !c.is_empty() => cookie = c,
            _ => return Windowed::Done(Ok(r)),
        }
    }
}

/// Tell the directory a windowed search will not ask for its next page (RFC 2696: a page size of
/// zero with the cookie), so that it can drop what it keeps for it. Best effort.
async fn release(ldap: &mut Ldap, s: &Search, cookie: Vec<u8>) {
    if cookie.is_empty() {
        return;
    }
    let control: RawControl = ldap3::controls::PagedResults { size: 0, cookie }.into();
    let mut none = Out {
        xml: String::new(),
        prefix: None,
    };
    let _ = page(ldap, s, options(s, 0), vec![control], &mut none, &[], None).await;
}

/// The cookie of a result's paged results control, if it has one. Read with lber rather than
/// ldap3's parser, which panics on a malformed value: a directory's bytes are input.
fn paged_cookie(r: &LdapResult) -> Option<Vec<u8>> {
    use lber::common::TagClass;
    use lber::universal::Types;
    let raw = r.ctrls.iter().find(|c| c.1.ctype == PAGED_RESULTS_OID)?;
    let (_, tag) = lber::parse::parse_tag(raw.1.val.as_deref()?).ok()?;
    let mut parts = tag.expect_constructed()?.into_iter();
    parts
        .next()?
        .match_class(TagClass::Universal)?
        .match_id(Types::Integer as u64)?;
    parts
        .next()?
        .match_class(TagClass::Universal)?
        .match_id(Types::OctetString as u64)?
        .expect_primitive()
}

/// One search request on the wire: its entries and references written into `out` as they
/// arrive; its result.
async fn page(
    ldap: &mut Ldap,
    s: &Search,
    opts: ldap3::SearchOptions,
    controls: Vec<RawControl>,
    out: &mut Out,
    id_attr: &[(&str, &str)],
    started: Option<oneshot::Sender<i32>>,
) -> Result<LdapResult, LdapError> {
    let mut stream = ldap
        .with_search_options(opts)
        .with_controls(controls)
        .streaming_search(&s.base, s.scope, &s.filter, s.attributes.clone())
        .await?;
    if let Some(started) = started {
        let _ = started.send(stream.ldap_handle().last_id());
    }
    loop {
        match stream.next().await {
            Ok(Some(entry)) if entry.is_ref() => {
                out.open("searchResultReference", id_attr, false);
                for r in ldap3::parse_refs(entry.0) {
                    out.leaf("ref", &r);
                }
                out.close("searchResultReference");
            }
            Ok(Some(entry)) if entry.is_intermediate() => {}
            Ok(Some(entry)) => {
                let entry_controls = entry.1.clone();
                let e = SearchEntry::construct(entry);
                let mut attrs = id_attr.to_vec();
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
                let _ = stream.finish().await;
                return Err(e);
            }
        }
    }
    Ok(stream.finish().await)
}
