//! The optional OpenTelemetry exporter (issue 17; the `otlp` cargo feature, `[log] otlp_endpoint`),
//! end to end: the broker built with the feature (`target/debug/broker-otlp`, which
//! `scripts/test.sh` builds) sends its request spans over OTLP/HTTP to a collector of the test's
//! own on loopback. Protects: the spans arrive as OTLP protobuf on `/v1/traces`, named `request`,
//! with the service name and the endpoint; a client's `traceparent` is their parent (the client's
//! 16-byte trace ID is in the export); no whole session ID is exported. And the plain broker
//! refuses the key with a configuration error naming it.

use broker_tests::broker::{broker_exe, free_port};
use broker_tests::soap::{self, call11, cont, echo};
use broker_tests::{wait, BrokerProcess, TestConfig};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the collector received: each POST's head and body.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A collector that keeps every body POSTed to it and answers 200 with an empty
/// `ExportTraceServiceResponse`.
fn collector() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the collector");
    let addr = listener.local_addr().expect("its address");
    let got: Received = Arc::default();
    let seen = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let Ok(clone) = stream.try_clone() else {
                continue;
            };
            let mut reader = BufReader::new(clone);
            loop {
                let mut head = String::new();
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    if line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    head.push_str(&line);
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                seen.lock().expect("lock").push((head, body));
                let reply = "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n";
                if stream.write_all(reply.as_bytes()).is_err() {
                    return;
                }
            }
        }
    });
    (format!("http://{addr}"), got)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Protects the exporter (see the module docs).
#[test]
fn request_spans_reach_an_otlp_collector_in_the_clients_trace() {
    let exe = broker_exe().with_file_name("broker-otlp");
    assert!(
        exe.is_file(),
        "{} is missing: scripts/test.sh builds it (cargo build -p broker --features otlp)",
        exe.display()
    );
    let (endpoint, got) = collector();
    let b = BrokerProcess::start_with_exe(
        &exe,
        &TestConfig::new()
            .log_extra(&format!(
                "otlp_endpoint = \"{endpoint}\"\notlp_service_name = \"broker-under-test\""
            ))
            .render(),
    );
    let url = b.url("/soap");
    let id = soap::begin_session(&url);
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let r = broker_tests::http::post(
        &url,
        Some("text/xml; charset=utf-8"),
        &[
            ("SOAPAction", "\"\""),
            ("traceparent", traceparent.as_str()),
        ],
        soap::envelope(soap::Version::V11, &cont(&id), &echo("traced")),
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    call11(&url, &cont(&id), &echo("again")).expect_echo("again");

    let trace_bytes: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&trace_id[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    let exported = wait::poll(Duration::from_secs(20), || {
        let got = got.lock().expect("lock");
        let all: Vec<u8> = got.iter().flat_map(|(_, body)| body.clone()).collect();
        contains(&all, &trace_bytes).then_some((got.clone(), all))
    });
    let Some((posts, all)) = exported else {
        panic!(
            "no span of the client's trace reached the collector ({} posts); broker log:\n{}",
            got.lock().expect("lock").len(),
            b.stderr_text()
        );
    };
    let (head, _) = &posts[0];
    assert!(head.starts_with("POST /v1/traces "), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/x-protobuf"),
        "{head}"
    );
    for needle in ["request", "broker-under-test", "/soap", "nonstop", "Echo"] {
        assert!(contains(&all, needle.as_bytes()), "{needle:?} not exported");
    }
    assert!(
        !contains(&all, id.as_bytes()),
        "a whole session ID was exported"
    );
}

/// Protects the plain build's answer to the exporter's key: a configuration error naming it.
#[test]
fn a_broker_without_the_feature_refuses_the_exporters_key() {
    let dir = tempfile::tempdir().expect("a directory");
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        format!(
            "[log]\notlp_endpoint = \"http://127.0.0.1:{}\"\n",
            free_port()
        ),
    )
    .expect("write");
    let config = config.display().to_string();
    let out = broker_tests::broker::run_broker(&["--config", &config], Duration::from_secs(30));
    assert_eq!(out.code(), Some(2), "{}", out.describe());
    assert!(
        out.stderr.contains("log.otlp_endpoint") && out.stderr.contains("--features otlp"),
        "{}",
        out.stderr
    );
}
