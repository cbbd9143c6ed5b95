//! # cookie-store: where session contexts live
//!
//! NonStop SOAP kept every session context in one key-sequenced "server-side cookie file" that all
//! SOAP server processes opened, locking a session's record from the moment a request read it until
//! the reply was sent. This crate keeps that idea behind one trait, [`Store`], with backends that
//! differ only in where the bytes go:
//!
//! | URL | backend | for |
//! | --- | --- | --- |
//! | `sled:DIR` ([`SledOptions::parse_url`]) | [`SledStore`], sled in this process | one broker process (the embedded default) |
//! | `cookie-store://HOST:PORT` | [`remote`]: the `cookie-store serve` daemon | several brokers on one host |
//! | `postgres://…` | [`postgres`]: PostgreSQL | brokers on several hosts |
//!
//! ## The turn
//! A request of a session first takes the session's *turn* ([`Store::take_turn`]): exclusive, queued in
//! arrival order, held under a *lease* (a deadline) and identified by an *epoch*. Every write names the
//! turn; a write whose epoch is no longer current (the lease ran out and someone else took the turn)
//! is refused with [`StoreError::Fenced`], so a paused broker can never overwrite newer state. A turn
//! on an idle session is granted at once, without waiting for any timer.
//!
//! A continue request costs two store calls: `take_turn` (which also returns the record) and
//! `write_and_release`.
//!
//! ## Durability
//! [`Durability::Durable`] writes are on disk before the call returns; concurrent durable writes share
//! one flush (group commit). [`Durability::Lazy`] writes (last-access times) return at once and reach
//! the disk with the next flush; a crash then only lengthens a session's life a little.
//!
//! ## Counting
//! [`Store::count_sessions`] counts an endpoint's live sessions (of one client IP, or all) through
//! a second index keyed by endpoint, client IP and session ID, kept in the same transactions as the
//! record; it stops at the caller's limit, so a Begin under a session limit never reads the store
//! whole.
//!
//! ## Expiry
//! Records are filed in an index ordered by expiry time. [`Store::due_for_expiry`] reads the front of
//! that index, never the whole store. The index is rewritten lazily (see
//! [`SessionRecord::expiry_indexed_ms`]), so the sweeper re-checks each due record under its turn.

mod codec;
mod epochs;
mod expiry;
mod group_flush;
mod held;
pub mod postgres;
mod record;
pub mod remote;
mod sled_store;
mod turns;

pub use held::{take_turn, HeldTurn};
pub use record::{
    Participant, RecordError, SessionRecord, SubsessionState, TransactionPhase, TransactionState,
    RECORD_FORMAT_V1, RECORD_FORMAT_V2,
};
pub use sled_store::{SledOptions, SledStore};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// How hard a write must hold before the call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// On disk before returning; concurrent durable writes share one flush.
    Durable,
    /// Returns at once; reaches the disk with the next (background or grouped) flush.
    Lazy,
}

/// Proof that the caller holds a session's turn. Obtain it from [`Store::take_turn`], give it back
/// with [`Store::release`], [`Store::write_and_release`] or [`Store::delete`]. Callers outside the
/// store backends hold it as a [`HeldTurn`] (taken with [`take_turn`]), which cannot be forgotten.
#[derive(Debug, PartialEq, Eq)]
pub struct Turn {
    /// The session whose turn this is.
    pub session_id: String,
    /// Fencing token: strictly increasing for every grant of any turn by this store.
    pub epoch: u64,
}

/// A broker process as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    pub id: String,
    /// This run of the broker: `<id>/<boot nonce>`, new at every start. Workers, dialogs and
    /// transactions are tagged with it, so a restarted broker is never taken for the run that
    /// pinned them.
    pub instance: String,
    /// How other brokers reach it (`http://host:port`).
    pub advertise: String,
    /// Until when its heartbeat lease holds, ms since the epoch.
    pub lease_until_ms: u64,
}

/// A two-phase commit decision, written durably before phase two.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnDecision {
    pub txn_id: String,
    /// The session whose transaction it is, so that recovery can settle the session's record.
    pub session_id: String,
    /// `true` to commit, `false` to abort.
    pub commit: bool,
    pub participants: Vec<Participant>,
    /// The broker that made the decision.
    pub coordinator: String,
    pub decided_ms: u64,
}

/// What can go wrong in a store call.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `create` of an ID that already exists.
    #[error("session {}… already exists", short_id(.0))]
    AlreadyExists(String),
    /// The turn's epoch is no longer current: its lease ran out and the turn went to someone else.
    #[error(
        "turn of session {}… is no longer held (epoch {epoch} fenced)",
        short_id(session_id)
    )]
    Fenced { session_id: String, epoch: u64 },
    /// Waiting for a turn took longer than the caller allowed.
    #[error("timed out waiting for the turn of session {}…", short_id(.0))]
    TurnTimeout(String),
    /// A stored record could not be decoded.
    #[error("record of session {}…: {source}", short_id(id))]
    Record { id: String, source: RecordError },
    /// The backend is unreachable or failed; the operation may be retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A store URL or setting is unusable.
    #[error("store configuration: {0}")]
    Config(String),
}

/// The session-context store. Every backend implements it; callers never know which one they have.
///
/// All methods may be called from any tokio runtime: backends keep their background work on their own
/// threads or runtime and talk to callers only through futures that need no particular reactor.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Store a new record, failing with [`StoreError::AlreadyExists`] if the ID is taken.
    async fn create(
        &self,
        record: &SessionRecord,
        durability: Durability,
    ) -> Result<(), StoreError>;

    /// Take the turn of session `id`: wait (in arrival order, at most `wait`) until nobody else holds
    /// it, then hold it for at most `lease`. Returns the turn and the current record, or `Ok(None)`
    /// (holding nothing) when no record exists.
    async fn take_turn(
        &self,
        id: &str,
        lease: Duration,
        wait: Duration,
    ) -> Result<Option<(Turn, SessionRecord)>, StoreError>;

    /// Write the record under a held turn, keeping the turn.
    async fn write(
        &self,
        turn: &Turn,
        record: &SessionRecord,
        durability: Durability,
    ) -> Result<(), StoreError>;

    /// Write the record and give the turn to the next waiter: the usual end of a request.
    async fn write_and_release(
        &self,
        turn: Turn,
        record: &SessionRecord,
        durability: Durability,
    ) -> Result<(), StoreError>;

    /// Give the turn back without writing.
    async fn release(&self, turn: Turn) -> Result<(), StoreError>;

    /// Delete the record (and its expiry index entry) and give the turn back. Waiters then find no
    /// record.
    async fn delete(&self, turn: Turn, durability: Durability) -> Result<(), StoreError>;

    /// IDs whose expiry-index deadline is at or before `now_ms`, earliest first, at most `limit`.
    /// The caller takes each one's turn and checks [`SessionRecord::is_expired`] before acting. A
    /// record that turns out to be alive (a continue moved its deadline later) needs nothing more
    /// than [`Store::release`]: releasing (or writing) a record whose filed deadline has passed
    /// re-files it at its real deadline.
    async fn due_for_expiry(&self, now_ms: u64, limit: usize) -> Result<Vec<String>, StoreError>;

    /// How many live (unexpired at `now_ms`) sessions of `endpoint` exist, counting only those
    /// begun from `client_ip` when it is given; counting stops at `limit` (the result is at most
    /// `limit`). Session admission uses it to enforce per-endpoint and per-client-IP limits across
    /// every broker sharing the store. Backends count through an index by endpoint and client IP:
    /// the cost grows with `limit` (and the endpoint's expired sessions not yet swept), never with
    /// the number of stored sessions. IPv4-mapped IPv6 addresses count as their IPv4 form.
    async fn count_sessions(
        &self,
        endpoint: &str,
        client_ip: Option<IpAddr>,
        now_ms: u64,
        limit: usize,
    ) -> Result<usize, StoreError>;

    /// Announce or renew a broker in the registry.
    async fn register_broker(&self, info: &BrokerInfo) -> Result<(), StoreError>;

    /// Brokers whose lease holds at `now_ms`.
    async fn live_brokers(&self, now_ms: u64) -> Result<Vec<BrokerInfo>, StoreError>;

    /// Write a commit decision durably (before phase two).
    async fn log_decision(&self, decision: &TxnDecision) -> Result<(), StoreError>;

    /// Remove a decision once every participant acknowledged it. Need not be durable: a decision
    /// that reappears after a crash is re-sent (idempotently) and forgotten again.
    async fn forget_decision(&self, txn_id: &str) -> Result<(), StoreError>;

    /// Decisions still waiting for acknowledgements (for recovery).
    async fn pending_decisions(&self) -> Result<Vec<TxnDecision>, StoreError>;

    /// Cheap liveness check (for `GET /healthz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Make every write so far durable (shutdown).
    async fn flush(&self) -> Result<(), StoreError>;
}

/// Open the store a URL names: `sled:DIR`, `cookie-store://HOST:PORT` or `postgres://…`.
///
/// Synchronous, and callable from inside or outside a tokio runtime: backends that need to connect
/// do so on their own background runtime before returning, so an unreachable or misconfigured
/// store is reported here, at start, with the URL's problem named.
pub fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sled:") {
        let (dir, options) = SledOptions::parse_url(url)?;
        return Ok(Arc::new(SledStore::open_with(dir, &options)?));
    }
    if url.starts_with("cookie-store://") {
        return remote::open(url);
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return postgres::open(url);
    }
    Err(StoreError::Config(format!(
        "store URL {url}: unknown scheme (expected sled:DIR, cookie-store://HOST:PORT or postgres://...)"
    )))
}

/// Milliseconds since the Unix epoch, the time unit of every record.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The first 8 characters of a session ID, for messages that reach logs: enough to correlate, not
/// enough to hijack the session.
pub fn short_id(id: &str) -> &str {
    match id.char_indices().nth(8) {
        Some((i, _)) => &id[..i],
        None => id,
    }
}

#[cfg(test)]
mod display_tests {
    use super::*;

    #[test]
    fn errors_never_display_a_whole_session_id() {
        let id = "0123456789abcdef0123456789abcdef".to_string();
        let errors = [
            StoreError::AlreadyExists(id.clone()),
            StoreError::Fenced {
                session_id: id.clone(),
                epoch: 7,
            },
            StoreError::TurnTimeout(id.clone()),
            StoreError::Record {
                id: id.clone(),
                source: RecordError::Empty,
            },
        ];
        for e in errors {
            let text = e.to_string();
            assert!(!text.contains(&id), "{text}");
            assert!(text.contains("01234567…"), "{text}");
        }
        assert_eq!(short_id("abc"), "abc");
    }
}
