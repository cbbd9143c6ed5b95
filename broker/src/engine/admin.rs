//! What the admin API asks of the engine (`crate::admin`): one session's record, ending one now,
//! and purging the expired ones now. Each takes the session's turn like a request does, so it
//! waits behind a request in progress and never sees half of one.

use super::{EngineError, Held, PeerExpiry, SessionEngine};
use cookie_store::{now_ms, short_id, take_turn, Durability, SessionRecord, StoreError};
use std::time::Duration;

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
