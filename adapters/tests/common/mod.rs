//! Helpers shared by the adapter tests.
//!
//! The classes run their background tasks on one multi-threaded runtime shared by the tests
//! (never dropped), while each `#[tokio::test]` calls from its own current-thread runtime: the
//! same split as the broker's actix workers and the classes' runtime.
#![allow(dead_code)]

use adapters::{AdapterKind, BackendRequest, DialogMarker, ServerClassConfig};
use bytes::Bytes;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::runtime::{Handle, Runtime};

pub fn runtime() -> Handle {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
        })
        .handle()
        .clone()
}

pub const SAMPLE_SERVER: &str = env!("CARGO_BIN_EXE_sample-server");
pub const PYTHON_SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/echo_server.py");

/// A process class with test-friendly timings.
pub fn process_config(name: &str, command: &[&str]) -> ServerClassConfig {
    let mut config = ServerClassConfig::new(
        name,
        AdapterKind::Process {
            command: command.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            cwd: None,
        },
    );
    config.request_timeout = Duration::from_secs(10);
    config.restart_backoff = Duration::from_millis(20);
    config.restart_backoff_max = Duration::from_millis(200);
    config
}

pub fn echo_config(name: &str) -> ServerClassConfig {
    process_config(name, &[SAMPLE_SERVER, "echo"])
}

/// An `Echo` request whose body element holds `inner`.
pub fn echo(inner: &str) -> BackendRequest {
    request("Echo", &format!(r#"<Echo xmlns="urn:test">{inner}</Echo>"#))
}

pub fn request(operation: &str, payload: &str) -> BackendRequest {
    BackendRequest {
        credential: None,
        traceparent: None,
        service: operation.to_string(),
        operation: operation.to_string(),
        session_id: Some("s-1".to_string()),
        transaction_id: None,
        dialog: DialogMarker::None,
        worker: None,
        payload: Bytes::from(payload.to_string()),
    }
}

pub fn text(bytes: &Bytes) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Poll `cond` every 10 ms until it holds or `within` passes.
pub async fn wait_for(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether a process exists (Linux: its /proc entry; reaped children have none).
pub fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// A server process started by a test, killed when dropped.
pub struct Server {
    pub child: Child,
    /// The address it printed (`listening on ADDR`).
    pub addr: String,
}

impl Server {
    /// Start a server that prints `listening on ADDR` on its first stdout line.
    pub fn start(program: &str, args: &[&str]) -> Server {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Server { child, addr }
    }

    pub fn port(&self) -> u16 {
        self.addr.rsplit(':').next().unwrap().parse().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
