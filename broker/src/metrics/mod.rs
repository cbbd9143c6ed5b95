//! # Metrics: what an operator graphs, in Prometheus's text format
//!
//! One registry per process (`prometheus-client`, the Prometheus project's own crate), served at
//! `GET /metrics` on the admin listener (`crate::admin`). Two kinds of figure:
//!
//! - **Counters and histograms updated where things happen**: requests by endpoint, dialect and
//!   outcome (`ok`, or the fault's code: NonStop's `-1001`, SQL Server's `SessionNotFound`…), their
//!   latency, sessions begun, ended and expired, transactions committed and aborted, two-phase
//!   recoveries, forwarded requests. The request path's figures are handles made once per endpoint
//!   ([`EndpointMetrics`]): an increment is an atomic add, no label is built or hashed per request
//!   (only a fault's outcome label is looked up, on the fault path).
//! - **Store operations** (`store.rs`): every call's latency and errors by operation, and the turn
//!   waits, timed by the [`MeteredStore`] every part of the broker holds.
//! - **Read when scraped**: each server class's workers, busy workers, restarts and queue depth,
//!   from the adapters ([`adapters::ServerClass::stats`]), and the live sessions of each endpoint,
//!   counted in the shared store (so every broker reports the fleet's figure; counted up to
//!   `admin.live_count_limit`).
//!
//! Never a session ID, a principal or a password in a label: labels are configuration names
//! (endpoint paths, dialects, classes) and fault codes.

mod store;

pub use store::MeteredStore;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: String,
    dialect: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
    dialect: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

/// Every figure of the process.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<EndpointLabels, Histogram>,
    sessions_begun: Family<EndpointLabels, Counter>,
    sessions_ended: Family<EndpointLabels, Counter>,
    sessions_expired: Counter,
    transactions: Family<OutcomeLabels, Counter>,
    recoveries: Counter,
    forwarded: Counter,
    workers: Family<ClassLabels, Gauge>,
    busy: Family<ClassLabels, Gauge>,
    restarts: Family<ClassLabels, Counter>,
    queued: Family<ClassLabels, Gauge>,
    live_sessions: Family<EndpointLabels, Gauge>,
    store_latency: Family<store::OpLabels, Histogram>,
    store_errors: Family<store::OpErrorLabels, Counter>,
    turn_wait: Histogram,
}

/// The handles of one endpoint's request figures, made once.
#[derive(Clone)]
pub struct EndpointMetrics {
    labels: EndpointLabels,
    ok: Counter,
    latency: Histogram,
}

impl EndpointMetrics {
    /// One request answered with `outcome` after `elapsed`.
    pub fn request(&self, outcome: &str, elapsed: Duration) {
        self.latency.observe(elapsed.as_secs_f64());
        if outcome == "ok" {
            self.ok.inc();
        } else {
            get()
                .requests
                .get_or_create(&RequestLabels {
                    endpoint: self.labels.endpoint.clone(),
                    dialect: self.labels.dialect.clone(),
                    outcome: outcome.to_string(),
                })
                .inc();
        }
    }
}

/// What a server class reports when scraped.
pub struct ClassFigures<'a> {
    pub class: &'a str,
    pub stats: adapters::ClassStats,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process's metrics (made on first use).
pub fn get() -> &'static Metrics {
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("broker");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by endpoint, dialect and outcome (ok, or the fault's code)",
            requests.clone(),
        );
        // 100 µs to about 3.3 s.
        let latency = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 16))
        });
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its reply, by endpoint and dialect",
            latency.clone(),
        );
        let sessions_begun = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "sessions_begun",
            "Sessions begun, by endpoint",
            sessions_begun.clone(),
        );
        let sessions_ended = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "sessions_ended",
            "Sessions ended (their client's End, or a failure that ended them), by endpoint",
            sessions_ended.clone(),
        );
        let sessions_expired = Counter::default();
        registry.register(
            "sessions_expired",
            "Expired sessions this broker deleted (its sweeper, or a request that found one)",
            sessions_expired.clone(),
        );
        let transactions = Family::<OutcomeLabels, Counter>::default();
        for outcome in ["committed", "aborted"] {
            let _ = transactions.get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            });
        }
        registry.register(
            "transactions",
            "Transactions this broker coordinated to an end, by outcome (committed, aborted)",
            transactions.clone(),
        );
        let recoveries = Counter::default();
        registry.register(
            "transaction_recoveries",
            "Unfinished two-phase commits this broker completed in recovery",
            recoveries.clone(),
        );
        let forwarded = Counter::default();
        registry.register(
            "forwarded_requests",
            "Requests forwarded to the broker holding their session",
            forwarded.clone(),
        );
        let workers = Family::<ClassLabels, Gauge>::default();
        registry.register(
            "class_workers",
            "Live workers (processes, connections) of a server class",
            workers.clone(),
        );
        let busy = Family::<ClassLabels, Gauge>::default();
        registry.register(
            "class_busy_workers",
            "Workers of a server class serving a request now",
            busy.clone(),
        );
        let restarts = Family::<ClassLabels, Counter>::default();
        registry.register(
            "class_worker_restarts",
            "Workers of a server class started again after one died, since the broker started",
            restarts.clone(),
        );
        let queued = Family::<ClassLabels, Gauge>::default();
        registry.register(
            "class_queue_depth",
            "Requests waiting for a worker of a server class",
            queued.clone(),
        );
        let live_sessions = Family::<EndpointLabels, Gauge>::default();
        registry.register(
            "sessions_live",
            "Unexpired sessions of an endpoint in the shared store (every broker's), counted when scraped up to admin.live_count_limit",
            live_sessions.clone(),
        );
        // 50 µs to about 1.6 s: a sled write is tens of µs, a PostgreSQL commit a few ms.
        let store_latency = Family::<store::OpLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.00005, 2.0, 16))
        });
        registry.register(
            "store_operation_duration_seconds",
            "Time of each session store call, by operation",
            store_latency.clone(),
        );
        let store_errors = Family::<store::OpErrorLabels, Counter>::default();
        registry.register(
            "store_errors",
            "Session store calls that failed, by operation and kind of error",
            store_errors.clone(),
        );
        let turn_wait = Histogram::new(exponential_buckets(0.00005, 2.0, 18));
        registry.register(
            "turn_wait_seconds",
            "Time a request waited to take its session's turn (behind the session's previous request, plus the store's round trip)",
            turn_wait.clone(),
        );
        Metrics {
            registry,
            live_sessions,
            store_latency,
            store_errors,
            turn_wait,
            requests,
            latency,
            sessions_begun,
            sessions_ended,
            sessions_expired,
            transactions,
            recoveries,
            forwarded,
            workers,
            busy,
            restarts,
            queued,
        }
    }

    /// The handles of endpoint `path`'s figures (its `ok` series exists from the start, at 0).
    pub fn endpoint(&self, path: &str, dialect: &str) -> EndpointMetrics {
        let labels = EndpointLabels {
            endpoint: path.to_string(),
            dialect: dialect.to_string(),
        };
        EndpointMetrics {
            ok: self
                .requests
                .get_or_create(&RequestLabels {
                    endpoint: labels.endpoint.clone(),
                    dialect: labels.dialect.clone(),
                    outcome: "ok".into(),
                })
                .clone(),
            latency: self.latency.get_or_create(&labels).clone(),
            labels: {
                // The session series exist from the start too, at 0.
                let _ = self.sessions_begun.get_or_create(&labels);
                let _ = self.sessions_ended.get_or_create(&labels);
                labels
            },
        }
    }

    /// A session began on endpoint `path`.
    pub fn session_begun(&self, path: &str, dialect: &str) {
        self.sessions_begun
            .get_or_create(&EndpointLabels {
                endpoint: path.to_string(),
                dialect: dialect.to_string(),
            })
            .inc();
    }

    /// A session ended on endpoint `path` (its client's End, or a failure that ended it).
    pub fn session_ended(&self, path: &str, dialect: &str) {
        self.sessions_ended
            .get_or_create(&EndpointLabels {
                endpoint: path.to_string(),
                dialect: dialect.to_string(),
            })
            .inc();
    }

    /// `n` expired sessions deleted by the sweeper.
    pub fn sessions_expired(&self, n: u64) {
        self.sessions_expired.inc_by(n);
    }

    /// A transaction ended: `committed` or not.
    pub fn transaction(&self, committed: bool) {
        let outcome = if committed { "committed" } else { "aborted" };
        self.transactions
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// `n` two-phase commits completed by recovery.
    pub fn recovered(&self, n: u64) {
        self.recoveries.inc_by(n);
    }

    /// A request forwarded to another broker.
    pub fn forwarded(&self) {
        self.forwarded.inc();
    }

    /// The text exposition, with the classes' gauges and the live sessions (`(endpoint path,
    /// dialect, count)`) read now.
    pub fn render(&self, classes: &[ClassFigures<'_>], live: &[(&str, &str, usize)]) -> String {
        for (endpoint, dialect, n) in live {
            self.live_sessions
                .get_or_create(&EndpointLabels {
                    endpoint: endpoint.to_string(),
                    dialect: dialect.to_string(),
                })
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        for c in classes {
            let labels = ClassLabels {
                class: c.class.to_string(),
            };
            let set = |family: &Family<ClassLabels, Gauge>, v: usize| {
                family
                    .get_or_create(&labels)
                    .set(i64::try_from(v).unwrap_or(i64::MAX));
            };
            set(&self.workers, c.stats.workers);
            set(&self.busy, c.stats.busy);
            // The pool counts deaths since it started; the counter follows it.
            let restarts = self.restarts.get_or_create(&labels);
            let seen = restarts.get();
            let now = u64::try_from(c.stats.restarts).unwrap_or(u64::MAX);
            if now > seen {
                restarts.inc_by(now - seen);
            }
            set(&self.queued, c.stats.queued);
        }
        let mut out = String::with_capacity(8192);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        out
    }
}

/// The handles of every endpoint, by path, for the HTTP layer.
pub type EndpointTable = std::collections::HashMap<String, Arc<EndpointMetrics>>;
