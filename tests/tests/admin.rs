//! The admin listener (issue 17), against a real broker: the token is required; `GET /metrics`
//! follows what the broker did (requests by outcome, with NonStop's fault code; sessions begun and
//! ended; a server class's workers and restarts after a `kill -9`) and no session ID reaches it;
//! one session is shown and ended, expired ones purged, the registry listed.

use broker_tests::broker::free_port;
use broker_tests::http::{self, request};
use broker_tests::soap::{self, call11, cont, echo, end};
use broker_tests::{proc, wait, BrokerProcess, TestConfig};
use std::time::Duration;

const TOKEN: &str = "metrics-test-token-0123456789";

fn start() -> (BrokerProcess, String) {
    let admin = format!("127.0.0.1:{}", free_port());
    let b = BrokerProcess::start(
        &TestConfig::new()
            .extra(&format!(
                "[admin]\nlisten = \"{admin}\"\ntoken = \"{TOKEN}\"\n"
            ))
            .render(),
    );
    (b, format!("http://{admin}"))
}

fn scrape(admin: &str) -> String {
    let r = http::get_with_bearer(&format!("{admin}/metrics"), TOKEN);
    assert_eq!(r.status, 200, "{}", r.describe());
    r.text()
}

/// The value of the series `name{labels}` (labels written as the exposition writes them).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Protects the admin token: no token, a wrong one, or Basic credentials get 401 with a Bearer
/// challenge; the public port serves no /metrics and the admin port no SOAP.
#[test]
fn metrics_need_the_admin_token_and_live_on_the_admin_listener() {
    let (b, admin) = start();
    let url = format!("{admin}/metrics");
    let r = http::get(&url);
    assert_eq!(r.status, 401, "{}", r.describe());
    assert!(r
        .header("www-authenticate")
        .is_some_and(|v| v.starts_with("Bearer")));
    for wrong in [
        "Bearer not-the-token-at-all-000",
        "Basic c2FtcGxlOnNhbXBsZQ==",
    ] {
        let r = request("GET", &url, &[("Authorization", wrong)], Vec::new());
        assert_eq!(r.status, 401, "{wrong}: {}", r.describe());
    }
    assert!(
        !b.stderr_text().contains("not-the-token-at-all"),
        "a token reached the log"
    );
    assert_eq!(
        http::get(&b.url("/metrics")).status,
        404,
        "the public port has no /metrics"
    );
    let r = http::post(
        &format!("{admin}/soap"),
        Some("text/xml"),
        &[],
        soap::envelope(soap::Version::V11, "", &echo("x")),
    );
    assert_eq!(
        r.status,
        404,
        "the admin port speaks no SOAP: {}",
        r.describe()
    );
}

/// Protects what the figures say: four requests of one session counted `ok`, a continue of an
/// unknown session counted under NonStop's -1001, one session begun and ended, the echo class's
/// workers, and a restart after its worker is killed; the session ID is in no series.
#[test]
fn the_figures_follow_what_the_broker_did() {
    let (b, admin) = start();
    let ok = "broker_requests_total{endpoint=\"/soap\",dialect=\"nonstop\",outcome=\"ok\"}";
    let before = scrape(&admin);
    assert_eq!(value(&before, ok), Some(0.0), "{before}");
    assert!(before.contains("# TYPE broker_request_duration_seconds histogram"));

    let url = b.url("/soap");
    let id = soap::begin_session(&url);
    soap::echo_in_session(&url, &id, "one");
    soap::echo_in_session(&url, &id, "two");
    let open = scrape(&admin);
    assert_eq!(
        value(
            &open,
            "broker_sessions_live{endpoint=\"/soap\",dialect=\"nonstop\"}"
        ),
        Some(1.0),
        "{open}"
    );
    call11(&url, &end(&id), "").expect_no_session();
    let r = call11(&url, &cont(&id), &echo("gone"));
    r.expect_fault();

    let text = scrape(&admin);
    assert_eq!(value(&text, ok), Some(4.0), "{text}");
    assert_eq!(
        value(
            &text,
            "broker_requests_total{endpoint=\"/soap\",dialect=\"nonstop\",outcome=\"-1001\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "broker_sessions_begun_total{endpoint=\"/soap\",dialect=\"nonstop\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "broker_sessions_ended_total{endpoint=\"/soap\",dialect=\"nonstop\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "broker_request_duration_seconds_count{endpoint=\"/soap\",dialect=\"nonstop\"}"
        ),
        Some(5.0)
    );
    assert!(value(&text, "broker_class_workers{class=\"echo\"}").is_some_and(|n| n >= 1.0));
    assert!(!text.contains(&id), "a session ID in the metrics");
    // The store's calls: one create, a turn per continue and end (four requests found a record).
    assert_eq!(
        value(
            &text,
            "broker_store_operation_duration_seconds_count{op=\"create\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        value(&text, "broker_turn_wait_seconds_count").is_some_and(|n| n >= 4.0),
        "{text}"
    );
    // The session ended: none live on /soap.
    assert_eq!(
        value(
            &text,
            "broker_sessions_live{endpoint=\"/soap\",dialect=\"nonstop\"}"
        ),
        Some(0.0),
        "{text}"
    );

    // A worker killed: the class starts another and counts the restart.
    let workers = b.worker_pids();
    let victim = *workers.iter().next().expect("an echo worker");
    proc::kill9(victim);
    let restarted = wait::poll(Duration::from_secs(10), || {
        let t = scrape(&admin);
        (value(&t, "broker_class_worker_restarts_total{class=\"echo\"}") == Some(1.0)
            && value(&t, "broker_class_workers{class=\"echo\"}").is_some_and(|n| n >= 1.0))
        .then_some(t)
    });
    assert!(
        restarted.is_some(),
        "no restart counted: {}",
        scrape(&admin)
    );
}

/// Protects the monitoring examples in `deploy/monitoring/` from drifting: every `broker_…`
/// series the alert rules and the Grafana dashboard use is one a broker exposes.
#[test]
fn the_dashboard_and_alerts_use_series_the_broker_exposes() {
    let (b, admin) = start();
    // Some traffic, so that the fault and transaction families have series.
    let url = b.url("/soap");
    call11(&url, &cont("no-such-session"), &echo("x")).expect_fault();
    let text = scrape(&admin);
    let exposed: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("# TYPE "))
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    let root = broker_tests::broker::workspace_root().join("deploy/monitoring");
    let mut checked = 0;
    for file in ["alerts.yml", "dashboard.json"] {
        let source = std::fs::read_to_string(root.join(file)).expect("the monitoring example");
        let mut rest = source.as_str();
        while let Some(at) = rest.find("broker_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            let family = ["_total", "_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            assert!(
                exposed.contains(family),
                "{file} uses {name}, which the broker does not expose; it exposes {exposed:?}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} series found in the examples");
    drop(b);
}

fn admin_call(admin: &str, method: &str, path: &str) -> (u16, String) {
    let bearer = format!("Bearer {TOKEN}");
    let r = request(
        method,
        &format!("{admin}{path}"),
        &[("Authorization", bearer.as_str())],
        Vec::new(),
    );
    (r.status, r.text())
}

/// Protects showing and ending one session: the record as JSON (its endpoint, dialect, expiry);
/// ending it makes its next request the dialect's unknown-session fault (-1001); an unknown or
/// ended ID is 404, and the error text does not echo it; a malformed ID is 400.
#[test]
fn an_operator_shows_and_ends_a_session() {
    let (b, admin) = start();
    let url = b.url("/soap");
    let id = soap::begin_session(&url);
    let (status, body) = admin_call(&admin, "GET", &format!("/sessions/{id}"));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("\"id\":\"{id}\"")), "{body}");
    assert!(body.contains("\"endpoint\":\"/soap\""), "{body}");
    assert!(body.contains("\"dialect\":\"nonstop\""), "{body}");
    assert!(body.contains("\"expired\":false"), "{body}");
    assert!(body.contains("\"transaction\":null"), "{body}");

    let (status, body) = admin_call(&admin, "DELETE", &format!("/sessions/{id}"));
    assert_eq!((status, body.as_str()), (200, "{\"ended\":true}"));
    let r = call11(&url, &cont(&id), &echo("after"));
    soap::expect_header_fault(&r, -1001);
    for method in ["GET", "DELETE"] {
        let (status, body) = admin_call(&admin, method, &format!("/sessions/{id}"));
        assert_eq!(status, 404, "{method}: {body}");
        assert!(!body.contains(&id), "the error echoes the ID: {body}");
    }
    assert_eq!(admin_call(&admin, "GET", "/sessions/not%20an%20id").0, 400);
    let (status, _) = admin_call(&admin, "GET", "/brokers");
    assert_eq!(status, 200);
    assert!(
        !b.stderr_text().contains(&id),
        "a whole session ID in the log"
    );
}

/// Protects purging: sessions whose idle timeout passed are deleted at once (not at the sweeper's
/// next pass), live ones stay; the registry lists this broker with its address.
#[test]
fn an_operator_purges_expired_sessions_and_lists_the_brokers() {
    let admin = format!("127.0.0.1:{}", free_port());
    let b = BrokerProcess::start(
        &TestConfig::new()
            .session_timeout("1s")
            .sweep_interval("1h")
            .extra(&format!(
                "[admin]\nlisten = \"{admin}\"\ntoken = \"{TOKEN}\"\n"
            ))
            .render(),
    );
    let admin = format!("http://{admin}");
    let url = b.url("/soap");
    let old: Vec<String> = (0..3).map(|_| soap::begin_session(&url)).collect();
    std::thread::sleep(Duration::from_millis(1300));
    let fresh = soap::begin_session(&url);
    let (status, body) = admin_call(&admin, "POST", "/sessions/purge");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"deleted\":3"), "{body}");
    for id in &old {
        assert_eq!(admin_call(&admin, "GET", &format!("/sessions/{id}")).0, 404);
    }
    assert_eq!(
        admin_call(&admin, "GET", &format!("/sessions/{fresh}")).0,
        200
    );
    let text = scrape(&admin);
    assert_eq!(
        value(&text, "broker_sessions_expired_total"),
        Some(3.0),
        "{text}"
    );
    let (status, body) = admin_call(&admin, "GET", "/brokers");
    assert_eq!(status, 200);
    assert!(body.contains("\"id\":\"test\""), "{body}");
    assert!(body.contains(&b.url("")), "{body}");
}

/// `broker admin --url URL --token TOKEN args…`, run to completion.
fn cli(admin: &str, token: &str, args: &[&str]) -> broker_tests::broker::Finished {
    let mut all = vec!["admin", "--url", admin, "--token", token];
    all.extend_from_slice(args);
    broker_tests::broker::run_broker(&all, Duration::from_secs(30))
}

/// Protects the `broker admin` command: a session shown as a table and as JSON, ended, then
/// unknown; the brokers table; metrics as served; and each failure as one line and status 1 (a
/// refused token, a broker that is down, an unknown session), never echoing the token.
#[test]
fn the_admin_command_shows_ends_and_fails_clearly() {
    let (b, admin) = start();
    let url = b.url("/soap");
    let id = soap::begin_session(&url);

    let shown = cli(&admin, TOKEN, &["session", "show", &id]);
    assert_eq!(shown.code(), Some(0), "{}", shown.describe());
    assert!(
        shown
            .stdout
            .lines()
            .any(|l| l.starts_with("endpoint") && l.ends_with("/soap")),
        "{}",
        shown.stdout
    );
    assert!(
        shown
            .stdout
            .lines()
            .any(|l| l.starts_with("dialog") && l.ends_with('-')),
        "{}",
        shown.stdout
    );
    let json = cli(&admin, TOKEN, &["--json", "session", "show", &id]);
    assert!(
        json.stdout.starts_with('{') && json.stdout.contains("\"dialect\":\"nonstop\""),
        "{}",
        json.stdout
    );

    let brokers = cli(&admin, TOKEN, &["brokers"]);
    assert_eq!(brokers.code(), Some(0), "{}", brokers.describe());
    assert!(brokers.stdout.starts_with("ID "), "{}", brokers.stdout);
    assert!(
        brokers
            .stdout
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("test ")),
        "{}",
        brokers.stdout
    );
    let metrics = cli(&admin, TOKEN, &["metrics"]);
    assert!(
        metrics
            .stdout
            .contains("broker_sessions_begun_total{endpoint=\"/soap\",dialect=\"nonstop\"} 1"),
        "{}",
        metrics.stdout
    );

    let ended = cli(&admin, TOKEN, &["session", "end", &id]);
    assert_eq!(
        (ended.code(), ended.stdout.as_str()),
        (Some(0), "session ended\n"),
        "{}",
        ended.describe()
    );
    soap::expect_header_fault(&call11(&url, &cont(&id), &echo("x")), -1001);

    let unknown = cli(&admin, TOKEN, &["session", "show", &id]);
    assert_eq!(unknown.code(), Some(1));
    assert_eq!(unknown.stderr, "broker admin: no such session (HTTP 404)\n");
    let refused = cli(&admin, "wrong-token-wrong-token-000", &["brokers"]);
    assert_eq!(refused.code(), Some(1));
    assert_eq!(
        refused.stderr,
        format!("broker admin: {admin} refused the admin token (HTTP 401)\n")
    );
    assert!(!refused.stderr.contains("wrong-token"));
    let down = format!("http://127.0.0.1:{}", free_port());
    let unreachable = cli(&down, TOKEN, &["brokers"]);
    assert_eq!(unreachable.code(), Some(1));
    assert!(
        unreachable
            .stderr
            .starts_with(&format!("broker admin: cannot reach {down}")),
        "{}",
        unreachable.stderr
    );
    assert_eq!(
        unreachable.stderr.lines().count(),
        1,
        "{}",
        unreachable.stderr
    );
}

/// Protects listing: every session once, in ID order, over pages of `limit` linked by `next`;
/// filters by endpoint, dialect and idle time; the same through `broker admin sessions list`.
#[test]
fn an_operator_lists_sessions_page_by_page_with_filters() {
    let (b, admin) = start();
    let url = b.url("/soap");
    let mut ids: Vec<String> = (0..5).map(|_| soap::begin_session(&url)).collect();
    ids.sort();
    let listed = |query: &str| -> (Vec<String>, Option<String>) {
        let (status, body) = admin_call(&admin, "GET", &format!("/sessions?{query}"));
        assert_eq!(status, 200, "{query}: {body}");
        let page: Vec<String> = body
            .split("\"id\":\"")
            .skip(1)
            .filter_map(|s| s.split('"').next().map(str::to_string))
            .filter(|s| s.len() >= 32)
            .collect();
        let next = body
            .split("\"next\":\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .map(str::to_string);
        (page, next)
    };
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..10 {
        let query = match &after {
            Some(a) => format!("limit=2&after={a}"),
            None => "limit=2".to_string(),
        };
        let (page, next) = listed(&query);
        assert!(page.len() <= 2);
        seen.extend(page);
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every session once, in ID order");
    assert_eq!(listed("endpoint=/dsml").0.len(), 0);
    assert_eq!(listed("dialect=nonstop&limit=100").0, ids);
    assert_eq!(listed("idle_longer_than=1h").0.len(), 0);
    assert_eq!(
        admin_call(&admin, "GET", "/sessions?idle_longer_than=soon").0,
        400
    );
    assert_eq!(admin_call(&admin, "GET", "/sessions?colour=red").0, 400);

    let table = cli(&admin, TOKEN, &["sessions", "list", "--limit", "3"]);
    assert_eq!(table.code(), Some(0), "{}", table.describe());
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(lines[0].starts_with("ID "), "{}", table.stdout);
    assert!(
        lines[1].starts_with(&ids[0]) && lines[3].starts_with(&ids[2]),
        "{}",
        table.stdout
    );
    assert_eq!(
        lines[4],
        format!("next page: --after {}", ids[2]),
        "{}",
        table.stdout
    );
    let rest = cli(
        &admin,
        TOKEN,
        &[
            "sessions",
            "list",
            "--after",
            &ids[2],
            "--endpoint",
            "/soap",
        ],
    );
    assert_eq!(rest.stdout.lines().count(), 3, "{}", rest.stdout);
}

/// Protects the server-class view: each class with its workers, the echo worker's pid the one
/// the broker started, its served count moving with requests; the same as a table.
#[test]
fn an_operator_sees_the_server_classes_and_their_workers() {
    let (b, admin) = start();
    soap::echo_in_session(&b.url("/soap"), &soap::begin_session(&b.url("/soap")), "x");
    let (status, body) = admin_call(&admin, "GET", "/classes");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"name\":\"echo\"") && body.contains("\"adapter\":\"process\""),
        "{body}"
    );
    let pid = *b.worker_pids().iter().next().expect("an echo worker");
    assert!(body.contains(&format!("\"pid\":{pid}")), "{pid} in {body}");
    let served = |body: &str| -> u64 {
        body.split("\"served\":")
            .nth(1)
            .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no served count in {body}"))
    };
    let before = served(&body);
    for text in ["a", "b", "c"] {
        soap::echo_in_session(&b.url("/soap"), &soap::begin_session(&b.url("/soap")), text);
    }
    let after = served(&admin_call(&admin, "GET", "/classes").1);
    assert_eq!(after, before + 3, "the echo worker served three more");
    let table = cli(&admin, TOKEN, &["classes"]);
    assert_eq!(table.code(), Some(0), "{}", table.describe());
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with("echo ") && l.contains("process")),
        "{}",
        table.stdout
    );
    assert!(
        table.stdout.contains(&format!("pid {pid}")),
        "{}",
        table.stdout
    );
}

/// Protects draining: `/healthz` says `draining` at once; a new session is refused with the
/// retriable -352 and so is a new dialog, while a session's open dialog and context-free calls
/// carry on; when the dialog ends, the broker exits by itself with status 0.
#[test]
fn a_drained_broker_finishes_what_it_holds_then_exits() {
    let admin = format!("127.0.0.1:{}", free_port());
    let cart = "\n[[server_class]]\nname = \"cart\"\nadapter = \"process\"\ncommand = [\"{broker_exe}\", \"sample-server\", \"cart\"]\ncontext = \"sensitive\"\nmin_workers = 1\nmax_workers = 2\n";
    let services: String = ["CartAdd", "CartList", "CartCheckout"]
        .iter()
        .map(|op| {
            format!(
                "\n[[service]]\nname = \"{op}\"\nendpoint = \"/soap\"\nserver_class = \"cart\"\n"
            )
        })
        .collect();
    let mut b = BrokerProcess::start(
        &TestConfig::new()
            .extra(&format!(
                "{cart}{services}\n[admin]\nlisten = \"{admin}\"\ntoken = \"{TOKEN}\"\n"
            ))
            .render(),
    );
    let admin = format!("http://{admin}");
    let url = b.url("/soap");
    let add = "<CartAdd><item>pear</item><qty>1</qty></CartAdd>";
    let shopper = call11(&url, &soap::begin(), add).expect_session_id();
    let plain = soap::begin_session(&url);

    let (status, body) = admin_call(&admin, "POST", "/drain");
    assert_eq!(status, 202, "{body}");
    assert!(body.contains("\"dialogs\":1"), "{body}");
    let health = http::get(&b.url("/healthz"));
    assert_eq!((health.status, health.text().as_str()), (503, "draining\n"));

    let refused = call11(&url, &soap::begin(), &echo("new"));
    let f = soap::expect_nonstop_fault(&refused, "SOAP-ENV:Server", -352);
    assert!(f.detail_string.unwrap_or_default().contains("draining"));
    let r = call11(&url, &cont(&plain), "<CartList/>");
    soap::expect_nonstop_fault(&r, "SOAP-ENV:Server", -352);
    assert_eq!(r.expect_session_id(), plain, "the session lives on");
    soap::echo_in_session(&url, &plain, "still served");
    // Nor a transaction in a session that holds nothing here.
    let txn = soap::session(&format!(
        "SessionID=\"{plain}\" BeginNewTransaction=\"yes\""
    ));
    soap::expect_nonstop_fault(&call11(&url, &txn, ""), "SOAP-ENV:Server", -352);
    let r = call11(&url, &cont(&shopper), "<CartList/>");
    assert!(
        r.fault().is_none(),
        "the open dialog carries on: {}",
        r.describe()
    );
    assert!(b.is_running(), "a dialog is still held");

    let r = call11(&url, &cont(&shopper), "<CartCheckout/>");
    assert!(r.fault().is_none(), "{}", r.describe());
    let exited = wait::poll(Duration::from_secs(15), || (!b.is_running()).then_some(()));
    assert!(
        exited.is_some(),
        "the drained broker did not exit: {}",
        b.stderr_text()
    );
    let status = b.terminate();
    assert_eq!(status.code(), Some(0), "{}", b.stderr_text());
}

/// Protects `admin.drain_timeout`: a dialog nobody ends does not keep a drained broker alive past
/// it; the broker exits 0 and says what it left.
#[test]
fn a_drain_ends_at_its_timeout() {
    let admin = format!("127.0.0.1:{}", free_port());
    let cart = "\n[[server_class]]\nname = \"cart\"\nadapter = \"process\"\ncommand = [\"{broker_exe}\", \"sample-server\", \"cart\"]\ncontext = \"sensitive\"\n\n[[service]]\nname = \"CartAdd\"\nendpoint = \"/soap\"\nserver_class = \"cart\"\n";
    let mut b = BrokerProcess::start(
        &TestConfig::new()
            .extra(&format!(
                "{cart}\n[admin]\nlisten = \"{admin}\"\ntoken = \"{TOKEN}\"\ndrain_timeout = \"1s\"\n"
            ))
            .render(),
    );
    let admin = format!("http://{admin}");
    let add = "<CartAdd><item>fig</item><qty>1</qty></CartAdd>";
    call11(&b.url("/soap"), &soap::begin(), add).expect_session_id();
    assert_eq!(admin_call(&admin, "POST", "/drain").0, 202);
    let exited = wait::poll(Duration::from_secs(10), || (!b.is_running()).then_some(()));
    assert!(exited.is_some(), "still running: {}", b.stderr_text());
    assert_eq!(b.terminate().code(), Some(0));
    assert!(
        b.stderr_text().contains("drain timeout"),
        "{}",
        b.stderr_text()
    );
}

/// Protects HTTP Basic on the admin API: a user named in `admin.principals` is let in with their
/// `[auth]` password, another user of the same credentials (or a wrong password) gets 401 with
/// both challenges, and no password reaches the log.
#[test]
fn an_admin_principal_signs_in_with_basic() {
    use base64::Engine as _;
    let admin = format!("127.0.0.1:{}", free_port());
    let users = broker_tests::sql::USERS
        .iter()
        .map(|u| format!("{u:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let b = BrokerProcess::start(
        &TestConfig::new()
            .extra(&format!(
                "[auth]\nusers = [{users}]\n\n[admin]\nlisten = \"{admin}\"\ntoken = \"{TOKEN}\"\nprincipals = [\"ann\"]\n"
            ))
            .render(),
    );
    let url = format!("http://{admin}/brokers");
    let basic = |user: &str, password: &str| {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {encoded}")
    };
    for _ in 0..2 {
        // Twice: the second is answered from the verified-credentials cache.
        let r = request(
            "GET",
            &url,
            &[("Authorization", &basic("ann", "ann-pw"))],
            Vec::new(),
        );
        assert_eq!(r.status, 200, "{}", r.describe());
        assert!(r.text().contains("\"id\""), "{}", r.text());
    }
    for (user, password) in [("bob", "bob-pw"), ("ann", "not-anns-pw"), ("eve", "x")] {
        let r = request(
            "GET",
            &url,
            &[("Authorization", &basic(user, password))],
            Vec::new(),
        );
        assert_eq!(r.status, 401, "{user}: {}", r.describe());
        let challenges: Vec<&str> = r
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("www-authenticate"))
            .map(|(_, v)| v.as_str())
            .collect();
        assert!(
            challenges.iter().any(|c| c.starts_with("Basic")),
            "{challenges:?}"
        );
    }
    let log = b.stderr_text();
    assert!(log.contains("not an admin principal"), "{log}");
    assert!(
        !log.contains("not-anns-pw") && !log.contains("bob-pw"),
        "a password in the log"
    );
}

/// Protects the store's error figures: with the `cookie-store` daemon killed, a request's store
/// calls fail and `broker_store_errors_total{error="unavailable"}` counts them (the kind of error
/// as the label, never its text); the call latencies are observed too.
#[test]
fn a_store_that_does_not_answer_is_counted_in_the_store_errors() {
    let mut daemon = broker_tests::daemon::Daemon::start();
    let admin = format!("127.0.0.1:{}", free_port());
    let b = BrokerProcess::start(
        &TestConfig::new()
            .store_url(&daemon.url())
            .extra(&format!(
                "[admin]\nlisten = \"{admin}\"\ntoken = \"{TOKEN}\"\n"
            ))
            .render(),
    );
    let admin = format!("http://{admin}");
    let url = b.url("/soap");
    let id = soap::begin_session(&url);
    let unavailable = |text: &str| -> f64 {
        text.lines()
            .filter(|l| {
                l.starts_with("broker_store_errors_total{") && l.contains("error=\"unavailable\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let before = scrape(&admin);
    assert_eq!(unavailable(&before), 0.0, "{before}");
    assert!(
        before.contains("broker_store_operation_duration_seconds_count{op=\"create\"} 1"),
        "the Begin's create was timed: {before}"
    );
    daemon.kill9();
    let r = call11(&url, &cont(&id), &echo("no store"));
    r.expect_fault();
    let after = scrape(&admin);
    assert!(unavailable(&after) >= 1.0, "{after}");
    assert!(!after.contains(&id), "a session ID in the metrics");
}
