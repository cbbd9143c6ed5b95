//! # The sample classes over plain HTTP
//!
//! `sample-server echo --http ADDR` serves the same work without the wire protocol: `POST` the
//! body element, get the response element back. It is the benchmark's backend, reached both by
//! nginx (as a reverse proxy) and by the broker's http adapter, so both paths pay for exactly the
//! same backend work.
//!
//! - `X-Service` names the operation (default: the root element's local name).
//! - 200 with `text/xml` for a reply; 500 for a fault (`X-Fault-Code` header, the fault string as
//!   the body) or a server error; 405 for other methods; 413 for bodies over 16 MiB.
//! - It prints `listening on ADDR` (the bound address, useful with port 0) on stdout once ready.

use super::Action;
use crate::ReplyStatus;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::io::Write;
use std::sync::Arc;
use tokio::net::TcpListener;

const MAX_BODY: usize = 16 * 1024 * 1024;

/// The work a class does for one HTTP request: (operation if given, body) → action.
pub type Work = dyn Fn(Option<&str>, &[u8]) -> Action + Send + Sync;

/// Serve `work` on `addr` until the process is killed.
pub async fn serve(addr: &str, work: Arc<Work>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {local}")?;
        out.flush()?;
    }
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: say so and keep accepting.
                eprintln!("sample-server: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let work = work.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(request, work.clone()));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                // A client that hangs up mid-request (a timed-out broker call) is routine.
                if !e.is_incomplete_message() {
                    eprintln!("sample-server: connection error: {e}");
                }
            }
        });
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

async fn handle(
    request: Request<Incoming>,
    work: Arc<Work>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    if request.method() != Method::POST {
        return Ok(respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            Bytes::from_static(b"POST the body element\n"),
        ));
    }
    let operation = request
        .headers()
        .get("x-service")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            return Ok(respond(
                StatusCode::PAYLOAD_TOO_LARGE,
                "text/plain",
                Bytes::from(format!("{e}\n")),
            ))
        }
    };
    Ok(match work(operation.as_deref(), &body) {
        Action::Exit(code) => {
            eprintln!("sample-server: exiting with status {code} as asked (test aid)");
            std::process::exit(code)
        }
        Action::Reply {
            status,
            payload,
            delay,
        } => {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            match status {
                ReplyStatus::Ok
                | ReplyStatus::DialogContinue
                | ReplyStatus::DialogEnd
                | ReplyStatus::DialogAbort => {
                    respond(StatusCode::OK, "text/xml; charset=utf-8", payload)
                }
                ReplyStatus::Fault { code, string } => {
                    let mut response = respond(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain; charset=utf-8",
                        Bytes::from(string),
                    );
                    if let Ok(code) = HeaderValue::from_str(&code) {
                        response.headers_mut().insert("x-fault-code", code);
                    }
                    response
                }
                ReplyStatus::Error(reason) => respond(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain; charset=utf-8",
                    Bytes::from(reason),
                ),
            }
        }
    })
}
