//! A real third-party SOAP client: zeep (Python) runs a NonStop session through the broker with a
//! raw Session header element, reads the SessionID from the reply header, and sees a -1001 fault
//! the way applications see it (`reference/soap_clients.md` §2.1, §2.8); and a whole sqlSession
//! session (initiate, use, terminate, the fault after) over HTTP Basic, from a WSDL in SQL
//! Server's namespaces.

use broker_tests::broker::{command, workspace_root};
use broker_tests::{wait, BrokerProcess, TestConfig};
use std::process::Stdio;
use std::time::Duration;

fn python3_has_zeep() -> Result<(), String> {
    let out = command("python3")
        .args([
            "-c",
            "import sys, zeep; print(sys.executable, zeep.__version__)",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Run a zeep client script (`tests/clients/NAME`) with its arguments, within 90 s; asserts it
/// exited 0 and returns its stdout and a report of both streams for assertion messages.
fn run_zeep_client(name: &str, args: &[&str]) -> (String, String) {
    if let Err(e) = python3_has_zeep() {
        panic!(
            "python3 cannot import zeep ({}). Run the README's test command, `bash scripts/test.sh`, which installs it.",
            e.trim()
        );
    }
    let script = workspace_root().join("tests/clients").join(name);
    let mut child = command("python3")
        .arg(&script)
        .args(args)
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting python3");
    let finished = wait::poll(Duration::from_secs(90), || {
        child.try_wait().expect("waiting for python3")
    });
    if finished.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the zeep client {name} did not finish within 90 s");
    }
    let out = child.wait_with_output().expect("the zeep client's output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let report = format!(
        "exit {:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "the zeep client must succeed: {report}"
    );
    (stdout, report)
}

/// Protects interoperability with zeep: Begin/continue/End through a WSDL-driven client with a raw
/// Session header, the SessionID readable from the reply header, and the unknown-session fault
/// surfacing as `zeep.exceptions.Fault` with code `SOAP-ENV:Client.Process` (zeep hands the raw
/// prefixed text to applications) and detailCode -1001.
#[test]
fn zeep_runs_a_session_and_sees_the_1001_fault() {
    let b = BrokerProcess::start(&TestConfig::new().render());
    let (stdout, report) = run_zeep_client("zeep_nonstop.py", &[&b.url("/soap")]);
    assert!(
        stdout.contains("unknown: FAULT code=SOAP-ENV:Client.Process"),
        "{report}"
    );
    assert!(
        stdout.contains("unknown: FAULT detailCode=-1001"),
        "{report}"
    );
    assert!(stdout.contains("ended: FAULT detailCode=-1001"), "{report}");
    assert!(stdout.lines().any(|l| l == "OK"), "{report}");
}

/// Protects interoperability of the sqlSession dialect with a WSDL-driven client: zeep, logged in
/// with HTTP Basic, initiates a session (its batch creates a temporary table from a typed
/// parameter), reads the table back in the same session, terminates it, and gets the
/// SessionIdIsInvalid fault as `zeep.exceptions.Fault` afterwards.
#[test]
fn zeep_runs_a_sql_session_over_basic_auth() {
    let users: Vec<String> = broker_tests::sql::USERS
        .iter()
        .map(|u| u.to_string())
        .collect();
    let b = BrokerProcess::start(&broker_tests::sql::config(
        &users,
        "sqlite:{data_dir}/zeep.db",
        "60s",
        2,
        "",
    ));
    let (stdout, report) =
        run_zeep_client("zeep_sqlsession.py", &[&b.url("/sql"), "ann", "ann-pw"]);
    assert!(stdout.contains("use: word=kept"), "{report}");
    assert!(
        stdout.contains("ended: FAULT code=SOAP-ENV:Client SessionIdIsInvalid"),
        "{report}"
    );
    assert!(stdout.lines().any(|l| l == "OK"), "{report}");
}
