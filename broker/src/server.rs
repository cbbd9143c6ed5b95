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
//!
//! ## Forwarding (`crate::cluster`)
//! When the engine answers that another live broker holds the session, this layer — which still
//! holds the raw request — forwards it there and relays the answer. If the holder cannot be
//! reached (the request was not delivered), the registry is read again: a holder gone by its lease
//! is taken over by handing the request to the engine once more; a holder still within its lease
//! gets the client a retriable fault (-352). A failure after the request may have been delivered
//! is never retried here (it may have run): the client hears that the holder stopped during the
//! request (-302, like a server process dying under it) and decides.
//!
//! With a cluster secret configured, the internal paths are served too:
//! `POST /_cluster/forward<endpoint path>` (a forwarded request, handled as if the client had sent
//! it, with the client's address from the forwarding broker) and `POST /_cluster/expire`. A call
//! without the right `X-Cluster-Secret` gets 403 and is logged.

use crate::auth::{AuthMode, AuthOutcome};
use crate::cluster::forward::{
    check_secret, CLIENT_IP_HEADER, EXPIRE_PATH, FORWARD_PREFIX, FROM_HEADER, SECRET_HEADER,
};
use crate::cluster::{ForwardError, Outgoing, Relayed, Secret};
use crate::config::EndpointConfig;
use crate::dialect::{render_fault, Dialect, HttpInfo, HttpReply};
use crate::engine::{
    short_id, EngineError, Outcome, Request, Response, SessionDirective, SessionEngine, SessionInfo,
};
use crate::soap::{self, Fault, FaultCode, Limits, Roles, SoapError, SoapVersion};
use actix_web::http::header;
use actix_web::http::StatusCode;
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
    /// The cluster secret; `None`: no internal path is served.
    pub secret: Option<Secret>,
}

/// One endpoint: its configuration and its dialect.
pub struct Endpoint<D: Dialect> {
    pub config: EndpointConfig,
    pub roles: Roles,
    pub dialect: D,
}

/// Register an endpoint's routes on an actix `ServiceConfig`; with `internal`, also the route
/// other brokers forward its requests to (`/_cluster/forward<path>`).
pub fn configure_endpoint<D: Dialect>(
    cfg: &mut web::ServiceConfig,
    endpoint: Arc<Endpoint<D>>,
    limits: &Limits,
    internal: bool,
) {
    let path = endpoint.config.path.clone();
    let data = web::Data::from(endpoint);
    if internal {
        cfg.service(
            web::resource(format!("{FORWARD_PREFIX}{path}"))
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(limits.max_body_bytes))
                .route(web::post().to(cluster_forward::<D>))
                .default_service(web::to(method_not_allowed)),
        );
    }
    cfg.service(
        web::resource(path)
            .app_data(data)
            .app_data(web::PayloadConfig::new(limits.max_body_bytes))
            .route(web::post().to(soap_post::<D>))
            .default_service(web::to(method_not_allowed)),
    );
}

/// Register `POST /_cluster/expire` (only with a cluster secret).
pub fn configure_internal(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(EXPIRE_PATH)
            .app_data(web::PayloadConfig::new(1024))
            .route(web::post().to(cluster_expire))
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

/// Where a request came from: its client, or another broker that forwarded it.
struct Arrival {
    client_ip: Option<std::net::IpAddr>,
    /// The forwarding broker's ID, for the log; `None` for a client's own request.
    forwarded_by: Option<String>,
}

async fn soap_post<D: Dialect>(
    req: HttpRequest,
    body: Bytes,
    shared: web::Data<Shared>,
    endpoint: web::Data<Endpoint<D>>,
) -> HttpResponse {
    let arrival = Arrival {
        client_ip: req.peer_addr().map(|a| a.ip()),
        forwarded_by: None,
    };
    serve(req, body, shared, endpoint, arrival).await
}

/// `POST /_cluster/forward<endpoint path>`: a request another broker forwarded here.
async fn cluster_forward<D: Dialect>(
    req: HttpRequest,
    body: Bytes,
    shared: web::Data<Shared>,
    endpoint: web::Data<Endpoint<D>>,
) -> HttpResponse {
    if let Some(refusal) = refuse_internal(&req, &shared) {
        return refusal;
    }
    let client_ip = match req.headers().get(CLIENT_IP_HEADER) {
        None => None,
        Some(v) => match v.to_str().ok().and_then(|s| s.trim().parse().ok()) {
            Some(ip) => Some(ip),
            None => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    format!("{CLIENT_IP_HEADER} is not an IP address"),
                )
            }
        },
    };
    let forwarded_by = req
        .headers()
        .get(FROM_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(64).collect::<String>())
        .or_else(|| Some("?".to_string()));
    let arrival = Arrival {
        client_ip,
        forwarded_by,
    };
    serve(req, body, shared, endpoint, arrival).await
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
    let task = actix_web::rt::spawn(async move { engine.expire_for_peer(&id).await });
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

/// What a request carried, kept to forward it as it came.
struct Raw {
    content_type: Option<String>,
    soap_action: Option<String>,
    authorization: Option<String>,
    body: Bytes,
}

async fn serve<D: Dialect>(
    req: HttpRequest,
    body: Bytes,
    shared: web::Data<Shared>,
    endpoint: web::Data<Endpoint<D>>,
    arrival: Arrival,
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
        client_ip: arrival.client_ip,
        principal,
        soap_action,
    };
    let path = endpoint.config.path.clone();
    let header = |name| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let raw = Raw {
        content_type: header(header::CONTENT_TYPE.as_str()),
        soap_action: header("SOAPAction"),
        authorization: header(header::AUTHORIZATION.as_str()),
        body: body.clone(),
    };
    let forwarded_by = arrival.forwarded_by;

    // Run the SOAP work in its own task so that a client disconnect cannot cancel it half way.
    let task = actix_web::rt::spawn(async move {
        let forwarded = forwarded_by.is_some();
        // Boxed: the task's future then holds a pointer, not the multi-kilobyte state of
        // `process`, which spawning would otherwise copy (about 2.6 % of CPU, BENCHMARKS.md).
        let done = Box::pin(process(
            &shared, &endpoint, &body, &media, &http, raw, forwarded,
        ))
        .await;
        (done, forwarded_by)
    });
    let ((reply, session), forwarded_by) = match task.await {
        Ok(done) => done,
        Err(e) => {
            tracing::error!(error = %e, "request task failed");
            let fault = Fault::new(FaultCode::Receiver, "Internal error");
            ((render_fault(SoapVersion::V11, &fault), None), None)
        }
    };
    tracing::debug!(
        path = %path,
        status = reply.status.as_u16(),
        session = session.as_deref().map(short_id).unwrap_or("-"),
        forwarded_by = forwarded_by.as_deref().unwrap_or("-"),
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
    raw: Raw,
    forwarded: bool,
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
    let (mut request, cx) = match dialect.read_request(envelope, http) {
        Ok(r) => r,
        Err(r) => return (dialect.write_error(version, r.context, r.error), None),
    };
    request.forwarded = forwarded;
    let session = match &request.session {
        SessionDirective::Continue(id) => Some(id.clone()),
        _ => None,
    };
    let response = match shared.engine.handle(&endpoint.config, request).await {
        Outcome::Done(response) => response,
        Outcome::Forward { holder, request } => {
            match forward(shared, &endpoint.config, holder, *request, raw, http).await {
                Forwarded::Relayed(relayed) => return (relay(relayed), session),
                Forwarded::Answered(response) => response,
            }
        }
    };
    let session = session.or_else(|| response.session.as_ref().map(|s| s.id.clone()));
    if let Err(e) = &response.result {
        tracing::debug!(session = session.as_deref().map(short_id).unwrap_or("-"), error = %e, "request failed");
    }
    (dialect.write_reply(version, cx, response), session)
}

/// What became of a request the engine said another broker holds.
enum Forwarded {
    /// The holder answered: relay its answer.
    Relayed(Relayed),
    /// Answered here (taken over from a gone holder, or a fault).
    Answered(Response),
}

/// Forward a request to the broker holding its session (see "Forwarding" in the module docs).
async fn forward(
    shared: &Shared,
    endpoint: &EndpointConfig,
    mut holder: cookie_store::BrokerInfo,
    mut request: Request,
    raw: Raw,
    http: &HttpInfo,
) -> Forwarded {
    let engine = &shared.engine;
    let session_id = match &request.session {
        SessionDirective::Continue(id) => id.clone(),
        _ => String::new(),
    };
    let fault = |error: EngineError| {
        Forwarded::Answered(Response {
            session: Some(SessionInfo::new(session_id.clone())),
            result: Err(error),
        })
    };
    let Some(forwarder) = engine.forwarder() else {
        // The engine forwards only with a forwarder; should that change, say so rather than panic.
        return fault(EngineError::ForwardingDisabled { broker: holder.id });
    };
    // At most twice: to the holder, and once more if it turned out gone and the engine named
    // another holder (then the engine has already re-checked the registry).
    for attempt in 0..2 {
        let outgoing = Outgoing {
            path: endpoint.path.clone(),
            content_type: raw.content_type.clone(),
            soap_action: raw.soap_action.clone(),
            authorization: raw.authorization.clone(),
            client_ip: http.client_ip,
            body: raw.body.clone(),
        };
        tracing::debug!(session = %short_id(&session_id), broker = %holder.id, "forwarding to the broker holding the session");
        let error = match forwarder.forward(&holder.advertise, outgoing).await {
            Ok(relayed) => return Forwarded::Relayed(relayed),
            Err(e) => e,
        };
        match error {
            ForwardError::NotReached { .. } if attempt == 0 => {
                tracing::warn!(session = %short_id(&session_id), broker = %holder.id, error = %error, "the broker holding the session cannot be reached");
                // Not delivered, so it may run elsewhere: if the holder is gone by its lease, the
                // engine takes its work over.
                if let Err(e) = engine.registry().refresh().await {
                    return fault(EngineError::Store(e));
                }
                if engine.registry().live(&holder.instance).is_some() {
                    return fault(EngineError::HolderUnreachable { broker: holder.id });
                }
                match engine.handle(endpoint, request).await {
                    Outcome::Done(response) => return Forwarded::Answered(response),
                    Outcome::Forward {
                        holder: next,
                        request: again,
                    } => {
                        holder = next;
                        request = *again;
                    }
                }
            }
            ForwardError::Refused { reason, .. } => {
                return fault(EngineError::ForwardRefused {
                    broker: holder.id,
                    reason,
                })
            }
            ForwardError::BadTarget { reason, .. } => {
                return fault(EngineError::ForwardRefused {
                    broker: holder.id,
                    reason,
                })
            }
            // Not reached on the second attempt: still not delivered, so retriable.
            ForwardError::NotReached { .. } => {
                return fault(EngineError::HolderUnreachable { broker: holder.id })
            }
            // It may have run there: the client must not be told to simply retry.
            other => {
                tracing::warn!(session = %short_id(&session_id), broker = %holder.id, error = %other, "the broker holding the session did not answer");
                return fault(EngineError::HolderLost { broker: holder.id });
            }
        }
    }
    fault(EngineError::HolderUnreachable { broker: holder.id })
}

/// The holder's answer as this broker's reply.
fn relay(relayed: Relayed) -> HttpReply {
    HttpReply {
        status: StatusCode::from_u16(relayed.status).unwrap_or(StatusCode::BAD_GATEWAY),
        content_type: relayed
            .content_type
            .unwrap_or_else(|| "text/xml; charset=utf-8".to_string()),
        body: relayed.body.to_vec(),
    }
}
