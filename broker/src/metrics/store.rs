//! # The store, timed: every operation's latency and errors
//!
//! [`MeteredStore`] wraps the store the broker opened and is what every part of the broker holds
//! (engine, coordinator, registry, sweeper, admin), so no call escapes it. Each operation is
//! timed into `broker_store_operation_duration_seconds{op}` and each error counted in
//! `broker_store_errors_total{op, error}` (the error's kind: `unavailable`, `turn_timeout`,
//! `fenced`…, never its text, which may name a session). Taking a turn is also a *turn wait*
//! (`broker_turn_wait_seconds`): the time a request waited for its session's previous request
//! and the store's round trip, which is where a session's requests queue behind each other.
//!
//! The handles are made once ([`StoreOps`]): a call costs two clock reads and a histogram's
//! atomic adds on top of the boxed future `async_trait` already makes (measured with the rest of
//! the metrics on the continue path, BENCHMARKS.md).

use super::{Family, Histogram};
use async_trait::async_trait;
use cookie_store::{
    BrokerInfo, BrokerRegistry, DecisionLog, Durability, SessionRecord, SessionStore, Store,
    StoreError, StoreHealth, Turn, TxnDecision,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct OpLabels {
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct OpErrorLabels {
    pub op: &'static str,
    pub error: &'static str,
}

/// Every operation a store has, by its label.
const OPS: [&str; 16] = [
    "create",
    "take_turn",
    "write",
    "write_and_release",
    "release",
    "delete",
    "due_for_expiry",
    "count_sessions",
    "list_sessions",
    "register_broker",
    "live_brokers",
    "log_decision",
    "forget_decision",
    "pending_decisions",
    "ping",
    "flush",
];

/// The histograms of every operation, looked up once.
struct StoreOps {
    latency: [Histogram; OPS.len()],
    turn_wait: Histogram,
}

fn op_index(op: &str) -> usize {
    OPS.iter().position(|o| *o == op).unwrap_or(0)
}

/// The kind of a store error, as a label.
fn error_kind(e: &StoreError) -> &'static str {
    match e {
        StoreError::AlreadyExists(_) => "already_exists",
        StoreError::Fenced { .. } => "fenced",
        StoreError::TurnTimeout(_) => "turn_timeout",
        StoreError::Record { .. } => "record",
        StoreError::Unavailable(_) => "unavailable",
        StoreError::Config(_) => "config",
    }
}

/// A store whose every call is timed and whose errors are counted (see the module docs).
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    ops: StoreOps,
    errors: Family<OpErrorLabels, Counter>,
}

impl MeteredStore {
    /// Wrap `inner`, registering its figures in the process's metrics.
    pub fn wrap(inner: Arc<dyn Store>) -> Arc<dyn Store> {
        let metrics = super::get();
        let ops = StoreOps {
            latency: OPS.map(|op| {
                metrics
                    .store_latency
                    .get_or_create(&OpLabels { op })
                    .clone()
            }),
            turn_wait: metrics.turn_wait.clone(),
        };
        // The unavailable series exist from the start, at 0, so that an alert's rate sees them.
        for op in OPS {
            let _ = metrics.store_errors.get_or_create(&OpErrorLabels {
                op,
                error: "unavailable",
            });
        }
        Arc::new(MeteredStore {
            inner,
            ops,
            errors: metrics.store_errors.clone(),
        })
    }

    fn done<T>(&self, op: &'static str, started: Instant, result: &Result<T, StoreError>) {
        let elapsed = started.elapsed().as_secs_f64();
        self.ops.latency[op_index(op)].observe(elapsed);
        if let Err(e) = result {
            self.errors
                .get_or_create(&OpErrorLabels {
                    op,
                    error: error_kind(e),
                })
                .inc();
        }
    }
}

/// Time one call: `timed!(self, "op", self.inner.op(args))`.
macro_rules! timed {
    ($self:ident, $op:literal, $call:expr) => {{
        let started = Instant::now();
        let result = $call.await;
        $self.done($op, started, &result);
        result
    }};
}

#[async_trait]
impl SessionStore for MeteredStore {
    async fn create(
        &self,
        record: &SessionRecord,
        durability: Durability,
    ) -> Result<(), StoreError> {
        timed!(self, "create", self.inner.create(record, durability))
    }

    async fn take_turn(
        &self,
        id: &str,
        lease: Duration,
        wait: Duration,
    ) -> Result<Option<(Turn, SessionRecord)>, StoreError> {
        let started = Instant::now();
        let result = self.inner.take_turn(id, lease, wait).await;
        self.done("take_turn", started, &result);
        self.ops.turn_wait.observe(started.elapsed().as_secs_f64());
        result
    }

    async fn write(
        &self,
        turn: &Turn,
        record: &SessionRecord,
        durability: Durability,
    ) -> Result<(), StoreError> {
        timed!(self, "write", self.inner.write(turn, record, durability))
    }

    async fn write_and_release(
        &self,
        turn: Turn,
        record: &SessionRecord,
        durability: Durability,
    ) -> Result<(), StoreError> {
        timed!(
            self,
            "write_and_release",
            self.inner.write_and_release(turn, record, durability)
        )
    }

    async fn release(&self, turn: Turn) -> Result<(), StoreError> {
        timed!(self, "release", self.inner.release(turn))
    }

    async fn delete(&self, turn: Turn, durability: Durability) -> Result<(), StoreError> {
        timed!(self, "delete", self.inner.delete(turn, durability))
    }

    async fn due_for_expiry(&self, now_ms: u64, limit: usize) -> Result<Vec<String>, StoreError> {
        timed!(
            self,
            "due_for_expiry",
            self.inner.due_for_expiry(now_ms, limit)
        )
    }

    async fn count_sessions(
        &self,
        endpoint: &str,
        client_ip: Option<IpAddr>,
        now_ms: u64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        timed!(
            self,
            "count_sessions",
            self.inner
                .count_sessions(endpoint, client_ip, now_ms, limit)
        )
    }

    async fn list_sessions(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        timed!(
            self,
            "list_sessions",
            self.inner.list_sessions(after, limit)
        )
    }
}

#[async_trait]
impl BrokerRegistry for MeteredStore {
    async fn register_broker(&self, info: &BrokerInfo) -> Result<(), StoreError> {
        timed!(self, "register_broker", self.inner.register_broker(info))
    }

    async fn live_brokers(&self, now_ms: u64) -> Result<Vec<BrokerInfo>, StoreError> {
        timed!(self, "live_brokers", self.inner.live_brokers(now_ms))
    }
}

#[async_trait]
impl DecisionLog for MeteredStore {
    async fn log_decision(&self, decision: &TxnDecision) -> Result<(), StoreError> {
        timed!(self, "log_decision", self.inner.log_decision(decision))
    }

    async fn forget_decision(&self, txn_id: &str) -> Result<(), StoreError> {
        timed!(self, "forget_decision", self.inner.forget_decision(txn_id))
    }

    async fn pending_decisions(&self) -> Result<Vec<TxnDecision>, StoreError> {
        timed!(self, "pending_decisions", self.inner.pending_decisions())
    }
}

#[async_trait]
impl StoreHealth for MeteredStore {
    async fn ping(&self) -> Result<(), StoreError> {
        timed!(self, "ping", self.inner.ping())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        timed!(self, "flush", self.inner.flush())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_store_error_has_a_label_and_every_op_its_own_histogram() {
        assert_eq!(op_index("create"), 0);
        assert_eq!(op_index("flush"), OPS.len() - 1);
        let kinds = [
            StoreError::Unavailable("x".into()),
            StoreError::TurnTimeout("x".into()),
            StoreError::Fenced {
                session_id: "x".into(),
                epoch: 1,
            },
        ];
        let labels: Vec<_> = kinds.iter().map(error_kind).collect();
        assert_eq!(labels, ["unavailable", "turn_timeout", "fenced"]);
    }
}
