//! The DSML dialect in tests: configurations with a `/dsml` endpoint, envelopes with the
//! BeginSession / Session / EndSession headers in every form clients write them, and readers for
//! the `ad:Session` reply header, the `batchResponse` and DSML's three faults.

use crate::broker::broker_exe;
use crate::http::{self, Client, Request};
use crate::soap::{SoapReply, SOAP11_NS};
use crate::xml::Element;
use crate::TestConfig;
use std::net::IpAddr;

/// The namespace of the DSML session headers.
pub const AD_NS: &str = "urn:schema-microsoft-com:activedirectory:dsmlv2";
/// The DSML v2 core namespace (`batchRequest`, `batchResponse`).
pub const DSML_NS: &str = "urn:oasis:names:tc:DSML:2:0:core";
/// The SOAPAction the Microsoft client sends (with its quotes).
pub const SOAP_ACTION: &str = "\"#batchRequest\"";

/// The exact fault bodies of [MS-DSML] §3.1.4.4, as the broker writes them.
pub const BAD_SESSION_REQUEST_FAULT: &str = "<SOAP:Envelope xmlns:SOAP=\"http://schemas.xmlsoap.org/soap/envelope/\"><SOAP:Body><SOAP:Fault><faultcode>SOAP:Client</faultcode><faultstring>SOAP Invalid Request</faultstring><detail>Bad Session Request</detail></SOAP:Fault></SOAP:Body></SOAP:Envelope>";
pub const BAD_REQUEST_FAULT: &str = "<SOAP:Envelope xmlns:SOAP=\"http://schemas.xmlsoap.org/soap/envelope/\"><SOAP:Body><SOAP:Fault><faultcode>SOAP:Client</faultcode><faultstring>SOAP Invalid Request</faultstring><detail>Bad Request</detail></SOAP:Fault></SOAP:Body></SOAP:Envelope>";
pub const SERVER_FAULT: &str = "<SOAP:Envelope xmlns:SOAP=\"http://schemas.xmlsoap.org/soap/envelope/\"><SOAP:Body><SOAP:Fault><faultcode>SOAP:Server</faultcode><faultstring>SOAP Server Application Faulted</faultstring><detail>Internal DSML Server Error</detail></SOAP:Fault></SOAP:Body></SOAP:Envelope>";

/// Which of DSML's three faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsmlFault {
    BadSessionRequest,
    BadRequest,
    Server,
}

impl DsmlFault {
    /// The exact reply body.
    pub fn body(self) -> &'static str {
        match self {
            DsmlFault::BadSessionRequest => BAD_SESSION_REQUEST_FAULT,
            DsmlFault::BadRequest => BAD_REQUEST_FAULT,
            DsmlFault::Server => SERVER_FAULT,
        }
    }
}

/// The settings of a test `/dsml` endpoint (`None`: the broker's default).
#[derive(Debug, Clone, Default)]
pub struct DsmlEndpoint {
    pub session_timeout: Option<String>,
    pub sessions_max: Option<usize>,
    pub sessions_max_per_ip: Option<usize>,
    pub ip_match: Option<bool>,
    pub auth_match: Option<bool>,
    pub max_requests_per_batch: Option<usize>,
    /// `auth = "…"` of the endpoint.
    pub auth: Option<String>,
    /// The `[auth]` table's `credentials_file`, when the endpoint authenticates.
    pub credentials_file: Option<String>,
    /// An ldap class before a real directory instead of the sample stand-in: its TOML keys
    /// (`directory = …`, `bind_dn = …`, …), one per line.
    pub ldap: Option<String>,
}

impl DsmlEndpoint {
    pub fn new() -> DsmlEndpoint {
        DsmlEndpoint::default()
    }

    pub fn session_timeout(mut self, t: &str) -> Self {
        self.session_timeout = Some(t.into());
        self
    }

    pub fn sessions_max(mut self, n: usize) -> Self {
        self.sessions_max = Some(n);
        self
    }

    pub fn sessions_max_per_ip(mut self, n: usize) -> Self {
        self.sessions_max_per_ip = Some(n);
        self
    }

    pub fn ip_match(mut self, on: bool) -> Self {
        self.ip_match = Some(on);
        self
    }

    pub fn auth_match(mut self, on: bool) -> Self {
        self.auth_match = Some(on);
        self
    }

    /// An ldap class with these keys (`directory = "ldap://…"` at least) behind the endpoint.
    pub fn ldap(mut self, keys: &str) -> Self {
        self.ldap = Some(keys.to_string());
        self
    }

    pub fn max_requests_per_batch(mut self, n: usize) -> Self {
        self.max_requests_per_batch = Some(n);
        self
    }

    /// Authenticate with HTTP Basic against `credentials_file` (`auth` = `required` or `optional`).
    pub fn auth(mut self, mode: &str, credentials_file: &str) -> Self {
        self.auth = Some(mode.into());
        self.credentials_file = Some(credentials_file.into());
        self
    }

    /// The TOML of the endpoint, the sample `directory` class and its `batchRequest` service, for
    /// [`TestConfig::extra`].
    pub fn toml(&self) -> String {
        let mut t = String::new();
        if let Some(f) = &self.credentials_file {
            t.push_str(&format!("[auth]\ncredentials_file = {f:?}\n\n"));
        }
        t.push_str("[[endpoint]]\npath = \"/dsml\"\ndialect = \"dsml\"\n");
        if let Some(v) = &self.session_timeout {
            t.push_str(&format!("session_timeout = {v:?}\n"));
        }
        for (k, v) in [
            ("sessions_max", self.sessions_max),
            ("sessions_max_per_ip", self.sessions_max_per_ip),
            ("max_requests_per_batch", self.max_requests_per_batch),
        ] {
            if let Some(v) = v {
                t.push_str(&format!("{k} = {v}\n"));
            }
        }
        for (k, v) in [("ip_match", self.ip_match), ("auth_match", self.auth_match)] {
            if let Some(v) = v {
                t.push_str(&format!("{k} = {v}\n"));
            }
        }
        if let Some(a) = &self.auth {
            t.push_str(&format!("auth = {a:?}\n"));
        }
        match &self.ldap {
            None => t.push_str(
                "\n[[server_class]]\nname = \"directory\"\nadapter = \"process\"\n\
                 command = [\"{broker_exe}\", \"sample-server\", \"directory\"]\n\
                 context = \"free\"\nmin_workers = 1\nmax_workers = 2\n",
            ),
            Some(keys) => t.push_str(&format!(
                "\n[[server_class]]\nname = \"directory\"\nadapter = \"ldap\"\n{keys}\n\
                 context = \"sensitive\"\nmin_workers = 1\nmax_workers = 6\n"
            )),
        }
        t.push_str(
            "\n[[service]]\nname = \"batchRequest\"\nendpoint = \"/dsml\"\nserver_class = \"directory\"\n",
        );
        t
    }

    /// A whole test configuration: the harness's `/soap` endpoint plus this `/dsml` one.
    pub fn config(&self) -> TestConfig {
        TestConfig::new().extra(&self.toml())
    }
}

// ---- envelopes ---------------------------------------------------------------------------------

/// A SOAP 1.1 envelope (prefix `se`, as the .NET client writes it) with raw header blocks (none →
/// no Header) and raw body content.
pub fn envelope(header: &str, body: &str) -> String {
    let header = if header.is_empty() {
        String::new()
    } else {
        format!("<se:Header>{header}</se:Header>")
    };
    format!("<se:Envelope xmlns:se=\"{SOAP11_NS}\">{header}<se:Body>{body}</se:Body></se:Envelope>")
}

/// `<ad:BeginSession xmlns:ad="…" se:mustUnderstand="1"/>`.
pub fn begin() -> String {
    format!("<ad:BeginSession xmlns:ad=\"{AD_NS}\" se:mustUnderstand=\"1\"/>")
}

/// `<ad:Session xmlns:ad="…" ad:SessionID="ID" se:mustUnderstand="1"/>`.
pub fn session(id: &str) -> String {
    format!("<ad:Session xmlns:ad=\"{AD_NS}\" ad:SessionID=\"{id}\" se:mustUnderstand=\"1\"/>")
}

/// `<ad:EndSession xmlns:ad="…" ad:SessionID="ID" se:mustUnderstand="1"/>`.
pub fn end(id: &str) -> String {
    format!("<ad:EndSession xmlns:ad=\"{AD_NS}\" ad:SessionID=\"{id}\" se:mustUnderstand=\"1\"/>")
}

/// A header element in the default namespace with an unqualified `SessionID`
/// (`<Session xmlns="…" SessionID="ID"/>`); `id` None for BeginSession.
pub fn default_ns_header(local: &str, id: Option<&str>) -> String {
    match id {
        Some(id) => format!("<{local} xmlns=\"{AD_NS}\" SessionID=\"{id}\"/>"),
        None => format!("<{local} xmlns=\"{AD_NS}\"/>"),
    }
}

/// A `batchRequest` in the DSML namespace (as the default namespace) holding `operations`.
pub fn batch(request_id: &str, operations: &[String]) -> String {
    if operations.is_empty() {
        return format!("<batchRequest xmlns=\"{DSML_NS}\" requestID=\"{request_id}\"/>");
    }
    format!(
        "<batchRequest xmlns=\"{DSML_NS}\" requestID=\"{request_id}\">{}</batchRequest>",
        operations.concat()
    )
}

/// An empty `<batchRequest/>` in the DSML namespace.
pub fn empty_batch() -> String {
    format!("<batchRequest xmlns=\"{DSML_NS}\"/>")
}

/// A base-scope `searchRequest` with a `requestID`.
pub fn search(request_id: &str) -> String {
    format!(
        "<searchRequest requestID=\"{request_id}\" dn=\"dc=example,dc=com\" scope=\"baseObject\" \
         derefAliases=\"neverDerefAliases\"><filter><present name=\"objectClass\"/></filter></searchRequest>"
    )
}

// ---- sending -----------------------------------------------------------------------------------

/// POST a DSML envelope the way the Microsoft client does: `SOAPAction: "#batchRequest"`, and a
/// `text/xml` Content-Type unless `content_type` is None.
pub fn post_with(
    client: &Client,
    url: &str,
    content_type: Option<&str>,
    extra_headers: &[(&str, &str)],
    envelope: &str,
) -> SoapReply {
    let t = http::parse_url(url);
    let mut r = Request::post(&t.path, content_type, envelope.as_bytes().to_vec())
        .header("SOAPAction", SOAP_ACTION);
    for (k, v) in extra_headers {
        r = r.header(k, v);
    }
    SoapReply::new(client.send(url, &r))
}

/// POST with `Content-Type: text/xml; charset=utf-8` and the SOAPAction.
pub fn post(url: &str, envelope: &str) -> SoapReply {
    post_with(
        &Client::new(),
        url,
        Some("text/xml; charset=utf-8"),
        &[],
        envelope,
    )
}

/// POST from another local address (127.0.0.2…).
pub fn post_from(ip: IpAddr, url: &str, envelope: &str) -> SoapReply {
    post_with(
        &Client::new().bind(ip),
        url,
        Some("text/xml; charset=utf-8"),
        &[],
        envelope,
    )
}

/// Send a header and a body; the reply.
pub fn call(url: &str, header: &str, body: &str) -> SoapReply {
    post(url, &envelope(header, body))
}

/// BeginSession with an empty batch; the new SessionID.
pub fn begin_session(url: &str) -> String {
    let r = call(url, &begin(), &empty_batch());
    expect_batch_response(&r);
    expect_ad_session(&r)
}

// ---- reading replies ---------------------------------------------------------------------------

/// The `ad:Session` header blocks of a reply.
pub fn ad_sessions(r: &SoapReply) -> Vec<&Element> {
    r.header_blocks()
        .into_iter()
        .filter(|h| h.is(Some(AD_NS), "Session"))
        .collect()
}

/// The reply's `ad:Session/@ad:SessionID` (qualified, as the .NET client reads it first), checking
/// there is exactly one such header and that it is not marked mustUnderstand.
pub fn expect_ad_session(r: &SoapReply) -> String {
    let headers = ad_sessions(r);
    assert_eq!(
        headers.len(),
        1,
        "expected exactly one ad:Session header: {}",
        r.describe()
    );
    let h = headers[0];
    assert!(
        h.attr_ns(SOAP11_NS, "mustUnderstand").is_none(),
        "a reply header must not be mustUnderstand: {}",
        r.describe()
    );
    h.attr_ns(AD_NS, "SessionID")
        .unwrap_or_else(|| {
            panic!(
                "ad:Session without a qualified ad:SessionID: {}",
                r.describe()
            )
        })
        .to_string()
}

/// A successful reply (HTTP 200, SOAP 1.1, no fault) whose Body holds one `batchResponse`;
/// returns it.
pub fn expect_batch_response(r: &SoapReply) -> &Element {
    assert_eq!(r.status(), 200, "expected HTTP 200: {}", r.describe());
    assert_eq!(
        r.http.media_type().as_deref(),
        Some("text/xml"),
        "{}",
        r.describe()
    );
    assert!(r.fault().is_none(), "unexpected fault: {}", r.describe());
    let body: Vec<&Element> = r.body().elements().collect();
    assert_eq!(body.len(), 1, "expected one Body element: {}", r.describe());
    assert!(
        body[0].is(Some(DSML_NS), "batchResponse"),
        "expected a dsml:batchResponse: {}",
        r.describe()
    );
    body[0]
}

/// The reply is exactly `fault`: HTTP 500, `text/xml`, and the body byte for byte.
pub fn expect_fault(r: &SoapReply, fault: DsmlFault) {
    assert_eq!(r.status(), 500, "expected HTTP 500: {}", r.describe());
    assert_eq!(
        r.http.media_type().as_deref(),
        Some("text/xml"),
        "{}",
        r.describe()
    );
    assert_eq!(
        r.text,
        fault.body(),
        "expected the {fault:?} fault, byte for byte"
    );
    // And as a SOAP client reads it: faultcode's prefix is bound to the SOAP 1.1 namespace.
    let f = r.expect_fault();
    let code = match fault {
        DsmlFault::Server => "Server",
        _ => "Client",
    };
    assert!(f.is_code(code), "{f:?}");
}

// ---- credentials -------------------------------------------------------------------------------

/// A `user:hash` line made by `broker hash-password --user USER` (the password on its stdin).
pub fn hash_line(user: &str, password: &str) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(broker_exe())
        .args(["hash-password", "--user", user])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run broker hash-password");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write the password");
    let out = child.wait_with_output().expect("hash-password finishes");
    assert!(out.status.success(), "hash-password failed: {out:?}");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

/// Write a credentials file for `users` (name, password) into `dir`; its path.
pub fn credentials_file(dir: &std::path::Path, users: &[(&str, &str)]) -> String {
    let path = dir.join("users");
    let lines: Vec<String> = users.iter().map(|(u, p)| hash_line(u, p)).collect();
    std::fs::write(&path, lines.join("\n") + "\n").expect("write the credentials file");
    path.display().to_string()
}

/// An HTTP Basic `Authorization` value.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}
