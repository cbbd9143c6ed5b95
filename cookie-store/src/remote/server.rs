//! The daemon's side: accept connections, read requests, run each against the store, write the
//! responses back as they complete.
//!
//! One task reads each connection, and every request becomes a future that it polls once on the
//! spot: most requests (a lazy write, a read, a release) complete in that poll and answer at once,
//! without a task. A request that must wait (a `take_turn` behind a holder, a durable write waiting
//! for the group flush) is then spawned and answers when it is done, so it holds up nothing else on
//! the connection. Polling before reading the next frame is also what makes the turn queue follow
//! arrival order: the sled backend queues a waiter in its first poll, so requests queue in the order
//! they were read.
//!
//! Durable writes are answered only once the store has flushed them, which [`crate::SledStore`]
//! guarantees before its call returns: an answered durable write survives `kill -9` of the daemon.
//!
//! When a connection closes (its broker died, or the network between them failed), the daemon
//! aborts the `take_turn`s still waiting on it, lets its other requests finish, and releases the
//! turns that were granted over it and not given back. That is safe because of fencing: should the
//! broker still be alive, its next write with that epoch is refused with `Fenced`, exactly as if its
//! lease had run out, and the session's next request does not wait out a dead broker's lease.
//!
//! A frame that breaks the protocol (too large, wrong version, undecodable) closes its connection
//! with a logged reason, sent to the peer as well (request ID 0); nothing a peer sends can stop the
//! daemon or disturb other connections.

use super::frame::{self, FrameError, CONNECTION_ID};
use super::protocol::{GrantedTurn, Request, Response, WireError, WireTurn};
use crate::{short_id, SessionRecord, Store, StoreError, Turn};

/// The most records one `ListSessions` answer carries (a frame must stay well under its limit).
const LIST_LIMIT: usize = 1000;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::{AbortHandle, JoinSet};

/// The daemon's limits. Every one is a command-line flag of `cookie-store serve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections served at once; one more is told why and closed. Each broker opens a few (its
    /// store URL's `connections`).
    pub max_connections: usize,
    /// Largest frame read (a request) or written (a response), in bytes, length prefix excluded.
    /// A larger request closes its connection; a larger response is replaced by an error.
    pub max_frame_bytes: usize,
    /// Requests of one connection in progress at once (mostly `take_turn`s waiting for a turn);
    /// one more is answered with an `Unavailable` error at once.
    pub max_in_flight: usize,
    /// How long a shutdown waits for requests in progress before closing connections anyway.
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 256,
            max_frame_bytes: 1024 * 1024,
            max_in_flight: 4096,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// A bound daemon, ready to [`Server::run`].
pub struct Server {
    listener: TcpListener,
    store: Arc<dyn Store>,
    limits: ServerLimits,
}

impl Server {
    /// Listen on `addr` (`HOST:PORT`; port 0 picks a free one, see [`Server::local_addr`]).
    pub async fn bind(
        addr: &str,
        store: Arc<dyn Store>,
        limits: ServerLimits,
    ) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Server {
            listener,
            store,
            limits,
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve until `shutdown` completes; then stop accepting, let requests in progress finish
    /// (waiting `take_turn`s are abandoned, their clients see the connection close), flush the
    /// store and return.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), StoreError> {
        let Server {
            listener,
            store,
            limits,
        } = self;
        let limits = Arc::new(limits);
        let (stop_tx, stop) = watch::channel(false);
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        let open = Arc::new(AtomicUsize::new(0));
        let mut connections = JoinSet::new();
        let mut shutdown = pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            // Out of file descriptors, most likely: pause rather than spin.
                            tracing::warn!(%error, "accepting a connection failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        tracing::warn!(%peer, limit = limits.max_connections, "refusing a connection: too many connections");
                        let reason = format!("too many connections (the daemon's limit is {})", limits.max_connections);
                        connections.spawn(refuse(stream, reason));
                        continue;
                    };
                    let (store, limits, stop, open) = (store.clone(), limits.clone(), stop.clone(), open.clone());
                    connections.spawn(async move {
                        let count = open.fetch_add(1, Ordering::Relaxed) + 1;
                        tracing::info!(%peer, connections = count, "client connected");
                        serve_connection(stream, peer, store, &limits, stop).await;
                        let count = open.fetch_sub(1, Ordering::Relaxed) - 1;
                        tracing::info!(%peer, connections = count, "client disconnected");
                        drop(permit);
                    });
                }
                Some(joined) = connections.join_next(), if !connections.is_empty() => {
                    if let Err(error) = joined {
                        tracing::error!(%error, "a connection task failed");
                    }
                }
            }
        }
        drop(listener);
        tracing::info!(
            connections = open.load(Ordering::Relaxed),
            "shutting down: no new connections, finishing requests in progress"
        );
        let _ = stop_tx.send(true);
        // Each connection bounds its own wait by the grace period; this bound is for safety only.
        let drained = tokio::time::timeout(limits.shutdown_grace + Duration::from_secs(1), async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("connections still open after the grace period; closing them");
            connections.shutdown().await;
        }
        store.flush().await?;
        tracing::info!("store flushed");
        Ok(())
    }
}

/// Tell a peer over the connection limit why it is closed.
async fn refuse(mut stream: TcpStream, reason: String) {
    let frame = frame::encode(CONNECTION_ID, &Response::Error(WireError::Protocol(reason)));
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(&frame).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// What the request tasks of one connection share.
struct Connection {
    store: Arc<dyn Store>,
    out: mpsc::UnboundedSender<Vec<u8>>,
    max_frame_bytes: usize,
    /// Turns granted over this connection and not given back through it: released on close.
    held: parking_lot::Mutex<HashSet<(String, u64)>>,
}

impl Connection {
    fn send(&self, id: u64, response: &Response) {
        let mut bytes = frame::encode(id, response);
        if bytes.len() - 4 > self.max_frame_bytes {
            let why = format!(
                "the response ({} bytes) exceeds the daemon's frame limit of {} bytes",
                bytes.len() - 4,
                self.max_frame_bytes
            );
            bytes = frame::encode(id, &Response::Error(WireError::Unavailable(why)));
        }
        // Fails only once the writer has stopped (the peer is gone): nobody to tell.
        let _ = self.out.send(bytes);
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    store: Arc<dyn Store>,
    limits: &ServerLimits,
    mut stop: watch::Receiver<bool>,
) {
    // Responses are small and latency is the point: no Nagle delay.
    let _ = stream.set_nodelay(true);
    let (read_half, write_half) = stream.into_split();
    let (out, outbox) = mpsc::unbounded_channel();
    let writer = tokio::spawn(frame::write_all(write_half, outbox));
    let conn = Arc::new(Connection {
        store,
        out,
        max_frame_bytes: limits.max_frame_bytes,
        held: parking_lot::Mutex::new(HashSet::new()),
    });
    let mut reader = frame::reader(read_half, limits.max_frame_bytes);
    let mut tasks: JoinSet<()> = JoinSet::new();
    // take_turn tasks still waiting, by request ID (for Cancel) and by task ID (to forget them).
    let mut waiting: HashMap<u64, AbortHandle> = HashMap::new();
    let mut waiting_tasks: HashMap<tokio::task::Id, u64> = HashMap::new();

    loop {
        let read = tokio::select! {
            biased;
            _ = stop.wait_for(|stopping| *stopping) => break,
            read = frame::read(&mut reader) => read,
        };
        let buf = match read {
            Ok(Some(buf)) => buf,
            Ok(None) => break,
            Err(FrameError::Truncated | FrameError::Io(_)) => break,
            Err(error) => {
                protocol_error(&conn, peer, &error);
                break;
            }
        };
        let (id, request) = match frame::decode::<Request>(&buf) {
            Ok(decoded) => decoded,
            Err(error) => {
                protocol_error(&conn, peer, &error);
                break;
            }
        };
        while let Some(done) = tasks.try_join_next_with_id() {
            let task = match done {
                Ok((task, ())) => task,
                Err(error) => error.id(),
            };
            if let Some(request) = waiting_tasks.remove(&task) {
                waiting.remove(&request);
            }
        }
        if let Request::Cancel { request } = request {
            if let Some(task) = waiting.remove(&request) {
                tracing::debug!(%peer, request, "take_turn cancelled by the client");
                task.abort();
            }
            continue;
        }
        if id == CONNECTION_ID {
            protocol_error(&conn, peer, &"request ID 0 is reserved");
            break;
        }
        if tasks.len() >= limits.max_in_flight {
            let why = format!(
                "too many requests in progress on this connection (the daemon's limit is {})",
                limits.max_in_flight
            );
            conn.send(id, &Response::Error(WireError::Unavailable(why)));
            continue;
        }
        let is_take_turn = matches!(request, Request::TakeTurn { .. });
        let mut task: Pin<Box<dyn Future<Output = ()> + Send>> =
            Box::pin(answer(conn.clone(), id, request));
        // The first poll, here: see the module documentation.
        let done = std::future::poll_fn(|cx| Poll::Ready(task.as_mut().poll(cx).is_ready())).await;
        if !done {
            let handle = tasks.spawn(task);
            if is_take_turn {
                waiting_tasks.insert(handle.id(), id);
                waiting.insert(id, handle);
            }
        }
    }

    // Closing: waiting take_turns have nobody to answer; let the rest finish (bounded).
    for (_, task) in waiting.drain() {
        task.abort();
    }
    let finished = tokio::time::timeout(limits.shutdown_grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::warn!(%peer, "requests still in progress after the grace period; abandoning them");
        tasks.shutdown().await;
    }
    let held: Vec<_> = conn.held.lock().drain().collect();
    if !held.is_empty() {
        let mut released = 0;
        for (session_id, epoch) in held {
            // Fenced: the lease ran out and the turn moved on already; nothing to give back.
            if conn.store.release(Turn { session_id, epoch }).await.is_ok() {
                released += 1;
            }
        }
        tracing::info!(%peer, released, "released the turns the closed connection held");
    }
    drop(conn);
    // The writer ends once every sender (the connection, its tasks) is gone and it has written all.
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
}

/// Log a frame that broke the protocol and tell the peer why its connection closes.
fn protocol_error(conn: &Connection, peer: SocketAddr, error: &dyn std::fmt::Display) {
    tracing::warn!(%peer, %error, "closing a connection that broke the protocol");
    conn.send(
        CONNECTION_ID,
        &Response::Error(WireError::Protocol(error.to_string())),
    );
}

/// Run `request` and send its response.
async fn answer(conn: Arc<Connection>, id: u64, request: Request) {
    let response = match dispatch(&conn, request).await {
        Ok(response) => response,
        Err(error) => Response::Error(error.into()),
    };
    conn.send(id, &response);
}

async fn dispatch(conn: &Connection, request: Request) -> Result<Response, StoreError> {
    let store = conn.store.as_ref();
    let record = |bytes: &[u8], id: &str| super::protocol::decode_record(id, bytes);
    // A turn given back through this connection is no longer its to release on close, whatever the
    // outcome (a fenced one was not held anyway).
    let given_back = |turn: WireTurn| -> Turn {
        conn.held
            .lock()
            .remove(&(turn.session_id.clone(), turn.epoch));
        turn.into()
    };
    match request {
        Request::Create {
            record: bytes,
            durability,
        } => {
            let record = record(&bytes, "(new session)")?;
            store.create(&record, durability.into()).await?;
            Ok(Response::Done)
        }
        Request::TakeTurn {
            session_id,
            lease_ms,
            wait_ms,
        } => {
            let taken = store
                .take_turn(
                    &session_id,
                    Duration::from_millis(lease_ms),
                    Duration::from_millis(wait_ms),
                )
                .await?;
            Ok(Response::Turn(taken.map(|(turn, record)| {
                conn.held.lock().insert((turn.session_id, turn.epoch));
                GrantedTurn {
                    epoch: turn.epoch,
                    record: record.encode(),
                }
            })))
        }
        Request::Write {
            turn,
            record: bytes,
            durability,
        } => {
            let record = record(&bytes, &turn.session_id)?;
            check_same_session(&turn.session_id, &record.id)?;
            store
                .write(&turn.into(), &record, durability.into())
                .await?;
            Ok(Response::Done)
        }
        Request::WriteAndRelease {
            turn,
            record: bytes,
            durability,
        } => {
            let turn = given_back(turn);
            let decoded = record(&bytes, &turn.session_id)
                .and_then(|r| check_same_session(&turn.session_id, &r.id).map(|()| r));
            let record = match decoded {
                Ok(record) => record,
                Err(e) => {
                    // The caller gave up its turn with this call: give it back unwritten.
                    let _ = store.release(turn).await;
                    return Err(e);
                }
            };
            store
                .write_and_release(turn, &record, durability.into())
                .await?;
            Ok(Response::Done)
        }
        Request::Release { turn } => {
            store.release(given_back(turn)).await?;
            Ok(Response::Done)
        }
        Request::Delete { turn, durability } => {
            store.delete(given_back(turn), durability.into()).await?;
            Ok(Response::Done)
        }
        Request::ListSessions { after, limit } => Ok(Response::Records(
            store
                .list_sessions(after.as_deref(), usize_of(limit).min(LIST_LIMIT))
                .await?
                .iter()
                .map(SessionRecord::encode)
                .collect(),
        )),
        Request::DueForExpiry { now_ms, limit } => Ok(Response::Ids(
            store.due_for_expiry(now_ms, usize_of(limit)).await?,
        )),
        Request::CountSessions {
            endpoint,
            client_ip,
            now_ms,
            limit,
        } => {
            let count = store
                .count_sessions(&endpoint, client_ip, now_ms, usize_of(limit))
                .await?;
            Ok(Response::Count(count as u64))
        }
        Request::RegisterBroker { broker } => {
            store
                .register_broker(&super::protocol::decode_broker(&broker)?)
                .await?;
            Ok(Response::Done)
        }
        Request::LiveBrokers { now_ms } => Ok(Response::Brokers(
            store
                .live_brokers(now_ms)
                .await?
                .iter()
                .map(super::protocol::encode_broker)
                .collect(),
        )),
        Request::LogDecision { decision } => {
            store
                .log_decision(&super::protocol::decode_decision(&decision)?)
                .await?;
            Ok(Response::Done)
        }
        Request::ForgetDecision { txn_id } => {
            store.forget_decision(&txn_id).await?;
            Ok(Response::Done)
        }
        Request::PendingDecisions => Ok(Response::Decisions(
            store
                .pending_decisions()
                .await?
                .iter()
                .map(super::protocol::encode_decision)
                .collect(),
        )),
        Request::Ping => {
            store.ping().await?;
            Ok(Response::Done)
        }
        Request::Flush => {
            store.flush().await?;
            Ok(Response::Done)
        }
        // The connection handles cancels before dispatching; this arm only completes the match.
        Request::Cancel { .. } => Err(StoreError::Unavailable("a cancel is not a request".into())),
    }
}

/// A record written under another session's turn is refused (the sled backend only asserts it).
fn check_same_session(session_id: &str, record_id: &str) -> Result<(), StoreError> {
    if session_id == record_id {
        return Ok(());
    }
    Err(StoreError::Config(format!(
        "a record of session {}… written under the turn of session {}…",
        short_id(record_id),
        short_id(session_id)
    )))
}

fn usize_of(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}
