//! # The admin listener: what operators and their tools reach
//!
//! A listener of its own (`[admin] listen`, never the public port; off unless configured, and
//! loopback in every example), for people and programs that run the broker, not for its SOAP
//! clients. Every request must carry `Authorization: Bearer <admin token>`, HTTP Basic with the
//! token as the password (what a browser can send, for the console), or HTTP Basic of one of
//! `admin.principals` (users of the `[auth]` credentials); without any, or with wrong ones, it gets
//! 401 and is logged (never the token or the password).
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
//! - `GET /admin/`: the web console, read-only HTML pages for a browser (`console`).
//!
//! JSON in and out; errors are `{"error": "…"}` with the HTTP status. A session ID given in a path
//! is never echoed in an error or a log line (only its first characters are logged).
//! Nothing here changes what the public listener does; a scrape costs the request path nothing
//! but the counters it updates anyway.

mod classes;
pub mod cli;
mod console;
mod sessions;

use crate::cluster::Secret;
use crate::dialect::rfc3339_utc;
use crate::engine::SessionEngine;
use crate::metrics::{self, ClassFigures};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use adapters::ServerClass;
use cookie_store::now_ms;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

pub use sessions::LIST_SCAN;

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

async fn console_home() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/admin/"))
        .finish()
}

/// Register the admin routes.
pub fn configure(cfg: &mut web::ServiceConfig, state: web::Data<AdminState>) {
    cfg.app_data(state)
        .route("/metrics", web::get().to(metrics_get))
        .route("/sessions", web::get().to(sessions::list))
        .route("/sessions/purge", web::post().to(sessions::purge))
        .route("/sessions/{id}", web::get().to(sessions::show))
        .route("/sessions/{id}", web::delete().to(sessions::end))
        .route("/brokers", web::get().to(brokers_get))
        .route("/classes", web::get().to(classes::list))
        .route("/classes/{name}/workers", web::post().to(classes::resize))
        .route("/classes/{name}/restart", web::post().to(classes::restart))
        .route("/drain", web::post().to(drain_post))
        .route("/drain", web::get().to(drain_get))
        .route("/reload", web::post().to(reload_post))
        .route("/admin", web::get().to(console_home))
        .route("/admin/", web::get().to(console::overview))
        .route("/admin/classes", web::get().to(console::classes))
        .route("/admin/sessions", web::get().to(console::sessions))
        .route("/admin/sessions/{id}", web::get().to(console::session))
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
            // A browser has no way to send a bearer token: Basic with the token as the password
            // (any user name) does as well.
            None if basic_password(value).is_some_and(|p| state.token.matches(p.as_bytes())) => {
                return None
            }
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
    reply.append_header((
        header::WWW_AUTHENTICATE,
        "Basic realm=\"soap-broker admin\", charset=\"UTF-8\"",
    ));
    Some(reply.content_type("text/plain").body(
        "The admin API needs Authorization: Bearer <admin token> ([admin] token), HTTP Basic with the admin token as the password, or HTTP Basic of an admin principal ([admin] principals).\n",
    ))
}

/// The password of a Basic `Authorization` value, if it is one.
fn basic_password(value: &str) -> Option<String> {
    use base64::Engine as _;
    let encoded = value.strip_prefix("Basic ")?.trim();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':').map(|(_, p)| p.to_string())
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
        "no such admin path: GET /metrics, GET /sessions, GET|DELETE /sessions/{id}, POST /sessions/purge, GET /brokers, GET /classes, POST /classes/{name}/workers, POST /classes/{name}/restart, GET|POST /drain, POST /reload, GET /admin/",
    )
}
