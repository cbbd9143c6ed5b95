//! Hostile and broken input (`spec/soap.md`, "Limits on untrusted input"; `product.md`, "Bad
//! input"): every case gets the right SOAP fault or HTTP status — never a crash, a hang, or a
//! corrupted session — and afterwards the same broker process still serves complete sessions.

use broker_tests::http::{self, Client, Framing, Reply, Request};
use broker_tests::soap::{
    self, begin, echo, expect_header_fault, session, SoapReply, Version, NSK,
};
use broker_tests::{soak, BrokerProcess, TestConfig};

/// What a case must get.
enum Expect {
    /// This HTTP status (no SOAP expectations).
    Status(u16),
    /// A plain SOAP Client/Sender fault of `version` whose faultstring contains the text.
    SoapSender(Version, &'static str),
    /// A NonStop header fault (SOAP 1.1) with this detailCode.
    Header(i64),
}

struct Case {
    name: &'static str,
    request: Request,
    /// Write the body while reading the reply (for replies sent before the body is read).
    racing: bool,
    expect: Expect,
}

fn soap11(body: impl Into<Vec<u8>>) -> Request {
    Request::post("/soap", Some(Version::V11.content_type()), body).header("SOAPAction", "\"\"")
}

fn soap12(body: impl Into<Vec<u8>>) -> Request {
    Request::post("/soap", Some(Version::V12.content_type()), body)
}

fn case(name: &'static str, request: Request, expect: Expect) -> Case {
    Case {
        name,
        request,
        racing: false,
        expect,
    }
}

/// Attribute names a, b, …, z, ba, bb… (base 26, short enough that 100 000 of them fit in 1 MiB).
fn attr_name(mut n: usize) -> String {
    let mut s = Vec::new();
    loop {
        s.push(b'a' + (n % 26) as u8);
        n /= 26;
        if n == 0 {
            break;
        }
    }
    s.reverse();
    String::from_utf8(s).expect("ASCII")
}

fn corpus() -> Vec<Case> {
    let good = soap::envelope(Version::V11, &begin(), &echo("fine"));
    let deep = format!(
        "<e:Echo xmlns:e=\"urn:x\">{}{}</e:Echo>",
        "<a>".repeat(10_000),
        "</a>".repeat(10_000)
    );
    let mut many_attrs = String::with_capacity(1_000_000);
    many_attrs.push_str("<e:Echo xmlns:e=\"urn:x\"><text");
    for i in 0..100_000 {
        many_attrs.push(' ');
        many_attrs.push_str(&attr_name(i));
        many_attrs.push_str("=\"\"");
    }
    many_attrs.push_str("/></e:Echo>");
    let laughs = {
        let mut d =
            String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n<!ENTITY lol \"lol\">\n");
        d.push_str("<!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n");
        for i in 2..10 {
            d.push_str(&format!(
                "<!ENTITY lol{i} \"{}\">\n",
                format!("&lol{};", i - 1).repeat(10)
            ));
        }
        d.push_str("]>\n");
        d.push_str(&soap::envelope(
            Version::V11,
            "",
            "<e:Echo xmlns:e=\"urn:x\"><text>&lol9;</text></e:Echo>",
        ));
        d
    };
    let ten_mib = {
        let mut v =
            soap::envelope(Version::V11, "", "<e:Echo xmlns:e=\"urn:x\"><text>").into_bytes();
        v.truncate(v.len() - "</soapenv:Body></soapenv:Envelope>".len());
        v.resize(10 * 1024 * 1024, b'x');
        v
    };
    let mut latin1 = soap::envelope(
        Version::V11,
        &begin(),
        "<e:Echo xmlns:e=\"urn:x\"><text>caf\u{e9}</text></e:Echo>",
    )
    .into_bytes();
    // Replace the UTF-8 "é" (C3 A9) by the Latin-1 byte E9: not UTF-8 any more.
    let pos = latin1
        .windows(2)
        .position(|w| w == [0xC3, 0xA9])
        .expect("é in the envelope");
    latin1.splice(pos..pos + 2, [0xE9]);
    let many_headers = soap::envelope(
        Version::V11,
        &(0..100)
            .map(|i| format!("<h:H{i} xmlns:h=\"urn:h\"/>"))
            .collect::<String>(),
        &echo("x"),
    );
    let long_name = soap::envelope(
        Version::V11,
        "",
        &format!("<{n}>x</{n}>", n = "N".repeat(10_000)),
    );
    let binary: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();

    vec![
        case(
            "truncated XML",
            soap11(&good.as_bytes()[..good.len() / 2]),
            Expect::SoapSender(Version::V11, ""),
        ),
        case(
            "10 000-deep nesting",
            soap11(soap::envelope(Version::V11, "", &deep)),
            Expect::SoapSender(Version::V11, "max_depth"),
        ),
        case(
            "100 000 attributes on one element",
            soap11(soap::envelope(Version::V11, "", &many_attrs)),
            Expect::SoapSender(Version::V11, "max_attributes"),
        ),
        case(
            "billion laughs DTD",
            soap11(laughs),
            Expect::SoapSender(Version::V11, "DTD"),
        ),
        Case {
            name: "10 MiB body with Content-Length",
            request: soap11(ten_mib.clone()),
            racing: true,
            expect: Expect::Status(413),
        },
        Case {
            name: "10 MiB body chunked",
            request: soap11(ten_mib).framing(Framing::Chunked(64 * 1024)),
            racing: true,
            expect: Expect::Status(413),
        },
        case(
            "application/json",
            Request::post("/soap", Some("application/json"), good.clone()),
            Expect::Status(415),
        ),
        case(
            "non-UTF-8 bytes",
            soap11(latin1),
            Expect::SoapSender(Version::V11, "UTF-8"),
        ),
        case(
            "an XML declaration naming ISO-8859-1",
            soap11(format!(
                "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>{good}"
            )),
            Expect::SoapSender(Version::V11, ""),
        ),
        case(
            "two Session headers",
            soap11(soap::envelope(
                Version::V11,
                &format!("{}{}", begin(), begin()),
                &echo("x"),
            )),
            Expect::Header(-1010),
        ),
        case(
            "an unknown NonStop attribute",
            soap11(soap::envelope(
                Version::V11,
                &session("SessionCommand=\"Begin\" Flavour=\"x\""),
                &echo("x"),
            )),
            Expect::Header(-1011),
        ),
        case(
            "a body that is not XML at all",
            soap11("this is not XML, not even close"),
            Expect::SoapSender(Version::V11, ""),
        ),
        case(
            "JSON sent as text/xml",
            soap11("{\"Echo\": {\"text\": \"x\"}}"),
            Expect::SoapSender(Version::V11, ""),
        ),
        case(
            "binary garbage",
            soap11(binary),
            Expect::SoapSender(Version::V11, ""),
        ),
        case(
            "an empty POST body",
            soap11(Vec::new()),
            Expect::SoapSender(Version::V11, ""),
        ),
        case(
            "not XML as SOAP 1.2",
            soap12("<<<>>>"),
            Expect::SoapSender(Version::V12, ""),
        ),
        case(
            "100 header blocks",
            soap11(many_headers),
            Expect::SoapSender(Version::V11, "max_header_blocks"),
        ),
        case(
            "a 10 000-character element name",
            soap11(long_name),
            Expect::SoapSender(Version::V11, "max_name_len"),
        ),
        case(
            "an envelope without Body",
            soap11(format!(
                "<s:Envelope xmlns:s=\"{}\"><s:Header/></s:Envelope>",
                soap::SOAP11_NS
            )),
            Expect::SoapSender(Version::V11, ""),
        ),
        case(
            "a document element other than Envelope",
            soap11("<Echo><text>x</text></Echo>"),
            Expect::SoapSender(Version::V11, ""),
        ),
    ]
}

fn check(case: &Case, reply: &Reply) -> Result<(), String> {
    let r = SoapReply::new(reply.clone());
    let fail = |why: String| Err(format!("{why}: {}", r.describe()));
    match &case.expect {
        Expect::Status(s) => {
            if reply.status != *s {
                return fail(format!("expected HTTP {s}"));
            }
        }
        Expect::SoapSender(v, text) => {
            let status = if *v == Version::V11 { 500 } else { 400 };
            if reply.status != status {
                return fail(format!("expected HTTP {status}"));
            }
            if reply.media_type().as_deref() != Some(v.media_type()) {
                return fail(format!("expected Content-Type {}", v.media_type()));
            }
            let Some(f) = r.fault() else {
                return fail("expected a SOAP fault".into());
            };
            if f.version != *v {
                return fail(format!("expected a {v:?} fault"));
            }
            let want = if *v == Version::V11 {
                "SOAP-ENV:Client"
            } else {
                "env:Sender"
            };
            if f.code_text != want
                || !f.is_code(if *v == Version::V11 {
                    "Client"
                } else {
                    "Sender"
                })
            {
                return fail(format!("expected code {want}, got {:?}", f.code_text));
            }
            if !f.reason.contains(text) {
                return fail(format!("the fault reason should name {text:?}"));
            }
        }
        Expect::Header(code) => {
            let outcome = std::panic::catch_unwind(|| {
                expect_header_fault(&r, *code);
                r.expect_no_session();
            });
            if outcome.is_err() {
                return fail(format!("expected a NonStop header fault {code}"));
            }
        }
    }
    Ok(())
}

/// Protects the broker against the bad-input corpus: truncated XML, 10 000-deep nesting, 100 000
/// attributes, a billion-laughs DTD, 10 MiB bodies (413, with Content-Length and chunked), a wrong
/// media type (415), non-UTF-8 bytes, duplicate Session headers (-1010), an unknown NonStop
/// attribute (-1011), non-XML bodies, an empty body, and the other limits — each answered as
/// specified within the client's 10 s timeout. Afterwards the same broker process (same pid, still
/// running) serves complete sessions.
#[test]
fn bad_input_corpus_gets_the_right_answers_and_the_broker_survives() {
    let mut b = BrokerProcess::start(&TestConfig::new().render());
    let pid = b.pid();
    let url = b.url("/soap");
    let client = Client::new();
    let mut failures = Vec::new();
    for c in corpus() {
        let reply = if c.racing {
            client.send_racing(&url, &c.request)
        } else {
            Ok(client.send(&url, &c.request))
        };
        match reply {
            Ok(reply) => {
                if let Err(e) = check(&c, &reply) {
                    failures.push(format!("{}: {e}", c.name));
                }
            }
            Err(e) => failures.push(format!("{}: no reply: {e}", c.name)),
        }
        assert!(
            b.is_running(),
            "the broker died on {:?}; stderr:\n{}",
            c.name,
            b.stderr_text()
        );
    }
    assert_eq!(b.pid(), pid);
    soak::assert_serves(&url, 4);
    assert!(
        failures.is_empty(),
        "{} case(s) answered wrongly:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// Protects the keep-alive path: a bad request on a persistent connection does not poison the
/// connection or the next request on it. A fault is a complete, well-framed HTTP response, so the
/// broker keeps the connection open after it (spec/soap.md: keep-alive as actix-web provides, which
/// closes only on a framing error) and serves the next request on it.
#[test]
fn a_bad_request_on_a_keep_alive_connection_leaves_the_next_one_intact() {
    let b = BrokerProcess::start(&TestConfig::new().render());
    let url = b.url("/soap");
    let mut c = Client::new().connect(&url).keep_alive(true);
    c.send(&soap11("<not-closed>"));
    let r = SoapReply::new(c.read_reply("POST"));
    assert_eq!(r.status(), 500, "{}", r.describe());
    assert!(
        !r.http
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close")),
        "a fault must not close a keep-alive connection: {}",
        r.describe()
    );
    c.send(&soap11(soap::envelope(
        Version::V11,
        &begin(),
        &echo("next on the same connection"),
    )));
    let r = SoapReply::new(c.read_reply("POST"));
    r.expect_echo("next on the same connection");
    r.expect_session_id();
}

/// Protects output escaping: a SessionID full of XML metacharacters is quoted back in the -1001
/// text as given, in a reply that is still well-formed XML.
#[test]
fn hostile_session_id_is_escaped_in_the_fault() {
    let b = BrokerProcess::start(&TestConfig::new().render());
    let hostile = "<script>&\"'</script>";
    let attr = hostile
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;");
    let header = format!("<nsk:Session xmlns:nsk=\"{NSK}\" SessionID=\"{attr}\"/>");
    let r = soap::call11(&b.url("/soap"), &header, &echo("x"));
    assert!(
        r.doc.is_ok(),
        "the fault must be well-formed XML: {}",
        r.describe()
    );
    let f = expect_header_fault(&r, -1001);
    assert_eq!(
        f.detail_string.as_deref(),
        Some(soap::unknown_session_text(hostile).as_str()),
        "{}",
        r.describe()
    );
}

/// Protects the Content-Length check: a body announced as over the limit is refused with 413 even
/// when the client sends nothing after the headers (it must not wait for the body).
#[test]
fn oversized_content_length_is_refused_before_the_body_arrives() {
    let b = BrokerProcess::start(&TestConfig::new().render());
    let url = b.url("/soap");
    let mut c = Client::new().connect(&url);
    let mut req = soap11(Vec::new()).framing(Framing::None);
    req.headers
        .push(("Content-Length".into(), (50 * 1024 * 1024).to_string()));
    c.send(&req);
    let r = c
        .try_read_reply("POST")
        .unwrap_or_else(|e| panic!("no reply to a 50 MiB Content-Length: {e}"));
    assert_eq!(r.status, 413, "{}", r.describe());
    let ok = http::post(
        &url,
        Some("text/xml"),
        &[],
        soap::envelope(Version::V11, "", &echo("ok")),
    );
    SoapReply::new(ok).expect_echo("ok");
}
