//! The decision log of two-phase commit.
//!
//! A coordinator writes its commit (or abort) decision here, durably, before phase two; the
//! entry stays until every participant acknowledged it. After a crash, recovery reads what is
//! left and finishes phase two; a prepared transaction with no logged decision is aborted
//! (presumed abort).

use crate::{Participant, StoreError};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

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

/// Where commit decisions wait until phase two has reached every participant.
#[async_trait]
pub trait DecisionLog: Send + Sync + 'static {
    /// Write a commit decision durably (before phase two).
    async fn log_decision(&self, decision: &TxnDecision) -> Result<(), StoreError>;

    /// Remove a decision once every participant acknowledged it. Need not be durable: a decision
    /// that reappears after a crash is re-sent (idempotently) and forgotten again.
    async fn forget_decision(&self, txn_id: &str) -> Result<(), StoreError>;

    /// Decisions still waiting for acknowledgements (for recovery).
    async fn pending_decisions(&self) -> Result<Vec<TxnDecision>, StoreError>;
}
