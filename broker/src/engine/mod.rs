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
//! 2. transaction commands and subsession commands (later issues: answered with a clear error today);
//! 3. the body: route it to its server class and call it inside the session;
//! 4. end the session (delete the record, durably) or write the record back (lazily: only the
//!    last-access time changed) and give the turn back.
//!
//! The cost of a continue request in store calls is therefore two: `take_turn` (which returns the
//! record) and `write_and_release`.

mod admission;
mod request;
mod sweeper;

pub use request::{
    EngineError, Reply, Request, Response, ServiceCall, SessionDirective, SessionInfo, TxnCommand,
};
pub use sweeper::spawn_sweeper;

use crate::config::EndpointConfig;
use crate::router::{Route, Router};
use adapters::{BackendRequest, DialogMarker, ReplyStatus};
use cookie_store::{now_ms, Durability, SessionRecord, Store, StoreError, Turn};
use std::sync::Arc;
use std::time::Duration;

/// The dialect-neutral session engine shared by every endpoint.
pub struct SessionEngine {
    store: Arc<dyn Store>,
    router: Router,
    /// How long a request may hold a session's turn before another request may take it over. Longer
    /// than the longest backend `request_timeout`, so that only a dead broker loses its turn.
    turn_lease: Duration,
}

impl SessionEngine {
    pub fn new(store: Arc<dyn Store>, router: Router, turn_lease: Duration) -> SessionEngine {
        SessionEngine {
            store,
            router,
            turn_lease,
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn turn_lease(&self) -> Duration {
        self.turn_lease
    }

    /// Route a service name on an endpoint (dialects use it to pick response encodings).
    pub fn route(&self, endpoint: &str, service: &str) -> Option<&Route> {
        self.router.route(endpoint, service)
    }

    /// Process one request of `endpoint`.
    pub async fn handle(&self, endpoint: &EndpointConfig, request: Request) -> Response {
        match request.session.clone() {
            SessionDirective::None => self.sessionless(endpoint, request).await,
            SessionDirective::Begin => self.begin(endpoint, request).await,
            SessionDirective::Continue(id) => self.continue_session(endpoint, id, request).await,
        }
    }

    async fn sessionless(&self, endpoint: &EndpointConfig, request: Request) -> Response {
        let result = match &request.call {
            None => Ok(Reply::Empty),
            Some(call) => match self.route_call(endpoint, call) {
                Err(e) => Err(e),
                Ok(route) if route.is_context_sensitive() => {
                    Err(EngineError::SessionRequired(call.service.clone()))
                }
                Ok(route) => self.call(route, call, None).await,
            },
        };
        Response {
            session: None,
            result,
        }
    }

    async fn begin(&self, endpoint: &EndpointConfig, request: Request) -> Response {
        if request.transaction.begin_new {
            return Response::sessionless(Err(EngineError::NotSupported("transactions")));
        }
        if let Err(e) = admission::admit(self.store.as_ref(), endpoint, &request).await {
            return Response::sessionless(Err(e));
        }
        let id = new_session_id();
        // The body runs first, inside the new session; the record is stored (durably) only when the
        // body succeeded, so a failed Begin leaves nothing behind and tells the client no ID.
        let body = match &request.call {
            None => Reply::Empty,
            Some(call) => {
                let route = match self.route_call(endpoint, call) {
                    Ok(r) => r,
                    Err(e) => return Response::sessionless(Err(e)),
                };
                if route.is_context_sensitive() {
                    return Response::sessionless(Err(EngineError::NotSupported(
                        "context-sensitive server classes",
                    )));
                }
                match self.call(route, call, Some(&id)).await {
                    Ok(reply) => reply,
                    Err(e) => return Response::sessionless(Err(e)),
                }
            }
        };
        let now = now_ms();
        let record = SessionRecord {
            id: id.clone(),
            endpoint: endpoint.path.clone(),
            dialect: request.dialect.to_string(),
            principal: request.principal.clone(),
            client_ip: request.client_ip,
            created_ms: now,
            last_access_ms: now,
            idle_timeout_ms: endpoint.session_timeout.as_millis() as u64,
            transaction: None,
            subsession: None,
            dialect_state: Vec::new(),
            expiry_indexed_ms: 0,
        };
        match self.store.create(&record, Durability::Durable).await {
            Ok(()) => Response {
                session: Some(SessionInfo::new(id)),
                result: Ok(body),
            },
            Err(e) => Response::sessionless(Err(EngineError::Store(e))),
        }
    }

    async fn continue_session(
        &self,
        endpoint: &EndpointConfig,
        id: String,
        request: Request,
    ) -> Response {
        let (turn, record) = match self
            .store
            .take_turn(&id, self.turn_lease, endpoint.turn_wait)
            .await
        {
            Ok(Some(found)) => found,
            Ok(None) => return Response::sessionless(Err(EngineError::UnknownSession(id))),
            Err(StoreError::TurnTimeout(_)) => {
                return Response::sessionless(Err(EngineError::Busy(id)))
            }
            Err(e) => return Response::sessionless(Err(EngineError::Store(e))),
        };
        // A session begun on another endpoint (or dialect), or by another principal (anonymous
        // included), does not exist for this request: refused exactly like an unknown one, and left
        // intact for its owner.
        if !admission::binding_matches(endpoint, &record, &request) {
            self.release(turn).await;
            return Response::sessionless(Err(EngineError::UnknownSession(id)));
        }
        let now = now_ms();
        if record.is_expired(now) {
            // Lazy expiry: indistinguishable from an unknown session. Nothing was acknowledged about the
            // deletion, so it need not wait for the disk.
            if let Err(e) = self.store.delete(turn, Durability::Lazy).await {
                tracing::warn!(session = %short_id(&id), error = %e, "could not delete an expired session");
            }
            return Response::sessionless(Err(EngineError::UnknownSession(id)));
        }
        let live = SessionInfo::new(id.clone());

        if request.transaction.command.is_some() || request.transaction.begin_new {
            return self
                .finish(
                    turn,
                    record,
                    now,
                    live,
                    Err(EngineError::NotSupported("transactions")),
                )
                .await;
        }
        if request.abort_subsession && record.subsession.is_none() {
            return self
                .finish(turn, record, now, live, Err(EngineError::NoSubsession))
                .await;
        }

        let body = match &request.call {
            None => {
                if request.end_session {
                    Reply::Ended
                } else {
                    Reply::Empty
                }
            }
            Some(call) => {
                let route = match self.route_call(endpoint, call) {
                    Ok(r) => r,
                    Err(e) => return self.finish(turn, record, now, live, Err(e)).await,
                };
                if route.is_context_sensitive() {
                    let e = EngineError::NotSupported("context-sensitive server classes");
                    return self.finish(turn, record, now, live, Err(e)).await;
                }
                match self.call(route, call, Some(&id)).await {
                    Ok(reply) => reply,
                    Err(e) => return self.finish(turn, record, now_ms(), live, Err(e)).await,
                }
            }
        };

        if request.end_session {
            // The client is told the session is over: that must survive a crash.
            return match self.store.delete(turn, Durability::Durable).await {
                Ok(()) => Response {
                    session: None,
                    result: Ok(body),
                },
                Err(e) => Response {
                    session: Some(live),
                    result: Err(EngineError::Store(e)),
                },
            };
        }
        self.finish(turn, record, now_ms(), live, Ok(body)).await
    }

    /// Write the record back lazily (only the last-access time changed) and give the turn back.
    async fn finish(
        &self,
        turn: Turn,
        mut record: SessionRecord,
        now: u64,
        live: SessionInfo,
        result: Result<Reply, EngineError>,
    ) -> Response {
        record.last_access_ms = record.last_access_ms.max(now);
        if let Err(e) = self
            .store
            .write_and_release(turn, &record, Durability::Lazy)
            .await
        {
            // Only the last-access time was at stake: the reply still stands.
            tracing::warn!(session = %short_id(&record.id), error = %e, "could not write the session back");
        }
        Response {
            session: Some(live),
            result,
        }
    }

    async fn release(&self, turn: Turn) {
        let id = short_id(&turn.session_id).to_string();
        if let Err(e) = self.store.release(turn).await {
            tracing::warn!(session = %id, error = %e, "could not release a session's turn");
        }
    }

    fn route_call(
        &self,
        endpoint: &EndpointConfig,
        call: &ServiceCall,
    ) -> Result<&Route, EngineError> {
        self.router
            .route(&endpoint.path, &call.service)
            .ok_or_else(|| EngineError::UnknownService(call.service.clone()))
    }

    /// Call a context-free service and turn the backend's answer into a reply or an error.
    async fn call(
        &self,
        route: &Route,
        call: &ServiceCall,
        session: Option<&str>,
    ) -> Result<Reply, EngineError> {
        let request = BackendRequest {
            service: call.service.clone(),
            operation: route.operation.to_string(),
            session_id: session.map(str::to_string),
            transaction_id: None,
            dialog: DialogMarker::None,
            worker: None,
            payload: call.payload.clone(),
        };
        let class = route.class_name().to_string();
        match route.class.call(request).await {
            Ok(reply) => match reply.status {
                ReplyStatus::Ok | ReplyStatus::DialogContinue | ReplyStatus::DialogEnd => {
                    Ok(Reply::Body(reply.payload))
                }
                ReplyStatus::Fault { code, string } => Err(EngineError::Application {
                    class,
                    code,
                    string,
                    detail: reply.payload,
                }),
                ReplyStatus::Error(message) => Err(EngineError::BackendFailed { class, message }),
                ReplyStatus::DialogAbort => Err(EngineError::BackendFailed {
                    class,
                    message: "the server aborted a dialog that was never opened".into(),
                }),
            },
            Err(error) => Err(EngineError::Backend(error)),
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
        for id in due {
            let (turn, record) = match self
                .store
                .take_turn(&id, self.turn_lease, Duration::ZERO)
                .await
            {
                Ok(Some(found)) => found,
                Ok(None) | Err(StoreError::TurnTimeout(_)) => continue,
                Err(e) => return Err(e),
            };
            if record.is_expired(now_ms()) {
                self.store.delete(turn, Durability::Lazy).await?;
                tracing::debug!(session = %short_id(&id), "expired session swept");
                deleted += 1;
            } else {
                // Still alive (touched since it was filed): writing it back re-files it in the index.
                self.store
                    .write_and_release(turn, &record, Durability::Lazy)
                    .await?;
            }
        }
        Ok((examined, deleted))
    }
}

/// A new session ID: a v4 UUID (122 random bits from the OS source) as 32 lowercase hex digits,
/// URL-safe and free of characters that need escaping in XML attributes.
pub fn new_session_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The first characters of a session ID, for logs: enough to correlate, not enough to hijack.
pub use cookie_store::short_id;
