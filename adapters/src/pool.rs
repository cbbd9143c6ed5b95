//! # The worker pool behind the process and tcp adapters
//!
//! A pool owns a set of *workers*: each is one connection that speaks the wire protocol (a child's
//! stdin/stdout, or a TCP connection), and each serves one request at a time, like a Pathway server
//! process. Where the bytes come from is the [`Connector`]'s business; everything else is here:
//! handing requests to workers, queueing, growing, timeouts, replacing dead workers, reaping idle
//! ones, and shutdown.
//!
//! ## Who runs what
//!
//! Callers run on whatever runtime the broker's actix worker threads have (one single-threaded
//! runtime each). They never touch a pipe or a socket: [`Pool::call`] (and the control methods,
//! `prepare`, `resolve`, `recover`, `abort_dialog`) checks that the message can be encoded, puts a
//! [`Job`] in the shared state under a `std::sync::Mutex`, and awaits a `oneshot` with a timer. All
//! I/O happens in tasks spawned on the class's own runtime (`Handle`):
//!
//! - one **worker task** per worker: it owns the connection, waits for jobs on its own channel,
//!   writes the `REQUEST` (its header block encoded only now, because `timeout-ms` tells the server
//!   what is left of the deadline; the payload is written as it is, not copied), reads the `REPLY`
//!   (or notices the deadline, or the worker dying), answers the caller, then asks the pool for the
//!   next job it may take before going idle;
//! - a **start task** per worker being started (spawn or connect, then the `HELLO` handshake; after
//!   a backoff delay when it replaces a worker that failed); it becomes that worker's task;
//! - one **reaper** that stops workers idle longer than `idle_timeout` above `min_workers`.
//!
//! ## Dispatch
//!
//! A context-free request goes to an idle worker if there is one. Idle workers form a **LIFO
//! stack**: the worker that finished last is reused first. Under light load that keeps the same few
//! workers warm (hot caches, already paged in) while the surplus ages at the bottom of the stack,
//! where the reaper finds it; round robin would keep every worker just busy enough never to be
//! reaped. Under heavy load every worker is busy anyway, so LIFO costs no fairness.
//!
//! With no idle worker, the pool grows (when `workers + starting < max_workers`, and only if the
//! workers already starting are spoken for) and the request waits in a FIFO queue, from which a
//! worker that goes idle takes the first job it may serve (see pinning, below). The queue holds
//! at most `queue_limit` requests plus one per worker being started (those are the new workers'
//! first jobs); beyond that the caller gets [`AdapterError::QueueFull`] at once, because a bounded
//! wait with a clear fault beats an unbounded one.
//!
//! ## Failure
//!
//! - **Timeout**: every job carries a deadline (`request_timeout` from the call). The caller stops
//!   waiting at the deadline; the worker task, racing the same deadline, kills the worker (its late
//!   reply would otherwise arrive as the answer to the next request) and a replacement starts.
//! - **A worker dies** (EOF, broken pipe, a malformed frame, a reply with the wrong id): the request
//!   it held fails with [`AdapterError::WorkerLost`], the worker is closed, and a replacement starts
//!   after a backoff that doubles from `restart_backoff` to `restart_backoff_max` while failures
//!   follow each other; a successful reply resets it.
//! - **Cannot start at all**: when a start attempt fails and no worker is alive, the queued requests
//!   fail with [`AdapterError::Unreachable`] (the start error is the reason), and so do new ones
//!   until a worker is up again; retries continue in the background. Nobody waits for a class that
//!   is down.
//!
//! Worker numbers are never reused (`echo#7` is followed by `echo#8`, whatever died): a dialog or a
//! prepared transaction that names a dead worker must not land on its replacement.
//!
//! ## Pinning: transactions and dialogs
//!
//! Some workers hold state that lives only in their memory, and then only they may serve what
//! comes next. Each worker record keeps two **pins**:
//!
//! - a **transaction pin**, the one transaction id it holds (at most one: the worker keeps the
//!   transaction's uncommitted work and its locks in memory). A worker becomes pinned after it
//!   answers a request that carried a `transaction_id`, whatever the reply's status (it may have
//!   done work before failing). `PREPARE` answered `yes` marks the pin *prepared* (the work is now
//!   durable on the server's side); a `no`, or an `ACK` to `COMMIT`/`ABORT`, releases it.
//! - the **dialogs** it holds, by session: a `DialogMarker::Begin` request whose reply leaves the
//!   dialog open (`dialog-continue`, `ok`, `fault`, `error`) adds its session; a `dialog-end` or
//!   `dialog-abort` reply to a `Continue`, or the `ACK` to a broker's `DIALOG-ABORT`, removes it
//!   (so ending or aborting a dialog twice never releases another session's).
//!
//! A worker with a transaction pin takes no free work at all; one holding dialogs takes only
//! further `Begin`s, while it has room (`max_dialogs_per_worker`); and the reaper never stops a
//! pinned worker. What a pinned worker does serve is **targeted** work: a request or control
//! message naming it ([`BackendRequest::worker`], `prepare`, `commit`, `abort`, `abort_dialog`).
//! Targeted jobs go to the worker's **own FIFO**, behind the request it may be serving for the same
//! session, never to another worker. When the named worker is gone, a request or `PREPARE` fails
//! with [`AdapterError::PinnedWorkerGone`] at once (the dialog or the uncommitted work died with
//! it), `DIALOG-ABORT` succeeds (the dialog is gone either way), and `COMMIT`/`ABORT` go to any
//! live worker, which resolves the transaction from the class's shared durable state. One
//! exception: the pool remembers the transactions whose worker died holding them *unprepared*,
//! and a `COMMIT` of one of those fails with `PinnedWorkerGone` instead of being acknowledged by a
//! worker that never saw the work (a one-phase commit must not report success for lost work).
//!
//! Untargeted control messages (`RECOVER`, `COMMIT`/`ABORT` without a worker) go to any idle
//! worker, unpinned ones first: they touch no in-memory state, so even a pinned worker may answer
//! them. An untargeted request, `COMMIT` or `ABORT` for a transaction that a live worker holds
//! goes to that worker: it holds the work, and a transaction never pins two workers of a class.
//! A targeted `Begin` opens the dialog on the named worker whatever its dialog count (the caller
//! chose it, e.g. the transaction's participant); a targeted request under a transaction other
//! than the one its worker holds is refused ([`AdapterError::Unsupported`]): one transaction per
//! worker.
//!
//! A control message gets its answer within `request_timeout` like a request, or the worker is
//! killed like a request's; a server that answers one with a `REPLY` (`error`: not transactional,
//! cannot do it) has refused it, which the caller gets as [`AdapterError::Unsupported`] with the
//! server's reason.

use async_trait::async_trait;
use bytes::Buf;
use std::collections::{BTreeMap, VecDeque};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::process::Child;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::Instant;

use crate::protocol::{self, FrameReader, Hello, Message};
use crate::{
    AdapterError, BackendReply, BackendRequest, DialogMarker, ReplyStatus, ServerClassConfig, Vote,
    WorkerId,
};

/// How long a new worker has to start (or connect) and answer `HELLO`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a worker gets to exit after its stdin closes before it is killed.
const STOP_WAIT: Duration = Duration::from_secs(2);
/// How long to wait for the exit status of a worker whose output just closed (for the log).
const EXIT_STATUS_WAIT: Duration = Duration::from_millis(300);

pub(crate) type BoxReader = Box<dyn AsyncRead + Send + Unpin>;
pub(crate) type BoxWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// A freshly started worker: its byte streams, before the handshake.
pub(crate) struct Link {
    pub reader: BoxReader,
    pub writer: BoxWriter,
    /// The child process (process adapter), waited for and killed when the worker stops.
    pub child: Option<Child>,
    pub pid: Option<u32>,
    /// Where the worker is, for logs: `pid 4242`, `10.0.0.7:7000`.
    pub peer: String,
}

/// Starts workers: the one thing that differs between the process and tcp adapters.
#[async_trait]
pub(crate) trait Connector: Send + Sync + 'static {
    /// Spawn or connect one worker. Runs on the class's runtime. The error is a sentence naming
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
}

/// What a job asks of its worker; decides which answer is expected and how it changes the pins.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Work {
    Request {
        session: Option<String>,
        transaction: Option<String>,
        dialog: DialogMarker,
    },
    Prepare(String),
    Commit(String),
    Abort(String),
    Recover,
    /// Of this session's dialog.
    DialogAbort(String),
}

/// Which workers may take an untargeted job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Context-free work: an unpinned worker.
    Free,
    /// A dialog `Begin`: a worker without a transaction and with dialog room.
    Begin,
    /// A control message: any worker (unpinned ones preferred).
    Any,
}

impl Work {
    fn need(&self) -> Need {
        match self {
            Work::Request {
                dialog: DialogMarker::Begin,
                ..
            } => Need::Begin,
            Work::Request { .. } => Need::Free,
            _ => Need::Any,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Work::Request { .. } => "REQUEST",
            Work::Prepare(_) => "PREPARE",
            Work::Commit(_) => "COMMIT",
            Work::Abort(_) => "ABORT",
            Work::Recover => "RECOVER",
            Work::DialogAbort(_) => "DIALOG-ABORT",
        }
    }
}

/// A worker's answer, typed by what was asked.
#[derive(Debug)]
enum Answer {
    Reply(BackendReply),
    Vote(Vote),
    Ack,
    Recovered(Vec<String>),
}

/// One message on its way, checked up front (in the caller's thread), with its deadline and the
/// channel its answer goes back on. Encoding happens when it is sent, because a request's
/// `timeout-ms` header says how much of the deadline is left by then.
struct Job {
    id: u64,
    message: Message,
    work: Work,
    /// The worker it must run on (nobody else), or `None` for any suitable worker.
    target: Option<WorkerId>,
    deadline: Instant,
    reply: oneshot::Sender<Result<Answer, AdapterError>>,
}

impl Job {
    fn answer(self, result: Result<Answer, AdapterError>) {
        let _ = self.reply.send(result);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// `shutdown` called: no new requests; queued and in-flight ones finish.
    Draining,
    /// Workers are being stopped.
    Stopped,
}

/// A worker's transaction pin.
struct Pin {
    transaction: String,
    /// It voted yes: the work is durable on the server's side, any worker can resolve it.
    prepared: bool,
}

/// The pool's record of one worker.
struct Slot {
    id: WorkerId,
    pid: Option<u32>,
    /// Jobs for an idle worker. `None` once the worker is being stopped: its task sees the closed
    /// channel and exits, so "retire" needs no message of its own.
    tx: Option<mpsc::Sender<Job>>,
    busy: bool,
    /// Targeted jobs waiting for this worker to finish its current one (served before the shared
    /// queue, in order).
    own: VecDeque<Job>,
    /// The transaction it holds in memory.
    txn: Option<Pin>,
    /// The sessions whose dialogs it holds (a session without an id counts as `""`). Sessions
    /// rather than a count, so that ending or aborting one twice cannot release another's pin.
    dialogs: Vec<String>,
    idle_since: Instant,
    served: u64,
}

impl Slot {
    fn live(&self) -> bool {
        self.tx.is_some()
    }

    fn pinned(&self) -> bool {
        self.txn.is_some() || !self.dialogs.is_empty()
    }

    /// Whether it may take an untargeted job of this kind.
    fn takes(&self, need: Need, max_dialogs: usize) -> bool {
        self.live()
            && match need {
                Need::Free => !self.pinned(),
                Need::Begin => self.txn.is_none() && self.dialogs.len() < max_dialogs.max(1),
                Need::Any => true,
            }
    }

    fn holds(&self, transaction: &str) -> bool {
        self.txn
            .as_ref()
            .is_some_and(|p| p.transaction == transaction)
    }
}

/// The class is down: the last start attempt failed and no worker is alive.
struct Down {
    reason: String,
    retry_at: Instant,
}

/// How many lost unprepared transactions the pool remembers (oldest forgotten first).
const LOST_MEMORY: usize = 4096;

struct State {
    phase: Phase,
    workers: BTreeMap<u64, Slot>,
    /// Idle live workers, pinned or not, a LIFO stack (the top is the most recently used).
    idle: Vec<u64>,
    /// Untargeted jobs waiting for a worker that takes them.
    queue: VecDeque<Job>,
    /// Start tasks under way (including those sleeping through a backoff).
    starting: usize,
    next_worker: u64,
    /// Consecutive failures (dead workers, failed starts) since the last good reply: the backoff.
    failures: u32,
    down: Option<Down>,
    /// `(transaction, worker)`: workers that died holding the transaction unprepared, so that a
    /// `COMMIT` of it fails instead of being acknowledged by a worker that never saw the work.
    lost: VecDeque<(String, WorkerId)>,
}

impl State {
    fn live(&self) -> usize {
        self.workers.values().filter(|s| s.live()).count()
    }

    fn busy(&self) -> usize {
        self.workers.values().filter(|s| s.busy).count()
    }

    /// The live worker with this id.
    fn find(&self, id: &str) -> Option<u64> {
        self.workers
            .iter()
            .find(|(_, s)| s.live() && s.id == id)
            .map(|(no, _)| *no)
    }

    /// The live worker holding this transaction.
    fn holder(&self, transaction: &str) -> Option<&Slot> {
        self.workers
            .values()
            .find(|s| s.live() && s.holds(transaction))
    }

    /// The next job worker `no` should run: its own queue first, then the first shared job it
    /// takes. Jobs whose callers stopped waiting are dropped (or answered) on the way.
    fn next_for(&mut self, no: u64, class: &str, config: &ServerClassConfig) -> Option<Job> {
        let State { workers, queue, .. } = self;
        let slot = workers.get_mut(&no)?;
        let now = Instant::now();
        let waiting = |job: Job| -> Option<Job> {
            if job.reply.is_closed() {
                return None; // the caller gave up (its own timer, or its client went away)
            }
            if job.deadline <= now {
                job.answer(Err(timeout_error(class, config.request_timeout)));
                return None;
            }
            Some(job)
        };
        while let Some(job) = slot.own.pop_front() {
            if let Some(job) = waiting(job) {
                return Some(job);
            }
        }
        let mut i = 0;
        while i < queue.len() {
            let stale = queue[i].reply.is_closed() || queue[i].deadline <= now;
            if stale || slot.takes(queue[i].work.need(), config.max_dialogs_per_worker) {
                if let Some(job) = queue.remove(i).and_then(waiting) {
                    return Some(job);
                }
            } else {
                i += 1;
            }
        }
        None
    }
}

/// Give a job to the idle worker `no` (already taken off the idle stack). Gives the job back when
/// the worker's task has just ended (it will remove its slot).
// The job comes back by value in that rare case; boxing it would allocate on every dispatch.
#[allow(clippy::result_large_err)]
fn hand(st: &mut State, no: u64, job: Job) -> Result<(), Job> {
    let Some(slot) = st.workers.get_mut(&no) else {
        return Err(job);
    };
    let Some(tx) = &slot.tx else {
        return Err(job);
    };
    match tx.try_send(job) {
        Ok(()) => {
            slot.busy = true;
            Ok(())
        }
        Err(e) => {
            slot.tx = None;
            Err(e.into_inner())
        }
    }
}

/// What an answer means for the pins of the worker that gave it.
fn apply(slot: &mut Slot, work: &Work, answer: &Answer) {
    let ended =
        |status: &ReplyStatus| matches!(status, ReplyStatus::DialogEnd | ReplyStatus::DialogAbort);
    match (work, answer) {
        (
            Work::Request {
                session,
                transaction,
                dialog,
            },
            Answer::Reply(reply),
        ) => {
            let session = session.as_deref().unwrap_or_default();
            // Whatever the status: the worker may have done work under it before failing.
            if let Some(t) = transaction {
                if !slot.holds(t) {
                    slot.txn = Some(Pin {
                        transaction: t.clone(),
                        prepared: false,
                    });
                }
            }
            match dialog {
                // A second `begin` of the same session replaces its dialog: still one.
                DialogMarker::Begin
                    if !ended(&reply.status) && !slot.dialogs.iter().any(|s| s == session) =>
                {
                    slot.dialogs.push(session.to_string())
                }
                DialogMarker::Continue if ended(&reply.status) => {
                    slot.dialogs.retain(|s| s != session)
                }
                _ => {}
            }
        }
        (Work::Prepare(t), Answer::Vote(vote)) if slot.holds(t) => match vote {
            Vote::Yes => {
                if let Some(pin) = &mut slot.txn {
                    pin.prepared = true;
                }
            }
            // A no means the server has rolled its part back.
            Vote::No(_) => slot.txn = None,
        },
        (Work::Commit(t) | Work::Abort(t), Answer::Ack) if slot.holds(t) => slot.txn = None,
        (Work::DialogAbort(session), Answer::Ack) => slot.dialogs.retain(|s| s != session),
        _ => {}
    }
}

/// A duration in whole milliseconds, saturating.
fn millis(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

/// `now + d`, saturating far in the future instead of overflowing on absurd configurations.
pub(crate) fn after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

fn timeout_error(class: &str, timeout: Duration) -> AdapterError {
    AdapterError::Timeout {
        class: class.to_string(),
        timeout_ms: millis(timeout),
    }
}

/// `impl ServerClass` for a pool-backed class: a struct with `config: ServerClassConfig` and
/// `pool: Pool` fields. The process and tcp classes differ only in their [`Connector`], so their
/// trait implementations are this one, written once.
macro_rules! pool_server_class {
    ($class:ty) => {
        #[async_trait::async_trait]
        impl $crate::ServerClass for $class {
            fn name(&self) -> &str {
                &self.config.name
            }

            fn config(&self) -> &$crate::ServerClassConfig {
                &self.config
            }

            async fn call(
                &self,
                request: $crate::BackendRequest,
            ) -> Result<$crate::BackendReply, $crate::AdapterError> {
                self.pool.call(request).await
            }

            async fn prepare(
                &self,
                worker: &$crate::WorkerId,
                transaction: &str,
            ) -> Result<$crate::Vote, $crate::AdapterError> {
                self.pool.prepare(worker, transaction).await
            }

            async fn commit(
                &self,
                worker: Option<&$crate::WorkerId>,
                transaction: &str,
            ) -> Result<(), $crate::AdapterError> {
                self.pool.resolve(worker, transaction, true).await
            }

            async fn abort(
                &self,
                worker: Option<&$crate::WorkerId>,
                transaction: &str,
            ) -> Result<(), $crate::AdapterError> {
                self.pool.resolve(worker, transaction, false).await
            }

            async fn recover(&self) -> Result<Vec<String>, $crate::AdapterError> {
                self.pool.recover().await
            }

            async fn abort_dialog(
                &self,
                worker: &$crate::WorkerId,
                session: &str,
            ) -> Result<(), $crate::AdapterError> {
                self.pool.abort_dialog(worker, session).await
            }

            fn worker_alive(&self, worker: &$crate::WorkerId) -> bool {
                self.pool.worker_alive(worker)
            }

            async fn shutdown(&self, grace: std::time::Duration) {
                self.pool.shutdown(grace).await
            }
        }
    };
}
pub(crate) use pool_server_class;

/// A handle on a pool. Dropping it stops the workers.
pub(crate) struct Pool {
    shared: Arc<Shared>,
}

struct Shared {
    class: String,
    config: ServerClassConfig,
    connector: Box<dyn Connector>,
    runtime: Handle,
    state: Mutex<State>,
    /// Pinged whenever a worker goes idle or away, or a start ends (shutdown waits on it).
    changed: Notify,
    /// Flipped to `true` once, to stop every task at once.
    stop: watch::Sender<bool>,
    next_message: AtomicU64,
}

/// How a worker task ended, which decides how its connection is closed.
enum Ending {
    /// Reaped or shut down: close stdin, give it `STOP_WAIT`, then kill.
    Retired,
    /// Its request timed out: kill it (its late reply must never be read as another's).
    Recycled,
    /// It broke the protocol: kill it. Counts as a failure for the restart backoff.
    Killed(String),
    /// It died on its own (EOF, broken pipe): collect the exit status. Counts as a failure.
    Lost(String),
}

enum Outcome {
    Answered(Answer),
    /// Answer the caller with this error; the worker itself is fine.
    Refused(AdapterError),
    TimedOut,
    /// The worker is unusable (reason, and whether it must be killed rather than waited for).
    Broken(String, bool),
    Stopped,
}

/// A started, handshaken worker connection.
struct Conn {
    reader: FrameReader<BoxReader>,
    writer: BoxWriter,
    child: Option<Child>,
    pid: Option<u32>,
    peer: String,
    /// The largest frame this server accepts (its `HELLO` may lower ours).
    send_max: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Close {
    Graceful,
    Kill,
    Dead,
}

impl Conn {
    /// Close the connection and, for a process, make sure it is gone (and reaped).
    async fn close(self, how: Close) -> Option<ExitStatus> {
        let Conn {
            reader,
            mut writer,
            child,
            ..
        } = self;
        // Closing stdin (or half-closing the socket) is the polite "please exit".
        let _ = writer.shutdown().await;
        drop(writer);
        drop(reader);
        let mut child = child?;
        let wait = match how {
            Close::Graceful => STOP_WAIT,
            Close::Dead => EXIT_STATUS_WAIT,
            Close::Kill => Duration::ZERO,
        };
        if !wait.is_zero() {
            if let Ok(Ok(status)) = tokio::time::timeout(wait, child.wait()).await {
                return Some(status);
            }
        }
        let _ = child.start_kill();
        // SIGKILL cannot be ignored, so this wait is short; the bound is for a stuck kernel.
        match tokio::time::timeout(STOP_WAIT, child.wait()).await {
            Ok(Ok(status)) => Some(status),
            _ => None,
        }
    }
}

/// Append the exit status to a reason, when there is one.
fn with_status(reason: String, status: Option<ExitStatus>) -> String {
    match status {
        Some(status) => format!("{reason} ({status})"),
        None => reason,
    }
}

/// Resolves once the pool is told to stop.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    loop {
        let stop = *rx.borrow_and_update();
        if stop || rx.changed().await.is_err() {
            return;
        }
    }
}

impl Pool {
    /// Create the pool and start `min_workers` workers, waiting for their handshakes.
    ///
    /// When `require_one` is set (the process adapter) and none of them starts, the pool is torn
    /// down and the first start error returned as `Unreachable`. Otherwise (tcp, where the servers
    /// may come up after the broker) failed starts are logged and retried in the background.
    pub(crate) async fn start(
        config: ServerClassConfig,
        connector: Box<dyn Connector>,
        runtime: Handle,
        require_one: bool,
    ) -> Result<Pool, AdapterError> {
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
            state: Mutex::new(State {
                phase: Phase::Running,
                workers: BTreeMap::new(),
                idle: Vec::new(),
                queue: VecDeque::new(),
                starting: 0,
                next_worker: 1,
                failures: 0,
                down: None,
                lost: VecDeque::new(),
            }),
            changed: Notify::new(),
            stop,
            next_message: AtomicU64::new(1),
            config,
        });

        let mut reports = Vec::new();
        {
            let mut st = shared.lock();
            for _ in 0..shared.config.min_workers {
                let (tx, rx) = oneshot::channel();
                shared.spawn_start(&mut st, Duration::ZERO, Some(tx));
                reports.push(rx);
            }
        }
        runtime.spawn(shared.clone().reap_loop());
        let pool = Pool { shared };

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
        if let Some(reason) = first_error {
            if require_one && started == 0 {
                pool.shared.stop_now();
                return Err(AdapterError::Unreachable {
                    class: pool.shared.class.clone(),
                    reason,
                });
            }
            tracing::warn!(
                class = %pool.shared.class,
                started,
                wanted = pool.shared.config.min_workers,
                "not every worker started ({reason}); retrying in the background"
            );
        }
        Ok(pool)
    }

    /// Send one request and wait for its reply (at most `request_timeout`, queueing included).
    pub(crate) async fn call(&self, request: BackendRequest) -> Result<BackendReply, AdapterError> {
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
            id,
            service: request.service,
            operation: request.operation,
            session: request.session_id,
            transaction: request.transaction_id,
            dialog,
            // The whole timeout for the check; lowered to what is left when it is sent.
            timeout_ms: Some(millis(shared.config.request_timeout)),
            payload: request.payload,
        });
        match shared.send(message, work, request.worker).await? {
            Answer::Reply(reply) => Ok(reply),
            other => Err(shared.mismatch(&other)),
        }
    }

    /// `PREPARE` on the participant `worker`: see [`crate::ServerClass::prepare`].
    pub(crate) async fn prepare(
        &self,
        worker: &WorkerId,
        transaction: &str,
    ) -> Result<Vote, AdapterError> {
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

    /// `COMMIT` (`commit = true`) or `ABORT`: see [`crate::ServerClass::commit`].
    pub(crate) async fn resolve(
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

    /// `RECOVER` on any worker: the transactions the class's servers hold prepared.
    pub(crate) async fn recover(&self) -> Result<Vec<String>, AdapterError> {
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
    pub(crate) async fn abort_dialog(
        &self,
        worker: &WorkerId,
        session: &str,
    ) -> Result<(), AdapterError> {
        let shared = &self.shared;
        let message = Message::DialogAbort {
            id: shared.message_id(),
            session: session.to_string(),
        };
        match shared
            .send(
                message,
                Work::DialogAbort(session.to_string()),
                Some(worker.clone()),
            )
            .await
        {
            Ok(Answer::Ack) => Ok(()),
            Ok(other) => Err(shared.mismatch(&other)),
            Err(AdapterError::PinnedWorkerGone { .. } | AdapterError::WorkerLost { .. }) => Ok(()),
            // The worker is killed at the deadline, and the dialog with it.
            Err(AdapterError::Timeout { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whether `worker` is alive (started, not being stopped).
    pub(crate) fn worker_alive(&self, worker: &WorkerId) -> bool {
        self.shared.lock().find(worker).is_some()
    }

    /// Stop taking requests, let queued and in-flight ones finish for up to `grace`, then stop the
    /// workers and wait until they are gone.
    pub(crate) async fn shutdown(&self, grace: Duration) {
        let shared = &self.shared;
        {
            let mut st = shared.lock();
            if st.phase == Phase::Running {
                st.phase = Phase::Draining;
                tracing::info!(class = %shared.class, "shutting down");
            }
        }
        let drained = shared
            .wait_until(after(grace), |st| st.queue.is_empty() && st.busy() == 0)
            .await;
        if !drained {
            tracing::warn!(
                class = %shared.class,
                "requests still in flight after the {grace:?} grace period; stopping anyway"
            );
        }
        shared.stop_now();
        let gone = shared
            .wait_until(after(STOP_WAIT * 2), |st| {
                st.workers.is_empty() && st.starting == 0
            })
            .await;
        if !gone {
            tracing::warn!(class = %shared.class, "some workers did not stop in time");
        }
    }

    pub(crate) fn status(&self) -> PoolStatus {
        let st = self.shared.lock();
        PoolStatus {
            workers: st
                .workers
                .values()
                .filter(|s| s.live())
                .map(|s| WorkerStatus {
                    id: s.id.clone(),
                    pid: s.pid,
                    busy: s.busy,
                    dialogs: s.dialogs.len(),
                    transaction: s.txn.as_ref().map(|p| p.transaction.clone()),
                    prepared: s.txn.as_ref().is_some_and(|p| p.prepared),
                    queued: s.own.len(),
                    served: s.served,
                })
                .collect(),
            starting: st.starting,
            queued: st.queue.len(),
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Nobody can call any more: stop the workers rather than leave them to the runtime.
        self.shared.stop_now();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough state (every critical section
        // is short and does no I/O); keep serving rather than poison every later call.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn unreachable(&self, reason: &str) -> AdapterError {
        AdapterError::Unreachable {
            class: self.class.clone(),
            reason: reason.to_string(),
        }
    }

    fn backoff(&self, failures: u32) -> Duration {
        let base = self.config.restart_backoff;
        let factor = 1u32 << failures.saturating_sub(1).min(20);
        base.saturating_mul(factor)
            .min(self.config.restart_backoff_max)
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

    /// Check, queue and await one message (at most `request_timeout`, queueing included).
    async fn send(
        self: &Arc<Self>,
        message: Message,
        work: Work,
        target: Option<WorkerId>,
    ) -> Result<Answer, AdapterError> {
        // Refuse what cannot be encoded now, in the caller's thread, rather than in the worker.
        // The head alone is checked: no copy of the payload.
        message
            .to_frame()
            .and_then(|frame| frame.encode_head(self.config.max_frame_bytes))
            .map_err(|e| AdapterError::Unsupported {
                class: self.class.clone(),
                reason: format!("the {} cannot be sent: {e}", work.name()),
            })?;
        let timeout = self.config.request_timeout;
        let deadline = after(timeout);
        let (tx, rx) = oneshot::channel();
        self.submit(Job {
            id: message.id(),
            message,
            work,
            target,
            deadline,
            reply: tx,
        });
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(result)) => result,
            // The job was dropped unanswered: only happens when the runtime is going away.
            Ok(Err(_)) => Err(AdapterError::ShuttingDown {
                class: self.class.clone(),
            }),
            Err(_) => Err(timeout_error(&self.class, timeout)),
        }
    }

    /// Route a job: to its target worker (or what replaces a gone one), else to any worker that
    /// takes it. Every outcome, errors included, reaches the caller through the job's channel.
    fn submit(self: &Arc<Self>, mut job: Job) {
        let mut guard = self.lock();
        let st = &mut *guard;
        if st.phase != Phase::Running {
            return job.answer(Err(AdapterError::ShuttingDown {
                class: self.class.clone(),
            }));
        }
        if job.target.is_none() {
            // The live worker holding a transaction has its work: more of it, and its resolution,
            // go there (and a second worker never gets pinned to the same transaction).
            if let Work::Commit(t)
            | Work::Abort(t)
            | Work::Request {
                transaction: Some(t),
                ..
            } = &job.work
            {
                job.target = st.holder(t).map(|slot| slot.id.clone());
            }
        }
        let Some(target) = job.target.clone() else {
            return self.place(st, job);
        };
        let Some(no) = st.find(&target) else {
            return self.orphan(st, job, &target);
        };
        if let (
            Work::Request {
                transaction: Some(t),
                ..
            },
            Some(slot),
        ) = (&job.work, st.workers.get(&no))
        {
            if let Some(pin) = slot.txn.as_ref().filter(|p| p.transaction != *t) {
                let reason = format!(
                    "worker {target} holds transaction {} and serves one transaction at a time",
                    pin.transaction
                );
                return job.answer(Err(AdapterError::Unsupported {
                    class: self.class.clone(),
                    reason,
                }));
            }
        }
        self.place_on(st, no, job);
    }

    /// Place a targeted job on worker `no` (live): at once if it is idle, else in its own queue.
    fn place_on(self: &Arc<Self>, st: &mut State, no: u64, job: Job) {
        let limit = self.config.queue_limit;
        let Some(slot) = st.workers.get_mut(&no) else {
            return;
        };
        if slot.busy {
            if slot.own.len() >= limit {
                return job.answer(Err(AdapterError::QueueFull {
                    class: self.class.clone(),
                    limit,
                }));
            }
            slot.own.push_back(job);
            return;
        }
        st.idle.retain(|n| *n != no);
        if let Err(job) = hand(st, no, job) {
            let id = job.target.clone().unwrap_or_default();
            self.orphan(st, job, &id);
        }
    }

    /// A targeted job whose worker is gone: fail it, succeed it, or send it elsewhere.
    fn orphan(self: &Arc<Self>, st: &mut State, mut job: Job, worker: &str) {
        let gone = || AdapterError::PinnedWorkerGone {
            class: self.class.clone(),
            worker: worker.to_string(),
        };
        match &job.work {
            // The dialog, or the transaction's uncommitted work, died with the worker.
            Work::Request { .. } | Work::Prepare(_) => job.answer(Err(gone())),
            Work::DialogAbort(_) => job.answer(Ok(Answer::Ack)),
            Work::Commit(t) if st.lost.iter().any(|(lt, lw)| lt == t && lw == worker) => {
                job.answer(Err(gone()))
            }
            // Prepared (durable in the class's shared state), or unknown to us: any worker can
            // resolve it, and acknowledges a transaction it does not know.
            Work::Commit(_) | Work::Abort(_) | Work::Recover => {
                job.target = None;
                self.place(st, job)
            }
        }
    }

    /// Place an untargeted job: an idle worker that takes it, else the queue (growing the pool if
    /// it may).
    fn place(self: &Arc<Self>, st: &mut State, mut job: Job) {
        let need = job.work.need();
        let max_dialogs = self.config.max_dialogs_per_worker;
        loop {
            let takes = |need: Need| {
                st.idle.iter().rposition(|no| {
                    st.workers
                        .get(no)
                        .is_some_and(|s| s.takes(need, max_dialogs))
                })
            };
            // Control messages prefer unpinned workers, but any idle one can answer them.
            let pos = match need {
                Need::Any => takes(Need::Free).or_else(|| takes(Need::Any)),
                need => takes(need),
            };
            let Some(pos) = pos else { break };
            let no = st.idle.remove(pos);
            match hand(st, no, job) {
                Ok(()) => return,
                Err(back) => job = back,
            }
        }

        let live = st.live();
        if live == 0 {
            if let Some(down) = &st.down {
                if st.starting > 0 || Instant::now() < down.retry_at {
                    let reason = format!(
                        "{} (no worker is running; retrying in the background)",
                        down.reason
                    );
                    return job.answer(Err(self.unreachable(&reason)));
                }
            }
        }
        // Grow only if the workers already starting are spoken for by queued jobs.
        if live + st.starting < self.config.max_workers && st.queue.len() >= st.starting {
            self.spawn_start(st, Duration::ZERO, None);
        }
        let limit = self.config.queue_limit;
        if st.queue.len() >= limit.saturating_add(st.starting) {
            return job.answer(Err(AdapterError::QueueFull {
                class: self.class.clone(),
                limit,
            }));
        }
        st.queue.push_back(job);
    }

    /// Start enough workers to keep `min_workers` and serve the queue, after the current backoff.
    fn replenish(self: &Arc<Self>, st: &mut State) {
        if st.phase != Phase::Running {
            return;
        }
        // Pinned idle workers cannot serve the queue: count them as occupied.
        let occupied = st
            .workers
            .values()
            .filter(|s| s.live() && (s.busy || s.pinned()))
            .count();
        let demand = (occupied + st.queue.len()).min(self.config.max_workers);
        let want = self.config.min_workers.max(demand);
        let have = st.live() + st.starting;
        let delay = if st.failures == 0 {
            Duration::ZERO
        } else {
            self.backoff(st.failures)
        };
        for _ in have..want {
            self.spawn_start(st, delay, None);
        }
    }

    fn spawn_start(
        self: &Arc<Self>,
        st: &mut State,
        delay: Duration,
        report: Option<oneshot::Sender<Result<(), String>>>,
    ) {
        st.starting += 1;
        self.runtime.spawn(self.clone().start_worker(delay, report));
    }

    /// Start one worker (after `delay`), then run it.
    async fn start_worker(
        self: Arc<Self>,
        delay: Duration,
        report: Option<oneshot::Sender<Result<(), String>>>,
    ) {
        let mut stop = self.stop.subscribe();
        let report = |result: Result<(), String>| {
            if let Some(tx) = report {
                let _ = tx.send(result);
            }
        };
        if !delay.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stopped(&mut stop) => {}
            }
        }
        let (no, id) = {
            let mut st = self.lock();
            if st.phase == Phase::Stopped {
                st.starting -= 1;
                drop(st);
                self.changed.notify_waiters();
                return report(Err("shutting down".to_string()));
            }
            let no = st.next_worker;
            st.next_worker += 1;
            (no, format!("{}#{}", self.class, no))
        };

        let attempt = tokio::select! {
            result = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.open(&id)) => match result {
                Ok(result) => result,
                Err(_) => Err(format!("no HELLO within {HANDSHAKE_TIMEOUT:?}")),
            },
            _ = stopped(&mut stop) => Err("shutting down".to_string()),
        };

        let conn = match attempt {
            Ok(conn) => conn,
            Err(reason) => {
                tracing::warn!(class = %self.class, worker = %id, "cannot start worker: {reason}");
                let mut guard = self.lock();
                let st = &mut *guard;
                st.starting -= 1;
                st.failures = st.failures.saturating_add(1);
                if st.live() == 0 && st.phase == Phase::Running {
                    // Nobody can serve the queue: fail it now rather than let it wait for retries.
                    st.down = Some(Down {
                        reason: reason.clone(),
                        retry_at: after(self.backoff(st.failures)),
                    });
                    for job in st.queue.drain(..) {
                        job.answer(Err(self.unreachable(&reason)));
                    }
                }
                self.replenish(st);
                drop(guard);
                self.changed.notify_waiters();
                return report(Err(reason));
            }
        };

        let (tx, rx) = mpsc::channel(1);
        // `None`: the pool stopped while this worker was starting.
        let placed = {
            let mut guard = self.lock();
            let st = &mut *guard;
            st.starting -= 1;
            if st.phase == Phase::Stopped {
                None
            } else {
                st.down = None;
                st.workers.insert(
                    no,
                    Slot {
                        id: id.clone(),
                        pid: conn.pid,
                        tx: Some(tx),
                        busy: false,
                        own: VecDeque::new(),
                        txn: None,
                        dialogs: Vec::new(),
                        idle_since: Instant::now(),
                        served: 0,
                    },
                );
                let first = st.next_for(no, &self.class, &self.config);
                match st.workers.get_mut(&no) {
                    Some(slot) if first.is_some() => slot.busy = true,
                    _ => st.idle.push(no),
                }
                Some(first)
            }
        };
        let Some(first) = placed else {
            conn.close(Close::Graceful).await;
            self.changed.notify_waiters();
            return report(Err("shutting down".to_string()));
        };
        self.changed.notify_waiters();
        report(Ok(()));
        self.run_worker(no, id, conn, rx, first).await;
    }

    /// Connect and handshake.
    async fn open(&self, id: &WorkerId) -> Result<Conn, String> {
        let link = self.connector.connect(id).await?;
        let max = self.config.max_frame_bytes;
        let mut conn = Conn {
            reader: FrameReader::new(link.reader, max),
            writer: link.writer,
            child: link.child,
            pid: link.pid,
            peer: link.peer,
            send_max: max,
        };
        match self.handshake(&mut conn, id).await {
            Ok(server) => {
                tracing::info!(
                    class = %self.class,
                    worker = %id,
                    peer = %conn.peer,
                    server = %server,
                    "worker ready"
                );
                Ok(conn)
            }
            Err(reason) => {
                let status = conn.close(Close::Dead).await;
                Err(with_status(reason, status))
            }
        }
    }

    /// Send our `HELLO`, check theirs. Returns the server's name.
    async fn handshake(&self, conn: &mut Conn, id: &WorkerId) -> Result<String, String> {
        let hello = Message::Hello(Hello {
            protocol: protocol::PROTOCOL_VERSION,
            versions: protocol::SUPPORTED_VERSIONS.to_vec(),
            class: Some(self.class.clone()),
            worker: Some(id.clone()),
            max_frame: Some(self.config.max_frame_bytes),
            ..Hello::default()
        })
        .encode(self.config.max_frame_bytes)
        .map_err(|e| format!("cannot encode HELLO: {e}"))?;
        let write = async {
            conn.writer.write_all(&hello).await?;
            conn.writer.flush().await
        };
        write
            .await
            .map_err(|e| format!("{} closed the connection before HELLO ({e})", conn.peer))?;
        let frame = match conn.reader.read_frame().await {
            Ok(Some(frame)) => frame,
            Ok(None) => return Err(format!("{} closed the connection before HELLO", conn.peer)),
            Err(e) => return Err(format!("{}: bad HELLO: {e}", conn.peer)),
        };
        let hello = match Message::from_frame(frame) {
            Ok(Message::Hello(hello)) => hello,
            Ok(other) => return Err(format!("expected HELLO, got {}", other.kind())),
            Err(e) => return Err(format!("bad HELLO: {e}")),
        };
        if let Some(error) = hello.error {
            return Err(format!("the server refused the handshake: {error}"));
        }
        if !protocol::SUPPORTED_VERSIONS.contains(&hello.protocol) {
            return Err(format!(
                "the server chose protocol {}, the broker speaks {:?}",
                hello.protocol,
                protocol::SUPPORTED_VERSIONS
            ));
        }
        if let Some(theirs) = hello.max_frame {
            conn.send_max = conn.send_max.min(theirs);
        }
        Ok(hello.server.unwrap_or_else(|| "unnamed server".to_string()))
    }

    /// The worker task: serve jobs until the worker is retired, breaks, or the pool stops.
    async fn run_worker(
        self: Arc<Self>,
        no: u64,
        id: WorkerId,
        mut conn: Conn,
        mut rx: mpsc::Receiver<Job>,
        first: Option<Job>,
    ) {
        let mut stop = self.stop.subscribe();
        let mut next = first;
        let (ending, failed_job) = loop {
            let job = match next.take() {
                Some(job) => job,
                None => tokio::select! {
                    biased;
                    _ = stopped(&mut stop) => break (Ending::Retired, None),
                    job = rx.recv() => match job {
                        Some(job) => job,
                        None => break (Ending::Retired, None),
                    },
                    // An idle worker must stay silent; anything here means it died or misbehaves.
                    frame = conn.reader.read_frame() => break match frame {
                        Ok(None) => (Ending::Lost("exited while idle".to_string()), None),
                        Ok(Some(f)) => (Ending::Killed(format!("sent {f} while idle")), None),
                        Err(e) => (Ending::Killed(format!("while idle: {e}")), None),
                    },
                },
            };
            match self.serve(&mut conn, &id, &job, &mut stop).await {
                Outcome::Answered(answer) => next = self.complete(no, job, Ok(answer)),
                Outcome::Refused(error) => next = self.complete(no, job, Err(error)),
                Outcome::TimedOut => {
                    let timeout = self.config.request_timeout;
                    job.answer(Err(timeout_error(&self.class, timeout)));
                    break (Ending::Recycled, None);
                }
                Outcome::Broken(reason, true) => break (Ending::Killed(reason), Some(job)),
                Outcome::Broken(reason, false) => break (Ending::Lost(reason), Some(job)),
                Outcome::Stopped => {
                    job.answer(Err(AdapterError::ShuttingDown {
                        class: self.class.clone(),
                    }));
                    break (Ending::Retired, None);
                }
            }
        };

        // Out of dispatch first, then the (possibly slow) close. A job handed over while this
        // task was already leaving (the worker died idle at the moment it was chosen) was never
        // written: an untargeted one goes back to the head of the queue for the next worker; a
        // targeted one, like those waiting in this worker's own queue, is an orphan now.
        {
            let mut guard = self.lock();
            let st = &mut *guard;
            let mut orphans = VecDeque::new();
            if let Some(slot) = st.workers.get_mut(&no) {
                slot.tx = None;
                orphans.append(&mut slot.own);
                if let Some(pin) = slot.txn.take().filter(|p| !p.prepared) {
                    // Its uncommitted work died with it, unless it was dying in the middle of
                    // committing or preparing it: then the outcome is the server's to tell.
                    let in_doubt = failed_job.as_ref().is_some_and(|job| {
                        matches!(&job.work, Work::Commit(t) | Work::Prepare(t) if *t == pin.transaction)
                    });
                    if !in_doubt {
                        if st.lost.len() >= LOST_MEMORY {
                            st.lost.pop_front();
                        }
                        st.lost.push_back((pin.transaction, id.clone()));
                    }
                }
            }
            st.idle.retain(|n| *n != no);
            rx.close();
            while let Ok(job) = rx.try_recv() {
                if job.target.is_some() {
                    orphans.push_front(job);
                } else if st.phase == Phase::Stopped {
                    job.answer(Err(AdapterError::ShuttingDown {
                        class: self.class.clone(),
                    }));
                } else {
                    st.queue.push_front(job);
                }
            }
            for job in orphans {
                if st.phase == Phase::Stopped {
                    job.answer(Err(AdapterError::ShuttingDown {
                        class: self.class.clone(),
                    }));
                } else {
                    self.orphan(st, job, &id);
                }
            }
        }
        let (class, peer) = (&self.class, conn.peer.clone());
        let (failure, reason) = match ending {
            Ending::Retired => {
                let status = conn.close(Close::Graceful).await;
                let status = status.map_or_else(|| "closed".to_string(), |s| s.to_string());
                tracing::info!(class = %class, worker = %id, peer = %peer, "worker stopped ({status})");
                (false, None)
            }
            Ending::Recycled => {
                let timeout = self.config.request_timeout;
                conn.close(Close::Kill).await;
                tracing::warn!(
                    class = %class, worker = %id, peer = %peer,
                    "no reply within {timeout:?}: worker recycled"
                );
                (false, None)
            }
            Ending::Killed(reason) => {
                let reason = with_status(reason, conn.close(Close::Kill).await);
                tracing::warn!(class = %class, worker = %id, peer = %peer, "worker closed: {reason}");
                (true, Some(reason))
            }
            Ending::Lost(reason) => {
                let reason = with_status(reason, conn.close(Close::Dead).await);
                tracing::warn!(class = %class, worker = %id, peer = %peer, "worker lost: {reason}");
                (true, Some(reason))
            }
        };
        if let Some(job) = failed_job {
            job.answer(Err(AdapterError::WorkerLost {
                class: self.class.clone(),
                worker: id.clone(),
                reason: reason.unwrap_or_default(),
            }));
        }
        self.worker_gone(no, failure);
    }

    /// One exchange on a worker (a request and its reply, a control message and its answer),
    /// raced against the deadline and the stop signal.
    async fn serve(
        &self,
        conn: &mut Conn,
        id: &WorkerId,
        job: &Job,
        stop: &mut watch::Receiver<bool>,
    ) -> Outcome {
        // A request says how long the broker will still wait: what is left of its deadline now.
        let message = match &job.message {
            Message::Request(r) => {
                let left = job.deadline.saturating_duration_since(Instant::now());
                Message::Request(protocol::Request {
                    timeout_ms: Some(millis(left).max(1)),
                    ..r.clone()
                })
            }
            other => other.clone(),
        };
        let frame = match message.to_frame() {
            Ok(frame) => frame,
            Err(e) => return Outcome::Refused(self.unsendable(&job.work, e)),
        };
        let head = match frame.encode_head(conn.send_max) {
            Ok(head) => head,
            Err(protocol::ProtocolError::TooLarge { len, max }) => {
                return Outcome::Refused(AdapterError::Unsupported {
                    class: self.class.clone(),
                    reason: format!(
                        "the {} ({len} bytes) exceeds the server's frame limit of {max} bytes",
                        job.work.name()
                    ),
                })
            }
            Err(e) => return Outcome::Refused(self.unsendable(&job.work, e)),
        };
        // Errors carry whether the worker must be killed (it misbehaved) or just collected (died).
        let exchange = async {
            let sent = async {
                // Head and payload in one (vectored, where the stream supports it) write.
                let mut out = head.chain(frame.payload.clone());
                conn.writer.write_all_buf(&mut out).await?;
                conn.writer.flush().await
            };
            sent.await
                .map_err(|e| (format!("cannot send the {}: {e}", job.work.name()), false))?;
            match conn.reader.read_frame().await {
                Ok(Some(frame)) => Ok(frame),
                Ok(None) => Err((
                    format!("closed its output during the {}", job.work.name()),
                    false,
                )),
                Err(e @ protocol::ProtocolError::Truncated) => Err((e.to_string(), false)),
                Err(e) => Err((e.to_string(), true)),
            }
        };
        let frame = tokio::select! {
            result = exchange => match result {
                Ok(frame) => frame,
                Err((reason, kill)) => return Outcome::Broken(reason, kill),
            },
            _ = tokio::time::sleep_until(job.deadline) => return Outcome::TimedOut,
            _ = stopped(stop) => return Outcome::Stopped,
        };
        let message = match Message::from_frame(frame) {
            Ok(message) => message,
            Err(e) => return Outcome::Broken(format!("bad answer: {e}"), true),
        };
        let (kind, answer_id) = (message.kind(), message.id());
        if answer_id != job.id {
            return Outcome::Broken(
                format!(
                    "sent {kind} {answer_id} while {} {} was outstanding",
                    job.work.name(),
                    job.id
                ),
                true,
            );
        }
        let answer = match (&job.work, message) {
            (Work::Request { .. }, Message::Reply(reply)) => Answer::Reply(BackendReply {
                status: reply.status,
                payload: reply.payload,
                worker: id.clone(),
            }),
            // A server that cannot do what a control message asks answers it with a REPLY
            // (PROTOCOL.md §6): it refused, it did not break.
            (work, Message::Reply(reply)) => {
                let said = match reply.status {
                    ReplyStatus::Error(reason) | ReplyStatus::Fault { string: reason, .. } => {
                        reason
                    }
                    _ => String::new(),
                };
                return Outcome::Refused(AdapterError::Unsupported {
                    class: self.class.clone(),
                    reason: format!("worker {id} refused {}: {said}", work.name()),
                });
            }
            (
                Work::Prepare(t),
                Message::Vote {
                    transaction,
                    vote,
                    reason,
                    ..
                },
            ) if *t == transaction => Answer::Vote(match vote {
                protocol::Vote::Yes => Vote::Yes,
                protocol::Vote::No => Vote::No(reason.unwrap_or_default()),
            }),
            (Work::Commit(_) | Work::Abort(_) | Work::DialogAbort(_), Message::Ack { .. }) => {
                Answer::Ack
            }
            (Work::Recover, Message::Recovered { transactions, .. }) => {
                Answer::Recovered(transactions)
            }
            (work, other) => {
                return Outcome::Broken(
                    format!("answered {} with {}", work.name(), other.kind()),
                    true,
                )
            }
        };
        Outcome::Answered(answer)
    }

    fn unsendable(&self, work: &Work, e: protocol::ProtocolError) -> AdapterError {
        AdapterError::Unsupported {
            class: self.class.clone(),
            reason: format!("the {} cannot be sent: {e}", work.name()),
        }
    }

    /// A worker finished a job: apply what the answer means for its pins, answer the caller, then
    /// give the worker its next job (its own queue first) or make it idle.
    ///
    /// The pins change before the caller hears the answer, so a caller that, say, commits and then
    /// sends the next transaction's first request finds the worker already released.
    fn complete(&self, no: u64, job: Job, result: Result<Answer, AdapterError>) -> Option<Job> {
        let mut guard = self.lock();
        let st = &mut *guard;
        if let Ok(answer) = &result {
            st.failures = 0;
            if let Work::Commit(t) | Work::Abort(t) = &job.work {
                st.lost.retain(|(lt, _)| lt != t);
            }
            if let Some(slot) = st.workers.get_mut(&no) {
                apply(slot, &job.work, answer);
            }
        }
        job.answer(result);
        let slot = st.workers.get_mut(&no)?;
        slot.served += 1;
        if !slot.live() {
            slot.busy = false;
            return None; // being stopped: the task will see its closed channel
        }
        let job = st.next_for(no, &self.class, &self.config);
        if job.is_none() {
            if let Some(slot) = st.workers.get_mut(&no) {
                slot.busy = false;
                slot.idle_since = Instant::now();
            }
            st.idle.push(no);
            drop(guard);
            self.changed.notify_waiters();
        }
        job
    }

    /// A worker task has ended: forget the worker and start replacements as needed.
    fn worker_gone(self: &Arc<Self>, no: u64, failure: bool) {
        let mut guard = self.lock();
        let st = &mut *guard;
        st.workers.remove(&no);
        st.idle.retain(|n| *n != no);
        if failure {
            st.failures = st.failures.saturating_add(1);
        }
        self.replenish(st);
        drop(guard);
        self.changed.notify_waiters();
    }

    /// Stop everything now: fail the queue, close every worker, signal every task.
    fn stop_now(&self) {
        {
            let mut st = self.lock();
            st.phase = Phase::Stopped;
            for job in st.queue.drain(..) {
                job.answer(Err(AdapterError::ShuttingDown {
                    class: self.class.clone(),
                }));
            }
            for slot in st.workers.values_mut() {
                slot.tx = None;
                for job in slot.own.drain(..) {
                    job.answer(Err(AdapterError::ShuttingDown {
                        class: self.class.clone(),
                    }));
                }
            }
            st.idle.clear();
        }
        self.stop.send_replace(true);
        self.changed.notify_waiters();
    }

    /// Wait until `cond` holds (re-checked whenever the pool changes) or the deadline passes.
    async fn wait_until(&self, deadline: Instant, cond: impl Fn(&State) -> bool) -> bool {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Register before checking, so a change between the check and the await is not lost.
            notified.as_mut().enable();
            if cond(&self.lock()) {
                return true;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => return cond(&self.lock()),
            }
        }
    }

    /// Stop workers idle longer than `idle_timeout` while there are more than `min_workers`.
    async fn reap_loop(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let idle_timeout = self.config.idle_timeout;
        let period = (idle_timeout / 4).clamp(Duration::from_millis(20), Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = stopped(&mut stop) => return,
            }
            let mut guard = self.lock();
            let st = &mut *guard;
            if st.phase != Phase::Running {
                continue;
            }
            let mut excess = st.live().saturating_sub(self.config.min_workers);
            let now = Instant::now();
            // The bottom of the LIFO stack has been idle longest: look there first.
            let mut i = 0;
            while excess > 0 && i < st.idle.len() {
                let no = st.idle[i];
                match st.workers.get_mut(&no) {
                    // A pinned worker holds what only it has: never reaped.
                    Some(slot)
                        if !slot.pinned()
                            && now.duration_since(slot.idle_since) >= idle_timeout =>
                    {
                        // Closing its channel is the stop order; the task closes the worker.
                        slot.tx = None;
                        tracing::info!(class = %self.class, worker = %slot.id, "stopping idle worker");
                        st.idle.remove(i);
                        excess -= 1;
                    }
                    _ => i += 1,
                }
            }
        }
    }
}
