//! Recovery: finishing what a crash interrupted.
//!
//! Runs once at broker start, before the first request, and then periodically. Two sources of
//! truth meet here:
//!
//! 1. **The decision log** (in the store). A logged decision whose participants did not all
//!    acknowledge is re-sent: `COMMIT` to every participant (to its worker when this process pinned
//!    it and it lives, otherwise to any worker of its class, which resolves the transaction from its
//!    durable prepared state). When all acknowledged, the session's record is settled (its
//!    transaction cleared, so the session carries on without it) and the decision forgotten.
//! 2. **The participants' prepared transactions** (`RECOVER` on every transactional class). One
//!    with a commit decision was handled above; one without a decision is aborted — *presumed
//!    abort*: a coordinator logs nothing for an abort, so no decision means nobody was ever told it
//!    committed — unless this process is committing it right now (between its prepares and its
//!    decision).
//!
//! Several brokers sharing a store would each run this; transactions another live broker is
//! preparing must then be left to it (a later issue: the decision log will carry the coordinator's
//! lease).

use super::Coordinator;
use cookie_store::{Durability, StoreError, TxnDecision};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// What one recovery pass did, for the log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Logged decisions completed (every participant acknowledged).
    pub decisions_completed: usize,
    /// Logged decisions still waiting for a participant.
    pub decisions_pending: usize,
    /// Prepared transactions without a decision, aborted.
    pub presumed_aborted: usize,
    /// Transactional classes that could not be asked (their workers are down).
    pub classes_unreachable: usize,
}

impl Coordinator {
    /// One recovery pass. Errors only when the store cannot be read.
    pub async fn recover(self: &Arc<Self>) -> Result<RecoveryReport, StoreError> {
        let mut report = RecoveryReport::default();
        let decisions = self.store.pending_decisions().await?;
        let decided: HashSet<String> = decisions.iter().map(|d| d.txn_id.clone()).collect();

        for decision in decisions {
            if self.is_in_flight(&decision.txn_id) {
                continue; // this process is completing it right now
            }
            let pending = self
                .phase_two_round(&decision, decision.participants.clone())
                .await;
            // The decision is forgotten only once the session no longer names the transaction:
            // a session that still did would later see its participants gone and report an abort.
            if pending.is_empty() && self.settle_session(&decision).await {
                self.forget(&decision.txn_id).await;
                report.decisions_completed += 1;
            } else {
                report.decisions_pending += 1;
            }
        }

        for (name, class) in &self.classes {
            if !class.config().transactional {
                continue;
            }
            let prepared = match class.recover().await {
                Ok(list) => list,
                Err(e) => {
                    tracing::warn!(class = %name, error = %e, "cannot ask for prepared transactions");
                    report.classes_unreachable += 1;
                    continue;
                }
            };
            for txn in prepared {
                if decided.contains(&txn) || self.is_in_flight(&txn) {
                    continue;
                }
                match class.abort(None, &txn).await {
                    Ok(()) => {
                        tracing::info!(class = %name, txn = %txn, "prepared transaction without a decision aborted (presumed abort)");
                        report.presumed_aborted += 1;
                    }
                    Err(e) => {
                        tracing::warn!(class = %name, txn = %txn, error = %e, "cannot abort a prepared transaction; will retry")
                    }
                }
            }
        }
        Ok(report)
    }

    /// The session whose transaction a completed decision committed carries on without it. False
    /// when the session could not be settled now (retried at the next pass).
    pub(super) async fn settle_session(&self, decision: &TxnDecision) -> bool {
        let taken = self
            .store
            .take_turn(
                &decision.session_id,
                Duration::from_secs(30),
                Duration::from_secs(5),
            )
            .await;
        let (turn, mut record) = match taken {
            Ok(Some(found)) => found,
            Ok(None) => return true, // ended or expired meanwhile
            Err(e) => {
                tracing::warn!(txn = %decision.txn_id, error = %e, "cannot settle the session of a recovered transaction");
                return false;
            }
        };
        if record
            .transaction
            .as_ref()
            .is_some_and(|t| t.id == decision.txn_id)
        {
            record.transaction = None;
            match self
                .store
                .write_and_release(turn, &record, Durability::Durable)
                .await
            {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(txn = %decision.txn_id, error = %e, "cannot settle the session of a recovered transaction");
                    false
                }
            }
        } else {
            if let Err(e) = self.store.release(turn).await {
                tracing::warn!(error = %e, "cannot release a session's turn");
            }
            true
        }
    }
}

/// Run [`Coordinator::recover`] every `interval` until `stop` turns true.
pub fn spawn_recovery(
    coordinator: Arc<Coordinator>,
    runtime: &tokio::runtime::Handle,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    runtime.spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => return,
            }
            match coordinator.recover().await {
                Ok(report) if report != RecoveryReport::default() => {
                    tracing::info!(?report, "transaction recovery pass")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "transaction recovery pass failed"),
            }
        }
    })
}
