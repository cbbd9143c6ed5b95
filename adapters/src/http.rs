//! # The http adapter: POST the body element to an HTTP service
//!
//! For backends that already speak HTTP. Each request is one `POST` of the body element to one of
//! the class's `urls` (round robin), with
//!
//! - `Content-Type: text/xml; charset=utf-8`,
//! - `X-Service: <operation>` (what the backend is told to do),
//! - `X-Session-Id: <session>` when the request runs in a session.
//!
//! The answer maps to a [`BackendReply`]: a 2xx status is [`ReplyStatus::Ok`] with the response
//! body as the payload; any other status is [`ReplyStatus::Error`] (`"HTTP 503 Service
//! Unavailable"`) with the body as the payload, for the log. A connection that cannot be made is
//! [`AdapterError::Unreachable`] (after trying every URL once: a refused connect is known not to
//! have delivered the request, so failing over is safe); a connection that breaks after the request
//! was sent is [`AdapterError::WorkerLost`] (it may or may not have been processed, so no retry).
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
//! ## Runtimes
//!
//! hyper's pooled client spawns its connection tasks with `tokio::spawn`, which needs the runtime
//! that owns the sockets. So every exchange runs inside `runtime.spawn(...)` on the class's runtime
//! and the caller (on an actix worker's own runtime) only awaits the `JoinHandle` with a timer. On
//! timeout the task is aborted, which drops its connection: the pool never reuses a connection
//! with a late response still coming.

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::{AdapterError, AdapterKind, BackendReply, BackendRequest, Context, DialogMarker};
use crate::{ReplyStatus, ServerClass, ServerClassConfig};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A server class reached by HTTP POST.
pub struct HttpClass {
    config: ServerClassConfig,
    runtime: Handle,
    client: HttpClient,
    urls: Arc<Vec<Uri>>,
    next: AtomicUsize,
    /// One permit per request in flight (`max_workers` of them).
    slots: Arc<Semaphore>,
    /// Callers waiting for a permit (bounded by `queue_limit`).
    waiting: Arc<AtomicUsize>,
    accepting: AtomicBool,
}

impl HttpClass {
    /// Check the configuration and build the client. Nothing is connected yet: connections are
    /// opened on first use and kept alive in hyper's pool.
    pub async fn start(
        config: ServerClassConfig,
        runtime: Handle,
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
        for url in urls {
            let uri: Uri = url
                .parse()
                .map_err(|e| refuse(format!("url {url:?} is not valid: {e}")))?;
            match uri.scheme_str() {
                Some("http") if uri.authority().is_some() => parsed.push(uri),
                Some("https") => {
                    return Err(refuse(format!(
                        "url {url:?}: https is not supported by this build (no TLS client); \
                         use http:// or a TLS-terminating proxy"
                    )))
                }
                _ => return Err(refuse(format!("url {url:?} is not an http:// url"))),
            }
        }

        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.idle_timeout)
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(config.max_workers)
            .build(connector);

        Ok(Arc::new(HttpClass {
            slots: Arc::new(Semaphore::new(config.max_workers)),
            waiting: Arc::new(AtomicUsize::new(0)),
            accepting: AtomicBool::new(true),
            urls: Arc::new(parsed),
            next: AtomicUsize::new(0),
            client,
            runtime,
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

    fn config(&self) -> &ServerClassConfig {
        &self.config
    }

    async fn call(&self, request: BackendRequest) -> Result<BackendReply, AdapterError> {
        let class = self.config.name.clone();
        if request.dialog != DialogMarker::None {
            return Err(AdapterError::Unsupported {
                class,
                reason: "the http adapter is context-free only: dialogs are not supported"
                    .to_string(),
            });
        }
        if !self.accepting.load(Ordering::Acquire) {
            return Err(self.shutting_down());
        }
        let deadline = crate::pool::after(self.config.request_timeout);
        let permit = self.admit(deadline).await?;

        let mut headers = vec![(
            CONTENT_TYPE,
            HeaderValue::from_static("text/xml; charset=utf-8"),
        )];
        let bad_header = |what: &str| AdapterError::Unsupported {
            class: class.clone(),
            reason: format!("the {what} cannot be sent as an HTTP header value"),
        };
        headers.push((
            hyper::header::HeaderName::from_static("x-service"),
            HeaderValue::from_str(&request.operation).map_err(|_| bad_header("operation"))?,
        ));
        if let Some(session) = &request.session_id {
            headers.push((
                hyper::header::HeaderName::from_static("x-session-id"),
                HeaderValue::from_str(session).map_err(|_| bad_header("session id"))?,
            ));
        }

        let exchange = Exchange {
            class: class.clone(),
            client: self.client.clone(),
            urls: self.urls.clone(),
            first: self.next.fetch_add(1, Ordering::Relaxed),
            headers,
            payload: request.payload,
            max_body: self.config.max_frame_bytes,
        };
        let task = self.runtime.spawn(async move {
            // The permit lives as long as the exchange, so `max_workers` bounds real traffic.
            let _permit = permit;
            // The task's own deadline, in case the caller went away and nobody aborts it.
            tokio::time::timeout_at(deadline, exchange.run()).await
        });
        let abort = task.abort_handle();
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(Ok(result))) => result,
            Ok(Ok(Err(_))) | Err(_) => {
                abort.abort();
                Err(self.timeout())
            }
            Ok(Err(join)) if join.is_cancelled() => Err(self.shutting_down()),
            Ok(Err(join)) => Err(AdapterError::WorkerLost {
                class,
                worker: "http".to_string(),
                reason: format!("the request task failed: {join}"),
            }),
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

/// One POST, with failover over the urls for connections that cannot be made.
struct Exchange {
    class: String,
    client: HttpClient,
    urls: Arc<Vec<Uri>>,
    first: usize,
    headers: Vec<(hyper::header::HeaderName, HeaderValue)>,
    payload: Bytes,
    max_body: usize,
}

impl Exchange {
    async fn run(self) -> Result<BackendReply, AdapterError> {
        let n = self.urls.len();
        let mut refused = Vec::new();
        for k in 0..n {
            let index = (self.first + k) % n;
            let uri = &self.urls[index];
            // Worker ids name the url (1-based, in configuration order).
            let worker = format!("{}#{}", self.class, index + 1);
            let mut builder = Request::builder().method(Method::POST).uri(uri.clone());
            for (name, value) in &self.headers {
                builder = builder.header(name, value.clone());
            }
            let request = builder.body(Full::new(self.payload.clone())).map_err(|e| {
                AdapterError::Unsupported {
                    class: self.class.clone(),
                    reason: format!("cannot build the HTTP request: {e}"),
                }
            })?;
            let response = match self.client.request(request).await {
                Ok(response) => response,
                Err(e) if e.is_connect() => {
                    refused.push(format!("{uri}: {}", error_chain(&e)));
                    continue;
                }
                Err(e) => {
                    return Err(AdapterError::WorkerLost {
                        class: self.class.clone(),
                        worker,
                        reason: format!("{uri}: {}", error_chain(&e)),
                    })
                }
            };
            let status = response.status();
            let body = Limited::new(response.into_body(), self.max_body)
                .collect()
                .await
                .map_err(|e| AdapterError::WorkerLost {
                    class: self.class.clone(),
                    worker: worker.clone(),
                    reason: format!("{uri}: reading the response: {e}"),
                })?
                .to_bytes();
            let status = if status.is_success() {
                ReplyStatus::Ok
            } else {
                ReplyStatus::Error(format!("HTTP {status} from {uri}"))
            };
            return Ok(BackendReply {
                status,
                payload: body,
                worker,
            });
        }
        Err(AdapterError::Unreachable {
            class: self.class.clone(),
            reason: refused.join("; "),
        })
    }
}

/// An error and its sources on one line ("client error (Connect): tcp connect error: refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
