//! SOAP 1.2 conformance: the header-processing cases of the W3C SOAP 1.2 test collection
//! (`../shared/conformance/soap12/`, read where it lies, never copied) POSTed to a real broker, plus
//! the HTTP binding rules of `spec/soap.md` (405, 415).

use broker_tests::http::{self, Reply};
use broker_tests::soap::{self, SoapReply, Version, SOAP11_NS, SOAP12_NS};
use broker_tests::xml::Element;
use broker_tests::{BrokerProcess, TestConfig};

const CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/conformance/soap12/"
);
const TS_NS: &str = "http://example.org/ts-tests";
const ROLE_B: &str = "http://example.org/ts-tests/B";
const ROLE_C: &str = "http://example.org/ts-tests/C";

/// `/soap` plays role C; `/soap-b` plays role B.
fn start() -> BrokerProcess {
    let extra = format!(
        "[[endpoint]]\npath = \"/soap-b\"\ndialect = \"nonstop\"\nroles = [\"{ROLE_B}\"]\n\n\
         [[service]]\nname = \"Echo\"\nendpoint = \"/soap-b\"\nserver_class = \"echo\"\n"
    );
    BrokerProcess::start(&TestConfig::new().roles(&[ROLE_C]).extra(&extra).render())
}

/// The request message of test `t` (e.g. "T17_A"), as bytes.
fn request_of(t: &str) -> Vec<u8> {
    let path = format!("{CORPUS}RequestMessages_SOAP12Req{t}.xml");
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading the W3C test message {path}: {e} (the shared/ directory must sit beside the checkout)"))
}

fn post12(url: &str, body: Vec<u8>) -> SoapReply {
    SoapReply::new(http::post(
        url,
        Some("application/soap+xml; charset=utf-8"),
        &[],
        body,
    ))
}

/// The NotUnderstood header blocks of a SOAP 1.2 reply, as the (namespace, local name) they name.
fn not_understood(r: &SoapReply) -> Vec<(Option<String>, String)> {
    r.header_blocks()
        .into_iter()
        .filter(|h| h.is(Some(SOAP12_NS), "NotUnderstood"))
        .map(|h| {
            let q = h
                .attr("qname")
                .unwrap_or_else(|| panic!("NotUnderstood without qname: {}", r.describe()));
            h.resolve_qname(q).unwrap_or_else(|| {
                panic!(
                    "NotUnderstood qname {q:?} uses an undeclared prefix: {}",
                    r.describe()
                )
            })
        })
        .collect()
}

fn expect_must_understand(t: &str, r: &SoapReply) {
    assert_eq!(
        r.status(),
        500,
        "{t}: a MustUnderstand fault is HTTP 500: {}",
        r.describe()
    );
    assert_eq!(
        r.http.media_type().as_deref(),
        Some("application/soap+xml"),
        "{t}: {}",
        r.describe()
    );
    let f = r.expect_fault();
    assert_eq!(f.version, Version::V12, "{t}: {}", r.describe());
    assert!(
        f.is_code("MustUnderstand"),
        "{t}: expected env:MustUnderstand, got {:?}: {}",
        f.code,
        r.describe()
    );
    assert_eq!(
        not_understood(r),
        vec![(Some(TS_NS.to_string()), "Unknown".to_string())],
        "{t}: exactly one NotUnderstood naming test:Unknown: {}",
        r.describe()
    );
    r.expect_no_session();
}

fn expect_sender(t: &str, r: &SoapReply) {
    assert_eq!(
        r.status(),
        400,
        "{t}: a SOAP 1.2 Sender fault is HTTP 400: {}",
        r.describe()
    );
    assert_eq!(
        r.http.media_type().as_deref(),
        Some("application/soap+xml"),
        "{t}: {}",
        r.describe()
    );
    let f = r.expect_fault();
    assert_eq!(f.version, Version::V12, "{t}: {}", r.describe());
    assert!(
        f.is_code("Sender"),
        "{t}: expected env:Sender, got {:?}: {}",
        f.code,
        r.describe()
    );
}

fn expect_version_mismatch(t: &str, r: &SoapReply) {
    assert_eq!(
        r.status(),
        500,
        "{t}: a VersionMismatch fault is HTTP 500: {}",
        r.describe()
    );
    assert_eq!(
        r.http.media_type().as_deref(),
        Some("text/xml"),
        "{t}: the fault to an unknown version is SOAP 1.1: {}",
        r.describe()
    );
    assert_eq!(r.version(), Some(Version::V11), "{t}: {}", r.describe());
    let f = r.expect_fault();
    assert_eq!(
        f.code,
        (Some(SOAP11_NS.to_string()), "VersionMismatch".to_string()),
        "{t}: {}",
        r.describe()
    );
    let upgrade: Vec<&Element> = r
        .header_blocks()
        .into_iter()
        .filter(|h| h.is(Some(SOAP12_NS), "Upgrade"))
        .collect();
    assert_eq!(
        upgrade.len(),
        1,
        "{t}: one env:Upgrade header (in the SOAP 1.2 namespace): {}",
        r.describe()
    );
    let supported: Vec<(Option<String>, String)> = upgrade[0]
        .children_named(Some(SOAP12_NS), "SupportedEnvelope")
        .map(|s| {
            let q = s.attr("qname").unwrap_or_else(|| {
                panic!("{t}: SupportedEnvelope without qname: {}", r.describe())
            });
            s.resolve_qname(q).unwrap_or_else(|| {
                panic!(
                    "{t}: SupportedEnvelope qname {q:?} undeclared: {}",
                    r.describe()
                )
            })
        })
        .collect();
    assert!(
        supported.first() == Some(&(Some(SOAP12_NS.to_string()), "Envelope".to_string())),
        "{t}: Upgrade must list the SOAP 1.2 envelope first: {supported:?}: {}",
        r.describe()
    );
}

/// Protects mustUnderstand processing (SOAP 1.2 Part 1 §2.6, §5.4.8): an unknown mandatory header
/// block targeted at this node — no role, ultimateReceiver, next, or a role the endpoint is
/// configured to play (C on /soap, B on /soap-b) — gets a MustUnderstand fault (HTTP 500) with one
/// env:NotUnderstood naming test:Unknown by namespace and local name; a block for a role the node
/// does not play (echoOk for C in T21_A on /soap-b) is ignored.
#[test]
fn w3c_must_understand_cases() {
    let b = start();
    for t in ["T12", "T13", "T16", "T17_A", "T35", "T36"] {
        let r = post12(&b.url("/soap"), request_of(t));
        expect_must_understand(t, &r);
    }
    let r = post12(&b.url("/soap-b"), request_of("T21_A"));
    expect_must_understand("T21_A", &r);
}

/// Protects targeting: the same T16 block (role C) sent to an endpoint that plays B only is not
/// for this node, so it causes no MustUnderstand fault: processing goes on past the headers to the
/// (empty) Body, which names no service (-215).
#[test]
fn blocks_for_roles_the_endpoint_does_not_play_are_ignored() {
    let b = start();
    let r = post12(&b.url("/soap-b"), request_of("T16"));
    let f = r.expect_fault();
    assert!(
        !f.is_code("MustUnderstand"),
        "a block for role C must be ignored by a node playing B: {}",
        r.describe()
    );
    assert_eq!(
        f.detail_code,
        Some(-215),
        "the empty Body is reached and names no service: {}",
        r.describe()
    );
    assert!(not_understood(&r).is_empty(), "{}", r.describe());
}

/// Protects the order of processing: a mandatory header not understood stops everything, so a
/// Begin in the same message begins no session.
#[test]
fn must_understand_fault_touches_no_session() {
    let b = start();
    let unknown = format!("<t:Unknown xmlns:t=\"{TS_NS}\" xmlns:e=\"{SOAP12_NS}\" e:mustUnderstand=\"true\">x</t:Unknown>");
    let r = soap::call(
        &b.url("/soap"),
        Version::V12,
        &format!("{}{unknown}", soap::begin()),
        &soap::echo("x"),
    );
    expect_must_understand("Begin + unknown mandatory header", &r);
}

/// Protects mustUnderstand in SOAP 1.1: `SOAP-ENV:MustUnderstand`, HTTP 500.
#[test]
fn soap11_must_understand_fault() {
    let b = start();
    let unknown = format!("<t:Unknown xmlns:t=\"{TS_NS}\" xmlns:s=\"{SOAP11_NS}\" s:mustUnderstand=\"1\">x</t:Unknown>");
    let r = soap::call(&b.url("/soap"), Version::V11, &unknown, &soap::echo("x"));
    assert_eq!(r.status(), 500, "{}", r.describe());
    let f = r.expect_fault();
    assert_eq!(f.code_text, "SOAP-ENV:MustUnderstand", "{}", r.describe());
    assert!(f.is_code("MustUnderstand"), "{}", r.describe());
}

/// Protects the Sender cases: a mustUnderstand value that is not a boolean (T23 "wrong", T39 "9";
/// T23 also holds an unknown mandatory block, and the bad value wins), a DTD (T25) and a
/// processing instruction in the envelope (T26; this broker's spec makes it a Sender fault) are
/// `env:Sender` with HTTP 400.
#[test]
fn w3c_sender_cases() {
    let b = start();
    for t in ["T23", "T39", "T25", "T26"] {
        let r = post12(&b.url("/soap"), request_of(t));
        expect_sender(t, &r);
        assert!(
            not_understood(&r).is_empty(),
            "{t}: a Sender fault lists no NotUnderstood: {}",
            r.describe()
        );
    }
}

/// Protects VersionMismatch (T24 wrong namespace, T30 the SOAP 1.1 namespace without its trailing
/// slash): answered as SOAP 1.1, `VersionMismatch`, HTTP 500, with an env:Upgrade header listing
/// the SOAP 1.2 envelope.
#[test]
fn w3c_version_mismatch_cases() {
    let b = start();
    for t in ["T24", "T30"] {
        let r = post12(&b.url("/soap"), request_of(t));
        expect_version_mismatch(t, &r);
    }
}

fn allows_post(r: &Reply) -> bool {
    r.header("allow")
        .is_some_and(|a| a.split(',').any(|m| m.trim().eq_ignore_ascii_case("POST")))
}

/// Protects the HTTP binding: methods other than POST on an endpoint are 405 with `Allow: POST`.
#[test]
fn other_methods_are_405_with_allow_post() {
    let b = start();
    for method in ["GET", "PUT", "DELETE"] {
        let body = if method == "PUT" {
            soap::envelope(Version::V11, "", &soap::echo("x")).into_bytes()
        } else {
            Vec::new()
        };
        let r = http::request(
            method,
            &b.url("/soap"),
            &[("Content-Type", "text/xml")],
            body,
        );
        assert_eq!(r.status, 405, "{method} /soap: {}", r.describe());
        assert!(
            allows_post(&r),
            "{method} /soap must answer Allow: POST: {:?}",
            r.headers
        );
    }
}

/// Protects the HTTP binding: a media type that is neither SOAP 1.1 nor 1.2 is 415, even with a
/// valid envelope.
#[test]
fn unsupported_media_type_is_415() {
    let b = start();
    let env = soap::envelope(Version::V11, &soap::begin(), &soap::echo("x"));
    for ct in ["application/json", "text/plain", "application/xml+soap"] {
        let r = http::post(&b.url("/soap"), Some(ct), &[], env.as_bytes());
        assert_eq!(r.status, 415, "Content-Type {ct}: {}", r.describe());
    }
    // The same envelope with its proper media type works (the 415s were about the media type).
    let r = soap::post(&b.url("/soap"), Version::V11, &env);
    r.expect_echo("x");
}

/// Protects the SOAP 1.2 media type's parameters: `action` with or without a space before it, and
/// a `SOAPAction` header as well, are all accepted.
#[test]
fn soap12_media_type_parameters_are_accepted() {
    let b = start();
    let env = soap::envelope(Version::V12, "", &soap::echo("params"));
    for (ct, extra) in [
        (
            "application/soap+xml; charset=utf-8; action=\"urn:example:echo#Echo\"",
            None,
        ),
        (
            "application/soap+xml;charset=utf-8;action=\"urn:example:echo#Echo\"",
            None,
        ),
        (
            "application/soap+xml",
            Some(("SOAPAction", "\"urn:example:echo#Echo\"")),
        ),
    ] {
        let headers: Vec<(&str, &str)> = extra.into_iter().collect();
        let r = SoapReply::new(http::post(
            &b.url("/soap"),
            Some(ct),
            &headers,
            env.as_bytes(),
        ));
        r.expect_echo("params");
        assert_eq!(r.version(), Some(Version::V12), "{ct}: {}", r.describe());
    }
}
