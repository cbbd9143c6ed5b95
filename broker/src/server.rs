//! # The HTTP front end
//!
//! actix-web serves each configured endpoint with the handler of its dialect, its WSDL at
//! `GET <path>?wsdl`, `GET /healthz`, and nothing else. The HTTP rules of `spec/soap.md` live
//! here: POST only (405 with `Allow: POST`; GET only for the WSDL), the
//! SOAP media types only (415), the body limit (413, enforced from `Content-Length` before the body is
//! read, and while reading a chunked body).
//!
//! A request's SOAP work runs in its own task on the worker's runtime: if the client disconnects,
//! actix drops the handler, but the task still finishes, so a session's turn is always given back and
//! nothing is left half done.
//!
//! ## The internal paths (`crate::cluster`)
//! Forwarding a request to the broker that holds its session is the engine's business (through its
//! `Peer`); this layer only serves the other end, when a cluster secret is configured:
//! `POST /_cluster/forward` (a request another broker's engine forwarded, already parsed: it goes
//! straight to this engine, and its response goes back unrendered) and `POST /_cluster/expire`. A
//! call without the right `X-Cluster-Secret` gets 403 and is logged.

use crate::auth::{AuthMode, AuthOutcome};
use crate::cluster::forward::{
    check_secret, EXPIRE_PATH, FORWARD_MEDIA_TYPE, FORWARD_PATH, FROM_HEADER, SECRET_HEADER,
};
use crate::cluster::peer::{self, Forwarded};
use crate::cluster::Secret;
use crate::config::EndpointConfig;
use crate::dialect::{render_fault, Dialect, HttpInfo, HttpReply};
use crate::engine::{short_id, SessionDirective, SessionEngine};
use crate::soap::{self, Fault, FaultCode, Limits, Roles, SoapError, SoapVersion};
use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// What every handler shares.
pub struct Shared {
    pub engine: Arc<SessionEngine>,
    /// The store as a whole, for `GET /healthz`.
    pub store: Arc<dyn cookie_store::StoreHealth>,
    pub limits: Limits,
    /// The credentials, when any endpoint authenticates.
    pub authenticator: Option<Arc<crate::auth::Authenticator>>,
    /// The cluster secret; `None`: no internal path is served.
    pub secret: Option<Secret>,
    /// Every endpoint by path, for requests other brokers forward here (a reload swaps it).
    pub endpoints: arc_swap::ArcSwap<HashMap<String, EndpointConfig>>,
    /// `log.request_spans`: a span per request (about 3–4 % of a continue's cost on the
    /// reference machine, BENCHMARKS.md), or none.
    pub request_spans: bool,
}

/// One endpoint: its configuration and its dialect.
pub struct Endpoint<D: Dialect> {
    pub config: EndpointConfig,
    pub roles: Roles,
    pub dialect: D,
    /// The endpoint's WSDL (`GET <path>?wsdl`), written at start-up.
    pub wsdl: Bytes,
    /// Its request figures (`crate::metrics`).
    pub metrics: Arc<crate::metrics::EndpointMetrics>,
}

/// An endpoint as served now: a reload stores its new configuration here (the path and the
/// dialect stay; requests in progress finish with the one they loaded).
pub type EndpointSlot<D> = arc_swap::ArcSwap<Endpoint<D>>;

/// Register an endpoint's routes on an actix `ServiceConfig`.
pub fn configure_endpoint<D: Dialect>(
    cfg: &mut web::ServiceConfig,
    endpoint: Arc<EndpointSlot<D>>,
    limits: &Limits,
) {
    let path = endpoint.load().config.path.clone();
    let data = web::Data::from(endpoint);
    cfg.service(
        web::resource(path)
            .app_data(data)
            .app_data(web::PayloadConfig::new(limits.max_body_bytes))
            .route(web::post().to(soap_post::<D>))
            .route(web::get().to(wsdl_get::<D>))
            .default_service(web::to(method_not_allowed)),
    );
}

/// `GET <path>?wsdl` (any case, as toolkits write it): the endpoint's WSDL, behind the endpoint's
/// own authentication. Any other GET is the 405 of a SOAP endpoint.
async fn wsdl_get<D: Dialect>(
    req: HttpRequest,
    shared: web::Data<Shared>,
    slot: web::Data<EndpointSlot<D>>,
) -> HttpResponse {
    let endpoint = slot.load_full();
    if !req.query_string().eq_ignore_ascii_case("wsdl") {
        return method_not_allowed().await;
    }
    if let Err(challenge) = authenticate(&req, &shared, endpoint.config.auth).await {
        return challenge;
    }
    HttpResponse::Ok()
        .content_type("text/xml; charset=utf-8")
        .body(endpoint.wsdl.clone())
}

/// Register the internal paths, `POST /_cluster/forward` and `POST /_cluster/expire` (only with a
/// cluster secret). A forwarded request is a body of at most `limits.max_body_bytes` plus what the
/// engine's request adds to it.
pub fn configure_internal(cfg: &mut web::ServiceConfig, limits: &Limits) {
    cfg.service(
        web::resource(FORWARD_PATH)
            .app_data(web::PayloadConfig::new(
                limits.max_body_bytes + FORWARD_REQUEST_OVERHEAD,
            ))
            .route(web::post().to(cluster_forward))
            .default_service(web::to(method_not_allowed)),
    );
    cfg.service(
        web::resource(EXPIRE_PATH)
            .app_data(web::PayloadConfig::new(1024))
            .route(web::post().to(cluster_expire))
            .default_service(web::to(method_not_allowed)),
    );
}

/// `GET /healthz`: 200 when the store answers, 503 otherwise.
pub async fn healthz(shared: web::Data<Shared>) -> HttpResponse {
    // A draining broker is out of the load balancer's rotation at once.
    if shared.engine.is_draining() {
        return HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body("draining\n");
    }
    match shared.store.ping().await {
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

/// What a forwarded request adds to the client's body: its session ID, principal, address and
/// service name, with their lengths.
pub const FORWARD_REQUEST_OVERHEAD: usize = 64 * 1024;

async fn soap_post<D: Dialect>(
    req: HttpRequest,
    body: Bytes,
    shared: web::Data<Shared>,
    slot: web::Data<EndpointSlot<D>>,
) -> HttpResponse {
    serve(req, body, shared, slot.load_full()).await
}

/// `POST /_cluster/forward`: a request another broker's engine found held here. It runs in this
/// engine as the client sent it there (never forwarded again); the response goes back as it is,
/// for the other broker's dialect to render.
async fn cluster_forward(req: HttpRequest, body: Bytes, shared: web::Data<Shared>) -> HttpResponse {
    if let Some(refusal) = refuse_internal(&req, &shared) {
        return refusal;
    }
    let forwarded: Forwarded = match peer::decode(&body) {
        Ok(f) => f,
        Err(e) => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("the forwarded request is {e}"),
            )
        }
    };
    let Some(endpoint) = shared.endpoints.load().get(&forwarded.endpoint).cloned() else {
        return plain(
            StatusCode::BAD_REQUEST,
            format!("no endpoint {} here", forwarded.endpoint),
        );
    };
    let from = req
        .headers()
        .get(FROM_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(64).collect::<String>())
        .unwrap_or_else(|| "?".to_string());
    let engine = shared.engine.clone();
    let mut request = forwarded.request;
    request.forwarded = true;
    // Its own task, like a client's request: the work finishes even if the caller goes away.
    let task = actix_web::rt::spawn(async move {
        let session = match &request.session {
            SessionDirective::Continue(id) => short_id(id).to_string(),
            _ => "-".to_string(),
        };
        let response = Box::pin(engine.handle(&endpoint, &request)).await;
        tracing::debug!(session = %session, forwarded_by = %from, ok = response.result.is_ok(), "forwarded request");
        response
    });
    match task
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| peer::encode(&r))
    {
        Ok(bytes) => HttpResponse::Ok()
            .content_type(FORWARD_MEDIA_TYPE)
            .body(bytes),
        Err(e) => {
            tracing::error!(error = %e, "forwarded request failed");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
        }
    }
}

/// `POST /_cluster/expire` with a session ID: another broker's sweeper found it due and held here.
async fn cluster_expire(req: HttpRequest, body: Bytes, shared: web::Data<Shared>) -> HttpResponse {
    if let Some(refusal) = refuse_internal(&req, &shared) {
        return refusal;
    }
    let id = String::from_utf8_lossy(&body).trim().to_string();
    if id.is_empty()
        || id.len() > 128
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return plain(
            StatusCode::BAD_REQUEST,
            "the body must be a session ID".into(),
        );
    }
    let engine = shared.engine.clone();
    let end = req.query_string() == "end";
    let task = actix_web::rt::spawn(async move { engine.expire_for_peer(&id, end).await });
    match task.await {
        Ok(Ok(answer)) => plain(StatusCode::OK, answer.as_str().to_string()),
        Ok(Err(e)) => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unavailable: {e}"),
        ),
        Err(e) => {
            tracing::error!(error = %e, "expire task failed");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
        }
    }
}

/// The secret check of every internal path: the 403 (with the reason, logged) for a caller
/// without the right secret, `None` for one with it.
fn refuse_internal(req: &HttpRequest, shared: &Shared) -> Option<HttpResponse> {
    let Some(secret) = &shared.secret else {
        return Some(plain(
            StatusCode::NOT_FOUND,
            "no internal paths here".into(),
        ));
    };
    let presented = req.headers().get(SECRET_HEADER).map(|v| v.as_bytes());
    let reason = check_secret(secret, presented).err()?;
    tracing::warn!(
        peer = %req.peer_addr().map(|a| a.to_string()).unwrap_or_default(),
        path = %req.path(),
        reason,
        "internal call refused"
    );
    Some(plain(StatusCode::FORBIDDEN, reason.to_string()))
}

fn plain(status: StatusCode, text: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/plain")
        .body(text + "\n")
}

async fn serve<D: Dialect>(
    req: HttpRequest,
    body: Bytes,
    shared: web::Data<Shared>,
    endpoint: Arc<Endpoint<D>>,
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
    let (principal, credential) = match authenticate(&req, &shared, endpoint.config.auth).await {
        Ok(p) => p,
        Err(challenge) => return challenge,
    };
    let trace = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(crate::tracecontext::TraceParent::parse);
    let http = HttpInfo {
        client_ip: req.peer_addr().map(|a| a.ip()),
        principal,
        credential,
        soap_action,
        trace,
    };
    let path = endpoint.config.path.clone();
    let figures = endpoint.metrics.clone();

    // Run the SOAP work in its own task so that a client disconnect cannot cancel it half way.
    let task = actix_web::rt::spawn(async move {
        // Boxed: the task's future then holds a pointer, not the multi-kilobyte state of
        // `process`, which spawning would otherwise copy (about 2.6 % of CPU, BENCHMARKS.md).
        Box::pin(process(&shared, &endpoint, &body, &media, &http)).await
    });
    let (reply, session) = match task.await {
        Ok(done) => done,
        Err(e) => {
            tracing::error!(error = %e, "request task failed");
            let fault = Fault::new(FaultCode::Receiver, "Internal error");
            (render_fault(SoapVersion::V11, &fault), None)
        }
    };
    figures.request(&reply.outcome, started.elapsed());
    tracing::debug!(
        path = %path,
        status = reply.status.as_u16(),
        session = session.as_deref().map(short_id).unwrap_or("-"),
        elapsed_us = started.elapsed().as_micros() as u64,
        "request"
    );
    HttpResponse::build(reply.status)
        .content_type(reply.content_type)
        .body(reply.body.into_http())
}

/// The principal of a request (None: anonymous) and, with `auth = "directory"`, the credentials
/// the class binds with; or the 401 to answer. Cached credentials are answered inline; the first
/// check of new ones runs argon2 on the blocking pool, never on the worker's event loop.
async fn authenticate(
    req: &HttpRequest,
    shared: &web::Data<Shared>,
    mode: AuthMode,
) -> Result<(Option<String>, Option<adapters::Credential>), HttpResponse> {
    let challenge = |realm: &str| {
        HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, format!("Basic realm=\"{realm}\"")))
            .content_type("text/plain")
            .body("Authentication required.\n")
    };
    if mode == AuthMode::None {
        return Ok((None, None));
    }
    if mode == AuthMode::Directory {
        let realm = shared
            .authenticator
            .as_ref()
            .map_or("soap-broker", |a| a.realm());
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::auth::basic_credentials);
        return match given {
            Some((user, password)) => Ok((
                Some(user.clone()),
                Some(adapters::Credential { user, password }),
            )),
            None => Err(challenge(realm)),
        };
    }
    let Some(auth) = shared.authenticator.clone() else {
        // The configuration refuses an authenticating endpoint without credentials.
        return Ok((None, None));
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
        AuthOutcome::User(user) => Ok((Some(user), None)),
        AuthOutcome::Anonymous => Ok((None, None)),
        AuthOutcome::Challenge => Err(challenge(&realm)),
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
        let e = SoapError::VersionNotServed(version);
        return (dialect.write_soap_error(SoapVersion::V11, &e), None);
    }
    if let Err(e) =
        soap::check_must_understand(&envelope, |ns, local| dialect.understands(ns, local))
    {
        return (dialect.write_soap_error(version, &e), None);
    }
    let (mut request, cx) = match dialect.read_request(envelope, http) {
        Ok(r) => r,
        Err(r) => return (dialect.write_error(version, r.context, r.error), None),
    };
    request.trace = http.trace.clone();
    let session = match &request.session {
        SessionDirective::Continue(id) => Some(id.clone()),
        _ => None,
    };
    // One span per request, made once its fields are known (each later `record` would format
    // them again): what the engine, the store and the adapters log inside it carries them.
    let span = if !shared.request_spans {
        tracing::Span::none()
    } else {
        tracing::info_span!(
            "request",
            endpoint = %endpoint.config.path,
            dialect = endpoint.config.dialect.name(),
            service = request.call.as_ref().map_or("-", |c| c.service.as_str()),
            session = session.as_deref().map(short_id),
            trace_id = request.trace.as_ref().map_or("-", |t| t.trace_id.as_str()),
        )
    };
    // Exported spans continue the client's trace.
    #[cfg(feature = "otlp")]
    if let Some(trace) = &request.trace {
        crate::logging::continue_trace(&span, trace);
    }
    let response = shared
        .engine
        .handle(&endpoint.config, &request)
        .instrument(span.clone())
        .await;
    let _in_request = span.enter();
    let session = session.or_else(|| {
        // A Begin's session is known now.
        let id = response.session.as_ref().map(|s| s.id.clone());
        if let Some(id) = &id {
            span.record("session", short_id(id));
        }
        id
    });
    if let Err(e) = &response.result {
        tracing::debug!(session = session.as_deref().map(short_id).unwrap_or("-"), error = %e, "request failed");
    }
    let reply = dialect.write_reply(version, cx, response);
    // In the request's span: with JSON logs at debug, this line carries its fields.
    tracing::debug!(status = reply.status.as_u16(), outcome = %reply.outcome, "request answered");
    (reply, session)
}
