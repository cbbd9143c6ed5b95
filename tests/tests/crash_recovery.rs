//! Nothing lost (`product.md`, "Quality bars"): `kill -9` of the broker between two requests of a
//! session, and of a backend worker in the middle of a request.

use broker_tests::http::{Client, Request};
use broker_tests::proc::{self, ProcId};
use broker_tests::soap::{
    self, call11, cont, echo, echo_sleep, expect_header_fault, expect_nonstop_fault, SoapReply,
    Version,
};
use broker_tests::{soak, wait, BrokerProcess, TestConfig};
use std::time::Duration;

/// Protects durability of session boundaries: a session begun (and acknowledged) survives `kill -9`
/// of the broker — after a restart on the same data directory it continues with the same ID — and a
/// session ended before the crash stays ended.
#[test]
fn sessions_survive_kill9_of_the_broker() {
    let mut b = BrokerProcess::start(&TestConfig::new().render());
    let url = b.url("/soap");
    let r = call11(&url, &soap::begin(), &echo("before the crash"));
    r.expect_echo("before the crash");
    let live = r.expect_session_id();
    soap::echo_in_session(&url, &live, "one more before the crash");
    let ended = soap::begin_session(&url);
    soap::end_session(&url, &ended);

    let old_pid = b.pid();
    b.kill9();
    b.restart();
    assert_ne!(b.pid(), old_pid, "a new broker process");
    let url = b.url("/soap");

    let r = soap::echo_in_session(&url, &live, "after the crash");
    assert_eq!(r.session_id().as_deref(), Some(live.as_str()));
    let r = call11(&url, &cont(&ended), &echo("ended before the crash"));
    expect_header_fault(&r, -1001);
    soap::end_session(&url, &live);
    soak::assert_serves(&url, 2);
}

/// Protects the broker from a crashing backend: `kill -9` of the echo worker while it serves a
/// request (Echo with sleepMs 2000) answers that request with a Server fault -302
/// (`SOAP-ENV:Server.InternalError`, the worker died mid-request) carrying the live session, and the
/// next request of the session is served by a fresh worker (a different process).
#[test]
fn kill9_of_a_worker_mid_request_faults_and_a_fresh_worker_serves_the_next() {
    // One worker at most: the request in flight is certainly on the worker we kill.
    let b = BrokerProcess::start(&TestConfig::new().echo_workers(1, 1).render());
    let url = b.url("/soap");
    let id = soap::begin_session(&url);
    soap::echo_in_session(&url, &id, "warm up");
    let before: Vec<ProcId> = b.wait_for_workers(1, Duration::from_secs(10));
    let worker = before[0].pid;
    let read_before = proc::bytes_read(worker).expect("the worker's /proc/PID/io");

    let mut conn = Client::new().connect(&url);
    let env = soap::envelope(Version::V11, &cont(&id), &echo_sleep("doomed", 2000));
    conn.send(
        &Request::post("/soap", Some(Version::V11.content_type()), env)
            .header("SOAPAction", "\"\""),
    );
    let reader = std::thread::spawn(move || SoapReply::new(conn.read_reply("POST")));
    // Kill the worker once it has the request (it then sleeps for 2 s).
    wait::until_true(
        Duration::from_secs(10),
        "the worker to read the request",
        || proc::bytes_read(worker).is_some_and(|n| n > read_before),
    );
    for w in &before {
        proc::kill9(w.pid);
    }
    let r = reader.join().expect("the reader thread");
    let f = expect_nonstop_fault(&r, "SOAP-ENV:Server.InternalError", -302);
    assert!(f.is_code("Server"), "{}", r.describe());
    assert_eq!(
        r.session_id().as_deref(),
        Some(id.as_str()),
        "the session lives on, so its fault carries it: {}",
        r.describe()
    );
    assert!(
        proc::wait_gone(&before, Duration::from_secs(5)).is_empty(),
        "the killed worker is gone"
    );

    soap::echo_in_session(&url, &id, "served by a fresh worker");
    let after = b.wait_for_workers(1, Duration::from_secs(10));
    for w in &after {
        assert!(
            !before.contains(w),
            "worker {w:?} should be a new process, not one of {before:?}"
        );
    }
    soak::assert_serves(&url, 2);
}

/// Protects the sample server's crash aid end to end: a worker that exits without replying
/// (`<crash/>`) gives that request -302, and the class recovers for the next request.
#[test]
fn worker_exiting_without_reply_is_fault_302_and_the_class_recovers() {
    let b = BrokerProcess::start(&TestConfig::new().echo_workers(1, 1).render());
    let url = b.url("/soap");
    let id = soap::begin_session(&url);
    let r = call11(
        &url,
        &cont(&id),
        &format!(
            "<e:Echo xmlns:e=\"{}\"><text>x</text><crash/></e:Echo>",
            soap::ECHO_NS
        ),
    );
    expect_nonstop_fault(&r, "SOAP-ENV:Server.InternalError", -302);
    assert_eq!(
        r.session_id().as_deref(),
        Some(id.as_str()),
        "{}",
        r.describe()
    );
    soap::echo_in_session(&url, &id, "recovered");
}
