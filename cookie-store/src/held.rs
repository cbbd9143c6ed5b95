//! # A held turn that cannot leak
//!
//! A session's turn is a distributed lock: while one request holds it, every other request of the
//! session (at any broker sharing the store) waits. Given back by hand, one forgotten early return
//! holds the session until the turn's lease runs out (minutes). [`HeldTurn`] makes that mistake
//! impossible to miss:
//!
//! - it is `#[must_use]`, and the only ways to finish with it *consume* it:
//!   [`HeldTurn::write_and_release`] (the usual end of a request), [`HeldTurn::delete`] (the session
//!   ended) and [`HeldTurn::release`] (nothing to write);
//! - dropping it unfinished (a `?`, a panic, an early return) still gives the turn back, from a task
//!   on the current tokio runtime, and logs a warning naming the session (shortened), so the bug is
//!   seen and no session stays stuck. Outside any runtime the turn is left to its lease, and that is
//!   logged too.
//!
//! Take one with [`take_turn`], the guarded form of [`SessionStore::take_turn`](crate::SessionStore::take_turn).

use crate::{short_id, Durability, SessionRecord, SessionStore, StoreError, Turn};
use std::sync::Arc;
use std::time::Duration;

/// A session's turn, held until it is consumed (see the module docs).
#[must_use = "a held turn must be given back: write_and_release, delete or release"]
pub struct HeldTurn {
    store: Arc<dyn SessionStore>,
    /// `None` only once consumed.
    turn: Option<Turn>,
}

/// Take the turn of session `id` (see [`SessionStore::take_turn`](crate::SessionStore::take_turn)) as a [`HeldTurn`]. `Ok(None)`: no such
/// session, nothing held.
pub async fn take_turn(
    store: &Arc<dyn SessionStore>,
    id: &str,
    lease: Duration,
    wait: Duration,
) -> Result<Option<(HeldTurn, SessionRecord)>, StoreError> {
    Ok(store
        .take_turn(id, lease, wait)
        .await?
        .map(|(turn, record)| (HeldTurn::new(store.clone(), turn), record)))
}

impl HeldTurn {
    /// Guard a turn just taken from `store`.
    pub fn new(store: Arc<dyn SessionStore>, turn: Turn) -> HeldTurn {
        HeldTurn {
            store,
            turn: Some(turn),
        }
    }

    /// The session whose turn this is.
    pub fn session_id(&self) -> &str {
        self.turn.as_ref().map_or("", |t| t.session_id.as_str())
    }

    /// Write the record under the turn, keeping it.
    pub async fn write(
        &self,
        record: &SessionRecord,
        durability: Durability,
    ) -> Result<(), StoreError> {
        match &self.turn {
            Some(turn) => self.store.write(turn, record, durability).await,
            None => Err(consumed()),
        }
    }

    /// Write the record and give the turn to the next waiter: the usual end of a request.
    pub async fn write_and_release(
        mut self,
        record: &SessionRecord,
        durability: Durability,
    ) -> Result<(), StoreError> {
        match self.turn.take() {
            Some(turn) => self.store.write_and_release(turn, record, durability).await,
            None => Err(consumed()),
        }
    }

    /// Delete the record and give the turn back (waiters then find no session).
    pub async fn delete(mut self, durability: Durability) -> Result<(), StoreError> {
        match self.turn.take() {
            Some(turn) => self.store.delete(turn, durability).await,
            None => Err(consumed()),
        }
    }

    /// Give the turn back without writing. A failure is logged, not returned: the turn's lease
    /// ends it anyway, and the caller has nothing better to do about it.
    pub async fn release(mut self) {
        if let Some(turn) = self.turn.take() {
            let session = short_id(&turn.session_id).to_string();
            if let Err(e) = self.store.release(turn).await {
                tracing::warn!(session = %session, error = %e, "could not release a session's turn");
            }
        }
    }
}

/// Only reachable through a bug in this module: every consuming method takes the turn once.
fn consumed() -> StoreError {
    StoreError::Unavailable("the turn was already given back".into())
}

impl Drop for HeldTurn {
    fn drop(&mut self) {
        let Some(turn) = self.turn.take() else {
            return;
        };
        let session = short_id(&turn.session_id).to_string();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                tracing::warn!(session = %session, "a session's turn was dropped without being given back; releasing it");
                let store = self.store.clone();
                runtime.spawn(async move {
                    if let Err(e) = store.release(turn).await {
                        tracing::warn!(session = %session, error = %e, "could not release a dropped turn; its lease will end it");
                    }
                });
            }
            Err(_) => {
                tracing::warn!(session = %session, "a session's turn was dropped outside any runtime; its lease will end it")
            }
        }
    }
}

impl std::fmt::Debug for HeldTurn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldTurn")
            .field("session", &short_id(self.session_id()))
            .field("held", &self.turn.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{now_ms, SledStore};

    fn record(id: &str) -> SessionRecord {
        let now = now_ms();
        SessionRecord {
            id: id.into(),
            endpoint: "/soap".into(),
            dialect: "nonstop".into(),
            principal: None,
            client_ip: None,
            created_ms: now,
            last_access_ms: now,
            idle_timeout_ms: 60_000,
            transaction: None,
            subsession: None,
            dialect_state: Vec::new(),
            expiry_indexed_ms: 0,
        }
    }

    const LEASE: Duration = Duration::from_secs(60);

    /// A guard dropped without being consumed (an early return) gives the turn back at once: the
    /// next request gets it without waiting for the minute-long lease.
    #[tokio::test]
    async fn a_dropped_guard_gives_the_turn_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn SessionStore> = Arc::new(SledStore::open(dir.path()).expect("open"));
        store
            .create(&record("s1"), Durability::Lazy)
            .await
            .expect("create");
        let (held, _) = take_turn(&store, "s1", LEASE, Duration::ZERO)
            .await
            .expect("take")
            .expect("exists");
        // Held: nobody else gets it.
        let busy = take_turn(&store, "s1", LEASE, Duration::from_millis(20)).await;
        assert!(matches!(busy, Err(StoreError::TurnTimeout(_))), "{busy:?}");
        drop(held);
        let again = take_turn(&store, "s1", LEASE, Duration::from_secs(5))
            .await
            .expect("take again")
            .expect("exists");
        again.0.release().await;
    }

    /// Each consuming method gives the turn back exactly once; write keeps it.
    #[tokio::test]
    async fn consuming_methods_give_the_turn_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn SessionStore> = Arc::new(SledStore::open(dir.path()).expect("open"));
        let mut r = record("s2");
        store.create(&r, Durability::Lazy).await.expect("create");

        let (held, _) = take_turn(&store, "s2", LEASE, Duration::ZERO)
            .await
            .expect("take")
            .expect("exists");
        assert_eq!(held.session_id(), "s2");
        r.idle_timeout_ms = 120_000;
        held.write(&r, Durability::Lazy).await.expect("write");
        let busy = take_turn(&store, "s2", LEASE, Duration::from_millis(20)).await;
        assert!(
            matches!(busy, Err(StoreError::TurnTimeout(_))),
            "write keeps the turn"
        );
        held.write_and_release(&r, Durability::Durable)
            .await
            .expect("write and release");

        let (held, stored) = take_turn(&store, "s2", LEASE, Duration::ZERO)
            .await
            .expect("take")
            .expect("exists");
        assert_eq!(stored.idle_timeout_ms, 120_000);
        held.release().await;

        let (held, _) = take_turn(&store, "s2", LEASE, Duration::ZERO)
            .await
            .expect("take")
            .expect("exists");
        held.delete(Durability::Durable).await.expect("delete");
        assert!(take_turn(&store, "s2", LEASE, Duration::ZERO)
            .await
            .expect("take")
            .is_none());
    }
}
