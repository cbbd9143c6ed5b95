//! The NonStop session dialect end to end (`spec/nonstop.md`): begin, continue, end, expiry, the
//! sweeper, serialisation, the Encoding header and the header fault catalogue, against a real broker
//! and the sample echo server.

use broker_tests::http::{Client, Request};
use broker_tests::soap::{
    self, begin, call, call11, cont, echo, echo_sleep, end, expect_header_fault,
    expect_nonstop_fault, session, SoapReply, Version, ECHO_NS, NSK, NSK_SLASH, SOAP12_NS,
};
use broker_tests::{proc, wait, xml, BrokerProcess, TestConfig};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn start() -> BrokerProcess {
    BrokerProcess::start(&TestConfig::new().render())
}

fn is_url_safe(id: &str) -> bool {
    id.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
}

/// Protects Begin with an empty body: HTTP 200, an empty Body, and a Session header whose SessionID
/// is at least 32 URL-safe characters (122 random bits rendered), different for every session, and
/// never marked mustUnderstand.
#[test]
fn begin_with_empty_body_returns_a_fresh_url_safe_session_id() {
    let b = start();
    let url = b.url("/soap");
    let r = call11(&url, &begin(), "");
    assert!(
        r.expect_ok().is_none(),
        "a Begin with an empty body has an empty reply Body: {}",
        r.describe()
    );
    assert_eq!(
        r.http.media_type().as_deref(),
        Some("text/xml"),
        "{}",
        r.describe()
    );
    let id = r.expect_session_id();
    assert!(
        id.len() >= 32,
        "SessionID {id:?} is shorter than 32 characters"
    );
    assert!(is_url_safe(&id), "SessionID {id:?} is not URL-safe");
    let header = r.session_headers()[0].clone();
    assert!(
        header.attr_ns(soap::SOAP11_NS, "mustUnderstand").is_none(),
        "response headers must not be mustUnderstand: {}",
        r.describe()
    );
    assert_eq!(header.namespace.as_deref(), Some(NSK));

    let ids: Vec<String> = (0..5).map(|_| soap::begin_session(&url)).collect();
    for (i, a) in ids.iter().enumerate() {
        assert_ne!(a, &id);
        for b2 in &ids[i + 1..] {
            assert_ne!(a, b2, "two Begins returned the same SessionID");
        }
    }
}

/// Protects Begin with a body: the body runs inside the new session and its EchoResponse comes back
/// with the SessionID.
#[test]
fn begin_with_echo_runs_the_body_and_returns_the_session() {
    let b = start();
    let r = call11(&b.url("/soap"), &begin(), &echo("hello at begin"));
    r.expect_echo("hello at begin");
    let id = r.expect_session_id();
    soap::echo_in_session(&b.url("/soap"), &id, "still there");
}

/// Protects the continue request: the reply echoes the SessionID, and Echo returns EchoResponse in
/// the request element's namespace with the same children (attributes, nesting, text), whatever
/// namespace form the request used (prefixed, default namespace, none).
#[test]
fn continue_echoes_the_session_and_echo_returns_the_same_children() {
    let b = start();
    let url = b.url("/soap");
    let id = soap::begin_session(&url);
    let cases = [
        (
            Some(ECHO_NS),
            format!(
                "<e:Echo xmlns:e=\"{ECHO_NS}\"><text>hi &amp; bye</text><item n=\"1\">a</item><nested><x>1</x><y/></nested></e:Echo>"
            ),
        ),
        (Some("urn:other:ns"), "<Echo xmlns=\"urn:other:ns\"><text>default ns</text><list><v>1</v><v>2</v></list></Echo>".to_string()),
        (None, "<Echo><text>no namespace</text></Echo>".to_string()),
    ];
    for (ns, body) in cases {
        let r = call11(&url, &cont(&id), &body);
        let resp = r.expect_body(ns, "EchoResponse");
        assert_eq!(
            r.session_id().as_deref(),
            Some(id.as_str()),
            "the SessionID must be echoed: {}",
            r.describe()
        );
        let sent = xml::parse(&body).expect("the request body parses");
        let sent_children: Vec<_> = sent.elements().map(|e| e.shape()).collect();
        let got_children: Vec<_> = resp.elements().map(|e| e.shape()).collect();
        assert_eq!(
            got_children,
            sent_children,
            "EchoResponse must carry the same children: {}",
            r.describe()
        );
    }
}

/// Protects End with a body: the body runs first, inside the session, then the session ends (no
/// Session header in the reply) and a later continue gets -1001.
#[test]
fn end_with_body_runs_the_body_then_ends_the_session() {
    let b = start();
    let url = b.url("/soap");
    let id = soap::begin_session(&url);
    let r = call11(&url, &end(&id), &echo("last words"));
    r.expect_echo("last words");
    r.expect_no_session();
    let r = call11(&url, &cont(&id), &echo("too late"));
    expect_header_fault(&r, -1001);
}

/// Protects End with an empty body: the reply Body is `<Response>Session ended.</Response>` and has
/// no Session header.
#[test]
fn end_with_empty_body_answers_session_ended() {
    let b = start();
    let url = b.url("/soap");
    let id = soap::begin_session(&url);
    let r = call11(&url, &end(&id), "");
    let resp = r.expect_body(None, "Response");
    assert_eq!(resp.text(), "Session ended.", "{}", r.describe());
    r.expect_no_session();
}

/// Protects -1001 for an ended session: SOAP-ENV:Client.Process, the header faultstring, and the
/// documented detail text naming the ID; no Session header.
#[test]
fn continuing_an_ended_session_is_fault_1001_with_the_documented_text() {
    let b = start();
    let url = b.url("/soap");
    let id = soap::begin_session(&url);
    soap::end_session(&url, &id);
    let r = call11(&url, &cont(&id), &echo("hello?"));
    let f = expect_header_fault(&r, -1001);
    assert_eq!(
        f.detail_string.as_deref(),
        Some(soap::unknown_session_text(&id).as_str()),
        "{}",
        r.describe()
    );
    r.expect_no_session();
    // Ending it again is no different.
    let r = call11(&url, &end(&id), "");
    expect_header_fault(&r, -1001);
    r.expect_no_session();
}

/// Protects -1001 for an ID the broker never issued.
#[test]
fn unknown_session_id_is_fault_1001() {
    let b = start();
    let url = b.url("/soap");
    let id = "0123456789abcdef0123456789abcdef";
    let r = call11(&url, &cont(id), &echo("x"));
    let f = expect_header_fault(&r, -1001);
    assert_eq!(
        f.detail_string.as_deref(),
        Some(soap::unknown_session_text(id).as_str())
    );
    r.expect_no_session();
}

/// Protects the idle timeout and its secrecy: with `session_timeout = "1s"`, a session left idle for
/// 1.5 s gets -1001, and that fault is byte for byte the fault of an unknown ID (apart from the ID
/// and the time stamp), with the same status and media type.
#[test]
fn idle_session_expires_and_its_fault_is_indistinguishable_from_an_unknown_one() {
    // A long sweep interval: this test is about lazy expiry when the request arrives.
    let b = BrokerProcess::start(
        &TestConfig::new()
            .session_timeout("1s")
            .sweep_interval("1h")
            .render(),
    );
    let url = b.url("/soap");
    let id = soap::begin_session(&url);
    // Idling past the timeout is the behaviour under test (the session was renewed before the
    // Begin's reply was sent, so 1.2 s from here is past its 1 s).
    std::thread::sleep(Duration::from_millis(1200));
    let expired = call11(&url, &cont(&id), &echo("x"));
    expect_header_fault(&expired, -1001);
    expired.expect_no_session();

    let unknown_id = "fedcba9876543210fedcba9876543210";
    let unknown = call11(&url, &cont(unknown_id), &echo("x"));
    expect_header_fault(&unknown, -1001);
    assert_eq!(expired.status(), unknown.status());
    assert_eq!(
        expired.http.header("content-type"),
        unknown.http.header("content-type")
    );
    assert_eq!(
        soap::normalize(&expired.http.body, &[&id]),
        soap::normalize(&unknown.http.body, &[unknown_id]),
        "an expired session's fault must equal an unknown session's fault"
    );
}

/// Protects the idle timeout's meaning: every request renews it, so a session used every 300 ms
/// outlives a 1 s timeout several times over.
#[test]
fn requests_keep_a_session_alive_past_its_timeout() {
    let b = BrokerProcess::start(
        &TestConfig::new()
            .session_timeout("1s")
            .sweep_interval("100ms")
            .render(),
    );
    let url = b.url("/soap");
    let id = soap::begin_session(&url);
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_millis(2600) {
        // The pause between requests is the behaviour under test: idle, but never for 1 s.
        std::thread::sleep(Duration::from_millis(300));
        soap::echo_in_session(&url, &id, &format!("keepalive {n}"));
        n += 1;
    }
}

/// Protects persistent connections: a whole session (Begin, continues, End) runs over one
/// keep-alive connection, each reply complete and correctly framed.
#[test]
fn a_session_runs_over_one_keep_alive_connection() {
    let b = start();
    let url = b.url("/soap");
    let mut c = Client::new().connect(&url).keep_alive(true);
    let mut exchange = |header: String, body: String| {
        c.send(&soap11_request(soap::envelope(
            Version::V11,
            &header,
            &body,
        )));
        SoapReply::new(c.read_reply("POST"))
    };
    let r = exchange(begin(), echo("ka begin"));
    r.expect_echo("ka begin");
    let id = r.expect_session_id();
    for k in 0..5 {
        let r = exchange(cont(&id), echo(&format!("ka {k}")));
        r.expect_echo(&format!("ka {k}"));
        assert_eq!(r.session_id().as_deref(), Some(id.as_str()));
    }
    let r = exchange(end(&id), String::new());
    r.expect_body(None, "Response");
    r.expect_no_session();
}

/// Protects the `SessionId` alias: accepted on a continue and an End, and answered as `SessionID`.
#[test]
fn session_id_alias_is_accepted_and_answered_as_session_id() {
    let b = start();
    let url = b.url("/soap");
    let id = soap::begin_session(&url);
    let r = call11(
        &url,
        &session(&format!("SessionId=\"{id}\"")),
        &echo("alias"),
    );
    r.expect_echo("alias");
    let h = r.session_headers()[0].clone();
    assert_eq!(h.attr("SessionID"), Some(id.as_str()), "{}", r.describe());
    assert!(
        h.attr("SessionId").is_none(),
        "replies say SessionID only: {}",
        r.describe()
    );
    let r = call11(
        &url,
        &session(&format!("SessionId=\"{id}\" SessionCommand=\"End\"")),
        "",
    );
    r.expect_body(None, "Response");
    r.expect_no_session();
}

/// Protects the namespace forms: a request in `urn:compaq_nsk_oss_SoapHeader/` (trailing slash) is
/// answered in that form, on success and on faults of the live session; the plain form in the
/// plain form.
#[test]
fn header_namespace_with_trailing_slash_is_echoed_in_the_same_form() {
    let b = start();
    let url = b.url("/soap");
    let slash = |attrs: &str| format!("<n:Session xmlns:n=\"{NSK_SLASH}\" {attrs}/>");

    let r = call11(&url, &slash("SessionCommand=\"Begin\""), "");
    r.expect_ok();
    let id = r.expect_session_id();
    assert_eq!(
        r.session_headers()[0].namespace.as_deref(),
        Some(NSK_SLASH),
        "{}",
        r.describe()
    );

    let r = call11(&url, &slash(&format!("SessionID=\"{id}\"")), &echo("slash"));
    r.expect_echo("slash");
    assert_eq!(
        r.session_headers()[0].namespace.as_deref(),
        Some(NSK_SLASH),
        "{}",
        r.describe()
    );

    let r = call11(
        &url,
        &slash(&format!("SessionID=\"{id}\"")),
        "<NoSuchService/>",
    );
    expect_nonstop_fault(&r, "SOAP-ENV:Client", -215);
    assert_eq!(
        r.session_headers()
            .first()
            .and_then(|h| h.namespace.as_deref()),
        Some(NSK_SLASH),
        "{}",
        r.describe()
    );

    // The same session through the plain form is answered in the plain form.
    let r = call11(&url, &cont(&id), &echo("plain"));
    r.expect_echo("plain");
    assert_eq!(
        r.session_headers()[0].namespace.as_deref(),
        Some(NSK),
        "{}",
        r.describe()
    );
}

/// Protects `<Encoding OutputEncoding="Shift_JIS"/>`: the reply is declared (Content-Type charset
/// and XML declaration) and really encoded in Shift_JIS, and Japanese text survives the round trip.
#[test]
fn output_encoding_shift_jis_encodes_and_declares_the_reply() {
    let b = start();
    let url = b.url("/soap");
    let text = "日本語のテキスト";
    let header = format!("{}{}", begin(), soap::encoding("Shift_JIS"));
    let r = call11(&url, &header, &echo(text));
    assert_eq!(r.status(), 200, "{}", r.describe());
    let charset = r.http.charset().unwrap_or_default();
    assert!(
        charset.eq_ignore_ascii_case("Shift_JIS"),
        "Content-Type charset must be Shift_JIS: {}",
        r.describe()
    );
    let body = &r.http.body;
    let decl = b"<?xml version=\"1.0\" encoding=\"Shift_JIS\"?>";
    assert!(
        body.starts_with(decl),
        "the reply must start with an XML declaration naming Shift_JIS: {}",
        r.describe()
    );
    let strict = encoding_rs::SHIFT_JIS
        .decode_without_bom_handling_and_without_replacement(body)
        .unwrap_or_else(|| panic!("the reply is not valid Shift_JIS: {:?}", body));
    let (sjis, _, _) = encoding_rs::SHIFT_JIS.encode(text);
    assert!(
        body.windows(sjis.len()).any(|w| w == &sjis[..]),
        "the Japanese text must be in Shift_JIS bytes"
    );
    assert!(
        !body.windows(text.len()).any(|w| w == text.as_bytes()),
        "the reply must not carry the UTF-8 bytes"
    );
    assert!(strict.contains(text));
    r.expect_echo(text);
    let id = r.expect_session_id();
    // The next request without the header is UTF-8 again.
    let r = call11(&url, &cont(&id), &echo(text));
    r.expect_echo(text);
    let cs = r.http.charset().unwrap_or_else(|| "utf-8".into());
    assert!(cs.eq_ignore_ascii_case("utf-8"), "{}", r.describe());
}

/// Protects "the encoding the client named": `OutputEncoding="ISO-8859-1"` is answered in
/// ISO-8859-1 and declared so, not in windows-1252 (which the WHATWG label means): U+0080–U+00FF
/// are single bytes of their own value, and `€` (0x80 in windows-1252, absent from Latin-1) is a
/// character reference that decodes back to `€`.
#[test]
fn output_encoding_iso_8859_1_is_latin1_not_windows_1252() {
    let b = start();
    let url = b.url("/soap");
    let text = "café \u{85} € ÿ";
    let header = format!("{}{}", begin(), soap::encoding("ISO-8859-1"));
    let r = call11(&url, &header, &echo(text));
    assert_eq!(r.status(), 200, "{}", r.describe());
    let charset = r.http.charset().unwrap_or_default();
    assert_eq!(charset, "ISO-8859-1", "{}", r.describe());
    let body = &r.http.body;
    assert!(
        body.starts_with(b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>"),
        "{}",
        r.describe()
    );
    let want = b"caf\xE9 \x85 &#x20AC; \xFF";
    assert!(
        body.windows(want.len()).any(|w| w == want),
        "Latin-1 bytes and a reference for the euro sign: {:?}",
        String::from_utf8_lossy(body)
    );
    // Decoded as Latin-1 (every byte its own code point), the echo is the text sent.
    let latin1: String = body.iter().map(|&b| char::from(b)).collect();
    let doc = broker_tests::xml::parse(latin1.split_once("?>").expect("declaration").1)
        .expect("well-formed");
    let echoed = doc
        .descendants()
        .into_iter()
        .find(|e| e.local == "text")
        .map(|e| e.text())
        .unwrap_or_default();
    assert_eq!(echoed, text);
}

/// Protects -1007: an OutputEncoding the broker cannot write is refused, naming the value.
#[test]
fn unsupported_output_encoding_is_fault_1007() {
    let b = start();
    let url = b.url("/soap");
    let r = call11(
        &url,
        &format!("{}{}", begin(), soap::encoding("NOPE-42")),
        &echo("x"),
    );
    let f = expect_header_fault(&r, -1007);
    assert_eq!(
        f.detail_string.as_deref(),
        Some("Bad OutputEncoding value NOPE-42 was specified."),
        "{}",
        r.describe()
    );
    r.expect_no_session();
}

/// Protects the header fault catalogue (-1002 … -1020): each malformed header gets its detailCode,
/// SOAP-ENV:Client.Process and the header faultstring, and no session is begun.
#[test]
fn header_syntax_errors_get_their_documented_fault_codes() {
    let b = start();
    let url = b.url("/soap");
    let nsk_el = |name: &str, attrs: &str| format!("<nsk:{name} xmlns:nsk=\"{NSK}\" {attrs}/>");
    let cases: Vec<(&str, String, i64, &str)> = vec![
        ("Session with neither ID nor Begin", session(""), -1002, "Tag Session must set SessionID attribute or set SessionCommand attribute to \"Begin\"."),
        ("End without ID", session("SessionCommand=\"End\""), -1002, "Tag Session must set SessionID"),
        ("Begin with an ID", session("SessionCommand=\"Begin\" SessionID=\"abc\""), -1003, "SessionID attribute must not be set when SessionCommand attribute value is \"Begin\"."),
        ("bad SessionCommand", session("SessionCommand=\"Start\""), -1004, "can only be"),
        ("bad CurrentTransactionCommand", session("SessionID=\"abc\" CurrentTransactionCommand=\"Commit\""), -1005, "can only be"),
        ("bad BeginNewTransaction", session("SessionCommand=\"Begin\" BeginNewTransaction=\"maybe\""), -1006, "can only be"),
        ("unknown element in the NonStop namespace", format!("{}{}", nsk_el("Bogus", ""), begin()), -1010, "Invalid tag"),
        ("two Session headers", format!("{}{}", begin(), begin()), -1010, "Session"),
        ("unknown attribute", session("SessionCommand=\"Begin\" Colour=\"red\""), -1011, "Invalid attribute Colour"),
        ("unknown attribute on Encoding", format!("{}{}", begin(), nsk_el("Encoding", "OutputEncoding=\"UTF-8\" Font=\"x\"")), -1011, "Invalid attribute Font"),
        ("transaction command in a Begin", session("SessionCommand=\"Begin\" CurrentTransactionCommand=\"End\""), -1020, ""),
    ];
    let mut failures = Vec::new();
    for (name, header, code, text) in &cases {
        let r = call11(&url, header, &echo("x"));
        let outcome = std::panic::catch_unwind(|| {
            let f = expect_header_fault(&r, *code);
            let ds = f.detail_string.clone().unwrap_or_default();
            assert!(
                ds.contains(text),
                "detailString {ds:?} should contain {text:?}"
            );
            r.expect_no_session();
        });
        if outcome.is_err() {
            failures.push(format!("{name} (expected {code}): {}", r.describe()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Protects sessions from bad headers: a header error on a request naming a live session leaves the
/// session usable.
#[test]
fn header_errors_on_a_live_session_leave_it_usable() {
    let b = start();
    let url = b.url("/soap");
    let id = soap::begin_session(&url);
    let r = call11(
        &url,
        &session(&format!("SessionID=\"{id}\" Colour=\"red\"")),
        &echo("x"),
    );
    expect_header_fault(&r, -1011);
    let r = call11(
        &url,
        &session(&format!("SessionID=\"{id}\" SessionCommand=\"Stop\"")),
        &echo("x"),
    );
    expect_header_fault(&r, -1004);
    let r = call11(&url, &format!("{}{}", cont(&id), cont(&id)), &echo("x"));
    expect_header_fault(&r, -1010);
    soap::echo_in_session(&url, &id, "survived");
    soap::end_session(&url, &id);
}

/// Protects -215: an unknown service in a session is `SOAP-ENV:Client` -215 naming the service; the
/// fault carries the Session header and the session still works; outside a session there is no
/// Session header.
#[test]
fn unknown_service_is_fault_215_and_a_session_survives_it() {
    let b = start();
    let url = b.url("/soap");
    let id = soap::begin_session(&url);
    let r = call11(&url, &cont(&id), "<m:NoSuchService xmlns:m=\"urn:x\"/>");
    let f = expect_nonstop_fault(&r, "SOAP-ENV:Client", -215);
    assert!(
        f.detail_string
            .as_deref()
            .unwrap_or("")
            .contains("NoSuchService"),
        "{}",
        r.describe()
    );
    assert_eq!(
        r.session_id().as_deref(),
        Some(id.as_str()),
        "a fault in a live session carries its Session header: {}",
        r.describe()
    );
    soap::echo_in_session(&url, &id, "after 215");

    let r = call11(&url, "", "<NoSuchService/>");
    expect_nonstop_fault(&r, "SOAP-ENV:Client", -215);
    r.expect_no_session();

    // A Begin whose body names an unknown service begins nothing.
    let r = call11(&url, &begin(), "<NoSuchService/>");
    expect_nonstop_fault(&r, "SOAP-ENV:Client", -215);
    r.expect_no_session();
}

/// Protects -210: a service of a context-sensitive class called without a session is refused with
/// -210 (a header error), while context-free services still run without one.
#[test]
fn context_sensitive_service_without_a_session_is_fault_210() {
    let extra = r#"
[[server_class]]
name = "cart"
adapter = "process"
command = ["{broker_exe}", "sample-server", "echo"]
context = "sensitive"
min_workers = 1
max_workers = 1

[[service]]
name = "CartAdd"
endpoint = "/soap"
server_class = "cart"
operation = "Echo"
"#;
    let b = BrokerProcess::start(&TestConfig::new().extra(extra).render());
    let url = b.url("/soap");
    let r = call11(&url, "", "<CartAdd><item>x</item></CartAdd>");
    let f = expect_header_fault(&r, -210);
    assert!(
        f.detail_string
            .as_deref()
            .unwrap_or("")
            .contains("requires session"),
        "{}",
        r.describe()
    );
    r.expect_no_session();
    let r = call11(&url, "", &echo("sessionless echo"));
    r.expect_echo("sessionless echo");
    r.expect_no_session();
}

/// Protects the default of `BeginNewTransaction`: "no" is accepted and begins nothing (the
/// transaction rules themselves are protected in `transactions.rs`).
#[test]
fn begin_new_transaction_no_is_the_default() {
    let b = start();
    let url = b.url("/soap");
    let id = soap::begin_session(&url);
    let r = call11(
        &url,
        &session(&format!("SessionID=\"{id}\" BeginNewTransaction=\"no\"")),
        &echo("no txn"),
    );
    r.expect_echo("no txn");
    let r = call11(
        &url,
        &session(&format!(
            "SessionID=\"{id}\" CurrentTransactionCommand=\"End\""
        )),
        &echo("x"),
    );
    soap::expect_header_fault(&r, -1013);
}

/// Protects SOAP 1.2 sessions: Begin, continue and End work in 1.2 and are answered in 1.2 with
/// `application/soap+xml`.
#[test]
fn soap12_session_round_trip() {
    let b = start();
    let url = b.url("/soap");
    let v = Version::V12;
    let r = call(&url, v, &begin(), &echo("v12 begin"));
    r.expect_echo("v12 begin");
    assert_eq!(r.version(), Some(Version::V12));
    assert_eq!(
        r.http.media_type().as_deref(),
        Some("application/soap+xml"),
        "{}",
        r.describe()
    );
    let id = r.expect_session_id();
    let r = call(&url, v, &cont(&id), &echo("v12 continue"));
    r.expect_echo("v12 continue");
    assert_eq!(r.session_id().as_deref(), Some(id.as_str()));
    let r = call(&url, v, &end(&id), "");
    r.expect_body(None, "Response");
    r.expect_no_session();
}

fn expect_soap12_fault(r: &SoapReply, status: u16, code: &str, detail_code: i64) {
    assert_eq!(r.status(), status, "{}", r.describe());
    assert_eq!(
        r.http.media_type().as_deref(),
        Some("application/soap+xml"),
        "{}",
        r.describe()
    );
    let f = r.expect_fault();
    assert_eq!(f.version, Version::V12, "{}", r.describe());
    assert_eq!(
        f.code,
        (Some(SOAP12_NS.to_string()), code.to_string()),
        "{}",
        r.describe()
    );
    assert_eq!(f.detail_code, Some(detail_code), "{}", r.describe());
    assert!(
        soap::is_rfc3339(f.detail_ts.as_deref().unwrap_or("")),
        "{}",
        r.describe()
    );
}

/// Protects the SOAP 1.2 fault mapping of the dialect: header errors and -1001/-215 are `Sender`
/// (HTTP 400), server-side errors `Receiver` (HTTP 500), with the same detail as in SOAP 1.1.
#[test]
fn soap12_faults_are_sender_400_or_receiver_500_with_the_same_detail() {
    let b = start();
    let url = b.url("/soap");
    let v = Version::V12;
    let r = call(&url, v, &session(""), &echo("x"));
    expect_soap12_fault(&r, 400, "Sender", -1002);
    assert_eq!(
        r.expect_fault().reason,
        soap::HEADER_FAULTSTRING,
        "{}",
        r.describe()
    );

    let r = call(
        &url,
        v,
        &session("SessionCommand=\"Begin\" Colour=\"red\""),
        &echo("x"),
    );
    expect_soap12_fault(&r, 400, "Sender", -1011);

    let r = call(
        &url,
        v,
        &cont("00000000000000000000000000000000"),
        &echo("x"),
    );
    expect_soap12_fault(&r, 400, "Sender", -1001);

    let id = soap::begin_session(&url);
    let r = call(&url, v, &cont(&id), "<NoSuchService/>");
    expect_soap12_fault(&r, 400, "Sender", -215);
    assert_eq!(
        r.session_id().as_deref(),
        Some(id.as_str()),
        "{}",
        r.describe()
    );

    let r = call(
        &url,
        v,
        &session(&format!("SessionID=\"{id}\" BeginNewTransaction=\"yes\"")),
        &echo("x"),
    );
    // Echo is not transactional: -1022, a header (Sender) fault in 1.2 too.
    expect_soap12_fault(&r, 400, "Sender", -1022);
    assert_eq!(
        r.session_id().as_deref(),
        Some(id.as_str()),
        "{}",
        r.describe()
    );
}

/// Protects the background sweeper: sessions idle past their timeout are deleted from the store
/// without any request naming them, while a session kept alive by requests stays. Checked in the
/// sled store itself after a clean shutdown.
#[test]
fn sweeper_deletes_expired_sessions_from_the_store() {
    let mut b = BrokerProcess::start(
        &TestConfig::new()
            .session_timeout("1s")
            .sweep_interval("100ms")
            .render(),
    );
    let url = b.url("/soap");
    let kept = soap::begin_session(&url);
    let idle: Vec<String> = (0..3).map(|_| soap::begin_session(&url)).collect();
    let mut n = 0;
    // Keep one session alive until the sweeper reports the three idle ones deleted (they expire
    // after 1 s; it sweeps every 100 ms). The pause between requests is well under the timeout.
    wait::until_true(
        Duration::from_secs(20),
        "the sweeper to report three expired sessions swept",
        || {
            std::thread::sleep(Duration::from_millis(300));
            soap::echo_in_session(&url, &kept, &format!("keep {n}"));
            n += 1;
            b.sessions_swept() >= 3
        },
    );
    assert_eq!(b.sessions_swept(), 3, "only the three idle sessions expire");
    let status = b.terminate();
    assert!(
        status.success(),
        "SIGTERM must end the broker cleanly: {status}; stderr:\n{}",
        b.stderr_text()
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async {
        use cookie_store::SessionStore;
        let store = cookie_store::SledStore::open(b.sled_dir())
            .expect("opening the stopped broker's sled store");
        for id in &idle {
            let found = store
                .take_turn(id, Duration::from_secs(5), Duration::ZERO)
                .await
                .expect("take_turn");
            assert!(
                found.is_none(),
                "idle session {id} should have been swept from the store"
            );
        }
        let found = store
            .take_turn(&kept, Duration::from_secs(5), Duration::ZERO)
            .await
            .expect("take_turn");
        let (turn, record) = found.unwrap_or_else(|| {
            panic!("the session kept alive ({kept}) must still be in the store")
        });
        assert_eq!(record.id, kept);
        store.release(turn).await.expect("release");
    });
}

fn soap11_request(envelope: String) -> Request {
    Request::post("/soap", Some(Version::V11.content_type()), envelope).header("SOAPAction", "\"\"")
}

/// Send `first` (on its own connection), wait until an echo worker has read it, send `second` on
/// another connection; return the two replies and which finished first (`true` when `first` did).
fn race(broker: &BrokerProcess, first: String, second: String) -> (SoapReply, SoapReply, bool) {
    let url = &broker.url("/soap");
    // A warm-up request, so that the worker that will take `first` has started and stays put,
    // blocked reading its pipe: from then on it reads nothing but requests.
    soap::echo_in_session(url, &soap::begin_session(url), "warm up");
    let read_before: Vec<(u32, u64)> = broker
        .worker_pids()
        .into_iter()
        .filter_map(|pid| Some((pid, proc::bytes_read(pid)?)))
        .collect();
    let (tx, rx) = mpsc::channel::<(usize, Instant, SoapReply)>();
    let mut c1 = Client::new().connect(url);
    c1.send(&soap11_request(first));
    let tx1 = tx.clone();
    let t1 = std::thread::spawn(move || {
        let r = SoapReply::new(c1.read_reply("POST"));
        let _ = tx1.send((1, Instant::now(), r));
    });
    // `second` is sent after `first` has arrived: once a worker has read it, the broker has
    // taken the session's turn for it.
    wait::until_true(
        Duration::from_secs(10),
        "an echo worker to read the first request",
        || {
            read_before
                .iter()
                .any(|(pid, before)| proc::bytes_read(*pid).is_some_and(|now| now > *before))
        },
    );
    let mut c2 = Client::new().connect(url);
    c2.send(&soap11_request(second));
    let t2 = std::thread::spawn(move || {
        let r = SoapReply::new(c2.read_reply("POST"));
        let _ = tx.send((2, Instant::now(), r));
    });
    let a = rx
        .recv_timeout(Duration::from_secs(15))
        .expect("a reply within 15 s");
    let b = rx
        .recv_timeout(Duration::from_secs(15))
        .expect("a second reply within 15 s");
    t1.join().expect("reader 1");
    t2.join().expect("reader 2");
    let first_done = a.0 == 1 && a.1 <= b.1;
    let (r1, r2) = if a.0 == 1 { (a.2, b.2) } else { (b.2, a.2) };
    (r1, r2, first_done)
}

/// Protects serialisation: two requests of one session sent concurrently (the first sleeps 400 ms
/// in the backend; the second, sent on another connection once the first is there, sleeps 200 ms)
/// are processed one at a time in arrival order, so the second completes after the first. (Were they run side by
/// side, the second would finish first, about 150 ms earlier; serialised, it finishes about 200 ms
/// later: both margins dwarf scheduling jitter.)
#[test]
fn requests_of_one_session_run_one_at_a_time_in_arrival_order() {
    let b = BrokerProcess::start(&TestConfig::new().echo_workers(1, 3).render());
    let url = b.url("/soap");
    let id = soap::begin_session(&url);
    let (r1, r2, first_done_first) = race(
        &b,
        soap::envelope(Version::V11, &cont(&id), &echo_sleep("slow", 400)),
        soap::envelope(Version::V11, &cont(&id), &echo_sleep("second", 200)),
    );
    r1.expect_echo("slow");
    r2.expect_echo("second");
    assert!(
        first_done_first,
        "the second request of a session must wait for the first to finish"
    );
}

/// Protects session independence: a slow request of session A (1 s) does not delay session B's
/// request (200 ms, sent once A's is in the backend), which completes first. (Were B queued behind
/// A, it would finish about 200 ms after A.)
#[test]
fn a_slow_request_of_one_session_does_not_delay_another_session() {
    let b = BrokerProcess::start(&TestConfig::new().echo_workers(1, 3).render());
    let url = b.url("/soap");
    let a = soap::begin_session(&url);
    let bb = soap::begin_session(&url);
    let (ra, rb, a_done_first) = race(
        &b,
        soap::envelope(Version::V11, &cont(&a), &echo_sleep("slow A", 1000)),
        soap::envelope(Version::V11, &cont(&bb), &echo_sleep("quick B", 200)),
    );
    ra.expect_echo("slow A");
    rb.expect_echo("quick B");
    assert!(
        !a_done_first,
        "session B must not wait for session A's slow request"
    );
}

/// Protects nil header blocks: a generated client (JAX-WS) sends a header parameter left null as
/// `<nsk:Encoding xsi:nil="true"/>` or `<nsk:Session xsi:nil="true"/>`. Such a block says "no
/// value" and stands for no header: the request runs as if it were absent (UTF-8, no session),
/// where a non-nil empty Encoding is still -1007.
#[test]
fn a_nil_header_block_is_no_header() {
    let b = start();
    let url = b.url("/soap");
    let xsi = "xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"";
    let header = format!(
        "<nsk:Session xmlns:nsk=\"{NSK}\" {xsi} xsi:nil=\"true\"/><nsk:Encoding xmlns:nsk=\"{NSK}\" {xsi} xsi:nil=\"true\"/>"
    );
    let r = call11(&url, &header, &echo("nil headers"));
    r.expect_echo("nil headers");
    r.expect_no_session();
    assert_eq!(
        r.http.charset().as_deref(),
        Some("utf-8"),
        "{}",
        r.describe()
    );
    // Nil beside a real Session: the session is the real one.
    let id = soap::begin_session(&url);
    let header = format!(
        "{}<nsk:Encoding xmlns:nsk=\"{NSK}\" {xsi} xsi:nil=\"1\"/>",
        cont(&id)
    );
    let r = call11(&url, &header, &echo("in session"));
    assert_eq!(r.expect_session_id(), id);
    // Not nil: an Encoding without its label is still refused.
    let r = call11(
        &url,
        &format!("<nsk:Encoding xmlns:nsk=\"{NSK}\" OutputEncoding=\"\"/>"),
        &echo("x"),
    );
    expect_header_fault(&r, -1007);
}
