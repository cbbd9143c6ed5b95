//! The interop suite (issue 16): seven real SOAP toolkits, six of them built from the WSDL the
//! broker serves, each run a NonStop session over the record service `AccountInquiry` (Begin, two
//! continues, End), get the ended session's -1001 fault and the record's error layout as their own
//! fault types, and, where they speak it, do the same over SOAP 1.2. The clients and their
//! contract are in `tests/interop/` (README.md there); `scripts/interop.sh` installs them.
//!
//! Each test starts a broker on the embedded default, as a user would run it, on a free port.
//! `BROKER_SKIP_INTEROP=1` skips the suite (each test says so on stderr); otherwise a missing
//! toolkit fails its test, naming the installer.

use broker_tests::broker::workspace_root;
use broker_tests::BrokerProcess;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The broker's embedded default, as `broker` with no `--config` runs it.
const EMBEDDED_DEFAULT: &str = include_str!("../../broker/src/default_config.toml");

/// The steps every client prints (`ok <step>`), and the SOAP 1.2 ones of those that speak it.
const STEPS: &[&str] = &[
    "wsdl",
    "begin",
    "continue-1",
    "continue-2",
    "end",
    "unknown-session-fault",
    "record-fault",
];
const SOAP12_STEPS: &[&str] = &["soap12-begin", "soap12-end", "soap12-fault"];

/// The longest a client may take (gSOAP and JAX-WS generate and compile their stubs first).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(240);

fn skipped(client: &str) -> bool {
    let skip = std::env::var("BROKER_SKIP_INTEROP").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("interop {client}: skipped (BROKER_SKIP_INTEROP=1)");
    }
    skip
}

/// Run `program args… <endpoint> <work-dir>` against a fresh broker and check its steps.
fn run_client(client: &str, program: &str, args: &[&str], soap12: bool) {
    if skipped(client) {
        return;
    }
    let broker = BrokerProcess::start(EMBEDDED_DEFAULT);
    let endpoint = broker.url("/soap");
    let work = tempfile::tempdir().expect("a work directory");
    let root = workspace_root();
    let started = Instant::now();
    // Files, not pipes: a compiler's chatter must not fill a pipe nobody reads yet.
    let logs = tempfile::tempdir().expect("a log directory");
    let (out_path, err_path) = (logs.path().join("stdout"), logs.path().join("stderr"));
    let file = |p: &std::path::Path| std::fs::File::create(p).expect("a log file");
    let mut child = Command::new(program)
        .args(args)
        .arg(&endpoint)
        .arg(work.path())
        .current_dir(root.join("tests/interop"))
        .stdin(Stdio::null())
        .stdout(file(&out_path))
        .stderr(file(&err_path))
        .spawn()
        .unwrap_or_else(|e| {
            panic!("interop {client}: cannot start {program}: {e} (install the clients: bash scripts/interop.sh)")
        });
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the client") {
            break status;
        }
        if started.elapsed() > CLIENT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("interop {client}: no result within {CLIENT_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let report = format!(
        "interop {client} ({status}, {:.1} s)\n--- stdout\n{stdout}--- stderr\n{stderr}--- broker log\n{}",
        started.elapsed().as_secs_f64(),
        broker.stderr_text()
    );
    assert!(
        status.success(),
        "{report}\n(a missing toolkit is installed by bash scripts/interop.sh)"
    );
    let expected = STEPS
        .iter()
        .chain(if soap12 { SOAP12_STEPS } else { &[] })
        .copied();
    for step in expected {
        let done = stdout
            .lines()
            .any(|l| l == format!("ok {step}") || l.starts_with(&format!("ok {step} ")));
        assert!(done, "step {step} did not pass: {report}");
    }
    eprintln!(
        "interop {client}: every step passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn zeep() {
    run_client("zeep", "python3", &["-W", "error", "zeep_client.py"], true);
}

#[test]
fn suds() {
    run_client("suds", "python3", &["suds_client.py"], false);
}

#[test]
fn node_soap() {
    run_client("node-soap", "node", &["node/client.js"], true);
}

#[test]
fn php_soapclient() {
    run_client("PHP SoapClient", "php", &["php/client.php"], true);
}

#[test]
fn soap_lite() {
    run_client("SOAP::Lite", "perl", &["perl/client.pl"], true);
}

#[test]
fn gsoap() {
    run_client("gSOAP", "bash", &["gsoap/run.sh"], true);
}

#[test]
fn jax_ws() {
    run_client("JAX-WS RI", "bash", &["jaxws/run.sh"], true);
}

/// Run `program args…` to completion (bounded) and return (success, stdout + stderr).
fn run_tool(program: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot start {program}: {e} (install the clients: bash scripts/interop.sh)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Protects the WSDL's validity as zeep reads it, with Python warnings as errors: every
/// endpoint's document loads (the SOAP one, and DSML's with its foreign body namespace).
#[test]
fn served_wsdl_passes_zeep() {
    if skipped("python -m zeep") {
        return;
    }
    let broker = BrokerProcess::start(EMBEDDED_DEFAULT);
    for path in ["/soap?wsdl", "/dsml?wsdl"] {
        let url = broker.url(path);
        let (ok, text) = run_tool("python3", &["-W", "error", "-m", "zeep", &url]);
        assert!(ok, "python3 -W error -m zeep {url}:\n{text}");
        assert!(
            text.contains("AccountInquiry") || path.starts_with("/dsml"),
            "{text}"
        );
    }
}

/// Protects the WSDL's validity as JAX-WS reads it: `wsimport` generates the client (SOAP 1.2 port
/// included, with `-extension`) with no error, and the generated port type has the operations and
/// the declared faults.
#[test]
fn served_wsdl_passes_wsimport() {
    if skipped("wsimport") {
        return;
    }
    let broker = BrokerProcess::start(EMBEDDED_DEFAULT);
    let work = tempfile::tempdir().expect("a work directory");
    let out = work.path().to_string_lossy().to_string();
    let url = broker.url("/soap?wsdl");
    let (ok, text) = run_tool(
        "wsimport",
        &[
            "-extension",
            "-Xnocompile",
            "-keep",
            "-p",
            "broker",
            "-d",
            &out,
            &url,
        ],
    );
    assert!(ok && !text.contains("[ERROR]"), "wsimport {url}:\n{text}");
    let port = std::fs::read_to_string(work.path().join("broker/SoapPortType.java"))
        .unwrap_or_else(|e| panic!("no SoapPortType.java ({e}):\n{text}"));
    for expected in [
        "accountInquiry(",
        "echo(",
        "throws ACCTINQERRORFault, NonStopFault",
    ] {
        assert!(port.contains(expected), "{expected} in:\n{port}");
    }
}
