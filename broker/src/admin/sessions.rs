//! # Sessions on the admin listener: list, show, end, purge
//!
//! Every call reads the shared store, so any broker of a fleet lists and shows every session;
//! showing and ending take the session's turn like a request (waiting at most [`TURN_WAIT`] for
//! one in progress), and ending one held by another broker is done by that broker.

use super::{error, json_reply, refusal, AdminState};
use crate::dialect::rfc3339_utc;
use crate::engine::AdminEnd;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use cookie_store::{now_ms, short_id, SessionRecord};
use serde_json::{json, Value};
use std::time::Duration;

/// How long an admin call waits for a session's request in progress.
pub(super) const TURN_WAIT: Duration = Duration::from_secs(5);
/// The most sessions one page lists, and the most records it reads to find them.
pub(super) const LIST_MAX: usize = 1000;
pub const LIST_SCAN: usize = 10_000;
/// Expired sessions examined per purge pass, and passes at most per call.
const PURGE_BATCH: usize = 1000;
const PURGE_PASSES: usize = 1000;

/// A session ID as the store has them: refused before any store call otherwise.
pub(super) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'+' | b'/' | b'=')
        })
}

/// A session record as JSON.
pub(super) fn session_json(r: &SessionRecord) -> Value {
    let now = now_ms();
    json!({
        "id": r.id,
        "endpoint": r.endpoint,
        "dialect": r.dialect,
        "principal": r.principal,
        "client_ip": r.client_ip.map(|ip| ip.to_string()),
        "created": rfc3339_utc(r.created_ms),
        "last_access": rfc3339_utc(r.last_access_ms),
        "expires": rfc3339_utc(r.last_access_ms.saturating_add(r.idle_timeout_ms)),
        "idle_timeout_seconds": r.idle_timeout_ms / 1000,
        "expired": r.is_expired(now),
        "transaction": r.transaction.as_ref().map(|t| json!({
            "id": t.id,
            "started": rfc3339_utc(t.started_ms),
            "deadline": rfc3339_utc(t.deadline_ms),
            "participants": t.participants.iter().map(|p| json!({
                "server_class": p.server_class,
                "worker": p.worker,
            })).collect::<Vec<_>>(),
        })),
        "subsession": r.subsession.as_ref().map(|s| json!({
            "server_class": s.server_class,
            "worker": s.worker,
            "broker": s.broker,
        })),
    })
}

/// `GET /sessions`'s query.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    #[serde(default)]
    pub(super) limit: Option<usize>,
    #[serde(default)]
    pub(super) after: Option<String>,
    #[serde(default)]
    pub(super) endpoint: Option<String>,
    #[serde(default)]
    pub(super) dialect: Option<String>,
    #[serde(default)]
    pub(super) principal: Option<String>,
    #[serde(default)]
    pub(super) holder: Option<String>,
    #[serde(default)]
    pub(super) idle_longer_than: Option<String>,
}

pub(super) async fn list(
    req: HttpRequest,
    query: Result<web::Query<ListQuery>, actix_web::Error>,
    state: web::Data<AdminState>,
) -> HttpResponse {
    if let Some(refused) = refusal(&req, &state).await {
        return refused;
    }
    let query = match query {
        Ok(q) => q.into_inner(),
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("bad query: {e}")),
    };
    match find(&state, &query).await {
        Ok((found, next)) => {
            let sessions: Vec<Value> = found.iter().map(session_json).collect();
            json_reply(
                StatusCode::OK,
                &json!({ "sessions": sessions, "next": next }),
            )
        }
        Err((status, message)) => error(status, &message),
    }
}

/// One page of the sessions `query` asks for, and the ID the next page starts after (`None` at
/// the end); or the status and message of a bad query or a store that did not answer.
pub(super) async fn find(
    state: &AdminState,
    query: &ListQuery,
) -> Result<(Vec<SessionRecord>, Option<String>), (StatusCode, String)> {
    let bad = |m: String| Err((StatusCode::BAD_REQUEST, m));
    let limit = query.limit.unwrap_or(100).clamp(1, LIST_MAX);
    let idle = match query
        .idle_longer_than
        .as_deref()
        .filter(|d| !d.is_empty())
        .map(crate::config::parse_duration)
    {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => return bad(format!("idle_longer_than: {e}")),
    };
    if query.after.as_deref().is_some_and(|a| !valid_id(a)) {
        return bad("after: not a session ID".into());
    }
    // An empty filter (a form's blank field) filters nothing.
    let given = |f: &Option<String>| f.clone().filter(|v| !v.is_empty());
    let (endpoint, dialect, principal, holder) = (
        given(&query.endpoint),
        given(&query.dialect),
        given(&query.principal),
        given(&query.holder),
    );
    let now = now_ms();
    let wanted = |r: &SessionRecord| {
        endpoint.as_ref().is_none_or(|e| &r.endpoint == e)
            && dialect.as_ref().is_none_or(|d| &r.dialect == d)
            && principal
                .as_ref()
                .is_none_or(|p| r.principal.as_ref() == Some(p))
            && holder
                .as_ref()
                .is_none_or(|h| r.subsession.as_ref().is_some_and(|s| &s.broker == h))
            && idle.is_none_or(|d| {
                now.saturating_sub(r.last_access_ms)
                    > u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
            })
    };
    let mut found = Vec::new();
    let mut after = given(&query.after);
    let mut scanned = 0;
    let mut exhausted = false;
    while found.len() < limit && scanned < LIST_SCAN {
        let page = match state
            .store
            .list_sessions(after.as_deref(), (LIST_SCAN - scanned).min(1000))
            .await
        {
            Ok(page) => page,
            Err(e) => {
                tracing::error!(error = %e, "admin: cannot list sessions");
                return Err((
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the session store did not answer".into(),
                ));
            }
        };
        let Some(last) = page.last() else {
            exhausted = true;
            break;
        };
        after = Some(last.id.clone());
        scanned += page.len();
        for r in page {
            if found.len() == limit {
                // Stop at the last listed one: the next page starts after it.
                break;
            }
            after = Some(r.id.clone());
            if wanted(&r) {
                found.push(r);
            }
        }
    }
    Ok((found, if exhausted { None } else { after }))
}

/// The answer to a session call with a bad token or a malformed ID, if it has one.
async fn session_refusal(req: &HttpRequest, id: &str, state: &AdminState) -> Option<HttpResponse> {
    if let Some(refused) = refusal(req, state).await {
        return Some(refused);
    }
    (!valid_id(id)).then(|| error(StatusCode::BAD_REQUEST, "not a session ID"))
}

pub(super) async fn show(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AdminState>,
) -> HttpResponse {
    if let Some(refused) = session_refusal(&req, &id, &state).await {
        return refused;
    }
    match state.engine.admin_show(&id, TURN_WAIT).await {
        Ok(Some(record)) => json_reply(StatusCode::OK, &session_json(&record)),
        Ok(None) => error(StatusCode::NOT_FOUND, "no such session"),
        Err(cookie_store::StoreError::TurnTimeout(_)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the session is busy with a request; try again",
        ),
        Err(e) => {
            tracing::error!(session = %short_id(&id), error = %e, "admin: cannot read a session");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the session store did not answer",
            )
        }
    }
}

pub(super) async fn end(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AdminState>,
) -> HttpResponse {
    if let Some(refused) = session_refusal(&req, &id, &state).await {
        return refused;
    }
    match state.engine.admin_end(&id, TURN_WAIT).await {
        Ok(AdminEnd::Ended) => json_reply(StatusCode::OK, &json!({ "ended": true })),
        Ok(AdminEnd::Unknown) => error(StatusCode::NOT_FOUND, "no such session"),
        Ok(AdminEnd::HeldElsewhere { broker }) => error(
            StatusCode::CONFLICT,
            &format!("broker {broker} holds the session's dialog or transaction: end it on that broker's admin listener"),
        ),
        Err(e) => {
            tracing::error!(session = %short_id(&id), error = %e, "admin: cannot end a session");
            error(StatusCode::SERVICE_UNAVAILABLE, &format!("the session could not be ended: {e}"))
        }
    }
}

pub(super) async fn purge(req: HttpRequest, state: web::Data<AdminState>) -> HttpResponse {
    if let Some(refused) = refusal(&req, &state).await {
        return refused;
    }
    match state.engine.admin_purge(PURGE_BATCH, PURGE_PASSES).await {
        Ok((examined, deleted)) => json_reply(
            StatusCode::OK,
            &json!({ "examined": examined, "deleted": deleted }),
        ),
        Err(e) => {
            tracing::error!(error = %e, "admin: purge failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the session store did not answer",
            )
        }
    }
}
