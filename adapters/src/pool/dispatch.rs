//! # Dispatch: who serves what, decided without I/O
//!
//! The [`Dispatcher`] is the pool's whole policy as a synchronous state machine. It owns the
//! worker records, the idle stack, the shared queue and the pins; it never touches a pipe, a
//! socket, a task or a clock. The tokio side (`worker.rs`) feeds it **events** (a call is
//! submitted, a worker started or failed to start, a worker finished a job, a worker is leaving or
//! gone, an idle tick, shutdown), each with the `Instant` it happened at, and carries out the
//! **actions** it queues in return ([`Action`]: hand job J to worker W, answer caller C, start a
//! worker after a delay, stop worker W), taken one by one with [`Dispatcher::next_action`]. The
//! unit tests in `tests.rs` drive it the same way, with no process, runtime or sleep.
//!
//! A job carries an opaque *ticket* (the [`Ticket`] trait): for the pool, the encoded message and
//! the caller's reply channel; for the tests, a number. The dispatcher only asks a ticket whether
//! its caller gave up waiting, and hands it back in an action.
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
//! wait with a clear fault beats an unbounded one. Queued jobs whose caller gave up, or whose
//! deadline passed, are dropped (the latter answered with a timeout) when a worker looks at them.
//!
//! ## Homes
//!
//! Callers run on several runtimes (one per actix worker thread, plus the engine's). A worker's
//! I/O (its pipes or socket) is driven by the runtime its task was started on, its *home*; a job
//! from a caller on another runtime costs two cross-thread wake-ups (the job handed over, the
//! answer handed back). So, when the class's `worker_io` is `caller`, each job carries its
//! caller's home (with `class`, the default, every job's home is the class's runtime), and among
//! the idle workers that may take it the dispatcher picks the most recently used one *at that
//! home*, else the most recently used of any home (a hop costs less than a wait); a worker
//! started because a job found nobody idle is started at that job's home. `class` is the default
//! because the saving is not free: an HTTP thread busy with requests answers its workers' pipes
//! late (figures at `WorkerIo` in `config.rs`). Workers started to keep `min_workers` or to replace
//! a lost one live on the class's own runtime, which outlives every caller. A home is a placement
//! hint only: pins, limits and the queue are class-wide, whatever runtime a worker lives on.
//!
//! ## Failure
//!
//! - **Timeout**: the worker side races each job's deadline; at the deadline it kills the worker
//!   (its late reply would otherwise arrive as the answer to the next request) and reports
//!   [`Ending::TimedOut`]; the caller gets [`AdapterError::Timeout`] and a replacement starts at
//!   once (a slow request is not a failing server).
//! - **A worker dies** (EOF, broken pipe, a malformed frame, a reply with the wrong id):
//!   [`Ending::Failed`]; the job it held fails with [`AdapterError::WorkerLost`], and a replacement
//!   starts after a backoff that doubles from `restart_backoff` to `restart_backoff_max` while
//!   failures follow each other (with the jitter of [`super::backoff`]); a successful answer
//!   resets it.
//! - **Cannot start at all**: when a start attempt fails and no worker is alive, the queued requests
//!   fail with [`AdapterError::Unreachable`] (the start error is the reason), and so do new ones
//!   until a worker is up again or the next attempt is due; retries continue in the background.
//!   Nobody waits for a class that is down.
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
//! message naming it (`BackendRequest::worker`, `prepare`, `commit`, `abort`, `abort_dialog`).
//! Targeted jobs go to the worker's **own FIFO** (bounded by `queue_limit` too), behind the
//! request it may be serving for the same session, never to another worker. When the named worker
//! is gone, a request or `PREPARE` fails with [`AdapterError::PinnedWorkerGone`] at once (the
//! dialog or the uncommitted work died with it), `DIALOG-ABORT` succeeds (the dialog is gone
//! either way), and `COMMIT`/`ABORT` go to any live worker, which resolves the transaction from
//! the class's shared durable state. One exception: the pool remembers the transactions whose
//! worker died holding them *unprepared*, and a `COMMIT` of one of those fails with
//! `PinnedWorkerGone` instead of being acknowledged by a worker that never saw the work (a
//! one-phase commit must not report success for lost work). A worker that dies or times out in
//! the middle of that transaction's `COMMIT` or `PREPARE` leaves the outcome in doubt: that one is
//! not remembered, the server's durable state tells.
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
//! ## An operator's changes: resizing and rolling restarts
//!
//! [`Dispatcher::resize`] sets the number of workers the class keeps (`min_workers`, at most
//! `max_workers`): growing starts the missing workers at once; shrinking stops idle unpinned
//! workers (oldest idle first) down to the new number, and busy or pinned ones above it are left
//! to the reaper once they are idle and free.
//!
//! [`Dispatcher::restart`] replaces the live workers **one by one**, so the class keeps serving:
//! the next worker *retires* (it takes no new untargeted work, while the dialogs and transaction
//! it holds go on, targeted as ever); once it is idle and holds nothing it is stopped and a
//! replacement is started, and the next worker retires only when that replacement is up. A worker
//! that dies while retiring is replaced as any dead worker is; a replacement that cannot start
//! ends the restart (no more workers are taken away from a class that cannot start new ones),
//! and the status says why.
//!
//! ## Reaping and shutdown
//!
//! On each idle tick ([`Dispatcher::reap`]) workers idle for `idle_timeout` or longer are stopped,
//! oldest first (the bottom of the LIFO stack), while more than `min_workers` are alive; pinned
//! workers are never reaped. [`Dispatcher::drain`] refuses new calls while queued and running
//! ones finish; [`Dispatcher::stop`] then answers whatever still waits with
//! [`AdapterError::ShuttingDown`] and stops every worker.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::backoff::Backoff;
use super::{PoolStatus, WorkerStatus};
use crate::WorkerId;
use crate::{AdapterError, BackendReply, DialogMarker, ReplyStatus, ServerClassConfig, Vote};

/// A worker's number: `echo#7` is worker 7 of class `echo`. Never reused.
pub(crate) type WorkerNo = u64;

/// Where a worker's I/O runs: the pool's name for one of its callers' runtimes (see "Homes" in the
/// module docs). `None` in a job or an action means the class's own runtime.
pub(crate) type Home = u32;

/// How many lost unprepared transactions the pool remembers (oldest forgotten first).
const LOST_MEMORY: usize = 4096;

/// What a job asks of its worker; decides which answer is expected and how it changes the pins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Work {
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

    /// The wire name of the message, for errors and logs.
    pub(crate) fn name(&self) -> &'static str {
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
pub(crate) enum Answer {
    Reply(BackendReply),
    Vote(Vote),
    Ack,
    Recovered(Vec<String>),
}

/// What the dispatcher needs to know of a job's caller.
pub(crate) trait Ticket {
    /// The caller stopped waiting (its own timer fired, or its client went away): the job can be
    /// dropped unserved.
    fn abandoned(&self) -> bool;
}

/// One message on its way: what it asks, where it may run, until when, and for whom.
#[derive(Debug)]
pub(crate) struct Job<T> {
    pub work: Work,
    /// The worker it must run on (nobody else), or `None` for any suitable worker.
    pub target: Option<WorkerId>,
    pub deadline: Instant,
    /// The caller's runtime: a worker at home there is preferred, and one started for the job
    /// lives there.
    pub home: Option<Home>,
    pub ticket: T,
}

/// What the dispatcher asks the I/O side to do, in order.
#[derive(Debug)]
pub(crate) enum Action<T> {
    /// Hand `job` to idle worker `worker` (the dispatcher already counts it busy). If the worker
    /// can no longer take it, report [`Dispatcher::undeliverable`].
    Run { worker: WorkerNo, job: Job<T> },
    /// Answer a caller.
    Answer {
        ticket: T,
        result: Result<Answer, AdapterError>,
    },
    /// Start worker `worker` (spawn or connect, handshake) after `delay`, on runtime `home` (the
    /// class's own when `None`); report [`Dispatcher::worker_started`] or
    /// [`Dispatcher::start_failed`], or [`Dispatcher::vanished`] if the runtime ends first.
    Start {
        worker: WorkerNo,
        id: WorkerId,
        delay: Duration,
        home: Option<Home>,
    },
    /// Stop worker `worker` once it is idle: it gets no more jobs, and reports
    /// [`Dispatcher::worker_leaving`] and [`Dispatcher::worker_closed`] as it goes.
    Stop { worker: WorkerNo },
}

/// How a worker's connection ended, reported with [`Dispatcher::worker_closed`].
#[derive(Debug)]
pub(crate) enum Ending<T> {
    /// Stopped on our order (reaped, shut down). A job it was serving when the pool stopped is
    /// answered [`AdapterError::ShuttingDown`].
    Retired(Option<Job<T>>),
    /// Its job ran out of time and the worker was killed. Not a failure of the server.
    TimedOut(Job<T>),
    /// It died or broke the protocol: a failure (the restart backoff grows). Its job, if it had
    /// one, fails with [`AdapterError::WorkerLost`] and this reason.
    Failed { job: Option<Job<T>>, reason: String },
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
#[derive(Debug)]
struct Pin {
    transaction: String,
    /// It voted yes: the work is durable on the server's side, any worker can resolve it.
    prepared: bool,
}

/// The dispatcher's record of one worker.
#[derive(Debug)]
struct Slot<T> {
    id: WorkerId,
    pid: Option<u32>,
    /// Takes jobs. `false` once it is being stopped or is leaving.
    live: bool,
    /// Being replaced by a rolling restart: it takes no untargeted work any more.
    retiring: bool,
    busy: bool,
    /// Targeted jobs waiting for this worker to finish its current one (served before the shared
    /// queue, in order).
    own: VecDeque<Job<T>>,
    /// The transaction it holds in memory.
    txn: Option<Pin>,
    /// The sessions whose dialogs it holds (a session without an id counts as `""`). Sessions
    /// rather than a count, so that ending or aborting one twice cannot release another's pin.
    dialogs: Vec<String>,
    idle_since: Instant,
    served: u64,
    /// The runtime its I/O runs on.
    home: Option<Home>,
}

impl<T> Slot<T> {
    fn pinned(&self) -> bool {
        self.txn.is_some() || !self.dialogs.is_empty()
    }

    /// Whether it may take an untargeted job of this kind.
    fn takes(&self, need: Need, max_dialogs: usize) -> bool {
        self.live
            && !self.retiring
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
#[derive(Debug)]
struct Down {
    reason: String,
    retry_at: Instant,
}

/// The configuration the dispatcher follows (a copy of the class's numbers).
#[derive(Debug, Clone)]
struct Limits {
    min_workers: usize,
    max_workers: usize,
    max_dialogs: usize,
    queue_limit: usize,
    idle_timeout: Duration,
    request_timeout: Duration,
}

/// The pool's dispatch policy: see the module docs.
pub(crate) struct Dispatcher<T> {
    class: String,
    limits: Limits,
    backoff: Backoff,
    /// The random source of the backoff's jitter (seeded by the caller: tests pick the seed).
    rng: fastrand::Rng,
    phase: Phase,
    workers: BTreeMap<WorkerNo, Slot<T>>,
    /// Idle live workers, pinned or not, a LIFO stack (the top is the most recently used).
    idle: Vec<WorkerNo>,
    /// Untargeted jobs waiting for a worker that takes them.
    queue: VecDeque<Job<T>>,
    /// Workers being started (including those waiting out a backoff).
    starting: usize,
    /// The homes of the workers being started away from the class's runtime.
    start_homes: BTreeMap<WorkerNo, Home>,
    next_worker: WorkerNo,
    /// Consecutive failures (dead workers, failed starts) since the last good answer.
    failures: u32,
    /// Workers that died or broke the protocol since the pool started (each is replaced).
    deaths: u64,
    down: Option<Down>,
    /// `(transaction, worker)`: workers that died holding the transaction unprepared, so that a
    /// `COMMIT` of it fails instead of being acknowledged by a worker that never saw the work.
    lost: VecDeque<(String, WorkerId)>,
    /// What the I/O side has yet to do (kept between events, so no allocation per request).
    actions: VecDeque<Action<T>>,
    /// A rolling restart's progress, if one was asked for.
    rolling: Option<Rolling>,
}

/// A rolling restart (see the module docs).
#[derive(Debug, Default)]
struct Rolling {
    /// The workers still to be replaced, in order.
    pending: VecDeque<WorkerNo>,
    /// The worker retiring now.
    retiring: Option<WorkerNo>,
    /// The replacement being started now.
    replacement: Option<WorkerNo>,
    replaced: usize,
    /// Why it stopped early.
    failed: Option<String>,
}

/// A rolling restart as seen from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartStatus {
    /// Workers replaced so far.
    pub replaced: usize,
    /// Workers still to be replaced (the one retiring now included).
    pub remaining: usize,
    /// The worker retiring now, waiting to be idle and free of dialogs and transactions.
    pub retiring: Option<WorkerId>,
    /// A replacement is starting (the restart is done when none is and none remain).
    pub starting: bool,
    /// Why the restart stopped early (a replacement could not start).
    pub failed: Option<String>,
}

impl<T: Ticket> Dispatcher<T> {
    /// A dispatcher for the class `config` describes, drawing the backoff's jitter from `rng`.
    pub(crate) fn new(config: &ServerClassConfig, rng: fastrand::Rng) -> Self {
        Dispatcher {
            class: config.name.clone(),
            limits: Limits {
                min_workers: config.min_workers,
                max_workers: config.max_workers,
                max_dialogs: config.max_dialogs_per_worker,
                queue_limit: config.queue_limit,
                idle_timeout: config.idle_timeout,
                request_timeout: config.request_timeout,
            },
            backoff: Backoff::new(config.restart_backoff, config.restart_backoff_max),
            rng,
            phase: Phase::Running,
            workers: BTreeMap::new(),
            idle: Vec::new(),
            queue: VecDeque::new(),
            starting: 0,
            start_homes: BTreeMap::new(),
            next_worker: 1,
            failures: 0,
            deaths: 0,
            down: None,
            lost: VecDeque::new(),
            actions: VecDeque::new(),
            rolling: None,
        }
    }

    /// The next thing to do, oldest first.
    pub(crate) fn next_action(&mut self) -> Option<Action<T>> {
        self.actions.pop_front()
    }

    /// Start the `min_workers` the class keeps.
    pub(crate) fn open(&mut self) {
        for _ in 0..self.limits.min_workers {
            self.start(Duration::ZERO, None);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Events
    // -----------------------------------------------------------------------------------------

    /// A caller submits a job: route it to its target worker (or what replaces a gone one), else
    /// to any worker that takes it. Every outcome, errors included, comes out as an action.
    pub(crate) fn submit(&mut self, mut job: Job<T>, now: Instant) {
        if self.phase != Phase::Running {
            return self.answer(job.ticket, Err(self.shutting_down()));
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
                job.target = self.holder(t).map(|slot| slot.id.clone());
            }
        }
        let Some(target) = &job.target else {
            return self.place(job, now);
        };
        let Some(no) = self.find(target) else {
            let target = target.clone();
            return self.orphan(job, &target, now);
        };
        if let (
            Work::Request {
                transaction: Some(t),
                ..
            },
            Some(pin),
        ) = (
            &job.work,
            self.workers.get(&no).and_then(|s| s.txn.as_ref()),
        ) {
            if pin.transaction != *t {
                let reason = format!(
                    "worker {target} holds transaction {} and serves one transaction at a time",
                    pin.transaction
                );
                let error = AdapterError::Unsupported {
                    class: self.class.clone(),
                    reason,
                };
                return self.answer(job.ticket, Err(error));
            }
        }
        self.place_on(no, job);
    }

    /// Worker `worker` is up (handshaken). It serves the first job waiting for it, or goes idle.
    pub(crate) fn worker_started(&mut self, worker: WorkerNo, pid: Option<u32>, now: Instant) {
        self.starting = self.starting.saturating_sub(1);
        let home = self.start_homes.remove(&worker);
        let stopped = self.phase == Phase::Stopped;
        if !stopped {
            self.down = None;
        }
        self.workers.insert(
            worker,
            Slot {
                id: self.worker_id(worker),
                pid,
                live: !stopped,
                retiring: false,
                busy: false,
                own: VecDeque::new(),
                txn: None,
                dialogs: Vec::new(),
                idle_since: now,
                served: 0,
                home,
            },
        );
        if stopped {
            // Started while the pool stopped: it is stopped at once.
            self.actions.push_back(Action::Stop { worker });
            return;
        }
        self.next_or_idle(worker, now);
        if let Some(rolling) = &mut self.rolling {
            if rolling.replacement == Some(worker) {
                rolling.replacement = None;
                self.roll();
            }
        }
    }

    /// Starting worker `worker` failed (spawn, connect or handshake).
    pub(crate) fn start_failed(&mut self, worker: WorkerNo, reason: &str, now: Instant) {
        // Its number is simply never used again.
        self.start_homes.remove(&worker);
        self.replacement_lost(worker, reason);
        self.starting = self.starting.saturating_sub(1);
        self.failures = self.failures.saturating_add(1);
        let delay = self.restart_delay();
        if self.live() == 0 && self.phase == Phase::Running {
            // Nobody can serve the queue: fail it now rather than let it wait for retries.
            self.down = Some(Down {
                reason: reason.to_string(),
                retry_at: after(now, delay),
            });
            while let Some(job) = self.queue.pop_front() {
                let error = self.unreachable(reason);
                self.answer(job.ticket, Err(error));
            }
        }
        self.replenish(delay);
    }

    /// Worker `worker` answered `job` (or the job was refused without harming the worker: an
    /// `error` reply to a control message, a frame too large for this server). The pins change
    /// before the caller hears the answer, so a caller that, say, commits and then sends the next
    /// transaction's first request finds the worker already released. Then the worker gets its
    /// next job (its own queue first), or goes idle.
    pub(crate) fn job_done(
        &mut self,
        worker: WorkerNo,
        job: Job<T>,
        result: Result<Answer, AdapterError>,
        now: Instant,
    ) {
        if let Ok(answer) = &result {
            self.failures = 0;
            if let Work::Commit(t) | Work::Abort(t) = &job.work {
                self.lost.retain(|(lost, _)| lost != t);
            }
            if let Some(slot) = self.workers.get_mut(&worker) {
                apply(slot, &job.work, answer);
            }
        }
        self.answer(job.ticket, result);
        let Some(slot) = self.workers.get_mut(&worker) else {
            return;
        };
        slot.served += 1;
        slot.busy = false;
        if slot.live {
            self.next_or_idle(worker, now);
        }
    }

    /// Worker `worker` is leaving (told to stop, died, timed out, broke the protocol): take it out
    /// of dispatch before its connection is closed. `serving` is the work it was in the middle of;
    /// `unsent` a job handed to it that it never started.
    ///
    /// A transaction it held unprepared is remembered as lost, unless it was dying in the middle
    /// of that transaction's `COMMIT` or `PREPARE` (the outcome is then the server's to tell).
    /// Targeted jobs waiting for it are orphans now; an untargeted unsent one goes back to the
    /// head of the queue.
    pub(crate) fn worker_leaving(
        &mut self,
        worker: WorkerNo,
        serving: Option<&Work>,
        unsent: Option<Job<T>>,
        now: Instant,
    ) {
        let mut orphans = VecDeque::new();
        let mut id = self.worker_id(worker);
        if let Some(slot) = self.workers.get_mut(&worker) {
            slot.live = false;
            orphans = std::mem::take(&mut slot.own);
            if let Some(pin) = slot.txn.take().filter(|p| !p.prepared) {
                let in_doubt = serving.is_some_and(|work| {
                    matches!(work, Work::Commit(t) | Work::Prepare(t) if *t == pin.transaction)
                });
                if !in_doubt {
                    if self.lost.len() >= LOST_MEMORY {
                        self.lost.pop_front();
                    }
                    self.lost.push_back((pin.transaction, slot.id.clone()));
                }
            }
            id = slot.id.clone();
        }
        self.idle.retain(|n| *n != worker);
        if let Some(job) = unsent {
            if job.target.is_some() {
                orphans.push_front(job);
            } else if self.phase == Phase::Stopped {
                self.answer(job.ticket, Err(self.shutting_down()));
            } else {
                self.requeue(job);
            }
        }
        for job in orphans {
            if self.phase == Phase::Stopped {
                self.answer(job.ticket, Err(self.shutting_down()));
            } else {
                self.orphan(job, &id, now);
            }
        }
    }

    /// Worker `worker`'s connection is closed: forget it, answer the job it ended with, and start
    /// replacements as needed (after the backoff when it failed).
    pub(crate) fn worker_closed(&mut self, worker: WorkerNo, ending: Ending<T>) {
        let id = match self.workers.remove(&worker) {
            Some(slot) => slot.id,
            None => self.worker_id(worker),
        };
        self.idle.retain(|n| *n != worker);
        match ending {
            Ending::Retired(job) => {
                if let Some(job) = job {
                    self.answer(job.ticket, Err(self.shutting_down()));
                }
            }
            Ending::TimedOut(job) => self.answer(job.ticket, Err(self.timeout())),
            Ending::Failed { job, reason } => {
                self.failures = self.failures.saturating_add(1);
                self.deaths += 1;
                if let Some(job) = job {
                    let error = AdapterError::WorkerLost {
                        class: self.class.clone(),
                        worker: id,
                        reason,
                    };
                    self.answer(job.ticket, Err(error));
                }
            }
        }
        let delay = if self.failures == 0 {
            Duration::ZERO
        } else {
            self.restart_delay()
        };
        self.replenish(delay);
        // The retiring worker went another way (it died, timed out, was reaped): the replenishing
        // above replaces it as needed, and the restart goes on with the next.
        if let Some(rolling) = &mut self.rolling {
            if rolling.retiring == Some(worker) {
                rolling.retiring = None;
                rolling.replaced += 1;
                self.roll();
            }
        }
    }

    /// A [`Action::Run`] could not be delivered: the worker's task is gone without a word (it
    /// panicked, or the runtime is going away). The worker is given up as failed and the job
    /// placed elsewhere.
    pub(crate) fn undeliverable(&mut self, worker: WorkerNo, job: Job<T>, now: Instant) {
        self.worker_leaving(worker, None, Some(job), now);
        let reason = "its task ended unexpectedly".to_string();
        self.worker_closed(worker, Ending::Failed { job: None, reason });
    }

    /// Worker `worker` (`started`, or still starting) is gone without a word because the runtime
    /// its task lived on ended: an actix worker runtime at shutdown, or a test's runtime. Not a
    /// failure of the server, and no replacement is started here: that runtime's tasks are being
    /// dropped one by one, and a replacement started in the same breath could land there too.
    /// The idle tick restores `min_workers` on the class's runtime.
    pub(crate) fn vanished(&mut self, worker: WorkerNo, started: bool, now: Instant) {
        if !started {
            // One fewer to wait for; its number is never used.
            self.replacement_lost(worker, "its runtime ended while it started");
            self.start_homes.remove(&worker);
            self.starting = self.starting.saturating_sub(1);
            return;
        }
        // Already given up as undeliverable, if a job found its task gone first.
        if self.workers.contains_key(&worker) {
            self.worker_leaving(worker, None, None, now);
            self.workers.remove(&worker);
        }
    }

    /// The idle tick: stop workers idle for `idle_timeout` while more than `min_workers` live,
    /// and start workers when fewer live (after workers vanished with their runtime).
    pub(crate) fn reap(&mut self, now: Instant) {
        if self.phase != Phase::Running {
            return;
        }
        if self.live() + self.starting < self.limits.min_workers {
            self.replenish(Duration::ZERO);
        }
        let mut excess = self.live().saturating_sub(self.limits.min_workers);
        // The bottom of the LIFO stack has been idle longest: look there first.
        let mut i = 0;
        while excess > 0 && i < self.idle.len() {
            let worker = self.idle[i];
            match self.workers.get_mut(&worker) {
                // A pinned worker holds what only it has: never reaped.
                Some(slot)
                    if !slot.pinned()
                        && now.saturating_duration_since(slot.idle_since)
                            >= self.limits.idle_timeout =>
                {
                    slot.live = false;
                    self.idle.remove(i);
                    self.actions.push_back(Action::Stop { worker });
                    excess -= 1;
                }
                _ => i += 1,
            }
        }
    }

    /// Shutdown begins: refuse new calls, let queued and running ones finish. `true` the first
    /// time.
    pub(crate) fn drain(&mut self) -> bool {
        let first = self.phase == Phase::Running;
        if first {
            self.phase = Phase::Draining;
        }
        first
    }

    /// Stop everything now: answer what waits with `ShuttingDown`, stop every worker.
    pub(crate) fn stop(&mut self) {
        self.phase = Phase::Stopped;
        self.rolling = None;
        while let Some(job) = self.queue.pop_front() {
            self.answer(job.ticket, Err(self.shutting_down()));
        }
        let mut waiting = Vec::new();
        for (no, slot) in &mut self.workers {
            if slot.live {
                slot.live = false;
                self.actions.push_back(Action::Stop { worker: *no });
            }
            waiting.extend(slot.own.drain(..));
        }
        for job in waiting {
            self.answer(job.ticket, Err(self.shutting_down()));
        }
        self.idle.clear();
    }

    /// An operator sets the number of workers the class keeps (see the module docs). Returns the
    /// number now kept: `workers` capped at `max_workers`.
    pub(crate) fn resize(&mut self, workers: usize) -> usize {
        let target = workers.min(self.limits.max_workers);
        self.limits.min_workers = target;
        if self.phase != Phase::Running {
            return target;
        }
        self.replenish(Duration::ZERO);
        let mut excess = self.live().saturating_sub(target);
        let mut i = 0;
        while excess > 0 && i < self.idle.len() {
            let worker = self.idle[i];
            match self.workers.get_mut(&worker) {
                Some(slot) if !slot.pinned() && !slot.retiring => {
                    slot.live = false;
                    self.idle.remove(i);
                    self.actions.push_back(Action::Stop { worker });
                    excess -= 1;
                }
                _ => i += 1,
            }
        }
        target
    }

    /// An operator asks for every live worker to be replaced, one by one (see the module docs).
    /// `false` when one is already under way, or the pool is shutting down.
    pub(crate) fn restart(&mut self) -> bool {
        let under_way = self.rolling.as_ref().is_some_and(|r| {
            r.failed.is_none()
                && (r.retiring.is_some() || r.replacement.is_some() || !r.pending.is_empty())
        });
        if self.phase != Phase::Running || under_way {
            return false;
        }
        self.rolling = Some(Rolling {
            pending: self
                .workers
                .iter()
                .filter(|(_, s)| s.live)
                .map(|(no, _)| *no)
                .collect(),
            ..Rolling::default()
        });
        self.roll();
        true
    }

    /// The rolling restart's progress, if one was asked for since the pool started.
    pub(crate) fn restart_status(&self) -> Option<RestartStatus> {
        self.rolling.as_ref().map(|r| RestartStatus {
            replaced: r.replaced,
            remaining: r.pending.len() + usize::from(r.retiring.is_some()),
            retiring: r.retiring.map(|no| self.worker_id(no)),
            starting: r.replacement.is_some(),
            failed: r.failed.clone(),
        })
    }

    /// The restart's next step: retire the next worker, unless one is retiring or a replacement
    /// is starting.
    fn roll(&mut self) {
        loop {
            let Some(rolling) = &mut self.rolling else {
                return;
            };
            if rolling.retiring.is_some() || rolling.replacement.is_some() {
                return;
            }
            let Some(next) = rolling.pending.pop_front() else {
                return;
            };
            let Some(slot) = self.workers.get_mut(&next).filter(|s| s.live) else {
                // Gone since the restart was asked for: nothing to replace.
                continue;
            };
            slot.retiring = true;
            rolling.retiring = Some(next);
            let idle = !slot.busy;
            if idle && self.retire_if_free(next) {
                continue;
            }
            return;
        }
    }

    /// Stop retiring worker `worker` and start its replacement, if it is idle and holds nothing;
    /// `true` when it did.
    fn retire_if_free(&mut self, worker: WorkerNo) -> bool {
        let Some(slot) = self.workers.get_mut(&worker) else {
            return false;
        };
        if !slot.retiring || !slot.live || slot.busy || slot.pinned() || !slot.own.is_empty() {
            return false;
        }
        slot.live = false;
        self.idle.retain(|n| *n != worker);
        self.actions.push_back(Action::Stop { worker });
        let replacement = self.next_worker;
        self.start(Duration::ZERO, None);
        if let Some(rolling) = &mut self.rolling {
            rolling.retiring = None;
            rolling.replacement = Some(replacement);
            rolling.replaced += 1;
        }
        true
    }

    /// A worker being started will not come up: when it was the restart's replacement, the
    /// restart ends here.
    fn replacement_lost(&mut self, worker: WorkerNo, reason: &str) {
        if let Some(rolling) = &mut self.rolling {
            if rolling.replacement == Some(worker) {
                rolling.replacement = None;
                rolling.pending.clear();
                rolling.failed = Some(format!("a replacement worker did not start: {reason}"));
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Questions
    // -----------------------------------------------------------------------------------------

    /// Not shutting down (nobody waits for [`Dispatcher::is_drained`] or
    /// [`Dispatcher::is_empty`] yet).
    pub(crate) fn running(&self) -> bool {
        self.phase == Phase::Running
    }

    /// Nothing queued, nothing being served.
    pub(crate) fn is_drained(&self) -> bool {
        self.queue.is_empty() && !self.workers.values().any(|s| s.busy)
    }

    /// No worker left, none starting.
    pub(crate) fn is_empty(&self) -> bool {
        self.workers.is_empty() && self.starting == 0
    }

    /// Whether `worker` is alive (started, not being stopped).
    pub(crate) fn worker_alive(&self, worker: &str) -> bool {
        self.find(worker).is_some()
    }

    pub(crate) fn status(&self) -> PoolStatus {
        PoolStatus {
            workers: self
                .workers
                .values()
                .filter(|s| s.live)
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
            starting: self.starting,
            queued: self.queue.len(),
            deaths: self.deaths,
            kept: self.limits.min_workers,
            restart: self.restart_status(),
        }
    }

    // -----------------------------------------------------------------------------------------
    // The rules
    // -----------------------------------------------------------------------------------------

    fn live(&self) -> usize {
        self.workers.values().filter(|s| s.live).count()
    }

    fn worker_id(&self, no: WorkerNo) -> WorkerId {
        format!("{}#{no}", self.class)
    }

    /// The live worker with this id (`<class>#<n>`).
    fn find(&self, id: &str) -> Option<WorkerNo> {
        let no = id
            .strip_prefix(self.class.as_str())?
            .strip_prefix('#')?
            .parse()
            .ok()?;
        self.workers.get(&no).filter(|s| s.live).map(|_| no)
    }

    /// The live worker holding this transaction.
    fn holder(&self, transaction: &str) -> Option<&Slot<T>> {
        self.workers
            .values()
            .find(|s| s.live && s.holds(transaction))
    }

    fn answer(&mut self, ticket: T, result: Result<Answer, AdapterError>) {
        self.actions.push_back(Action::Answer { ticket, result });
    }

    fn run(&mut self, worker: WorkerNo, job: Job<T>) {
        if let Some(slot) = self.workers.get_mut(&worker) {
            slot.busy = true;
        }
        self.actions.push_back(Action::Run { worker, job });
    }

    fn start(&mut self, delay: Duration, home: Option<Home>) {
        self.starting += 1;
        let worker = self.next_worker;
        self.next_worker += 1;
        let id = self.worker_id(worker);
        if let Some(home) = home {
            self.start_homes.insert(worker, home);
        }
        self.actions.push_back(Action::Start {
            worker,
            id,
            delay,
            home,
        });
    }

    /// The delay before the next restart: the backoff for the failures so far, with jitter.
    fn restart_delay(&mut self) -> Duration {
        self.backoff.delay(self.failures, &mut self.rng)
    }

    /// Give live, idle worker `worker` its next job, or put it on top of the idle stack.
    fn next_or_idle(&mut self, worker: WorkerNo, now: Instant) {
        match self.next_for(worker, now) {
            Some(job) => self.run(worker, job),
            None if self.retire_if_free(worker) => {}
            None => {
                if let Some(slot) = self.workers.get_mut(&worker) {
                    slot.idle_since = now;
                }
                self.idle.push(worker);
            }
        }
    }

    /// The next job worker `worker` should run: its own queue first, then the first shared job it
    /// takes. Jobs whose callers stopped waiting are dropped (or answered) on the way.
    fn next_for(&mut self, worker: WorkerNo, now: Instant) -> Option<Job<T>> {
        let Dispatcher {
            workers,
            queue,
            actions,
            limits,
            class,
            ..
        } = self;
        let slot = workers.get_mut(&worker)?;
        let mut waiting = |job: Job<T>| -> Option<Job<T>> {
            if job.ticket.abandoned() {
                return None;
            }
            if job.deadline <= now {
                let error = timeout_error(class, limits.request_timeout);
                actions.push_back(Action::Answer {
                    ticket: job.ticket,
                    result: Err(error),
                });
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
            let stale = queue[i].ticket.abandoned() || queue[i].deadline <= now;
            if stale || slot.takes(queue[i].work.need(), limits.max_dialogs) {
                if let Some(job) = queue.remove(i).and_then(&mut waiting) {
                    return Some(job);
                }
            } else {
                i += 1;
            }
        }
        None
    }

    /// Place a targeted job on live worker `worker`: at once if it is idle, else in its own queue.
    fn place_on(&mut self, worker: WorkerNo, job: Job<T>) {
        let limit = self.limits.queue_limit;
        let Some(slot) = self.workers.get_mut(&worker) else {
            return;
        };
        if slot.busy {
            if slot.own.len() >= limit {
                let error = AdapterError::QueueFull {
                    class: self.class.clone(),
                    limit,
                };
                return self.answer(job.ticket, Err(error));
            }
            slot.own.push_back(job);
            return;
        }
        self.idle.retain(|n| *n != worker);
        self.run(worker, job);
    }

    /// A targeted job whose worker is gone: fail it, succeed it, or send it elsewhere.
    fn orphan(&mut self, mut job: Job<T>, worker: &str, now: Instant) {
        let gone = AdapterError::PinnedWorkerGone {
            class: self.class.clone(),
            worker: worker.to_string(),
        };
        match &job.work {
            // The dialog, or the transaction's uncommitted work, died with the worker.
            Work::Request { .. } | Work::Prepare(_) => self.answer(job.ticket, Err(gone)),
            Work::DialogAbort(_) => self.answer(job.ticket, Ok(Answer::Ack)),
            Work::Commit(t) if self.lost.iter().any(|(lt, lw)| lt == t && lw == worker) => {
                self.answer(job.ticket, Err(gone))
            }
            // Prepared (durable in the class's shared state), or unknown to us: any worker can
            // resolve it, and acknowledges a transaction it does not know.
            Work::Commit(_) | Work::Abort(_) | Work::Recover => {
                job.target = None;
                self.place(job, now)
            }
        }
    }

    /// An untargeted job that was handed to a worker which left before writing it: an idle worker
    /// that takes it, else the head of the queue (it has waited longest).
    fn requeue(&mut self, job: Job<T>) {
        if let Err(job) = self.hand_to_idle(job) {
            self.queue.push_front(job);
        }
    }

    /// Place an untargeted job: an idle worker that takes it, else the queue (growing the pool if
    /// it may).
    fn place(&mut self, job: Job<T>, now: Instant) {
        if let Err(job) = self.hand_to_idle(job) {
            self.enqueue(job, now);
        }
    }

    /// Hand an untargeted job to the most recently used idle worker that takes it, if any: one at
    /// the job's home first, else any.
    // The job comes back by value when none does; boxing it would allocate on every dispatch.
    #[allow(clippy::result_large_err)]
    fn hand_to_idle(&mut self, job: Job<T>) -> Result<(), Job<T>> {
        let need = job.work.need();
        let max_dialogs = self.limits.max_dialogs;
        let takes = |need: Need| {
            let fits = |no: &WorkerNo, at_home: bool| {
                self.workers
                    .get(no)
                    .is_some_and(|s| s.takes(need, max_dialogs) && (!at_home || s.home == job.home))
            };
            let idle = &self.idle;
            idle.iter()
                .rposition(|no| fits(no, true))
                .or_else(|| idle.iter().rposition(|no| fits(no, false)))
        };
        // Control messages prefer unpinned workers, but any idle one can answer them.
        let pos = match need {
            Need::Any => takes(Need::Free).or_else(|| takes(Need::Any)),
            need => takes(need),
        };
        match pos {
            Some(pos) => {
                let worker = self.idle.remove(pos);
                self.run(worker, job);
                Ok(())
            }
            None => Err(job),
        }
    }

    /// Place an untargeted job with no idle worker for it: the queue, growing the pool if it may.
    fn enqueue(&mut self, job: Job<T>, now: Instant) {
        let live = self.live();
        if live == 0 {
            if let Some(down) = &self.down {
                if self.starting > 0 || now < down.retry_at {
                    let reason = format!(
                        "{} (no worker is running; retrying in the background)",
                        down.reason
                    );
                    let error = self.unreachable(&reason);
                    return self.answer(job.ticket, Err(error));
                }
            }
        }
        // Grow only if the workers already starting are spoken for by queued jobs.
        if live + self.starting < self.limits.max_workers && self.queue.len() >= self.starting {
            self.start(Duration::ZERO, job.home);
        }
        let limit = self.limits.queue_limit;
        if self.queue.len() >= limit.saturating_add(self.starting) {
            let error = AdapterError::QueueFull {
                class: self.class.clone(),
                limit,
            };
            return self.answer(job.ticket, Err(error));
        }
        self.queue.push_back(job);
    }

    /// Start enough workers to keep `min_workers` and serve the queue, after `delay`.
    fn replenish(&mut self, delay: Duration) {
        if self.phase != Phase::Running {
            return;
        }
        // Pinned idle workers cannot serve the queue: count them as occupied.
        let occupied = self
            .workers
            .values()
            .filter(|s| s.live && (s.busy || s.pinned()))
            .count();
        let demand = (occupied + self.queue.len()).min(self.limits.max_workers);
        let want = self.limits.min_workers.max(demand);
        let have = self.live() + self.starting;
        for _ in have..want {
            self.start(delay, None);
        }
    }

    fn shutting_down(&self) -> AdapterError {
        AdapterError::ShuttingDown {
            class: self.class.clone(),
        }
    }

    fn unreachable(&self, reason: &str) -> AdapterError {
        AdapterError::Unreachable {
            class: self.class.clone(),
            reason: reason.to_string(),
        }
    }

    fn timeout(&self) -> AdapterError {
        timeout_error(&self.class, self.limits.request_timeout)
    }
}

/// What an answer means for the pins of the worker that gave it.
fn apply<T>(slot: &mut Slot<T>, work: &Work, answer: &Answer) {
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
pub(crate) fn millis(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

/// `now + d`, saturating far in the future instead of overflowing on absurd configurations.
pub(crate) fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(now)
}

pub(crate) fn timeout_error(class: &str, timeout: Duration) -> AdapterError {
    AdapterError::Timeout {
        class: class.to_string(),
        timeout_ms: millis(timeout),
    }
}
