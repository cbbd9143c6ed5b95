//! # The HTTP front end
//!
//! actix-web serves each configured endpoint with the handler of its dialect, `GET /healthz`, and
//! nothing else. The HTTP rules of `spec/soap.md` live here: POST only (405 with `Allow: POST`), the
//! SOAP media types only (415), the body limit (413, enforced from `Content-Length` before the body is
//! read, and while reading a chunked body).
//!
//! A request's SOAP work runs in its own task on the worker's runtime: if the client disconnects,
//! actix drops the handler, but the task still finishes, so a session's turn is always given back and
//! nothing is left half done.

use crate::auth::{AuthMode, AuthOutcome};
use crate::config::EndpointConfig;
use crate::dialect::{render_fault, Dialect, HttpInfo, HttpReply};
use crate::engine::{short_id, SessionDirective, SessionEngine};
use crate::soap::{self, Fault, FaultCode, Limits, Roles, SoapError, SoapVersion};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Instant;

/// What every handler shares.
pub struct Shared {
    pub engine: Arc<SessionEngine>,
    pub limits: Limits,
    /// The credentials, when any endpoint authenticates.
    pub authenticator: Option<Arc<crate::auth::Authenticator>>,
}

/// One endpoint: its configuration and its dialect.
pub struct Endpoint<D: Dialect> {
    pub config: EndpointConfig,
    pub roles: Roles,
    pub dialect: D,
}

/// Register an endpoint's routes on an actix `ServiceConfig`.
pub fn configure_endpoint<D: Dialect>(
    cfg: &mut web::ServiceConfig,
    endpoint: Arc<Endpoint<D>>,
    limits: &Limits,
) {
    let path = endpoint.config.path.clone();
    cfg.service(
        web::resource(path)
            .app_data(web::Data::from(endpoint))
            .app_data(web::PayloadConfig::new(limits.max_body_bytes))
            .route(web::post().to(soap_post::<D>))
            .default_service(web::to(method_not_allowed)),
    );
}

/// `GET /healthz`: 200 when the store answers, 503 otherwise.
pub async fn healthz(shared: web::Data<Shared>) -> HttpResponse {
    match shared.engine.store().ping().await {
        Ok(()) => HttpResponse::Ok().content_type("text/plain").body("ok\n"),
        Err(e) => HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body(format!("store unavailable: {e}\n")),
    }
}

async fn method_not_allowed() -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header((header::ALLOW, "POST"))
        .content_type("text/plain")
        .body("Only POST is allowed on a SOAP endpoint.\n")
}

/// The SOAP version the HTTP request announces through its media type, if any.
enum MediaType {
    Soap11,
    Soap12 {
        action: Option<String>,
    },
    /// No Content-Type at all (the Microsoft DSML client sends none): the envelope decides.
    Absent,
}

fn media_type(req: &HttpRequest) -> Result<MediaType, String> {
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
        return Ok(MediaType::Absent);
    };
    let value = value
        .to_str()
        .map_err(|_| "the Content-Type header is not ASCII".to_string())?;
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        "text/xml" => Ok(MediaType::Soap11),
        "application/soap+xml" => {
            let action = parts.find_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim().eq_ignore_ascii_case("action").then(|| v.trim().trim_matches('"').to_string())
            });
            Ok(MediaType::Soap12 { action })
        }
        "" => Ok(MediaType::Absent),
        _ => Err(format!("unsupported media type {essence:?}: SOAP 1.1 uses text/xml, SOAP 1.2 application/soap+xml")),
    }
}

/// A version for replies written before the envelope is understood: the 1.2 namespace in the bytes
/// wins, then the media type; SOAP 1.1 otherwise.
fn guess_version(body: &[u8], media: &MediaType) -> SoapVersion {
    let needle = soap::SOAP12_ENV_NS.as_bytes();
    if body.windows(needle.len()).take(4096).any(|w| w == needle) {
        return SoapVersion::V12;
    }
    match media {
        MediaType::Soap12 { .. } => SoapVersion::V12,
        _ => SoapVersion::V11,
    }
}

async fn soap_post<D: Dialect>(
    req: HttpRequest,
    body: Bytes,
    shared: web::Data<Shared>,
    endpoint: web::Data<Endpoint<D>>,
) -> HttpResponse {
    let started = Instant::now();
    let media = match media_type(&req) {
        Ok(m) => m,
        Err(reason) => {
            return HttpResponse::UnsupportedMediaType()
                .content_type("text/plain")
                .body(reason + "\n");
        }
    };
    let soap_action = match &media {
        MediaType::Soap12 { action: Some(a) } => Some(a.clone()),
        _ => req
            .headers()
            .get("SOAPAction")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().trim_matches('"').to_string()),
    };
    let principal = match authenticate(&req, &shared, endpoint.config.auth).await {
        Ok(p) => p,
        Err(challenge) => return challenge,
    };
    let http = HttpInfo {
        client_ip: req.peer_addr().map(|a| a.ip()),
        principal,
        soap_action,
    };
    let path = endpoint.config.path.clone();

    // Run the SOAP work in its own task so that a client disconnect cannot cancel it half way.
    let task =
        actix_web::rt::spawn(
            async move { process(&shared, &endpoint, &body, &media, &http).await },
        );
    let (reply, session) = match task.await {
        Ok(done) => done,
        Err(e) => {
            tracing::error!(error = %e, "request task failed");
            let fault = Fault::new(FaultCode::Receiver, "Internal error");
            (render_fault(SoapVersion::V11, &fault), None)
        }
    };
    tracing::debug!(
        path = %path,
        status = reply.status.as_u16(),
        session = session.as_deref().map(short_id).unwrap_or("-"),
        elapsed_us = started.elapsed().as_micros() as u64,
        "request"
    );
    HttpResponse::build(reply.status)
        .content_type(reply.content_type)
        .body(reply.body)
}

/// The principal of a request (None: anonymous), or the 401 to answer. Cached credentials are
/// answered inline; the first check of new ones runs argon2 on the blocking pool, never on the
/// worker's event loop.
async fn authenticate(
    req: &HttpRequest,
    shared: &web::Data<Shared>,
    mode: AuthMode,
) -> Result<Option<String>, HttpResponse> {
    if mode == AuthMode::None {
        return Ok(None);
    }
    let Some(auth) = shared.authenticator.clone() else {
        // The configuration refuses an authenticating endpoint without credentials.
        return Ok(None);
    };
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let realm = auth.realm().to_string();
    // Only credentials not verified before need argon2, and only that goes to the blocking pool.
    let outcome = match auth.check_cheap(mode, header.as_deref()) {
        Some(outcome) => outcome,
        None => web::block(move || auth.check(mode, header.as_deref()))
            .await
            .unwrap_or(AuthOutcome::Challenge),
    };
    match outcome {
        AuthOutcome::User(user) => Ok(Some(user)),
        AuthOutcome::Anonymous => Ok(None),
        AuthOutcome::Challenge => Err(HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, format!("Basic realm=\"{realm}\"")))
            .content_type("text/plain")
            .body("Authentication required.\n")),
    }
}

/// The SOAP pipeline: envelope → dialect → session engine → dialect. Returns the reply and, for the
/// log, the session it concerned.
async fn process<D: Dialect>(
    shared: &Shared,
    endpoint: &Endpoint<D>,
    body: &[u8],
    media: &MediaType,
    http: &HttpInfo,
) -> (HttpReply, Option<String>) {
    let dialect = &endpoint.dialect;
    let envelope = match soap::parse_envelope(body, &shared.limits, &endpoint.roles) {
        Ok(e) => e,
        Err(e) => {
            return (
                dialect.write_soap_error(guess_version(body, media), &e),
                None,
            )
        }
    };
    let version = envelope.version;
    if !dialect.accepts_version(version) {
        let e = SoapError::VersionMismatch(Some(version.envelope_ns().to_string()));
        return (dialect.write_soap_error(SoapVersion::V11, &e), None);
    }
    if let Err(e) =
        soap::check_must_understand(&envelope, |ns, local| dialect.understands(ns, local))
    {
        return (dialect.write_soap_error(version, &e), None);
    }
    let (request, cx) = match dialect.read_request(envelope, http) {
        Ok(r) => r,
        Err(r) => return (dialect.write_error(version, r.context, r.error), None),
    };
    let session = match &request.session {
        SessionDirective::Continue(id) => Some(id.clone()),
        _ => None,
    };
    let response = shared.engine.handle(&endpoint.config, request).await;
    let session = session.or_else(|| response.session.as_ref().map(|s| s.id.clone()));
    if let Err(e) = &response.result {
        tracing::debug!(session = session.as_deref().map(short_id).unwrap_or("-"), error = %e, "request failed");
    }
    (dialect.write_reply(version, cx, response), session)
}
