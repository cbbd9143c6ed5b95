//! Several brokers: who holds a session's work, forwarding decisions, and taking over the work of
//! a gone broker (see "Several brokers" in the engine's module docs). Every method runs under the
//! session's turn, right after it is taken.

use super::{EngineError, Held, PeerExpiry, Request, SessionEngine};
use crate::cluster::broker_of_instance;
use crate::cluster::ownership::{self, is_tombstone};
use crate::config::EndpointConfig;
use crate::coordinator::Committed;
use cookie_store::{now_ms, short_id, take_turn, BrokerInfo, SessionRecord, StoreError};
use std::time::Duration;

impl SessionEngine {
    /// Who holds the session's work (see "Several brokers" in the module docs): `None` when it is
    /// here (or was just taken over from a gone broker), else the live broker holding it.
    pub(super) async fn resolve_holder(
        &self,
        held: &mut Held,
    ) -> Result<Option<BrokerInfo>, EngineError> {
        let me = self.coordinator.instance().as_str();
        let foreign = ownership::foreign_instances(&held.record, me);
        if foreign.is_empty() {
            self.adopt_transaction(held);
            return Ok(None);
        }
        if let Some(holder) = self.registry.first_live(&foreign) {
            return Ok(Some(holder));
        }
        // Gone by the snapshot. Confirm with a fresh read before taking anything over: the
        // snapshot may predate a broker that started since the last heartbeat.
        self.registry.refresh().await?;
        if let Some(holder) = self.registry.first_live(&foreign) {
            return Ok(Some(holder));
        }
        // Not live, but perhaps not gone either: right after a store outage every lease looks
        // expired until its broker's next heartbeat (`cluster::registry`, "When not live means
        // gone"). Retriable until it is certain.
        if let Some(unsure) = foreign.iter().find(|i| !self.registry.is_gone(i)) {
            return Err(EngineError::HolderUnreachable {
                broker: broker_of_instance(unsure).to_string(),
            });
        }
        self.take_over(held, &foreign).await?;
        Ok(None)
    }

    /// Take over the work of gone broker instances: the dialog is left to be reported lost (-356)
    /// by the call that next uses it; the transaction is committed if its decision was logged,
    /// otherwise aborted and tombstoned.
    pub(super) async fn take_over(
        &self,
        held: &mut Held,
        gone: &[String],
    ) -> Result<(), EngineError> {
        let me = self.coordinator.instance().as_str();
        let holder = gone
            .first()
            .map(|i| broker_of_instance(i).to_string())
            .unwrap_or_default();
        let session = short_id(&held.record.id).to_string();
        let txn = match &held.record.transaction {
            Some(t) if ownership::has_foreign_participants(t, me) => t.clone(),
            _ => {
                self.adopt_transaction(held);
                tracing::info!(session = %session, broker = %holder, "session of a gone broker continues here; its dialog, if any, is lost");
                return Ok(());
            }
        };
        // Read only now, after the registry said the holder is gone: a broker writes a decision
        // only while its lease holds (see `coordinator::recovery`, "never both").
        let decision = self.coordinator.logged_commit(&txn.id).await?;
        held.durable = true;
        match decision {
            Some(decision) => {
                let complete = self.coordinator.complete(&decision).await;
                held.record.transaction = None;
                if complete {
                    held.committed.push(Committed::logged(&txn.id));
                }
                tracing::info!(session = %session, txn = %txn.id, broker = %holder, complete, "took over a gone broker's transaction: its commit decision was logged, committed");
            }
            None => {
                self.coordinator.abort(&txn).await;
                held.record.transaction = Some(ownership::tombstone(&txn));
                held.taken_over = Some(holder.clone());
                tracing::warn!(session = %session, txn = %txn.id, broker = %holder, "took over a gone broker's transaction: no decision was logged, aborted");
            }
        }
        Ok(())
    }

    /// A transaction with no participant yet, begun by another instance, becomes this one's: a
    /// new ID with this instance's nonce (nothing outside the record knew the old one).
    pub(super) fn adopt_transaction(&self, held: &mut Held) {
        if let Some(t) = held.record.transaction.as_mut() {
            if !is_tombstone(t) && t.participants.is_empty() && !self.coordinator.owns_txn_id(&t.id)
            {
                t.id = self.coordinator.new_txn_id();
                held.durable = true;
            }
        }
    }

    /// Whether the request needs the broker holding the session's work: anything about the
    /// transaction or the dialog, or the session's end. A call of a context-free service that
    /// runs outside the transaction (none is open, or the class is not transactional) does not.
    pub(super) fn needs_holder(
        &self,
        endpoint: &EndpointConfig,
        request: &Request,
        record: &SessionRecord,
    ) -> bool {
        if request.transaction.command.is_some()
            || request.transaction.begin_new
            || request.end_session
            || request.abort_subsession
        {
            return true;
        }
        let Some(call) = &request.call else {
            return false;
        };
        match self.session_route(&endpoint.path, &call.service, record) {
            // Unknown here: -215 from here.
            None => false,
            Some(route) => {
                route.is_context_sensitive()
                    || (route.class.config().transactional && record.transaction.is_some())
            }
        }
    }

    /// Whether the request refers to the session's transaction (the -1021 rule).
    pub(super) fn names_transaction(
        &self,
        endpoint: &EndpointConfig,
        request: &Request,
        record: &SessionRecord,
    ) -> bool {
        let call_names_it = request
            .call
            .as_ref()
            .and_then(|c| self.session_route(&endpoint.path, &c.service, record))
            .is_some_and(|r| r.class.config().transactional || r.class.config().one_txn_per_dialog);
        request.transaction.command.is_some()
            || request.transaction.begin_new
            || request.end_session
            || (request.abort_subsession && self.in_one_transaction_dialog(record))
            || call_names_it
    }

    /// Ask the live broker holding an expired session to expire it. Without a cluster secret, its
    /// own sweeper will.
    pub(super) async fn ask_holder_to_expire(&self, id: &str, holder: &BrokerInfo) {
        let Some(peer) = &self.peer else {
            tracing::debug!(session = %short_id(id), broker = %holder.id, "expired session held by another broker: left to its sweeper");
            return;
        };
        match peer.expire(holder, id).await {
            Ok(answer) => {
                tracing::debug!(session = %short_id(id), broker = %holder.id, answer = answer.as_str(), "asked the holder to expire a session")
            }
            Err(e) => {
                tracing::warn!(session = %short_id(id), broker = %holder.id, error = %e, "could not ask the holder to expire a session; retrying next pass")
            }
        }
    }

    /// `POST /_cluster/expire`: another broker's sweeper found session `id` due and this broker
    /// holding its work. Expire it here if it is due (or, with `end`, whether due or not: an
    /// operator asked another broker to end it) and still held here (or by a gone broker).
    pub async fn expire_for_peer(&self, id: &str, end: bool) -> Result<PeerExpiry, StoreError> {
        let (turn, record) = match take_turn(&self.store, id, self.turn_lease, Duration::ZERO).await
        {
            Ok(Some(found)) => found,
            Ok(None) => return Ok(PeerExpiry::Gone),
            Err(StoreError::TurnTimeout(_)) => return Ok(PeerExpiry::Busy),
            Err(e) => return Err(e),
        };
        if !end && !record.is_expired(now_ms()) {
            turn.release().await;
            return Ok(PeerExpiry::Alive);
        }
        let mut held = Held::new(turn, record);
        match self.resolve_holder(&mut held).await {
            Ok(None) if end => {
                let (endpoint, dialect) =
                    (held.record.endpoint.clone(), held.record.dialect.clone());
                self.discard(held, cookie_store::Durability::Durable)
                    .await?;
                crate::metrics::get().session_ended(&endpoint, &dialect);
                tracing::info!(session = %short_id(id), "session ended at another broker's request (an operator's)");
                Ok(PeerExpiry::Expired)
            }
            Ok(None) => {
                self.expire(held).await?;
                tracing::debug!(session = %short_id(id), "expired session swept at another broker's request");
                Ok(PeerExpiry::Expired)
            }
            Ok(Some(_)) => {
                held.release().await;
                Ok(PeerExpiry::Elsewhere)
            }
            Err(e) => {
                held.release().await;
                match e {
                    EngineError::Store(e) => Err(e),
                    _ => Ok(PeerExpiry::Busy),
                }
            }
        }
    }
}
