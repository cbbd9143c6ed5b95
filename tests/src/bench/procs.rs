//! The servers of a comparison: started as children of soapbench, each with its own files under one
//! temporary directory, stopped (SIGTERM, then SIGKILL) when dropped. Nothing needs root and no
//! system configuration is touched.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::load::pin_current_thread;
use broker_tests::wait;

/// Log lines of interest, with the wall-clock time (ms since the Unix epoch) they were read.
pub type Marks = Arc<Mutex<Vec<(u64, String)>>>;

/// Now, in ms since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A running server.
pub struct Server {
    pub name: String,
    /// `host:port` it listens on.
    pub addr: String,
    child: Child,
    _stdout: Option<ChildStdout>,
    /// stderr lines containing the marker given at start, with the time they were read.
    pub marks: Marks,
    pub log: PathBuf,
}

/// Resident memory of a process, from `/proc/PID/status`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

impl Memory {
    pub fn of(pid: u32) -> Memory {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            return Memory::default();
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Memory {
            rss_kib: field("VmRSS:"),
            hwm_kib: field("VmHWM:"),
        }
    }

    pub fn mib(kib: u64) -> f64 {
        kib as f64 / 1024.0
    }
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn memory(&self) -> Memory {
        Memory::of(self.pid())
    }

    /// Memory of the server's direct children (the process adapter's workers), summed.
    pub fn children_memory(&self) -> Memory {
        let mut total = Memory::default();
        for pid in broker_tests::proc::children(self.pid()) {
            let m = Memory::of(pid);
            total.rss_kib += m.rss_kib;
            total.hwm_kib += m.hwm_kib;
        }
        total
    }

    /// Where its stderr goes.
    pub fn log_hint(&self) -> String {
        format!("{} log: {}", self.name, self.log.display())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Whether the process has exited (reaping it if so).
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    pub fn stop(&mut self) {
        if self.exited() {
            return;
        }
        // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        if wait::poll(Duration::from_secs(15), || self.exited().then_some(())).is_some() {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `line` without ANSI escape sequences (`ESC [ ... letter`), as a log file should hold it.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// A free loopback port: bind 127.0.0.1:0, read the port, let it go.
pub fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("binding 127.0.0.1:0: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("local address: {e}"))
}

/// Everything a start needs to know besides the command.
pub struct Launch<'a> {
    pub name: &'a str,
    pub dir: &'a Path,
    /// CPUs the server (and its children) may run on.
    pub cpus: Option<&'a [usize]>,
    /// stderr lines containing this are kept in [`Server::marks`].
    pub marker: Option<&'static str>,
}

fn spawn(
    launch: &Launch,
    mut cmd: Command,
    stdout: bool,
) -> Result<(Child, Marks, PathBuf), String> {
    let cpus = launch.cpus.map(<[usize]>::to_vec);
    // SAFETY: only async-signal-safe calls (prctl, sched_setaffinity) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // Die with soapbench, so an interrupted comparison leaves no server behind.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            if let Some(cpus) = &cpus {
                pin_current_thread(cpus)?;
            }
            Ok(())
        });
    }
    cmd.stdin(Stdio::null())
        .stdout(if stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting {}: {e}", launch.name))?;
    let log = launch.dir.join(format!("{}.log", launch.name));
    let mut file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let marks: Marks = Arc::default();
    if let Some(stderr) = child.stderr.take() {
        let marks = marks.clone();
        let marker = launch.marker;
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let line = strip_ansi(&line);
                if marker.is_some_and(|m| line.contains(m)) {
                    if let Ok(mut m) = marks.lock() {
                        m.push((unix_ms(), line.clone()));
                    }
                }
                let _ = writeln!(file, "{line}");
            }
        });
    }
    Ok((child, marks, log))
}

fn wait_listening(
    name: &str,
    addr: &str,
    child: &mut Child,
    timeout: Duration,
) -> Result<(), String> {
    let outcome = wait::poll(timeout, || {
        if TcpStream::connect(addr).is_ok() {
            return Some(Ok(()));
        }
        let status = child.try_wait().ok().flatten()?;
        Some(Err(format!(
            "{name} exited ({status}) before listening on {addr}"
        )))
    });
    outcome.unwrap_or_else(|| {
        Err(format!(
            "{name} is not listening on {addr} after {timeout:?}"
        ))
    })
}

/// Start `cmd` and wait until `addr` accepts connections.
pub fn start_server(launch: &Launch, cmd: Command, addr: String) -> Result<Server, String> {
    started(launch, cmd, addr)
}

fn started(launch: &Launch, cmd: Command, addr: String) -> Result<Server, String> {
    let (mut child, marks, log) = spawn(launch, cmd, false)?;
    if let Err(e) = wait_listening(launch.name, &addr, &mut child, Duration::from_secs(60)) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("{e} (log: {})", log.display()));
    }
    Ok(Server {
        name: launch.name.to_string(),
        addr,
        child,
        _stdout: None,
        marks,
        log,
    })
}

/// `broker sample-server echo --http 127.0.0.1:0`: the HTTP echo backend.
pub fn start_backend(broker: &Path, launch: &Launch) -> Result<Server, String> {
    let mut cmd = Command::new(broker);
    cmd.args(["sample-server", "echo", "--http", "127.0.0.1:0"]);
    let (mut child, marks, log) = spawn(launch, cmd, true)?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or("the backend's stdout is not piped")?;
    // It prints `listening on ADDR` once bound.
    let mut line = String::new();
    let mut byte = [0u8; 1];
    while !line.ends_with('\n') {
        match std::io::Read::read(&mut stdout, &mut byte) {
            Ok(1) => line.push(byte[0] as char),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the echo backend did not say where it listens (log: {})",
                    log.display()
                ));
            }
        }
    }
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .ok_or_else(|| format!("unexpected first line from the echo backend: {line:?}"))?
        .to_string();
    Ok(Server {
        name: launch.name.to_string(),
        addr,
        child,
        _stdout: Some(stdout),
        marks,
        log,
    })
}

/// nginx with one worker, upstream keepalive and no access log, configured under `launch.dir`.
pub fn start_nginx(nginx: &Path, launch: &Launch, backend: &str) -> Result<Server, String> {
    let prefix = launch.dir.join("nginx");
    std::fs::create_dir_all(prefix.join("logs"))
        .map_err(|e| format!("{}: {e}", prefix.display()))?;
    let port = free_port()?;
    let p = prefix.display();
    let conf = format!(
        r#"# generated by soapbench compare
worker_processes 1;
daemon off;
pid {p}/nginx.pid;
error_log {p}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {p}/client_body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    upstream echo_backend {{
        server {backend};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://echo_backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"#
    );
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf).map_err(|e| format!("{}: {e}", conf_path.display()))?;
    let mut cmd = Command::new(nginx);
    cmd.arg("-p")
        .arg(&prefix)
        .arg("-e")
        .arg(prefix.join("logs/error.log"))
        .arg("-c")
        .arg(&conf_path);
    started(launch, cmd, format!("127.0.0.1:{port}"))
}

/// A broker configuration whose `Echo` service goes to `backend` through the http adapter, with
/// `workers` HTTP worker threads (`None`: the broker's default, one per CPU); `store_extra` is
/// added to its `[store]` table (e.g. `sweep_rate = 5000`).
pub fn http_adapter_config(
    listen: &str,
    data_dir: &Path,
    backend: &str,
    workers: Option<usize>,
    store_extra: &str,
) -> String {
    let workers = workers.map_or(String::new(), |n| format!("workers = {n}"));
    format!(
        r#"# generated by soapbench: the Echo service through the http adapter
[broker]
listen = "{listen}"
data_dir = "{}"
{workers}

[log]
level = "info"

[store]
url = "sled:{{data_dir}}/cookies"
{store_extra}

[[endpoint]]
path = "/soap"
dialect = "nonstop"
session_timeout = "30m"

[[server_class]]
name = "echo"
adapter = "http"
urls = ["http://{backend}/echo"]
max_workers = 256

[[service]]
name = "Echo"
endpoint = "/soap"
server_class = "echo"
"#,
        data_dir.display()
    )
}

/// The broker with its echo class on the http adapter to `backend`, `workers` HTTP worker
/// threads (`None`: the broker's default).
pub fn start_broker_http(
    broker: &Path,
    launch: &Launch,
    backend: &str,
    data_dir: &Path,
    workers: Option<usize>,
) -> Result<Server, String> {
    start_broker_http_with(broker, launch, backend, data_dir, workers, "")
}

/// [`start_broker_http`] with extra `[store]` settings.
pub fn start_broker_http_with(
    broker: &Path,
    launch: &Launch,
    backend: &str,
    data_dir: &Path,
    workers: Option<usize>,
    store_extra: &str,
) -> Result<Server, String> {
    let addr = format!("127.0.0.1:{}", free_port()?);
    let config = launch.dir.join(format!("{}.toml", launch.name));
    std::fs::write(
        &config,
        http_adapter_config(&addr, data_dir, backend, workers, store_extra),
    )
    .map_err(|e| format!("{}: {e}", config.display()))?;
    let mut cmd = Command::new(broker);
    cmd.arg("--config").arg(&config);
    started(launch, cmd, addr)
}

/// The broker on its embedded default (the echo class on the process adapter), with `workers`
/// HTTP worker threads: the embedded configuration (`--print-default-config`) with `workers`
/// set, or as it is with `None`.
pub fn start_broker_default(
    broker: &Path,
    launch: &Launch,
    data_dir: &Path,
    workers: Option<usize>,
) -> Result<Server, String> {
    let addr = format!("127.0.0.1:{}", free_port()?);
    let mut cmd = Command::new(broker);
    if let Some(n) = workers {
        let out = Command::new(broker)
            .arg("--print-default-config")
            .output()
            .map_err(|e| format!("{} --print-default-config: {e}", broker.display()))?;
        let default = String::from_utf8_lossy(&out.stdout);
        let Some((head, tail)) = default.split_once("[broker]\n") else {
            return Err("the broker's default configuration has no [broker] table".into());
        };
        let config = launch.dir.join(format!("{}.toml", launch.name));
        std::fs::write(&config, format!("{head}[broker]\nworkers = {n}\n{tail}"))
            .map_err(|e| format!("{}: {e}", config.display()))?;
        cmd.arg("--config").arg(&config);
    }
    cmd.arg("--data-dir")
        .arg(data_dir)
        .arg("--listen")
        .arg(&addr);
    started(launch, cmd, addr)
}

/// The bare actix-web echo (the ceiling).
pub fn start_bare_echo(bare: &Path, launch: &Launch) -> Result<Server, String> {
    let addr = format!("127.0.0.1:{}", free_port()?);
    let mut cmd = Command::new(bare);
    cmd.arg(&addr);
    started(launch, cmd, addr)
}

/// First line of `program -v`-style output (nginx prints its version on stderr).
pub fn version_of(program: &Path, arg: &str) -> String {
    match Command::new(program).arg(arg).output() {
        Ok(out) => {
            let text = if out.stderr.is_empty() {
                out.stdout
            } else {
                out.stderr
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        }
        Err(e) => format!("unknown ({e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_ansi() {
        assert_eq!(
            strip_ansi("\u{1b}[3mexpired\u{1b}[0m\u{1b}[2m=\u{1b}[0m256 ok"),
            "expired=256 ok"
        );
    }
}
