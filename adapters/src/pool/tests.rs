//! Every dispatch rule of `dispatch.rs`, checked by feeding the dispatcher events and reading the
//! actions it asks for: no process, no runtime, no sleep. Time is an `Instant` the test moves.
//!
//! Actions are read as short sentences (`start 2`, `run 1 <- #3`, `answer #3 QueueFull`), so a
//! test reads like the rule it protects. `#n` is the n-th job a test submitted.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::backoff::{Backoff, JITTER};
use super::dispatch::{Action, Answer, Dispatcher, Ending, Home, Job, Ticket, Work, WorkerNo};
use crate::{
    AdapterError, AdapterKind, BackendReply, DialogMarker, ReplyStatus, ServerClassConfig, Vote,
};

const MS: Duration = Duration::from_millis(1);
const TIMEOUT: Duration = Duration::from_secs(10);

/// A job's caller, as the dispatcher sees it.
#[derive(Debug)]
struct Caller {
    n: u32,
    gone: bool,
}

impl Ticket for Caller {
    fn abandoned(&self) -> bool {
        self.gone
    }
}

fn config(min: usize, max: usize) -> ServerClassConfig {
    let mut c = ServerClassConfig::new("c", AdapterKind::Tcp { addresses: vec![] });
    c.min_workers = min;
    c.max_workers = max;
    c.queue_limit = 2;
    c.max_dialogs_per_worker = 1;
    c.request_timeout = TIMEOUT;
    c.idle_timeout = Duration::from_secs(60);
    c.restart_backoff = 100 * MS;
    c.restart_backoff_max = 1000 * MS;
    c
}

fn free() -> Work {
    Work::Request {
        session: None,
        transaction: None,
        dialog: DialogMarker::None,
    }
}

fn under(transaction: &str) -> Work {
    Work::Request {
        session: None,
        transaction: Some(transaction.to_string()),
        dialog: DialogMarker::None,
    }
}

fn dialog(session: &str, dialog: DialogMarker) -> Work {
    Work::Request {
        session: Some(session.to_string()),
        transaction: None,
        dialog,
    }
}

fn id(no: WorkerNo) -> String {
    format!("c#{no}")
}

/// The dispatcher of class `c`, with the jobs it handed out and the delays it asked for.
struct Pool {
    d: Dispatcher<Caller>,
    now: Instant,
    jobs: u32,
    running: BTreeMap<WorkerNo, Job<Caller>>,
    /// The delay of every `start` so far, by worker.
    delays: BTreeMap<WorkerNo, Duration>,
}

impl Pool {
    fn new(config: ServerClassConfig) -> Pool {
        let mut d = Dispatcher::new(&config, fastrand::Rng::with_seed(20));
        d.open();
        Pool {
            d,
            now: Instant::now(),
            jobs: 0,
            running: BTreeMap::new(),
            delays: BTreeMap::new(),
        }
    }

    /// A pool of `min..=max` workers whose `up` first workers have started (and are idle).
    fn up(config: ServerClassConfig, up: WorkerNo) -> Pool {
        let mut p = Pool::new(config);
        p.take();
        for no in 1..=up {
            p.started(no);
        }
        assert_eq!(p.take(), Vec::<String>::new());
        p
    }

    /// The actions since the last call, as sentences.
    fn take(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(action) = self.d.next_action() {
            out.push(match action {
                Action::Run { worker, job } => {
                    let line = format!("run {worker} <- #{}", job.ticket.n);
                    assert!(
                        self.running.insert(worker, job).is_none(),
                        "{worker} was busy"
                    );
                    line
                }
                Action::Answer { ticket, result } => {
                    format!("answer #{} {}", ticket.n, describe(&result))
                }
                Action::Start {
                    worker,
                    id,
                    delay,
                    home,
                } => {
                    assert_eq!(id, format!("c#{worker}"));
                    self.delays.insert(worker, delay);
                    let when = if delay.is_zero() { "" } else { " later" };
                    let at = home.map(|h| format!(" at home {h}")).unwrap_or_default();
                    format!("start {worker}{when}{at}")
                }
                Action::Stop { worker } => format!("stop {worker}"),
            });
        }
        out
    }

    fn submit_job(&mut self, work: Work, target: Option<WorkerNo>, gone: bool) -> u32 {
        self.submit_full(work, target, gone, None)
    }

    fn submit_full(
        &mut self,
        work: Work,
        target: Option<WorkerNo>,
        gone: bool,
        home: Option<Home>,
    ) -> u32 {
        self.jobs += 1;
        let job = Job {
            work,
            target: target.map(id),
            deadline: self.now + TIMEOUT,
            home,
            ticket: Caller { n: self.jobs, gone },
        };
        self.d.submit(job, self.now);
        self.jobs
    }

    fn submit(&mut self, work: Work) -> u32 {
        self.submit_job(work, None, false)
    }

    /// A job from a caller on runtime `home`.
    fn submit_from(&mut self, home: Home, work: Work) -> u32 {
        self.submit_full(work, None, false, Some(home))
    }

    fn submit_to(&mut self, worker: WorkerNo, work: Work) -> u32 {
        self.submit_job(work, Some(worker), false)
    }

    fn started(&mut self, worker: WorkerNo) {
        self.d.worker_started(worker, None, self.now);
    }

    fn start_failed(&mut self, worker: WorkerNo) {
        self.d.start_failed(worker, "connection refused", self.now);
    }

    /// Worker `worker` answers the job it runs.
    fn answers(&mut self, worker: WorkerNo, answer: Answer) {
        let job = self.running.remove(&worker).expect("the worker runs a job");
        self.d.job_done(worker, job, Ok(answer), self.now);
    }

    fn replies(&mut self, worker: WorkerNo, status: ReplyStatus) {
        let reply = BackendReply {
            open_transaction: None,
            status,
            payload: Default::default(),
            worker: id(worker),
        };
        self.answers(worker, Answer::Reply(reply));
    }

    /// Worker `worker` dies (while serving its job, if it runs one).
    fn dies(&mut self, worker: WorkerNo) {
        let job = self.running.remove(&worker);
        self.d
            .worker_leaving(worker, job.as_ref().map(|j| &j.work), None, self.now);
        let reason = "exited".to_string();
        self.d.worker_closed(worker, Ending::Failed { job, reason });
    }

    /// Worker `worker`'s job ran out of time.
    fn times_out(&mut self, worker: WorkerNo) {
        let job = self.running.remove(&worker).expect("the worker runs a job");
        self.d
            .worker_leaving(worker, Some(&job.work), None, self.now);
        self.d.worker_closed(worker, Ending::TimedOut(job));
    }

    /// Worker `worker` obeys a stop order.
    fn retires(&mut self, worker: WorkerNo) {
        self.d.worker_leaving(worker, None, None, self.now);
        self.d.worker_closed(worker, Ending::Retired(None));
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    fn pin(&self, worker: WorkerNo) -> (Option<String>, bool, usize) {
        let status = self.d.status();
        let w = status.workers.iter().find(|w| w.id == id(worker)).unwrap();
        (w.transaction.clone(), w.prepared, w.dialogs)
    }
}

fn describe(result: &Result<Answer, AdapterError>) -> String {
    match result {
        Ok(Answer::Reply(_)) => "reply".into(),
        Ok(Answer::Vote(Vote::Yes)) => "yes".into(),
        Ok(Answer::Vote(Vote::No(_))) => "no".into(),
        Ok(Answer::Ack) => "ack".into(),
        Ok(Answer::Recovered(list)) => format!("recovered {list:?}"),
        Err(AdapterError::PinnedWorkerGone { worker, .. }) => format!("PinnedWorkerGone {worker}"),
        Err(AdapterError::WorkerLost { worker, .. }) => format!("WorkerLost {worker}"),
        Err(AdapterError::QueueFull { .. }) => "QueueFull".into(),
        Err(AdapterError::Unreachable { .. }) => "Unreachable".into(),
        Err(AdapterError::Timeout { .. }) => "Timeout".into(),
        Err(AdapterError::Unsupported { .. }) => "Unsupported".into(),
        Err(AdapterError::ShuttingDown { .. }) => "ShuttingDown".into(),
    }
}

fn ok() -> ReplyStatus {
    ReplyStatus::Ok
}

// ---------------------------------------------------------------------------------------------
// Dispatch: reuse, growth, the queue
// ---------------------------------------------------------------------------------------------

#[test]
fn opening_starts_min_workers() {
    let mut p = Pool::new(config(2, 4));
    assert_eq!(p.take(), ["start 1", "start 2"]);
    p.started(1);
    p.started(2);
    assert_eq!(p.d.status().workers.len(), 2);
    assert_eq!(p.d.status().starting, 0);
}

#[test]
fn the_worker_that_finished_last_is_reused_first() {
    let mut p = Pool::up(config(3, 3), 3);
    // Started 1, 2, 3: 3 is on top of the idle stack.
    p.submit(free());
    assert_eq!(p.take(), ["run 3 <- #1"]);
    p.submit(free());
    assert_eq!(p.take(), ["run 2 <- #2"]);
    p.replies(2, ok());
    p.replies(3, ok());
    assert_eq!(p.take(), ["answer #2 reply", "answer #1 reply"]);
    // 3 finished last: it serves the next request, then 2, then 1 (the oldest idle).
    p.submit(free());
    p.submit(free());
    p.submit(free());
    assert_eq!(p.take(), ["run 3 <- #3", "run 2 <- #4", "run 1 <- #5"]);
}

#[test]
fn grows_when_busy_up_to_max_workers_then_queues_in_order() {
    let mut p = Pool::up(config(1, 2), 1);
    p.submit(free());
    assert_eq!(p.take(), ["run 1 <- #1"]);
    // No idle worker: one start for the waiting request.
    p.submit(free());
    assert_eq!(p.take(), ["start 2"]);
    // At max_workers (1 live + 1 starting): queued, no further start.
    p.submit(free());
    assert_eq!(p.take(), Vec::<String>::new());
    // The new worker takes the oldest waiting request, the next idle one the one after.
    p.started(2);
    assert_eq!(p.take(), ["run 2 <- #2"]);
    p.replies(1, ok());
    assert_eq!(p.take(), ["answer #1 reply", "run 1 <- #3"]);
}

#[test]
fn a_start_under_way_is_not_doubled_until_it_is_spoken_for() {
    // min 1: worker 1 is starting when the first request comes; it will take it.
    let mut p = Pool::new(config(1, 4));
    assert_eq!(p.take(), ["start 1"]);
    p.submit(free());
    assert_eq!(p.take(), Vec::<String>::new());
    // A second request finds worker 1 spoken for: now the pool grows.
    p.submit(free());
    assert_eq!(p.take(), ["start 2"]);
    p.started(1);
    assert_eq!(p.take(), ["run 1 <- #1"]);
}

#[test]
fn the_queue_holds_queue_limit_plus_one_per_starting_worker() {
    // queue_limit 2, max 2: one busy worker, one starting.
    let mut p = Pool::up(config(1, 2), 1);
    p.submit(free());
    p.submit(free()); // starts worker 2, queued as its first job
    p.submit(free());
    p.submit(free());
    assert_eq!(p.take(), ["run 1 <- #1", "start 2"]);
    // 3 waiting = limit 2 + 1 starting: the next one is refused at once.
    p.submit(free());
    assert_eq!(p.take(), ["answer #5 QueueFull"]);
    // Once worker 2 is up and took its job, the allowance for it is gone.
    p.started(2);
    assert_eq!(p.take(), ["run 2 <- #2"]);
    p.submit(free());
    assert_eq!(p.take(), ["answer #6 QueueFull"]);
}

#[test]
fn queued_jobs_whose_caller_left_or_deadline_passed_are_skipped() {
    let mut p = Pool::up(config(1, 1), 1);
    p.submit(free());
    p.submit_job(free(), None, true); // its caller is gone
    p.submit(free());
    assert_eq!(p.take(), ["run 1 <- #1"]);
    p.advance(TIMEOUT);
    p.replies(1, ok());
    // #2 is dropped silently; #3's deadline passed while it waited: it times out, unserved.
    assert_eq!(p.take(), ["answer #1 reply", "answer #3 Timeout"]);
    assert_eq!(p.d.status().queued, 0);
}

// ---------------------------------------------------------------------------------------------
// Failure: timeouts, dead workers, a class that cannot start, backoff
// ---------------------------------------------------------------------------------------------

#[test]
fn a_timed_out_worker_is_replaced_at_once() {
    let mut p = Pool::up(config(1, 1), 1);
    p.submit(free());
    p.take();
    p.times_out(1);
    assert_eq!(p.take(), ["answer #1 Timeout", "start 2"]);
}

#[test]
fn a_worker_dying_mid_request_loses_it_and_is_replaced_under_a_new_number() {
    let mut p = Pool::up(config(1, 1), 1);
    p.submit(free());
    p.take();
    p.dies(1);
    assert_eq!(p.take(), ["answer #1 WorkerLost c#1", "start 2 later"]);
    p.advance(100 * MS);
    p.started(2);
    // Worker numbers are never reused: a request for the dead c#1 does not land on c#2.
    p.submit_to(1, free());
    assert_eq!(p.take(), ["answer #2 PinnedWorkerGone c#1"]);
    assert!(!p.d.worker_alive("c#1"));
    assert!(p.d.worker_alive("c#2"));
}

#[test]
fn restart_backoff_doubles_while_failures_follow_each_other_and_resets_on_success() {
    let mut p = Pool::up(config(1, 1), 1);
    let nominal = Backoff::new(100 * MS, 1000 * MS);
    p.dies(1);
    p.take();
    for (worker, failures) in (2..=6).zip(2..) {
        p.start_failed(worker);
        p.take();
        let delay = p.delays[&(worker + 1)];
        let n = nominal.nominal(failures);
        let low = n.mul_f64(1.0 - JITTER);
        let high = n.mul_f64(1.0 + JITTER).min(1000 * MS);
        assert!(
            (low..=high).contains(&delay),
            "failure {failures}: {delay:?}"
        );
    }
    // 100, 200, 400, 800, 1000 (capped): the last delays sit near the cap.
    assert!(p.delays[&7] >= 800 * MS);
    // A good answer resets the count: the next death restarts after the first step again.
    p.started(7);
    p.submit(free());
    p.take();
    p.replies(7, ok());
    p.dies(7);
    p.take();
    assert!(p.delays[&8] <= 120 * MS, "{:?}", p.delays[&8]);
}

#[test]
fn jitter_spreads_the_restarts_of_workers_that_failed_together() {
    let mut p = Pool::up(config(4, 4), 4);
    for no in 1..=4 {
        p.dies(no);
    }
    p.take();
    let delays: Vec<_> = (5..).map_while(|no| p.delays.get(&no)).collect();
    assert!(delays.len() >= 4);
    assert!(delays.windows(2).any(|w| w[0] != w[1]), "{delays:?}");
}

#[test]
fn a_class_that_cannot_start_answers_unreachable_instead_of_queueing() {
    let mut p = Pool::new(config(1, 2));
    p.take();
    p.submit(free());
    p.start_failed(1);
    // The queued request fails at once; a retry is scheduled after the backoff.
    assert_eq!(p.take(), ["answer #1 Unreachable", "start 2 later"]);
    // While that retry is pending, new requests fail at once too.
    p.submit(free());
    assert_eq!(p.take(), ["answer #2 Unreachable"]);
    p.started(2);
    p.submit(free());
    assert_eq!(p.take(), ["run 2 <- #3"]);
}

#[test]
fn once_the_retry_is_due_a_request_starts_a_worker_and_waits_for_it() {
    let mut p = Pool::new(config(0, 1));
    p.submit(free());
    assert_eq!(p.take(), ["start 1"]);
    p.start_failed(1);
    // min_workers 0: nobody retries in the background; the class is down until the retry time.
    assert_eq!(p.take(), ["answer #1 Unreachable"]);
    p.submit(free());
    assert_eq!(p.take(), ["answer #2 Unreachable"]);
    p.advance(200 * MS);
    p.submit(free());
    assert_eq!(p.take(), ["start 2"]);
    p.started(2);
    assert_eq!(p.take(), ["run 2 <- #3"]);
}

// ---------------------------------------------------------------------------------------------
// Transaction pins
// ---------------------------------------------------------------------------------------------

#[test]
fn a_transaction_pins_its_worker_and_its_work_follows_it() {
    let mut p = Pool::up(config(2, 2), 2);
    p.submit(under("t1"));
    assert_eq!(p.take(), ["run 2 <- #1"]);
    // Pinned even by an error reply: the worker may have done work before failing.
    p.replies(2, ReplyStatus::Error("oops".into()));
    p.take();
    assert_eq!(p.pin(2), (Some("t1".into()), false, 0));
    // Free work avoids it, although it is on top of the idle stack.
    p.submit(free());
    assert_eq!(p.take(), ["run 1 <- #2"]);
    // Untargeted work of its transaction goes to it; so does its COMMIT, which releases it.
    p.submit(under("t1"));
    assert_eq!(p.take(), ["run 2 <- #3"]);
    p.replies(2, ok());
    p.submit(Work::Commit("t1".into()));
    assert_eq!(p.take(), ["answer #3 reply", "run 2 <- #4"]);
    p.answers(2, Answer::Ack);
    p.take();
    assert_eq!(p.pin(2), (None, false, 0));
    p.replies(1, ok());
    p.take();
    p.submit(free());
    assert_eq!(p.take(), ["run 1 <- #5"]);
    p.submit(free());
    assert_eq!(p.take(), ["run 2 <- #6"]);
}

#[test]
fn a_pinned_worker_is_busy_for_free_work_so_the_pool_grows() {
    let mut p = Pool::up(config(1, 2), 1);
    p.submit(under("t1"));
    p.take();
    p.replies(1, ok());
    p.take();
    p.submit(free());
    assert_eq!(p.take(), ["start 2"]);
}

#[test]
fn one_transaction_per_worker() {
    let mut p = Pool::up(config(1, 1), 1);
    p.submit(under("t1"));
    p.take();
    p.replies(1, ok());
    p.take();
    p.submit_to(1, under("t2"));
    assert_eq!(p.take(), ["answer #2 Unsupported"]);
}

#[test]
fn prepare_yes_marks_the_pin_prepared_and_no_releases_it() {
    let mut p = Pool::up(config(2, 2), 2);
    for (t, worker) in [("t1", 2), ("t2", 1)] {
        p.submit(under(t));
        p.take();
        p.replies(worker, ok());
        p.take();
    }
    p.submit_to(2, Work::Prepare("t1".into()));
    p.submit_to(1, Work::Prepare("t2".into()));
    assert_eq!(p.take(), ["run 2 <- #3", "run 1 <- #4"]);
    p.answers(2, Answer::Vote(Vote::Yes));
    p.answers(1, Answer::Vote(Vote::No("constraint".into())));
    assert_eq!(p.take(), ["answer #3 yes", "answer #4 no"]);
    assert_eq!(p.pin(2), (Some("t1".into()), true, 0));
    assert_eq!(p.pin(1), (None, false, 0));
}

#[test]
fn a_dead_participant_loses_unprepared_work_but_not_prepared_work() {
    let mut p = Pool::up(config(3, 3), 3);
    for (t, worker) in [("lost", 3), ("kept", 2)] {
        p.submit(under(t));
        p.take();
        p.replies(worker, ok());
        p.take();
    }
    p.submit_to(2, Work::Prepare("kept".into()));
    p.take();
    p.answers(2, Answer::Vote(Vote::Yes));
    p.take();
    p.dies(3);
    p.dies(2);
    p.take();
    // More work, or a PREPARE, for the dead worker: its uncommitted work died with it.
    p.submit_to(3, under("lost"));
    p.submit_to(3, Work::Prepare("lost".into()));
    // A one-phase COMMIT of the lost work must not be acknowledged by a worker that never saw it.
    p.submit_to(3, Work::Commit("lost".into()));
    assert_eq!(
        p.take(),
        [
            "answer #4 PinnedWorkerGone c#3",
            "answer #5 PinnedWorkerGone c#3",
            "answer #6 PinnedWorkerGone c#3"
        ]
    );
    // Its ABORT, and the prepared transaction's COMMIT, go to any live worker.
    p.submit_to(3, Work::Abort("lost".into()));
    p.submit_to(2, Work::Commit("kept".into()));
    assert_eq!(p.take(), ["run 1 <- #7"]);
    p.answers(1, Answer::Ack);
    assert_eq!(p.take(), ["answer #7 ack", "run 1 <- #8"]);
    p.answers(1, Answer::Ack);
    assert_eq!(p.take(), ["answer #8 ack"]);
    // An acknowledged ABORT forgets the lost transaction: a late COMMIT now goes to a worker.
    p.submit_to(3, Work::Commit("lost".into()));
    assert_eq!(p.take(), ["run 1 <- #9"]);
}

#[test]
fn a_worker_dying_during_commit_leaves_the_outcome_to_the_server() {
    let mut p = Pool::up(config(2, 2), 2);
    p.submit(under("t1"));
    p.take();
    p.replies(2, ok());
    p.submit_to(2, Work::Commit("t1".into()));
    p.take();
    p.dies(2);
    assert_eq!(p.take()[0], "answer #2 WorkerLost c#2");
    // Not remembered as lost: a retried COMMIT goes to a live worker, which knows the outcome.
    p.submit_to(2, Work::Commit("t1".into()));
    assert_eq!(p.take(), ["run 1 <- #3"]);
}

// ---------------------------------------------------------------------------------------------
// Dialog pins
// ---------------------------------------------------------------------------------------------

#[test]
fn a_dialog_pins_its_worker_until_it_ends() {
    let mut p = Pool::up(config(2, 2), 2);
    p.submit(dialog("s1", DialogMarker::Begin));
    assert_eq!(p.take(), ["run 2 <- #1"]);
    p.replies(2, ReplyStatus::DialogContinue);
    p.take();
    assert_eq!(p.pin(2).2, 1);
    // Free work avoids it, and max_dialogs_per_worker 1 keeps a second dialog off it too.
    p.submit(free());
    assert_eq!(p.take(), ["run 1 <- #2"]);
    p.replies(1, ok());
    p.take();
    p.submit(dialog("s2", DialogMarker::Begin));
    assert_eq!(p.take(), ["run 1 <- #3"]);
    // The continuation goes to its worker; a dialog-end reply releases it.
    p.submit_to(2, dialog("s1", DialogMarker::Continue));
    assert_eq!(p.take(), ["run 2 <- #4"]);
    p.replies(2, ReplyStatus::DialogEnd);
    p.take();
    assert_eq!(p.pin(2).2, 0);
}

#[test]
fn a_begin_answered_with_the_end_pins_nothing() {
    let mut p = Pool::up(config(1, 1), 1);
    p.submit(dialog("s1", DialogMarker::Begin));
    p.take();
    p.replies(1, ReplyStatus::DialogEnd);
    p.take();
    assert_eq!(p.pin(1).2, 0);
}

#[test]
fn max_dialogs_per_worker_lets_further_begins_share_a_worker() {
    let mut c = config(2, 2);
    c.max_dialogs_per_worker = 2;
    let mut p = Pool::up(c, 2);
    for (n, session) in ["s1", "s2"].into_iter().enumerate() {
        p.submit(dialog(session, DialogMarker::Begin));
        assert_eq!(p.take(), [format!("run 2 <- #{}", n + 1)]);
        p.replies(2, ReplyStatus::Ok);
        p.take();
    }
    assert_eq!(p.pin(2).2, 2);
    // Full: the third dialog opens on the other worker.
    p.submit(dialog("s3", DialogMarker::Begin));
    assert_eq!(p.take(), ["run 1 <- #3"]);
}

#[test]
fn a_targeted_begin_opens_on_its_worker_whatever_its_dialog_count() {
    let mut p = Pool::up(config(2, 2), 2);
    p.submit(dialog("s1", DialogMarker::Begin));
    p.take();
    p.replies(2, ReplyStatus::DialogContinue);
    p.take();
    p.submit_to(2, dialog("s2", DialogMarker::Begin));
    assert_eq!(p.take(), ["run 2 <- #2"]);
    p.replies(2, ReplyStatus::DialogContinue);
    p.take();
    assert_eq!(p.pin(2).2, 2);
}

#[test]
fn dialog_abort_releases_only_its_session_and_is_ok_on_a_dead_worker() {
    let mut c = config(1, 1);
    c.max_dialogs_per_worker = 2;
    let mut p = Pool::up(c, 1);
    for session in ["s1", "s2"] {
        p.submit(dialog(session, DialogMarker::Begin));
        p.take();
        p.replies(1, ReplyStatus::DialogContinue);
        p.take();
    }
    // Aborting s1 twice, and ending it once more, never releases s2's pin.
    for _ in 0..2 {
        p.submit_to(1, Work::DialogAbort("s1".into()));
        p.take();
        p.answers(1, Answer::Ack);
        p.take();
    }
    p.submit_to(1, dialog("s1", DialogMarker::Continue));
    p.take();
    p.replies(1, ReplyStatus::DialogEnd);
    p.take();
    assert_eq!(p.pin(1).2, 1);
    // On a dead worker the dialog is gone either way: success without a message.
    p.dies(1);
    p.take();
    p.submit_to(1, Work::DialogAbort("s2".into()));
    assert_eq!(p.take(), ["answer #6 ack"]);
    // A later request of the dialog fails: the dialog died with its worker.
    p.submit_to(1, dialog("s2", DialogMarker::Continue));
    assert_eq!(p.take(), ["answer #7 PinnedWorkerGone c#1"]);
}

// ---------------------------------------------------------------------------------------------
// Targeted work and control messages
// ---------------------------------------------------------------------------------------------

#[test]
fn targeted_jobs_wait_in_their_workers_own_fifo_before_the_shared_queue() {
    let mut p = Pool::up(config(1, 1), 1);
    p.submit(free());
    p.take();
    p.submit(free()); // shared queue
    p.submit_to(1, free());
    p.submit_to(1, free());
    // Its own queue is bounded by queue_limit too.
    p.submit_to(1, free());
    assert_eq!(p.take(), ["answer #5 QueueFull"]);
    assert_eq!(p.d.status().workers[0].queued, 2);
    p.replies(1, ok());
    assert_eq!(p.take(), ["answer #1 reply", "run 1 <- #3"]);
    p.replies(1, ok());
    assert_eq!(p.take(), ["answer #3 reply", "run 1 <- #4"]);
    p.replies(1, ok());
    assert_eq!(p.take(), ["answer #4 reply", "run 1 <- #2"]);
}

#[test]
fn targeted_jobs_waiting_for_a_worker_that_dies_become_orphans() {
    let mut c = config(2, 2);
    c.queue_limit = 4;
    let mut p = Pool::up(c, 2);
    p.submit(under("t1"));
    p.take();
    p.replies(2, ok());
    p.submit_to(2, under("t1"));
    p.take();
    p.submit_to(2, Work::Prepare("t1".into()));
    p.submit_to(2, Work::DialogAbort("s".into()));
    p.submit_to(2, Work::Abort("t1".into()));
    p.dies(2);
    assert_eq!(
        p.take(),
        [
            "answer #3 PinnedWorkerGone c#2",
            "answer #4 ack",
            "run 1 <- #5",
            "answer #2 WorkerLost c#2",
            "start 3 later"
        ]
    );
}

#[test]
fn untargeted_control_messages_prefer_unpinned_workers_but_take_any() {
    let mut p = Pool::up(config(2, 2), 2);
    p.submit(under("t1"));
    p.take();
    p.replies(2, ok());
    p.take();
    // Worker 2 (pinned) is on top of the idle stack; RECOVER goes to unpinned 1.
    p.submit(Work::Recover);
    assert_eq!(p.take(), ["run 1 <- #2"]);
    // With only the pinned worker idle, it answers the RECOVER: no in-memory state involved.
    p.submit(Work::Recover);
    assert_eq!(p.take(), ["run 2 <- #3"]);
    p.answers(2, Answer::Recovered(vec![]));
    p.take();
    assert_eq!(p.pin(2), (Some("t1".into()), false, 0));
}

#[test]
fn an_unsent_job_of_a_worker_that_left_goes_back_to_the_head_of_the_queue() {
    let mut p = Pool::up(config(2, 2), 2);
    p.submit(free());
    p.submit(free());
    p.take();
    let job = p.running.remove(&2).unwrap();
    p.submit(free()); // queued behind the one that comes back
    p.take();
    // Worker 2 died idle at the moment the job was handed to it: it never wrote it.
    p.d.worker_leaving(2, None, Some(job), p.now);
    p.d.worker_closed(
        2,
        Ending::Failed {
            job: None,
            reason: "exited while idle".into(),
        },
    );
    p.take();
    p.replies(1, ok());
    assert_eq!(p.take(), ["answer #2 reply", "run 1 <- #1"]);
}

#[test]
fn an_undeliverable_job_is_placed_elsewhere() {
    let mut p = Pool::up(config(2, 2), 2);
    p.submit(free());
    p.take();
    let job = p.running.remove(&2).unwrap();
    p.d.undeliverable(2, job, p.now);
    assert_eq!(p.take(), ["run 1 <- #1", "start 3 later"]);
}

// ---------------------------------------------------------------------------------------------
// Reaping and shutdown
// ---------------------------------------------------------------------------------------------

#[test]
fn the_reaper_stops_the_longest_idle_unpinned_workers_down_to_min() {
    let mut p = Pool::up(config(1, 4), 4);
    // Worker 4 gets a transaction pin; 3 is used later, so it is idle for a shorter time.
    p.submit(under("t1"));
    p.take();
    p.replies(4, ok());
    p.take();
    p.advance(Duration::from_secs(30));
    p.submit(free());
    p.take();
    p.replies(3, ok());
    p.take();
    p.advance(Duration::from_secs(30));
    // 1 and 2 have been idle for 60 s, 3 for 30 s, 4 is pinned.
    p.d.reap(p.now);
    assert_eq!(p.take(), ["stop 1", "stop 2"]);
    p.retires(1);
    p.retires(2);
    assert_eq!(p.take(), Vec::<String>::new());
    p.advance(Duration::from_secs(30));
    // 3 is now due, but 3 and 4 are live and min is 1: 3 goes, pinned 4 stays.
    p.d.reap(p.now);
    assert_eq!(p.take(), ["stop 3"]);
    p.retires(3);
    p.advance(Duration::from_secs(600));
    p.d.reap(p.now);
    assert_eq!(p.take(), Vec::<String>::new());
}

#[test]
fn the_reaper_keeps_min_workers() {
    let mut p = Pool::up(config(2, 4), 2);
    p.advance(Duration::from_secs(600));
    p.d.reap(p.now);
    assert_eq!(p.take(), Vec::<String>::new());
}

#[test]
fn draining_refuses_new_calls_and_lets_running_ones_finish() {
    let mut p = Pool::up(config(1, 1), 1);
    p.submit(free());
    p.submit(free());
    p.take();
    assert!(p.d.drain());
    assert!(!p.d.drain());
    p.submit(free());
    assert_eq!(p.take(), ["answer #3 ShuttingDown"]);
    assert!(!p.d.is_drained());
    p.replies(1, ok());
    assert_eq!(p.take(), ["answer #1 reply", "run 1 <- #2"]);
    p.replies(1, ok());
    p.take();
    assert!(p.d.is_drained());
}

#[test]
fn stopping_answers_what_waits_and_stops_every_worker() {
    let mut p = Pool::up(config(2, 3), 2);
    p.submit(free());
    p.submit(free());
    p.submit_to(2, free());
    p.submit(free()); // queued, and starts worker 3
    p.take();
    p.d.stop();
    assert_eq!(
        p.take(),
        [
            "answer #4 ShuttingDown",
            "stop 1",
            "stop 2",
            "answer #3 ShuttingDown"
        ]
    );
    // A worker that comes up now is stopped at once; dead workers are not replaced.
    p.started(3);
    assert_eq!(p.take(), ["stop 3"]);
    p.dies(1);
    assert_eq!(p.take(), ["answer #2 WorkerLost c#1"]);
    assert!(!p.d.is_empty());
    let job = p.running.remove(&2).unwrap();
    p.d.worker_leaving(2, Some(&job.work), None, p.now);
    p.d.worker_closed(2, Ending::Retired(Some(job)));
    p.retires(3);
    assert_eq!(p.take(), ["answer #1 ShuttingDown"]);
    assert!(p.d.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Homes: a caller's job prefers a worker on its own runtime
// ---------------------------------------------------------------------------------------------

#[test]
fn a_worker_started_for_a_callers_job_lives_on_the_callers_runtime() {
    let mut p = Pool::up(config(1, 3), 1);
    p.submit(free());
    assert_eq!(p.take(), ["run 1 <- #1"]);
    // Nobody idle: the pool grows at the caller's home.
    p.submit_from(7, free());
    assert_eq!(p.take(), ["start 2 at home 7"]);
    p.started(2);
    assert_eq!(p.take(), ["run 2 <- #2"]);
}

#[test]
fn an_idle_worker_at_the_callers_home_is_preferred_over_a_more_recent_one_elsewhere() {
    let mut p = Pool::up(config(1, 3), 1);
    p.submit(free());
    p.submit_from(7, free());
    p.take();
    p.started(2); // at home 7, runs #2
    p.take();
    p.replies(2, ok());
    p.replies(1, ok()); // 1 finished last: top of the stack
    p.take();
    // A caller at home 7 gets worker 2 although 1 is more recent; a caller elsewhere gets 1.
    p.submit_from(7, free());
    assert_eq!(p.take(), ["run 2 <- #3"]);
    p.submit(free());
    assert_eq!(p.take(), ["run 1 <- #4"]);
}

#[test]
fn with_nobody_idle_at_home_any_idle_worker_serves_rather_than_a_new_one() {
    let mut p = Pool::up(config(2, 4), 2);
    // Both workers live on the class's runtime; a caller at home 3 is served at once by the most
    // recent one, and nothing is started.
    p.submit_from(3, free());
    assert_eq!(p.take(), ["run 2 <- #1"]);
    // Pins stay class-wide: a transaction's later request goes to its worker whatever the home.
    p.replies(2, ok());
    p.take();
    p.submit_from(3, under("t1"));
    assert_eq!(p.take(), ["run 2 <- #2"]);
    p.replies(2, ok());
    p.take();
    p.submit_from(5, under("t1"));
    assert_eq!(p.take(), ["run 2 <- #3"]);
}

#[test]
fn replacements_and_min_workers_live_on_the_class_runtime() {
    let mut p = Pool::up(config(1, 2), 1);
    p.submit(free());
    p.submit_from(4, free());
    p.take();
    p.started(2); // at home 4
    p.take();
    p.submit_from(4, free()); // queued: the pool is at max_workers
    assert_eq!(p.take(), Vec::<String>::new());
    p.dies(2);
    // The replacement (for the queued job) is the class's, not home 4's.
    assert_eq!(p.take(), ["answer #2 WorkerLost c#2", "start 3 later"]);
}

#[test]
fn a_worker_that_vanished_with_its_runtime_is_forgotten_and_not_replaced_at_once() {
    let mut p = Pool::up(config(1, 2), 1);
    p.submit(free());
    p.submit_from(4, dialog("s1", DialogMarker::Begin));
    p.take();
    p.started(2);
    p.take();
    p.replies(2, ReplyStatus::DialogContinue);
    p.take();
    // Worker 2 holds s1's dialog; a continue is queued for it while it serves another.
    p.submit_to(2, dialog("s1", DialogMarker::Continue));
    assert_eq!(p.take(), ["run 2 <- #3"]);
    p.submit_to(2, dialog("s1", DialogMarker::Continue));
    assert_eq!(p.take(), Vec::<String>::new());
    // Its runtime ends: the task (and the job it ran) is dropped; the queued job is an orphan.
    p.running.remove(&2);
    p.d.vanished(2, true, p.now);
    assert_eq!(p.take(), ["answer #4 PinnedWorkerGone c#2"]);
    assert!(!p.d.worker_alive("c#2"));
    assert_eq!(p.d.status().workers.len(), 1);
    // Reported twice (a job found the task gone first): nothing more happens.
    p.d.vanished(2, true, p.now);
    assert_eq!(p.take(), Vec::<String>::new());
}

#[test]
fn a_start_that_vanished_is_no_longer_waited_for_and_the_idle_tick_restores_min_workers() {
    let mut p = Pool::new(config(2, 3));
    assert_eq!(p.take(), ["start 1", "start 2"]);
    p.started(1);
    p.d.vanished(2, false, p.now);
    assert_eq!(p.take(), Vec::<String>::new());
    assert_eq!(p.d.status().starting, 0);
    p.advance(MS);
    p.d.reap(p.now);
    assert_eq!(p.take(), ["start 3"]);
    // At shutdown, a vanished start leaves nothing to wait for.
    p.d.stop();
    p.take();
    p.d.vanished(3, false, p.now);
    p.retires(1);
    assert!(p.d.is_empty());
}

// ---------------------------------------------------------------------------------------------
// An operator's changes: resizing, rolling restarts
// ---------------------------------------------------------------------------------------------

#[test]
fn growing_starts_workers_at_once_and_keeps_them() {
    let mut p = Pool::up(config(1, 4), 1);
    assert_eq!(p.d.resize(3), 3);
    assert_eq!(p.take(), ["start 2", "start 3"]);
    p.started(2);
    p.started(3);
    // Kept: the reaper leaves them, however long they idle.
    p.advance(Duration::from_secs(600));
    p.d.reap(p.now);
    assert_eq!(p.take(), Vec::<String>::new());
    // Never beyond max_workers.
    assert_eq!(p.d.resize(9), 4);
    assert_eq!(p.take(), ["start 4"]);
}

#[test]
fn shrinking_stops_idle_free_workers_and_leaves_pinned_ones() {
    let mut p = Pool::up(config(3, 3), 3);
    // 3 holds a dialog (max one per worker), 2 serves a request.
    p.submit(dialog("s", DialogMarker::Begin));
    assert_eq!(p.take(), ["run 3 <- #1"]);
    p.replies(3, ReplyStatus::DialogContinue);
    p.submit(free());
    assert_eq!(p.take(), ["answer #1 reply", "run 2 <- #2"]);
    assert_eq!(p.d.resize(1), 1);
    // Only 1 is idle and free: stopped. 2 (busy) and 3 (pinned) stay for the reaper.
    assert_eq!(p.take(), ["stop 1"]);
    p.retires(1);
    assert_eq!(
        p.take(),
        Vec::<String>::new(),
        "no replacement below the new size"
    );
    p.replies(2, ok());
    p.advance(Duration::from_secs(61));
    p.d.reap(p.now);
    assert_eq!(p.take(), ["answer #2 reply", "stop 2"]);
}

#[test]
fn a_rolling_restart_replaces_workers_one_by_one() {
    let mut p = Pool::up(config(2, 2), 2);
    assert!(p.d.restart());
    // 1 is idle: stopped and replaced at once; 2 waits for the replacement.
    assert_eq!(p.take(), ["stop 1", "start 3"]);
    assert!(!p.d.restart(), "one restart at a time");
    p.retires(1);
    assert_eq!(p.take(), Vec::<String>::new());
    let status = p.d.restart_status().unwrap();
    assert_eq!((status.replaced, status.remaining), (1, 1));
    p.started(3);
    assert_eq!(p.take(), ["stop 2", "start 4"]);
    p.retires(2);
    p.started(4);
    assert_eq!(p.take(), Vec::<String>::new());
    let status = p.d.restart_status().unwrap();
    assert_eq!((status.replaced, status.remaining), (2, 0));
    let ids: Vec<_> = p.d.status().workers.into_iter().map(|w| w.id).collect();
    assert_eq!(ids, ["c#3", "c#4"]);
    // Finished: another may be asked for.
    assert!(p.d.restart());
}

#[test]
fn a_retiring_worker_finishes_its_dialog_and_takes_no_new_work() {
    let mut p = Pool::up(config(1, 2), 1);
    p.submit(dialog("s", DialogMarker::Begin));
    assert_eq!(p.take(), ["run 1 <- #1"]);
    p.replies(1, ReplyStatus::DialogContinue);
    p.take();
    assert!(p.d.restart());
    // Pinned: it retires, but is not stopped yet.
    assert_eq!(p.take(), Vec::<String>::new());
    assert_eq!(
        p.d.restart_status().unwrap().retiring.as_deref(),
        Some("c#1")
    );
    // New free work goes elsewhere (a new worker), the dialog's next request to 1.
    p.submit(free());
    assert_eq!(p.take(), ["start 2"]);
    p.submit_to(1, dialog("s", DialogMarker::Continue));
    assert_eq!(p.take(), ["run 1 <- #3"]);
    p.replies(1, ReplyStatus::DialogEnd);
    // The dialog over, it is stopped and replaced.
    assert_eq!(p.take(), ["answer #3 reply", "stop 1", "start 3"]);
}

#[test]
fn a_replacement_that_cannot_start_ends_the_restart() {
    let mut p = Pool::up(config(2, 2), 2);
    assert!(p.d.restart());
    assert_eq!(p.take(), ["stop 1", "start 3"]);
    p.retires(1);
    p.start_failed(3);
    p.take();
    let status = p.d.restart_status().unwrap();
    assert_eq!(status.remaining, 0);
    assert!(status
        .failed
        .is_some_and(|f| f.contains("connection refused")));
    // Worker 2 was not taken away.
    assert!(p.d.worker_alive("c#2"));
}
