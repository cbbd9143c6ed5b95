//! # Worker I/O: the tasks that own the connections
//!
//! Everything here is a thin driver of the dispatcher: it does what an action says, and
//! reports what happened as the next event. No dispatch decision is made here.
//!
//! - The **start task** ([`Shared::start_worker`]) waits out the delay the dispatcher chose,
//!   spawns or connects through the [`Connector`] and performs the `HELLO` handshake (bounded by
//!   [`HANDSHAKE_TIMEOUT`]), then reports `worker_started` or `start_failed`. A started worker's
//!   task continues as its **worker task**.
//! - The **worker task** ([`Shared::run_worker`]) waits for a job on its channel (capacity 1: the
//!   dispatcher only hands a job to an idle worker), runs one exchange (the message out, its
//!   answer in, raced against the job's deadline and the pool's stop signal), and reports
//!   `job_done`; the dispatcher's answer may name this worker's next job, which it runs at once.
//!   An idle worker must stay silent: any byte from it, or end of file, ends it.
//! - When a worker ends, its task reports `worker_leaving` first (out of dispatch at once, with
//!   the job its channel may still hold), then closes the connection the way the ending calls
//!   for (below), then reports `worker_closed`, which answers the job it ended with and starts a
//!   replacement as needed.
//!
//! How a connection is closed depends on why: retired (reaped, shut down) closes its stdin and
//! gives a process [`STOP_WAIT`] to exit before killing it; a timed-out or misbehaving worker is
//! killed at once (its late reply must never be read as another's); one that died on its own is
//! only collected, its exit status going into the log and the `WorkerLost` reason.

use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot, watch};

use bytes::{Buf, Bytes};

use super::dispatch::{millis, Answer, Ending, Work, WorkerNo};
use super::{BoxReader, BoxWriter, Connector, FrameLink, PoolJob, Presence, Shared, Transport};
use crate::protocol::{self, Frame, FrameReader, Hello, Message, ProtocolError};
use crate::{AdapterError, BackendReply, ReplyStatus, Vote, WorkerId};

/// How long a new worker has to start (or connect) and answer `HELLO`.
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a worker gets to exit after its stdin closes before it is killed.
pub(super) const STOP_WAIT: Duration = Duration::from_secs(2);
/// How long to wait for the exit status of a worker whose output just closed (for the log).
const EXIT_STATUS_WAIT: Duration = Duration::from_millis(300);

/// How one exchange ended.
enum Outcome {
    Answered(Answer),
    /// Answer the caller with this error; the worker itself is fine.
    Refused(AdapterError),
    TimedOut,
    /// The worker is unusable (reason, and whether it must be killed rather than waited for).
    Broken(String, bool),
    Stopped,
}

/// How frames go to and come from one worker: encoded into a byte stream, or handed over whole.
enum Wire {
    Stream {
        reader: FrameReader<BoxReader>,
        writer: BoxWriter,
    },
    Frames {
        link: FrameLink,
        max_frame: usize,
    },
}

impl Wire {
    fn new(transport: Transport, max_frame: usize) -> Wire {
        match transport {
            Transport::Stream { reader, writer } => Wire::Stream {
                reader: FrameReader::new(reader, max_frame),
                writer,
            },
            Transport::Frames(link) => Wire::Frames { link, max_frame },
        }
    }

    /// Send one frame: `head` (length prefix and header block, or a whole small frame) and its
    /// payload; a stream gets both in one (vectored, where it can) write.
    async fn send(&mut self, head: Bytes, payload: Bytes) -> std::io::Result<()> {
        match self {
            Wire::Stream { writer, .. } => {
                let mut out = head.chain(payload);
                writer.write_all_buf(&mut out).await?;
                writer.flush().await
            }
            Wire::Frames { link, .. } => link.send((head, payload)).await,
        }
    }

    /// The next frame; `Ok(None)` when the worker closed its side. Cancel-safe.
    async fn recv(&mut self) -> Result<Option<Frame>, ProtocolError> {
        match self {
            Wire::Stream { reader, .. } => reader.read_frame().await,
            Wire::Frames { link, max_frame } => link.recv(*max_frame).await,
        }
    }

    /// Closing our side is the polite "please exit" (stdin closed, socket half-closed, link
    /// dropped).
    async fn close(self) {
        if let Wire::Stream { mut writer, .. } = self {
            let _ = writer.shutdown().await;
        }
    }
}

/// A started, handshaken worker connection.
struct Conn {
    wire: Wire,
    child: ChildProcess,
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
            wire, mut child, ..
        } = self;
        wire.close().await;
        let mut child = child.child.take()?;
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

/// A worker's child process, closed by [`Conn::close`]. Dropped without that, because the worker's
/// task went with its home runtime (see "Homes" in `dispatch.rs`), it is not killed at once as
/// `kill_on_drop` would: its stdin closed with the task, so on the class's runtime it is given
/// [`STOP_WAIT`] to exit as the protocol asks, and killed only then. The pool's shutdown waits for
/// these stops (`Shared::orphans`).
pub(super) struct ChildProcess {
    child: Option<Child>,
    orphans: tokio_util::task::TaskTracker,
    class_runtime: tokio::runtime::Handle,
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // If the class's runtime has ended too, the task is dropped unrun and the child with it:
        // killed on drop, as before.
        self.orphans.spawn_on(
            async move {
                if tokio::time::timeout(STOP_WAIT, child.wait()).await.is_err() {
                    let _ = child.start_kill();
                    let _ = tokio::time::timeout(STOP_WAIT, child.wait()).await;
                }
            },
            &self.class_runtime,
        );
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
pub(super) async fn stopped(rx: &mut watch::Receiver<bool>) {
    loop {
        let stop = *rx.borrow_and_update();
        if stop || rx.changed().await.is_err() {
            return;
        }
    }
}

/// Why a worker task's loop ended, before the dispatcher hears of it.
enum Exit {
    /// Its channel closed (the stop order) or the pool stopped, idle or mid-exchange.
    Retired(Option<PoolJob>),
    TimedOut(PoolJob),
    /// It broke the protocol: killed.
    Killed(String, Option<PoolJob>),
    /// It died on its own: collected.
    Lost(String, Option<PoolJob>),
}

impl<C: Connector> Shared<C> {
    /// Start worker `no` (after `delay`), then run it.
    pub(super) async fn start_worker(
        self: Arc<Self>,
        no: WorkerNo,
        id: WorkerId,
        delay: Duration,
        report: Option<oneshot::Sender<Result<(), String>>>,
        mut presence: Presence<C>,
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
        let attempt = if *stop.borrow() {
            Err("shutting down".to_string())
        } else {
            tokio::select! {
                result = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.open(&id)) => match result {
                    Ok(result) => result,
                    Err(_) => Err(format!("no HELLO within {HANDSHAKE_TIMEOUT:?}")),
                },
                _ = stopped(&mut stop) => Err("shutting down".to_string()),
            }
        };
        let conn = match attempt {
            Ok(conn) => conn,
            Err(reason) => {
                tracing::warn!(class = %self.class, worker = %id, "cannot start worker: {reason}");
                presence.disarm();
                {
                    let mut core = self.lock();
                    core.dispatch.start_failed(no, &reason, Instant::now());
                    self.act(&mut core, None);
                }
                return report(Err(reason));
            }
        };
        let (tx, rx) = mpsc::channel(1);
        let first = {
            let mut core = self.lock();
            core.links.insert(no, tx);
            core.dispatch.worker_started(no, conn.pid, Instant::now());
            presence.started();
            self.act(&mut core, Some(no))
        };
        report(Ok(()));
        self.run_worker(no, id, conn, rx, first, presence).await;
    }

    /// Connect and handshake.
    async fn open(&self, id: &WorkerId) -> Result<Conn, String> {
        let link = self.connector.connect(id).await?;
        let max = self.config.max_frame_bytes;
        let mut conn = Conn {
            wire: Wire::new(link.transport, max),
            child: ChildProcess {
                child: link.child,
                orphans: self.orphans.clone(),
                class_runtime: self.runtime.clone(),
            },
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
        conn.wire
            .send(hello, Bytes::new())
            .await
            .map_err(|e| format!("{} closed the connection before HELLO ({e})", conn.peer))?;
        let frame = match conn.wire.recv().await {
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
        no: WorkerNo,
        id: WorkerId,
        mut conn: Conn,
        mut rx: mpsc::Receiver<PoolJob>,
        first: Option<PoolJob>,
        presence: Presence<C>,
    ) {
        let mut stop = self.stop.subscribe();
        let mut next = first;
        let exit = loop {
            let mut job = match next.take() {
                Some(job) => job,
                None => tokio::select! {
                    biased;
                    _ = stopped(&mut stop) => break Exit::Retired(None),
                    job = rx.recv() => match job {
                        Some(job) => job,
                        None => break Exit::Retired(None),
                    },
                    // An idle worker must stay silent; anything here means it died or misbehaves.
                    frame = conn.wire.recv() => break match frame {
                        Ok(None) => Exit::Lost("exited while idle".to_string(), None),
                        Ok(Some(f)) => Exit::Killed(format!("sent {f} while idle"), None),
                        Err(e) => Exit::Killed(format!("while idle: {e}"), None),
                    },
                },
            };
            let result = match self.serve(&mut conn, &id, &mut job, &mut stop).await {
                Outcome::Answered(answer) => Ok(answer),
                Outcome::Refused(error) => Err(error),
                Outcome::TimedOut => break Exit::TimedOut(job),
                Outcome::Broken(reason, true) => break Exit::Killed(reason, Some(job)),
                Outcome::Broken(reason, false) => break Exit::Lost(reason, Some(job)),
                Outcome::Stopped => break Exit::Retired(Some(job)),
            };
            let mut core = self.lock();
            core.dispatch.job_done(no, job, result, Instant::now());
            next = self.act(&mut core, Some(no));
        };

        // Out of dispatch first, then the (possibly slow) close.
        {
            let serving = match &exit {
                Exit::TimedOut(job)
                | Exit::Killed(_, Some(job))
                | Exit::Lost(_, Some(job))
                | Exit::Retired(Some(job)) => Some(&job.work),
                _ => None,
            };
            let mut core = self.lock();
            core.links.remove(&no);
            rx.close();
            // Capacity 1, and a job is only handed to an idle worker: at most one is waiting.
            let unsent = rx.try_recv().ok();
            core.dispatch
                .worker_leaving(no, serving, unsent, Instant::now());
            self.act(&mut core, None);
        }
        let (class, peer) = (&self.class, conn.peer.clone());
        let ending = match exit {
            Exit::Retired(job) => {
                let status = conn.close(Close::Graceful).await;
                let status = status.map_or_else(|| "closed".to_string(), |s| s.to_string());
                tracing::info!(class = %class, worker = %id, peer = %peer, "worker stopped ({status})");
                Ending::Retired(job)
            }
            Exit::TimedOut(job) => {
                let timeout = self.config.request_timeout;
                conn.close(Close::Kill).await;
                tracing::warn!(
                    class = %class, worker = %id, peer = %peer,
                    "no reply within {timeout:?}: worker recycled"
                );
                Ending::TimedOut(job)
            }
            Exit::Killed(reason, job) => {
                let reason = with_status(reason, conn.close(Close::Kill).await);
                tracing::warn!(class = %class, worker = %id, peer = %peer, "worker closed: {reason}");
                Ending::Failed { job, reason }
            }
            Exit::Lost(reason, job) => {
                let reason = with_status(reason, conn.close(Close::Dead).await);
                tracing::warn!(class = %class, worker = %id, peer = %peer, "worker lost: {reason}");
                Ending::Failed { job, reason }
            }
        };
        presence.disarm();
        let mut core = self.lock();
        core.dispatch.worker_closed(no, ending);
        self.act(&mut core, None);
    }

    /// One exchange on a worker (a request and its reply, a control message and its answer),
    /// raced against the deadline and the stop signal.
    async fn serve(
        &self,
        conn: &mut Conn,
        id: &WorkerId,
        job: &mut PoolJob,
        stop: &mut watch::Receiver<bool>,
    ) -> Outcome {
        let work = &job.work;
        let call = &mut job.ticket;
        // A request says how long the broker will still wait: what is left of its deadline now.
        let left = job.deadline.saturating_duration_since(Instant::now());
        let last = call
            .timed
            .then(|| (super::TIMEOUT_HEADER, millis(left).max(1)));
        let head = match call.head.close(last, conn.send_max) {
            Ok(head) => head,
            Err(protocol::ProtocolError::TooLarge { len, max }) => {
                return Outcome::Refused(AdapterError::Unsupported {
                    class: self.class.clone(),
                    reason: format!(
                        "the {} ({len} bytes) exceeds the server's frame limit of {max} bytes",
                        work.name()
                    ),
                })
            }
            Err(e) => return Outcome::Refused(self.unsendable(work, e)),
        };
        let (message_id, payload) = (call.id, call.payload.clone());
        // The stream writes the head from its buffer; the in-memory link needs its own (small).
        let head = Bytes::copy_from_slice(head);
        // Errors carry whether the worker must be killed (it misbehaved) or just collected (died).
        let exchange = async {
            conn.wire
                .send(head, payload)
                .await
                .map_err(|e| (format!("cannot send the {}: {e}", job.work.name()), false))?;
            match conn.wire.recv().await {
                Ok(Some(frame)) => Ok(frame),
                Ok(None) => Err((
                    format!("closed its output during the {}", job.work.name()),
                    false,
                )),
                Err(e @ protocol::ProtocolError::Truncated) => Err((e.to_string(), false)),
                Err(e) => Err((e.to_string(), true)),
            }
        };
        let deadline = tokio::time::Instant::from_std(job.deadline);
        let frame = tokio::select! {
            result = exchange => match result {
                Ok(frame) => frame,
                Err((reason, kill)) => return Outcome::Broken(reason, kill),
            },
            _ = tokio::time::sleep_until(deadline) => return Outcome::TimedOut,
            _ = stopped(stop) => return Outcome::Stopped,
        };
        let message = match Message::from_frame(frame) {
            Ok(message) => message,
            Err(e) => return Outcome::Broken(format!("bad answer: {e}"), true),
        };
        let (kind, answer_id) = (message.kind(), message.id());
        if answer_id != message_id {
            return Outcome::Broken(
                format!(
                    "sent {kind} {answer_id} while {} {message_id} was outstanding",
                    work.name(),
                ),
                true,
            );
        }
        let answer = match (&job.work, message) {
            (Work::Request { .. }, Message::Reply(reply)) => Answer::Reply(BackendReply {
                status: reply.status,
                payload: reply.payload,
                worker: id.clone(),
                open_transaction: reply.open_transaction,
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
}
