//! # adapters: how the broker reaches legacy server classes
//!
//! A *server class* is a named pool of workers that all offer the same services (Pathway's term). The
//! broker hands a [`BackendRequest`] to a [`ServerClass`] and gets a [`BackendReply`] back; how the
//! request travels is the adapter's business:
//!
//! - [`process`]: the TS/MP model. The broker starts the workers as child processes, speaks the wire
//!   protocol ([`protocol`], documented in `adapters/PROTOCOL.md`) on their stdin/stdout, grows the pool
//!   on demand, restarts dead workers with backoff and reaps idle ones.
//! - [`tcp`]: the same wire protocol to servers someone else runs.
//! - [`http`]: POST the body element to an HTTP service (context-free only).
//! - [`sql`]: a SQL database, one connection per worker, pinned to a session as a dialog.
//!
//! Every adapter may be called from any tokio runtime: its background tasks run on the runtime handle
//! given to [`build`], and callers only await channels and timers.
//!
//! The crate also holds `sample-server`, the small program that plays the sample application's
//! legacy server classes.

pub mod config;
pub mod http;
mod inproc;
pub mod ldap;
pub mod process;
pub mod protocol;
pub mod sample;
pub mod sql;
pub mod tcp;

mod pool;

pub use pool::backoff;
pub use pool::{Connector, Link, PoolClass, PoolStatus, RestartStatus, WorkerStatus};

pub use config::{
    AdapterKind, Context, FieldError, PayloadFormat, ServerClassConfig, ServerClassSection,
    SqlMethod, WorkerIo,
};

use async_trait::async_trait;
use bytes::Bytes;
use std::sync::Arc;

/// Which worker served a request: `"<class>#<n>"`. Dialogs and transaction participants name it.
pub type WorkerId = String;

/// Where a request stands with respect to a dialog (a Pathsend dialog, a NonStop subsession).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialogMarker {
    /// A context-free request.
    None,
    /// Open a dialog: any worker with room for one more (`max_dialogs_per_worker`) and no
    /// transaction, or the worker [`BackendRequest::worker`] names. Unless the reply ends it
    /// (`dialog-end`, `dialog-abort`), the worker that [`BackendReply::worker`] names is then
    /// pinned to the dialog until the server ends or aborts it, or the broker sends
    /// [`ServerClass::abort_dialog`].
    Begin,
    /// A later request of the open dialog: [`BackendRequest::worker`] names the dialog's worker
    /// (required: without it the call fails with [`AdapterError::Unsupported`]).
    Continue,
}

/// A client's user name and password, passed to a class that authenticates with them (an ldap
/// class with `bind = "principal"` binds as the user). Its `Debug` shows no password.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Credential {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("user", &self.user)
            .field("password", &"***")
            .finish()
    }
}

/// One request for a server class.
#[derive(Debug, Clone)]
pub struct BackendRequest {
    /// The service name the client called (the Body's first child's local name).
    pub service: String,
    /// What the backend is told to do (the configured operation; defaults to the service name).
    pub operation: String,
    /// The session, when the request runs inside one.
    pub session_id: Option<String>,
    /// The transaction, when the request runs under one.
    pub transaction_id: Option<String>,
    pub dialog: DialogMarker,
    /// Send the request to this worker and no other: the session's dialog worker, or the worker
    /// that is already a participant of `transaction_id`. It waits behind the worker's current
    /// request if there is one. When the worker is gone the call fails at once with
    /// [`AdapterError::PinnedWorkerGone`] (or with [`AdapterError::WorkerLost`] if it dies while
    /// serving this very request). `None`: any worker that takes free work, except that a request
    /// under a transaction a live worker already holds goes to that worker.
    ///
    /// A worker that serves a request with a `transaction_id` becomes pinned to that transaction
    /// (it takes no other free work, is never reaped) until [`ServerClass::commit`] or
    /// [`ServerClass::abort`] resolves it, or [`ServerClass::prepare`] gets a `no`. A worker holds
    /// one transaction at a time: a request naming it under another transaction is refused with
    /// [`AdapterError::Unsupported`].
    pub worker: Option<WorkerId>,
    /// The body element as XML bytes (self-contained: the namespaces it uses are declared on it).
    pub payload: Bytes,
    /// The client's credentials, for a class that binds with them (`bind = "principal"`); the
    /// engine passes them to no other kind of class.
    pub credential: Option<Credential>,
    /// The W3C `traceparent` for this hop, when the client's request carried a trace (the http
    /// adapter sends it; the wire protocol has no place for it yet).
    pub traceparent: Option<String>,
}

/// How the backend answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyStatus {
    /// A normal reply.
    Ok,
    /// A reply within a dialog that stays open.
    DialogContinue,
    /// The server ended the dialog with this reply (Pathsend FEOK after the last reply).
    DialogEnd,
    /// The server aborted the dialog (Pathsend FEEOF).
    DialogAbort,
    /// An application fault: pass it through to the client. The payload is the detail XML (may be empty).
    Fault { code: String, string: String },
    /// The server failed (system error). The payload may hold text for the log.
    Error(String),
}

/// A backend's reply.
#[derive(Debug, Clone)]
pub struct BackendReply {
    pub status: ReplyStatus,
    /// The response element as XML bytes (or the fault detail).
    pub payload: Bytes,
    /// The worker that served it.
    pub worker: WorkerId,
    /// In a dialog: the transaction the server holds open on it (protocol `open-transaction`).
    pub open_transaction: Option<String>,
}

/// What a class reports to the metrics (`GET /metrics`), read when scraped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Live workers (processes, connections; an http class: its slots in use).
    pub workers: usize,
    /// Workers serving a request now.
    pub busy: usize,
    /// Workers that died and were started again since the broker started.
    pub restarts: usize,
    /// Requests waiting for a worker.
    pub queued: usize,
}

/// Why a request did not get a reply. The broker maps each to its dialect's fault.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AdapterError {
    /// No worker can be started or reached (NonStop -301, critical).
    #[error("server class {class}: unreachable: {reason}")]
    Unreachable { class: String, reason: String },
    /// The backend did not reply within `request_timeout` (NonStop -351, retriable). The late reply
    /// is discarded and the worker recycled.
    #[error("server class {class}: no reply within {timeout_ms} ms")]
    Timeout { class: String, timeout_ms: u64 },
    /// Every worker is busy and the queue is full.
    #[error("server class {class}: queue full ({limit} waiting)")]
    QueueFull { class: String, limit: usize },
    /// The worker died or its connection broke while serving the request.
    #[error("server class {class}: worker {worker} failed during the request: {reason}")]
    WorkerLost {
        class: String,
        worker: WorkerId,
        reason: String,
    },
    /// The worker a request or control message was pinned to (a dialog's worker, a transaction's
    /// participant) is gone, and with it the dialog or the transaction's uncommitted work.
    #[error("server class {class}: worker {worker} is gone")]
    PinnedWorkerGone { class: String, worker: WorkerId },
    /// The request cannot be served by this adapter (e.g. a dialog on an http class), or the server
    /// refused a control message (answered `PREPARE`, `COMMIT`, ... with an `error` `REPLY`: not
    /// transactional, cannot do it; the reason says which worker and what it said).
    #[error("server class {class}: {reason}")]
    Unsupported { class: String, reason: String },
    /// The server class is shutting down.
    #[error("server class {class}: shutting down")]
    ShuttingDown { class: String },
}

/// A participant's answer to `PREPARE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vote {
    /// Prepared: the work is durable on the server's side and can still be committed or aborted.
    Yes,
    /// The server rolled its part back; the reason is for the client and the log.
    No(String),
}

/// A named pool of workers behind one adapter.
///
/// `call` is the request path. The transaction and dialog methods are the coordinator's and the
/// session engine's control path; their defaults answer [`AdapterError::Unsupported`], which is
/// right for an adapter that cannot be transactional or context-sensitive (the configuration
/// refuses such classes for it).
///
/// A control message is answered within the class's `request_timeout` like a request, or fails
/// with [`AdapterError::Timeout`] and the worker is killed (its late answer would otherwise be
/// read as the next one's). One sent to a worker that is busy waits behind its current request.
#[async_trait]
pub trait ServerClass: Send + Sync + 'static {
    /// The configured name.
    fn name(&self) -> &str;

    /// The configuration it was built from.
    fn config(&self) -> &ServerClassConfig;

    /// Send one request and wait for its reply (at most the class's `request_timeout`).
    async fn call(&self, request: BackendRequest) -> Result<BackendReply, AdapterError>;

    /// Its figures for the metrics. Default: nothing to report.
    fn stats(&self) -> ClassStats {
        ClassStats::default()
    }

    /// Its workers one by one, for the admin API; `None` for a class without a pool of workers
    /// (the http adapter's slots are not workers).
    fn workers(&self) -> Option<PoolStatus> {
        None
    }

    /// An operator sets how many workers the class keeps (its `min_workers` from now on, at most
    /// `max_workers`): missing ones start at once, idle free ones beyond it stop. Returns the
    /// number kept. Default: not a class of workers.
    fn resize(&self, workers: usize) -> Result<usize, AdapterError> {
        let _ = workers;
        Err(self.unsupported("resizes (it has no pool of workers)"))
    }

    /// An operator asks for every worker to be replaced one by one (the class keeps serving);
    /// `Ok(false)` when a restart is already under way. Progress in [`PoolStatus::restart`].
    fn restart_workers(&self) -> Result<bool, AdapterError> {
        Err(self.unsupported("worker restarts (it has no pool of workers)"))
    }

    /// Phase one of a commit, on the participant `worker`: `PREPARE` → `VOTE`. The worker stays
    /// pinned after a yes and is released after a no. A dead worker → [`AdapterError::PinnedWorkerGone`]
    /// (its uncommitted work died with it: the transaction must abort).
    async fn prepare(&self, worker: &WorkerId, transaction: &str) -> Result<Vote, AdapterError> {
        let _ = (worker, transaction);
        Err(self.unsupported("transactions"))
    }

    /// `COMMIT` (one-phase after no prepare, or phase two) → `ACK`. Sent to `worker` while it
    /// lives (after its current request), otherwise (or with `None`) to any worker of the class,
    /// which resolves the transaction from its durable state; with `None`, a live worker holding
    /// the transaction gets it. Idempotent. Releases the holder's pin on success.
    ///
    /// One exception to "any worker": when this pool saw `worker` die holding the transaction
    /// *unprepared*, its work is lost and no other worker could commit it (they would acknowledge
    /// an unknown transaction), so the commit fails with [`AdapterError::PinnedWorkerGone`]. If
    /// the worker dies while committing, the outcome is unknown: [`AdapterError::WorkerLost`].
    async fn commit(
        &self,
        worker: Option<&WorkerId>,
        transaction: &str,
    ) -> Result<(), AdapterError> {
        let _ = (worker, transaction);
        Err(self.unsupported("transactions"))
    }

    /// `ABORT` → `ACK`, routed like [`ServerClass::commit`]. Idempotent. Releases `worker`'s pin.
    /// Aborting on a dead participant that never prepared succeeds: its work died with it.
    async fn abort(
        &self,
        worker: Option<&WorkerId>,
        transaction: &str,
    ) -> Result<(), AdapterError> {
        let _ = (worker, transaction);
        Err(self.unsupported("transactions"))
    }

    /// `RECOVER` → `RECOVERED`, asked of any worker (an idle unpinned one if there is one): the
    /// transactions the class's servers have prepared and not yet seen resolved. The class's
    /// servers share their durable transaction state, so one worker answers for all.
    async fn recover(&self) -> Result<Vec<String>, AdapterError> {
        Err(self.unsupported("transactions"))
    }

    /// `DIALOG-ABORT` for `session`'s dialog on `worker` → `ACK`; releases the dialog's pin. A dead
    /// worker is not an error here (the dialog is gone either way), nor one that dies or times out
    /// (and is killed) on the way.
    async fn abort_dialog(&self, worker: &WorkerId, session: &str) -> Result<(), AdapterError> {
        let _ = (worker, session);
        Err(self.unsupported("dialogs"))
    }

    /// Whether `worker` is alive (a pinned dialog's or participant's worker).
    fn worker_alive(&self, worker: &WorkerId) -> bool {
        let _ = worker;
        false
    }

    /// The error the default control methods answer.
    fn unsupported(&self, what: &str) -> AdapterError {
        AdapterError::Unsupported {
            class: self.name().to_string(),
            reason: format!(
                "{what} are not supported by the {} adapter",
                self.config().adapter.kind_name()
            ),
        }
    }

    /// Stop accepting requests, let requests in flight finish (up to `grace`), stop the workers.
    async fn shutdown(&self, grace: std::time::Duration);
}

/// Build the server class a configuration describes, spawning its background tasks on `runtime`.
/// Process workers are started (`min_workers`) before this returns; an error names what failed.
pub async fn build(
    config: ServerClassConfig,
    runtime: tokio::runtime::Handle,
) -> Result<Arc<dyn ServerClass>, AdapterError> {
    match config.adapter.clone() {
        AdapterKind::Process { .. } => Ok(process::ProcessClass::start(config, runtime).await?),
        AdapterKind::Tcp { .. } => Ok(tcp::TcpClass::start(config, runtime).await?),
        AdapterKind::Http { .. } => Ok(http::HttpClass::start(config, runtime).await?),
        AdapterKind::Sql { .. } => Ok(sql::SqlClass::start(config, runtime).await?),
        AdapterKind::Ldap(_) => Ok(ldap::LdapClass::start(config, runtime).await?),
    }
}
