//! Reloading the configuration of a running broker (issue 17; `broker/src/reload.rs`), end to end:
//! the broker's own configuration file rewritten, then `POST /reload`, `broker admin reload` or
//! SIGHUP. Protects: a new class starts and its service answers; a removed class drains (its open
//! dialog carries on, no new one begins, it stops once the dialog ends); changed endpoint settings
//! apply, while a new path, a changed class and other sections are reported as needing a restart;
//! a file with a mistake changes nothing; on the sqlSession dialect a changed endpoint ends its
//! sessions and an unchanged one keeps them.

use broker_tests::broker::{free_port, run_broker_with_env};
use broker_tests::http::{request, Reply};
use broker_tests::soap::{self, call11, cont, echo, expect_nonstop_fault, ECHO_NS};
use broker_tests::sql::{self, initiate, session_id, use_session};
use broker_tests::{wait, BrokerProcess, TestConfig};
use std::time::Duration;

const TOKEN: &str = "reload-admin-token-0123456789";

fn admin_section(admin: &str) -> String {
    format!("\n[admin]\nlisten = \"{admin}\"\ntoken = \"{TOKEN}\"\n")
}

fn reload(admin: &str) -> (u16, String) {
    let bearer = format!("Bearer {TOKEN}");
    let r = request(
        "POST",
        &format!("http://{admin}/reload"),
        &[("Authorization", bearer.as_str())],
        Vec::new(),
    );
    (r.status, r.text())
}

fn classes(admin: &str) -> String {
    let bearer = format!("Bearer {TOKEN}");
    request(
        "GET",
        &format!("http://{admin}/classes"),
        &[("Authorization", bearer.as_str())],
        Vec::new(),
    )
    .text()
}

fn cart() -> String {
    let mut toml = "\n[[server_class]]\nname = \"cart\"\nadapter = \"process\"\ncommand = [\"{broker_exe}\", \"sample-server\", \"cart\"]\ncontext = \"sensitive\"\nmin_workers = 1\nmax_workers = 1\n".to_string();
    for op in ["CartAdd", "CartList", "CartCheckout"] {
        toml.push_str(&format!(
            "\n[[service]]\nname = \"{op}\"\nendpoint = \"/soap\"\nserver_class = \"cart\"\n"
        ));
    }
    toml
}

/// A second echo class under `name`, serving the service `service` (the echo operation).
fn echo_class(name: &str, service: &str) -> String {
    format!(
        "\n[[server_class]]\nname = \"{name}\"\nadapter = \"process\"\ncommand = [\"{{broker_exe}}\", \"sample-server\", \"echo\"]\ncontext = \"free\"\nmin_workers = 1\nmax_workers = 1\n\n[[service]]\nname = \"{service}\"\nendpoint = \"/soap\"\nserver_class = \"{name}\"\noperation = \"Echo\"\n"
    )
}

fn echo_as(service: &str, text: &str) -> String {
    format!("<e:{service} xmlns:e=\"{ECHO_NS}\"><text>{text}</text></e:{service}>")
}

fn cart_workers(b: &BrokerProcess) -> usize {
    b.worker_pids_where(|cmd| cmd.contains("sample-server cart"))
        .len()
}

/// Protects reloading a NonStop broker: classes and services added and drained, endpoint
/// settings, what needs a restart, a refused file, `broker admin reload` and SIGHUP.
#[test]
fn a_reload_starts_new_classes_drains_removed_ones_and_says_what_needs_a_restart() {
    let admin = format!("127.0.0.1:{}", free_port());
    let base = TestConfig::new().session_timeout("30m");
    let first = base
        .clone()
        .extra(&(cart() + &admin_section(&admin)))
        .render();
    let mut b = BrokerProcess::start(&first);
    let url = b.url("/soap");
    let add = "<CartAdd><item>pear</item><qty>1</qty></CartAdd>";
    let shopper = call11(&url, &soap::begin(), add).expect_session_id();
    assert_eq!(cart_workers(&b), 1);

    // Unchanged: nothing to report.
    let (status, body) = reload(&admin);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        "{\"classes_added\":[],\"classes_draining\":[],\"endpoints_changed\":[],\"restart_needed\":[],\"services_added\":[],\"services_removed\":[],\"sessions_ended\":0}"
    );

    // cart removed, echo2 added, /soap's session timeout and echo's request timeout changed,
    // a new endpoint and a [limits] change.
    let second = base
        .clone()
        .session_timeout("45m")
        .echo_request_timeout("20s")
        .extra(&format!(
            "{}\n[[endpoint]]\npath = \"/later\"\ndialect = \"nonstop\"\n\n[limits]\nmax_body_bytes = 500000\n{}",
            echo_class("echo2", "Echo2"),
            admin_section(&admin)
        ))
        .render();
    b.write_config(&second);
    let (status, report) = reload(&admin);
    assert_eq!(status, 200, "{report}");
    let v: serde_json::Value = serde_json::from_str(&report).expect("JSON");
    assert_eq!(v["classes_added"], serde_json::json!(["echo2"]), "{report}");
    assert_eq!(
        v["classes_draining"],
        serde_json::json!(["cart"]),
        "{report}"
    );
    assert_eq!(
        v["services_added"],
        serde_json::json!(["/soap Echo2"]),
        "{report}"
    );
    assert_eq!(
        v["services_removed"],
        serde_json::json!(["/soap CartAdd", "/soap CartList", "/soap CartCheckout"]),
        "{report}"
    );
    assert_eq!(
        v["endpoints_changed"],
        serde_json::json!(["/soap"]),
        "{report}"
    );
    let restart: Vec<&str> = v["restart_needed"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    for expected in ["[limits]", "server_class \"echo\"", "endpoint \"/later\""] {
        assert!(
            restart.iter().any(|r| r.starts_with(expected)),
            "{expected} in {restart:?}"
        );
    }
    assert_eq!(restart.len(), 3, "{restart:?}");

    // The new class answers; a new session gets the new timeout.
    call11(&url, "", &echo_as("Echo2", "new class")).expect_echo("new class");
    let fresh = soap::begin_session(&url);
    let (_, shown) = {
        let bearer = format!("Bearer {TOKEN}");
        let r = request(
            "GET",
            &format!("http://{admin}/sessions/{fresh}"),
            &[("Authorization", bearer.as_str())],
            Vec::new(),
        );
        (r.status, r.text())
    };
    assert!(shown.contains("\"idle_timeout_seconds\":2700"), "{shown}");

    // The drained class: the open dialog carries on, a new one is an unknown service.
    let r = call11(&url, &cont(&shopper), "<CartList/>");
    assert!(
        r.fault().is_none() && r.text.contains("pear"),
        "the dialog lives on: {}",
        r.describe()
    );
    let refused = call11(&url, &soap::begin(), add);
    expect_nonstop_fault(&refused, "SOAP-ENV:Client", -215);
    assert!(
        classes(&admin).contains("\"draining\":true"),
        "{}",
        classes(&admin)
    );

    // Adding it back while it drains is refused, and changes nothing.
    b.write_config(&(second.clone() + &cart()));
    let (status, body) = reload(&admin);
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("cart\\\" is still draining"), "{body}");
    b.write_config(&second);

    let r = call11(&url, &cont(&shopper), "<CartCheckout/>");
    assert!(r.fault().is_none(), "{}", r.describe());
    let stopped = wait::poll(Duration::from_secs(10), || {
        (cart_workers(&b) == 0 && !classes(&admin).contains("\"name\":\"cart\"")).then_some(())
    });
    assert!(stopped.is_some(), "cart did not stop: {}", classes(&admin));

    // A file with a mistake: refused, naming the key; the broker serves on unchanged.
    b.write_config(&second.replace(
        "max_workers = 1\n\n[[service]]",
        "max_workers = 0\n\n[[service]]",
    ));
    let (status, body) = reload(&admin);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("server_class[1].max_workers"), "{body}");
    assert!(body.contains("nothing changed"), "{body}");
    call11(&url, "", &echo_as("Echo2", "still")).expect_echo("still");

    // SIGHUP reloads too; `broker admin reload` prints what it did.
    b.write_config(&(second.clone() + &echo_class("echo3", "Echo3")));
    // SAFETY: a signal to the broker child this test started.
    unsafe { libc::kill(b.pid() as i32, libc::SIGHUP) };
    let answered = wait::poll(Duration::from_secs(10), || {
        call11(&url, "", &echo_as("Echo3", "hup"))
            .fault()
            .is_none()
            .then_some(())
    });
    assert!(
        answered.is_some(),
        "SIGHUP did not add echo3: {}",
        b.stderr_text()
    );
    let cli = run_broker_with_env(
        &[
            "admin",
            "--url",
            &format!("http://{admin}"),
            "--token",
            TOKEN,
            "reload",
        ],
        &[],
        Duration::from_secs(30),
    );
    assert_eq!(cli.code(), Some(0), "{}", cli.describe());
    assert!(
        cli.stdout.starts_with("configuration reloaded\n"),
        "{}",
        cli.stdout
    );
    assert!(
        cli.stdout.contains("needs a restart: [limits]"),
        "{}",
        cli.stdout
    );
    call11(&url, &cont(&fresh), &echo("after all that")).expect_echo("after all that");
    let status = b.terminate();
    assert_eq!(status.code(), Some(0), "{}", b.stderr_text());
}

fn sql_call(url: &str, header: &str) -> Reply {
    sql::post(
        url,
        Some("ann:ann-pw"),
        soap::Version::V11,
        header,
        &sql::batch("SELECT 1", &[]),
    )
}

/// Protects sqlSession's rule: a reload that leaves an endpoint as it was keeps its sessions;
/// one that changes it ends the sessions begun before (their next use is the session fault),
/// and new sessions begin at once.
#[test]
fn a_changed_sqlsession_endpoint_ends_its_sessions() {
    let admin = format!("127.0.0.1:{}", free_port());
    let users: Vec<String> = sql::USERS.iter().map(|u| u.to_string()).collect();
    let config = |timeout: &str| {
        sql::config(&users, "sqlite:{data_dir}/test.db", timeout, 2, "") + &admin_section(&admin)
    };
    let b = BrokerProcess::start(&config("60s"));
    let url = b.url("/sql");
    let id = session_id(&sql_call(&url, &initiate(None)));

    let (status, body) = reload(&admin);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"sessions_ended\":0"), "{body}");
    let r = sql_call(&url, &use_session(&id));
    assert_eq!(
        r.status,
        200,
        "an unchanged endpoint keeps its sessions: {}",
        r.describe()
    );

    b.write_config(&config("120s"));
    let (status, body) = reload(&admin);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"endpoints_changed\":[\"/sql\"]"), "{body}");
    assert!(body.contains("\"sessions_ended\":1"), "{body}");
    let r = sql_call(&url, &use_session(&id));
    assert_eq!(r.status, 500, "{}", r.describe());
    assert!(r.text().contains("terminate=\"true\""), "{}", r.describe());
    let again = sql_call(&url, &initiate(None));
    assert_eq!(again.status, 200, "{}", again.describe());
    assert_ne!(session_id(&again), id);
}
