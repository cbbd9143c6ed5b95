//! The broker's side: [`RemoteStore`], the [`Store`] behind a `cookie-store://HOST:PORT` URL.
//!
//! It keeps a small pool of connections to the daemon, each carrying many requests at once (a
//! request ID per call, responses in any order). All of its I/O runs on its own thread, a
//! single-threaded tokio runtime, so callers on any runtime (or none) only ever wait on a oneshot
//! channel: a call encodes its request, files itself under its ID and queues the frame for the
//! connection's writer, all during its first poll, then waits for the reader to hand it the
//! response.
//!
//! - **Routing.** A session's requests go over one connection (chosen by hashing its ID), so they
//!   reach the daemon in the order they were made, and the turns a connection holds are the ones the
//!   daemon releases if that connection drops. Other requests take the connections in turn.
//! - **Timeouts.** A call that gets no answer within the per-call timeout (plus, for `take_turn`,
//!   the caller's own wait) fails with `Unavailable`: a stopped daemon cannot hang a broker. A
//!   sweeper on the client's thread enforces it, so callers need no timer of their own.
//! - **Cancellation.** A `take_turn` whose caller gives up (drops the future, or times out) tells
//!   the daemon to take it out of the queue; a grant that crosses that message on the way is given
//!   straight back.
//! - **Failures.** A lost connection fails the calls waiting on it with `Unavailable` (their outcome
//!   is unknown: a durable write may or may not have happened) and is reconnected in the background
//!   with exponential backoff and jitter (see `backoff.rs`). While every connection is down, calls fail at once; when the daemon
//!   is back they work again, with no action from the caller. Turns held across a daemon restart are
//!   fenced (the restart starts a new epoch generation), so a broker that held one sees `Fenced`.

use super::frame::{self, CONNECTION_ID};
use super::protocol::{
    decode_broker, decode_decision, decode_record, encode_broker, encode_decision, millis,
    GrantedTurn, Request, Response, WireError, WireTurn,
};
use crate::{
    BrokerInfo, BrokerRegistry, DecisionLog, Durability, SessionRecord, SessionStore, StoreError,
    StoreHealth, Turn, TxnDecision,
};
use async_trait::async_trait;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// The URL scheme of the daemon.
pub const SCHEME: &str = "cookie-store://";

/// How a [`RemoteStore`] talks to its daemon. Every field is a parameter of the store URL, as in
/// `cookie-store://127.0.0.1:7070?connections=4&timeout=5s`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// `connections`: connections to the daemon (1 to 64). Each carries any number of requests at
    /// once; more than one spreads the work of encoding and system calls.
    pub connections: usize,
    /// `timeout`: how long a call may go unanswered before it fails with `Unavailable` (for
    /// `take_turn`, on top of the caller's wait).
    pub call_timeout: Duration,
    /// `connect_timeout`: how long one connection attempt may take.
    pub connect_timeout: Duration,
    /// `backoff_min`: the pause before reconnecting after a failed attempt (drawn between half of
    /// this and this); it doubles with every further failure...
    pub backoff_min: Duration,
    /// `backoff_max`: ...up to this, so the daemon is found within this long after it is back.
    pub backoff_max: Duration,
    /// `max_frame_bytes`: the largest response frame accepted.
    pub max_frame_bytes: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connections: 4,
            call_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            max_frame_bytes: 16 * 1024 * 1024,
        }
    }
}

/// The most connections a URL may ask for.
const MAX_CONNECTIONS: usize = 64;

/// Parse `cookie-store://HOST:PORT[?param=value&...]` into the daemon's address and the options.
pub fn parse_url(url: &str) -> Result<(String, ClientOptions), StoreError> {
    let bad = |why: String| StoreError::Config(format!("store URL {url}: {why}"));
    let rest = url
        .strip_prefix(SCHEME)
        .ok_or_else(|| bad(format!("expected {SCHEME}HOST:PORT")))?;
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    if authority.contains('/') {
        return Err(bad("a path is not allowed, only HOST:PORT".into()));
    }
    if authority.contains('@') {
        return Err(bad(
            "user information is not allowed (the daemon has no authentication)".into(),
        ));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, port) = v6
            .split_once(']')
            .ok_or_else(|| bad("an IPv6 host needs its closing `]`".into()))?;
        (host, port.strip_prefix(':').unwrap_or(""))
    } else {
        authority.rsplit_once(':').unwrap_or((authority, ""))
    };
    if host.is_empty() {
        return Err(bad(format!("missing host: expected {SCHEME}HOST:PORT")));
    }
    if port.is_empty() {
        return Err(bad(format!("missing port: expected {SCHEME}HOST:PORT")));
    }
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| bad(format!("port `{port}` is not a number from 1 to 65535")))?;
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };

    let mut options = ClientOptions::default();
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if value.is_empty() {
            return Err(bad(format!(
                "parameter `{key}` has no value (expected key=value)"
            )));
        }
        let value = value.as_ref();
        let duration = || {
            humantime::parse_duration(value)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    bad(format!(
                        "{key}=`{value}` is not a positive duration (as in 5s or 250ms)"
                    ))
                })
        };
        match key.as_ref() {
            "connections" => {
                options.connections = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_CONNECTIONS).contains(n))
                    .ok_or_else(|| {
                        bad(format!(
                            "connections=`{value}` is not a number from 1 to {MAX_CONNECTIONS}"
                        ))
                    })?;
            }
            "timeout" => options.call_timeout = duration()?,
            "connect_timeout" => options.connect_timeout = duration()?,
            "backoff_min" => options.backoff_min = duration()?,
            "backoff_max" => options.backoff_max = duration()?,
            "max_frame_bytes" => {
                options.max_frame_bytes =
                    value.parse().ok().filter(|n| *n >= 1024).ok_or_else(|| {
                        bad(format!(
                            "max_frame_bytes=`{value}` is not a number of at least 1024"
                        ))
                    })?;
            }
            other => {
                return Err(bad(format!(
                    "unknown parameter `{other}` (known: connections, timeout, connect_timeout, \
                     backoff_min, backoff_max, max_frame_bytes)"
                )))
            }
        }
    }
    if options.backoff_min > options.backoff_max {
        return Err(bad("backoff_min is longer than backoff_max".into()));
    }
    Ok((addr, options))
}

/// The daemon's [`Store`](crate::Store): see the module documentation.
pub struct RemoteStore {
    inner: Arc<Inner>,
    /// Dropping it ends the client's thread, and with it every connection.
    _stop: oneshot::Sender<()>,
}

struct Inner {
    addr: String,
    options: ClientOptions,
    slots: Vec<Slot>,
    next_slot: AtomicUsize,
}

/// One connection of the pool: up (with the connection) or down (with why).
struct Slot {
    state: Mutex<SlotState>,
}

struct SlotState {
    conn: Option<Arc<Conn>>,
    down_because: String,
}

/// A live connection: where calls queue their frames and wait for their responses.
struct Conn {
    out: mpsc::UnboundedSender<Vec<u8>>,
    calls: Mutex<Calls>,
    next_id: AtomicU64,
}

struct Calls {
    /// False once the connection is gone: no call may wait on it any more.
    open: bool,
    waiting: HashMap<u64, Waiting>,
}

struct Waiting {
    reply: oneshot::Sender<Result<Response, StoreError>>,
    deadline: Instant,
    take_turn: bool,
}

impl RemoteStore {
    /// Connect to the daemon a `cookie-store://` URL names (see [`parse_url`]).
    pub fn open(url: &str) -> Result<RemoteStore, StoreError> {
        let (addr, options) = parse_url(url)?;
        Self::connect(addr, options)
    }

    /// Connect every connection of the pool to the daemon at `addr` (`HOST:PORT`). Fails with
    /// `Unavailable` naming the address when the daemon is not there. Blocks the calling thread
    /// for at most the connect timeout; callable inside or outside a tokio runtime.
    pub fn connect(addr: String, options: ClientOptions) -> Result<RemoteStore, StoreError> {
        let (runtime_tx, runtime_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("cookie-store-client".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = runtime_tx.send(Err(e));
                        return;
                    }
                };
                let _ = runtime_tx.send(Ok(runtime.handle().clone()));
                // Until the RemoteStore is dropped; dropping the runtime then ends every task.
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })
            .map_err(|e| {
                StoreError::Unavailable(format!("starting the cookie-store client thread: {e}"))
            })?;
        let runtime = runtime_rx
            .recv()
            .map_err(|_| StoreError::Unavailable("the cookie-store client thread died".into()))?
            .map_err(|e| {
                StoreError::Unavailable(format!("starting the cookie-store client runtime: {e}"))
            })?;

        let inner = Arc::new(Inner {
            slots: (0..options.connections)
                .map(|_| Slot {
                    state: Mutex::new(SlotState {
                        conn: None,
                        down_because: "not connected yet".into(),
                    }),
                })
                .collect(),
            addr,
            options,
            next_slot: AtomicUsize::new(0),
        });
        let (connected_tx, connected) = std::sync::mpsc::channel();
        let starting = inner.clone();
        runtime.spawn(async move {
            // All at once, so an unreachable daemon costs one connect timeout, not one per slot.
            let mut connecting = tokio::task::JoinSet::new();
            for slot in 0..starting.slots.len() {
                let (addr, timeout) = (starting.addr.clone(), starting.options.connect_timeout);
                connecting.spawn(async move { (slot, connect(&addr, timeout).await) });
            }
            let mut streams = Vec::new();
            while let Some(joined) = connecting.join_next().await {
                match joined {
                    Ok((slot, Ok(stream))) => streams.push((slot, stream)),
                    Ok((_, Err(why))) => {
                        let _ = connected_tx.send(Err(why));
                        return;
                    }
                    Err(e) => {
                        let _ = connected_tx.send(Err(e.to_string()));
                        return;
                    }
                }
            }
            for (slot, stream) in streams {
                // Attached here, before reporting success, so the first call finds them up.
                let attached = attach(&starting, slot, stream);
                tokio::spawn(supervise(starting.clone(), slot, Some(attached)));
            }
            tokio::spawn(expire_calls(starting.clone()));
            let _ = connected_tx.send(Ok(()));
        });
        let outcome = connected
            .recv()
            .unwrap_or_else(|_| Err("the client thread stopped".into()));
        if let Err(why) = outcome {
            return Err(StoreError::Unavailable(format!(
                "cookie-store daemon at {} is unreachable: {why}",
                inner.addr
            )));
        }
        tracing::info!(daemon = %inner.addr, connections = inner.slots.len(), "connected to the cookie-store daemon");
        Ok(RemoteStore { inner, _stop: stop })
    }

    /// The daemon's address, `HOST:PORT`.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// Send `request` over the connection `route` picks and wait for its response; `extra` is added
    /// to the per-call timeout (a `take_turn`'s wait).
    async fn call(
        &self,
        route: Option<&str>,
        request: Request,
        extra: Duration,
    ) -> Result<Response, StoreError> {
        let conn = self.inner.pick(route)?;
        let take_turn = matches!(request, Request::TakeTurn { .. });
        let deadline = later(
            Instant::now(),
            self.inner.options.call_timeout.saturating_add(extra),
        );
        let call = Call::start(&self.inner, conn, &request, deadline, take_turn)?;
        call.finish().await
    }

    async fn expect_done(&self, route: Option<&str>, request: Request) -> Result<(), StoreError> {
        match self.call(route, request, Duration::ZERO).await? {
            Response::Done => Ok(()),
            other => Err(self.inner.unexpected(&other)),
        }
    }
}

impl Drop for RemoteStore {
    fn drop(&mut self) {
        tracing::debug!(daemon = %self.inner.addr, "closing the connections to the cookie-store daemon");
    }
}

impl Inner {
    /// The connection for a call: a session's own (by hash), else the next in turn; when that one
    /// is down, the next one up.
    fn pick(&self, session: Option<&str>) -> Result<Arc<Conn>, StoreError> {
        let n = self.slots.len();
        let first = match session {
            Some(id) => {
                // SipHash with fixed keys: the same session always maps to the same connection.
                #[allow(deprecated)]
                let mut hasher = std::hash::SipHasher::new();
                id.hash(&mut hasher);
                (hasher.finish() % n as u64) as usize
            }
            None => self.next_slot.fetch_add(1, Ordering::Relaxed) % n,
        };
        for k in 0..n {
            if let Some(conn) = self.slots[(first + k) % n].state.lock().conn.clone() {
                return Ok(conn);
            }
        }
        Err(self.down())
    }

    fn down(&self) -> StoreError {
        let why = self.slots[0].state.lock().down_because.clone();
        StoreError::Unavailable(format!(
            "cookie-store daemon at {} is unreachable ({why}); reconnecting in the background",
            self.addr
        ))
    }

    fn unexpected(&self, response: &Response) -> StoreError {
        StoreError::Unavailable(format!(
            "cookie-store daemon at {} sent an unexpected {} response",
            self.addr,
            response.kind()
        ))
    }
}

/// A call in flight. Dropped before its response arrived (the caller gave up), it takes itself out
/// of the connection's table and, for a `take_turn`, cancels it in the daemon.
struct Call<'a> {
    inner: &'a Inner,
    conn: Arc<Conn>,
    id: u64,
    reply: oneshot::Receiver<Result<Response, StoreError>>,
    take_turn: bool,
    done: bool,
}

impl<'a> Call<'a> {
    /// File the call and queue its frame (no await: see the module documentation).
    fn start(
        inner: &'a Inner,
        conn: Arc<Conn>,
        request: &Request,
        deadline: Instant,
        take_turn: bool,
    ) -> Result<Call<'a>, StoreError> {
        let id = conn.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes = frame::encode(id, request);
        let (reply_tx, reply) = oneshot::channel();
        {
            let mut calls = conn.calls.lock();
            if !calls.open {
                return Err(inner.down());
            }
            calls.waiting.insert(
                id,
                Waiting {
                    reply: reply_tx,
                    deadline,
                    take_turn,
                },
            );
        }
        let call = Call {
            inner,
            conn,
            id,
            reply,
            take_turn,
            done: false,
        };
        if call.conn.out.send(bytes).is_err() {
            // The writer is gone; the reader is about to fail every call. Do not wait for it.
            return Err(inner.down());
        }
        Ok(call)
    }

    async fn finish(mut self) -> Result<Response, StoreError> {
        let outcome = (&mut self.reply).await;
        self.done = true;
        match outcome {
            Ok(Ok(Response::Error(e))) => Err(e.into_store_error(&self.inner.addr)),
            Ok(result) => result,
            Err(_) => Err(self.inner.down()),
        }
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let was_waiting = self.conn.calls.lock().waiting.remove(&self.id).is_some();
        if was_waiting {
            if self.take_turn {
                self.conn.send(&Request::Cancel { request: self.id });
            }
        } else if let Ok(Ok(Response::Turn(Some(granted)))) = self.reply.try_recv() {
            // Granted just as the caller gave up: nobody will use the turn.
            give_back(&self.conn, granted);
        }
    }
}

impl Conn {
    /// Queue a request that nobody waits for (a cancel, the release of an orphaned turn).
    fn send(&self, request: &Request) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let _ = self.out.send(frame::encode(id, request));
    }
}

/// Release a turn granted to a call that is no longer there.
fn give_back(conn: &Conn, granted: GrantedTurn) {
    match SessionRecord::decode(&granted.record) {
        Ok(record) => {
            tracing::debug!(
                epoch = granted.epoch,
                "releasing a turn granted to a cancelled call"
            );
            conn.send(&Request::Release {
                turn: WireTurn {
                    session_id: record.id,
                    epoch: granted.epoch,
                },
            });
        }
        // Without the session ID there is nothing to release; the lease frees it.
        Err(error) => tracing::warn!(%error, "an orphaned turn with an undecodable record"),
    }
}

/// Open one TCP connection to `addr` within `timeout`.
async fn connect(addr: &str, timeout: Duration) -> Result<TcpStream, String> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no connection within {}",
            humantime::format_duration(timeout)
        )),
    }
}

/// Keep connection `slot` up: serve it while it lasts, then reconnect with exponential backoff.
async fn supervise(inner: Arc<Inner>, slot: usize, mut first: Option<Attached>) {
    let options = &inner.options;
    let mut pauses = crate::backoff::pauses(options.backoff_min, options.backoff_max);
    let mut failures = 0u32;
    loop {
        let attached = match first.take() {
            Some(attached) => attached,
            None => match connect(&inner.addr, options.connect_timeout).await {
                Ok(stream) => {
                    tracing::info!(daemon = %inner.addr, slot, attempts = failures + 1, "reconnected to the cookie-store daemon");
                    attach(&inner, slot, stream)
                }
                Err(why) => {
                    failures += 1;
                    let pause = pauses.next().unwrap_or(options.backoff_max);
                    tracing::debug!(daemon = %inner.addr, slot, %why, retry_in = ?pause, "reconnecting failed");
                    inner.slots[slot].state.lock().down_because = why;
                    tokio::time::sleep(pause).await;
                    continue;
                }
            },
        };
        pauses = crate::backoff::pauses(options.backoff_min, options.backoff_max);
        failures = 0;
        let why = serve(&inner, slot, attached).await;
        tracing::warn!(daemon = %inner.addr, slot, %why, "lost a connection to the cookie-store daemon; reconnecting");
    }
}

/// A connection registered in its slot, its writer running, its reading still to do.
struct Attached {
    conn: Arc<Conn>,
    read_half: tokio::net::tcp::OwnedReadHalf,
    writer: tokio::task::JoinHandle<()>,
}

/// Start the writer of a new connection and put it in `slot`, where calls find it.
fn attach(inner: &Inner, slot: usize, stream: TcpStream) -> Attached {
    let (read_half, write_half) = stream.into_split();
    let (out, outbox) = mpsc::unbounded_channel();
    let writer = tokio::spawn(frame::write_all(write_half, outbox));
    let conn = Arc::new(Conn {
        out,
        calls: Mutex::new(Calls {
            open: true,
            waiting: HashMap::new(),
        }),
        // 0 is the connection's own ID.
        next_id: AtomicU64::new(CONNECTION_ID + 1),
    });
    inner.slots[slot].state.lock().conn = Some(conn.clone());
    Attached {
        conn,
        read_half,
        writer,
    }
}

/// Run one connection until it ends; return why it ended, having failed every call left on it.
async fn serve(inner: &Inner, slot: usize, attached: Attached) -> String {
    let Attached {
        conn,
        read_half,
        writer,
    } = attached;
    let why = read_responses(inner, &conn, read_half).await;
    {
        let mut state = inner.slots[slot].state.lock();
        state.conn = None;
        state.down_because = why.clone();
    }
    let orphans = {
        let mut calls = conn.calls.lock();
        calls.open = false;
        std::mem::take(&mut calls.waiting)
    };
    for (_, call) in orphans {
        let _ = call.reply.send(Err(StoreError::Unavailable(format!(
            "connection to the cookie-store daemon at {} lost before its answer ({why}); \
             the call may or may not have taken effect",
            inner.addr
        ))));
    }
    writer.abort();
    why
}

/// Hand each response to its call; return why the connection ended.
async fn read_responses(
    inner: &Inner,
    conn: &Conn,
    read_half: tokio::net::tcp::OwnedReadHalf,
) -> String {
    let mut reader = frame::reader(read_half, inner.options.max_frame_bytes);
    loop {
        let buf = match frame::read(&mut reader).await {
            Ok(Some(buf)) => buf,
            Ok(None) => return "the daemon closed the connection".into(),
            Err(e) => return e.to_string(),
        };
        let (id, response) = match frame::decode::<Response>(&buf) {
            Ok(decoded) => decoded,
            Err(e) => return format!("undecodable response: {e}"),
        };
        if id == CONNECTION_ID {
            return match response {
                Response::Error(WireError::Protocol(why)) => {
                    format!("the daemon closed the connection: {why}")
                }
                other => format!("the daemon sent a {} on the connection's ID", other.kind()),
            };
        }
        let call = conn.calls.lock().waiting.remove(&id);
        let unclaimed = match call {
            Some(call) => call.reply.send(Ok(response)).err().and_then(Result::ok),
            None => Some(response),
        };
        // A response nobody waits for: only a granted turn needs anything (giving back).
        if let Some(Response::Turn(Some(granted))) = unclaimed {
            give_back(conn, granted);
        }
    }
}

/// Fail the calls whose deadline passed, on every connection, every tick.
async fn expire_calls(inner: Arc<Inner>) {
    let tick = (inner.options.call_timeout / 20)
        .clamp(Duration::from_millis(10), Duration::from_millis(250));
    let mut ticks = tokio::time::interval(tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = Instant::now();
        for slot in &inner.slots {
            let Some(conn) = slot.state.lock().conn.clone() else {
                continue;
            };
            let expired: Vec<(u64, Waiting)> = {
                let mut calls = conn.calls.lock();
                let ids: Vec<u64> = calls
                    .waiting
                    .iter()
                    .filter(|(_, w)| w.deadline <= now)
                    .map(|(id, _)| *id)
                    .collect();
                ids.into_iter()
                    .filter_map(|id| calls.waiting.remove(&id).map(|w| (id, w)))
                    .collect()
            };
            for (id, call) in expired {
                if call.take_turn {
                    conn.send(&Request::Cancel { request: id });
                }
                let _ = call.reply.send(Err(StoreError::Unavailable(format!(
                    "no answer from the cookie-store daemon at {} within {} \
                     (the call may or may not have taken effect)",
                    inner.addr,
                    humantime::format_duration(inner.options.call_timeout)
                ))));
            }
        }
    }
}

/// `from + by`, saturating a century ahead instead of overflowing `Instant`.
fn later(from: Instant, by: Duration) -> Instant {
    from.checked_add(by)
        .or_else(|| from.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(from)
}

#[async_trait]
impl SessionStore for RemoteStore {
    async fn create(
        &self,
        record: &SessionRecord,
        durability: Durability,
    ) -> Result<(), StoreError> {
        let request = Request::Create {
            record: record.encode(),
            durability: durability.into(),
        };
        self.expect_done(Some(&record.id), request).await
    }

    async fn take_turn(
        &self,
        id: &str,
        lease: Duration,
        wait: Duration,
    ) -> Result<Option<(Turn, SessionRecord)>, StoreError> {
        let request = Request::TakeTurn {
            session_id: id.to_owned(),
            lease_ms: millis(lease),
            wait_ms: millis(wait),
        };
        match self.call(Some(id), request, wait).await? {
            Response::Turn(None) => Ok(None),
            Response::Turn(Some(granted)) => match decode_record(id, &granted.record) {
                Ok(record) => Ok(Some((
                    Turn {
                        session_id: id.to_owned(),
                        epoch: granted.epoch,
                    },
                    record,
                ))),
                Err(e) => {
                    // A turn we cannot use: give it back rather than sit on it until its lease ends.
                    let turn = WireTurn {
                        session_id: id.to_owned(),
                        epoch: granted.epoch,
                    };
                    if let Ok(conn) = self.inner.pick(Some(id)) {
                        conn.send(&Request::Release { turn });
                    }
                    Err(e)
                }
            },
            other => Err(self.inner.unexpected(&other)),
        }
    }

    async fn write(
        &self,
        turn: &Turn,
        record: &SessionRecord,
        durability: Durability,
    ) -> Result<(), StoreError> {
        let request = Request::Write {
            turn: turn.into(),
            record: record.encode(),
            durability: durability.into(),
        };
        self.expect_done(Some(&turn.session_id), request).await
    }

    async fn write_and_release(
        &self,
        turn: Turn,
        record: &SessionRecord,
        durability: Durability,
    ) -> Result<(), StoreError> {
        let request = Request::WriteAndRelease {
            turn: (&turn).into(),
            record: record.encode(),
            durability: durability.into(),
        };
        self.expect_done(Some(&turn.session_id), request).await
    }

    async fn release(&self, turn: Turn) -> Result<(), StoreError> {
        let request = Request::Release {
            turn: (&turn).into(),
        };
        self.expect_done(Some(&turn.session_id), request).await
    }

    async fn delete(&self, turn: Turn, durability: Durability) -> Result<(), StoreError> {
        let request = Request::Delete {
            turn: (&turn).into(),
            durability: durability.into(),
        };
        self.expect_done(Some(&turn.session_id), request).await
    }

    async fn due_for_expiry(&self, now_ms: u64, limit: usize) -> Result<Vec<String>, StoreError> {
        let request = Request::DueForExpiry {
            now_ms,
            limit: limit as u64,
        };
        match self.call(None, request, Duration::ZERO).await? {
            Response::Ids(ids) => Ok(ids),
            other => Err(self.inner.unexpected(&other)),
        }
    }

    async fn list_sessions(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let request = Request::ListSessions {
            after: after.map(str::to_owned),
            limit: limit as u64,
        };
        match self.call(None, request, Duration::ZERO).await? {
            Response::Records(records) => records
                .iter()
                .map(|bytes| {
                    SessionRecord::decode(bytes).map_err(|source| StoreError::Record {
                        id: "(listed)".into(),
                        source,
                    })
                })
                .collect(),
            other => Err(self.inner.unexpected(&other)),
        }
    }

    async fn count_sessions(
        &self,
        endpoint: &str,
        client_ip: Option<IpAddr>,
        now_ms: u64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let request = Request::CountSessions {
            endpoint: endpoint.to_owned(),
            client_ip,
            now_ms,
            limit: limit as u64,
        };
        match self.call(None, request, Duration::ZERO).await? {
            Response::Count(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX).min(limit)),
            other => Err(self.inner.unexpected(&other)),
        }
    }
}

#[async_trait]
impl BrokerRegistry for RemoteStore {
    async fn register_broker(&self, info: &BrokerInfo) -> Result<(), StoreError> {
        let request = Request::RegisterBroker {
            broker: encode_broker(info),
        };
        self.expect_done(None, request).await
    }

    async fn live_brokers(&self, now_ms: u64) -> Result<Vec<BrokerInfo>, StoreError> {
        match self
            .call(None, Request::LiveBrokers { now_ms }, Duration::ZERO)
            .await?
        {
            Response::Brokers(brokers) => brokers.iter().map(|b| decode_broker(b)).collect(),
            other => Err(self.inner.unexpected(&other)),
        }
    }
}

#[async_trait]
impl DecisionLog for RemoteStore {
    async fn log_decision(&self, decision: &TxnDecision) -> Result<(), StoreError> {
        let request = Request::LogDecision {
            decision: encode_decision(decision),
        };
        self.expect_done(None, request).await
    }

    async fn forget_decision(&self, txn_id: &str) -> Result<(), StoreError> {
        let request = Request::ForgetDecision {
            txn_id: txn_id.to_owned(),
        };
        self.expect_done(None, request).await
    }

    async fn pending_decisions(&self) -> Result<Vec<TxnDecision>, StoreError> {
        match self
            .call(None, Request::PendingDecisions, Duration::ZERO)
            .await?
        {
            Response::Decisions(decisions) => {
                decisions.iter().map(|d| decode_decision(d)).collect()
            }
            other => Err(self.inner.unexpected(&other)),
        }
    }
}

#[async_trait]
impl StoreHealth for RemoteStore {
    /// Pings over every connection that is up (at least one must be): a daemon that answers is
    /// alive, and every request sent before the ping has reached it.
    async fn ping(&self) -> Result<(), StoreError> {
        let conns: Vec<Arc<Conn>> = self
            .inner
            .slots
            .iter()
            .filter_map(|slot| slot.state.lock().conn.clone())
            .collect();
        if conns.is_empty() {
            return Err(self.inner.down());
        }
        let deadline = later(Instant::now(), self.inner.options.call_timeout);
        let mut calls = Vec::with_capacity(conns.len());
        for conn in conns {
            calls.push(Call::start(
                &self.inner,
                conn,
                &Request::Ping,
                deadline,
                false,
            )?);
        }
        for call in calls {
            match call.finish().await? {
                Response::Done => {}
                other => return Err(self.inner.unexpected(&other)),
            }
        }
        Ok(())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.expect_done(None, Request::Flush).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_error(url: &str) -> String {
        match parse_url(url) {
            Err(StoreError::Config(why)) => why,
            other => panic!("{url}: expected a configuration error, got {other:?}"),
        }
    }

    #[test]
    fn urls_give_the_address_and_options() {
        let (addr, options) = parse_url("cookie-store://127.0.0.1:7070").unwrap();
        assert_eq!(addr, "127.0.0.1:7070");
        assert_eq!(options, ClientOptions::default());

        let (addr, options) = parse_url(
            "cookie-store://localhost:7070/?connections=2&timeout=250ms&connect_timeout=1s\
             &backoff_min=10ms&backoff_max=3s&max_frame_bytes=4096",
        )
        .unwrap();
        assert_eq!(addr, "localhost:7070");
        assert_eq!(
            options,
            ClientOptions {
                connections: 2,
                call_timeout: Duration::from_millis(250),
                connect_timeout: Duration::from_secs(1),
                backoff_min: Duration::from_millis(10),
                backoff_max: Duration::from_secs(3),
                max_frame_bytes: 4096,
            }
        );
        // Percent-encoded values decode.
        let (_, options) = parse_url("cookie-store://h:1?connections=%33&timeout=1%73").unwrap();
        assert_eq!(options.connections, 3);
        assert_eq!(options.call_timeout, Duration::from_secs(1));
        assert_eq!(
            parse_url("cookie-store://[::1]:7070").unwrap().0,
            "[::1]:7070"
        );
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (url, says) in [
            ("cookie-store://", "missing host"),
            ("cookie-store://127.0.0.1", "missing port"),
            ("cookie-store://127.0.0.1:", "missing port"),
            ("cookie-store://:7070", "missing host"),
            ("cookie-store://127.0.0.1:http", "port `http`"),
            ("cookie-store://127.0.0.1:0", "port `0`"),
            ("cookie-store://127.0.0.1:70000", "port `70000`"),
            ("cookie-store://[::1:7070", "closing `]`"),
            ("cookie-store://127.0.0.1:7070/db", "a path"),
            ("cookie-store://me@127.0.0.1:7070", "user information"),
            (
                "cookie-store://127.0.0.1:7070?connections=0",
                "connections=`0`",
            ),
            (
                "cookie-store://127.0.0.1:7070?connections=65",
                "connections=`65`",
            ),
            (
                "cookie-store://127.0.0.1:7070?timeout=soon",
                "timeout=`soon`",
            ),
            ("cookie-store://127.0.0.1:7070?timeout=0s", "timeout=`0s`"),
            ("cookie-store://127.0.0.1:7070?timeout", "has no value"),
            (
                "cookie-store://127.0.0.1:7070?pool=3",
                "unknown parameter `pool`",
            ),
            (
                "cookie-store://127.0.0.1:7070?max_frame_bytes=10",
                "max_frame_bytes",
            ),
            (
                "cookie-store://127.0.0.1:7070?backoff_min=5s&backoff_max=1s",
                "backoff_min is longer",
            ),
            ("sled:/tmp/x", "expected cookie-store://"),
        ] {
            let why = config_error(url);
            assert!(why.contains(says), "{url}: {why}");
        }
    }

    #[test]
    fn a_daemon_that_is_not_there_is_an_error_at_open_naming_its_address() {
        // A port nobody listens on: bind one, note it, close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let url = format!("cookie-store://127.0.0.1:{port}?connect_timeout=2s");
        match crate::open(&url) {
            Err(StoreError::Unavailable(why)) => {
                assert!(why.contains(&format!("127.0.0.1:{port}")), "{why}")
            }
            Err(other) => panic!("expected Unavailable, got {other:?}"),
            Ok(_) => panic!("connected to a port nobody listens on"),
        }
    }
}
