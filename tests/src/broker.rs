//! Starting, stopping and crashing real `broker` processes.

use crate::http;
use crate::proc::{self, ProcId};
use crate::wait;
use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;
use tempfile::TempDir;

/// How long a broker may take to answer `/healthz` after start.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The `broker` binary of this build: `target/<profile>/broker`, next to the `deps/` directory the
/// test executable runs from. `BROKER_BIN` overrides it.
pub fn broker_exe() -> PathBuf {
    if let Some(p) = std::env::var_os("BROKER_BIN") {
        return PathBuf::from(p);
    }
    workspace_bin("broker")
}

/// A binary of this workspace's build (`target/<profile>/<name>`, next to the `deps/` directory
/// the test executable runs from); panics with the command that builds it when it is missing.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let mut dir = exe
        .parent()
        .expect("the test executable's directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join(name);
    if !bin.is_file() {
        panic!(
            "the {name} binary is missing at {}: run `cargo build --workspace --bins` first \
             (scripts/test.sh does that before `cargo test`)",
            bin.display()
        );
    }
    bin
}

/// The workspace root (the parent of the tests crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// A free loopback port: bind 127.0.0.1:0, read the port, let it go.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    l.local_addr().expect("local address").port()
}

/// A command whose process is killed when the thread that started it ends (a safety net: a test
/// that dies without unwinding leaves no broker behind).
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(program);
    // SAFETY: prctl is async-signal-safe; it only sets the parent-death signal of the child.
    unsafe {
        c.pre_exec(|| {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            );
            Ok(())
        });
    }
    c
}

/// A broker process the test owns. Dropping it stops the process (SIGTERM, then `kill -9` after
/// 5 s), which stops its workers; the temporary directory is removed.
pub struct BrokerProcess {
    child: Option<Child>,
    dir: TempDir,
    config_path: PathBuf,
    data_dir: PathBuf,
    addr: SocketAddr,
    /// How many times a process was started (names the log files).
    starts: u32,
    extra_args: Vec<String>,
    /// Environment variables set for the next start ([`BrokerProcess::set_env`]).
    env: Vec<(String, String)>,
    /// The executable (the workspace's `broker` unless started with another build).
    exe: PathBuf,
}

impl BrokerProcess {
    /// Start a broker from `config_toml` (written into a fresh temporary directory; the data
    /// directory is inside it, so `{data_dir}` placeholders work) on a free loopback port, and wait
    /// until `GET /healthz` answers 200.
    pub fn start(config_toml: &str) -> BrokerProcess {
        BrokerProcess::start_with_args(config_toml, &[])
    }

    /// [`BrokerProcess::start`] with extra command-line arguments.
    pub fn start_with_args(config_toml: &str, extra_args: &[&str]) -> BrokerProcess {
        BrokerProcess::start_full(config_toml, extra_args, &[])
    }

    /// [`BrokerProcess::start`] with environment variables (kept for restarts; see
    /// [`BrokerProcess::set_env`]).
    pub fn start_with_env(config_toml: &str, env: &[(&str, &str)]) -> BrokerProcess {
        BrokerProcess::start_full(config_toml, &[], env)
    }

    /// [`BrokerProcess::start`] of another build of the broker (`broker-otlp`).
    pub fn start_with_exe(exe: &Path, config_toml: &str) -> BrokerProcess {
        BrokerProcess::start_exe(exe.to_path_buf(), config_toml, &[], &[])
    }

    fn start_full(config_toml: &str, extra_args: &[&str], env: &[(&str, &str)]) -> BrokerProcess {
        BrokerProcess::start_exe(broker_exe(), config_toml, extra_args, env)
    }

    fn start_exe(
        exe: PathBuf,
        config_toml: &str,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> BrokerProcess {
        let mut dir = tempfile::Builder::new()
            .prefix("broker-test-")
            .tempdir()
            .expect("creating a temporary directory");
        let config_path = dir.path().join("broker.toml");
        std::fs::write(&config_path, config_toml).expect("writing the configuration");
        let data_dir = dir.path().join("data");
        let mut last_error = String::new();
        // A port picked free may be taken by someone else before the broker binds it: retry.
        for _ in 0..5 {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port())
                .parse()
                .expect("an address");
            let mut b = BrokerProcess {
                child: None,
                dir,
                config_path: config_path.clone(),
                data_dir: data_dir.clone(),
                addr,
                starts: 0,
                extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
                env: env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                exe: exe.clone(),
            };
            match b.spawn_and_wait() {
                Ok(()) => return b,
                Err(e) if e.contains("cannot listen") || e.contains("Address already in use") => {
                    last_error = e;
                    dir = b.take_dir();
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("the broker could not get a free port: {last_error}");
    }

    fn take_dir(mut self) -> TempDir {
        self.kill_quietly();
        // Move the TempDir out without running Drop on self (Drop would only kill again).
        let dir = std::mem::replace(
            &mut self.dir,
            tempfile::tempdir().expect("a temporary directory"),
        );
        drop(self);
        dir
    }

    fn log_path(&self, stream: &str) -> PathBuf {
        self.dir
            .path()
            .join(format!("{stream}.{}.log", self.starts))
    }

    /// Start the process and wait for `/healthz`. On failure, stop it and return the reason with
    /// its stderr.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        self.starts += 1;
        proc::become_subreaper();
        let stdout =
            std::fs::File::create(self.log_path("stdout")).expect("creating the stdout log");
        let stderr =
            std::fs::File::create(self.log_path("stderr")).expect("creating the stderr log");
        let mut cmd = command(&self.exe);
        cmd.arg("--config")
            .arg(&self.config_path)
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.extra_args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.exe.display()));
        self.child = Some(child);
        let health = self.url("/healthz");
        let child = self.child.as_mut().expect("just started");
        // Some(Ok) once healthy, Some(Err) if it exited first.
        let ready = wait::poll(READY_TIMEOUT, || {
            if let Some(status) = child.try_wait().ok().flatten() {
                return Some(Err(status));
            }
            (http::probe(&health, Duration::from_secs(2)) == Some(200)).then_some(Ok(()))
        });
        match ready {
            Some(Ok(())) => Ok(()),
            Some(Err(status)) => {
                self.child = None;
                Err(format!(
                    "the broker exited during start-up ({status}); stderr:\n{}",
                    self.stderr_text()
                ))
            }
            None => {
                self.kill_quietly();
                Err(format!(
                    "the broker did not answer GET /healthz with 200 within {READY_TIMEOUT:?}; stderr:\n{}",
                    self.stderr_text()
                ))
            }
        }
    }

    /// The process id (panics if the process is not running).
    /// Write a new configuration over the file the broker was started with (for a reload).
    pub fn write_config(&self, config_toml: &str) {
        std::fs::write(&self.config_path, config_toml).expect("writing the configuration");
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the broker is not running").id()
    }

    /// Whether the process is still running (it has not exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// `http://127.0.0.1:PORT<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The data directory (`--data-dir`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The temporary directory holding the configuration, the data and the logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The sled directory of the default store URL, `sled:{data_dir}/cookies`.
    pub fn sled_dir(&self) -> PathBuf {
        self.data_dir.join("cookies")
    }

    /// What the current (or last) process wrote to stderr.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(self.log_path("stderr")).unwrap_or_default()
    }

    /// How many expired sessions the current (or last) process's sweeper reported deleting (the
    /// sum of its `expired sessions swept expired=N` log lines).
    pub fn sessions_swept(&self) -> u64 {
        strip_ansi(&self.stderr_text())
            .lines()
            .filter(|l| l.contains("expired sessions swept"))
            .filter_map(|l| {
                let count = &l[l.find("expired=")? + "expired=".len()..];
                let digits: String = count.chars().take_while(char::is_ascii_digit).collect();
                digits.parse::<u64>().ok()
            })
            .sum()
    }

    /// What the current (or last) process wrote to stdout.
    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(self.log_path("stdout")).unwrap_or_default()
    }

    /// The broker's direct children (its process-adapter workers), as identities.
    pub fn worker_procs(&self) -> Vec<ProcId> {
        proc::children(self.pid())
            .into_iter()
            .filter_map(proc::id_of)
            .collect()
    }

    /// The pids of the broker's direct children.
    pub fn worker_pids(&self) -> BTreeSet<u32> {
        proc::children(self.pid())
    }

    /// The pids of the broker's workers whose command line satisfies `matches` (e.g. the workers
    /// of one class, told apart by their `sample-server` arguments).
    pub fn worker_pids_where(&self, matches: impl Fn(&str) -> bool) -> Vec<u32> {
        self.worker_pids()
            .into_iter()
            .filter(|pid| {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                // Arguments are NUL-separated: make them one line of words.
                matches(&String::from_utf8_lossy(&cmd).replace('\0', " "))
            })
            .collect()
    }

    /// Wait until the broker has at least `n` children; returns them.
    pub fn wait_for_workers(&self, n: usize, timeout: Duration) -> Vec<ProcId> {
        wait::poll(timeout, || {
            let w = self.worker_procs();
            (w.len() >= n).then_some(w)
        })
        .unwrap_or_else(|| {
            panic!(
                "the broker did not have {n} worker(s) within {timeout:?}; it has {:?}",
                self.worker_pids()
            )
        })
    }

    /// `kill -9` the broker and reap it. Its workers are left to notice their closed stdin and
    /// exit; the test process (a child subreaper) then reaps them, so no zombie is left behind in
    /// containers whose init does not reap.
    pub fn kill9(&mut self) {
        assert!(self.child.is_some(), "the broker is not running");
        self.kill_and_reap();
    }

    /// SIGTERM, then wait (at most 60 s, then SIGKILL and panic) and return the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the broker is not running");
        proc::signal(child.id(), libc::SIGTERM);
        let exited = wait::poll(Duration::from_secs(60), || {
            child.try_wait().expect("waiting for the broker")
        });
        exited.unwrap_or_else(|| {
            proc::kill9(child.id());
            let _ = child.wait();
            panic!(
                "the broker did not exit within 60 s of SIGTERM; stderr:\n{}",
                self.stderr_text()
            )
        })
    }

    /// Set (or with `None`, unset) an environment variable for the next [`restart`](Self::restart).
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.to_string(), v.to_string()));
        }
    }

    /// Start the broker again on the same configuration, data directory and port (after
    /// [`kill9`](Self::kill9) or [`terminate`](Self::terminate)). The port may still be held for a
    /// moment: retry for up to 10 s.
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "restart() needs the broker stopped first"
        );
        let mut port_busy = String::new();
        let started = wait::poll(Duration::from_secs(10), || match self.spawn_and_wait() {
            Err(e) if e.contains("cannot listen") || e.contains("in use") => {
                port_busy = e;
                None
            }
            outcome => Some(outcome),
        });
        match started {
            Some(Ok(())) => {}
            Some(Err(e)) => panic!("restarting the broker: {e}"),
            None => panic!("restarting the broker: the port stayed busy for 10 s: {port_busy}"),
        }
    }

    /// `kill -9` the broker, reap it, then reap its orphaned workers (giving them 3 s to notice
    /// their closed stdin before killing them too).
    fn kill_and_reap(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let workers: Vec<ProcId> = proc::children(child.id())
            .into_iter()
            .filter_map(proc::id_of)
            .collect();
        proc::kill9(child.id());
        let _ = child.wait();
        proc::reap_orphans(&workers, Duration::from_secs(3));
    }

    /// SIGTERM and wait up to 5 s (the broker then stops and reaps its own workers); `kill -9`
    /// if it takes longer.
    fn stop(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        proc::signal(child.id(), libc::SIGTERM);
        if wait::poll(Duration::from_secs(5), || child.try_wait().ok().flatten()).is_some() {
            self.child = None;
            return;
        }
        self.kill_and_reap();
    }

    fn kill_quietly(&mut self) {
        self.kill_and_reap();
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "--- broker stderr ({}) ---\n{}\n--- end of broker stderr ---",
                self.log_path("stderr").display(),
                self.stderr_text()
                    .chars()
                    .rev()
                    .take(6000)
                    .collect::<String>()
                    .chars()
                    .rev()
                    .collect::<String>()
            );
        }
    }
}

/// `text` without ANSI colour sequences (`ESC [ … m`), which a log written to a file may carry.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip to the sequence's final letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The outcome of a broker run that is expected to end by itself (bad configuration,
/// `--print-default-config`).
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn describe(&self) -> String {
        format!(
            "exit status {:?} (signal {:?})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status.code(),
            self.status.signal(),
            self.stdout,
            self.stderr
        )
    }
}

/// Run `broker ARGS...` to completion (at most `timeout`, then SIGKILL and panic).
pub fn run_broker(args: &[&str], timeout: Duration) -> Finished {
    run_broker_with_env(args, &[], timeout)
}

/// [`run_broker`] with more environment variables (a password the command reads from one).
pub fn run_broker_with_env(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Finished {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut child = command(broker_exe())
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("starting the broker");
    let status = wait::poll(timeout, || child.try_wait().expect("waiting")).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "`broker {}` did not finish within {timeout:?}; stderr:\n{}",
            args.join(" "),
            std::fs::read_to_string(&err_path).unwrap_or_default()
        )
    });
    Finished {
        status,
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

/// Run the broker with a configuration file holding `config_toml` (plus `extra_args`) and expect it
/// to exit by itself. Returns the outcome and the path the file had (for checking error messages).
pub fn run_with_config(
    config_toml: &str,
    extra_args: &[&str],
    timeout: Duration,
) -> (Finished, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, config_toml).expect("writing the configuration");
    let data = dir.path().join("data");
    let port = format!("127.0.0.1:{}", free_port());
    let mut args: Vec<&str> = vec![
        "--config",
        path.to_str().expect("a UTF-8 path"),
        "--listen",
        &port,
        "--data-dir",
        data.to_str().expect("a UTF-8 path"),
    ];
    args.extend_from_slice(extra_args);
    let finished = run_broker(&args, timeout);
    // Keep the directory alive until the run is over; the path stays meaningful for messages.
    drop(dir);
    (finished, path)
}

/// A helper process (a backend server) the test owns: killed and reaped on drop.
pub struct ChildGuard {
    pub child: Child,
    pub name: String,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    _dir: TempDir,
}

impl ChildGuard {
    /// Start `program args…` with stdout/stderr captured to files (for failure messages).
    pub fn spawn(name: &str, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> ChildGuard {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let stdout_path = dir.path().join("stdout");
        let stderr_path = dir.path().join("stderr");
        let child = command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        ChildGuard {
            child,
            name: name.to_string(),
            stdout_path,
            stderr_path,
            _dir: dir,
        }
    }

    /// What the process wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// `broker sample-server echo --http 127.0.0.1:0`, the http adapter's echo backend, once it
    /// listens; with its address, and the `adapter`/`urls` lines of a class that reaches it.
    pub fn http_echo_backend() -> (ChildGuard, SocketAddr, String) {
        let mut server = ChildGuard::spawn(
            "broker sample-server echo --http",
            broker_exe(),
            &["sample-server", "echo", "--http", "127.0.0.1:0"],
        );
        let addr = server.wait_announced(Duration::from_secs(20));
        let adapter = format!("adapter = \"http\"\nurls = [\"http://{addr}/\"]");
        (server, addr, adapter)
    }

    /// What the process wrote to stdout so far.
    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// Wait for the `listening on ADDR` line the sample and reference servers print once they are
    /// ready (so they can bind port 0), and return ADDR.
    pub fn wait_announced(&mut self, timeout: Duration) -> SocketAddr {
        let announced = wait::poll(timeout, || {
            let announced = self.stdout_text().lines().find_map(|l| {
                l.trim()
                    .strip_prefix("listening on ")
                    .and_then(|a| a.trim().parse().ok())
            });
            if announced.is_some() {
                return announced;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before announcing its address; stderr:\n{}",
                    self.name,
                    self.stderr_text()
                );
            }
            None
        });
        announced.unwrap_or_else(|| {
            panic!(
                "{} did not print `listening on ADDR` within {timeout:?}; stdout:\n{}\nstderr:\n{}",
                self.name,
                self.stdout_text(),
                self.stderr_text()
            )
        })
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::strip_ansi;

    #[test]
    fn colour_sequences_are_stripped_from_log_text() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m swept \u{1b}[3mexpired\u{1b}[0m\u{1b}[2m=\u{1b}[0m3"),
            "2026  INFO swept expired=3"
        );
        assert_eq!(strip_ansi("plain"), "plain");
    }
}
