//! # The admin listener: what operators and their tools reach
//!
//! A listener of its own (`[admin] listen`, never the public port; off unless configured, and
//! loopback in every example), for people and programs that run the broker, not for its SOAP
//! clients. Every request must carry `Authorization: Bearer <admin token>`; without it, or with a
//! wrong one, it gets 401 and is logged (never the token).
//!
//! - `GET /metrics`: the Prometheus text exposition (`crate::metrics`), the server classes' gauges
//!   read at that moment.
//!
//! Nothing here changes what the public listener does; a scrape costs the request path nothing
//! but the counters it updates anyway.

use crate::cluster::Secret;
use crate::metrics::{self, ClassFigures};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use adapters::ServerClass;
use std::sync::Arc;

/// What the admin handlers share.
pub struct AdminState {
    pub token: Secret,
    /// The server classes, in configuration order.
    pub classes: Vec<Arc<dyn ServerClass>>,
}

/// Register the admin routes.
pub fn configure(cfg: &mut web::ServiceConfig, state: web::Data<AdminState>) {
    cfg.app_data(state)
        .route("/metrics", web::get().to(metrics_get))
        .default_service(web::to(not_found));
}

/// The presented bearer token, checked in constant time; `Some` is the 401 to answer.
fn refusal(req: &HttpRequest, state: &AdminState) -> Option<HttpResponse> {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(token) if state.token.matches(token.as_bytes()) => None,
        other => {
            let peer = req
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            tracing::warn!(peer = %peer, path = %req.path(), reason = if other.is_some() { "wrong token" } else { "no token" }, "admin request refused");
            Some(HttpResponse::Unauthorized()
                .insert_header((
                    header::WWW_AUTHENTICATE,
                    "Bearer realm=\"soap-broker admin\"",
                ))
                .content_type("text/plain")
                .body("The admin API needs Authorization: Bearer <admin token> ([admin] token).\n"))
        }
    }
}

async fn metrics_get(req: HttpRequest, state: web::Data<AdminState>) -> HttpResponse {
    if let Some(refused) = refusal(&req, &state) {
        return refused;
    }
    let figures: Vec<ClassFigures<'_>> = state
        .classes
        .iter()
        .map(|c| ClassFigures {
            class: c.name(),
            stats: c.stats(),
        })
        .collect();
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(metrics::get().render(&figures))
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type("text/plain")
        .body("No such admin path. GET /metrics is served here.\n")
}
