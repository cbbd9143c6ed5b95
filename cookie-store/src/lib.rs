//! # cookie-store: where session contexts live
//!
//! NonStop SOAP kept every session context in one key-sequenced "server-side cookie file" that all
//! SOAP server processes opened, locking a session's record from the moment a request read it until
//! the reply was sent. This crate keeps that idea behind one interface, [`Store`], with backends that
//! differ only in where the bytes go:
//!
//! | URL | backend | for |
//! | --- | --- | --- |
//! | `sled:DIR` ([`SledOptions::parse_url`]) | [`SledStore`], sled in this process | one broker process (the embedded default) |
//! | `cookie-store://HOST:PORT` | [`remote`]: the `cookie-store serve` daemon | several brokers on one host |
//! | `postgres://…` | [`postgres`]: PostgreSQL | brokers on several hosts |
//!
//! What a store keeps is split by concern into four traits ([`traits`]): [`SessionStore`]
//! (session records and their turns: the request path), [`BrokerRegistry`] (which brokers
//! live), [`DecisionLog`] (two-phase commit decisions) and [`StoreHealth`] (ping, flush). Every
//! backend implements all four; [`Store`] is all four at once, and each user of the store holds
//! only the part it uses.

mod backoff;
mod codec;
mod epochs;
mod expiry;
mod group_flush;
mod held;
pub mod postgres;
mod record;
pub mod remote;
mod sled_store;
pub mod traits;
mod turns;

pub use held::{take_turn, HeldTurn};

/// A store URL as it may be shown (logs, banners, errors): a password in it replaced by `***`.
pub fn redact_url(url: &str) -> String {
    postgres::options::redact(url)
}
pub use record::{
    Participant, RecordError, SessionRecord, SubsessionState, TransactionPhase, TransactionState,
    RECORD_FORMAT_V1, RECORD_FORMAT_V2,
};
pub use sled_store::{SledOptions, SledStore};
pub use traits::{
    BrokerInfo, BrokerRegistry, DecisionLog, Durability, SessionStore, Store, StoreHealth, Turn,
    TxnDecision,
};

use std::sync::Arc;

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
