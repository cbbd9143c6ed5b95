//! # The http adapter: POST the body element to an HTTP service
//!
//! For backends that already speak HTTP. Each request is one `POST` of the body element to one of
//! the class's `urls` (round robin), with
//!
//! - `Content-Type: text/xml; charset=utf-8` (`application/octet-stream` for a class with
//!   `payload = "record"`, whose body is the request record),
//! - `X-Service: <operation>` (what the backend is told to do),
//! - `X-Session-Id: <session>` when the request runs in a session;
//! - `traceparent: <W3C trace context>` when the client's request carried one (the same trace, the
//!   broker's hop as the parent).
//!
//! The answer maps to a [`BackendReply`]: a 2xx status is [`ReplyStatus::Ok`] with the response
//! body as the payload; any other status is [`ReplyStatus::Error`] (`"HTTP 503 Service
//! Unavailable"`) with the body as the payload, for the log. A connection that cannot be made is
//! [`AdapterError::Unreachable`] (after trying every URL once: a refused connect is known not to
//! have delivered the request, so failing over is safe); a connection that breaks after the request
//! was sent, or a response that is not valid HTTP/1.1 or is larger than `max_frame_bytes`, is
//! [`AdapterError::WorkerLost`] (the request may or may not have been processed, so no retry).
//!
//! ## Limits
//!
//! - **Context-free only.** HTTP has no worker to pin a dialog to; `Begin`/`Continue` are refused,
//!   and a class configured `context = "sensitive"` is refused at start.
//! - **No transactions.** There is no HTTP mapping of `PREPARE`/`COMMIT`/`ABORT`/`RECOVER` yet (see
//!   `PROTOCOL.md`), so a class configured `transactional = true` is a configuration error.
//! - `http://` only: this build has no TLS client. Terminate TLS in a local proxy if needed.
//! - `max_workers` bounds the requests in flight to the class; up to `queue_limit` more wait for a
//!   slot, beyond that [`AdapterError::QueueFull`].
//!
//! ## Runtimes: the request stays on the caller's thread
//!
//! Each exchange runs inline in the caller's future, on the caller's runtime: the adapter has no
//! task, channel or runtime of its own (the `runtime` handle given to [`HttpClass::start`] is not
//! used). Keep-alive connections are pooled **per thread** (a thread-local, per class and url,
//! last used first): an actix worker thread's requests connect, write and read on that worker's
//! own runtime and never leave it. `wire.rs` says what one exchange does; in short one `write`
//! and usually one `read` per request. (The first version handed every exchange to a hyper
//! client on the engine runtime: a task spawn, two cross-thread wake-ups and a `JoinHandle` per
//! request; then a hyper client per thread, which still drove each connection from a task of
//! its own. `BENCHMARKS.md` has what each step cost.)
//!
//! What stays class-wide: the `max_workers` slots and the `queue_limit` line (requests in flight
//! are bounded across all threads), the round robin over the urls, and shutdown. What is per
//! thread: the idle connections, up to `max_workers` per url per calling thread, each closed
//! when found idle longer than `idle_timeout` (the pool is looked at when the thread next calls
//! the class; a thread that never calls again keeps its few idle sockets until it ends).
//! Connections in use never exceed the slots. A thread that starts running under another
//! runtime (a test's fresh runtime) drops its old connections: they died with their runtime.
//!
//! A connection is used for the next request only after a clean exchange (`wire.rs`). On
//! timeout the exchange's future is dropped and its connection with it, so a late response can
//! never be read as the answer to a later request. An idle connection the backend has closed is
//! noticed before it is used (or at its first write) and replaced by another one, which is safe
//! because nothing was sent on it.
//!
//! Callers must run inside a tokio runtime with I/O and timers enabled (the broker's actix
//! workers and engine runtime do); outside one, a call fails with [`AdapterError::Unsupported`].

mod wire;

use async_trait::async_trait;
use hyper::Uri;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::{AdapterError, AdapterKind, BackendReply, BackendRequest, Context, DialogMarker};
use crate::{ReplyStatus, ServerClass, ServerClassConfig};
use wire::{Conn, WireError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A server class reached by HTTP POST.
pub struct HttpClass {
    config: ServerClassConfig,
    /// This class's identity in the thread-local pools, which hold a `Weak` to it, so a dropped
    /// class's idle connections are closed when a thread next looks.
    key: Arc<PoolKey>,
    /// One entry per url, in configuration order.
    urls: Vec<Target>,
    next: AtomicUsize,
    /// One permit per request in flight (`max_workers` of them).
    slots: Arc<Semaphore>,
    /// Callers waiting for a permit (bounded by `queue_limit`).
    waiting: Arc<AtomicUsize>,
    accepting: AtomicBool,
}

struct PoolKey;

/// One backend url, taken apart once.
struct Target {
    /// As configured, for messages.
    uri: Uri,
    host: String,
    port: u16,
    /// `Host` header value.
    authority: String,
    /// Request target (`/path?query`).
    path: String,
    /// The worker id replies from it carry (`class#n`, 1-based).
    worker: String,
}

/// The idle connections of the classes this thread has called, all on the runtime it runs under.
#[derive(Default)]
struct ThreadPools {
    runtime: Option<tokio::runtime::Id>,
    classes: Vec<ClassPool>,
}

struct ClassPool {
    class: Weak<PoolKey>,
    /// Per url: idle connections, the most recently used last.
    idle: Vec<Vec<Conn>>,
}

thread_local! {
    static POOLS: RefCell<ThreadPools> = RefCell::new(ThreadPools::default());
}

impl HttpClass {
    /// Check the configuration. Nothing is connected yet: connections are opened on demand by
    /// the threads that call, and kept alive per thread. `_runtime` is unused: the class has no
    /// background task (see "Runtimes").
    pub async fn start(
        config: ServerClassConfig,
        _runtime: Handle,
    ) -> Result<Arc<HttpClass>, AdapterError> {
        let refuse = |reason: String| AdapterError::Unsupported {
            class: config.name.clone(),
            reason,
        };
        let AdapterKind::Http { urls } = &config.adapter else {
            return Err(refuse("not an http adapter configuration".to_string()));
        };
        if config.transactional {
            return Err(refuse(
                "the http adapter cannot carry transactions".to_string(),
            ));
        }
        if config.context == Context::Sensitive {
            return Err(refuse(
                "the http adapter is context-free only (it cannot hold a dialog)".to_string(),
            ));
        }
        if urls.is_empty() {
            return Err(refuse("the http adapter has no urls".to_string()));
        }
        if config.max_workers == 0 {
            return Err(refuse("max_workers must be at least 1".to_string()));
        }
        let mut parsed = Vec::with_capacity(urls.len());
        for (index, url) in urls.iter().enumerate() {
            let uri: Uri = url
                .parse()
                .map_err(|e| refuse(format!("url {url:?} is not valid: {e}")))?;
            match (uri.scheme_str(), uri.authority()) {
                (Some("http"), Some(authority)) => parsed.push(Target {
                    host: authority.host().to_string(),
                    port: authority.port_u16().unwrap_or(80),
                    authority: authority.as_str().to_string(),
                    path: uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
                    worker: format!("{}#{}", config.name, index + 1),
                    uri,
                }),
                (Some("https"), _) => {
                    return Err(refuse(format!(
                        "url {url:?}: https is not supported by this build (no TLS client); \
                         use http:// or a TLS-terminating proxy"
                    )))
                }
                _ => return Err(refuse(format!("url {url:?} is not an http:// url"))),
            }
        }

        Ok(Arc::new(HttpClass {
            slots: Arc::new(Semaphore::new(config.max_workers)),
            waiting: Arc::new(AtomicUsize::new(0)),
            accepting: AtomicBool::new(true),
            urls: parsed,
            next: AtomicUsize::new(0),
            key: Arc::new(PoolKey),
            config,
        }))
    }

    fn shutting_down(&self) -> AdapterError {
        AdapterError::ShuttingDown {
            class: self.config.name.clone(),
        }
    }

    fn timeout(&self) -> AdapterError {
        AdapterError::Timeout {
            class: self.config.name.clone(),
            timeout_ms: self
                .config
                .request_timeout
                .as_millis()
                .min(u64::MAX as u128) as u64,
        }
    }

    /// A slot for one request: at once if one is free, else wait in line (bounded).
    async fn admit(&self, deadline: Instant) -> Result<OwnedSemaphorePermit, AdapterError> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let limit = self.config.queue_limit;
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= limit {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(AdapterError::QueueFull {
                class: self.config.name.clone(),
                limit,
            });
        }
        // Decrement on every exit, including the caller being cancelled mid-wait.
        let _waiting = Waiting(self.waiting.clone());
        match tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err(self.shutting_down()),
            Err(_) => Err(self.timeout()),
        }
    }

    /// Run `f` on this thread's idle connections to url `index` (`None` while the thread is
    /// being torn down).
    fn with_idle<R>(
        &self,
        runtime: tokio::runtime::Id,
        index: usize,
        f: impl FnOnce(&mut Vec<Conn>) -> R,
    ) -> Option<R> {
        POOLS
            .try_with(|cell| {
                let mut pools = cell.borrow_mut();
                if pools.runtime != Some(runtime) {
                    // The old runtime is gone (or this thread moved on): its sockets with it.
                    pools.classes.clear();
                    pools.runtime = Some(runtime);
                }
                let mine = Arc::downgrade(&self.key);
                let at = match pools.classes.iter().position(|c| c.class.ptr_eq(&mine)) {
                    Some(at) => at,
                    None => {
                        pools.classes.retain(|c| c.class.strong_count() > 0);
                        pools.classes.push(ClassPool {
                            class: mine,
                            idle: (0..self.urls.len()).map(|_| Vec::new()).collect(),
                        });
                        pools.classes.len() - 1
                    }
                };
                f(&mut pools.classes[at].idle[index])
            })
            .ok()
    }

    /// The most recently used idle connection to url `index` that is still good.
    fn checkout(&self, runtime: tokio::runtime::Id, index: usize) -> Option<Conn> {
        let idle_timeout = self.config.idle_timeout;
        self.with_idle(runtime, index, |idle| {
            while let Some(conn) = idle.pop() {
                if conn.idle_since.elapsed() < idle_timeout && conn.is_usable() {
                    return Some(conn);
                }
            }
            None
        })
        .flatten()
    }

    /// Put a connection back after a clean exchange; close those idle too long.
    fn checkin(&self, runtime: tokio::runtime::Id, index: usize, mut conn: Conn) {
        let (idle_timeout, max_idle) = (self.config.idle_timeout, self.config.max_workers);
        conn.idle_since = Instant::now();
        self.with_idle(runtime, index, |idle| {
            // Oldest first: the front of the stack is what has waited longest.
            let expired = idle
                .iter()
                .take_while(|c| c.idle_since.elapsed() >= idle_timeout)
                .count();
            idle.drain(..expired);
            if idle.len() < max_idle {
                idle.push(conn);
            }
        });
    }

    /// One POST, with failover over the urls for connections that cannot be made (a refused
    /// connect is known not to have delivered the request), and a fresh connection for an idle
    /// one the backend had closed.
    async fn exchange(
        &self,
        runtime: tokio::runtime::Id,
        request: &BackendRequest,
    ) -> Result<BackendReply, AdapterError> {
        let class = &self.config.name;
        let bad_header = |what: &str| AdapterError::Unsupported {
            class: class.clone(),
            reason: format!("the {what} cannot be sent as an HTTP header value"),
        };
        if !wire::valid_header_value(&request.operation) {
            return Err(bad_header("operation"));
        }
        // A record class's payload is bytes in the server's own layout, not text.
        let content_type = match self.config.payload {
            crate::config::PayloadFormat::Xml => "text/xml; charset=utf-8",
            crate::config::PayloadFormat::Record => "application/octet-stream",
        };
        // At most four headers, on the stack: the fixed two, then the session and the trace.
        let mut headers = [
            ("content-type", content_type),
            ("x-service", request.operation.as_str()),
            ("", ""),
            ("", ""),
        ];
        let mut n_headers = 2;
        if let Some(id) = &request.session_id {
            if !wire::valid_header_value(id) {
                return Err(bad_header("session id"));
            }
            headers[n_headers] = ("x-session-id", id.as_str());
            n_headers += 1;
        }
        // Made by the broker from a validated traceparent: hex and dashes only.
        if let Some(trace) = &request.traceparent {
            headers[n_headers] = ("traceparent", trace.as_str());
            n_headers += 1;
        }
        let headers = &headers[..n_headers];
        let n = self.urls.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let mut refused = Vec::new();
        'urls: for k in 0..n {
            let index = (first + k) % n;
            let target = &self.urls[index];
            let wire_target = wire::Target {
                path: &target.path,
                host: &target.authority,
            };
            // Idle connections first; each one found closed at its first write is replaced by
            // the next, and finally by a fresh one (which cannot be stale).
            loop {
                let mut conn = match self.checkout(runtime, index) {
                    Some(conn) => conn,
                    None => match wire::connect(&target.host, target.port, CONNECT_TIMEOUT).await {
                        Ok(conn) => conn,
                        Err(e) => {
                            refused.push(format!("{}: connect: {e}", target.uri));
                            continue 'urls;
                        }
                    },
                };
                let lost = |reason: String| AdapterError::WorkerLost {
                    class: class.clone(),
                    worker: target.worker.clone(),
                    reason: format!("{}: {reason}", target.uri),
                };
                let (response, reusable) = match conn
                    .post(
                        &wire_target,
                        headers,
                        &request.payload,
                        self.config.max_frame_bytes,
                    )
                    .await
                {
                    Ok(done) => done,
                    Err(WireError::Stale) => continue,
                    Err(WireError::Broken(reason)) => return Err(lost(reason)),
                };
                if reusable {
                    self.checkin(runtime, index, conn);
                }
                let status = if (200..300).contains(&response.status) {
                    ReplyStatus::Ok
                } else {
                    let status = hyper::StatusCode::from_u16(response.status)
                        .map_or_else(|_| response.status.to_string(), |s| s.to_string());
                    ReplyStatus::Error(format!("HTTP {status} from {}", target.uri))
                };
                return Ok(BackendReply {
                    status,
                    payload: response.body,
                    worker: target.worker.clone(),
                    open_transaction: None,
                });
            }
        }
        Err(AdapterError::Unreachable {
            class: class.clone(),
            reason: refused.join("; "),
        })
    }
}

struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[async_trait]
impl ServerClass for HttpClass {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn stats(&self) -> crate::ClassStats {
        // A slot is a request in flight: the class's "workers" are its busy connections.
        let busy = self
            .config
            .max_workers
            .saturating_sub(self.slots.available_permits());
        crate::ClassStats {
            workers: busy,
            busy,
            restarts: 0,
            queued: self.waiting.load(Ordering::Relaxed),
        }
    }

    fn config(&self) -> &ServerClassConfig {
        &self.config
    }

    async fn call(&self, request: BackendRequest) -> Result<BackendReply, AdapterError> {
        if request.dialog != DialogMarker::None {
            return Err(AdapterError::Unsupported {
                class: self.config.name.clone(),
                reason: "the http adapter is context-free only: dialogs are not supported"
                    .to_string(),
            });
        }
        let Ok(runtime) = Handle::try_current().map(|h| h.id()) else {
            return Err(AdapterError::Unsupported {
                class: self.config.name.clone(),
                reason: "the http adapter was called outside a tokio runtime".to_string(),
            });
        };
        if !self.accepting.load(Ordering::Acquire) {
            return Err(self.shutting_down());
        }
        let deadline = crate::pool::after(self.config.request_timeout);
        // The permit lives as long as the exchange, so `max_workers` bounds real traffic.
        let _permit = self.admit(deadline).await?;
        // At the deadline the exchange is dropped mid-flight, its connection with it.
        match tokio::time::timeout_at(deadline, self.exchange(runtime, &request)).await {
            Ok(result) => result,
            Err(_) => Err(self.timeout()),
        }
    }

    async fn shutdown(&self, grace: Duration) {
        self.accepting.store(false, Ordering::Release);
        // Holding every permit means nothing is in flight; the semaphore is fair, so callers
        // already waiting in line are served before this acquires the last one.
        let all = u32::try_from(self.config.max_workers).unwrap_or(u32::MAX);
        if tokio::time::timeout(grace, self.slots.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!(class = %self.config.name, "http requests still in flight after {grace:?}");
        }
        self.slots.close();
    }
}
