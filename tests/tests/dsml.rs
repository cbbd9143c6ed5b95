//! The DSML dialect end to end (`spec/dsml.md`): BeginSession, Session and EndSession with the
//! `ad:Session` reply header, every header form clients write, SOAP 1.1 only, SOAPAction with or
//! without Content-Type, the Body rules, `max_requests_per_batch`, DSML's three faults byte for byte,
//! session limits in total and per client IP, IP and credential matching, the idle timeout, and the
//! exact request of the Microsoft .NET client sent by curl. Against a real broker and the sample
//! `directory` server class.

use broker_tests::dsml::{
    self, ad_sessions, batch, begin, begin_session, call, default_ns_header, empty_batch, end,
    envelope, expect_ad_session, expect_batch_response, expect_fault, post, post_from, post_with,
    search, session, DsmlEndpoint, DsmlFault, AD_NS, DSML_NS,
};
use broker_tests::http::Client;
use broker_tests::soap::{SoapReply, SOAP11_NS, SOAP12_NS};
use broker_tests::BrokerProcess;
use std::net::IpAddr;
use std::time::Duration;

const OTHER_IP: &str = "127.0.0.2";

fn start(endpoint: &DsmlEndpoint) -> BrokerProcess {
    BrokerProcess::start(&endpoint.config().render())
}

fn other_ip() -> IpAddr {
    OTHER_IP.parse().expect("an address")
}

/// The batchResponse echoes the batch's requestID and one response per operation with its own.
fn expect_echoed_request_ids(r: &SoapReply, batch_id: &str, op_ids: &[&str]) {
    let resp = expect_batch_response(r);
    assert_eq!(resp.attr("requestID"), Some(batch_id), "{}", r.describe());
    let ids: Vec<Option<&str>> = resp.elements().map(|e| e.attr("requestID")).collect();
    let want: Vec<Option<&str>> = op_ids.iter().map(|id| Some(*id)).collect();
    assert_eq!(ids, want, "{}", r.describe());
}

/// Protects the session life cycle: BeginSession runs its batch inside a new session and answers
/// with `ad:Session ad:SessionID`; Session runs in it and echoes the same ID; EndSession runs its
/// batch, removes the session and still answers with the ID it removed; the ID is then unknown.
#[test]
fn begin_session_and_end_session_carry_ad_session_on_every_reply() {
    let b = start(&DsmlEndpoint::new());
    let url = b.url("/dsml");

    let r = call(&url, &begin(), &batch("b1", &[search("s1")]));
    expect_echoed_request_ids(&r, "b1", &["s1"]);
    let id = expect_ad_session(&r);
    assert!(
        id.len() >= 32,
        "SessionID {id:?} is too short for 122 random bits"
    );
    assert_ne!(id, begin_session(&url), "two sessions got the same ID");

    for n in 0..3 {
        let r = call(
            &url,
            &session(&id),
            &batch(&format!("b{n}"), &[search("x"), search("y")]),
        );
        expect_echoed_request_ids(&r, &format!("b{n}"), &["x", "y"]);
        assert_eq!(expect_ad_session(&r), id, "the ID stays constant");
    }

    let r = call(&url, &end(&id), &batch("last", &[search("z")]));
    expect_echoed_request_ids(&r, "last", &["z"]);
    assert_eq!(
        expect_ad_session(&r),
        id,
        "EndSession answers with the ID it removed"
    );

    expect_fault(
        &call(&url, &session(&id), &empty_batch()),
        DsmlFault::BadSessionRequest,
    );
    expect_fault(
        &call(&url, &end(&id), &empty_batch()),
        DsmlFault::BadSessionRequest,
    );

    // Outside any session: a plain batch, no ad:Session header.
    let r = call(&url, "", &batch("free", &[search("f")]));
    expect_echoed_request_ids(&r, "free", &["f"]);
    assert!(dsml::ad_sessions(&r).is_empty(), "{}", r.describe());
}

/// Protects header forms: the header element prefixed or in a default namespace, the ID
/// namespace-qualified (`ad:SessionID`) or not (`SessionID`), in any combination.
#[test]
fn qualified_and_unqualified_ids_prefixed_and_default_namespace_headers() {
    let b = start(&DsmlEndpoint::new());
    let url = b.url("/dsml");

    let r = call(
        &url,
        &default_ns_header("BeginSession", None),
        &empty_batch(),
    );
    let id = expect_ad_session(&r);

    let forms = [
        format!("<Session xmlns=\"{AD_NS}\" SessionID=\"{id}\"/>"),
        format!("<x:Session xmlns:x=\"{AD_NS}\" SessionID=\"{id}\"/>"),
        format!("<x:Session xmlns:x=\"{AD_NS}\" x:SessionID=\"{id}\" xmlns:se=\"{SOAP11_NS}\" se:mustUnderstand=\"0\"/>"),
        session(&id),
    ];
    for h in &forms {
        let r = call(&url, h, &empty_batch());
        expect_batch_response(&r);
        assert_eq!(expect_ad_session(&r), id, "header {h}");
    }
    // A batchRequest with a prefix instead of a default namespace is the same batch.
    let r = call(
        &url,
        &session(&id),
        &format!("<d:batchRequest xmlns:d=\"{DSML_NS}\" requestID=\"p\"/>"),
    );
    expect_batch_response(&r);

    let r = call(
        &url,
        &default_ns_header("EndSession", Some(&id)),
        &empty_batch(),
    );
    assert_eq!(expect_ad_session(&r), id);
    expect_fault(
        &call(&url, &session(&id), &empty_batch()),
        DsmlFault::BadSessionRequest,
    );
}

/// Protects SOAP 1.1 only: a SOAP 1.2 envelope is answered with a SOAP 1.1 VersionMismatch fault
/// (HTTP 500, text/xml) that says SOAP 1.2 is not served here, and no session is begun.
#[test]
fn a_soap_12_envelope_gets_a_soap_11_version_mismatch_fault() {
    let b = start(&DsmlEndpoint::new().sessions_max(1));
    let url = b.url("/dsml");
    let env12 = format!(
        "<env:Envelope xmlns:env=\"{SOAP12_NS}\"><env:Header>{}</env:Header><env:Body>{}</env:Body></env:Envelope>",
        format_args!("<ad:BeginSession xmlns:ad=\"{AD_NS}\"/>"),
        empty_batch()
    );
    for ct in [
        Some("application/soap+xml; charset=utf-8"),
        Some("text/xml"),
        None,
    ] {
        let r = post_with(&Client::new(), &url, ct, &[], &env12);
        assert_eq!(r.status(), 500, "{}", r.describe());
        assert_eq!(r.http.media_type().as_deref(), Some("text/xml"));
        let f = r.expect_fault();
        assert_eq!(f.version, broker_tests::soap::Version::V11);
        assert!(f.is_code("VersionMismatch"), "{f:?}");
        // It says what is wrong: the version is known, just not served here.
        assert!(f.reason.contains("does not speak SOAP 1.2"), "{}", f.reason);
    }
    // sessions_max = 1: the refused Begins took no place.
    begin_session(&url);
}

/// Protects the transport: `SOAPAction: "#batchRequest"` with `text/xml`, or with no Content-Type
/// at all (what the Microsoft client sends), is served; a wrong media type is 415.
#[test]
fn soap_action_with_or_without_content_type() {
    let b = start(&DsmlEndpoint::new());
    let url = b.url("/dsml");
    let env = envelope(&begin(), &empty_batch());
    for ct in [None, Some("text/xml"), Some("text/xml; charset=utf-8")] {
        let r = post_with(&Client::new(), &url, ct, &[], &env);
        expect_batch_response(&r);
        expect_ad_session(&r);
    }
    let r = post_with(&Client::new(), &url, Some("application/json"), &[], &env);
    assert_eq!(r.status(), 415, "{}", r.describe());
}

/// Protects the Body rules: an empty `batchRequest` is a valid batch (in and out of sessions); an
/// empty Body, another element, or a batchRequest outside the DSML namespace is "Bad Request", and
/// a refused BeginSession creates no session.
#[test]
fn empty_body_is_bad_request_but_an_empty_batch_request_is_valid() {
    let b = start(&DsmlEndpoint::new().sessions_max(1));
    let url = b.url("/dsml");

    for body in [
        String::new(),
        "  ".to_string(),
        "<Echo><text>x</text></Echo>".to_string(),
        "<batchRequest/>".to_string(),
        "<batchRequest xmlns=\"urn:oasis:names:tc:DSML:1:0:core\"/>".to_string(),
        format!("<batchResponse xmlns=\"{DSML_NS}\"/>"),
    ] {
        expect_fault(&call(&url, &begin(), &body), DsmlFault::BadRequest);
        expect_fault(&call(&url, "", &body), DsmlFault::BadRequest);
    }
    // A malformed envelope is a bad request too, in DSML's words.
    let r = post(
        &url,
        "<se:Envelope xmlns:se=\"http://schemas.xmlsoap.org/soap/envelope/\"><se:Body>",
    );
    expect_fault(&r, DsmlFault::BadRequest);

    // sessions_max = 1 and nothing was created: this Begin gets the one place.
    let r = call(&url, &begin(), &empty_batch());
    let resp = expect_batch_response(&r);
    assert_eq!(resp.elements().count(), 0, "{}", r.describe());
    let id = expect_ad_session(&r);
    expect_fault(&call(&url, &session(&id), ""), DsmlFault::BadRequest);
    // The session survived the bad request.
    expect_batch_response(&call(&url, &session(&id), &empty_batch()));
}

/// Protects "one batchRequest per message": an element after the batchRequest in the Body is bad
/// DSML, answered (HTTP 200) with a batchResponse holding `errorResponse type="malformedRequest"`;
/// nothing of the batch runs, a BeginSession creates no session, a session's ID is echoed and the
/// session lives on.
#[test]
fn an_element_after_the_batch_request_is_a_malformed_request_error_response() {
    let b = start(&DsmlEndpoint::new().sessions_max(1));
    let url = b.url("/dsml");
    let two = format!("{}<extra xmlns=\"urn:example\"/>", empty_batch());
    let malformed = |r: &SoapReply| {
        assert_eq!(r.http.status, 200, "{}", r.describe());
        let resp = expect_batch_response(r);
        let errors: Vec<_> = resp.elements().collect();
        assert_eq!(errors.len(), 1, "{}", r.describe());
        assert_eq!(errors[0].local, "errorResponse", "{}", r.describe());
        assert_eq!(
            errors[0].attr("type"),
            Some("malformedRequest"),
            "{}",
            r.describe()
        );
    };
    let r = call(&url, &begin(), &two);
    malformed(&r);
    assert!(
        ad_sessions(&r).is_empty(),
        "no session begun: {}",
        r.describe()
    );
    // sessions_max = 1 and the refused BeginSession took nothing: this one gets the place.
    let id = begin_session(&url);
    let r = call(&url, &session(&id), &two);
    malformed(&r);
    assert_eq!(expect_ad_session(&r), id);
    // The session lives on.
    let r = call(&url, &session(&id), &empty_batch());
    expect_batch_response(&r);
    assert_eq!(expect_ad_session(&r), id);
}

/// Protects "one session header per message": any two of BeginSession, Session and EndSession
/// (or the same twice) are "Bad Request", and nothing happens to the session.
#[test]
fn two_session_headers_are_a_bad_request() {
    let b = start(&DsmlEndpoint::new());
    let url = b.url("/dsml");
    let id = begin_session(&url);
    for headers in [
        format!("{}{}", begin(), end(&id)),
        format!("{}{}", session(&id), session(&id)),
        format!("{}{}", session(&id), end(&id)),
        format!("{}{}", begin(), begin()),
    ] {
        expect_fault(&call(&url, &headers, &empty_batch()), DsmlFault::BadRequest);
    }
    // The EndSession in a refused message did not end the session.
    let r = call(&url, &session(&id), &empty_batch());
    assert_eq!(expect_ad_session(&r), id);
}

/// Protects `max_requests_per_batch`: a batch with more operations is "Bad Request" and nothing
/// runs (a BeginSession creates no session); the limit itself is accepted.
#[test]
fn more_operations_than_max_requests_per_batch_is_a_bad_request() {
    let b = start(
        &DsmlEndpoint::new()
            .max_requests_per_batch(3)
            .sessions_max_per_ip(1),
    );
    let url = b.url("/dsml");
    let ops = |n: usize| -> Vec<String> { (0..n).map(|i| search(&format!("op{i}"))).collect() };

    expect_fault(
        &call(&url, &begin(), &batch("big", &ops(4))),
        DsmlFault::BadRequest,
    );
    expect_fault(
        &call(&url, "", &batch("big", &ops(50))),
        DsmlFault::BadRequest,
    );
    // The refused Begin took no place: the one allowed session can still be begun.
    let r = call(&url, &begin(), &batch("ok", &ops(3)));
    expect_echoed_request_ids(&r, "ok", &["op0", "op1", "op2"]);
    let id = expect_ad_session(&r);
    expect_fault(
        &call(&url, &session(&id), &batch("big", &ops(4))),
        DsmlFault::BadRequest,
    );
    expect_fault(
        &call(&url, &end(&id), &batch("big", &ops(4))),
        DsmlFault::BadRequest,
    );
    // Still alive: the EndSession with too many operations did not end it.
    let r = call(&url, &end(&id), &batch("fin", &ops(1)));
    assert_eq!(expect_ad_session(&r), id);
}

/// Protects the exact texts of the three faults: faultcode with the `SOAP` prefix bound to the
/// SOAP 1.1 envelope namespace, faultstring, a text `detail`, HTTP 500, no Header.
#[test]
fn the_three_faults_have_their_exact_bytes() {
    // A second DSML endpoint whose batchRequest service is missing: its requests fail on the
    // server side.
    let config = broker_tests::TestConfig::new()
        .extra(&format!(
            "{}\n[[endpoint]]\npath = \"/dsml-unrouted\"\ndialect = \"dsml\"\n",
            DsmlEndpoint::new().toml()
        ))
        .render();
    let b = BrokerProcess::start(&config);
    let url = b.url("/dsml");

    let r = call(
        &url,
        &session("0123456789abcdef0123456789abcdef"),
        &empty_batch(),
    );
    expect_fault(&r, DsmlFault::BadSessionRequest);
    assert!(r.header_blocks().is_empty());
    expect_fault(&call(&url, &begin(), ""), DsmlFault::BadRequest);
    let r = call(&b.url("/dsml-unrouted"), "", &empty_batch());
    expect_fault(&r, DsmlFault::Server);
    // A failed BeginSession leaves no session behind either.
    expect_fault(
        &call(&b.url("/dsml-unrouted"), &begin(), &empty_batch()),
        DsmlFault::Server,
    );
}

/// Protects mustUnderstand: the three DSML headers are understood (the Microsoft client always
/// marks them); another mandatory header is a SOAP 1.1 MustUnderstand fault and nothing runs.
#[test]
fn must_understand_on_other_headers_is_a_must_understand_fault() {
    let b = start(&DsmlEndpoint::new().sessions_max(1));
    let url = b.url("/dsml");
    for other in [
        "<x:Audit xmlns:x=\"urn:example:audit\" se:mustUnderstand=\"1\"/>".to_string(),
        format!("<ad:Unknown xmlns:ad=\"{AD_NS}\" se:mustUnderstand=\"1\"/>"),
    ] {
        let r = call(&url, &format!("{}{other}", begin()), &empty_batch());
        assert_eq!(r.status(), 500, "{}", r.describe());
        let f = r.expect_fault();
        assert!(f.is_code("MustUnderstand"), "{f:?}");
        assert!(dsml::ad_sessions(&r).is_empty());
    }
    // Optional unknown headers are ignored; the refused Begins took no place.
    let r = call(
        &url,
        &format!("{}<x:Audit xmlns:x=\"urn:example:audit\"/>", begin()),
        &empty_batch(),
    );
    expect_ad_session(&r);
}

/// Protects `sessions_max`: the endpoint holds at most that many live sessions; the next
/// BeginSession is "Bad Session Request" and runs nothing; ending one frees a place.
#[test]
fn sessions_max_limits_the_live_sessions_of_the_endpoint() {
    let b = start(&DsmlEndpoint::new().sessions_max(2).sessions_max_per_ip(0));
    let url = b.url("/dsml");
    let a = begin_session(&url);
    let other = post_from(other_ip(), &url, &envelope(&begin(), &empty_batch()));
    expect_ad_session(&other);
    expect_fault(
        &call(&url, &begin(), &batch("x", &[search("1")])),
        DsmlFault::BadSessionRequest,
    );
    expect_fault(
        &post_from(other_ip(), &url, &envelope(&begin(), &empty_batch())),
        DsmlFault::BadSessionRequest,
    );
    // Sessionless batches are not limited.
    expect_batch_response(&call(&url, "", &empty_batch()));
    let r = call(&url, &end(&a), &empty_batch());
    assert_eq!(expect_ad_session(&r), a);
    begin_session(&url);
}

/// Protects `sessions_max_per_ip`: each client IP holds at most that many sessions; another IP is
/// not affected.
#[test]
fn sessions_max_per_ip_limits_each_client_ip() {
    let b = start(&DsmlEndpoint::new().sessions_max(10).sessions_max_per_ip(2));
    let url = b.url("/dsml");
    let first = begin_session(&url);
    begin_session(&url);
    expect_fault(
        &call(&url, &begin(), &empty_batch()),
        DsmlFault::BadSessionRequest,
    );
    for _ in 0..2 {
        let r = post_from(other_ip(), &url, &envelope(&begin(), &empty_batch()));
        expect_ad_session(&r);
    }
    expect_fault(
        &post_from(other_ip(), &url, &envelope(&begin(), &empty_batch())),
        DsmlFault::BadSessionRequest,
    );
    call(&url, &end(&first), &empty_batch());
    begin_session(&url);
}

/// Protects IP matching: a session used from another client IP is refused exactly like an unknown
/// one (the same bytes) and stays intact for its owner; with `ip_match = false` it is usable from
/// anywhere.
#[test]
fn a_session_used_from_another_ip_is_refused_like_an_unknown_one() {
    let b = start(&DsmlEndpoint::new());
    let url = b.url("/dsml");
    let id = begin_session(&url);
    let unknown = call(
        &url,
        &session("ffffffffffffffffffffffffffffffff"),
        &empty_batch(),
    );
    expect_fault(&unknown, DsmlFault::BadSessionRequest);

    for header in [session(&id), end(&id)] {
        let foreign = post_from(
            other_ip(),
            &url,
            &envelope(&header, &batch("f", &[search("1")])),
        );
        expect_fault(&foreign, DsmlFault::BadSessionRequest);
        assert_eq!(
            foreign.http.body, unknown.http.body,
            "foreign and unknown differ"
        );
    }
    let r = call(&url, &session(&id), &empty_batch());
    assert_eq!(expect_ad_session(&r), id, "the owner still has its session");
    drop(b);

    let b = start(&DsmlEndpoint::new().ip_match(false));
    let url = b.url("/dsml");
    let id = begin_session(&url);
    let r = post_from(other_ip(), &url, &envelope(&session(&id), &empty_batch()));
    assert_eq!(expect_ad_session(&r), id);
}

/// Protects credential matching: a session begun by one authenticated identity, used by another
/// (or anonymously), is refused exactly like an unknown one and stays usable by its owner; with
/// `auth_match = false` another identity may use it.
#[test]
fn a_session_used_by_another_identity_is_refused_like_an_unknown_one() {
    let users = tempfile::tempdir().expect("temp dir");
    let creds = dsml::credentials_file(users.path(), &[("alice", "s3cret"), ("bob", "hunter2")]);
    let alice = dsml::basic("alice", "s3cret");
    let bob = dsml::basic("bob", "hunter2");
    let as_user = |url: &str, auth: Option<&str>, header: &str| {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        post_with(
            &Client::new(),
            url,
            Some("text/xml"),
            &headers,
            &envelope(header, &empty_batch()),
        )
    };

    let b = start(&DsmlEndpoint::new().auth("optional", &creds));
    let url = b.url("/dsml");
    let r = as_user(&url, Some(&alice), &begin());
    let id = expect_ad_session(&r);
    let unknown = as_user(
        &url,
        Some(&alice),
        &session("ffffffffffffffffffffffffffffffff"),
    );
    expect_fault(&unknown, DsmlFault::BadSessionRequest);
    for auth in [Some(bob.as_str()), None] {
        for header in [session(&id), end(&id)] {
            let r = as_user(&url, auth, &header);
            expect_fault(&r, DsmlFault::BadSessionRequest);
            assert_eq!(r.http.body, unknown.http.body, "foreign and unknown differ");
        }
    }
    let r = as_user(&url, Some(&alice), &session(&id));
    assert_eq!(expect_ad_session(&r), id, "alice still has her session");
    // Wrong credentials are not an identity at all: 401.
    let r = as_user(&url, Some(&dsml::basic("alice", "nope")), &session(&id));
    assert_eq!(r.status(), 401, "{}", r.describe());
    drop(b);

    let b = start(
        &DsmlEndpoint::new()
            .auth("required", &creds)
            .auth_match(false),
    );
    let url = b.url("/dsml");
    let id = expect_ad_session(&as_user(&url, Some(&alice), &begin()));
    let r = as_user(&url, Some(&bob), &session(&id));
    assert_eq!(expect_ad_session(&r), id);
}

/// Protects the idle timeout: every request of the session resets it (a session used every second
/// outlives a 2 s timeout); left idle past it, the session is gone ("Bad Session Request").
#[test]
fn every_request_resets_the_idle_timer_and_an_idle_session_expires() {
    let b = start(&DsmlEndpoint::new().session_timeout("2s"));
    let url = b.url("/dsml");
    let id = begin_session(&url);
    // The pauses are the behaviour under test: idle time below the timeout, then past it. A
    // request renews the session before its reply is sent, so the idle time counts from there.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_secs(1));
        let r = call(&url, &session(&id), &empty_batch());
        assert_eq!(expect_ad_session(&r), id);
    }
    std::thread::sleep(Duration::from_millis(2500));
    expect_fault(
        &call(&url, &session(&id), &empty_batch()),
        DsmlFault::BadSessionRequest,
    );
}

// ---- the Microsoft client's bytes, sent by curl ---------------------------------------------

/// What `DsmlSoapHttpConnection` writes (System.DirectoryServices.Protocols, `DsmlConstants`):
/// the envelope, the header blocks and the empty `batchRequest` of `DsmlRequestDocument.ToXml()`.
const NET_ENVELOPE_BEGIN: &str =
    "<se:Envelope xmlns:se=\"http://schemas.xmlsoap.org/soap/envelope/\">";
const NET_HEADER_BEGIN: &str = "<se:Header>";
const NET_BEGIN_SESSION: &str = "<ad:BeginSession xmlns:ad=\"urn:schema-microsoft-com:activedirectory:dsmlv2\" se:mustUnderstand=\"1\"/>";
const NET_SESSION_1: &str =
    "<ad:Session xmlns:ad=\"urn:schema-microsoft-com:activedirectory:dsmlv2\" ad:SessionID=\"";
const NET_END_SESSION_1: &str =
    "<ad:EndSession xmlns:ad=\"urn:schema-microsoft-com:activedirectory:dsmlv2\" ad:SessionID=\"";
const NET_SESSION_2: &str = "\" se:mustUnderstand=\"1\"/>";
const NET_HEADER_END: &str = "</se:Header>";
const NET_BODY_BEGIN: &str = "<se:Body xmlns=\"urn:oasis:names:tc:DSML:2:0:core\">";
const NET_EMPTY_BATCH: &str = "<batchRequest xmlns=\"urn:oasis:names:tc:DSML:2:0:core\" xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" processing=\"sequential\" responseOrder=\"sequential\" onError=\"exit\" />";
const NET_BODY_END: &str = "</se:Body>";
const NET_ENVELOPE_END: &str = "</se:Envelope>";

fn net_envelope(header: &str, batch: &str) -> String {
    [
        NET_ENVELOPE_BEGIN,
        NET_HEADER_BEGIN,
        header,
        NET_HEADER_END,
        NET_BODY_BEGIN,
        batch,
        NET_BODY_END,
        NET_ENVELOPE_END,
    ]
    .concat()
}

/// POST `body` with curl exactly as `HttpWebRequest` sends it for the DSML client: `SOAPAction:
/// "#batchRequest"`, no Content-Type, `Expect: 100-continue`, `Connection: Keep-Alive`, and no
/// header curl would add on its own (Accept, User-Agent). Returns the HTTP reply.
fn curl_post(url: &str, body: &str, dir: &std::path::Path) -> broker_tests::http::Reply {
    let req = dir.join("request.xml");
    let head = dir.join("reply.head");
    let out = dir.join("reply.body");
    std::fs::write(&req, body).expect("write the request");
    let status = std::process::Command::new("curl")
        .args(["-sS", "--http1.1", "-X", "POST"])
        .args(["-H", "SOAPAction: \"#batchRequest\""])
        .args(["-H", "Content-Type:", "-H", "Accept:", "-H", "User-Agent:"])
        .args(["-H", "Expect: 100-continue", "-H", "Connection: Keep-Alive"])
        .arg("--data-binary")
        .arg(format!("@{}", req.display()))
        .arg("-D")
        .arg(&head)
        .arg("-o")
        .arg(&out)
        .arg(url)
        .status()
        .expect("curl runs (it is a test dependency)");
    assert!(status.success(), "curl failed: {status}");
    let head = std::fs::read_to_string(&head).expect("reply head");
    // The last status block (after a 100 Continue).
    let block = head
        .split("\r\n\r\n")
        .filter(|b| !b.trim().is_empty())
        .last()
        .expect("a status line");
    let mut lines = block.lines();
    let status_line = lines.next().expect("status line");
    let code: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    broker_tests::http::Reply {
        status: code,
        reason: String::new(),
        headers,
        body: std::fs::read(&out).expect("reply body"),
    }
}

/// Protects interoperability with the Microsoft .NET client (`DsmlSoapHttpConnection`, reference
/// §1.7): its BeginSession, a SendRequest in the session and its EndSession, byte for byte as it
/// writes them and with the HTTP headers `HttpWebRequest` sends (no Content-Type), posted by curl,
/// a third-party HTTP client. Every reply is what the client parses: HTTP 200, the SessionID at
/// `se:Envelope/se:Header/ad:Session/@ad:SessionID`, a `se:Envelope/se:Body/dsml:batchResponse`.
#[test]
fn the_dotnet_client_envelope_sent_by_curl_begins_uses_and_ends_a_session() {
    let b = start(&DsmlEndpoint::new());
    let url = b.url("/dsml");
    let dir = tempfile::tempdir().expect("temp dir");

    let begin_env = net_envelope(NET_BEGIN_SESSION, NET_EMPTY_BATCH);
    let r = SoapReply::new(curl_post(&url, &begin_env, dir.path()));
    let resp = expect_batch_response(&r);
    assert_eq!(resp.elements().count(), 0);
    let id = expect_ad_session(&r);

    // SendRequest(SearchRequest) inside the session.
    let search_batch =
        "<batchRequest xmlns=\"urn:oasis:names:tc:DSML:2:0:core\" xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" processing=\"sequential\" responseOrder=\"sequential\" onError=\"exit\"><searchRequest dn=\"dc=example,dc=com\" requestID=\"r1\" scope=\"baseObject\" derefAliases=\"neverDerefAliases\"><filter><present name=\"objectClass\" /></filter></searchRequest></batchRequest>";
    let env = net_envelope(&format!("{NET_SESSION_1}{id}{NET_SESSION_2}"), search_batch);
    let r = SoapReply::new(curl_post(&url, &env, dir.path()));
    let resp = expect_batch_response(&r);
    assert_eq!(resp.elements().count(), 1, "{}", r.describe());
    assert_eq!(expect_ad_session(&r), id);

    let env = net_envelope(
        &format!("{NET_END_SESSION_1}{id}{NET_SESSION_2}"),
        NET_EMPTY_BATCH,
    );
    let r = SoapReply::new(curl_post(&url, &env, dir.path()));
    expect_batch_response(&r);
    assert_eq!(expect_ad_session(&r), id);

    // Ended: the client sees a fault (a WebException for a 500).
    let env = net_envelope(
        &format!("{NET_SESSION_1}{id}{NET_SESSION_2}"),
        NET_EMPTY_BATCH,
    );
    let r = SoapReply::new(curl_post(&url, &env, dir.path()));
    expect_fault(&r, DsmlFault::BadSessionRequest);
}
