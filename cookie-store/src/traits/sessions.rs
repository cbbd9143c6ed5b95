//! Session records and their turns: the part of the store every request goes through.
//!
//! ## The turn
//! A request of a session first takes the session's *turn* ([`SessionStore::take_turn`]):
//! exclusive, queued in arrival order, held under a *lease* (a deadline) and identified by an
//! *epoch*. Every write names the turn; a write whose epoch is no longer current (the lease ran out
//! and someone else took the turn) is refused with [`StoreError::Fenced`], so a paused broker can
//! never overwrite newer state. A turn on an idle session is granted at once, without waiting for
//! any timer.
//!
//! A continue request costs two store calls: `take_turn` (which also returns the record) and
//! `write_and_release`.
//!
//! ## Durability
//! [`Durability::Durable`] writes are on disk before the call returns; concurrent durable writes
//! share one flush (group commit). [`Durability::Lazy`] writes (last-access times) return at once
//! and reach the disk with the next flush; a crash then only lengthens a session's life a little.
//!
//! ## Counting
//! [`SessionStore::count_sessions`] counts an endpoint's live sessions (of one client IP, or all)
//! through a second index keyed by endpoint, client IP and session ID, kept in the same
//! transactions as the record; it stops at the caller's limit, so a Begin under a session limit
//! never reads the store whole.
//!
//! ## Expiry
//! Records are filed in an index ordered by expiry time. [`SessionStore::due_for_expiry`] reads
//! the front of that index, never the whole store. The index is rewritten lazily (see
//! [`SessionRecord::expiry_indexed_ms`]), so the sweeper re-checks each due record under its turn.

use crate::{SessionRecord, StoreError};
use async_trait::async_trait;
use std::net::IpAddr;
use std::time::Duration;

/// How hard a write must hold before the call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// On disk before returning; concurrent durable writes share one flush.
    Durable,
    /// Returns at once; reaches the disk with the next (background or grouped) flush.
    Lazy,
}

/// Proof that the caller holds a session's turn. Obtain it from [`SessionStore::take_turn`], give
/// it back with [`SessionStore::release`], [`SessionStore::write_and_release`] or
/// [`SessionStore::delete`]. Callers outside the store backends hold it as a
/// [`HeldTurn`](crate::HeldTurn) (taken with [`take_turn`](crate::take_turn)), which cannot be
/// forgotten.
#[derive(Debug, PartialEq, Eq)]
pub struct Turn {
    /// The session whose turn this is.
    pub session_id: String,
    /// Fencing token: strictly increasing for every grant of any turn by this store.
    pub epoch: u64,
}

/// Session records, their turns, their expiry and their count.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
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
    /// than [`SessionStore::release`]: releasing (or writing) a record whose filed deadline has
    /// passed re-files it at its real deadline.
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

    /// Up to `limit` records in ascending ID order, starting after ID `after` (from the first
    /// with `None`): a page of an operator's listing, read without taking turns (a record being
    /// changed is seen as last written). Expired records not yet swept are included; the caller
    /// filters.
    async fn list_sessions(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SessionRecord>, StoreError>;
}
