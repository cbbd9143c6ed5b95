//! Broker-to-broker calls over HTTP: the [`Peer`] the engine forwards through, and the calls a
//! sweeper makes to expire a session another broker holds.
//!
//! ## The internal paths (served only when a cluster secret is configured)
//! - `POST /_cluster/forward`: a request the engine found held by this broker's peer, in the wire
//!   format of [`super::peer`] (the endpoint, and the engine's request already parsed: service call,
//!   session and transaction directives, the client's principal and address), plus
//!   [`SECRET_HEADER`] and [`FROM_HEADER`] (the forwarding broker's ID, for the log). The holder
//!   runs it in its engine as if the client had sent it there, never forwards it again, and
//!   answers with the engine's response (HTTP 200); the forwarding broker's dialect renders it.
//! - `POST /_cluster/expire` with a session ID as the body: the holder expires the session under
//!   its turn if it is due (the expiry sweeper of another broker asks this instead of aborting work
//!   it cannot reach). Answers `expired`, `alive`, `gone`, `busy` or `elsewhere` as plain text.
//!
//! A call without the right secret gets 403 with a plain-text reason, and is logged.
//!
//! ## The client
//! One hyper client for every target, keeping connections alive per target (a pool keyed by
//! host and port). Calls run on the engine runtime, whatever runtime asks, so pooled connections
//! are driven by one runtime that outlives every HTTP worker. Whether a failed call may have
//! reached the holder decides what the engine may do next ([`PeerError`]): a connection that could
//! not be made means the request was not delivered and may be run elsewhere; every other failure
//! means it may have run, and only the client may decide to retry.

use super::peer::{self, Peer, PeerError};
use super::Secret;
use crate::engine::{PeerExpiry, Request, Response};
use async_trait::async_trait;
use bytes::Bytes;
use cookie_store::BrokerInfo;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use std::time::Duration;

/// Every internal path starts with this.
pub const PREFIX: &str = "/_cluster";
/// Forwarded requests.
pub const FORWARD_PATH: &str = "/_cluster/forward";
/// The media type of forwarded requests and their answers.
pub const FORWARD_MEDIA_TYPE: &str = "application/x-soap-broker-forward";
/// Expire a session held here.
pub const EXPIRE_PATH: &str = "/_cluster/expire";
/// The cluster secret.
pub const SECRET_HEADER: &str = "x-cluster-secret";
/// The ID of the broker that forwarded a request.
pub const FROM_HEADER: &str = "x-cluster-from";
/// How long an idle pooled connection to another broker is kept.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// Another broker's HTTP answer.
#[derive(Debug, Clone)]
pub struct Relayed {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
}

/// Why a call to another broker got no usable answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ForwardError {
    /// No connection could be made: the request was not delivered.
    #[error("{target} could not be reached: {reason}")]
    NotReached { target: String, reason: String },
    /// The connection failed after the request may have been delivered.
    #[error("{target} did not answer: {reason}")]
    NoAnswer { target: String, reason: String },
    /// No answer within `[cluster] forward_timeout`.
    #[error("{target} did not answer within {after:?}")]
    TimedOut { target: String, after: Duration },
    /// The other broker refused the internal call (different secrets, or it has none).
    #[error("{target} refused the internal call (HTTP {status}: {reason})")]
    Refused {
        target: String,
        status: u16,
        reason: String,
    },
    /// The advertised address is not an `http://host:port` URL.
    #[error("{target} is not a usable advertised address: {reason}")]
    BadTarget { target: String, reason: String },
}

/// The HTTP client to other brokers.
pub struct Forwarder {
    client: Client<HttpConnector, Full<Bytes>>,
    secret: Secret,
    /// This broker's ID, sent in [`FROM_HEADER`].
    from: HeaderValue,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
    max_reply_bytes: usize,
}

impl Forwarder {
    /// A client whose calls run on `runtime`: connections time out after `connect_timeout`, whole
    /// calls after `timeout`, and replies larger than `max_reply_bytes` are refused.
    pub fn new(
        secret: Secret,
        from: &str,
        runtime: tokio::runtime::Handle,
        connect_timeout: Duration,
        timeout: Duration,
        max_reply_bytes: usize,
    ) -> Forwarder {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(connector);
        Forwarder {
            client,
            secret,
            from: HeaderValue::from_str(from).unwrap_or(HeaderValue::from_static("-")),
            runtime,
            timeout,
            max_reply_bytes,
        }
    }

    /// Ask the broker advertised at `target` to expire session `id` if it is due; its plain-text
    /// answer.
    /// `POST /_cluster/expire` (`?end`: whether due or not).
    async fn expire_at(&self, target: &str, id: &str, end: bool) -> Result<Relayed, ForwardError> {
        let query = if end { "?end" } else { "" };
        let url = format!("{}{EXPIRE_PATH}{query}", target.trim_end_matches('/'));
        let headers = vec![(CONTENT_TYPE.as_str(), "text/plain".to_string())];
        self.post(target, &url, headers, Bytes::copy_from_slice(id.as_bytes()))
            .await
    }

    async fn post(
        &self,
        target: &str,
        url: &str,
        headers: Vec<(&'static str, String)>,
        body: Bytes,
    ) -> Result<Relayed, ForwardError> {
        let bad_target = |reason: String| ForwardError::BadTarget {
            target: target.to_string(),
            reason,
        };
        let uri: hyper::Uri = url.parse().map_err(|e| bad_target(format!("{e}")))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad_target("only http:// is supported".into()));
        }
        let mut request = hyper::Request::post(uri);
        for (name, value) in headers {
            // A value from the client that cannot be a header value was refused by actix already.
            if let Ok(v) = HeaderValue::from_str(&value) {
                request = request.header(name, v);
            }
        }
        let request = request
            .header(SECRET_HEADER, self.secret.expose())
            .header(FROM_HEADER, self.from.clone())
            .body(Full::new(body))
            .map_err(|e| bad_target(format!("{e}")))?;
        let client = self.client.clone();
        let limit = self.max_reply_bytes;
        let target_owned = target.to_string();
        let exchange = async move {
            let response = client.request(request).await.map_err(|e| {
                let reason = error_chain(&e);
                if e.is_connect() {
                    ForwardError::NotReached {
                        target: target_owned.clone(),
                        reason,
                    }
                } else {
                    ForwardError::NoAnswer {
                        target: target_owned.clone(),
                        reason,
                    }
                }
            })?;
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = Limited::new(response.into_body(), limit)
                .collect()
                .await
                .map_err(|e| ForwardError::NoAnswer {
                    target: target_owned.clone(),
                    reason: format!("reading the reply: {e}"),
                })?
                .to_bytes();
            Ok(Relayed {
                status,
                content_type,
                body,
            })
        };
        let timeout = self.timeout;
        let handle = self
            .runtime
            .spawn(async move { tokio::time::timeout(timeout, exchange).await });
        let relayed = match handle.await {
            Ok(Ok(result)) => result?,
            Ok(Err(_elapsed)) => {
                return Err(ForwardError::TimedOut {
                    target: target.to_string(),
                    after: timeout,
                })
            }
            Err(e) => {
                return Err(ForwardError::NoAnswer {
                    target: target.to_string(),
                    reason: format!("the call's task failed: {e}"),
                })
            }
        };
        // The internal paths refuse in plain text; a SOAP endpoint never answers 403 or 404.
        if matches!(relayed.status, 403 | 404) {
            return Err(ForwardError::Refused {
                target: target.to_string(),
                status: relayed.status,
                reason: String::from_utf8_lossy(&relayed.body).trim().to_string(),
            });
        }
        Ok(relayed)
    }
}

/// What is sent: the same bytes as [`Forwarded`], without copying the request.
#[derive(Serialize)]
struct ForwardedRef<'a> {
    endpoint: &'a str,
    request: &'a Request,
}

#[async_trait]
impl Peer for Forwarder {
    async fn forward(
        &self,
        holder: &BrokerInfo,
        endpoint: &str,
        request: &Request,
    ) -> Result<Response, PeerError> {
        crate::metrics::get().forwarded();
        let body = peer::encode(&ForwardedRef { endpoint, request }).map_err(PeerError::Refused)?;
        let target = holder.advertise.as_str();
        let url = format!("{}{FORWARD_PATH}", target.trim_end_matches('/'));
        let mut headers = vec![(CONTENT_TYPE.as_str(), FORWARD_MEDIA_TYPE.to_string())];
        if let Some(trace) = &request.trace {
            headers.push(("traceparent", trace.next_hop()));
        }
        let relayed = self
            .post(target, &url, headers, Bytes::from(body))
            .await
            .map_err(peer_error)?;
        match relayed.status {
            200 => peer::decode(&relayed.body)
                .map_err(|e| PeerError::Lost(format!("{target} answered, but its answer is {e}"))),
            // It could not read the request: nothing ran there.
            400 => Err(PeerError::Refused(format!(
                "{target}: {}",
                String::from_utf8_lossy(&relayed.body).trim()
            ))),
            status => Err(PeerError::Lost(format!(
                "{target} answered HTTP {status}: {}",
                String::from_utf8_lossy(&relayed.body).trim()
            ))),
        }
    }

    async fn expire(&self, holder: &BrokerInfo, id: &str) -> Result<PeerExpiry, PeerError> {
        self.expire_or_end(holder, id, false).await
    }

    async fn end(&self, holder: &BrokerInfo, id: &str) -> Result<PeerExpiry, PeerError> {
        self.expire_or_end(holder, id, true).await
    }
}

impl Forwarder {
    async fn expire_or_end(
        &self,
        holder: &BrokerInfo,
        id: &str,
        end: bool,
    ) -> Result<PeerExpiry, PeerError> {
        let relayed = self
            .expire_at(&holder.advertise, id, end)
            .await
            .map_err(peer_error)?;
        let text = String::from_utf8_lossy(&relayed.body);
        PeerExpiry::parse(text.trim()).ok_or_else(|| {
            PeerError::Lost(format!(
                "{} answered HTTP {}: {}",
                holder.advertise,
                relayed.status,
                text.trim()
            ))
        })
    }
}

fn peer_error(e: ForwardError) -> PeerError {
    match e {
        ForwardError::NotReached { .. } => PeerError::NotDelivered(e.to_string()),
        ForwardError::Refused { .. } | ForwardError::BadTarget { .. } => {
            PeerError::Refused(e.to_string())
        }
        ForwardError::NoAnswer { .. } | ForwardError::TimedOut { .. } => {
            PeerError::Lost(e.to_string())
        }
    }
}

/// An error and its sources, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Check the secret a caller presented (the raw header value, if any). The error is the plain-text
/// reason for the 403.
pub fn check_secret(secret: &Secret, presented: Option<&[u8]>) -> Result<(), &'static str> {
    match presented {
        None => Err("the cluster secret is missing"),
        Some(given) if secret.matches(given) => Ok(()),
        Some(_) => Err("the cluster secret is wrong"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn forwarder(rt: &tokio::runtime::Handle) -> Forwarder {
        Forwarder::new(
            Secret::new("0123456789abcdef-secret").expect("secret"),
            "b1",
            rt.clone(),
            Duration::from_millis(500),
            Duration::from_secs(5),
            1024,
        )
    }

    /// A one-shot HTTP server on loopback: reads one request, answers `reply`, returns what it read.
    async fn one_shot(reply: &'static [u8]) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.expect("accept");
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            // Headers, then the body of the given Content-Length.
            loop {
                let n = conn.read(&mut buf).await.expect("read");
                seen.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&seen).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if seen.len() >= end + 4 + len || n == 0 {
                        break;
                    }
                }
            }
            conn.write_all(reply).await.expect("write");
            seen
        });
        (format!("http://{addr}"), task)
    }

    fn holder(advertise: &str) -> BrokerInfo {
        BrokerInfo {
            id: "b2".into(),
            instance: "b2/0123456789ab".into(),
            advertise: advertise.into(),
            lease_until_ms: u64::MAX,
        }
    }

    /// The holder reads the very request the engine forwarded (the borrowed form encodes as the
    /// owned one decodes), with the secret and the sender's ID, and its answer comes back whole.
    #[tokio::test]
    async fn forwards_the_parsed_request_with_the_secret_and_returns_the_answer() {
        use crate::engine::{Reply, SessionDirective, SessionInfo};
        let answer = Response {
            session: Some(SessionInfo::new("0123456789abcdef".into())),
            result: Ok(Reply::Body(Bytes::from_static(b"<DepositResponse/>"))),
        };
        let body = peer::encode(&answer).expect("encode");
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: {FORWARD_MEDIA_TYPE}\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let mut reply = head.into_bytes();
        reply.extend_from_slice(&body);
        let (target, server) = one_shot(Box::leak(reply.into_boxed_slice())).await;
        let f = forwarder(&tokio::runtime::Handle::current());
        let mut request = Request::new("nonstop");
        request.session = SessionDirective::Continue("0123456789abcdef".into());
        request.principal = Some("alice".into());
        request.client_ip = Some("127.0.0.9".parse().expect("ip"));
        let got = f
            .forward(&holder(&target), "/soap", &request)
            .await
            .expect("answered");
        assert_eq!(got.session, answer.session);
        assert_eq!(got.result.ok(), answer.result.ok());
        let seen = server.await.expect("server");
        let text = String::from_utf8_lossy(&seen).to_ascii_lowercase();
        assert!(
            text.starts_with("post /_cluster/forward http/1.1"),
            "{text}"
        );
        for needle in [
            "x-cluster-secret: 0123456789abcdef-secret",
            "x-cluster-from: b1",
            FORWARD_MEDIA_TYPE,
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
        let at = seen
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("end of head");
        let sent: peer::Forwarded = peer::decode(&seen[at + 4..]).expect("the holder can read it");
        assert_eq!(sent.endpoint, "/soap");
        assert_eq!(sent.request.principal.as_deref(), Some("alice"));
        assert_eq!(sent.request.client_ip, request.client_ip);
        assert_eq!(sent.request.session, request.session);
    }

    #[tokio::test]
    async fn a_closed_port_is_not_reached_and_a_refusal_is_reported() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let f = forwarder(&tokio::runtime::Handle::current());
        let e = f
            .expire(&holder(&format!("http://127.0.0.1:{port}")), "abc")
            .await
            .expect_err("nobody listens");
        assert!(matches!(e, PeerError::NotDelivered(_)), "{e:?}");

        let (target, _server) = one_shot(
            b"HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 28\r\n\r\nthe cluster secret is wrong\n",
        )
        .await;
        let e = f
            .expire(&holder(&target), "abc")
            .await
            .expect_err("refused");
        assert!(
            matches!(&e, PeerError::Refused(reason) if reason.contains("the cluster secret is wrong")),
            "{e:?}"
        );
        let e = f
            .expire(&holder("ftp://x"), "abc")
            .await
            .expect_err("bad target");
        assert!(matches!(e, PeerError::Refused(_)), "{e:?}");

        let (target, _server) = one_shot(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 8\r\n\r\nexpired\n",
        )
        .await;
        assert_eq!(
            f.expire(&holder(&target), "abc").await,
            Ok(PeerExpiry::Expired)
        );
    }

    #[test]
    fn secrets_are_checked() {
        let s = Secret::new("0123456789abcdef-secret").expect("secret");
        assert!(check_secret(&s, Some(b"0123456789abcdef-secret")).is_ok());
        assert_eq!(check_secret(&s, None), Err("the cluster secret is missing"));
        assert_eq!(
            check_secret(&s, Some(b"0123456789abcdef-secreT")),
            Err("the cluster secret is wrong")
        );
    }
}
