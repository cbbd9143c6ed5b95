//! # The web console: `/admin/` on the admin listener
//!
//! A few read-only pages for a person at a browser, written on the server as plain HTML (no
//! JavaScript, no external files: one small style sheet inline), from the same data as the JSON
//! API:
//!
//! - `/admin/`: this broker, the live brokers sharing the store, each endpoint's live sessions,
//!   and the server classes in one table;
//! - `/admin/classes`: each class with its settings, a rolling restart's progress and its
//!   workers (pid, busy, dialogs, transaction, queued, served);
//! - `/admin/sessions`: a search form (endpoint, dialect, principal, holder, idle longer than)
//!   and a page of sessions with a link to the next page;
//! - `/admin/sessions/{id}`: one session (times, transaction and participants, dialog).
//!
//! Sign-in is the admin API's: a browser sends HTTP Basic, with an admin principal's password or
//! the admin token as the password. Every value written into a page is escaped.

use super::classes::class_json;
use super::sessions::{find, session_json, valid_id, ListQuery, TURN_WAIT};
use super::{refusal, AdminState};
use crate::dialect::rfc3339_utc;
use crate::soap::{escape_attr, escape_text};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use cookie_store::now_ms;
use serde_json::Value;

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330}\
header{background:#1d2330;color:#fff;padding:10px 24px;display:flex;gap:32px;align-items:baseline}\
header h1{font-size:18px;margin:0}header a{color:#cfe0ff;margin-right:16px}\
main{padding:12px 24px}h2{font-size:16px;margin:20px 0 8px}\
table{border-collapse:collapse;margin-bottom:12px}th,td{border:1px solid #ccd;padding:3px 8px;text-align:left;white-space:nowrap}\
th{background:#eef1f7}td.n{text-align:right}.muted{color:#667}.bad{color:#a11}\
form{display:flex;flex-wrap:wrap;gap:8px;align-items:end;margin-bottom:12px}\
label{display:flex;flex-direction:column;font-size:12px}dl{display:grid;grid-template-columns:max-content auto;gap:2px 16px}\
dt{font-weight:600}";

/// Text for HTML.
fn t(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_text(s, &mut out);
    out
}

/// A value for an HTML attribute (inside double quotes).
fn a(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_attr(s, &mut out);
    out
}

/// A JSON value as page text: `-` for nothing.
fn v(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => t(s),
        other => t(&other.to_string()),
    }
}

/// Percent-encoding for a query value or a path segment.
fn q(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn page(state: &AdminState, status: StatusCode, title: &str, body: &str) -> HttpResponse {
    let broker = state.engine.registry().instance().broker_id().to_string();
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} · soap-broker {broker}</title>\
<style>{STYLE}</style></head><body><header><h1>soap-broker {broker}</h1><nav>\
<a href=\"/admin/\">Overview</a><a href=\"/admin/classes\">Server classes</a><a href=\"/admin/sessions\">Sessions</a>\
</nav></header><main><h2>{title}</h2>{body}</main></body></html>\n",
        title = t(title),
        broker = t(&broker),
    );
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(html)
}

fn problem(state: &AdminState, status: StatusCode, message: &str) -> HttpResponse {
    page(
        state,
        status,
        "Problem",
        &format!("<p class=\"bad\">{}</p>", t(message)),
    )
}

/// `/admin/`: this broker, the fleet, live sessions, the classes.
pub(super) async fn overview(req: HttpRequest, state: web::Data<AdminState>) -> HttpResponse {
    if let Some(refused) = refusal(&req, &state).await {
        return refused;
    }
    let mut body = String::new();
    body.push_str(&format!(
        "<p>State: <b>{}</b></p>",
        if state.engine.is_draining() {
            "draining"
        } else {
            "serving"
        }
    ));
    body.push_str("<h2>Brokers sharing the store</h2>");
    match state.store.live_brokers(now_ms()).await {
        Ok(brokers) => {
            body.push_str("<table><tr><th>ID</th><th>Address</th><th>Lease until</th></tr>");
            for b in brokers {
                body.push_str(&format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                    t(&b.id),
                    t(&b.advertise),
                    t(&rfc3339_utc(b.lease_until_ms))
                ));
            }
            body.push_str("</table>");
        }
        Err(e) => {
            tracing::error!(error = %e, "console: cannot read the registry");
            body.push_str("<p class=\"bad\">The session store did not answer.</p>");
        }
    }
    body.push_str(
        "<h2>Live sessions</h2><table><tr><th>Endpoint</th><th>Dialect</th><th>Sessions</th></tr>",
    );
    for (path, dialect) in &state.endpoints {
        let count = match state
            .store
            .count_sessions(path, None, now_ms(), state.live_count_limit)
            .await
        {
            Ok(n) if n >= state.live_count_limit => format!("{n} or more"),
            Ok(n) => n.to_string(),
            Err(_) => "the store did not answer".into(),
        };
        body.push_str(&format!(
            "<tr><td><a href=\"/admin/sessions?endpoint={}\">{}</a></td><td>{}</td><td class=\"n\">{}</td></tr>",
            q(path),
            t(path),
            t(dialect),
            t(&count)
        ));
    }
    body.push_str("</table><h2>Server classes</h2>");
    body.push_str(&classes_summary(&state));
    page(&state, StatusCode::OK, "Overview", &body)
}

fn classes_summary(state: &AdminState) -> String {
    let router = state.classes.load_full();
    let mut out = String::from(
        "<table><tr><th>Class</th><th>Adapter</th><th>Kept</th><th>Live</th><th>Busy</th><th>Queued</th><th>Restarts</th><th>State</th></tr>",
    );
    for class in router.all() {
        let c = class_json(&**class);
        let draining = router.draining().iter().any(|d| d.name() == class.name());
        out.push_str(&format!(
            "<tr><td><a href=\"/admin/classes#{}\">{}</a></td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            a(class.name()),
            t(class.name()),
            v(&c["adapter"]),
            v(&c["kept"]),
            v(&c["live"]),
            v(&c["busy"]),
            v(&c["queued"]),
            v(&c["restarts"]),
            if draining { "draining" } else { "serving" }
        ));
    }
    out.push_str("</table>");
    out
}

/// `/admin/classes`: each class and its workers.
pub(super) async fn classes(req: HttpRequest, state: web::Data<AdminState>) -> HttpResponse {
    if let Some(refused) = refusal(&req, &state).await {
        return refused;
    }
    let router = state.classes.load_full();
    let mut body = String::new();
    for class in router.all() {
        let c = class_json(&**class);
        let draining = router.draining().iter().any(|d| d.name() == class.name());
        body.push_str(&format!(
            "<section id=\"{}\"><h2>{}{}</h2><p>{} adapter, context {}, workers {}–{} (kept {}), {} live, {} busy, {} queued, {} restarts</p>",
            a(class.name()),
            t(class.name()),
            if draining { " <span class=\"bad\">(draining)</span>" } else { "" },
            v(&c["adapter"]),
            v(&c["context"]),
            v(&c["min_workers"]),
            v(&c["max_workers"]),
            v(&c["kept"]),
            v(&c["live"]),
            v(&c["busy"]),
            v(&c["queued"]),
            v(&c["restarts"]),
        ));
        let r = &c["restart"];
        if !r.is_null() {
            let state_text = match (&r["failed"], r["done"].as_bool()) {
                (Value::String(why), _) => format!("stopped: {}", t(why)),
                (_, Some(true)) => "done".into(),
                _ => format!("retiring {}", v(&r["retiring"])),
            };
            body.push_str(&format!(
                "<p>Rolling restart: {} of {} replaced, {state_text}</p>",
                v(&r["replaced"]),
                v(&r["workers"])
            ));
        }
        match c["workers"].as_array() {
            None => body.push_str("<p class=\"muted\">No workers of its own (each request is a call to its backend).</p>"),
            Some(workers) if workers.is_empty() => body.push_str("<p class=\"muted\">No worker is running.</p>"),
            Some(workers) => {
                body.push_str("<table><tr><th>Worker</th><th>PID</th><th>State</th><th>Dialogs</th><th>Transaction</th><th>Queued</th><th>Served</th></tr>");
                for w in workers {
                    body.push_str(&format!(
                        "<tr><td>{}</td><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                        v(&w["id"]),
                        v(&w["pid"]),
                        if w["busy"] == Value::Bool(true) { "busy" } else { "idle" },
                        v(&w["dialogs"]),
                        v(&w["transaction"]),
                        v(&w["queued"]),
                        v(&w["served"]),
                    ));
                }
                body.push_str("</table>");
            }
        }
        body.push_str("</section>");
    }
    if body.is_empty() {
        body.push_str("<p class=\"muted\">No server class is configured.</p>");
    }
    page(&state, StatusCode::OK, "Server classes", &body)
}

/// `/admin/sessions`: the search form and one page.
pub(super) async fn sessions(
    req: HttpRequest,
    query: Result<web::Query<ListQuery>, actix_web::Error>,
    state: web::Data<AdminState>,
) -> HttpResponse {
    if let Some(refused) = refusal(&req, &state).await {
        return refused;
    }
    let query = match query {
        Ok(q) => q.into_inner(),
        Err(e) => {
            return problem(&state, StatusCode::BAD_REQUEST, &format!("Bad search: {e}"));
        }
    };
    let field = |name: &str, label: &str, value: &Option<String>, hint: &str| {
        format!(
            "<label>{label}<input name=\"{name}\" value=\"{}\" placeholder=\"{hint}\"></label>",
            a(value.as_deref().unwrap_or(""))
        )
    };
    let mut body = String::from("<form method=\"get\" action=\"/admin/sessions\">");
    body.push_str(&field("endpoint", "Endpoint", &query.endpoint, "/soap"));
    body.push_str(&field(
        "dialect",
        "Dialect",
        &query.dialect,
        "nonstop, dsml, sqlsession",
    ));
    body.push_str(&field("principal", "Principal", &query.principal, ""));
    body.push_str(&field("holder", "Dialog held by broker", &query.holder, ""));
    body.push_str(&field(
        "idle_longer_than",
        "Idle longer than",
        &query.idle_longer_than,
        "30m",
    ));
    body.push_str(&format!(
        "<label>Per page<input name=\"limit\" value=\"{}\" size=\"4\"></label><button type=\"submit\">Search</button></form>",
        query.limit.unwrap_or(100)
    ));
    let (found, next) = match find(&state, &query).await {
        Ok(page) => page,
        Err((status, message)) => {
            body.push_str(&format!("<p class=\"bad\">{}</p>", t(&message)));
            return page(&state, status, "Sessions", &body);
        }
    };
    if found.is_empty() {
        body.push_str("<p class=\"muted\">No session matches.</p>");
    } else {
        body.push_str("<table><tr><th>Session</th><th>Endpoint</th><th>Dialect</th><th>Principal</th><th>Last access</th><th>Expires</th><th>Transaction</th><th>Dialog</th></tr>");
        for r in &found {
            let s = session_json(r);
            let dialog = match &s["subsession"] {
                Value::Null => "-".to_string(),
                d => format!("{} at {}", v(&d["server_class"]), v(&d["broker"])),
            };
            body.push_str(&format!(
                "<tr><td><a href=\"/admin/sessions/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{dialog}</td></tr>",
                q(&r.id),
                t(&r.id),
                v(&s["endpoint"]),
                v(&s["dialect"]),
                v(&s["principal"]),
                v(&s["last_access"]),
                v(&s["expires"]),
                if s["transaction"].is_null() { "-" } else { "open" },
            ));
        }
        body.push_str("</table>");
    }
    if let Some(next) = next {
        let mut link = format!("/admin/sessions?after={}", q(&next));
        for (key, value) in [
            ("endpoint", &query.endpoint),
            ("dialect", &query.dialect),
            ("principal", &query.principal),
            ("holder", &query.holder),
            ("idle_longer_than", &query.idle_longer_than),
        ] {
            if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
                link.push_str(&format!("&{key}={}", q(value)));
            }
        }
        if let Some(limit) = query.limit {
            link.push_str(&format!("&limit={limit}"));
        }
        body.push_str(&format!("<p><a href=\"{}\">Next page →</a></p>", a(&link)));
    }
    page(&state, StatusCode::OK, "Sessions", &body)
}

/// `/admin/sessions/{id}`: one session.
pub(super) async fn session(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AdminState>,
) -> HttpResponse {
    if let Some(refused) = refusal(&req, &state).await {
        return refused;
    }
    if !valid_id(&id) {
        return problem(&state, StatusCode::BAD_REQUEST, "That is not a session ID.");
    }
    let record = match state.engine.admin_show(&id, TURN_WAIT).await {
        Ok(Some(record)) => record,
        Ok(None) => {
            return problem(
                &state,
                StatusCode::NOT_FOUND,
                "No such session (it ended, or expired).",
            )
        }
        Err(e) => {
            tracing::warn!(session = %cookie_store::short_id(&id), error = %e, "console: cannot read a session");
            return problem(
                &state,
                StatusCode::SERVICE_UNAVAILABLE,
                "The session could not be read (busy with a request, or the store did not answer); try again.",
            );
        }
    };
    let s = session_json(&record);
    let mut body = String::from("<dl>");
    for (key, label) in [
        ("id", "Session"),
        ("endpoint", "Endpoint"),
        ("dialect", "Dialect"),
        ("principal", "Principal"),
        ("client_ip", "Client IP"),
        ("created", "Created"),
        ("last_access", "Last access"),
        ("expires", "Expires"),
        ("idle_timeout_seconds", "Idle timeout (s)"),
    ] {
        body.push_str(&format!("<dt>{label}</dt><dd>{}</dd>", v(&s[key])));
    }
    body.push_str("</dl><h2>Transaction</h2>");
    match &s["transaction"] {
        Value::Null => body.push_str("<p class=\"muted\">None open.</p>"),
        txn => {
            body.push_str(&format!(
                "<dl><dt>ID</dt><dd>{}</dd><dt>Started</dt><dd>{}</dd><dt>Deadline</dt><dd>{}</dd></dl>",
                v(&txn["id"]),
                v(&txn["started"]),
                v(&txn["deadline"])
            ));
            body.push_str("<table><tr><th>Participant class</th><th>Worker</th></tr>");
            for p in txn["participants"].as_array().into_iter().flatten() {
                body.push_str(&format!(
                    "<tr><td>{}</td><td>{}</td></tr>",
                    v(&p["server_class"]),
                    v(&p["worker"])
                ));
            }
            body.push_str("</table>");
        }
    }
    body.push_str("<h2>Dialog</h2>");
    match &s["subsession"] {
        Value::Null => body.push_str("<p class=\"muted\">None open.</p>"),
        d => body.push_str(&format!(
            "<dl><dt>Class</dt><dd>{}</dd><dt>Worker</dt><dd>{}</dd><dt>Held by broker</dt><dd>{}</dd></dl>",
            v(&d["server_class"]),
            v(&d["worker"]),
            v(&d["broker"])
        )),
    }
    page(&state, StatusCode::OK, "Session", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_written_into_a_page_cannot_become_markup() {
        assert_eq!(t("<script>&"), "&lt;script&gt;&amp;");
        assert!(!a("\"><script>").contains('"'));
        assert!(!a("\"><script>").contains('<'));
        // A link's query value: nothing but unreserved characters and escapes.
        assert_eq!(q("/soap&x=\"<"), "%2Fsoap%26x%3D%22%3C");
    }
}
