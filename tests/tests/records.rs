//! Record services end to end (issue 16): a NonStop service whose server class reads and writes
//! fixed-layout records. The broker turns the request element into the request record (checking
//! every value: a refusal is a Client fault naming the field, and nothing is sent), carries the
//! bytes through the process and http adapters, and turns the reply record into the response
//! element, or into a fault when its layout is the error layout, or into a Server fault (logged
//! with the offset) when it fits no layout. The server class is the real sample `acctinq`
//! (EBCDIC records written at byte offsets, independently of the broker's layout code), or, where
//! a test must see exactly what arrives, an HTTP server of the test's own on a real socket.

use broker_tests::broker::{broker_exe, workspace_root, ChildGuard};
use broker_tests::soap::{
    self, begin, call, call11, cont, end, expect_nonstop_fault, SoapReply, Version,
};
use broker_tests::{BrokerProcess, TestConfig};
use std::time::Duration;

const NS: &str = "urn:soap-broker:soap";

/// The record service `AccountInquiry` on the class `acctinq` reached with `adapter` (TOML lines).
fn record_service(adapter: &str) -> String {
    let copybook = workspace_root().join("records/samples/acctinq.cpy");
    format!(
        r#"
[[server_class]]
name = "acctinq"
{adapter}
payload = "record"
min_workers = 1
max_workers = 2

[[service]]
name = "AccountInquiry"
endpoint = "/soap"
server_class = "acctinq"

[service.record]
layouts_file = "{copybook}"
request = "ACCTINQ-REQUEST"
encoding = "IBM-037"

[[service.record.reply]]
layout = "ACCTINQ-REPLY"
start = 0
end = 2
value = "00"

[[service.record.reply]]
layout = "ACCTINQ-ERROR"
default = true
fault = true
fault_string = "Account inquiry failed"
"#,
        copybook = copybook.display()
    )
}

fn start_with_process_class() -> BrokerProcess {
    BrokerProcess::start(
        &TestConfig::new()
            .extra(&record_service(
                "adapter = \"process\"\ncommand = [\"{broker_exe}\", \"sample-server\", \"acctinq\"]",
            ))
            .render(),
    )
}

fn inquiry(account: &str, extra: &str) -> String {
    format!("<a:AccountInquiry xmlns:a=\"{NS}\"><a:ACCOUNT-NO>{account}</a:ACCOUNT-NO>{extra}</a:AccountInquiry>")
}

fn field(r: &SoapReply, path: &[&str]) -> String {
    let mut e = r.expect_body(Some(NS), "AccountInquiryResponse");
    for p in path {
        e = e
            .child(Some(NS), p)
            .unwrap_or_else(|| panic!("no {p} in {}", r.describe()));
    }
    e.text()
}

/// Protects the record path in a session: Begin with an inquiry, a continue, End; each reply is the
/// account's record read into `AccountInquiryResponse` in the endpoint's namespace: text without
/// its padding, a packed balance with its sign and scale, binary counts, the DEPENDING ON table
/// with as many occurrences as the reply holds (MAX-TXNS, a request field with a default, limits
/// them).
#[test]
fn a_record_service_answers_in_a_session_with_the_reply_layout() {
    let b = start_with_process_class();
    let url = b.url("/soap");
    let r = call11(&url, &begin(), &inquiry("1000000001", ""));
    let id = r.expect_session_id();
    assert_eq!(field(&r, &["REPLY-STATUS"]), "00");
    assert_eq!(field(&r, &["HOLDER-NAME"]), "ADA LOVELACE");
    assert_eq!(field(&r, &["BALANCE"]), "1200.00");
    assert_eq!(field(&r, &["OPENED", "OPENED-YEAR"]), "2019");
    assert_eq!(field(&r, &["TXN-COUNT"]), "3");
    let body = r.expect_body(Some(NS), "AccountInquiryResponse");
    assert_eq!(body.children_named(Some(NS), "TXN").count(), 3);

    let r = call11(
        &url,
        &cont(&id),
        &inquiry("1000000001", "<a:MAX-TXNS>1</a:MAX-TXNS>"),
    );
    assert_eq!(r.expect_session_id(), id);
    assert_eq!(field(&r, &["TXN-COUNT"]), "1");
    assert_eq!(field(&r, &["TXN", "TXN-AMOUNT"]), "250.00");

    let r = call11(&url, &cont(&id), &inquiry("1000000002", ""));
    assert_eq!(field(&r, &["BALANCE"]), "-310.50");
    assert_eq!(field(&r, &["TXN", "TXN-AMOUNT"]), "-310.50");
    assert_eq!(field(&r, &["HOLDER-NAME"]), "CHARLES BABBAGE");

    let r = call11(&url, &end(&id), &inquiry("1000000003", ""));
    assert_eq!(field(&r, &["TXN-COUNT"]), "0");
    r.expect_no_session();
}

/// Protects the error layout: a reply whose status is not "00" is chosen as ACCTINQ-ERROR, a
/// fault layout: a Server fault with the configured faultstring and the record as XML in the
/// detail; the session lives on. SOAP 1.2 gets the same as a Receiver fault.
#[test]
fn an_error_record_is_a_fault_with_the_record_as_its_detail() {
    let b = start_with_process_class();
    let url = b.url("/soap");
    let id = soap::begin_session(&url);
    let r = call11(&url, &cont(&id), &inquiry("42", ""));
    assert_eq!(r.status(), 500, "{}", r.describe());
    let f = r.expect_fault();
    assert_eq!(f.code_text, "SOAP-ENV:Server", "{}", r.describe());
    assert_eq!(f.reason, "Account inquiry failed");
    let detail = f.detail.expect("a detail");
    let error = detail
        .child(Some(NS), "ACCTINQ-ERROR")
        .unwrap_or_else(|| panic!("the error record in the detail: {}", r.describe()));
    assert_eq!(
        error.child(Some(NS), "ERROR-STATUS").map(|e| e.text()),
        Some("10".into())
    );
    assert_eq!(
        error.child(Some(NS), "ERROR-TEXT").map(|e| e.text()),
        Some("ACCOUNT 0000000042 NOT FOUND".into())
    );
    assert_eq!(r.expect_session_id(), id, "the session lives on");

    let r = call(
        &url,
        Version::V12,
        &cont(&id),
        &inquiry("77", "<a:REQUEST-CODE>INQ2</a:REQUEST-CODE>"),
    );
    let f = r.expect_fault();
    assert!(f.is_code("Receiver"), "{}", r.describe());
    let text = f
        .detail
        .and_then(|d| d.child(Some(NS), "ACCTINQ-ERROR").cloned())
        .and_then(|e| e.child(Some(NS), "ERROR-TEXT").map(|t| t.text()));
    assert_eq!(text.as_deref(), Some("UNKNOWN REQUEST CODE INQ2"));
}

/// Protects the checks before a record is written: each bad value is a Client fault (-208 a value,
/// -219 an unknown element, -205 two redefinitions) naming the field's path, the session lives on,
/// and the server class is not called (its next reply is still the right one).
#[test]
fn bad_values_are_client_faults_naming_the_field() {
    let b = start_with_process_class();
    let url = b.url("/soap");
    let id = soap::begin_session(&url);
    let cases: [(&str, i64, &str); 6] = [
        (
            "<a:ACCOUNT-NO>12x</a:ACCOUNT-NO>",
            -208,
            "Field ACCOUNT-NO: \"12x\" is not a decimal number",
        ),
        (
            "<a:ACCOUNT-NO>12345678901</a:ACCOUNT-NO>",
            -208,
            "Field ACCOUNT-NO",
        ),
        ("<a:ACCOUNT-NO>-5</a:ACCOUNT-NO>", -208, "Field ACCOUNT-NO"),
        ("<a:BRANCH>TOO LONG</a:BRANCH>", -208, "Field BRANCH"),
        ("<a:MAX-TXNS>99999</a:MAX-TXNS>", -208, "Field MAX-TXNS"),
        ("<a:PIN>1234</a:PIN>", -219, "Field PIN: no such field"),
    ];
    for (body, code, text) in cases {
        let r = call11(
            &url,
            &cont(&id),
            &format!("<a:AccountInquiry xmlns:a=\"{NS}\">{body}</a:AccountInquiry>"),
        );
        let f = expect_nonstop_fault(&r, "SOAP-ENV:Client", code);
        assert_eq!(f.reason, "Unmarshal error", "{}", r.describe());
        let detail = f.detail_string.unwrap_or_default();
        assert!(detail.starts_with(text), "{body}: {detail}");
        assert_eq!(r.expect_session_id(), id, "the session lives on");
    }
    let r = call11(&url, &cont(&id), &inquiry("1000000003", ""));
    assert_eq!(field(&r, &["HOLDER-NAME"]), "GRACE HOPPER");
}

/// Protects the reply check: a reply record cut short fits no layout: a Server fault (-401,
/// "Marshal error") that names the layout and the offset, and a log line with the offset and the
/// field, but not the reply's bytes.
#[test]
fn a_reply_that_does_not_fit_is_a_server_fault_logged_with_its_offset() {
    let b = start_with_process_class();
    let url = b.url("/soap");
    let r = call11(&url, "", &inquiry("9999999999", ""));
    let f = expect_nonstop_fault(&r, "SOAP-ENV:Server", -401);
    assert_eq!(f.reason, "Marshal error");
    let text = f.detail_string.unwrap_or_default();
    assert!(text.contains("ACCTINQ-REPLY at offset 2"), "{text}");
    let log = broker_tests::wait::poll(Duration::from_secs(5), || {
        let log = b.stderr_text();
        log.contains("reply record does not fit").then_some(log)
    })
    .unwrap_or_else(|| panic!("a log line for the misfit: {}", b.stderr_text()));
    let line = log
        .lines()
        .find(|l| l.contains("reply record does not fit"))
        .unwrap_or_default();
    assert!(line.contains("at offset 2 (TXN-COUNT)"), "{line}");
}

fn ebcdic(text: &str) -> Vec<u8> {
    records::Charset::Ibm037.encode(text).expect("IBM-037 text")
}

/// Protects what the http adapter carries for a record class: the request record as an
/// `application/octet-stream` body, byte for byte (EBCDIC text, zoned digits, a big-endian binary
/// default); a refused value reaches no server at all; the server's reply record comes back as
/// XML.
#[test]
fn the_http_adapter_posts_the_record_and_refusals_post_nothing() {
    let mut reply = ebcdic("00");
    reply.extend(ebcdic("0000000007"));
    reply.extend(ebcdic(&format!("{:<30}", "ALAN TURING")));
    reply.extend([0x00, 0x00, 0x00, 0x00, 0x00, 0x50, 0x0C]); // +5.00, packed
    reply.extend(ebcdic("19120623"));
    reply.extend(ebcdic("  "));
    reply.extend([0, 0]);
    let (backend, received) = broker_tests::http::backend("application/octet-stream", reply);
    let b = BrokerProcess::start(
        &TestConfig::new()
            .extra(&record_service(&format!(
                "adapter = \"http\"\nurls = [\"{backend}\"]"
            )))
            .render(),
    );
    let url = b.url("/soap");
    let r = call11(
        &url,
        "",
        &inquiry(
            "7",
            "<a:BRANCH>LONDON</a:BRANCH><a:ACCOUNT-NO>8</a:ACCOUNT-NO>",
        ),
    );
    // Two ACCOUNT-NO: a field given twice is refused (it occurs once).
    expect_nonstop_fault(&r, "SOAP-ENV:Client", -208);
    let r = call11(&url, "", &inquiry("7x", ""));
    expect_nonstop_fault(&r, "SOAP-ENV:Client", -208);
    assert!(
        received.lock().expect("lock").is_empty(),
        "a refused request reached the server"
    );

    let r = call11(&url, "", &inquiry("7", "<a:BRANCH>LONDON</a:BRANCH>"));
    assert_eq!(
        field(&r, &["HOLDER-NAME"]),
        "ALAN TURING",
        "{}",
        r.describe()
    );
    assert_eq!(field(&r, &["BALANCE"]), "5.00");
    let got = received.lock().expect("lock").clone();
    assert_eq!(got.len(), 1);
    let (head, body) = &got[0];
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/octet-stream"),
        "{head}"
    );
    let mut expected = ebcdic("INQ10000000007LONDON");
    expected.extend([0x00, 0x0A]); // MAX-TXNS's VALUE 10, COMP
    assert_eq!(body, &expected);
}

/// `sample-server acctinq <mode> 127.0.0.1:0` and a broker whose record class reaches it with the
/// adapter `adapter(addr)` gives.
fn behind_sample_server(
    mode: &str,
    adapter: impl Fn(std::net::SocketAddr) -> String,
) -> (ChildGuard, BrokerProcess) {
    let mut server = ChildGuard::spawn(
        &format!("broker sample-server acctinq {mode}"),
        broker_exe(),
        &["sample-server", "acctinq", mode, "127.0.0.1:0"],
    );
    let addr = server.wait_announced(Duration::from_secs(20));
    let b = BrokerProcess::start(
        &TestConfig::new()
            .extra(&record_service(&adapter(addr)))
            .render(),
    );
    (server, b)
}

/// Protects the real sample over HTTP: `sample-server acctinq --http` behind the http adapter
/// answers as it does behind the process adapter.
#[test]
fn the_sample_record_class_over_http() {
    let (_server, b) = behind_sample_server("--http", |addr| {
        format!("adapter = \"http\"\nurls = [\"http://{addr}/\"]")
    });
    let r = call11(&b.url("/soap"), "", &inquiry("1000000002", ""));
    assert_eq!(field(&r, &["BALANCE"]), "-310.50", "{}", r.describe());
    let r = call11(&b.url("/soap"), "", &inquiry("5", ""));
    assert_eq!(r.expect_fault().reason, "Account inquiry failed");
}

/// Protects the record path over the tcp adapter: `sample-server acctinq --tcp` speaks the wire
/// protocol on a socket, and the record goes as the frame's payload as it does over a pipe.
#[test]
fn the_sample_record_class_over_tcp() {
    let (_server, b) = behind_sample_server("--tcp", |addr| {
        format!("adapter = \"tcp\"\naddresses = [\"{addr}\"]")
    });
    let url = b.url("/soap");
    let id = soap::begin_session(&url);
    let r = call11(
        &url,
        &cont(&id),
        &inquiry("1000000001", "<a:MAX-TXNS>3</a:MAX-TXNS>"),
    );
    assert_eq!(field(&r, &["TXN-COUNT"]), "3", "{}", r.describe());
    assert_eq!(r.expect_session_id(), id);
    let r = call11(&url, &cont(&id), &inquiry("77", ""));
    let f = r.expect_fault();
    assert_eq!(f.reason, "Account inquiry failed", "{}", r.describe());
}
