//! Starting, crashing and restarting a real `cookie-store serve` daemon (the store several brokers
//! of one host share, `cookie-store://HOST:PORT`).

use crate::broker::{command, workspace_bin};
use crate::{proc, wait};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;
use tempfile::TempDir;

/// How long the daemon may take to announce its address.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A `cookie-store serve` process the test owns, on a loopback port, with its data in a temporary
/// directory. Dropping it stops the process (SIGTERM, then `kill -9` after 5 s).
pub struct Daemon {
    child: Option<Child>,
    dir: TempDir,
    addr: Option<SocketAddr>,
    starts: u32,
}

impl Daemon {
    /// Start a daemon on a free loopback port (it binds port 0 and announces the port it got).
    pub fn start() -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("cookie-store-test-")
            .tempdir()
            .expect("creating a temporary directory");
        let mut d = Daemon {
            child: None,
            dir,
            addr: None,
            starts: 0,
        };
        if let Err(e) = d.spawn_and_wait("127.0.0.1:0") {
            panic!("{e}");
        }
        d
    }

    /// The store URL brokers use: `cookie-store://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("cookie-store://{}", self.addr())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("the daemon has announced its address")
    }

    /// The sled directory the daemon owns.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self, stream: &str) -> PathBuf {
        self.dir
            .path()
            .join(format!("{stream}.{}.log", self.starts))
    }

    /// What the current (or last) process wrote to stderr.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(self.log_path("stderr")).unwrap_or_default()
    }

    fn stdout_text(&self) -> String {
        std::fs::read_to_string(self.log_path("stdout")).unwrap_or_default()
    }

    fn spawn_and_wait(&mut self, listen: &str) -> Result<(), String> {
        self.starts += 1;
        let stdout = std::fs::File::create(self.log_path("stdout")).expect("stdout log");
        let stderr = std::fs::File::create(self.log_path("stderr")).expect("stderr log");
        let child = command(workspace_bin("cookie-store"))
            .arg("serve")
            .arg("--data")
            .arg(self.data_dir())
            .arg("--listen")
            .arg(listen)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("starting cookie-store: {e}"))?;
        self.child = Some(child);
        // Some(Ok(addr)) once announced, Some(Err) if it exited first.
        let ready = wait::poll(READY_TIMEOUT, || {
            // "cookie-store: serving DIR on cookie-store://ADDR"
            let announced = self.stdout_text().lines().find_map(|l| {
                l.rsplit_once("cookie-store://")
                    .and_then(|(_, a)| a.trim().parse::<SocketAddr>().ok())
            });
            if let Some(addr) = announced {
                return Some(Ok(addr));
            }
            let child = self.child.as_mut()?;
            child.try_wait().ok().flatten().map(Err)
        });
        match ready {
            Some(Ok(addr)) => {
                self.addr = Some(addr);
                Ok(())
            }
            Some(Err(status)) => {
                self.child = None;
                Err(format!(
                    "cookie-store exited during start-up ({status}); stderr:\n{}",
                    self.stderr_text()
                ))
            }
            None => {
                self.kill9();
                Err(format!(
                    "cookie-store did not announce its address within {READY_TIMEOUT:?}; stderr:\n{}",
                    self.stderr_text()
                ))
            }
        }
    }

    /// `kill -9` the daemon and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            proc::kill9(child.id());
            let _ = child.wait();
        }
    }

    /// Start it again on the same port and data (after [`Daemon::kill9`]). The port may be held
    /// for a moment: retry for up to 10 s.
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "restart() needs the daemon stopped first"
        );
        let listen = self.addr().to_string();
        let mut port_busy = String::new();
        let started = wait::poll(Duration::from_secs(10), || {
            match self.spawn_and_wait(&listen) {
                Err(e) if e.contains("listen") => {
                    port_busy = e;
                    None
                }
                outcome => Some(outcome),
            }
        });
        match started {
            Some(Ok(())) => {}
            Some(Err(e)) => panic!("restarting cookie-store: {e}"),
            None => panic!("restarting cookie-store: the port stayed busy for 10 s: {port_busy}"),
        }
    }

    /// Whether the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The temporary directory (data and logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        proc::signal(child.id(), libc::SIGTERM);
        if wait::poll(Duration::from_secs(5), || child.try_wait().ok().flatten()).is_some() {
            return;
        }
        proc::kill9(child.id());
        let _ = child.wait();
        if std::thread::panicking() {
            eprintln!("--- cookie-store stderr ---\n{}", self.stderr_text());
        }
    }
}
