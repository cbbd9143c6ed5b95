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
//! runtime each). They never touch a pipe or a socket: [`Pool::call`] encodes the request, puts a
//! [`Job`] in the shared state under a `std::sync::Mutex`, and awaits a `oneshot` with a timer. All
//! I/O happens in tasks spawned on the class's own runtime (`Handle`):
//!
//! - one **worker task** per worker: it owns the connection, waits for jobs on its own channel,
//!   writes the `REQUEST`, reads the `REPLY` (or notices the deadline, or the worker dying), answers
//!   the caller, then asks the pool for the next queued job before going idle;
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
//! workers already starting are spoken for) and the request waits in a FIFO queue. The queue holds
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
//! ## Dialogs (a later issue)
//!
//! Each worker record keeps a `pinned` count (dialogs it holds). Context-free work skips workers
//! whose `pinned` has reached `max_dialogs_per_worker`, and the reaper never stops a pinned worker.
//! What remains is the dispatch of [`DialogMarker::Begin`] (an idle worker with room, then
//! `pinned += 1`, reply names it) and [`DialogMarker::Continue`] (that worker's own queue), and
//! `pinned -= 1` on `dialog-end`/`dialog-abort`. Until then both markers are refused with
//! [`AdapterError::Unsupported`].

use async_trait::async_trait;
use bytes::Bytes;
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
    AdapterError, BackendReply, BackendRequest, DialogMarker, ServerClassConfig, WorkerId,
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
    pub pinned: usize,
    /// Requests it has answered.
    pub served: u64,
}

/// A pool's state as seen from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStatus {
    /// Live workers (those being stopped are not listed).
    pub workers: Vec<WorkerStatus>,
    /// Workers being started.
    pub starting: usize,
    /// Requests waiting for a worker.
    pub queued: usize,
}

/// One request on its way: encoded up front (in the caller's thread), with its deadline and the
/// channel its answer goes back on.
struct Job {
    id: u64,
    frame: Bytes,
    deadline: Instant,
    reply: oneshot::Sender<Result<BackendReply, AdapterError>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// `shutdown` called: no new requests; queued and in-flight ones finish.
    Draining,
    /// Workers are being stopped.
    Stopped,
}

/// The pool's record of one worker.
struct Slot {
    id: WorkerId,
    pid: Option<u32>,
    /// Jobs for an idle worker. `None` once the worker is being stopped: its task sees the closed
    /// channel and exits, so "retire" needs no message of its own.
    tx: Option<mpsc::Sender<Job>>,
    busy: bool,
    /// Dialogs pinned to this worker (always 0 until dialogs are implemented); transactions
    /// prepared on it will pin it the same way, so the reaper never stops a worker holding either.
    pinned: usize,
    idle_since: Instant,
    served: u64,
}

impl Slot {
    fn live(&self) -> bool {
        self.tx.is_some()
    }

    fn takes_free_work(&self, max_dialogs: usize) -> bool {
        self.live() && (self.pinned == 0 || self.pinned < max_dialogs)
    }
}

/// The class is down: the last start attempt failed and no worker is alive.
struct Down {
    reason: String,
    retry_at: Instant,
}

struct State {
    phase: Phase,
    workers: BTreeMap<u64, Slot>,
    /// Idle live workers, a LIFO stack (the top is the most recently used).
    idle: Vec<u64>,
    queue: VecDeque<Job>,
    /// Start tasks under way (including those sleeping through a backoff).
    starting: usize,
    next_worker: u64,
    /// Consecutive failures (dead workers, failed starts) since the last good reply: the backoff.
    failures: u32,
    down: Option<Down>,
}

impl State {
    fn live(&self) -> usize {
        self.workers.values().filter(|s| s.live()).count()
    }

    fn busy(&self) -> usize {
        self.workers.values().filter(|s| s.busy).count()
    }
}

/// The next queued job whose caller is still waiting; expired ones are answered on the way.
fn next_job(queue: &mut VecDeque<Job>, class: &str, timeout: Duration) -> Option<Job> {
    let now = Instant::now();
    while let Some(job) = queue.pop_front() {
        if job.reply.is_closed() {
            continue; // the caller gave up (its own timer, or its client went away)
        }
        if job.deadline <= now {
            let _ = job.reply.send(Err(timeout_error(class, timeout)));
            continue;
        }
        return Some(job);
    }
    None
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
        timeout_ms: timeout.as_millis().min(u64::MAX as u128) as u64,
    }
}

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
    Replied(BackendReply),
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
        match request.dialog {
            DialogMarker::None => {}
            // The pinning hooks are in place (see the module docs); the dispatch is a later issue.
            DialogMarker::Begin | DialogMarker::Continue => {
                return Err(AdapterError::Unsupported {
                    class: shared.class.clone(),
                    reason: "dialogs are not supported yet".to_string(),
                })
            }
        }
        let id = shared.next_message.fetch_add(1, Ordering::Relaxed);
        let frame = Message::Request(protocol::Request {
            id,
            service: request.service,
            operation: request.operation,
            session: request.session_id,
            transaction: request.transaction_id,
            dialog: protocol::Dialog::None,
            payload: request.payload,
        })
        .encode(shared.config.max_frame_bytes)
        .map_err(|e| AdapterError::Unsupported {
            class: shared.class.clone(),
            reason: format!("the request cannot be sent: {e}"),
        })?;

        let timeout = shared.config.request_timeout;
        let deadline = after(timeout);
        let (tx, rx) = oneshot::channel();
        shared.submit(Job {
            id,
            frame,
            deadline,
            reply: tx,
        })?;
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(result)) => result,
            // The job was dropped unanswered: only happens when the runtime is going away.
            Ok(Err(_)) => Err(AdapterError::ShuttingDown {
                class: shared.class.clone(),
            }),
            Err(_) => Err(timeout_error(&shared.class, timeout)),
        }
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
                    pinned: s.pinned,
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

    /// Place a job: an idle worker, else the queue (growing the pool if it may).
    fn submit(self: &Arc<Self>, mut job: Job) -> Result<(), AdapterError> {
        let mut guard = self.lock();
        let st = &mut *guard;
        if st.phase != Phase::Running {
            return Err(AdapterError::ShuttingDown {
                class: self.class.clone(),
            });
        }

        let max_dialogs = self.config.max_dialogs_per_worker;
        while let Some(pos) = st.idle.iter().rposition(|no| {
            st.workers
                .get(no)
                .is_some_and(|s| s.takes_free_work(max_dialogs))
        }) {
            let no = st.idle.remove(pos);
            let Some(slot) = st.workers.get_mut(&no) else {
                continue;
            };
            let Some(tx) = &slot.tx else { continue };
            match tx.try_send(job) {
                Ok(()) => {
                    slot.busy = true;
                    return Ok(());
                }
                // The worker task has just ended (it will remove its slot): try another.
                Err(e) => {
                    job = match e {
                        mpsc::error::TrySendError::Full(job)
                        | mpsc::error::TrySendError::Closed(job) => job,
                    };
                    slot.tx = None;
                }
            }
        }

        let live = st.live();
        if live == 0 {
            if let Some(down) = &st.down {
                if st.starting > 0 || Instant::now() < down.retry_at {
                    return Err(self.unreachable(&format!(
                        "{} (no worker is running; retrying in the background)",
                        down.reason
                    )));
                }
            }
        }
        // Grow only if the workers already starting are spoken for by queued jobs.
        if live + st.starting < self.config.max_workers && st.queue.len() >= st.starting {
            self.spawn_start(st, Duration::ZERO, None);
        }
        let limit = self.config.queue_limit;
        if st.queue.len() >= limit.saturating_add(st.starting) {
            return Err(AdapterError::QueueFull {
                class: self.class.clone(),
                limit,
            });
        }
        st.queue.push_back(job);
        Ok(())
    }

    /// Start enough workers to keep `min_workers` and serve the queue, after the current backoff.
    fn replenish(self: &Arc<Self>, st: &mut State) {
        if st.phase != Phase::Running {
            return;
        }
        let demand = (st.busy() + st.queue.len()).min(self.config.max_workers);
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
                        let _ = job.reply.send(Err(self.unreachable(&reason)));
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
                let first = next_job(&mut st.queue, &self.class, self.config.request_timeout);
                st.workers.insert(
                    no,
                    Slot {
                        id: id.clone(),
                        pid: conn.pid,
                        tx: Some(tx),
                        busy: first.is_some(),
                        pinned: 0,
                        idle_since: Instant::now(),
                        served: 0,
                    },
                );
                if first.is_none() {
                    st.idle.push(no);
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
                Outcome::Replied(reply) => {
                    let _ = job.reply.send(Ok(reply));
                    next = self.release(no, true);
                }
                Outcome::Refused(error) => {
                    let _ = job.reply.send(Err(error));
                    next = self.release(no, false);
                }
                Outcome::TimedOut => {
                    let timeout = self.config.request_timeout;
                    let _ = job.reply.send(Err(timeout_error(&self.class, timeout)));
                    break (Ending::Recycled, None);
                }
                Outcome::Broken(reason, true) => break (Ending::Killed(reason), Some(job)),
                Outcome::Broken(reason, false) => break (Ending::Lost(reason), Some(job)),
                Outcome::Stopped => {
                    let _ = job.reply.send(Err(AdapterError::ShuttingDown {
                        class: self.class.clone(),
                    }));
                    break (Ending::Retired, None);
                }
            }
        };

        // Out of dispatch first, then the (possibly slow) close. A job handed over while this
        // task was already leaving (the worker died idle at the moment it was chosen) was never
        // written: put it back at the head of the queue for the next worker.
        {
            let mut guard = self.lock();
            let st = &mut *guard;
            if let Some(slot) = st.workers.get_mut(&no) {
                slot.tx = None;
            }
            st.idle.retain(|n| *n != no);
            rx.close();
            while let Ok(job) = rx.try_recv() {
                if st.phase == Phase::Stopped {
                    let _ = job.reply.send(Err(AdapterError::ShuttingDown {
                        class: self.class.clone(),
                    }));
                } else {
                    st.queue.push_front(job);
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
            let _ = job.reply.send(Err(AdapterError::WorkerLost {
                class: self.class.clone(),
                worker: id.clone(),
                reason: reason.unwrap_or_default(),
            }));
        }
        self.worker_gone(no, failure);
    }

    /// One request/reply exchange on a worker, raced against the deadline and the stop signal.
    async fn serve(
        &self,
        conn: &mut Conn,
        id: &WorkerId,
        job: &Job,
        stop: &mut watch::Receiver<bool>,
    ) -> Outcome {
        let len = job.frame.len().saturating_sub(4);
        if len > conn.send_max {
            return Outcome::Refused(AdapterError::Unsupported {
                class: self.class.clone(),
                reason: format!(
                    "the request ({len} bytes) exceeds the server's frame limit of {} bytes",
                    conn.send_max
                ),
            });
        }
        // Errors carry whether the worker must be killed (it misbehaved) or just collected (died).
        let exchange = async {
            let sent = async {
                conn.writer.write_all(&job.frame).await?;
                conn.writer.flush().await
            };
            sent.await
                .map_err(|e| (format!("cannot send the request: {e}"), false))?;
            match conn.reader.read_frame().await {
                Ok(Some(frame)) => Ok(frame),
                Ok(None) => Err(("closed its output during the request".to_string(), false)),
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
        match Message::from_frame(frame) {
            Ok(Message::Reply(reply)) if reply.id == job.id => Outcome::Replied(BackendReply {
                status: reply.status,
                payload: reply.payload,
                worker: id.clone(),
            }),
            Ok(Message::Reply(reply)) => Outcome::Broken(
                format!(
                    "sent REPLY {} while REQUEST {} was outstanding",
                    reply.id, job.id
                ),
                true,
            ),
            Ok(other) => Outcome::Broken(format!("answered REQUEST with {}", other.kind()), true),
            Err(e) => Outcome::Broken(format!("bad reply: {e}"), true),
        }
    }

    /// A worker finished a job: give it the next queued one, or make it idle.
    fn release(&self, no: u64, good_reply: bool) -> Option<Job> {
        let mut guard = self.lock();
        let st = &mut *guard;
        if good_reply {
            st.failures = 0;
        }
        let slot = st.workers.get_mut(&no)?;
        slot.served += 1;
        if !slot.live() {
            slot.busy = false;
            return None; // being stopped: the task will see its closed channel
        }
        let job = next_job(&mut st.queue, &self.class, self.config.request_timeout);
        if job.is_none() {
            slot.busy = false;
            slot.idle_since = Instant::now();
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
                let _ = job.reply.send(Err(AdapterError::ShuttingDown {
                    class: self.class.clone(),
                }));
            }
            for slot in st.workers.values_mut() {
                slot.tx = None;
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
                    Some(slot)
                        if slot.pinned == 0
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
