//! What the admin API asks of the engine (`crate::admin`): one session's record, ending one now,
//! and purging the expired ones now. Each takes the session's turn like a request does, so it
//! waits behind a request in progress and never sees half of one.

use super::{EngineError, Held, PeerExpiry, SessionEngine};
use cookie_store::{now_ms, short_id, take_turn, Durability, SessionRecord, StoreError};
use std::time::Duration;

/// How long ending one session waits for its request in progress.
const END_WAIT: Duration = Duration::from_secs(5);

/// What ending a session came to.
#[derive(Debug, PartialEq, Eq)]
pub enum AdminEnd {
    /// Ended here: its dialog aborted, its transaction rolled back, its record deleted.
    Ended,
    /// No such session (or it had expired and was swept meanwhile).
    Unknown,
    /// Another live broker holds its dialog or its transaction's work: it must be ended there.
    HeldElsewhere { broker: String },
}

impl SessionEngine {
    /// Session `id`'s record, read under its turn (waiting at most `wait` for a request of the
    /// session in progress); `None` when there is no such session.
    pub async fn admin_show(
        &self,
        id: &str,
        wait: Duration,
    ) -> Result<Option<SessionRecord>, StoreError> {
        match take_turn(&self.store, id, self.turn_lease, wait).await? {
            Some((turn, record)) => {
                turn.release().await;
                Ok(Some(record))
            }
            None => Ok(None),
        }
    }

    /// End session `id` now, as an operator asks: the session's next request gets the dialect's
    /// unknown-session fault. The deletion is durable before this returns.
    pub async fn admin_end(&self, id: &str, wait: Duration) -> Result<AdminEnd, EngineError> {
        let Some((turn, record)) = take_turn(&self.store, id, self.turn_lease, wait).await? else {
            return Ok(AdminEnd::Unknown);
        };
        let mut held = Held::new(turn, record);
        match self.resolve_holder(&mut held).await {
            Ok(None) => {
                let (endpoint, dialect) =
                    (held.record.endpoint.clone(), held.record.dialect.clone());
                self.discard(held, Durability::Durable).await?;
                crate::metrics::get().session_ended(&endpoint, &dialect);
                tracing::info!(session = %short_id(id), "session ended by an operator");
                Ok(AdminEnd::Ended)
            }
            Ok(Some(holder)) => {
                held.release().await;
                // The holder ends it (its dialog and its transaction's workers are there).
                let Some(peer) = &self.peer else {
                    return Ok(AdminEnd::HeldElsewhere { broker: holder.id });
                };
                match peer.end(&holder, id).await {
                    Ok(PeerExpiry::Expired) => {
                        tracing::info!(session = %short_id(id), broker = %holder.id, "session ended by an operator, at the broker holding it");
                        Ok(AdminEnd::Ended)
                    }
                    Ok(PeerExpiry::Gone) => Ok(AdminEnd::Unknown),
                    Ok(_) => Ok(AdminEnd::HeldElsewhere { broker: holder.id }),
                    Err(e) => Err(EngineError::HolderUnreachable {
                        broker: format!("{} ({e})", holder.id),
                    }),
                }
            }
            Err(e) => {
                held.release().await;
                Err(e)
            }
        }
    }

    /// End every session of endpoint `path` begun before `before_ms` (a reload changed the
    /// endpoint: sqlSession's sessions do not outlive their endpoint's configuration). Pages
    /// through the store; returns how many were ended.
    pub async fn admin_end_endpoint(
        &self,
        path: &str,
        before_ms: u64,
    ) -> Result<usize, StoreError> {
        const PAGE: usize = 1000;
        let mut after: Option<String> = None;
        let mut ended = 0;
        loop {
            let page = self.store.list_sessions(after.as_deref(), PAGE).await?;
            for record in page
                .iter()
                .filter(|r| r.endpoint == path && r.created_ms < before_ms)
            {
                match self.admin_end(&record.id, END_WAIT).await {
                    Ok(AdminEnd::Ended) => ended += 1,
                    Ok(AdminEnd::Unknown) => {}
                    Ok(AdminEnd::HeldElsewhere { broker }) => {
                        tracing::warn!(session = %short_id(&record.id), %broker, "reload: a session of a changed endpoint is held by another broker and was left")
                    }
                    Err(e) => {
                        tracing::warn!(session = %short_id(&record.id), error = %e, "reload: could not end a session of a changed endpoint")
                    }
                }
            }
            match page.last() {
                Some(last) if page.len() == PAGE => after = Some(last.id.clone()),
                _ => break,
            }
        }
        tracing::info!(endpoint = %path, ended, "sessions of a changed endpoint ended");
        Ok(ended)
    }

    /// Sweep every expired session now, in passes of `batch`, until a pass finds fewer than a
    /// batch due (at most `max_passes`). Returns (examined, deleted).
    pub async fn admin_purge(
        &self,
        batch: usize,
        max_passes: usize,
    ) -> Result<(usize, usize), StoreError> {
        let (mut examined, mut deleted) = (0, 0);
        for _ in 0..max_passes {
            let (e, d) = self.sweep_once(batch).await?;
            examined += e;
            deleted += d;
            if e < batch {
                break;
            }
        }
        tracing::info!(
            examined,
            deleted,
            at_ms = now_ms(),
            "expired sessions purged by an operator"
        );
        Ok((examined, deleted))
    }
}
