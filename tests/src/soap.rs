//! SOAP envelopes for the NonStop dialect, and reading replies: the Session header, the body, and
//! faults of both SOAP versions, always by namespace URI and local name.

use crate::http::{self, Reply};
use crate::xml::{self, Element};

pub const SOAP11_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub const SOAP12_NS: &str = "http://www.w3.org/2003/05/soap-envelope";
/// The NonStop header namespace, and its form with a trailing slash.
pub const NSK: &str = "urn:compaq_nsk_oss_SoapHeader";
pub const NSK_SLASH: &str = "urn:compaq_nsk_oss_SoapHeader/";
/// The namespace the tests put their Echo requests in.
pub const ECHO_NS: &str = "urn:example:echo";

/// The faultstring of every NonStop header error.
pub const HEADER_FAULTSTRING: &str = "Error processing the header of XML document";

/// A SOAP version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V11,
    V12,
}

impl Version {
    pub fn env_ns(self) -> &'static str {
        match self {
            Version::V11 => SOAP11_NS,
            Version::V12 => SOAP12_NS,
        }
    }

    /// The request Content-Type.
    pub fn content_type(self) -> &'static str {
        match self {
            Version::V11 => "text/xml; charset=utf-8",
            Version::V12 => "application/soap+xml; charset=utf-8",
        }
    }

    /// The media type a reply of this version must have.
    pub fn media_type(self) -> &'static str {
        match self {
            Version::V11 => "text/xml",
            Version::V12 => "application/soap+xml",
        }
    }
}

/// An envelope with the given raw header blocks (none → no Header element) and raw body content.
pub fn envelope(v: Version, header: &str, body: &str) -> String {
    let header = if header.is_empty() {
        String::new()
    } else {
        format!("<soapenv:Header>{header}</soapenv:Header>")
    };
    format!(
        "<soapenv:Envelope xmlns:soapenv=\"{}\">{header}<soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>",
        v.env_ns()
    )
}

/// `<nsk:Session xmlns:nsk="urn:compaq_nsk_oss_SoapHeader" ATTRS/>`.
pub fn session(attrs: &str) -> String {
    format!("<nsk:Session xmlns:nsk=\"{NSK}\" {attrs}/>")
}

pub fn begin() -> String {
    session("SessionCommand=\"Begin\"")
}

pub fn cont(id: &str) -> String {
    session(&format!("SessionID=\"{id}\""))
}

pub fn end(id: &str) -> String {
    session(&format!("SessionID=\"{id}\" SessionCommand=\"End\""))
}

/// `<nsk:Encoding OutputEncoding="LABEL"/>`.
pub fn encoding(label: &str) -> String {
    format!("<nsk:Encoding xmlns:nsk=\"{NSK}\" OutputEncoding=\"{label}\"/>")
}

/// Escape text for element content.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `<e:Echo xmlns:e="urn:example:echo"><text>TEXT</text></e:Echo>`.
pub fn echo(text: &str) -> String {
    format!(
        "<e:Echo xmlns:e=\"{ECHO_NS}\"><text>{}</text></e:Echo>",
        escape(text)
    )
}

/// An Echo that makes the sample server sleep `ms` milliseconds before answering.
pub fn echo_sleep(text: &str, ms: u64) -> String {
    format!(
        "<e:Echo xmlns:e=\"{ECHO_NS}\"><text>{}</text><sleepMs>{ms}</sleepMs></e:Echo>",
        escape(text)
    )
}

/// POST an envelope with the version's media type (and `SOAPAction: ""` for SOAP 1.1).
pub fn post(url: &str, v: Version, envelope: &str) -> SoapReply {
    let reply = match v {
        Version::V11 => http::post(
            url,
            Some(v.content_type()),
            &[("SOAPAction", "\"\"")],
            envelope.as_bytes(),
        ),
        Version::V12 => http::post(url, Some(v.content_type()), &[], envelope.as_bytes()),
    };
    SoapReply::new(reply)
}

/// POST an envelope built from a header and a body.
pub fn call(url: &str, v: Version, header: &str, body: &str) -> SoapReply {
    post(url, v, &envelope(v, header, body))
}

/// SOAP 1.1 shorthand of [`call`].
pub fn call11(url: &str, header: &str, body: &str) -> SoapReply {
    call(url, Version::V11, header, body)
}

/// A reply, decoded by its charset and parsed.
#[derive(Debug, Clone)]
pub struct SoapReply {
    pub http: Reply,
    /// The body decoded as its Content-Type charset says (UTF-8 by default).
    pub text: String,
    pub doc: Result<Element, String>,
}

impl SoapReply {
    pub fn new(http: Reply) -> SoapReply {
        let encoding = http
            .charset()
            .and_then(|c| encoding_rs::Encoding::for_label(c.as_bytes()))
            .unwrap_or(encoding_rs::UTF_8);
        let (text, _, _) = encoding.decode(&http.body);
        let text = text.into_owned();
        let doc = xml::parse(&text);
        SoapReply { http, text, doc }
    }

    pub fn status(&self) -> u16 {
        self.http.status
    }

    /// For assertion messages.
    pub fn describe(&self) -> String {
        let clipped: String = self.text.chars().take(2000).collect();
        format!(
            "HTTP {}; Content-Type {:?}; body: {clipped}",
            self.http.status,
            self.http.header("content-type")
        )
    }

    /// The Envelope (panics, with the reply, if the body is not an XML document).
    pub fn envelope(&self) -> &Element {
        match &self.doc {
            Ok(e) => e,
            Err(err) => panic!("the reply is not XML ({err}): {}", self.describe()),
        }
    }

    /// The envelope's SOAP version, from its namespace.
    pub fn version(&self) -> Option<Version> {
        let e = self.doc.as_ref().ok()?;
        if !e.local.eq("Envelope") {
            return None;
        }
        match e.namespace.as_deref() {
            Some(SOAP11_NS) => Some(Version::V11),
            Some(SOAP12_NS) => Some(Version::V12),
            _ => None,
        }
    }

    fn env_ns(&self) -> &str {
        self.envelope().namespace.as_deref().unwrap_or("")
    }

    /// The header blocks (empty without a Header element).
    pub fn header_blocks(&self) -> Vec<&Element> {
        let ns = self.env_ns();
        match self.envelope().child(Some(ns), "Header") {
            Some(h) => h.elements().collect(),
            None => Vec::new(),
        }
    }

    /// The Body element.
    pub fn body(&self) -> &Element {
        let ns = self.env_ns();
        self.envelope()
            .child(Some(ns), "Body")
            .unwrap_or_else(|| panic!("the reply has no Body: {}", self.describe()))
    }

    /// The NonStop Session header blocks (either namespace form).
    pub fn session_headers(&self) -> Vec<&Element> {
        self.header_blocks()
            .into_iter()
            .filter(|h| {
                h.local == "Session"
                    && matches!(h.namespace.as_deref(), Some(NSK) | Some(NSK_SLASH))
            })
            .collect()
    }

    /// The Session header's SessionID, if the reply has one.
    pub fn session_id(&self) -> Option<String> {
        let headers = self.session_headers();
        assert!(
            headers.len() <= 1,
            "more than one Session header: {}",
            self.describe()
        );
        headers
            .first()
            .and_then(|h| h.attr("SessionID"))
            .map(str::to_string)
    }

    /// The SessionID, panicking with the reply if there is none.
    pub fn expect_session_id(&self) -> String {
        self.session_id().unwrap_or_else(|| {
            panic!(
                "expected a Session header with a SessionID: {}",
                self.describe()
            )
        })
    }

    /// Panic unless the reply has no Session header.
    pub fn expect_no_session(&self) {
        assert!(
            self.session_headers().is_empty(),
            "expected no Session header: {}",
            self.describe()
        );
    }

    /// The fault, if the Body holds one.
    pub fn fault(&self) -> Option<FaultInfo> {
        let doc = self.doc.as_ref().ok()?;
        let v = self.version()?;
        let body = doc.child(Some(v.env_ns()), "Body")?;
        let f = body.child(Some(v.env_ns()), "Fault")?;
        Some(FaultInfo::read(v, f))
    }

    /// The fault, panicking with the reply if there is none.
    pub fn expect_fault(&self) -> FaultInfo {
        self.fault()
            .unwrap_or_else(|| panic!("expected a SOAP fault: {}", self.describe()))
    }

    /// A successful reply: HTTP 200, no fault; returns the Body's first element (None if empty).
    pub fn expect_ok(&self) -> Option<&Element> {
        assert_eq!(
            self.http.status,
            200,
            "expected HTTP 200: {}",
            self.describe()
        );
        assert!(
            self.fault().is_none(),
            "expected no fault: {}",
            self.describe()
        );
        self.body().elements().next()
    }

    /// A successful reply whose Body holds `{ns}local`; returns it.
    pub fn expect_body(&self, ns: Option<&str>, local: &str) -> &Element {
        let first = self.expect_ok().unwrap_or_else(|| {
            panic!(
                "expected {local} in the Body, got an empty Body: {}",
                self.describe()
            )
        });
        assert!(
            first.is(ns, local),
            "expected {{{}}}{local} in the Body: {}",
            ns.unwrap_or(""),
            self.describe()
        );
        first
    }

    /// The EchoResponse of a successful Echo (in [`ECHO_NS`]), checked to carry `text`.
    pub fn expect_echo(&self, text: &str) -> &Element {
        let r = self.expect_body(Some(ECHO_NS), "EchoResponse");
        let t = r.child_local("text").map(|t| t.text());
        assert_eq!(
            t.as_deref(),
            Some(text),
            "EchoResponse text: {}",
            self.describe()
        );
        r
    }
}

/// A fault of either version, as clients see it.
#[derive(Debug, Clone)]
pub struct FaultInfo {
    pub version: Version,
    /// The code as written (`SOAP-ENV:Client.Process`, `env:Sender`): several clients compare it raw.
    pub code_text: String,
    /// The code resolved: (namespace, local name). For SOAP 1.1 the local name keeps the dotted
    /// suffix (`Client.Process`).
    pub code: (Option<String>, String),
    /// SOAP 1.2 Subcode values, resolved, outermost first.
    pub subcodes: Vec<(Option<String>, String)>,
    /// faultstring / the first Reason/Text.
    pub reason: String,
    /// The detail / Detail element, if any.
    pub detail: Option<Element>,
    pub detail_code: Option<i64>,
    pub detail_string: Option<String>,
    /// The `ts` attribute of detailString.
    pub detail_ts: Option<String>,
}

impl FaultInfo {
    fn read(v: Version, f: &Element) -> FaultInfo {
        let env = v.env_ns();
        let (code_text, code, subcodes, reason, detail) = match v {
            Version::V11 => {
                let fc = f.child(None, "faultcode");
                let code_text = fc.map(|c| c.text().trim().to_string()).unwrap_or_default();
                let code = fc
                    .and_then(|c| c.resolve_qname(&code_text))
                    .unwrap_or((None, code_text.clone()));
                let reason = f
                    .child(None, "faultstring")
                    .map(|s| s.text())
                    .unwrap_or_default();
                (
                    code_text,
                    code,
                    Vec::new(),
                    reason,
                    f.child(None, "detail").cloned(),
                )
            }
            Version::V12 => {
                let code_el = f.child(Some(env), "Code");
                let value = code_el.and_then(|c| c.child(Some(env), "Value"));
                let code_text = value
                    .map(|c| c.text().trim().to_string())
                    .unwrap_or_default();
                let code = value
                    .and_then(|c| c.resolve_qname(&code_text))
                    .unwrap_or((None, code_text.clone()));
                let mut subcodes = Vec::new();
                let mut cur = code_el.and_then(|c| c.child(Some(env), "Subcode"));
                while let Some(sc) = cur {
                    if let Some(val) = sc.child(Some(env), "Value") {
                        let t = val.text();
                        subcodes.push(
                            val.resolve_qname(&t)
                                .unwrap_or((None, t.trim().to_string())),
                        );
                    }
                    cur = sc.child(Some(env), "Subcode");
                }
                let reason = f
                    .child(Some(env), "Reason")
                    .and_then(|r| r.child(Some(env), "Text"))
                    .map(|t| t.text())
                    .unwrap_or_default();
                (
                    code_text,
                    code,
                    subcodes,
                    reason,
                    f.child(Some(env), "Detail").cloned(),
                )
            }
        };
        let detail_code = detail
            .as_ref()
            .and_then(|d| d.child_local("detailCode"))
            .map(|c| {
                let t = c.text();
                t.trim()
                    .parse::<i64>()
                    .unwrap_or_else(|_| panic!("detailCode {t:?} is not an integer"))
            });
        let ds = detail.as_ref().and_then(|d| d.child_local("detailString"));
        FaultInfo {
            version: v,
            code_text,
            code,
            subcodes,
            reason,
            detail_code,
            detail_string: ds.map(|d| d.text()),
            detail_ts: ds.and_then(|d| d.attr("ts")).map(str::to_string),
            detail,
        }
    }

    /// Whether the resolved code is `{envelope namespace}name` (SOAP 1.1 `name` may carry a dotted
    /// suffix: `is_code("Client")` is true for `Client.Process`).
    pub fn is_code(&self, name: &str) -> bool {
        let (ns, local) = &self.code;
        ns.as_deref() == Some(self.version.env_ns())
            && (local == name
                || (self.version == Version::V11 && local.starts_with(&format!("{name}."))))
    }
}

/// Whether `ts` is an RFC 3339 date-time (`2026-11-21T10:04:05.123Z`, offsets allowed).
pub fn is_rfc3339(ts: &str) -> bool {
    let b = ts.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    if b.len() < 20
        || !digits(0..4)
        || b[4] != b'-'
        || !digits(5..7)
        || b[7] != b'-'
        || !digits(8..10)
    {
        return false;
    }
    if !matches!(b[10], b'T' | b't')
        || !digits(11..13)
        || b[13] != b':'
        || !digits(14..16)
        || b[16] != b':'
        || !digits(17..19)
    {
        return false;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match &b[i..] {
        [b'Z'] | [b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()),
        _ => false,
    }
}

/// A reply body with every `ts="…"` value and every occurrence of `id` replaced by placeholders,
/// for comparing faults byte for byte.
pub fn normalize(body: &[u8], ids: &[&str]) -> String {
    let mut s = String::from_utf8_lossy(body).into_owned();
    for id in ids {
        if !id.is_empty() {
            s = s.replace(id, "{ID}");
        }
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s.as_str();
    while let Some(i) = rest.find("ts=\"") {
        out.push_str(&rest[..i + 4]);
        rest = &rest[i + 4..];
        match rest.find('"') {
            Some(j) => {
                out.push_str("{TS}");
                rest = &rest[j..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    out
}

/// Begin a session with an empty body (SOAP 1.1) and return its ID.
pub fn begin_session(url: &str) -> String {
    let r = call11(url, &begin(), "");
    r.expect_ok();
    r.expect_session_id()
}

/// Echo `text` in session `id` (SOAP 1.1), checking the reply echoes the session and the text.
pub fn echo_in_session(url: &str, id: &str, text: &str) -> SoapReply {
    let r = call11(url, &cont(id), &echo(text));
    r.expect_echo(text);
    assert_eq!(
        r.session_id().as_deref(),
        Some(id),
        "the reply must echo the SessionID: {}",
        r.describe()
    );
    r
}

/// End session `id` with an empty body (SOAP 1.1), checking the reply.
pub fn end_session(url: &str, id: &str) {
    let r = call11(url, &end(id), "");
    r.expect_ok();
    r.expect_no_session();
}

/// Expect a NonStop fault with `detail_code`, SOAP 1.1: HTTP 500, the raw faultcode `code_text`
/// and a well-formed detail; returns it.
pub fn expect_nonstop_fault(r: &SoapReply, code_text: &str, detail_code: i64) -> FaultInfo {
    assert_eq!(
        r.status(),
        500,
        "a SOAP 1.1 fault is HTTP 500: {}",
        r.describe()
    );
    let f = r.expect_fault();
    assert_eq!(f.version, Version::V11, "{}", r.describe());
    assert_eq!(f.code_text, code_text, "faultcode: {}", r.describe());
    let (ns, _) = &f.code;
    assert_eq!(
        ns.as_deref(),
        Some(SOAP11_NS),
        "the faultcode prefix must be declared as the SOAP 1.1 namespace: {}",
        r.describe()
    );
    assert_eq!(
        f.detail_code,
        Some(detail_code),
        "detailCode: {}",
        r.describe()
    );
    let ts = f.detail_ts.clone().unwrap_or_default();
    assert!(
        is_rfc3339(&ts),
        "detailString ts {ts:?} must be an RFC 3339 time: {}",
        r.describe()
    );
    assert!(
        f.detail_string
            .as_deref()
            .is_some_and(|s| !s.trim().is_empty()),
        "detailString must say what happened: {}",
        r.describe()
    );
    f
}

/// Expect a NonStop header fault (`SOAP-ENV:Client.Process`, "Error processing the header of XML
/// document") with `detail_code`.
pub fn expect_header_fault(r: &SoapReply, detail_code: i64) -> FaultInfo {
    let f = expect_nonstop_fault(r, "SOAP-ENV:Client.Process", detail_code);
    assert_eq!(
        f.reason,
        HEADER_FAULTSTRING,
        "faultstring: {}",
        r.describe()
    );
    f
}

/// The -1001 detail text for `id`.
pub fn unknown_session_text(id: &str) -> String {
    format!(
        "SessionID {id} was not found in the server, or SOAP session identified by the SessionID has expired. \
         Please check the SessionID or start a new session if necessary."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_accepts_and_refuses() {
        assert!(is_rfc3339("2026-11-21T10:04:05.123Z"));
        assert!(is_rfc3339("2026-11-21T10:04:05+01:00"));
        assert!(!is_rfc3339("2026-11-21 10:04:05Z"));
        assert!(!is_rfc3339("yesterday"));
        assert!(!is_rfc3339("2026-11-21T10:04:05."));
    }

    #[test]
    fn normalize_hides_ids_and_times() {
        let a = normalize(
            b"<x ts=\"2026-01-01T00:00:00Z\">SessionID abc was not</x>",
            &["abc"],
        );
        assert_eq!(a, "<x ts=\"{TS}\">SessionID {ID} was not</x>");
    }

    #[test]
    fn reads_faults_of_both_versions() {
        let v11 = format!(
            "<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"{SOAP11_NS}\"><SOAP-ENV:Body><SOAP-ENV:Fault><faultcode>SOAP-ENV:Client.Process</faultcode>\
             <faultstring>x</faultstring><detail><detailCode>-1001</detailCode><detailString ts=\"2026-01-01T00:00:00Z\">t</detailString></detail>\
             </SOAP-ENV:Fault></SOAP-ENV:Body></SOAP-ENV:Envelope>"
        );
        let r = SoapReply::new(Reply {
            status: 500,
            reason: String::new(),
            headers: vec![],
            body: v11.into_bytes(),
        });
        let f = r.expect_fault();
        assert!(f.is_code("Client"));
        assert_eq!(f.detail_code, Some(-1001));
        let v12 = format!(
            "<env:Envelope xmlns:env=\"{SOAP12_NS}\"><env:Body><env:Fault><env:Code><env:Value>env:Sender</env:Value>\
             <env:Subcode><env:Value xmlns:q=\"urn:q\">q:Why</env:Value></env:Subcode></env:Code>\
             <env:Reason><env:Text xml:lang=\"en\">r</env:Text></env:Reason><env:Detail><detailCode>-1002</detailCode></env:Detail>\
             </env:Fault></env:Body></env:Envelope>"
        );
        let r = SoapReply::new(Reply {
            status: 400,
            reason: String::new(),
            headers: vec![],
            body: v12.into_bytes(),
        });
        let f = r.expect_fault();
        assert!(f.is_code("Sender"));
        assert_eq!(
            f.subcodes,
            vec![(Some("urn:q".to_string()), "Why".to_string())]
        );
        assert_eq!(f.detail_code, Some(-1002));
        assert_eq!(f.reason, "r");
    }
}
