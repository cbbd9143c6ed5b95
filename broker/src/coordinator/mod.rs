//! # The transaction coordinator
//!
//! Clients begin, commit and abort transactions from SOAP headers; the broker is their transaction
//! manager and the transactional server classes' workers are its participants (NonStop SOAP left
//! this to TMF). The session engine decides *when* (the order of processing of `spec/nonstop.md`);
//! this module knows *how*:
//!
//! - **identity**: a transaction's ID is `<nonce>-<uuid>`, the nonce being this broker process's
//!   instance nonce ([`crate::cluster::Instance`]), so that whoever finds the transaction prepared
//!   at a participant knows which broker coordinates it, and whether that broker still lives;
//! - **participants**: a worker that served a request under a transaction is pinned to it by its
//!   pool and recorded in the session as `"<worker>@<instance>"` — the instance tag names this broker
//!   process, so a worker named by a record from an earlier boot (or of another broker) is never
//!   mistaken for one of ours;
//! - **commit**: no participant → nothing to do; one → one-phase `COMMIT`; several → `PREPARE` all
//!   (concurrently), and only when every vote is yes and this broker's registry lease still holds
//!   (self-fencing, [`crate::cluster::registry`]), write the decision (with its participants,
//!   session and this instance as coordinator) durably to the store's decision log, then phase two: `COMMIT` each, retried in the
//!   background until every participant acknowledged, then forget the decision. A no, a lost
//!   participant or an unwritable decision aborts everywhere (presumed abort: no decision is logged
//!   for an abort);
//! - **abort**: `ABORT` each participant, best effort (a participant we cannot reach either lost the
//!   work with its process or holds it prepared, and recovery aborts what has no decision);
//! - **recovery** (`recovery`): at start and periodically, re-send logged decisions and abort what
//!   participants hold prepared without a decision — of this broker, or of brokers that are gone,
//!   never of a live one;
//! - **take-over** ([`Coordinator::complete`]): a session whose transaction a gone broker held is
//!   settled by the broker that next serves it: committed when a decision was logged, else aborted.
//!
//! Two test hooks stop a commit at its most delicate points so that crash tests can `kill -9` the
//! broker there: `BROKER_FAILPOINTS=before-decision` (every vote is yes, nothing logged yet) and
//! `after-decision` (logged, phase two not begun). The broker logs `failpoint <name> reached` and
//! waits forever.

mod recovery;

pub use recovery::{spawn_recovery, RecoveryReport};

use crate::cluster::{FenceError, Instance, Registry};
use adapters::{AdapterError, ServerClass, Vote, WorkerId};
use cookie_store::{
    now_ms, DecisionLog, Participant, SessionStore, StoreError, TransactionState, TxnDecision,
};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often phase two is retried for a participant that did not acknowledge, at first; doubles up
/// to [`PHASE_TWO_RETRY_MAX`].
const PHASE_TWO_RETRY: Duration = Duration::from_millis(200);
const PHASE_TWO_RETRY_MAX: Duration = Duration::from_secs(10);

/// The pauses of phase-two retries: doubling from [`PHASE_TWO_RETRY`] to [`PHASE_TWO_RETRY_MAX`],
/// each drawn between half and the whole of that value, so that the retries of many transactions
/// cut off by one participant's restart do not all arrive in the same instant. backon's jitter adds
/// 0–100 % to its base, hence the halved bounds: every pause stays within the constants.
fn retry_pauses() -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(PHASE_TWO_RETRY / 2)
        .with_max_delay(PHASE_TWO_RETRY_MAX / 2)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Why a commit did not happen. In every case the transaction has been aborted everywhere it could
/// be (what could not be reached is aborted by recovery), except [`CommitError::InDoubt`].
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// A participant voted no.
    #[error("{class} voted no: {reason}")]
    VotedNo { class: String, reason: String },
    /// A participant's worker is gone, and the transaction's uncommitted work with it.
    #[error("{class} lost the process that held the transaction's work ({worker})")]
    ParticipantLost { class: String, worker: String },
    /// A participant could not be asked to prepare (timeout, queue full, ...).
    #[error("{class} could not prepare: {source}")]
    Prepare { class: String, source: AdapterError },
    /// The decision could not be made durable, so the transaction was aborted.
    #[error("the commit decision could not be written: {0}")]
    Store(StoreError),
    /// This broker may not decide (its registry lease lapsed or is about to), so the transaction
    /// was aborted.
    #[error("{0}")]
    Fenced(FenceError),
    /// The transaction was already aborted because the broker that held it stopped.
    #[error("the broker holding the transaction stopped")]
    Lost,
    /// The single participant failed while committing (one-phase): whether it applied the work is
    /// unknown.
    #[error("{class} failed during a one-phase commit; the outcome is unknown: {source}")]
    InDoubt { class: String, source: AdapterError },
}

/// A successful commit, to hand back to [`Coordinator::settled`] once the session's record no
/// longer names the transaction.
#[must_use = "hand it to Coordinator::settled once the session record is written"]
#[derive(Debug)]
pub struct Committed {
    /// The logged decision to forget, when phase two completed inline.
    decision: Option<String>,
}

impl Committed {
    /// A logged decision whose phase two completed (a take-over finished it): forget it once the
    /// session's record no longer names the transaction.
    pub fn logged(txn_id: &str) -> Committed {
        Committed {
            decision: Some(txn_id.to_string()),
        }
    }
}

/// The transaction coordinator of one broker process.
pub struct Coordinator {
    /// Where decisions wait for phase two to finish.
    decisions: Arc<dyn DecisionLog>,
    /// For settling the session of a transaction recovery finished.
    sessions: Arc<dyn SessionStore>,
    /// The server classes, by name: the routing table's (a reload swaps it; a removed class stays
    /// there while it holds a transaction).
    classes: Arc<crate::router::Roster>,
    /// This broker process: tags the workers it pinned and prefixes the transactions it begins.
    instance: Instance,
    /// Who lives; whether this broker may still decide.
    registry: Arc<Registry>,
    /// Transactions this process is committing right now: recovery leaves them alone.
    in_flight: Mutex<HashSet<String>>,
    /// Where phase-two retries run.
    runtime: tokio::runtime::Handle,
    failpoints: Vec<String>,
}

impl Coordinator {
    pub fn new(
        decisions: Arc<dyn DecisionLog>,
        sessions: Arc<dyn SessionStore>,
        classes: Arc<crate::router::Roster>,
        registry: Arc<Registry>,
        runtime: tokio::runtime::Handle,
    ) -> Coordinator {
        Coordinator {
            decisions,
            sessions,
            classes,
            instance: registry.instance().clone(),
            registry,
            in_flight: Mutex::new(HashSet::new()),
            runtime,
            failpoints: std::env::var("BROKER_FAILPOINTS")
                .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
                .unwrap_or_default(),
        }
    }

    /// A new transaction, deadline included.
    pub fn begin(&self, timeout: Duration) -> TransactionState {
        let now = now_ms();
        TransactionState {
            id: self.new_txn_id(),
            phase: cookie_store::TransactionPhase::Active,
            participants: Vec::new(),
            started_ms: now,
            deadline_ms: now.saturating_add(timeout.as_millis() as u64),
        }
    }

    /// A new transaction ID: `<instance nonce>-<uuid>`, hex and `-` only (the sample ledger uses
    /// it in file names).
    pub fn new_txn_id(&self) -> String {
        format!(
            "{}-{}",
            self.instance.nonce(),
            uuid::Uuid::new_v4().simple()
        )
    }

    /// Whether this process began (or adopted) the transaction with this ID.
    pub fn owns_txn_id(&self, txn_id: &str) -> bool {
        crate::cluster::nonce_of_txn(txn_id) == Some(self.instance.nonce())
    }

    /// The logged commit decision of transaction `txn_id`, if one waits for phase two. The
    /// decision log is the coordinator's: whoever takes a transaction over asks here.
    pub async fn logged_commit(&self, txn_id: &str) -> Result<Option<TxnDecision>, StoreError> {
        Ok(self
            .decisions
            .pending_decisions()
            .await?
            .into_iter()
            .find(|d| d.txn_id == txn_id && d.commit))
    }

    /// This broker process.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// The registry this coordinator consults.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// How a worker of this process is recorded in a session (as a participant, or as the worker
    /// holding its dialog): `<worker>@<instance>`.
    pub fn tag(&self, worker: &WorkerId) -> String {
        format!("{worker}@{}", self.instance)
    }

    /// How a worker of this process is recorded as a participant.
    pub fn participant(&self, class: &str, worker: &WorkerId) -> Participant {
        Participant {
            server_class: class.to_string(),
            worker: self.tag(worker),
        }
    }

    /// The worker a recorded participant names, if it was pinned by this process (a worker of an
    /// earlier boot or of another broker is not ours to address).
    pub fn local_worker(&self, participant: &Participant) -> Option<WorkerId> {
        self.untag(&participant.worker)
    }

    /// The worker a tag written by [`Coordinator::tag`] names, if the tag is this process's.
    pub fn untag(&self, tagged: &str) -> Option<WorkerId> {
        let (worker, instance) = tagged.rsplit_once('@')?;
        (instance == self.instance.as_str()).then(|| worker.to_string())
    }

    /// This broker's ID (recorded as the holder of the dialogs it opens).
    pub fn broker_id(&self) -> &str {
        self.instance.broker_id()
    }

    /// The participant of `class` in `txn`, if any.
    pub fn participant_of<'t>(
        &self,
        txn: &'t TransactionState,
        class: &str,
    ) -> Option<&'t Participant> {
        txn.participants.iter().find(|p| p.server_class == class)
    }

    /// Commit `txn` of `session`. On error the transaction is aborted (see [`CommitError`]).
    ///
    /// A two-phase commit leaves its decision in the log: the caller clears the transaction from
    /// the session's record durably and then hands the [`Committed`] to [`Coordinator::settled`],
    /// which forgets the decision. In that order a crash in between is harmless (recovery re-sends
    /// the idempotent commits and clears the record itself), while the other order could leave a
    /// record naming a committed transaction that nobody remembers.
    pub async fn commit(
        self: &Arc<Self>,
        session: &str,
        txn: &TransactionState,
    ) -> Result<Committed, CommitError> {
        if crate::cluster::ownership::is_tombstone(txn) {
            return Err(CommitError::Lost);
        }
        let committed = self.commit_participants(session, txn).await;
        if committed.is_ok() {
            crate::metrics::get().transaction(true);
        }
        committed
    }

    async fn commit_participants(
        self: &Arc<Self>,
        session: &str,
        txn: &TransactionState,
    ) -> Result<Committed, CommitError> {
        match txn.participants.as_slice() {
            [] => Ok(Committed { decision: None }),
            [only] => self
                .commit_one_phase(txn, only)
                .await
                .map(|()| Committed { decision: None }),
            _ => {
                self.enter(&txn.id);
                let result = self.commit_two_phase(session, txn).await;
                if result.is_err() {
                    self.leave(&txn.id);
                }
                result
            }
        }
    }

    /// The session record no longer names the committed transaction: forget its decision.
    pub async fn settled(&self, committed: Committed) {
        if let Some(txn) = committed.decision {
            self.forget(&txn).await;
        }
    }

    async fn commit_one_phase(
        &self,
        txn: &TransactionState,
        p: &Participant,
    ) -> Result<(), CommitError> {
        let class = self.class(&p.server_class);
        let worker = self.local_worker(p);
        // A participant that is gone took the uncommitted work with it: committing on another
        // worker would acknowledge nothing, so this is an abort.
        let Some((class, worker)) = class.zip(worker).filter(|(c, w)| c.worker_alive(w)) else {
            self.abort(txn).await;
            return Err(CommitError::ParticipantLost {
                class: p.server_class.clone(),
                worker: p.worker.clone(),
            });
        };
        match class.commit(Some(&worker), &txn.id).await {
            Ok(()) => Ok(()),
            Err(AdapterError::PinnedWorkerGone { .. }) => {
                self.abort(txn).await;
                Err(CommitError::ParticipantLost {
                    class: p.server_class.clone(),
                    worker: p.worker.clone(),
                })
            }
            Err(source) => Err(CommitError::InDoubt {
                class: p.server_class.clone(),
                source,
            }),
        }
    }

    async fn commit_two_phase(
        self: &Arc<Self>,
        session: &str,
        txn: &TransactionState,
    ) -> Result<Committed, CommitError> {
        // Taken before anyone prepares: a lapse of this broker's lease from now on means another
        // broker may presume the transaction aborted, so it must not be decided here.
        let fence = self.registry.fence();
        // Phase one: every participant prepares, concurrently.
        let votes = futures_util::future::join_all(txn.participants.iter().map(|p| async move {
            let outcome = match (self.class(&p.server_class), self.local_worker(p)) {
                (Some(class), Some(worker)) => class.prepare(&worker, &txn.id).await,
                _ => Err(AdapterError::PinnedWorkerGone {
                    class: p.server_class.clone(),
                    worker: p.worker.clone(),
                }),
            };
            (p, outcome)
        }))
        .await;
        let mut refusal = None;
        for (p, outcome) in votes {
            let error = match outcome {
                Ok(Vote::Yes) => continue,
                Ok(Vote::No(reason)) => CommitError::VotedNo {
                    class: p.server_class.clone(),
                    reason,
                },
                Err(AdapterError::PinnedWorkerGone { .. }) => CommitError::ParticipantLost {
                    class: p.server_class.clone(),
                    worker: p.worker.clone(),
                },
                Err(source) => CommitError::Prepare {
                    class: p.server_class.clone(),
                    source,
                },
            };
            refusal.get_or_insert(error);
        }
        if let Some(error) = refusal {
            tracing::info!(txn = %txn.id, reason = %error, "transaction aborted at prepare");
            self.abort(txn).await;
            return Err(error);
        }
        self.failpoint("before-decision").await;

        // Self-fencing: never decide once other brokers may have taken this one for dead.
        if let Err(fenced) = self.registry.may_decide(&fence) {
            tracing::error!(txn = %txn.id, reason = %fenced, "not writing a commit decision: aborting");
            self.abort(txn).await;
            return Err(CommitError::Fenced(fenced));
        }
        // The decision, durable before anyone is told to commit.
        let decision = TxnDecision {
            txn_id: txn.id.clone(),
            session_id: session.to_string(),
            commit: true,
            participants: txn.participants.clone(),
            coordinator: self.instance.as_str().to_string(),
            decided_ms: now_ms(),
        };
        if let Err(e) = self.decisions.log_decision(&decision).await {
            tracing::error!(txn = %txn.id, error = %e, "cannot log a commit decision: aborting");
            self.abort(txn).await;
            return Err(CommitError::Store(e));
        }
        self.failpoint("after-decision").await;

        // Phase two. The first round runs before the client is answered, so that what it reads next
        // includes the commit; whoever did not acknowledge is retried in the background.
        let pending = self
            .phase_two_round(&decision, decision.participants.clone())
            .await;
        if pending.is_empty() {
            Ok(Committed {
                decision: Some(decision.txn_id),
            })
        } else {
            self.retry_phase_two(decision, pending);
            Ok(Committed { decision: None })
        }
    }

    /// Complete a logged decision of a broker that is gone (take-over): phase two to every
    /// participant (any worker of its class: the gone broker's workers went with it). Returns
    /// whether every participant acknowledged; if not, recovery finishes it.
    pub async fn complete(&self, decision: &TxnDecision) -> bool {
        let pending = self
            .phase_two_round(decision, decision.participants.clone())
            .await;
        pending.is_empty()
    }

    /// One round of phase two over `pending`; returns those that did not acknowledge.
    async fn phase_two_round(
        &self,
        decision: &TxnDecision,
        pending: Vec<Participant>,
    ) -> Vec<Participant> {
        let acks = futures_util::future::join_all(pending.into_iter().map(|p| async move {
            let Some(class) = self.class(&p.server_class) else {
                tracing::error!(txn = %decision.txn_id, class = %p.server_class, "participant class no longer configured");
                return Some(p);
            };
            let worker = self.local_worker(&p);
            let result = if decision.commit {
                class.commit(worker.as_ref(), &decision.txn_id).await
            } else {
                class.abort(worker.as_ref(), &decision.txn_id).await
            };
            match result {
                Ok(()) => None,
                Err(e) => {
                    tracing::warn!(txn = %decision.txn_id, class = %p.server_class, error = %e, "phase two not acknowledged; will retry");
                    Some(p)
                }
            }
        }))
        .await;
        acks.into_iter().flatten().collect()
    }

    fn retry_phase_two(self: &Arc<Self>, decision: TxnDecision, pending: Vec<Participant>) {
        let me = self.clone();
        self.runtime.spawn(async move {
            let mut pending = pending;
            let mut pauses = retry_pauses();
            while !pending.is_empty() {
                tokio::time::sleep(pauses.next().unwrap_or(PHASE_TWO_RETRY_MAX)).await;
                pending = me.phase_two_round(&decision, pending).await;
            }
            tracing::info!(txn = %decision.txn_id, "phase two completed after retries");
            // Forget only once the session no longer names the transaction (see `commit`).
            while !me.settle_session(&decision).await {
                tokio::time::sleep(PHASE_TWO_RETRY_MAX).await;
            }
            me.forget(&decision.txn_id).await;
        });
    }

    async fn forget(&self, txn: &str) {
        if let Err(e) = self.decisions.forget_decision(txn).await {
            tracing::warn!(txn = %txn, error = %e, "cannot forget a completed decision; recovery will");
        }
        self.leave(txn);
    }

    /// Abort `txn` on every participant, best effort: what cannot be reached is logged and left to
    /// recovery (presumed abort).
    pub async fn abort(&self, txn: &TransactionState) {
        crate::metrics::get().transaction(false);
        // A participant this process did not pin (another broker's, gone: the engine takes work
        // over only from gone brokers) is aborted on any worker of its class, which resolves it
        // from the class's durable state.
        futures_util::future::join_all(txn.participants.iter().map(|p| async move {
            let Some(class) = self.class(&p.server_class) else {
                return;
            };
            let worker = self.local_worker(p);
            if let Err(e) = class.abort(worker.as_ref(), &txn.id).await {
                tracing::warn!(txn = %txn.id, class = %p.server_class, error = %e, "abort not acknowledged; recovery will abort it if it was prepared");
            }
        }))
        .await;
    }

    fn class(&self, name: &str) -> Option<Arc<dyn ServerClass>> {
        self.classes.load().class(name).cloned()
    }

    fn enter(&self, txn: &str) {
        if let Ok(mut set) = self.in_flight.lock() {
            set.insert(txn.to_string());
        }
    }

    fn leave(&self, txn: &str) {
        if let Ok(mut set) = self.in_flight.lock() {
            set.remove(txn);
        }
    }

    fn is_in_flight(&self, txn: &str) -> bool {
        self.in_flight
            .lock()
            .map(|set| set.contains(txn))
            .unwrap_or(false)
    }

    async fn failpoint(&self, name: &str) {
        if self.failpoints.iter().any(|f| f == name) {
            tracing::warn!(
                failpoint = name,
                "failpoint {name} reached: waiting forever"
            );
            std::future::pending::<()>().await;
        }
    }
}
