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
//!
//! Every adapter may be called from any tokio runtime: its background tasks run on the runtime handle
//! given to [`build`], and callers only await channels and timers.
//!
//! The crate also holds `sample-server`, the small program that plays the sample application's
//! legacy server classes.

pub mod config;
pub mod http;
pub mod process;
pub mod protocol;
pub mod sample;
pub mod tcp;

mod pool;

pub use config::{AdapterKind, Context, ServerClassConfig};

use async_trait::async_trait;
use bytes::Bytes;
use std::sync::Arc;

/// Which worker served a request: `"<class>#<n>"`. Dialogs and transaction participants name it.
pub type WorkerId = String;

/// Where a request stands with respect to a dialog (a Pathsend dialog, a NonStop subsession).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialogMarker {
    /// A context-free request: any worker.
    None,
    /// Open a dialog: any worker with room for one more, which is then pinned.
    Begin,
    /// Continue the dialog held by this worker.
    Continue(WorkerId),
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
    /// The body element as XML bytes (self-contained: the namespaces it uses are declared on it).
    pub payload: Bytes,
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
    /// The dialog's worker is gone (the dialog is lost).
    #[error("server class {class}: dialog worker {worker} is gone")]
    DialogLost { class: String, worker: WorkerId },
    /// The request cannot be served by this adapter (e.g. a dialog on an http class).
    #[error("server class {class}: {reason}")]
    Unsupported { class: String, reason: String },
    /// The server class is shutting down.
    #[error("server class {class}: shutting down")]
    ShuttingDown { class: String },
}

/// A named pool of workers behind one adapter.
#[async_trait]
pub trait ServerClass: Send + Sync + 'static {
    /// The configured name.
    fn name(&self) -> &str;

    /// The configuration it was built from.
    fn config(&self) -> &ServerClassConfig;

    /// Send one request and wait for its reply (at most the class's `request_timeout`).
    async fn call(&self, request: BackendRequest) -> Result<BackendReply, AdapterError>;

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
    }
}
