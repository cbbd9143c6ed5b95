//! # The admin listener: what operators and their tools reach
//!
//! A listener of its own (`[admin] listen`, never the public port; off unless configured, and
//! loopback in every example), for people and programs that run the broker, not for its SOAP
//! clients. Every request must carry `Authorization: Bearer <admin token>`, or HTTP Basic of one
//! of `admin.principals` (users of the `[auth]` credentials); without either, or with wrong ones,
//! it gets 401 and is logged (never the token or the password).
//!
//! - `GET /metrics`: the Prometheus text exposition (`crate::metrics`), the server classes' gauges
//!   read at that moment.
//! - `GET /sessions?limit=&after=&endpoint=&dialect=&principal=&holder=&idle_longer_than=`: a
//!   page of sessions in ID order (filters: exact endpoint, dialect, principal; `holder`, the
//!   broker holding a dialog; `idle_longer_than`, a duration such as `30m`), with `next`, the ID
//!   to pass as `after` for the next page (`null` at the end). A page scans at most
//!   [`LIST_SCAN`] records, so a filter that matches little returns short pages with a `next`.
//! - `GET /sessions/{id}`: one session as JSON (endpoint, dialect, principal, times, its
//!   transaction and participants, its dialog's class, worker and broker); 404 when unknown.
//! - `DELETE /sessions/{id}`: end it now (dialog aborted, transaction rolled back, record deleted
//!   durably; its next request gets the dialect's unknown-session fault). When another live broker
//!   holds its dialog or transaction, that broker ends it (`POST /_cluster/expire?end`); without a
//!   cluster secret the answer is 409, naming the broker.
//! - `POST /sessions/purge`: sweep every expired session now.
//! - `GET /brokers`: the live brokers of the shared store's registry.
//! - `POST /reload`: read the configuration again and apply what a running broker can
//!   (`crate::reload`: classes, services, endpoint settings); the answer says what changed and
//!   what needs a restart. 400 naming the key for a file with a mistake (nothing changes).
//! - `POST /drain`: stop taking new sessions, dialogs and transactions (`/healthz` answers 503
//!   `draining` at once, so a load balancer takes the broker out), let the dialogs and
//!   transactions held here finish (up to `admin.drain_timeout`), then exit as after SIGTERM.
//!   `GET /drain` tells how far it is.
//! - `GET /classes`: each server class (adapter, context, worker limits, workers kept) and its
//!   workers: pid, busy, dialogs, pinned transaction, queued and served requests; restarts, queue
//!   depth and the last rolling restart's progress.
//! - `POST /classes/{name}/workers` with `{"workers": N}`, `{"grow": N}` or `{"shrink": N}`: how
//!   many workers this broker keeps for the class (grow and shrink count from the workers live
//!   now); `POST /classes/{name}/restart`: replace its workers one by one (202; 409 while one is
//!   under way). Both act on this broker's own workers: each broker of a fleet has its own.
//!
//! JSON in and out; errors are `{"error": "…"}` with the HTTP status. A session ID given in a path
//! is never echoed in an error or a log line (only its first characters are logged).
//! Nothing here changes what the public listener does; a scrape costs the request path nothing
//! but the counters it updates anyway.

mod classes;
pub mod cli;

use crate::cluster::Secret;
use crate::dialect::rfc3339_utc;
use crate::engine::{AdminEnd, SessionEngine};
use crate::metrics::{self, ClassFigures};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use adapters::ServerClass;
use cookie_store::{now_ms, short_id, SessionRecord};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// How long an admin call waits for a session's request in progress.
const TURN_WAIT: Duration = Duration::from_secs(5);
/// The most sessions one page lists, and the most records it reads to find them.
const LIST_MAX: usize = 1000;
pub const LIST_SCAN: usize = 10_000;
/// Expired sessions examined per purge pass, and passes at most per call.
const PURGE_BATCH: usize = 1000;
const PURGE_PASSES: usize = 1000;

/// What the admin handlers share.
pub struct AdminState {
    pub token: Secret,
    /// `admin.principals`, who may sign in with HTTP Basic against `authenticator`.
    pub principals: Vec<String>,
    pub authenticator: Option<Arc<crate::auth::Authenticator>>,
    /// The routing table's server classes (configured, then draining; a reload swaps them).
    pub classes: Arc<crate::router::Roster>,
    /// `POST /reload`'s work.
    pub reloader: Arc<crate::reload::Reloader>,
    pub engine: Arc<SessionEngine>,
    pub store: Arc<dyn cookie_store::Store>,
    pub drain: Arc<Drain>,
    /// Every endpoint's path and dialect name, for the live session counts.
    pub endpoints: Vec<(String, &'static str)>,
    pub live_count_limit: usize,
}

/// A drain's progress, and the signal that it is done (the broker then stops like after SIGTERM).
pub struct Drain {
    timeout: Duration,
    started: std::sync::atomic::AtomicBool,
    /// Notified once, when the broker may stop.
    pub done: tokio::sync::Notify,
}

impl Drain {
    pub fn new(timeout: Duration) -> Drain {
        Drain {
            timeout,
            started: std::sync::atomic::AtomicBool::new(false),
            done: tokio::sync::Notify::new(),
        }
    }
}

/// What still ties sessions to this broker: dialogs and transactions pinned to its workers.
fn held_here(classes: &crate::router::Roster) -> (usize, usize) {
    let (mut dialogs, mut transactions) = (0, 0);
    for c in classes.load().all() {
        let (d, t) = held_by(c);
        dialogs += d;
        transactions += t;
    }
    (dialogs, transactions)
}

/// The dialogs and transactions pinned to one class's workers.
pub fn held_by(class: &Arc<dyn ServerClass>) -> (usize, usize) {
    let (mut dialogs, mut transactions) = (0, 0);
    for w in class.workers().map(|s| s.workers).unwrap_or_default() {
        dialogs += w.dialogs;
        transactions += usize::from(w.transaction.is_some());
    }
    (dialogs, transactions)
}

async fn drain_post(req: HttpRequest, state: web::Data<AdminState>) -> HttpResponse {
    if let Some(refused) = refusal(&req, &state).await {
        return refused;
    }
    state.engine.drain();
    let first = !state
        .drain
        .started
        .swap(true, std::sync::atomic::Ordering::SeqCst);
    let (dialogs, transactions) = held_here(&state.classes);
    if first {
        tracing::warn!(dialogs, transactions, timeout = ?state.drain.timeout, "draining: no new sessions, dialogs or transactions; exiting once those held here are done");
        let state = state.clone();
        actix_web::rt::spawn(async move {
            let started = std::time::Instant::now();
            loop {
                let (dialogs, transactions) = held_here(&state.classes);
                if dialogs + transactions == 0 {
                    tracing::info!("drained: nothing held here any more; stopping");
                    break;
                }
                if started.elapsed() >= state.drain.timeout {
                    tracing::warn!(dialogs, transactions, "drain timeout: stopping with work still held here (its sessions see -356; recovery settles the transactions)");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            state.drain.done.notify_one();
        });
    }
    json_reply(
        StatusCode::ACCEPTED,
        &json!({ "draining": true, "dialogs": dialogs, "transactions": transactions }),
    )
}

async fn drain_get(req: HttpRequest, state: web::Data<AdminState>) -> HttpResponse {
    if let Some(refused) = refusal(&req, &state).await {
        return refused;
    }
    let (dialogs, transactions) = held_here(&state.classes);
    json_reply(
        StatusCode::OK,
        &json!({ "draining": state.engine.is_draining(), "dialogs": dialogs, "transactions": transactions }),
    )
}

async fn reload_post(req: HttpRequest, state: web::Data<AdminState>) -> HttpResponse {
    if let Some(refused) = refusal(&req, &state).await {
        return refused;
    }
    match state.reloader.reload().await {
        Ok(report) => json_reply(
            StatusCode::OK,
            &serde_json::to_value(&report).unwrap_or(Value::Null),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "reload refused; nothing changed");
            let status = match e {
                crate::reload::ReloadError::Config(_) => StatusCode::BAD_REQUEST,
                crate::reload::ReloadError::StillDraining(_) => StatusCode::CONFLICT,
                crate::reload::ReloadError::ServerClass(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(status, &format!("{e}; nothing changed"))
        }
    }
}

/// Register the admin routes.
pub fn configure(cfg: &mut web::ServiceConfig, state: web::Data<AdminState>) {
    cfg.app_data(state)
        .route("/metrics", web::get().to(metrics_get))
        .route("/sessions", web::get().to(sessions_list))
        .route("/sessions/purge", web::post().to(sessions_purge))
        .route("/sessions/{id}", web::get().to(session_get))
        .route("/sessions/{id}", web::delete().to(session_delete))
        .route("/brokers", web::get().to(brokers_get))
        .route("/classes", web::get().to(classes::list))
        .route("/classes/{name}/workers", web::post().to(classes::resize))
        .route("/classes/{name}/restart", web::post().to(classes::restart))
        .route("/drain", web::post().to(drain_post))
        .route("/drain", web::get().to(drain_get))
        .route("/reload", web::post().to(reload_post))
        .default_service(web::to(not_found));
}

fn json_reply(status: StatusCode, body: &Value) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        .body(body.to_string())
}

fn error(status: StatusCode, message: &str) -> HttpResponse {
    json_reply(status, &json!({ "error": message }))
}

/// A session ID as the store has them: refused before any store call otherwise.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'+' | b'/' | b'=')
        })
}

/// A session record as JSON.
fn session_json(r: &SessionRecord) -> Value {
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
struct ListQuery {
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    dialect: Option<String>,
    #[serde(default)]
    principal: Option<String>,
    #[serde(default)]
    holder: Option<String>,
    #[serde(default)]
    idle_longer_than: Option<String>,
}

async fn sessions_list(
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
    let limit = query.limit.unwrap_or(100).clamp(1, LIST_MAX);
    let idle = match query
        .idle_longer_than
        .as_deref()
        .map(crate::config::parse_duration)
    {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, &format!("idle_longer_than: {e}")),
    };
    if query.after.as_deref().is_some_and(|a| !valid_id(a)) {
        return error(StatusCode::BAD_REQUEST, "after: not a session ID");
    }
    let now = now_ms();
    let wanted = |r: &SessionRecord| {
        query.endpoint.as_ref().is_none_or(|e| &r.endpoint == e)
            && query.dialect.as_ref().is_none_or(|d| &r.dialect == d)
            && query
                .principal
                .as_ref()
                .is_none_or(|p| r.principal.as_ref() == Some(p))
            && query
                .holder
                .as_ref()
                .is_none_or(|h| r.subsession.as_ref().is_some_and(|s| &s.broker == h))
            && idle.is_none_or(|d| {
                now.saturating_sub(r.last_access_ms)
                    > u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
            })
    };
    let mut found = Vec::new();
    let mut after = query.after.clone();
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
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the session store did not answer",
                );
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
                found.push(session_json(&r));
            }
        }
    }
    let next = if exhausted { None } else { after };
    json_reply(StatusCode::OK, &json!({ "sessions": found, "next": next }))
}

/// The answer to a session call with a bad token or a malformed ID, if it has one.
async fn session_refusal(req: &HttpRequest, id: &str, state: &AdminState) -> Option<HttpResponse> {
    if let Some(refused) = refusal(req, state).await {
        return Some(refused);
    }
    (!valid_id(id)).then(|| error(StatusCode::BAD_REQUEST, "not a session ID"))
}

async fn session_get(
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

async fn session_delete(
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

async fn sessions_purge(req: HttpRequest, state: web::Data<AdminState>) -> HttpResponse {
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

async fn brokers_get(req: HttpRequest, state: web::Data<AdminState>) -> HttpResponse {
    if let Some(refused) = refusal(&req, &state).await {
        return refused;
    }
    match state.store.live_brokers(now_ms()).await {
        Ok(brokers) => json_reply(
            StatusCode::OK,
            &Value::Array(
                brokers
                    .iter()
                    .map(|b| {
                        json!({
                            "id": b.id,
                            "advertise": b.advertise,
                            "lease_until": rfc3339_utc(b.lease_until_ms),
                        })
                    })
                    .collect(),
            ),
        ),
        Err(e) => {
            tracing::error!(error = %e, "admin: cannot read the registry");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the session store did not answer",
            )
        }
    }
}

/// The request's credentials: the bearer token (checked in constant time) or HTTP Basic of one of
/// `admin.principals` (argon2, off this thread unless verified before); `Some` is the 401 to answer.
async fn refusal(req: &HttpRequest, state: &AdminState) -> Option<HttpResponse> {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let reason = match authorization {
        None => "no credentials",
        Some(value) => match value.strip_prefix("Bearer ") {
            Some(token) if state.token.matches(token.trim().as_bytes()) => return None,
            Some(_) => "wrong token",
            None => match admin_principal(state, value).await {
                Some(user) if state.principals.contains(&user) => {
                    tracing::debug!(principal = %user, path = %req.path(), "admin request by a principal");
                    return None;
                }
                Some(_) => "not an admin principal",
                None => "wrong or unknown Basic credentials",
            },
        },
    };
    let peer = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    tracing::warn!(peer = %peer, path = %req.path(), reason, "admin request refused");
    let mut reply = HttpResponse::Unauthorized();
    reply.append_header((
        header::WWW_AUTHENTICATE,
        "Bearer realm=\"soap-broker admin\"",
    ));
    if !state.principals.is_empty() {
        reply.append_header((
            header::WWW_AUTHENTICATE,
            "Basic realm=\"soap-broker admin\"",
        ));
    }
    Some(reply.content_type("text/plain").body(
        "The admin API needs Authorization: Bearer <admin token> ([admin] token), or HTTP Basic of an admin principal ([admin] principals).\n",
    ))
}

/// The `[auth]` user a Basic `Authorization` value proves, if any (only when principals are set).
async fn admin_principal(state: &AdminState, value: &str) -> Option<String> {
    use crate::auth::{AuthMode, AuthOutcome};
    if state.principals.is_empty() {
        return None;
    }
    let authenticator = state.authenticator.clone()?;
    let outcome = match authenticator.check_cheap(AuthMode::Required, Some(value)) {
        Some(outcome) => outcome,
        None => {
            let value = value.to_string();
            web::block(move || authenticator.check(AuthMode::Required, Some(&value)))
                .await
                .ok()?
        }
    };
    match outcome {
        AuthOutcome::User(user) => Some(user),
        _ => None,
    }
}

async fn metrics_get(req: HttpRequest, state: web::Data<AdminState>) -> HttpResponse {
    if let Some(refused) = refusal(&req, &state).await {
        return refused;
    }
    let classes = state.classes.load_full();
    let figures: Vec<ClassFigures<'_>> = classes
        .all()
        .map(|c| ClassFigures {
            class: c.name(),
            stats: c.stats(),
        })
        .collect();
    let mut live = Vec::with_capacity(state.endpoints.len());
    for (path, dialect) in &state.endpoints {
        match state
            .store
            .count_sessions(path, None, now_ms(), state.live_count_limit)
            .await
        {
            Ok(n) => live.push((path.as_str(), *dialect, n)),
            // The store's own error series tells; the last count stays as it was.
            Err(e) => {
                tracing::warn!(endpoint = %path, error = %e, "metrics: cannot count live sessions")
            }
        }
    }
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(metrics::get().render(&figures, &live))
}

async fn not_found() -> HttpResponse {
    error(
        StatusCode::NOT_FOUND,
        "no such admin path: GET /metrics, GET /sessions, GET|DELETE /sessions/{id}, POST /sessions/purge, GET /brokers, GET /classes, POST /classes/{name}/workers, POST /classes/{name}/restart, GET|POST /drain, POST /reload",
    )
}
