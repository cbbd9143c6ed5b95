//! Tracing (issue 17 item 4), against a real broker: one span per request naming the endpoint,
//! the dialect, the service and a shortened session ID (never the whole ID), kept in JSON log
//! lines; a client's W3C `traceparent` recorded in it and passed on to an http backend with the
//! same trace and a new parent.

use broker_tests::soap::{self, call11, cont, echo};
use broker_tests::{BrokerProcess, TestConfig};
use std::time::Duration;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// An http backend answering an EchoResponse; the heads of what it received.
fn backend() -> (String, broker_tests::http::Received) {
    broker_tests::http::backend(
        "text/xml",
        b"<EchoResponse><text>ok</text></EchoResponse>".to_vec(),
    )
}

fn heads(received: &broker_tests::http::Received) -> Vec<String> {
    received
        .lock()
        .expect("lock")
        .iter()
        .map(|(head, _)| head.clone())
        .collect()
}

/// POST an Echo with `header` and a `traceparent` of [`TRACE`] to `endpoint`.
fn post_traced(endpoint: &str, header: &str) -> String {
    let traceparent = format!("00-{TRACE}-00f067aa0ba902b7-01");
    let envelope = soap::envelope(soap::Version::V11, header, &echo("traced"));
    let r = broker_tests::http::post(
        endpoint,
        Some("text/xml; charset=utf-8"),
        &[
            ("SOAPAction", "\"\""),
            ("traceparent", traceparent.as_str()),
        ],
        envelope,
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    traceparent
}

/// Protects the request span and the trace context: with JSON logs at debug, the request's log
/// lines carry the span's endpoint, dialect, service, shortened session and trace ID; the whole
/// session ID appears nowhere; the backend receives the trace with a parent of the broker's own.
#[test]
fn a_request_is_one_span_and_its_trace_goes_on_to_the_backend() {
    let (url, received) = backend();
    let b = BrokerProcess::start(
        &TestConfig::new()
            .json_logs("debug")
            .echo_adapter(&format!("adapter = \"http\"\nurls = [\"{url}\"]"))
            .render(),
    );
    let endpoint = b.url("/soap");
    let id = soap::begin_session(&endpoint);
    let traceparent = post_traced(&endpoint, &cont(&id));
    // A request without a trace passes none on.
    call11(&endpoint, &cont(&id), &echo("untraced"));

    let heads = heads(&received);
    assert_eq!(heads.len(), 2, "{heads:?}");
    let sent = heads[0]
        .lines()
        .find_map(|l| l.strip_prefix("traceparent: "))
        .unwrap_or_else(|| panic!("no traceparent sent: {}", heads[0]));
    assert!(
        sent.starts_with(&format!("00-{TRACE}-")) && sent.ends_with("-01"),
        "{sent}"
    );
    assert_ne!(
        sent, traceparent,
        "the broker's hop has a parent id of its own"
    );
    assert!(
        !heads[1].to_ascii_lowercase().contains("traceparent"),
        "{}",
        heads[1]
    );

    let log = broker_tests::wait::poll(Duration::from_secs(5), || {
        let log = b.stderr_text();
        log.contains(TRACE).then_some(log)
    })
    .unwrap_or_else(|| panic!("no log line names the trace: {}", b.stderr_text()));
    let line = log
        .lines()
        .find(|l| l.contains(TRACE) && l.contains("\"service\":\"Echo\""))
        .unwrap_or_else(|| panic!("no request span with the service: {log}"));
    for field in [
        "\"name\":\"request\"",
        "\"endpoint\":\"/soap\"",
        "\"dialect\":\"nonstop\"",
        &format!("\"session\":\"{}", &id[..8]),
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
    assert!(!log.contains(&id), "the whole session ID reached the log");
}

/// Protects `log.request_spans = false`: no request span, so no line carries one; the trace still
/// goes on to the backend (it travels with the request, not the span).
#[test]
fn without_request_spans_the_trace_still_goes_on() {
    let (url, received) = backend();
    let mut config = TestConfig::new()
        .json_logs("debug")
        .echo_adapter(&format!("adapter = \"http\"\nurls = [\"{url}\"]"));
    config.request_spans = false;
    let b = BrokerProcess::start(&config.render());
    let endpoint = b.url("/soap");
    post_traced(&endpoint, "");
    let heads = heads(&received);
    assert!(
        heads[0].contains(&format!("traceparent: 00-{TRACE}-")),
        "{}",
        heads[0]
    );
    let log = b.stderr_text();
    assert!(
        log.contains("request answered"),
        "the debug line is there: {log}"
    );
    assert!(
        !log.contains("\"name\":\"request\""),
        "a request span: {log}"
    );
}
