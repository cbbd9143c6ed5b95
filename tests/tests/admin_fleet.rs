//! The admin API and `broker admin` against a fleet (issue 17): three real brokers sharing a real
//! `cookie-store serve` daemon, each with its own admin listener. Every call and every command is
//! made at one broker about work another broker did: the registry lists all three; sessions begun
//! anywhere are listed, shown and ended anywhere (the next request, at a third broker, gets
//! -1001); live sessions are the fleet's figure on every broker; a class's workers are resized
//! and restarted on one broker only; an admin principal signs in with `--user`; a reload at one
//! broker (its own file) changes that broker only; a drained broker exits and leaves the
//! registry while its sessions carry on at the others.

use broker_tests::broker::{free_port, run_broker_with_env, Finished};
use broker_tests::daemon::Daemon;
use broker_tests::http::request;
use broker_tests::soap::{self, call11, cont, echo};
use broker_tests::{wait, BrokerProcess, TestConfig};
use std::time::Duration;

const TOKEN: &str = "fleet-admin-token-0123456789";
const SECRET: &str = "fleet-cluster-secret-0123456789";

struct Fleet {
    brokers: Vec<BrokerProcess>,
    /// Each broker's configuration as started.
    configs: Vec<String>,
    /// Each broker's admin listener, `http://…`.
    admins: Vec<String>,
    _daemon: Daemon,
    /// The http class's backend, kept alive for the test.
    _backend: broker_tests::http::Received,
}

fn start() -> Fleet {
    let daemon = Daemon::start();
    let users = broker_tests::sql::USERS
        .iter()
        .map(|u| format!("{u:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let (backend, received) = broker_tests::http::backend("text/xml", b"<ok/>".to_vec());
    let mut admins = Vec::new();
    let mut configs = Vec::new();
    let brokers = (1..=3)
        .map(|i| {
            let admin = format!("127.0.0.1:{}", free_port());
            admins.push(format!("http://{admin}"));
            let config = TestConfig::new()
                    .broker_id(&format!("b{i}"))
                    .store_url(&daemon.url())
                    .cluster(&format!(
                        "secret = {SECRET:?}\nheartbeat = \"200ms\"\nlease = \"1s\"\n"
                    ))
                    .echo_workers(1, 3)
                    .extra(&format!(
                        "\n[[server_class]]\nname = \"web\"\nadapter = \"http\"\nurls = [\"{backend}\"]\n\n[auth]\nusers = [{users}]\n\n[admin]\nlisten = \"{admin}\"\ntoken = \"{TOKEN}\"\nprincipals = [\"ann\"]\n"
                    ))
                    .render();
            configs.push(config.clone());
            BrokerProcess::start(&config)
        })
        .collect();
    Fleet {
        brokers,
        configs,
        admins,
        _daemon: daemon,
        _backend: received,
    }
}

/// One admin API call with the token: (status, body).
fn api(admin: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let bearer = format!("Bearer {TOKEN}");
    let r = request(
        method,
        &format!("{admin}{path}"),
        &[
            ("Authorization", bearer.as_str()),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes().to_vec(),
    );
    (r.status, r.text())
}

/// `broker admin --url ADMIN --token TOKEN args…`.
fn cli(admin: &str, args: &[&str]) -> Finished {
    let mut all = vec!["admin", "--url", admin, "--token", TOKEN];
    all.extend_from_slice(args);
    run_broker_with_env(&all, &[], Duration::from_secs(30))
}

fn expect_ok(f: &Finished) -> &str {
    assert_eq!(f.code(), Some(0), "{}", f.describe());
    &f.stdout
}

/// The echo workers a broker runs now (its `sample-server echo` children).
fn echo_pids(b: &BrokerProcess) -> Vec<u32> {
    b.worker_pids_where(|cmd| cmd.contains("sample-server echo"))
}

fn wait_for_echo_workers(b: &BrokerProcess, n: usize) -> Vec<u32> {
    wait::poll(Duration::from_secs(15), || {
        let pids = echo_pids(b);
        (pids.len() == n).then_some(pids)
    })
    .unwrap_or_else(|| panic!("not {n} echo workers: {:?}", echo_pids(b)))
}

/// Protects every admin call and command across the fleet (see the module docs).
#[test]
fn every_admin_call_and_command_works_across_three_brokers() {
    let mut f = start();
    let urls: Vec<String> = f.brokers.iter().map(|b| b.url("/soap")).collect();
    let url = |i: usize| urls[i].clone();

    // The registry: every broker sees all three.
    for admin in &f.admins {
        let all = wait::poll(Duration::from_secs(10), || {
            let (status, body) = api(admin, "GET", "/brokers", "");
            (status == 200
                && ["b1", "b2", "b3"]
                    .iter()
                    .all(|id| body.contains(&format!("\"id\":\"{id}\""))))
            .then_some(())
        });
        assert!(all.is_some(), "{admin} does not list all three brokers");
    }
    let table = cli(&f.admins[1], &["brokers"]);
    let rows: Vec<&str> = expect_ok(&table).lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{}", table.stdout);

    // Sessions begun at each broker, listed at one.
    let ids: Vec<String> = (0..3).map(|i| soap::begin_session(&url(i))).collect();
    let (status, page) = api(&f.admins[2], "GET", "/sessions?endpoint=/soap", "");
    assert_eq!(status, 200, "{page}");
    for id in &ids {
        assert!(page.contains(id.as_str()), "{id} not listed at b3: {page}");
    }
    let listed = cli(&f.admins[0], &["sessions", "list", "--dialect", "nonstop"]);
    for id in &ids {
        assert!(
            expect_ok(&listed).contains(id.as_str()),
            "{}",
            listed.stdout
        );
    }

    // Shown and ended at a broker that did not begin them; the next request, elsewhere, is -1001.
    let (status, shown) = api(&f.admins[1], "GET", &format!("/sessions/{}", ids[0]), "");
    assert_eq!(status, 200, "{shown}");
    assert!(shown.contains("\"endpoint\":\"/soap\""), "{shown}");
    let table = cli(&f.admins[2], &["session", "show", &ids[1]]);
    assert!(
        expect_ok(&table)
            .lines()
            .any(|l| l.starts_with("id") && l.ends_with(ids[1].as_str())),
        "{}",
        table.stdout
    );
    let (status, body) = api(&f.admins[2], "DELETE", &format!("/sessions/{}", ids[0]), "");
    assert_eq!(status, 200, "{body}");
    soap::expect_header_fault(&call11(&url(1), &cont(&ids[0]), &echo("gone")), -1001);
    assert_eq!(
        expect_ok(&cli(&f.admins[0], &["session", "end", &ids[1]])),
        "session ended\n"
    );
    soap::expect_header_fault(&call11(&url(2), &cont(&ids[1]), &echo("gone")), -1001);

    // One session is left: every broker counts it (the figure is the shared store's).
    let live = "broker_sessions_live{endpoint=\"/soap\",dialect=\"nonstop\"} 1";
    for admin in &f.admins[..2] {
        let (status, text) = api(admin, "GET", "/metrics", "");
        assert_eq!(status, 200);
        assert!(text.lines().any(|l| l == live), "{admin}: {text}");
    }
    assert!(
        expect_ok(&cli(&f.admins[2], &["metrics"]))
            .lines()
            .any(|l| l == live),
        "the metrics command"
    );
    let (status, body) = api(&f.admins[1], "POST", "/sessions/purge", "");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"deleted\":0"),
        "nothing has expired: {body}"
    );
    assert!(
        expect_ok(&cli(&f.admins[0], &["sessions", "purge"])).starts_with("examined "),
        "the purge command"
    );

    // A class's workers change on one broker only.
    let b1_workers = wait_for_echo_workers(&f.brokers[0], 1);
    wait_for_echo_workers(&f.brokers[1], 1);
    let (status, body) = api(
        &f.admins[1],
        "POST",
        "/classes/echo/workers",
        "{\"grow\": 1}",
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"kept\":2"), "{body}");
    wait_for_echo_workers(&f.brokers[1], 2);
    let (_, classes) = api(&f.admins[1], "GET", "/classes", "");
    assert!(classes.contains("\"kept\":2"), "{classes}");
    assert_eq!(
        echo_pids(&f.brokers[0]),
        b1_workers,
        "b1's workers are its own"
    );
    let shrunk = cli(&f.admins[1], &["class", "shrink", "echo"]);
    assert_eq!(
        expect_ok(&shrunk),
        "echo keeps 1 worker on this broker (2 were live)\n"
    );
    wait_for_echo_workers(&f.brokers[1], 1);
    assert_eq!(
        expect_ok(&cli(&f.admins[0], &["class", "resize", "echo", "2"])),
        "echo keeps 2 workers on this broker (1 was live)\n"
    );
    wait_for_echo_workers(&f.brokers[0], 2);
    let grown = cli(&f.admins[2], &["class", "grow", "echo", "3"]);
    assert_eq!(grown.code(), Some(1), "{}", grown.describe());
    assert_eq!(
        grown.stderr,
        "broker admin: server class \"echo\" may have at most 3 workers (its max_workers); 4 asked (HTTP 400)\n"
    );
    for (body, status) in [
        ("{\"workers\": 1, \"grow\": 1}", 400),
        ("{\"workers\": -1}", 400),
        ("not json", 400),
        ("{\"worker\": 1}", 400),
    ] {
        let (got, text) = api(&f.admins[2], "POST", "/classes/echo/workers", body);
        assert_eq!(got, status, "{body}: {text}");
        assert!(text.contains("exactly one of"), "{body}: {text}");
    }
    let (status, body) = api(
        &f.admins[2],
        "POST",
        "/classes/nope/workers",
        "{\"workers\": 1}",
    );
    assert_eq!(status, 404, "{body}");
    assert!(
        body.contains("no server class \\\"nope\\\" here (classes: echo, web)"),
        "{body}"
    );
    let (status, body) = api(&f.admins[2], "POST", "/classes/web/restart", "");
    assert_eq!(status, 409, "an http class has no workers: {body}");
    assert!(body.contains("not supported by the http adapter"), "{body}");

    // A rolling restart on b3 replaces its worker; the class keeps serving.
    let before = wait_for_echo_workers(&f.brokers[2], 1);
    let (status, body) = api(&f.admins[2], "POST", "/classes/echo/restart", "");
    assert_eq!(status, 202, "{body}");
    let replaced = wait::poll(Duration::from_secs(15), || {
        let (_, classes) = api(&f.admins[2], "GET", "/classes", "");
        let pids = echo_pids(&f.brokers[2]);
        (classes.contains("\"done\":true") && pids.len() == 1 && pids != before).then_some(())
    });
    assert!(replaced.is_some(), "b3's echo worker was not replaced");
    soap::echo_in_session(&url(2), &ids[2], "after the restart");
    let restarted = cli(&f.admins[0], &["class", "restart", "echo"]);
    assert!(
        expect_ok(&restarted).starts_with("rolling restart of echo begun: 2 workers"),
        "{}",
        restarted.stdout
    );
    let done = wait::poll(Duration::from_secs(15), || {
        let table = cli(&f.admins[0], &["classes"]);
        table
            .stdout
            .contains("rolling restart: 2 replaced, 0 to go, done")
            .then_some(())
    });
    assert!(done.is_some(), "{}", cli(&f.admins[0], &["classes"]).stdout);

    // An admin principal signs in with --user; a wrong password is one clear line.
    let as_ann = |password: &str| {
        run_broker_with_env(
            &["admin", "--url", &f.admins[1], "--user", "ann", "classes"],
            &[("BROKER_ADMIN_PASSWORD", password)],
            Duration::from_secs(30),
        )
    };
    assert!(expect_ok(&as_ann("ann-pw")).starts_with("CLASS "));
    let refused = as_ann("not-anns-password");
    assert_eq!(refused.code(), Some(1));
    assert_eq!(
        refused.stderr,
        format!(
            "broker admin: {} refused ann's sign-in (HTTP 401): a wrong password, or not one of admin.principals\n",
            f.admins[1]
        )
    );

    // A reload at b2 adds a class and its service there only; `broker admin reload` says so.
    b_reload(&f);

    // b3 drained: it exits, leaves the registry, and its session carries on at the others.
    let drained = cli(&f.admins[2], &["drain"]);
    assert!(
        expect_ok(&drained).starts_with("draining: 0 dialogs"),
        "{}",
        drained.stdout
    );
    let exited = wait::poll(Duration::from_secs(15), || {
        (!f.brokers[2].is_running()).then_some(())
    });
    assert!(
        exited.is_some(),
        "b3 did not exit: {}",
        f.brokers[2].stderr_text()
    );
    assert_eq!(f.brokers[2].terminate().code(), Some(0));
    let gone = wait::poll(Duration::from_secs(10), || {
        let (_, body) = api(&f.admins[0], "GET", "/brokers", "");
        (!body.contains("\"id\":\"b3\"")).then_some(())
    });
    assert!(gone.is_some(), "b3 is still in the registry");
    soap::echo_in_session(&url(0), &ids[2], "at b1");
}

fn b_reload(f: &Fleet) {
    let echo2 = "\n[[server_class]]\nname = \"echo2\"\nadapter = \"process\"\ncommand = [\"{broker_exe}\", \"sample-server\", \"echo\"]\ncontext = \"free\"\n\n[[service]]\nname = \"Echo2\"\nendpoint = \"/soap\"\nserver_class = \"echo2\"\noperation = \"Echo\"\n";
    f.brokers[1].write_config(&(f.configs[1].clone() + echo2));
    let reloaded = cli(&f.admins[1], &["reload"]);
    assert!(
        expect_ok(&reloaded).contains("server classes started: echo2")
            && reloaded.stdout.contains("services added: /soap Echo2"),
        "{}",
        reloaded.stdout
    );
    let body = format!(
        "<e:Echo2 xmlns:e=\"{}\"><text>two</text></e:Echo2>",
        soap::ECHO_NS
    );
    call11(&f.brokers[1].url("/soap"), "", &body).expect_echo("two");
    soap::expect_nonstop_fault(
        &call11(&f.brokers[0].url("/soap"), "", &body),
        "SOAP-ENV:Client",
        -215,
    );
    for admin in [&f.admins[0], &f.admins[2]] {
        let (status, report) = api(admin, "POST", "/reload", "");
        assert_eq!(status, 200, "{report}");
        assert!(report.contains("\"classes_added\":[]"), "{admin}: {report}");
    }
}
