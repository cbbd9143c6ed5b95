//! # The transaction coordinator
//!
//! Clients begin, commit and abort transactions from SOAP headers; the broker is their transaction
//! manager and the transactional server classes' workers are its participants (NonStop SOAP left
//! this to TMF). The session engine decides *when* (the order of processing of `spec/nonstop.md`);
//! this module knows *how*:
//!
//! - **participants**: a worker that served a request under a transaction is pinned to it by its
//!   pool and recorded in the session as `"<worker>@<instance>"` — the instance tag names this broker
//!   process, so a worker named by a record from an earlier boot is never mistaken for a live one;
//! - **commit**: no participant → nothing to do; one → one-phase `COMMIT`; several → `PREPARE` all
//!   (concurrently), and only when every vote is yes, write the decision (with its participants and
//!   session) durably to the store's decision log, then phase two: `COMMIT` each, retried in the
//!   background until every participant acknowledged, then forget the decision. A no, a lost
//!   participant or an unwritable decision aborts everywhere (presumed abort: no decision is logged
//!   for an abort);
//! - **abort**: `ABORT` each participant, best effort (a participant we cannot reach either lost the
//!   work with its process or holds it prepared, and recovery aborts what has no decision);
//! - **recovery** ([`recovery`]): at start and periodically, re-send logged decisions and abort what
//!   participants hold prepared without a decision.
//!
//! Two test hooks stop a commit at its most delicate points so that crash tests can `kill -9` the
//! broker there: `BROKER_FAILPOINTS=before-decision` (every vote is yes, nothing logged yet) and
//! `after-decision` (logged, phase two not begun). The broker logs `failpoint <name> reached` and
//! waits forever.

mod recovery;

pub use recovery::{spawn_recovery, RecoveryReport};

use adapters::{AdapterError, ServerClass, Vote, WorkerId};
use cookie_store::{now_ms, Participant, Store, StoreError, TransactionState, TxnDecision};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often phase two is retried for a participant that did not acknowledge, at first; doubles up
/// to [`PHASE_TWO_RETRY_MAX`].
const PHASE_TWO_RETRY: Duration = Duration::from_millis(200);
const PHASE_TWO_RETRY_MAX: Duration = Duration::from_secs(10);

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

/// The transaction coordinator of one broker process.
pub struct Coordinator {
    store: Arc<dyn Store>,
    classes: HashMap<String, Arc<dyn ServerClass>>,
    broker_id: String,
    /// Tags the workers this process pinned: `<broker id>/<random>`, new at every start.
    instance: String,
    /// Transactions this process is committing right now: recovery leaves them alone.
    in_flight: Mutex<HashSet<String>>,
    /// Where phase-two retries run.
    runtime: tokio::runtime::Handle,
    failpoints: Vec<String>,
}

impl Coordinator {
    pub fn new(
        store: Arc<dyn Store>,
        classes: HashMap<String, Arc<dyn ServerClass>>,
        broker_id: &str,
        runtime: tokio::runtime::Handle,
    ) -> Coordinator {
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        Coordinator {
            store,
            classes,
            broker_id: broker_id.to_string(),
            instance: format!("{broker_id}/{}", &nonce[..12]),
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
            id: uuid::Uuid::new_v4().simple().to_string(),
            phase: cookie_store::TransactionPhase::Active,
            participants: Vec::new(),
            started_ms: now,
            deadline_ms: now.saturating_add(timeout.as_millis() as u64),
        }
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
        (instance == self.instance).then(|| worker.to_string())
    }

    /// This broker's ID (recorded as the holder of the dialogs it opens).
    pub fn broker_id(&self) -> &str {
        &self.broker_id
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

        // The decision, durable before anyone is told to commit.
        let decision = TxnDecision {
            txn_id: txn.id.clone(),
            session_id: session.to_string(),
            commit: true,
            participants: txn.participants.clone(),
            coordinator: self.broker_id.clone(),
            decided_ms: now_ms(),
        };
        if let Err(e) = self.store.log_decision(&decision).await {
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
            let mut delay = PHASE_TWO_RETRY;
            while !pending.is_empty() {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(PHASE_TWO_RETRY_MAX);
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
        if let Err(e) = self.store.forget_decision(txn).await {
            tracing::warn!(txn = %txn, error = %e, "cannot forget a completed decision; recovery will");
        }
        self.leave(txn);
    }

    /// Abort `txn` on every participant, best effort: what cannot be reached is logged and left to
    /// recovery (presumed abort).
    pub async fn abort(&self, txn: &TransactionState) {
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

    fn class(&self, name: &str) -> Option<&Arc<dyn ServerClass>> {
        self.classes.get(name)
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
