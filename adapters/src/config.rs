//! The typed configuration of one server class. The broker parses its TOML into this once.

use std::path::PathBuf;
use std::time::Duration;

/// Whether a class keeps conversation state in its workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// Any worker can answer any request.
    Free,
    /// A dialog must stay with one worker.
    Sensitive,
}

/// How the class is reached, with the adapter's own settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdapterKind {
    /// Child processes speaking the wire protocol on stdin/stdout.
    Process {
        /// Program and arguments.
        command: Vec<String>,
        /// Extra environment for the workers.
        env: Vec<(String, String)>,
        /// Working directory (default: the broker's).
        cwd: Option<PathBuf>,
    },
    /// Servers someone else runs, speaking the wire protocol over TCP.
    Tcp { addresses: Vec<String> },
    /// HTTP services receiving the body element by POST.
    Http { urls: Vec<String> },
}

impl AdapterKind {
    /// The configuration's name for the kind (`process`, `tcp`, `http`), for messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            AdapterKind::Process { .. } => "process",
            AdapterKind::Tcp { .. } => "tcp",
            AdapterKind::Http { .. } => "http",
        }
    }
}

/// Everything a server class needs to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerClassConfig {
    pub name: String,
    pub adapter: AdapterKind,
    pub context: Context,
    pub transactional: bool,
    pub one_txn_per_dialog: bool,
    /// Workers started up front (process) or connections kept open (tcp).
    pub min_workers: usize,
    /// The most workers (process) or connection slots (tcp, http concurrency).
    pub max_workers: usize,
    pub max_dialogs_per_worker: usize,
    /// How long a reply may take before the request faults (-351) and the worker is recycled.
    pub request_timeout: Duration,
    /// Requests that may wait for a free worker before further ones fault at once.
    pub queue_limit: usize,
    /// A worker above `min_workers` idle this long is stopped.
    pub idle_timeout: Duration,
    /// First delay before restarting a dead worker; doubles up to `restart_backoff_max`.
    pub restart_backoff: Duration,
    pub restart_backoff_max: Duration,
    /// Largest wire-protocol frame accepted or sent.
    pub max_frame_bytes: usize,
}

impl ServerClassConfig {
    /// A configuration with the documented defaults, for the given name and adapter.
    pub fn new(name: impl Into<String>, adapter: AdapterKind) -> Self {
        ServerClassConfig {
            name: name.into(),
            adapter,
            context: Context::Free,
            transactional: false,
            one_txn_per_dialog: false,
            min_workers: 1,
            max_workers: 4,
            max_dialogs_per_worker: 1,
            request_timeout: Duration::from_secs(180),
            queue_limit: 1024,
            idle_timeout: Duration::from_secs(300),
            restart_backoff: Duration::from_millis(100),
            restart_backoff_max: Duration::from_secs(10),
            max_frame_bytes: 16 * 1024 * 1024,
        }
    }
}
