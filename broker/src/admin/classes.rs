//! # Server classes on the admin listener: what each class runs, and an operator's changes
//!
//! `GET /classes` lists every class with its workers. The two changes an operator makes act on
//! this broker's own pool (each broker of a fleet starts its own workers; resize each broker
//! that should change):
//!
//! - `POST /classes/{name}/workers`, a JSON body with exactly one of `workers` (the number to
//!   keep), `grow` or `shrink` (counted from the workers live or starting now, so `{"grow": 1}` is one more
//!   than are running). Missing workers start at once; idle ones beyond the number stop, busy or
//!   pinned ones when they are free and idle long enough (`idle_timeout`). More than
//!   `max_workers` is refused: that limit is the configuration's.
//! - `POST /classes/{name}/restart`: every live worker replaced one by one while the class keeps
//!   serving (a retiring worker finishes its dialogs and its transaction first). 202 when begun,
//!   409 while one is under way; its progress is in `GET /classes` under `restart`.
//!
//! An http class has no workers: both answer 409 with the adapter's reason.

use super::{error, json_reply, refusal, AdminState};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use adapters::{AdapterError, RestartStatus, ServerClass};
use serde_json::{json, Value};
use std::sync::Arc;

/// One class as `GET /classes` shows it.
pub(super) fn class_json(c: &dyn ServerClass) -> Value {
    let config = c.config();
    let stats = c.stats();
    let status = c.workers();
    let workers = status.as_ref().map(|status| {
        status
            .workers
            .iter()
            .map(|w| {
                json!({
                    "id": w.id,
                    "pid": w.pid,
                    "busy": w.busy,
                    "dialogs": w.dialogs,
                    "transaction": w.transaction,
                    "prepared": w.prepared,
                    "queued": w.queued,
                    "served": w.served,
                })
            })
            .collect::<Vec<_>>()
    });
    json!({
        "name": c.name(),
        "adapter": config.adapter.kind_name(),
        "context": if config.context == adapters::Context::Sensitive { "sensitive" } else { "free" },
        "min_workers": config.min_workers,
        "max_workers": config.max_workers,
        "kept": status.as_ref().map(|s| s.kept),
        "live": stats.workers,
        "starting": status.as_ref().map(|s| s.starting),
        "busy": stats.busy,
        "restarts": stats.restarts,
        "queued": stats.queued,
        "restart": status.as_ref().and_then(|s| s.restart.as_ref()).map(restart_json),
        "workers": workers,
        "draining": false,
    })
}

fn restart_json(r: &RestartStatus) -> Value {
    json!({
        "workers": r.replaced + r.remaining,
        "replaced": r.replaced,
        "remaining": r.remaining,
        "retiring": r.retiring,
        "starting": r.starting,
        "failed": r.failed,
        "done": r.failed.is_none() && r.remaining == 0 && !r.starting,
    })
}

pub(super) async fn list(req: HttpRequest, state: web::Data<AdminState>) -> HttpResponse {
    if let Some(refused) = refusal(&req, &state).await {
        return refused;
    }
    let router = state.classes.load_full();
    let mut classes: Vec<Value> = router
        .configured()
        .iter()
        .map(|c| class_json(&**c))
        .collect();
    for c in router.draining() {
        let mut shown = class_json(&**c);
        shown["draining"] = Value::Bool(true);
        classes.push(shown);
    }
    json_reply(StatusCode::OK, &Value::Array(classes))
}

/// The class the path names, if this broker has it (draining ones too).
fn named(state: &AdminState, name: &str) -> Option<Arc<dyn ServerClass>> {
    state.classes.load().class(name).cloned()
}

fn unknown_class(state: &AdminState, name: &str) -> HttpResponse {
    let router = state.classes.load();
    let known: Vec<&str> = router.all().map(|c| c.name()).collect();
    error(
        StatusCode::NOT_FOUND,
        &format!(
            "no server class {name:?} here (classes: {})",
            known.join(", ")
        ),
    )
}

/// A refusal of the adapter's as an HTTP answer.
fn refused_by_class(e: &AdapterError) -> HttpResponse {
    let status = match e {
        AdapterError::ShuttingDown { .. } => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::CONFLICT,
    };
    error(status, &e.to_string())
}

/// `POST /classes/{name}/workers`'s body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ResizeBody {
    workers: Option<usize>,
    grow: Option<usize>,
    shrink: Option<usize>,
}

const RESIZE_FORM: &str =
    "the body must be JSON with exactly one of {\"workers\": N}, {\"grow\": N}, {\"shrink\": N}";

pub(super) async fn resize(
    req: HttpRequest,
    name: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AdminState>,
) -> HttpResponse {
    if let Some(refused) = refusal(&req, &state).await {
        return refused;
    }
    let name = name.into_inner();
    let Some(class) = named(&state, &name) else {
        return unknown_class(&state, &name);
    };
    let asked: ResizeBody = match serde_json::from_slice(&body) {
        Ok(asked) => asked,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("{RESIZE_FORM} ({e})")),
    };
    // Those being started count: `grow 1` twice in a row means two more.
    let live = class
        .workers()
        .map(|s| s.workers.len() + s.starting)
        .unwrap_or_else(|| class.stats().workers);
    let target = match (asked.workers, asked.grow, asked.shrink) {
        (Some(n), None, None) => n,
        (None, Some(n), None) => live.saturating_add(n),
        (None, None, Some(n)) => live.saturating_sub(n),
        _ => return error(StatusCode::BAD_REQUEST, RESIZE_FORM),
    };
    let max = class.config().max_workers;
    if target > max {
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "server class {name:?} may have at most {max} workers (its max_workers); {target} asked"
            ),
        );
    }
    match class.resize(target) {
        Ok(kept) => {
            tracing::info!(class = %name, kept, live, "admin: workers resized");
            json_reply(
                StatusCode::OK,
                &json!({ "name": class.name(), "kept": kept, "live_before": live, "max_workers": max }),
            )
        }
        Err(e) => refused_by_class(&e),
    }
}

pub(super) async fn restart(
    req: HttpRequest,
    name: web::Path<String>,
    state: web::Data<AdminState>,
) -> HttpResponse {
    if let Some(refused) = refusal(&req, &state).await {
        return refused;
    }
    let name = name.into_inner();
    let Some(class) = named(&state, &name) else {
        return unknown_class(&state, &name);
    };
    let progress = |class: &Arc<dyn ServerClass>| {
        class
            .workers()
            .and_then(|s| s.restart)
            .as_ref()
            .map(restart_json)
    };
    match class.restart_workers() {
        Ok(true) => json_reply(
            StatusCode::ACCEPTED,
            &json!({ "name": class.name(), "restart": progress(&class) }),
        ),
        Ok(false) => json_reply(
            StatusCode::CONFLICT,
            &json!({
                "error": format!("a rolling restart of {name:?} is already under way"),
                "restart": progress(&class),
            }),
        ),
        Err(e) => refused_by_class(&e),
    }
}
