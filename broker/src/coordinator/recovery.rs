//! Recovery: finishing what a crash interrupted.
//!
//! Runs once at broker start, before the first request, then every `[cluster] recovery_interval`
//! and whenever a broker leaves the registry. Several brokers sharing a store all run it; each
//! acts only on what belongs to it or to a broker that is gone, and never on a live broker's
//! transaction. One pass, in this order (the order matters, see below):
//!
//! 1. **What participants hold prepared**: `RECOVER` on every transactional class (the class's
//!    servers share their durable state, so one worker answers for all of them, whichever broker
//!    started it).
//! 2. **Who lives**: a fresh read of the registry.
//! 3. **The decision log**. A logged decision whose participants did not all acknowledge is
//!    re-sent — `COMMIT` to every participant (to its worker when this process pinned it and it
//!    lives, otherwise to any worker of its class, which resolves the transaction from its durable
//!    prepared state) — when its coordinator instance is this process (and not committing it right
//!    now) or is not live. When all acknowledged, the session's record is settled (its transaction
//!    cleared, so the session carries on without it) and the decision forgotten.
//! 4. **Prepared transactions without a decision** are aborted — *presumed abort*: a coordinator
//!    logs nothing for an abort, so no decision means nobody was ever told it committed — when their
//!    coordinator (the nonce their ID starts with) is this process and is not committing them right
//!    now, or is gone, or is unknown (an ID from before IDs carried it).
//!
//! "Gone" is the registry's judgement ([`crate::cluster::Registry::is_gone`]): not live, and
//! either replaced by a newer instance of its broker or silent past its lease while this broker
//! could see renewals (not right after a store outage, when every lease looks expired until the
//! next heartbeats).
//!
//! ## Why a transaction is never both committed and aborted
//! A commit needs a logged decision; an abort here needs its absence. The danger is a decision
//! written just after this pass read the log. That decision's coordinator must then have been live
//! when (2) was read — (2) comes before (3), and a broker decides only while its own registry lease
//! holds and has not lapsed since the commit began (self-fencing, `cluster::registry`) — so the
//! transaction is skipped as a live broker's, not aborted. Conversely a transaction prepared by a
//! broker that started after (2) cannot be in (1): it registered before it began the transaction,
//! and (1) comes first. Re-sending `COMMIT` is harmless: a participant applies a prepared record
//! once and acknowledges an unknown transaction, so several brokers completing one decision at
//! once (a gone coordinator's, by recovery here and by a take-over in the engine) commit it once.
//! A late `ABORT` of a transaction that committed and was forgotten is as harmless: the
//! participant no longer knows it.

use super::Coordinator;
use crate::cluster::nonce_of_txn;
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
    /// Decisions and prepared transactions left to the live broker that coordinates them.
    pub left_to_live_brokers: usize,
    /// Transactional classes that could not be asked (their workers are down).
    pub classes_unreachable: usize,
}

impl Coordinator {
    /// One recovery pass. Errors only when the store cannot be read.
    pub async fn recover(self: &Arc<Self>) -> Result<RecoveryReport, StoreError> {
        let mut report = RecoveryReport::default();

        // 1. What the participants hold prepared.
        let mut prepared = Vec::new();
        let classes = self.classes.load_full();
        for class in classes.all() {
            let name = class.name();
            if !class.config().transactional {
                continue;
            }
            match class.recover().await {
                Ok(list) => prepared.push((name, class, list)),
                Err(e) => {
                    tracing::warn!(class = %name, error = %e, "cannot ask for prepared transactions");
                    report.classes_unreachable += 1;
                }
            }
        }
        // 2. Who lives, read after (1).
        self.registry.refresh().await?;
        // 3. The decision log, read after (2).
        let decisions = self.decisions.pending_decisions().await?;
        let decided: HashSet<String> = decisions.iter().map(|d| d.txn_id.clone()).collect();

        for decision in decisions {
            if self.is_in_flight(&decision.txn_id) {
                continue; // this process is completing it right now
            }
            let mine = decision.coordinator == self.instance.as_str();
            if !mine
                && (self.registry.instance_live(&decision.coordinator)
                    || !self.registry.is_gone(&decision.coordinator))
            {
                report.left_to_live_brokers += 1;
                continue;
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

        // 4. Prepared without a decision.
        for (name, class, txns) in prepared {
            for txn in txns {
                if decided.contains(&txn) || self.is_in_flight(&txn) {
                    continue;
                }
                let mine = nonce_of_txn(&txn) == Some(self.instance.nonce());
                let coordinator_live =
                    nonce_of_txn(&txn).is_some_and(|nonce| self.registry.nonce_live(nonce));
                // Another broker's: only once it is surely gone (not right after a store outage,
                // when every lease looks expired for a moment).
                if !mine && (coordinator_live || !self.registry.leases_trustworthy()) {
                    report.left_to_live_brokers += 1;
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
        crate::metrics::get().recovered(report.decisions_completed as u64);
        Ok(report)
    }

    /// The session whose transaction a completed decision committed carries on without it. False
    /// when the session could not be settled now (retried at the next pass).
    pub(super) async fn settle_session(&self, decision: &TxnDecision) -> bool {
        let taken = cookie_store::take_turn(
            &self.sessions,
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
            match turn.write_and_release(&record, Durability::Durable).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(txn = %decision.txn_id, error = %e, "cannot settle the session of a recovered transaction");
                    false
                }
            }
        } else {
            turn.release().await;
            true
        }
    }
}

/// Run [`Coordinator::recover`] every `interval`, and at once whenever a broker leaves the
/// registry, until `stop` turns true.
pub fn spawn_recovery(
    coordinator: Arc<Coordinator>,
    runtime: &tokio::runtime::Handle,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    runtime.spawn(async move {
        let registry = coordinator.registry().clone();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = registry.departed().notified() => {}
                _ = stop.changed() => return,
            }
            match coordinator.recover().await {
                Ok(report)
                    if report.decisions_completed
                        + report.decisions_pending
                        + report.presumed_aborted
                        + report.classes_unreachable
                        > 0 =>
                {
                    tracing::info!(?report, "transaction recovery pass")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "transaction recovery pass failed"),
            }
        }
    })
}
