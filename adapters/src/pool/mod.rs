//! # The worker pool behind the process and tcp adapters
//!
//! A pool owns a set of *workers*: each is one connection that speaks the wire protocol (a child's
//! stdin/stdout, or a TCP connection), and each serves one request at a time, like a Pathway server
//! process. Where the bytes come from is the [`Connector`]'s business (`process.rs`, `tcp.rs`);
//! everything else is here, in three parts:
//!
//! - `dispatch.rs`: **the policy**, a synchronous state machine with no I/O: handing requests to
//!   workers (LIFO reuse, growth, the bounded FIFO queue), pinning workers to transactions and
//!   dialogs, what a dead worker or a failed start means, restart backoff, reaping, shutdown. Its
//!   module docs are the reference for every dispatch rule, and `tests.rs` checks each one
//!   without a process, a runtime or a sleep.
//! - `worker.rs`: **the I/O**, thin tokio tasks that own the connections, carry out what the
//!   dispatcher decides and tell it what happened.
//! - `backoff.rs`: the doubling restart delay with jitter.
//!
//! [`PoolClass`] puts them together as a [`ServerClass`]; `ProcessClass` and `TcpClass` are
//! `PoolClass` with their connector.
//!
//! ## Who runs what
//!
//! Callers run on whatever runtime the broker's actix worker threads have (one single-threaded
//! runtime each). They never touch a pipe or a socket: [`PoolClass::call`] (and the control
//! methods, `prepare`, `commit`, `abort`, `recover`, `abort_dialog`) encodes the message, submits
//! a job to the dispatcher under a `std::sync::Mutex`, carries out the actions that come out
//! (usually: hand the job to an idle worker's channel), and awaits a `oneshot` with a timer. All
//! I/O happens in tasks, each spawned on its worker's *home* runtime: the caller's runtime for a
//! worker started because a caller found nobody idle, the class's own (`Handle`) for the
//! `min_workers` and replacements (see "Homes" in `dispatch.rs`). A caller served by a worker at
//! home on its own runtime hands nothing to another thread: the worker task runs on the same
//! thread, between the caller's polls.
//!
//! - one **worker task** per worker: it owns the connection, waits for jobs on its own channel,
//!   writes the `REQUEST`, reads the `REPLY` (or notices the deadline, or the worker dying), and
//!   reports to the dispatcher, which answers the caller and names the worker's next job, if any;
//!   the task runs that one at once, without a channel hop;
//! - a **start task** per worker being started (spawn or connect, then the `HELLO` handshake;
//!   after the backoff delay the dispatcher chose); it becomes that worker's task;
//! - one **reaper** that gives the dispatcher its idle tick.
//!
//! Every critical section is short and does no I/O: one dispatcher event and its actions (sending
//! on a channel that has room, answering a `oneshot`, spawning a task).
//!
//! A caller's runtime can end before the pool does (actix stops its worker runtimes before the
//! broker stops its classes), dropping the tasks of the workers at home there. Each start and
//! worker task carries a [`Presence`] guard whose drop reports the worker as vanished, so the
//! dispatcher never waits for a worker whose task no longer exists. Its process is not killed with
//! the task: its stdin closes, and it gets the usual grace to exit before it is killed, watched on
//! the class's runtime (`worker::ChildProcess`); shutdown waits for those stops too.
//!
//! A control message gets its answer within `request_timeout` like a request, or the worker is
//! killed like a request's; a server that answers one with a `REPLY` (`error`: not transactional,
//! cannot do it) has refused it, which the caller gets as [`AdapterError::Unsupported`] with the
//! server's reason.

mod dispatch;
mod worker;

pub mod backoff;
#[cfg(test)]
mod tests;

use async_trait::async_trait;
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::process::Child;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::protocol::{self, Message, OpenHead};
use crate::{
    AdapterError, BackendReply, BackendRequest, DialogMarker, ServerClass, ServerClassConfig, Vote,
    WorkerId,
};
pub use dispatch::RestartStatus;
use dispatch::{
    millis, timeout_error, Action, Answer, Dispatcher, Home, Job, Ticket, Work, WorkerNo,
};

pub type BoxReader = Box<dyn AsyncRead + Send + Unpin>;
pub type BoxWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// How the broker and one worker exchange frames.
pub enum Transport {
    /// A byte stream: a child's stdin and stdout, a TCP connection.
    Stream {
        reader: BoxReader,
        writer: BoxWriter,
    },
    /// An in-process server (the sql and ldap adapters, `inproc.rs`): frames handed over in
    /// memory, their payloads never copied (a search of ten thousand entries is held once).
    Frames(FrameLink),
}

/// A frame as a [`FrameLink`] hands it over: the length prefix with the header block, and the
/// payload (see `protocol::decode_parts`).
pub type FrameParts = (Bytes, Bytes);

/// One end of an in-memory link: frames in, frames out. Each direction holds at most
/// [`FrameLink::DEPTH`] frames (a worker has one exchange in flight at a time, and the channel's
/// bound is the same backpressure a pipe's buffer gives). Dropping an end is closing it: the other
/// end reads the end of the stream.
pub struct FrameLink {
    pub(crate) to_peer: mpsc::Sender<FrameParts>,
    pub(crate) from_peer: mpsc::Receiver<FrameParts>,
}

impl FrameLink {
    const DEPTH: usize = 2;

    /// Two connected ends: the broker's and the server's.
    pub fn pair() -> (FrameLink, FrameLink) {
        let (a_tx, a_rx) = mpsc::channel(Self::DEPTH);
        let (b_tx, b_rx) = mpsc::channel(Self::DEPTH);
        (
            FrameLink {
                to_peer: a_tx,
                from_peer: b_rx,
            },
            FrameLink {
                to_peer: b_tx,
                from_peer: a_rx,
            },
        )
    }

    /// Hand a frame to the other end; fails when it is gone.
    pub async fn send(&self, parts: FrameParts) -> std::io::Result<()> {
        self.to_peer
            .send(parts)
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }

    /// The next frame from the other end, decoded with `max_frame`'s checks; `Ok(None)` once the
    /// other end is gone. Cancel-safe.
    pub async fn recv(
        &mut self,
        max_frame: usize,
    ) -> Result<Option<protocol::Frame>, protocol::ProtocolError> {
        match self.from_peer.recv().await {
            Some((head, payload)) => protocol::decode_parts(head, payload, max_frame).map(Some),
            None => Ok(None),
        }
    }
}

/// A freshly started worker: how to reach it, before the handshake.
pub struct Link {
    pub transport: Transport,
    /// The child process (process adapter), waited for and killed when the worker stops.
    pub child: Option<Child>,
    pub pid: Option<u32>,
    /// Where the worker is, for logs: `pid 4242`, `10.0.0.7:7000`.
    pub peer: String,
}

/// Starts workers: the one thing that differs between the process and tcp adapters.
#[async_trait]
pub trait Connector: Send + Sync + 'static {
    /// Spawn or connect one worker. Runs on the worker's home runtime (the class's own, or the
    /// caller's whose job started it: see "Homes" in `dispatch.rs`). The error is a sentence naming
    /// what failed (the command or address and the OS error).
    async fn connect(&self, worker: &WorkerId) -> Result<Link, String>;
}

/// A worker's state as seen from outside (for status pages and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerStatus {
    pub id: WorkerId,
    /// The process id (process adapter).
    pub pid: Option<u32>,
    /// Serving a request right now.
    pub busy: bool,
    /// Dialogs pinned to it.
    pub dialogs: usize,
    /// The transaction pinned to it, if any.
    pub transaction: Option<String>,
    /// Whether that transaction is prepared on it (it voted yes).
    pub prepared: bool,
    /// Targeted requests waiting for it (in its own queue).
    pub queued: usize,
    /// Requests and control messages it has answered.
    pub served: u64,
}

/// A pool's state as seen from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStatus {
    /// Live workers (those being stopped are not listed).
    pub workers: Vec<WorkerStatus>,
    /// Workers being started.
    pub starting: usize,
    /// Requests waiting for any worker (targeted ones wait in their worker's own queue).
    pub queued: usize,
    /// Workers that died since the pool started (each was replaced, after the backoff).
    pub deaths: u64,
    /// How many workers the class keeps (`min_workers`, or what an operator resized it to).
    pub kept: usize,
    /// The last rolling restart asked for, and how far it is.
    pub restart: Option<RestartStatus>,
}

/// A job's ticket in the real pool: the encoded message and the caller's reply channel.
pub(crate) struct Call {
    /// The message id; the answer must carry it.
    id: u64,
    /// The frame head, encoded once when the call is made; closed by the worker as it writes it.
    head: OpenHead,
    /// Whether the head closes with `timeout-ms` (a `REQUEST`: what is left of the deadline).
    timed: bool,
    payload: Bytes,
    reply: oneshot::Sender<Result<Answer, AdapterError>>,
}

impl Ticket for Call {
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "message {}", self.id)
    }
}

type PoolJob = Job<Call>;

/// The header a request's head closes with: how long the broker will still wait for the reply.
const TIMEOUT_HEADER: &str = "timeout-ms";

/// `now + d` on tokio's clock, saturating far in the future on absurd configurations (the http
/// adapter's deadlines).
pub(crate) fn after(d: Duration) -> tokio::time::Instant {
    tokio::time::Instant::from_std(dispatch::after(Instant::now(), d))
}

/// A server class whose workers speak the wire protocol, started by `C`: `ProcessClass` and
/// `TcpClass`. Dropping it stops the workers.
pub struct PoolClass<C: Connector> {
    shared: Arc<Shared<C>>,
}

/// What the pool's tasks and its callers share.
struct Shared<C> {
    class: String,
    config: ServerClassConfig,
    connector: C,
    runtime: Handle,
    core: Mutex<Core>,
    /// Pinged after every event once shutdown has begun (only shutdown waits on it).
    changed: Notify,
    /// Flipped to `true` once, to stop every task at once.
    stop: watch::Sender<bool>,
    next_message: AtomicU64,
    /// Workers whose task was dropped while `core` was locked (a spawn onto a runtime that has
    /// ended drops the task at once): `(worker, started)`, reported at the next lock.
    vanished: Mutex<Vec<(WorkerNo, bool)>>,
    /// The stops of child processes whose worker task vanished (`worker::ChildProcess`), run on
    /// the class's runtime; shutdown waits for them.
    orphans: tokio_util::task::TaskTracker,
}

/// How many caller runtimes a pool tells apart; callers on further ones count as the class's.
const MAX_HOMES: usize = 64;

/// The dispatcher and the channels to the workers it names.
struct Core {
    dispatch: Dispatcher<Call>,
    /// Each live worker task's job channel (capacity 1: a job is only handed to an idle worker).
    /// Removing a worker's sender is its stop order: its task sees the closed channel.
    links: std::collections::BTreeMap<WorkerNo, mpsc::Sender<PoolJob>>,
    /// The callers' runtimes seen so far; a [`Home`] is an index here.
    homes: Vec<(tokio::runtime::Id, Handle)>,
}

impl Core {
    /// The home of a caller running on `runtime` (`None`: the class's own runtime `class_rt`).
    fn home_of(&mut self, runtime: &Handle, class_rt: &tokio::runtime::Id) -> Option<Home> {
        let id = runtime.id();
        if id == *class_rt {
            return None;
        }
        if let Some(i) = self.homes.iter().position(|(known, _)| *known == id) {
            return Home::try_from(i).ok();
        }
        if self.homes.len() >= MAX_HOMES {
            return None;
        }
        self.homes.push((id, runtime.clone()));
        Home::try_from(self.homes.len() - 1).ok()
    }
}

impl<C: Connector> PoolClass<C> {
    /// Create the pool and start `min_workers` workers, waiting for their handshakes.
    ///
    /// When `require_one` is set (the process adapter) and none of them starts, the pool is torn
    /// down and the first start error returned as `Unreachable`. Otherwise (tcp, where the servers
    /// may come up after the broker) failed starts are logged and retried in the background.
    pub(crate) async fn launch(
        config: ServerClassConfig,
        connector: C,
        runtime: Handle,
        require_one: bool,
    ) -> Result<Arc<Self>, AdapterError> {
        let class = config.name.clone();
        if config.max_workers == 0 || config.min_workers > config.max_workers {
            return Err(AdapterError::Unsupported {
                class,
                reason: format!(
                    "min_workers ({}) and max_workers ({}) must satisfy 1 <= max and min <= max",
                    config.min_workers, config.max_workers
                ),
            });
        }
        let (stop, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            class,
            connector,
            runtime: runtime.clone(),
            core: Mutex::new(Core {
                dispatch: Dispatcher::new(&config, fastrand::Rng::new()),
                links: Default::default(),
                homes: Vec::new(),
            }),
            changed: Notify::new(),
            stop,
            next_message: AtomicU64::new(1),
            vanished: Mutex::new(Vec::new()),
            orphans: tokio_util::task::TaskTracker::new(),
            config,
        });

        let mut reports = Vec::new();
        {
            let mut core = shared.lock();
            core.dispatch.open();
            while let Some(action) = core.dispatch.next_action() {
                if let Action::Start {
                    worker, id, delay, ..
                } = action
                {
                    let (tx, rx) = oneshot::channel();
                    let presence = Presence::new(&shared, worker);
                    let start = shared
                        .clone()
                        .start_worker(worker, id, delay, Some(tx), presence);
                    runtime.spawn(start);
                    reports.push(rx);
                }
            }
        }
        runtime.spawn(shared.clone().reap_loop());
        let class = Arc::new(PoolClass { shared });

        let mut first_error = None;
        let mut started = 0;
        for rx in reports {
            match rx.await {
                Ok(Ok(())) => started += 1,
                Ok(Err(reason)) => {
                    first_error.get_or_insert(reason);
                }
                Err(_) => {
                    first_error.get_or_insert_with(|| "the start task was cancelled".to_string());
                }
            }
        }
        let shared = &class.shared;
        if let Some(reason) = first_error {
            if require_one && started == 0 {
                shared.stop_now();
                return Err(AdapterError::Unreachable {
                    class: shared.class.clone(),
                    reason,
                });
            }
            tracing::warn!(
                class = %shared.class,
                started,
                wanted = shared.config.min_workers,
                "not every worker started ({reason}); retrying in the background"
            );
        }
        Ok(class)
    }

    /// The workers as they are now: ids, pids, busy or idle, pins.
    pub fn status(&self) -> PoolStatus {
        self.shared.lock().dispatch.status()
    }

    /// `COMMIT` (`commit = true`) or `ABORT`.
    async fn resolve(
        &self,
        worker: Option<&WorkerId>,
        transaction: &str,
        commit: bool,
    ) -> Result<(), AdapterError> {
        let shared = &self.shared;
        let (id, transaction) = (shared.message_id(), transaction.to_string());
        let (message, work) = if commit {
            let work = Work::Commit(transaction.clone());
            (Message::Commit { id, transaction }, work)
        } else {
            let work = Work::Abort(transaction.clone());
            (Message::Abort { id, transaction }, work)
        };
        match shared.send(message, work, worker.cloned()).await? {
            Answer::Ack => Ok(()),
            other => Err(shared.mismatch(&other)),
        }
    }
}

impl<C: Connector> Drop for PoolClass<C> {
    fn drop(&mut self) {
        // Nobody can call any more: stop the workers rather than leave them to the runtime.
        self.shared.stop_now();
    }
}

#[async_trait]
impl<C: Connector> ServerClass for PoolClass<C> {
    fn name(&self) -> &str {
        &self.shared.config.name
    }

    fn config(&self) -> &ServerClassConfig {
        &self.shared.config
    }

    fn resize(&self, workers: usize) -> Result<usize, AdapterError> {
        let mut core = self.shared.lock();
        if !core.dispatch.running() {
            return Err(AdapterError::ShuttingDown {
                class: self.shared.class.clone(),
            });
        }
        let kept = core.dispatch.resize(workers);
        self.shared.act(&mut core, None);
        tracing::info!(class = %self.shared.class, kept, "workers resized by an operator");
        Ok(kept)
    }

    fn restart_workers(&self) -> Result<bool, AdapterError> {
        let mut core = self.shared.lock();
        if !core.dispatch.running() {
            return Err(AdapterError::ShuttingDown {
                class: self.shared.class.clone(),
            });
        }
        let begun = core.dispatch.restart();
        self.shared.act(&mut core, None);
        if begun {
            tracing::info!(class = %self.shared.class, "rolling restart of the workers begun by an operator");
        }
        Ok(begun)
    }

    /// Send one request and wait for its reply (at most `request_timeout`, queueing included).
    async fn call(&self, request: BackendRequest) -> Result<BackendReply, AdapterError> {
        let shared = &self.shared;
        let dialog = match request.dialog {
            DialogMarker::None => protocol::Dialog::None,
            DialogMarker::Begin => protocol::Dialog::Begin,
            DialogMarker::Continue if request.worker.is_none() => {
                return Err(AdapterError::Unsupported {
                    class: shared.class.clone(),
                    reason: "a dialog's later request must name the dialog's worker".to_string(),
                })
            }
            DialogMarker::Continue => protocol::Dialog::Continue,
        };
        let id = shared.message_id();
        let work = Work::Request {
            session: request.session_id.clone(),
            transaction: request.transaction_id.clone(),
            dialog: request.dialog,
        };
        let message = Message::Request(protocol::Request {
            credential: request.credential,
            id,
            service: request.service,
            operation: request.operation,
            session: request.session_id,
            transaction: request.transaction_id,
            dialog,
            // Added by the worker as it writes the request: what is left of the deadline then.
            timeout_ms: None,
            payload: request.payload,
        });
        match shared.send(message, work, request.worker).await? {
            Answer::Reply(reply) => Ok(reply),
            other => Err(shared.mismatch(&other)),
        }
    }

    async fn prepare(&self, worker: &WorkerId, transaction: &str) -> Result<Vote, AdapterError> {
        let shared = &self.shared;
        let message = Message::Prepare {
            id: shared.message_id(),
            transaction: transaction.to_string(),
        };
        let work = Work::Prepare(transaction.to_string());
        match shared.send(message, work, Some(worker.clone())).await? {
            Answer::Vote(vote) => Ok(vote),
            other => Err(shared.mismatch(&other)),
        }
    }

    async fn commit(
        &self,
        worker: Option<&WorkerId>,
        transaction: &str,
    ) -> Result<(), AdapterError> {
        self.resolve(worker, transaction, true).await
    }

    async fn abort(
        &self,
        worker: Option<&WorkerId>,
        transaction: &str,
    ) -> Result<(), AdapterError> {
        self.resolve(worker, transaction, false).await
    }

    /// `RECOVER` on any worker: the transactions the class's servers hold prepared.
    async fn recover(&self) -> Result<Vec<String>, AdapterError> {
        let shared = &self.shared;
        let message = Message::Recover {
            id: shared.message_id(),
        };
        match shared.send(message, Work::Recover, None).await? {
            Answer::Recovered(list) => Ok(list),
            other => Err(shared.mismatch(&other)),
        }
    }

    /// `DIALOG-ABORT` for `session` on `worker`. Losing the worker on the way is success too:
    /// the dialog is gone either way, and that is all the caller wants.
    async fn abort_dialog(&self, worker: &WorkerId, session: &str) -> Result<(), AdapterError> {
        let shared = &self.shared;
        let message = Message::DialogAbort {
            id: shared.message_id(),
            session: session.to_string(),
        };
        let work = Work::DialogAbort(session.to_string());
        match shared.send(message, work, Some(worker.clone())).await {
            Ok(Answer::Ack) => Ok(()),
            Ok(other) => Err(shared.mismatch(&other)),
            Err(AdapterError::PinnedWorkerGone { .. } | AdapterError::WorkerLost { .. }) => Ok(()),
            // The worker is killed at the deadline, and the dialog with it.
            Err(AdapterError::Timeout { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn worker_alive(&self, worker: &WorkerId) -> bool {
        self.shared.lock().dispatch.worker_alive(worker)
    }

    fn workers(&self) -> Option<PoolStatus> {
        Some(self.status())
    }

    fn stats(&self) -> crate::ClassStats {
        let status = self.status();
        crate::ClassStats {
            workers: status.workers.len(),
            busy: status.workers.iter().filter(|w| w.busy).count(),
            restarts: usize::try_from(status.deaths).unwrap_or(usize::MAX),
            queued: status.queued + status.workers.iter().map(|w| w.queued).sum::<usize>(),
        }
    }

    /// Stop taking requests, let queued and in-flight ones finish for up to `grace`, then stop the
    /// workers and wait until they are gone.
    async fn shutdown(&self, grace: Duration) {
        let shared = &self.shared;
        if shared.lock().dispatch.drain() {
            tracing::info!(class = %shared.class, "shutting down");
        }
        let drained = shared
            .wait_until(dispatch::after(Instant::now(), grace), |d| d.is_drained())
            .await;
        if !drained {
            tracing::warn!(
                class = %shared.class,
                "requests still in flight after the {grace:?} grace period; stopping anyway"
            );
        }
        shared.stop_now();
        let gone = shared
            .wait_until(
                dispatch::after(Instant::now(), worker::STOP_WAIT * 2),
                |d| d.is_empty(),
            )
            .await;
        if !gone {
            tracing::warn!(class = %shared.class, "some workers did not stop in time");
        }
        // The processes of workers that went with their callers' runtimes, given their time to
        // exit (bounded by their own STOP_WAIT and kill).
        shared.orphans.close();
        if tokio::time::timeout(worker::STOP_WAIT * 3, shared.orphans.wait())
            .await
            .is_err()
        {
            tracing::warn!(class = %shared.class, "some worker processes did not exit in time");
        }
    }
}

impl<C: Connector> Shared<C> {
    /// Lock the dispatcher, first telling it of workers that vanished while it was locked. The
    /// actions that may come of that are carried out by the holder's next [`Shared::act`].
    fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock leaves consistent-enough state (every critical section
        // is short and does no I/O); keep serving rather than poison every later call.
        let mut core = self.core.lock().unwrap_or_else(|e| e.into_inner());
        self.settle_vanished(&mut core);
        core
    }

    /// Tell the dispatcher of the workers reported vanished; `true` if there were any.
    fn settle_vanished(&self, core: &mut Core) -> bool {
        let gone = std::mem::take(&mut *self.vanished.lock().unwrap_or_else(|e| e.into_inner()));
        for &(worker, started) in &gone {
            core.links.remove(&worker);
            core.dispatch.vanished(worker, started, Instant::now());
        }
        !gone.is_empty()
    }

    fn message_id(&self) -> u64 {
        self.next_message.fetch_add(1, Ordering::Relaxed)
    }

    /// An answer of the wrong type: cannot happen (the worker task checks the kind), but a wrong
    /// answer must not become a panic.
    fn mismatch(&self, answer: &Answer) -> AdapterError {
        AdapterError::Unreachable {
            class: self.class.clone(),
            reason: format!("internal error: unexpected answer {answer:?}"),
        }
    }

    /// Check, submit and await one message (at most `request_timeout`, queueing included).
    async fn send(
        self: &Arc<Self>,
        message: Message,
        work: Work,
        target: Option<WorkerId>,
    ) -> Result<Answer, AdapterError> {
        // Encode the head once, here in the caller's thread, refusing what cannot be sent; the
        // payload is not copied. A request's `timeout-ms` is checked at its longest (the whole
        // timeout) and written by the worker.
        let timeout = self.config.request_timeout;
        let timed = matches!(message, Message::Request(_));
        let unsendable = |e: protocol::ProtocolError| AdapterError::Unsupported {
            class: self.class.clone(),
            reason: format!("the {} cannot be sent: {e}", work.name()),
        };
        let frame = message.to_frame().map_err(unsendable)?;
        let head = OpenHead::new(&frame).map_err(unsendable)?;
        let longest = timed.then_some((TIMEOUT_HEADER, millis(timeout)));
        head.check(longest, self.config.max_frame_bytes)
            .map_err(unsendable)?;
        let now = Instant::now();
        let deadline = dispatch::after(now, timeout);
        let (tx, rx) = oneshot::channel();
        // The caller's runtime is the job's home only where the class asks for it (`worker_io`).
        let caller_rt = match self.config.worker_io {
            crate::WorkerIo::Caller => Handle::try_current().ok(),
            crate::WorkerIo::Class => None,
        };
        let mut job = Job {
            work,
            target,
            deadline,
            home: None,
            ticket: Call {
                id: message.id(),
                head,
                timed,
                payload: frame.payload,
                reply: tx,
            },
        };
        {
            let mut core = self.lock();
            if let Some(rt) = &caller_rt {
                job.home = core.home_of(rt, &self.runtime.id());
            }
            core.dispatch.submit(job, now);
            self.act(&mut core, None);
        }
        let deadline = tokio::time::Instant::from_std(deadline);
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(result)) => result,
            // The job was dropped unanswered: only happens when the runtime is going away.
            Ok(Err(_)) => Err(AdapterError::ShuttingDown {
                class: self.class.clone(),
            }),
            Err(_) => Err(timeout_error(&self.class, timeout)),
        }
    }

    /// Carry out the dispatcher's actions. A job for worker `me` (the calling worker task) is
    /// returned instead of being sent on its channel: the task runs it next.
    fn act(self: &Arc<Self>, core: &mut Core, me: Option<WorkerNo>) -> Option<PoolJob> {
        let mut mine = None;
        while let Some(action) = core.dispatch.next_action() {
            match action {
                Action::Run { worker, job } if Some(worker) == me && mine.is_none() => {
                    mine = Some(job)
                }
                Action::Run { worker, job } => {
                    let sent = match core.links.get(&worker) {
                        Some(tx) => tx.try_send(job).map_err(|e| e.into_inner()),
                        None => Err(job),
                    };
                    if let Err(job) = sent {
                        core.links.remove(&worker);
                        core.dispatch.undeliverable(worker, job, Instant::now());
                    }
                }
                Action::Answer { ticket, result } => {
                    let _ = ticket.reply.send(result);
                }
                Action::Start {
                    worker,
                    id,
                    delay,
                    home,
                } => {
                    let runtime = home
                        .and_then(|h| core.homes.get(h as usize))
                        .map_or(&self.runtime, |(_, rt)| rt);
                    // Made before the task, so that a task dropped unpolled (its runtime ended)
                    // is reported too.
                    let presence = Presence::new(self, worker);
                    runtime.spawn(self.clone().start_worker(worker, id, delay, None, presence));
                }
                Action::Stop { worker } => {
                    core.links.remove(&worker);
                }
            }
        }
        if !core.dispatch.running() {
            self.changed.notify_waiters();
        }
        mine
    }

    /// Stop everything now: fail what waits, stop every worker, signal every task.
    fn stop_now(self: &Arc<Self>) {
        {
            let mut core = self.lock();
            core.dispatch.stop();
            self.act(&mut core, None);
        }
        self.stop.send_replace(true);
        self.changed.notify_waiters();
    }

    /// Wait until `cond` holds (re-checked whenever the pool changes) or the deadline passes.
    async fn wait_until(
        self: &Arc<Self>,
        deadline: Instant,
        cond: impl Fn(&Dispatcher<Call>) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::from_std(deadline);
        let check = || {
            let mut core = self.core.lock().unwrap_or_else(|e| e.into_inner());
            // What settling a vanished worker asked for (answers, mostly) is carried out now. Only
            // then: `act` wakes the waiters while the pool stops, this one included, and a check
            // that woke itself would spin without ever letting the workers' tasks run.
            if self.settle_vanished(&mut core) {
                self.act(&mut core, None);
            }
            cond(&core.dispatch)
        };
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Register before checking, so a change between the check and the await is not lost.
            notified.as_mut().enable();
            if check() {
                return true;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => return check(),
            }
        }
    }

    /// Give the dispatcher its idle tick, a few times per `idle_timeout`.
    async fn reap_loop(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let idle_timeout = self.config.idle_timeout;
        let period = (idle_timeout / 4).clamp(Duration::from_millis(20), Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = worker::stopped(&mut stop) => return,
            }
            let mut core = self.lock();
            core.dispatch.reap(Instant::now());
            self.act(&mut core, None);
        }
    }
}

/// Reports its worker as vanished when dropped armed: the task carrying it was dropped by its
/// runtime (see "Who runs what"). Disarmed by the task before it reports the worker's end itself.
pub(crate) struct Presence<C: Connector> {
    shared: Arc<Shared<C>>,
    worker: WorkerNo,
    /// The worker got past its handshake (it has a slot in the dispatcher).
    started: bool,
    armed: bool,
}

impl<C: Connector> Presence<C> {
    fn new(shared: &Arc<Shared<C>>, worker: WorkerNo) -> Self {
        Presence {
            shared: shared.clone(),
            worker,
            started: false,
            armed: true,
        }
    }

    pub(crate) fn started(&mut self) {
        self.started = true;
    }

    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }
}

impl<C: Connector> Drop for Presence<C> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let shared = &self.shared;
        shared
            .vanished
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((self.worker, self.started));
        // Settled at once unless the dispatcher is locked (perhaps by this very thread, spawning
        // onto a runtime that has ended); then by the next lock.
        if let Ok(mut core) = shared.core.try_lock() {
            shared.settle_vanished(&mut core);
            shared.act(&mut core, None);
        }
        shared.changed.notify_waiters();
    }
}
