//! Tracing (issue 17 item 4), against a real broker: one span per request naming the endpoint,
//! the dialect, the service and a shortened session ID (never the whole ID), kept in JSON log
//! lines; a client's W3C `traceparent` recorded in it and passed on to an http backend with the
//! same trace and a new parent.

use broker_tests::soap::{self, call11, cont, echo};
use broker_tests::{BrokerProcess, TestConfig};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// An HTTP backend that answers every POST with an EchoResponse and keeps the request heads.
fn backend() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/echo", listener.local_addr().expect("addr"));
    let heads: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = heads.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            loop {
                let mut head = String::new();
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    let end = line == "\r\n";
                    head.push_str(&line);
                    if end {
                        break;
                    }
                }
                let mut body = vec![0; len];
                if reader.read_exact(&mut body).is_err() {
                    break;
                }
                seen.lock().expect("lock").push(head);
                let reply = "<EchoResponse><text>ok</text></EchoResponse>";
                let out = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n{reply}",
                    reply.len()
                );
                if stream.write_all(out.as_bytes()).is_err() {
                    break;
                }
            }
        }
    });
    (url, heads)
}

/// Protects the request span and the trace context: with JSON logs at debug, the request's log
/// lines carry the span's endpoint, dialect, service, shortened session and trace ID; the whole
/// session ID appears nowhere; the backend receives the trace with a parent of the broker's own.
#[test]
fn a_request_is_one_span_and_its_trace_goes_on_to_the_backend() {
    let (url, heads) = backend();
    let b = BrokerProcess::start(
        &TestConfig::new()
            .json_logs("debug")
            .echo_adapter(&format!("adapter = \"http\"\nurls = [\"{url}\"]"))
            .render(),
    );
    let endpoint = b.url("/soap");
    let id = soap::begin_session(&endpoint);
    let traceparent = format!("00-{TRACE}-00f067aa0ba902b7-01");
    let envelope = soap::envelope(soap::Version::V11, &cont(&id), &echo("traced"));
    let r = broker_tests::http::post(
        &endpoint,
        Some("text/xml; charset=utf-8"),
        &[
            ("SOAPAction", "\"\""),
            ("traceparent", traceparent.as_str()),
        ],
        envelope,
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    // A request without a trace passes none on.
    call11(&endpoint, &cont(&id), &echo("untraced"));

    let heads = heads.lock().expect("lock").clone();
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
    let (url, heads) = backend();
    let mut config = TestConfig::new()
        .json_logs("debug")
        .echo_adapter(&format!("adapter = \"http\"\nurls = [\"{url}\"]"));
    config.request_spans = false;
    let b = BrokerProcess::start(&config.render());
    let endpoint = b.url("/soap");
    let traceparent = format!("00-{TRACE}-00f067aa0ba902b7-01");
    let envelope = soap::envelope(soap::Version::V11, "", &echo("traced"));
    let r = broker_tests::http::post(
        &endpoint,
        Some("text/xml; charset=utf-8"),
        &[
            ("SOAPAction", "\"\""),
            ("traceparent", traceparent.as_str()),
        ],
        envelope,
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    let heads = heads.lock().expect("lock").clone();
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
