//! Corrections: what a stored record still names after a durable write-back failed (the store was
//! unreachable), and how the next request of the session here puts it right.

use super::{EngineError, Held, Reply, SessionEngine};
use cookie_store::{short_id, SessionRecord, StoreError};

/// What a session's stored record names that no longer exists (`SessionEngine::corrections`).
#[derive(Debug, Default)]
pub(super) struct Correction {
    /// A transaction this process committed or aborted.
    pub(super) transaction: Option<String>,
    /// A dialog (its worker tag) that ended or was aborted.
    pub(super) dialog: Option<String>,
}

/// The record's transaction and dialog as the request found them (to tell, when the write-back
/// fails, what only this request's record knew).
#[derive(Debug, Default)]
pub(super) struct Before {
    /// The transaction's ID and how many participants it had.
    pub(super) transaction: Option<(String, usize)>,
    /// The dialog's worker tag.
    pub(super) dialog: Option<String>,
}

impl SessionEngine {
    /// A durable write-back failed (the store is unreachable): the store still holds the record as
    /// the request found it. What only this request's record knew is undone — a dialog it opened
    /// is aborted, a transaction it began is aborted, work it added to the open transaction
    /// aborts that transaction (the record could never name the new participant) — and what the
    /// stored record names but this request ended (a commit, an abort, a dialog's end) is
    /// remembered, to be corrected at the session's next request here. The client hears:
    /// - -1021 when the open transaction had to be aborted,
    /// - a retriable store fault when something this request began was undone (retrying it is
    ///   safe: as far as anyone knows it never ran),
    /// - the request's own result otherwise (what it ended stays ended: a commit is durable in
    ///   the participants and the decision log).
    pub(super) async fn unrecorded(
        &self,
        before: &Before,
        record: &mut SessionRecord,
        committed: bool,
        result: Result<Reply, EngineError>,
        error: StoreError,
    ) -> Result<Reply, EngineError> {
        let mut correction = Correction::default();
        let mut undone = false;
        let mut aborted = false;
        let dialog_now = record.subsession.as_ref().map(|s| s.worker.clone());
        if dialog_now != before.dialog {
            if dialog_now.is_some() {
                self.abort_dialog(record).await;
                undone = true;
            }
            correction.dialog = before.dialog.clone();
        }
        let txn_now = record
            .transaction
            .as_ref()
            .map(|t| (t.id.clone(), t.participants.len()));
        match (&before.transaction, &txn_now) {
            (Some((id, n)), Some((now_id, now_n))) if id == now_id => {
                if now_n > n {
                    if let Some(t) = &record.transaction {
                        self.coordinator.abort(t).await;
                    }
                    correction.transaction = Some(id.clone());
                    aborted = true;
                }
            }
            (found, now) => {
                if now.is_some() {
                    if let Some(t) = &record.transaction {
                        self.coordinator.abort(t).await;
                    }
                    undone = true;
                }
                if let Some((id, _)) = found {
                    correction.transaction = Some(id.clone());
                    tracing::info!(session = %short_id(&record.id), txn = %id, committed, "the stored record still names a transaction this request ended; correcting it at the next request");
                }
            }
        }
        if correction.transaction.is_some() || correction.dialog.is_some() {
            self.remember(&record.id, correction);
        }
        if undone {
            Err(EngineError::Store(error))
        } else if aborted {
            Err(EngineError::TransactionAborted {
                at_commit: false,
                reason: "the session store could not record its work".into(),
            })
        } else {
            result
        }
    }

    pub(super) fn remember(&self, session: &str, correction: Correction) {
        let mut all = self.corrections.lock().unwrap_or_else(|e| e.into_inner());
        let entry = all.entry(session.to_string()).or_default();
        if correction.transaction.is_some() {
            entry.transaction = correction.transaction;
        }
        if correction.dialog.is_some() {
            entry.dialog = correction.dialog;
        }
    }

    /// Correct a record whose last write-back here failed (see [`SessionEngine::unrecorded`]).
    pub(super) fn apply_correction(&self, held: &mut Held) {
        let correction = {
            let mut all = self.corrections.lock().unwrap_or_else(|e| e.into_inner());
            if all.is_empty() {
                return;
            }
            all.remove(&held.record.id)
        };
        let Some(c) = correction else { return };
        if let Some(id) = c.transaction {
            if held.record.transaction.as_ref().is_some_and(|t| t.id == id) {
                held.record.transaction = None;
                held.durable = true;
            }
        }
        if let Some(worker) = c.dialog {
            if held
                .record
                .subsession
                .as_ref()
                .is_some_and(|s| s.worker == worker)
            {
                held.record.subsession = None;
                held.durable = true;
            }
        }
    }
}
