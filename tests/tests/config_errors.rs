//! The command line and configuration contract (`product.md`, "Run modes and the command line"):
//! bad configurations exit 2 with one line naming file, key and problem; the printed default
//! configuration is valid and runs; SIGTERM shuts down cleanly with exit 0 and stops the workers.

use broker_tests::broker::{run_broker, run_with_config};
use broker_tests::{proc, soak, BrokerProcess, TestConfig};
use std::time::Duration;

const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// Run a bad configuration; expect exit 2 and exactly one stderr line
/// `broker: configuration error: FILE: KEY: PROBLEM` containing `key` and `problem`.
fn expect_config_error(toml: &str, key: &str, problem: &str) {
    let (out, path) = run_with_config(toml, &[], EXIT_TIMEOUT);
    assert_eq!(
        out.code(),
        Some(2),
        "a bad configuration exits 2: {}",
        out.describe()
    );
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "one line of reason on stderr: {}",
        out.describe()
    );
    let line = lines[0];
    let prefix = format!("broker: configuration error: {}: ", path.display());
    assert!(
        line.starts_with(&prefix),
        "the line must start with {prefix:?}: {}",
        out.describe()
    );
    let rest = &line[prefix.len()..];
    assert!(
        rest.contains(key),
        "the line must name the key {key:?}: {}",
        out.describe()
    );
    assert!(
        rest.contains(problem),
        "the line must say {problem:?}: {}",
        out.describe()
    );
    assert!(
        out.stdout.trim().is_empty() || !out.stdout.contains("listening"),
        "it must not start: {}",
        out.describe()
    );
}

/// Protects the error for a negative `session_timeout` (`nonstop.md`: a configuration error).
#[test]
fn negative_session_timeout_is_a_configuration_error() {
    expect_config_error(
        &TestConfig::new().session_timeout("-5m").render(),
        "endpoint[0].session_timeout",
        "negative",
    );
}

/// Protects unknown keys: a typo is an error naming the line and the key, not a silently ignored
/// setting.
#[test]
fn unknown_key_is_a_configuration_error() {
    let toml =
        TestConfig::new()
            .render()
            .replacen("[broker]\n", "[broker]\ncolour = \"blue\"\n", 1);
    expect_config_error(&toml, "line ", "colour");
}

/// Protects cross-references: a service naming a server class that does not exist.
#[test]
fn service_naming_an_unknown_class_is_a_configuration_error() {
    let extra = "[[service]]\nname = \"Other\"\nendpoint = \"/soap\"\nserver_class = \"nope\"\n";
    expect_config_error(
        &TestConfig::new().extra(extra).render(),
        "service[1].server_class",
        "\"nope\"",
    );
}

/// Protects pool sizing: `min_workers` larger than `max_workers`.
#[test]
fn min_workers_above_max_workers_is_a_configuration_error() {
    expect_config_error(
        &TestConfig::new().echo_workers(3, 2).render(),
        "server_class[0].min_workers",
        "max_workers",
    );
}

/// Protects the store URL check: an unknown scheme is refused at start-up.
#[test]
fn unknown_store_scheme_is_a_configuration_error() {
    let toml = TestConfig::new().render().replace(
        "url = \"sled:{data_dir}/cookies\"",
        "url = \"ftp://example.org/cookies\"",
    );
    expect_config_error(&toml, "store.url", "ftp://example.org/cookies");
}

/// Protects unreadable files: a configuration path that does not exist is named in the error.
#[test]
fn missing_configuration_file_is_an_error_naming_it() {
    let out = run_broker(&["--config", "/nonexistent/broker-test.toml"], EXIT_TIMEOUT);
    assert_eq!(out.code(), Some(2), "{}", out.describe());
    assert!(
        out.stderr.contains("/nonexistent/broker-test.toml"),
        "{}",
        out.describe()
    );
}

/// Protects `--print-default-config`: it prints TOML that parses, and that file, run with
/// `--config` on a free port, starts a broker that serves Echo in sessions.
#[test]
fn printed_default_configuration_parses_and_runs() {
    let out = run_broker(&["--print-default-config"], EXIT_TIMEOUT);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    let table: toml::Table = toml::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("the default configuration is not TOML: {e}\n{}", out.stdout));
    assert!(
        table.contains_key("endpoint"),
        "the default configuration has endpoints"
    );
    assert!(
        out.stdout.lines().any(|l| l.trim_start().starts_with('#')),
        "the default configuration is commented"
    );
    let b = BrokerProcess::start(&out.stdout);
    soak::assert_serves(&b.url("/soap"), 2);
}

/// Protects clean shutdown: SIGTERM ends the broker with exit status 0, and its worker processes are
/// gone afterwards.
#[test]
fn sigterm_exits_0_and_stops_the_workers() {
    let mut b = BrokerProcess::start(&TestConfig::new().echo_workers(2, 3).render());
    soak::assert_serves(&b.url("/soap"), 1);
    let workers = b.wait_for_workers(2, Duration::from_secs(10));
    let status = b.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM must end the broker with 0 ({status}); stderr:\n{}",
        b.stderr_text()
    );
    let left = proc::wait_gone(&workers, Duration::from_secs(10));
    assert!(
        left.is_empty(),
        "workers still running after the broker stopped: {left:?}"
    );
    // Zombies of workers the broker did not reap would have been re-parented to us: reap them.
    proc::reap_orphans(&workers, Duration::ZERO);
    assert!(
        b.stdout_text().contains("listening on http://"),
        "the broker announced where it listened: {}",
        b.stdout_text()
    );
}

/// Protects start-up errors: a listen address in use exits 1 with exactly one stderr line naming
/// the address (printed once, not once by the log and again by main), before any store is opened
/// or worker started (so nothing is logged before it).
#[test]
fn a_listen_address_in_use_exits_1_with_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let addr = taken.local_addr().expect("its address").to_string();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("broker.toml");
    std::fs::write(&path, TestConfig::new().render()).expect("writing the configuration");
    let data = dir.path().join("data");
    let out = run_broker(
        &[
            "--config",
            path.to_str().expect("a UTF-8 path"),
            "--listen",
            &addr,
            "--data-dir",
            data.to_str().expect("a UTF-8 path"),
        ],
        EXIT_TIMEOUT,
    );
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {}", out.describe());
    assert!(
        lines[0].starts_with("broker: ") && lines[0].contains(&addr),
        "{}",
        out.describe()
    );
    assert!(!out.stdout.contains("listening"), "{}", out.describe());
}

/// Protects the empty configuration: `--config` with an empty file is valid, runs every default
/// with no endpoints, and the start-up output says that it serves nothing.
#[test]
fn an_empty_configuration_runs_with_no_endpoints_and_warns() {
    let mut b = BrokerProcess::start("");
    let status = b.terminate();
    assert_eq!(status.code(), Some(0), "stderr:\n{}", b.stderr_text());
    let stdout = b.stdout_text();
    assert!(stdout.contains("listening on http://"), "{stdout}");
    assert!(
        !stdout.lines().any(|l| l.starts_with("endpoint ")),
        "no endpoint is announced: {stdout}"
    );
    assert!(
        b.stderr_text().contains("no [[endpoint]]"),
        "the start-up warns that there is no endpoint: {}",
        b.stderr_text()
    );
}

/// Protects secrets in output: a password in the store URL never reaches the banner on stdout or
/// the log (it is shown as `***`). Against the private PostgreSQL, which trusts loopback and so
/// ignores the password.
#[test]
fn a_store_password_is_never_printed() {
    let db = broker_tests::postgres::fresh_database();
    let url = db
        .store_url()
        .replacen("postgres@", "postgres:pw-secret-4242@", 1);
    assert!(url.contains("pw-secret-4242"), "{url}");
    let b = broker_tests::BrokerProcess::start(
        &broker_tests::TestConfig::new().store_url(&url).render(),
    );
    let (out, err) = (b.stdout_text(), b.stderr_text());
    assert!(
        out.contains("postgres:***@"),
        "the banner names the store: {out}"
    );
    assert!(
        !out.contains("pw-secret-4242") && !err.contains("pw-secret-4242"),
        "stdout: {out}\nstderr: {err}"
    );
}
