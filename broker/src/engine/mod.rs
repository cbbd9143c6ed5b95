//! # The session engine: dialect-neutral sessions
//!
//! Dialects translate their headers into a [`Request`] (begin, continue or end a session; call a
//! service) and translate the [`Response`] back into their own headers and faults. The engine knows no
//! dialect: it owns the order of processing that every dialect shares, the store and the routing.
//!
//! One request of a session, in order (`spec/nonstop.md`, "Order of processing one request"):
//! 1. resolve the session: begin a new one, or take the existing one's *turn* in the store (requests
//!    of one session run one at a time, in arrival order; other sessions never wait) and check it is
//!    neither unknown, foreign to this endpoint, nor expired (lazy expiry);
//! 2. transaction commands, before the body: commit or abort the current transaction, then begin
//!    a new one (the [`Coordinator`] does the committing); `AbortSubsession` (dialogs are a later
//!    issue: answered with a clear error today);
//! 3. the body: route it to its server class and call it inside the session, under the session's
//!    transaction when the class is transactional (its worker becomes a participant);
//! 4. end the session (commit what is open, delete the record, durably) or write the record back
//!    and give the turn back — durably when a transaction began, committed or aborted, lazily when
//!    only the last-access time changed (a new transaction participant is written durably: see
//!    `boundaries`).
//!
//! The cost of a continue request in store calls is therefore two: `take_turn` (which returns the
//! record) and `write_and_release`. A commit adds the coordinator's work: nothing with one
//! participant; with several, one durable decision write before phase two and its removal after.
//!
//! A backend that fails under a transaction (its worker died, timed out or reported a system
//! error) aborts the transaction and ends the session, as NonStop SOAP did after a TMF abort.
//!
//! ## Several brokers (`crate::cluster`)
//! Right after the turn is taken (step 1), the engine asks who holds the session's work — the
//! broker instances its record's tags name (the dialog's worker, the transaction's participants):
//! - **nobody else**: the request runs here. A transaction that has no participant yet but was
//!   begun by another instance is *adopted* (given an ID with this instance's nonce), so that
//!   recovery always knows its coordinator from its ID;
//! - **another live broker** (by the registry snapshot): a request that touches nothing of that
//!   work (a context-free call outside the transaction, an empty body) runs here all the same;
//!   any other gives the turn back and is *forwarded* there through the [`Peer`]: the request
//!   as the dialect read it, and the holder's answer comes back as a [`Response`] that this
//!   broker's dialect renders. If the holder cannot be reached (the request was not delivered),
//!   the registry is read again: a holder gone by its lease is taken over by running the request
//!   here after all; a holder still within its lease gets the client a retriable fault. A failure
//!   after the request may have been delivered is never retried (it may have run): the client
//!   hears that the holder stopped during the request, and decides. A request that was itself
//!   forwarded is never forwarded again: it gets a retriable fault instead (the session moved
//!   meanwhile). Without a cluster secret nothing is forwarded: a clear fault says so;
//! - **a broker that is gone** (confirmed by a fresh registry read: restarted as a new instance,
//!   or silent past its lease while this broker could see renewals; a broker that is only *not
//!   live* right after a store outage gets the client a retriable fault): its work is *taken over*. The
//!   dialog is lost: it stays in the record until a request touches its class, which gets -356 (the
//!   session lives on). The transaction is committed when the decision log holds its commit
//!   decision (phase two to any worker of each participant's class; the record then no longer
//!   names it); otherwise it is aborted (`ABORT` to any worker of each participant's class, which
//!   resolves durable prepared state: presumed abort) and left in the record as a *tombstone*.
//!
//! **The -1021 rule.** A tombstone is reported once, to the first request that *names the
//! transaction* — a `CurrentTransactionCommand` (End or Abort), `BeginNewTransaction`, a session
//! End (which would commit it), a call of a transactional or one-transaction-per-dialog class, or
//! `AbortSubsession` of a one-transaction dialog — before anything else of that request happens:
//! it gets -1021 "the broker holding it stopped", the tombstone is cleared, and the session lives
//! on (an End ends it, as after any failed commit at End). Requests that do not name the
//! transaction (context-free calls outside it, a new dialog) run normally and leave the tombstone
//! for later, so a client never hears "no transaction open" (-1013/-1014) for a transaction it
//! was never told had ended.
//!
//! Lazy expiry and the sweeper act only on sessions held here or by a gone broker (after the
//! take-over, so a logged commit is never aborted); a session another live broker holds is its
//! holder's to expire: the request is forwarded there, and the sweeper asks the holder
//! (`POST /_cluster/expire`) instead of aborting work it cannot reach.

mod admin;
mod admission;
mod corrections;
mod failure;
mod holder;
mod request;
mod sweeper;
#[cfg(test)]
mod tests;

pub use admin::AdminEnd;
pub use failure::{Failure, FailureKind, RetryCause, Rule, UnmarshalProblem};
pub use request::{
    DialogTransaction, EngineError, PeerExpiry, Reply, Request, Response, ServiceCall,
    SessionDirective, SessionInfo, TransactionDirective, TxnCommand,
};
pub use sweeper::spawn_sweeper;

use crate::cluster::ownership::is_tombstone;
use crate::cluster::{Peer, PeerError, Registry};
use crate::config::EndpointConfig;
use crate::coordinator::{CommitError, Committed, Coordinator};
use crate::record_service::RecordReply;
use crate::router::{Roster, Route};
use adapters::{AdapterError, BackendRequest, DialogMarker, ReplyStatus, WorkerId};
use cookie_store::{
    now_ms, take_turn, BrokerInfo, Durability, HeldTurn, SessionRecord, SessionStore, StoreError,
    SubsessionState,
};
use corrections::{Before, Correction};
use request::Answer;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument;

/// The dialect-neutral session engine shared by every endpoint.
pub struct SessionEngine {
    store: Arc<dyn SessionStore>,
    /// The routing table now (a reload swaps it).
    router: Arc<Roster>,
    coordinator: Arc<Coordinator>,
    /// Session-limit bookkeeping of this process's Begins in flight (see `admission`).
    admission: admission::Gates,
    /// How long a request may hold a session's turn before another request may take it over. Longer
    /// than the longest backend `request_timeout`, so that only a dead broker loses its turn.
    turn_lease: Duration,
    /// Who lives (the coordinator's registry).
    registry: Arc<Registry>,
    /// The other brokers; `None` without a cluster secret (nothing is forwarded).
    peer: Option<Arc<dyn Peer>>,
    /// What stored records still name but this process ended, because writing them back failed
    /// (see [`SessionEngine::unrecorded`]); applied at the session's next request here.
    corrections: Mutex<HashMap<String, Correction>>,
    /// Draining (an operator's `POST /drain`): no new session, dialog or transaction here; what
    /// runs here finishes (`crate::admin`).
    draining: std::sync::atomic::AtomicBool,
}

/// A session a request is working on: its turn is held until the record is written back (or the
/// session deleted, or the turn released: the guard gives it back even on a path that forgets).
struct Held {
    turn: HeldTurn,
    record: SessionRecord,
    /// Something a client is told about changed (a transaction began, committed or aborted): the
    /// write-back must reach the disk before the reply.
    durable: bool,
    /// Commits whose decisions may be forgotten once the record is written.
    committed: Vec<Committed>,
    /// The transaction the server reported open on the session's dialog (for the reply only).
    server_transaction: Option<String>,
    /// The gone broker whose transaction this request just aborted (named in its -1021).
    taken_over: Option<String>,
    /// The record's transaction and dialog as the store has them.
    before: Before,
}

impl Held {
    fn new(turn: HeldTurn, record: SessionRecord) -> Held {
        let before = Before {
            transaction: record
                .transaction
                .as_ref()
                .map(|t| (t.id.clone(), t.participants.len())),
            dialog: record.subsession.as_ref().map(|s| s.worker.clone()),
        };
        Held {
            turn,
            record,
            durable: false,
            committed: Vec::new(),
            server_transaction: None,
            taken_over: None,
            before,
        }
    }

    fn info(&self) -> SessionInfo {
        SessionInfo::of(&self.record)
    }

    /// Give the turn back without writing anything.
    async fn release(self) {
        self.turn.release().await
    }
}

/// Where a continued session's request went: done here, or held by another live broker (the
/// turn already given back) to which it is to be forwarded.
enum Here {
    Done(Answer),
    HeldBy(BrokerInfo),
}

/// The client's credentials for a class that binds as the client, and for no other.
/// What the class is sent: the service element as the dialect gave it, or a record service's
/// request record (every value checked: a refusal sends nothing).
fn request_payload(route: &Route, call: &ServiceCall) -> Result<bytes::Bytes, EngineError> {
    match &route.record {
        None => Ok(call.payload.clone()),
        Some(records) => {
            records
                .request_record(&call.payload)
                .map_err(|refused| EngineError::RecordRefused {
                    service: call.service.clone(),
                    refused: Box::new(refused),
                })
        }
    }
}

fn credential_for(route: &Route, call: &ServiceCall) -> Option<adapters::Credential> {
    if route.class.config().binds_as_client() {
        call.credential.clone()
    } else {
        None
    }
}

/// A call inside a session that got its reply.
struct Called {
    reply: Reply,
    /// The transaction the server reported open on the session's dialog after it.
    server_transaction: Option<String>,
}

impl From<Reply> for Called {
    fn from(reply: Reply) -> Called {
        Called {
            reply,
            server_transaction: None,
        }
    }
}

/// How a call inside a session failed, and whether the failure ends the session (a backend that
/// fails under a transaction aborts it and ends the session, NonStop's implicit action 2).
struct CallFailure {
    error: EngineError,
    ends_session: bool,
}

impl From<EngineError> for CallFailure {
    fn from(error: EngineError) -> CallFailure {
        CallFailure {
            error,
            ends_session: false,
        }
    }
}

impl SessionEngine {
    pub fn new(
        store: Arc<dyn SessionStore>,
        router: Arc<Roster>,
        coordinator: Arc<Coordinator>,
        turn_lease: Duration,
        peer: Option<Arc<dyn Peer>>,
    ) -> SessionEngine {
        SessionEngine {
            store,
            router,
            registry: coordinator.registry().clone(),
            coordinator,
            admission: admission::Gates::default(),
            turn_lease,
            peer,
            corrections: Mutex::new(HashMap::new()),
            draining: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Stop taking new sessions, dialogs and transactions (for good: a draining broker exits).
    pub fn drain(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether [`SessionEngine::drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Refused while draining: something new that would tie a session to this broker. A session
    /// that already holds work here (a dialog, a transaction: its requests are forwarded here)
    /// may go on, or it could never finish what the drain waits for.
    fn refuse_if_draining(&self, record: Option<&SessionRecord>) -> Result<(), EngineError> {
        let holds_work_here =
            record.is_some_and(|r| r.subsession.is_some() || r.transaction.is_some());
        if self.is_draining() && !holds_work_here {
            Err(EngineError::Draining)
        } else {
            Ok(())
        }
    }

    /// The registry (who lives).
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn turn_lease(&self) -> Duration {
        self.turn_lease
    }

    /// Route a service name on an endpoint, in the routing table of now.
    pub fn route(&self, endpoint: &str, service: &str) -> Option<Route> {
        self.router.load().route(endpoint, service).cloned()
    }

    /// [`SessionEngine::route`] for a call in session `record`: a class a reload removed still
    /// serves the session's dialog and transaction on it until they are done.
    fn session_route(
        &self,
        endpoint: &str,
        service: &str,
        record: &SessionRecord,
    ) -> Option<Route> {
        self.router
            .load()
            .route_for_session(endpoint, service, |class| holds_work_on(record, class))
            .cloned()
    }

    /// Process one request of `endpoint`, here or (forwarded) at the live broker that holds its
    /// session's work; the answer either way.
    pub async fn handle(&self, endpoint: &EndpointConfig, request: &Request) -> Response {
        match &request.session {
            SessionDirective::None => self.sessionless(endpoint, request).await.into_response(),
            SessionDirective::Begin => self.begin(endpoint, request).await.into_response(),
            SessionDirective::Continue(id) => self.continue_session(endpoint, id, request).await,
        }
    }

    async fn sessionless(&self, endpoint: &EndpointConfig, request: &Request) -> Answer {
        let result = match &request.call {
            None => Ok(Reply::Empty),
            Some(call) => match self.route_call(endpoint, call) {
                Err(e) => Err(e),
                Ok(route) if !route.class.config().serves_sessionless() => {
                    Err(EngineError::SessionRequired(call.service.clone()))
                }
                Ok(route) => {
                    self.call_sessionless(&route, call, request.trace.as_ref())
                        .await
                }
            },
        };
        Answer::sessionless(result)
    }

    async fn begin(&self, endpoint: &EndpointConfig, request: &Request) -> Answer {
        if let Err(e) = self.refuse_if_draining(None) {
            return Answer::sessionless(Err(e));
        }
        // Held until the record is created (or the Begin fails): see admission's "The race".
        let _admitted =
            match admission::admit(&self.admission, self.store.as_ref(), endpoint, request).await {
                Ok(admitted) => admitted,
                Err(EngineError::Store(e)) => return Answer::sessionless(Err(not_created(e))),
                Err(e) => return Answer::sessionless(Err(e)),
            };
        let id = new_session_id();
        let now = now_ms();
        let mut record = SessionRecord {
            id: id.clone(),
            endpoint: endpoint.path.clone(),
            dialect: request.dialect.to_string(),
            principal: request.principal.clone(),
            client_ip: request.client_ip,
            created_ms: now,
            last_access_ms: now,
            // The client may ask for less than the endpoint's timeout, never more (sqlSession).
            idle_timeout_ms: request
                .idle_timeout
                .map_or(endpoint.session_timeout, |t| {
                    t.min(endpoint.session_timeout)
                })
                .as_millis() as u64,
            transaction: None,
            subsession: None,
            dialect_state: request.dialect_state.clone(),
            expiry_indexed_ms: 0,
        };
        if request.transaction.begin_new {
            if let Err(e) = self.check_transactional_body(endpoint, request) {
                return Answer::sessionless(Err(e));
            }
            record.transaction = Some(self.coordinator.begin(endpoint.transaction_timeout));
        }
        // The body runs first, inside the new session; the record is stored (durably) only when the
        // body succeeded, so a failed Begin leaves nothing behind and tells the client no ID.
        let body = match &request.call {
            None => Ok(Called::from(Reply::Empty)),
            Some(call) => match self.route_call(endpoint, call) {
                Err(e) => Err(e),
                Ok(route) => self
                    .call_in_session(&mut record, &route, call, request.trace.as_ref())
                    .await
                    .map_err(|f| f.error),
            },
        };
        let (body, server_transaction) = match body {
            Ok(Called {
                reply,
                server_transaction,
            }) => (Ok(reply), server_transaction),
            Err(e) => (Err(e), None),
        };
        let body = match body {
            Ok(body) => body,
            Err(e) => {
                self.abort_dialog(&mut record).await;
                if let Some(txn) = record.transaction.take() {
                    self.coordinator.abort(&txn).await;
                }
                return Answer::sessionless(Err(e));
            }
        };
        match self.store.create(&record, Durability::Durable).await {
            Ok(()) => {
                crate::metrics::get().session_begun(&endpoint.path, endpoint.dialect.name());
                Answer {
                    session: Some(SessionInfo {
                        server_transaction,
                        ..SessionInfo::of(&record)
                    }),
                    result: Ok(body),
                }
            }
            Err(e) => {
                self.abort_dialog(&mut record).await;
                if let Some(txn) = record.transaction.take() {
                    self.coordinator.abort(&txn).await;
                }
                Answer::sessionless(Err(not_created(e)))
            }
        }
    }

    /// A continued session's request: run here, or forwarded to the live broker that holds the
    /// session's work (see "Several brokers" in the module docs).
    async fn continue_session(
        &self,
        endpoint: &EndpointConfig,
        id: &str,
        request: &Request,
    ) -> Response {
        let mut holder = match self.continue_here(endpoint, id, request).await {
            Here::Done(answer) => return answer.into_response(),
            Here::HeldBy(holder) => holder,
        };
        let failed =
            |error| Answer::failed(SessionInfo::new(id.to_string()), error).into_response();
        let Some(peer) = &self.peer else {
            // `continue_here` forwards only with a peer; should that change, say so.
            return failed(EngineError::ForwardingDisabled { broker: holder.id });
        };
        // At most twice: to the holder, and once more if it turned out gone and the request, run
        // here again, found yet another holder.
        for attempt in 0..2 {
            tracing::debug!(session = %short_id(id), broker = %holder.id, "forwarding to the broker holding the session");
            let error = match peer.forward(&holder, &endpoint.path, request).await {
                Ok(response) => return response,
                Err(e) => e,
            };
            match error {
                PeerError::NotDelivered(reason) if attempt == 0 => {
                    tracing::warn!(session = %short_id(id), broker = %holder.id, error = %reason, "the broker holding the session cannot be reached");
                    // Not delivered, so it may run elsewhere: if the holder is gone by its lease,
                    // its work is taken over here.
                    if let Err(e) = self.registry.refresh().await {
                        return failed(EngineError::Store(e));
                    }
                    if self.registry.live(&holder.instance).is_some() {
                        return failed(EngineError::HolderUnreachable { broker: holder.id });
                    }
                    match self.continue_here(endpoint, id, request).await {
                        Here::Done(answer) => return answer.into_response(),
                        Here::HeldBy(next) => holder = next,
                    }
                }
                // Still not delivered: retriable.
                PeerError::NotDelivered(_) => {
                    return failed(EngineError::HolderUnreachable { broker: holder.id })
                }
                PeerError::Refused(reason) => {
                    return failed(EngineError::ForwardRefused {
                        broker: holder.id,
                        reason,
                    })
                }
                // It may have run there: the client must not be told to simply retry.
                PeerError::Lost(reason) => {
                    tracing::warn!(session = %short_id(id), broker = %holder.id, error = %reason, "the broker holding the session did not answer");
                    return failed(EngineError::HolderLost { broker: holder.id });
                }
            }
        }
        failed(EngineError::HolderUnreachable { broker: holder.id })
    }

    /// Steps 1 to 3 of a continued session's request (its turn, its binding, who holds it, lazy
    /// expiry), then the rest here, or `HeldBy` when the request must go to another broker.
    async fn continue_here(&self, endpoint: &EndpointConfig, id: &str, request: &Request) -> Here {
        let (turn, record) = match take_turn(&self.store, id, self.turn_lease, endpoint.turn_wait)
            .instrument(tracing::debug_span!("store", op = "take_turn"))
            .await
        {
            Ok(Some(found)) => found,
            Ok(None) => return Here::Done(Answer::unknown(id.to_string())),
            Err(StoreError::TurnTimeout(_)) => {
                return Here::Done(Answer::sessionless(Err(EngineError::Busy(id.to_string()))))
            }
            Err(e) => return Here::Done(Answer::sessionless(Err(EngineError::Store(e)))),
        };
        // A session begun on another endpoint (or dialect), or by another principal (anonymous
        // included), does not exist for this request: refused exactly like an unknown one, and left
        // intact for its owner.
        if !admission::binding_matches(endpoint, &record, request) {
            turn.release().await;
            return Here::Done(Answer::unknown(id.to_string()));
        }
        let mut held = Held::new(turn, record);
        match self.resolve_holder(&mut held).await {
            Ok(None) => {}
            // Context-free work touches nothing the holder has: it runs here, no hop.
            Ok(Some(_))
                if !self.needs_holder(endpoint, request, &held.record)
                    && !held.record.is_expired(now_ms()) => {}
            Ok(Some(holder)) => {
                let info = held.info();
                held.release().await;
                let error = if request.forwarded {
                    EngineError::HeldElsewhere { broker: holder.id }
                } else if self.peer.is_some() {
                    return Here::HeldBy(holder);
                } else {
                    EngineError::ForwardingDisabled { broker: holder.id }
                };
                return Here::Done(Answer::failed(info, error));
            }
            Err(e) => {
                let info = held.info();
                held.release().await;
                return Here::Done(Answer::failed(info, e));
            }
        }
        self.apply_correction(&mut held);
        if held.record.is_expired(now_ms()) {
            // Lazy expiry (idle, or a transaction past its timeout): indistinguishable from an
            // unknown session.
            if let Err(e) = self.expire(held).await {
                tracing::warn!(session = %short_id(id), error = %e, "could not delete an expired session");
            }
            return Here::Done(Answer::unknown(id.to_string()));
        }
        // A transaction aborted because the broker holding it stopped: the first request that
        // names it hears so (the -1021 rule in the module docs).
        if held.record.transaction.as_ref().is_some_and(is_tombstone)
            && self.names_transaction(endpoint, request, &held.record)
        {
            held.record.transaction = None;
            held.durable = true;
            let reason = match held.taken_over.take() {
                Some(broker) => format!("the broker holding it ({broker}) stopped"),
                None => "the broker holding it stopped".to_string(),
            };
            let error = Err(EngineError::TransactionAborted {
                at_commit: false,
                reason,
            });
            return Here::Done(if request.end_session {
                self.end(held, error).await
            } else {
                self.finish(held, error).await
            });
        }
        Here::Done(self.run_continued(endpoint, request, held).await)
    }

    /// Steps 4 to 8 of a continued session's request, under its turn.
    async fn run_continued(
        &self,
        endpoint: &EndpointConfig,
        request: &Request,
        mut held: Held,
    ) -> Answer {
        let id = held.record.id.clone();
        // 4. Transaction commands, before the body.
        if let Err(e) = self
            .transaction_commands(endpoint, request, &mut held)
            .await
        {
            return self.finish(held, Err(e)).await;
        }
        // 5. AbortSubsession (under one transaction per dialog, the transaction goes with it).
        if request.abort_subsession {
            if held.record.subsession.is_none() {
                return self.finish(held, Err(EngineError::NoSubsession)).await;
            }
            if self.in_one_transaction_dialog(&held.record) {
                if let Some(txn) = held.record.transaction.take() {
                    self.coordinator.abort(&txn).await;
                }
            }
            self.abort_dialog(&mut held.record).await;
            held.durable = true;
        }

        // 6. The body.
        let body = match &request.call {
            None if request.end_session => Reply::Ended,
            None => Reply::Empty,
            Some(call) => {
                let route = match self.route_session_call(endpoint, call, &held.record) {
                    Ok(r) => r,
                    Err(e) => return self.finish(held, Err(e)).await,
                };
                let before = boundaries(&held.record);
                let called = self
                    .call_in_session(&mut held.record, &route, call, request.trace.as_ref())
                    .await;
                // A transaction or dialog that began or ended is news for the client: durable.
                held.durable |= boundaries(&held.record) != before;
                match called {
                    Ok(Called {
                        reply,
                        server_transaction,
                    }) => {
                        held.server_transaction = server_transaction;
                        reply
                    }
                    Err(CallFailure {
                        error,
                        ends_session: true,
                    }) => return self.end(held, Err(error)).await,
                    // sqlSession's terminate is acknowledged whatever the body did.
                    Err(CallFailure { error, .. })
                        if request.end_session && request.end_regardless =>
                    {
                        self.abort_dialog(&mut held.record).await;
                        return self.end(held, Err(error)).await;
                    }
                    Err(CallFailure { error, .. }) => return self.finish(held, Err(error)).await,
                }
            }
        };

        // 7. End: not while a dialog is open (-1016); commit what is open (End without a command
        // commits), delete the record.
        if request.end_session && held.record.subsession.is_some() {
            if !request.end_regardless {
                return self.finish(held, Err(EngineError::SubsessionOpen)).await;
            }
            self.abort_dialog(&mut held.record).await;
            held.durable = true;
        }
        if request.end_session {
            let result = match held.record.transaction.take() {
                None => Ok(body),
                Some(txn) => match self.coordinator.commit(&id, &txn).await {
                    Ok(committed) => {
                        held.committed.push(committed);
                        Ok(body)
                    }
                    Err(e) => Err(commit_failed(e)),
                },
            };
            return self.end(held, result).await;
        }
        // 8. Write back, release, reply.
        self.finish(held, Ok(body)).await
    }

    /// `CurrentTransactionCommand` (commit or abort the current transaction), then
    /// `BeginNewTransaction`: both before the body, in that order, so one request can end one
    /// transaction and begin the next.
    async fn transaction_commands(
        &self,
        endpoint: &EndpointConfig,
        request: &Request,
        held: &mut Held,
    ) -> Result<(), EngineError> {
        if let Some(command) = request.transaction.command {
            if held.record.transaction.is_none() {
                return Err(EngineError::NoTransaction(command));
            }
            if self.in_one_transaction_dialog(&held.record) {
                return Err(EngineError::CommandInDialog(command));
            }
            let Some(txn) = held.record.transaction.take() else {
                return Err(EngineError::NoTransaction(command));
            };
            held.durable = true;
            match command {
                TxnCommand::Commit => match self.coordinator.commit(&held.record.id, &txn).await {
                    Ok(committed) => held.committed.push(committed),
                    Err(e) => return Err(commit_failed(e)),
                },
                TxnCommand::Abort => self.coordinator.abort(&txn).await,
            }
        }
        if request.transaction.begin_new {
            self.refuse_if_draining(Some(&held.record))?;
            if held.record.transaction.is_some() {
                return Err(EngineError::TransactionInProgress);
            }
            self.check_transactional_body(endpoint, request)?;
            held.record.transaction = Some(self.coordinator.begin(endpoint.transaction_timeout));
            held.durable = true;
        }
        Ok(())
    }

    /// `BeginNewTransaction` needs a body whose service is transactional, or no body (-1022).
    fn check_transactional_body(
        &self,
        endpoint: &EndpointConfig,
        request: &Request,
    ) -> Result<(), EngineError> {
        match &request.call {
            Some(call) => match self.route(&endpoint.path, &call.service) {
                Some(route) if !route.class.config().transactional => {
                    Err(EngineError::NotTransactional(call.service.clone()))
                }
                // An unknown service is reported when the body is routed (-215).
                _ => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// Call a service inside a session.
    ///
    /// - A context-sensitive class's service runs in the session's dialog: the first call opens one
    ///   on any worker with room (the record then names it), later calls go to that worker; only
    ///   one dialog at a time (-1019). The worker ends it (`dialog-end`: under
    ///   `one_txn_per_dialog` that commits the transaction) or aborts it (-353/-354/-355). A dialog
    ///   whose worker is gone is lost (-356) and the session lives on.
    /// - Under the session's transaction when there is one and the class is transactional: the
    ///   worker that serves it becomes a participant and later calls of the transaction go to it.
    /// - Otherwise to any worker, outside any transaction.
    async fn call_in_session(
        &self,
        record: &mut SessionRecord,
        route: &Route,
        call: &ServiceCall,
        trace: Option<&crate::tracecontext::TraceParent>,
    ) -> Result<Called, CallFailure> {
        let class = route.class_name();
        let one_txn_per_dialog = route.class.config().one_txn_per_dialog;
        // Checked before anything else is done: a refused record opens no dialog.
        let payload = request_payload(route, call)?;

        // Where the request goes: the dialog's worker, the transaction participant's, or any.
        let mut dialog = DialogMarker::None;
        let mut target: Option<WorkerId> = None;
        if route.is_context_sensitive() {
            match &record.subsession {
                Some(sub) if sub.server_class != class => {
                    return Err(EngineError::OtherSubsession {
                        open: sub.server_class.clone(),
                        requested: class.to_string(),
                    }
                    .into())
                }
                Some(sub) => match self.coordinator.untag(&sub.worker) {
                    Some(worker) => {
                        dialog = DialogMarker::Continue;
                        target = Some(worker);
                    }
                    // Held by an earlier run of this broker: lost with that process.
                    None => return Err(self.lose_dialog(record, class).await),
                },
                None => {
                    self.refuse_if_draining(Some(record))?;
                    dialog = DialogMarker::Begin
                }
            }
        }
        let under_transaction = route.class.config().transactional && record.transaction.is_some();
        let mut new_participant = false;
        if let Some(txn) = record.transaction.as_ref().filter(|_| under_transaction) {
            match self.coordinator.participant_of(txn, class) {
                None => new_participant = true,
                Some(p) => match self.coordinator.local_worker(p) {
                    // A dialog's worker and the class's participant are the same worker.
                    Some(worker) => target = target.or(Some(worker)),
                    None => {
                        return Err(self
                            .abort_lost(record, class, "the broker restarted since it did work")
                            .await)
                    }
                },
            }
        }
        let request = BackendRequest {
            credential: credential_for(route, call),
            traceparent: trace.map(crate::tracecontext::TraceParent::next_hop),
            service: call.service.clone(),
            operation: route.operation.to_string(),
            session_id: Some(record.id.clone()),
            transaction_id: record
                .transaction
                .as_ref()
                .filter(|_| under_transaction)
                .map(|t| t.id.clone()),
            dialog: dialog.clone(),
            worker: target,
            payload,
        };
        let reply = match route
            .class
            .call(request)
            .instrument(tracing::debug_span!("adapter", class = %class))
            .await
        {
            Ok(reply) => reply,
            Err(error) => {
                let in_dialog = dialog == DialogMarker::Continue;
                let lost = matches!(
                    error,
                    AdapterError::PinnedWorkerGone { .. }
                        | AdapterError::WorkerLost { .. }
                        | AdapterError::Timeout { .. }
                );
                if in_dialog && lost {
                    let failure = self.lose_dialog(record, class).await;
                    // A timeout says so (-351); a dead worker is a lost subsession (-356).
                    return Err(match error {
                        AdapterError::Timeout { .. } => EngineError::Backend(error).into(),
                        _ => failure,
                    });
                }
                if under_transaction && lost {
                    tracing::warn!(session = %short_id(&record.id), class = %class, error = %error, "backend failed under a transaction: aborting it and ending the session");
                    let why = match error {
                        AdapterError::PinnedWorkerGone { .. } => {
                            "the process that held its work stopped"
                        }
                        _ => "the server failed during the request",
                    };
                    return Err(self.abort_lost(record, class, why).await);
                }
                // Nothing ran (queue full, class unreachable): the transaction is intact.
                return Err(EngineError::Backend(error).into());
            }
        };
        if let (true, Some(txn)) = (new_participant, record.transaction.as_mut()) {
            txn.participants
                .push(self.coordinator.participant(class, &reply.worker));
        }

        // The dialog's life, as the worker's reply tells it.
        match reply.status {
            ReplyStatus::DialogEnd if dialog != DialogMarker::None => {
                record.subsession = None;
                if one_txn_per_dialog {
                    if let Some(txn) = record.transaction.take() {
                        // The dialog's end is its transaction's end (Pathsend's FEOK).
                        let committed = self.coordinator.commit(&record.id, &txn).await;
                        match committed {
                            Ok(committed) => self.coordinator.settled(committed).await,
                            Err(e) => return Err(commit_failed(e).into()),
                        }
                    }
                }
            }
            ReplyStatus::DialogAbort if dialog != DialogMarker::None => {
                record.subsession = None;
                let transaction = match (&record.transaction, one_txn_per_dialog) {
                    (None, _) => DialogTransaction::None,
                    (Some(_), false) => DialogTransaction::LeftToClient,
                    (Some(_), true) => {
                        if let Some(txn) = record.transaction.take() {
                            self.coordinator.abort(&txn).await;
                        }
                        DialogTransaction::Aborted
                    }
                };
                return Err(EngineError::DialogAborted {
                    class: class.to_string(),
                    transaction,
                }
                .into());
            }
            _ if dialog == DialogMarker::Begin => {
                record.subsession = Some(SubsessionState {
                    server_class: class.to_string(),
                    worker: self.coordinator.tag(&reply.worker),
                    broker: self.coordinator.broker_id().to_string(),
                    dialog_id: record.id.clone(),
                });
            }
            _ => {}
        }

        // A record service's reply record becomes its XML, or the fault its layout stands for.
        let (status, payload) = match (&route.record, reply.status) {
            (
                Some(records),
                status @ (ReplyStatus::Ok | ReplyStatus::DialogContinue | ReplyStatus::DialogEnd),
            ) => match records.reply(&reply.payload) {
                Ok(RecordReply::Body(xml)) => (status, xml),
                Ok(RecordReply::Fault { string, detail }) => (
                    ReplyStatus::Fault {
                        code: "Server".into(),
                        string,
                    },
                    detail,
                ),
                Err(misfit) => {
                    return Err(EngineError::ReplyMisfit {
                        class: class.to_string(),
                        service: call.service.clone(),
                        misfit: Box::new(misfit),
                    }
                    .into())
                }
            },
            (_, status) => (status, reply.payload),
        };
        match status {
            ReplyStatus::Ok
            | ReplyStatus::DialogContinue
            | ReplyStatus::DialogEnd
            | ReplyStatus::DialogAbort => Ok(Called {
                reply: Reply::Body(payload),
                server_transaction: reply.open_transaction,
            }),
            ReplyStatus::Fault { code, string } => {
                if route.abort_transaction_on_fault && under_transaction {
                    if let Some(txn) = record.transaction.take() {
                        self.coordinator.abort(&txn).await;
                    }
                }
                Err(EngineError::Application {
                    class: class.to_string(),
                    code,
                    string,
                    detail: payload,
                }
                .into())
            }
            ReplyStatus::Error(message) if under_transaction => {
                tracing::warn!(session = %short_id(&record.id), class = %class, error = %message, "backend system error under a transaction: aborting it and ending the session");
                Err(self
                    .abort_lost(record, class, "the server reported a system error")
                    .await)
            }
            ReplyStatus::Error(message) => Err(EngineError::BackendFailed {
                class: class.to_string(),
                message,
            }
            .into()),
        }
    }

    /// The session's dialog is gone with its worker (-356); the session lives on. A transaction the
    /// worker took part in cannot commit any more: it is aborted.
    async fn lose_dialog(&self, record: &mut SessionRecord, class: &str) -> CallFailure {
        if let Some(sub) = record.subsession.take() {
            let participated = record
                .transaction
                .as_ref()
                .is_some_and(|t| t.participants.iter().any(|p| p.worker == sub.worker));
            if participated {
                if let Some(txn) = record.transaction.take() {
                    self.coordinator.abort(&txn).await;
                }
            }
        }
        EngineError::SubsessionLost {
            class: class.to_string(),
        }
        .into()
    }

    /// Abort the session's dialog from the broker's side (AbortSubsession, expiry, a session ended
    /// by a failure), best effort: a worker that is gone took the dialog with it.
    async fn abort_dialog(&self, record: &mut SessionRecord) {
        let Some(sub) = record.subsession.take() else {
            return;
        };
        let (Some(class), Some(worker)) = (
            self.router.load().class(&sub.server_class).cloned(),
            self.coordinator.untag(&sub.worker),
        ) else {
            return;
        };
        if let Err(e) = class.abort_dialog(&worker, &record.id).await {
            tracing::warn!(session = %short_id(&record.id), class = %sub.server_class, error = %e, "could not abort a dialog");
        }
    }

    /// Whether the session's open dialog belongs to a one-transaction-per-dialog class.
    fn in_one_transaction_dialog(&self, record: &SessionRecord) -> bool {
        record.subsession.as_ref().is_some_and(|sub| {
            self.router
                .load()
                .class(&sub.server_class)
                .is_some_and(|c| c.config().one_txn_per_dialog)
        })
    }

    /// Abort the record's transaction because a participant lost its work; the session ends.
    async fn abort_lost(&self, record: &mut SessionRecord, class: &str, why: &str) -> CallFailure {
        if let Some(txn) = record.transaction.take() {
            self.coordinator.abort(&txn).await;
        }
        CallFailure {
            error: EngineError::TransactionAborted {
                at_commit: false,
                reason: format!("server class {class}: {why}; the session has ended"),
            },
            ends_session: true,
        }
    }

    /// Delete the session (durably: the client is told it ended) and reply without it.
    async fn end(&self, held: Held, result: Result<Reply, EngineError>) -> Answer {
        let Held {
            turn,
            mut record,
            committed,
            before,
            ..
        } = held;
        // Ended by a failure with a dialog or a transaction still recorded: neither can outlive
        // its session.
        self.abort_dialog(&mut record).await;
        if let Some(txn) = &record.transaction {
            self.coordinator.abort(txn).await;
        }
        match turn.delete(Durability::Durable).await {
            Ok(()) => {
                crate::metrics::get().session_ended(&record.endpoint, &record.dialect);
                for c in committed {
                    self.coordinator.settled(c).await;
                }
                Answer {
                    session: None,
                    result,
                }
            }
            Err(e) => {
                // The stored record still names what this End committed or aborted: correct it
                // at the next request (a retried End then finds nothing open).
                tracing::error!(session = %short_id(&record.id), error = %e, "could not delete an ended session");
                self.remember(
                    &record.id,
                    Correction {
                        transaction: before.transaction.map(|(id, _)| id),
                        dialog: before.dialog,
                    },
                );
                Answer::failed(SessionInfo::new(record.id), EngineError::Store(e))
            }
        }
    }

    /// Write the record back and give the turn back: durably when something the client is told
    /// about changed, lazily when only the last-access time did.
    async fn finish(&self, held: Held, result: Result<Reply, EngineError>) -> Answer {
        let Held {
            turn,
            mut record,
            durable,
            committed,
            before,
            server_transaction,
            ..
        } = held;
        record.last_access_ms = record.last_access_ms.max(now_ms());
        let durability = if durable {
            Durability::Durable
        } else {
            Durability::Lazy
        };
        let live = SessionInfo {
            server_transaction,
            ..SessionInfo::of(&record)
        };
        match turn
            .write_and_release(&record, durability)
            .instrument(tracing::debug_span!("store", op = "write_and_release"))
            .await
        {
            Ok(()) => {
                for c in committed {
                    self.coordinator.settled(c).await;
                }
            }
            // Only the last-access time was at stake: the reply still stands.
            Err(e) if !durable => {
                tracing::warn!(session = %short_id(&record.id), error = %e, "could not write the session back")
            }
            Err(e) => {
                tracing::error!(session = %short_id(&record.id), error = %e, "could not write a session change durably");
                let result = self
                    .unrecorded(&before, &mut record, !committed.is_empty(), result, e)
                    .await;
                return Answer {
                    session: Some(SessionInfo {
                        subsession_open: before.dialog.is_some(),
                        ..SessionInfo::of(&record)
                    }),
                    result,
                };
            }
        }
        Answer {
            session: Some(live),
            result,
        }
    }

    /// An expired session (held here, or taken over): abort its dialog and transaction, delete
    /// it. Nothing was acknowledged about the deletion, so it need not wait for the disk.
    async fn expire(&self, held: Held) -> Result<(), StoreError> {
        self.discard(held, Durability::Lazy).await?;
        crate::metrics::get().sessions_expired(1);
        Ok(())
    }

    /// Abort a held session's dialog and transaction and delete it (`durability`: whether the
    /// deletion must reach the disk before the caller is told).
    async fn discard(&self, held: Held, durability: Durability) -> Result<(), StoreError> {
        let Held {
            turn,
            mut record,
            committed,
            ..
        } = held;
        self.corrections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&record.id);
        self.abort_dialog(&mut record).await;
        if let Some(txn) = &record.transaction {
            self.coordinator.abort(txn).await;
        }
        turn.delete(durability).await?;
        for c in committed {
            self.coordinator.settled(c).await;
        }
        Ok(())
    }

    fn route_call(
        &self,
        endpoint: &EndpointConfig,
        call: &ServiceCall,
    ) -> Result<Route, EngineError> {
        self.route(&endpoint.path, &call.service)
            .ok_or_else(|| EngineError::UnknownService(call.service.clone()))
    }

    /// [`SessionEngine::route_call`] for a call in session `record`.
    fn route_session_call(
        &self,
        endpoint: &EndpointConfig,
        call: &ServiceCall,
        record: &SessionRecord,
    ) -> Result<Route, EngineError> {
        self.session_route(&endpoint.path, &call.service, record)
            .ok_or_else(|| EngineError::UnknownService(call.service.clone()))
    }

    /// Call a context-free service outside any session.
    async fn call_sessionless(
        &self,
        route: &Route,
        call: &ServiceCall,
        trace: Option<&crate::tracecontext::TraceParent>,
    ) -> Result<Reply, EngineError> {
        let request = BackendRequest {
            credential: credential_for(route, call),
            traceparent: trace.map(crate::tracecontext::TraceParent::next_hop),
            service: call.service.clone(),
            operation: route.operation.to_string(),
            session_id: None,
            transaction_id: None,
            dialog: DialogMarker::None,
            worker: None,
            payload: request_payload(route, call)?,
        };
        let class = route.class_name().to_string();
        let reply = route
            .class
            .call(request)
            .instrument(tracing::debug_span!("adapter", class = %class))
            .await?;
        if let (Some(records), ReplyStatus::Ok) = (&route.record, &reply.status) {
            return match records.reply(&reply.payload) {
                Ok(RecordReply::Body(xml)) => Ok(Reply::Body(xml)),
                Ok(RecordReply::Fault { string, detail }) => Err(EngineError::Application {
                    class,
                    code: "Server".into(),
                    string,
                    detail,
                }),
                Err(misfit) => Err(EngineError::ReplyMisfit {
                    class,
                    service: call.service.clone(),
                    misfit: Box::new(misfit),
                }),
            };
        }
        match reply.status {
            ReplyStatus::Ok
            | ReplyStatus::DialogContinue
            | ReplyStatus::DialogEnd
            | ReplyStatus::DialogAbort => Ok(Reply::Body(reply.payload)),
            ReplyStatus::Fault { code, string } => Err(EngineError::Application {
                class,
                code,
                string,
                detail: reply.payload,
            }),
            ReplyStatus::Error(message) => Err(EngineError::BackendFailed { class, message }),
        }
    }

    /// One pass of the expiry sweeper: look at up to `batch` sessions the expiry index says are due
    /// and delete those whose idle timeout really passed. Sessions busy with a request are left for
    /// the next pass. Returns (examined, deleted).
    pub async fn sweep_once(&self, batch: usize) -> Result<(usize, usize), StoreError> {
        let now = now_ms();
        let due = self.store.due_for_expiry(now, batch).await?;
        let examined = due.len();
        let mut deleted = 0;
        let mut held_elsewhere = Vec::new();
        for id in due {
            let (turn, record) =
                match take_turn(&self.store, &id, self.turn_lease, Duration::ZERO).await {
                    Ok(Some(found)) => found,
                    Ok(None) | Err(StoreError::TurnTimeout(_)) => continue,
                    Err(e) => return Err(e),
                };
            if !record.is_expired(now_ms()) {
                // Still alive (touched since it was filed): writing it back re-files it in the index.
                turn.write_and_release(&record, Durability::Lazy).await?;
                continue;
            }
            let mut held = Held::new(turn, record);
            match self.resolve_holder(&mut held).await {
                Ok(None) => {
                    self.expire(held).await?;
                    tracing::debug!(session = %short_id(&id), "expired session swept");
                    deleted += 1;
                }
                Ok(Some(holder)) => {
                    held.release().await;
                    held_elsewhere.push((id, holder));
                }
                Err(e) => {
                    held.release().await;
                    match e {
                        EngineError::Store(e) => return Err(e),
                        // Its holder's lease expired right after a store outage: not certainly
                        // gone yet (see `resolve_holder`).
                        EngineError::HolderUnreachable { broker } => {
                            tracing::debug!(session = %short_id(&id), broker = %broker, "expired session of a broker not yet known gone; retrying next pass")
                        }
                        other => {
                            tracing::warn!(session = %short_id(&id), error = %other, "cannot sweep an expired session; retrying next pass")
                        }
                    }
                }
            }
        }
        // Their holders expire them (their dialogs and transactions are out of reach from here).
        for (id, holder) in held_elsewhere {
            self.ask_holder_to_expire(&id, &holder).await;
        }
        Ok((examined, deleted))
    }
}

/// What must reach the disk before the reply when it changes: which transaction and which dialog
/// the session has (the client is told about them), and the transaction's participants (whoever
/// next commits, aborts or takes the transaction over reads them from the store — this broker at
/// the session's next request, or another one — and a participant missing there would be left
/// holding its work, or a commit would be half done).
fn boundaries(record: &SessionRecord) -> (Option<String>, usize, Option<String>) {
    (
        record.transaction.as_ref().map(|t| t.id.clone()),
        record
            .transaction
            .as_ref()
            .map_or(0, |t| t.participants.len()),
        record.subsession.as_ref().map(|s| s.worker.clone()),
    )
}

/// A store failure while creating a session: unreachable stays retriable; anything else means
/// the session could not be created.
fn not_created(error: StoreError) -> EngineError {
    match error {
        StoreError::Unavailable(_) => EngineError::Store(error),
        other => EngineError::SessionNotCreated(other),
    }
}

/// The client-facing error for a failed commit: the transaction was aborted (or, rarely, its
/// outcome is unknown); the details are logged.
fn commit_failed(error: CommitError) -> EngineError {
    tracing::info!(error = %error, "commit failed");
    EngineError::TransactionAborted {
        at_commit: true,
        reason: error.to_string(),
    }
}

/// A new session ID: 16 bytes (128 bits) from the OS random source as 32 lowercase hex digits,
/// URL-safe and free of characters that need escaping in XML attributes. (sqlSession shows the
/// same 16 bytes to its clients as base64.)
pub fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // Not seen on Linux; uuid's v4 draws from the same source (122 random bits).
        bytes = *uuid::Uuid::new_v4().as_bytes();
    }
    // uuid's `simple` form is exactly 32 lowercase hex digits of the 16 bytes.
    uuid::Uuid::from_bytes(bytes).simple().to_string()
}

/// The first characters of a session ID, for logs: enough to correlate, not enough to hijack.
pub use cookie_store::short_id;

/// Whether session `record` holds work on server class `class`: its dialog, or a transaction the
/// class takes part in.
fn holds_work_on(record: &SessionRecord, class: &str) -> bool {
    record
        .subsession
        .as_ref()
        .is_some_and(|s| s.server_class == class)
        || record
            .transaction
            .as_ref()
            .is_some_and(|t| t.participants.iter().any(|p| p.server_class == class))
}
