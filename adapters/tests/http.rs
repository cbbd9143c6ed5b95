//! The http adapter against `sample-server echo --http` on loopback.

mod common;

use adapters::http::HttpClass;
use adapters::{AdapterError, AdapterKind, DialogMarker, ReplyStatus, ServerClass};
use adapters::{Context, ServerClassConfig};
use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn http_config(name: &str, urls: &[String]) -> ServerClassConfig {
    let mut config = ServerClassConfig::new(
        name,
        AdapterKind::Http {
            urls: urls.to_vec(),
        },
    );
    config.request_timeout = Duration::from_secs(5);
    config
}

fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/echo", listener.local_addr().unwrap());
    drop(listener);
    url
}

#[tokio::test]
async fn echo_over_http() {
    let server = Server::start(SAMPLE_SERVER, &["echo", "--http", "127.0.0.1:0"]);
    let url = format!("http://{}/echo", server.addr);
    let class = HttpClass::start(http_config("web", &[url]), runtime())
        .await
        .unwrap();

    for i in 0..3 {
        let reply = class.call(echo(&format!("<n>{i}</n>"))).await.unwrap();
        assert_eq!(reply.status, ReplyStatus::Ok);
        assert_eq!(
            text(&reply.payload),
            format!(r#"<EchoResponse xmlns="urn:test"><n>{i}</n></EchoResponse>"#)
        );
        assert_eq!(reply.worker, "web#1");
    }
    // An unknown operation is a 500 from this backend: an error reply with the body.
    let reply = class.call(request("Nope", "<Nope/>")).await.unwrap();
    match reply.status {
        ReplyStatus::Error(reason) => assert!(reason.contains("500"), "{reason}"),
        other => panic!("expected an error reply, got {other:?}"),
    }
    assert_eq!(text(&reply.payload), "unknown operation Nope");

    let mut req = echo("");
    req.dialog = DialogMarker::Begin;
    assert!(matches!(
        class.call(req).await,
        Err(AdapterError::Unsupported { .. })
    ));
    class.shutdown(Duration::from_secs(1)).await;
    assert!(matches!(
        class.call(echo("")).await,
        Err(AdapterError::ShuttingDown { .. })
    ));
}

#[tokio::test]
async fn timeout_and_failover_and_unreachable() {
    let server = Server::start(SAMPLE_SERVER, &["echo", "--http", "127.0.0.1:0"]);
    let live = format!("http://{}/echo", server.addr);
    let dead = dead_url();

    let mut config = http_config("web2", &[dead.clone(), live]);
    config.request_timeout = Duration::from_millis(300);
    let class = HttpClass::start(config, runtime()).await.unwrap();
    // Round robin starts on the dead url half the time; a refused connect fails over.
    for _ in 0..4 {
        let reply = class.call(echo("")).await.unwrap();
        assert_eq!(reply.worker, "web2#2");
    }
    match class.call(echo("<sleepMs>3000</sleepMs>")).await {
        Err(AdapterError::Timeout {
            timeout_ms: 300, ..
        }) => {}
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert_eq!(class.call(echo("")).await.unwrap().status, ReplyStatus::Ok);

    let class = HttpClass::start(http_config("web3", &[dead]), runtime())
        .await
        .unwrap();
    assert!(matches!(
        class.call(echo("")).await,
        Err(AdapterError::Unreachable { .. })
    ));
}

#[tokio::test]
async fn configuration_errors_at_start() {
    let url = "http://127.0.0.1:1/x".to_string();
    let mut config = http_config("txn", std::slice::from_ref(&url));
    config.transactional = true;
    match HttpClass::start(config, runtime()).await {
        Err(AdapterError::Unsupported { reason, .. }) => {
            assert_eq!(reason, "the http adapter cannot carry transactions")
        }
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("a transactional http class must be refused"),
    }
    let mut config = http_config("ctx", &[url]);
    config.context = Context::Sensitive;
    assert!(HttpClass::start(config, runtime()).await.is_err());
    for bad in ["https://example.com/", "not a url", "ftp://x/"] {
        let config = http_config("bad", &[bad.to_string()]);
        assert!(HttpClass::start(config, runtime()).await.is_err(), "{bad}");
    }
    assert!(HttpClass::start(http_config("none", &[]), runtime())
        .await
        .is_err());
}

/// A late reply is never taken for the answer to the next request: the connection of a timed-out
/// exchange is closed, not pooled (each reply echoes its own `<n>`).
#[tokio::test]
async fn a_late_reply_never_answers_a_later_request() {
    let server = Server::start(SAMPLE_SERVER, &["echo", "--http", "127.0.0.1:0"]);
    let mut config = http_config("late", &[format!("http://{}/echo", server.addr)]);
    config.request_timeout = Duration::from_millis(300);
    let class = HttpClass::start(config, runtime()).await.unwrap();
    assert!(matches!(
        class.call(echo("<sleepMs>700</sleepMs><n>1</n>")).await,
        Err(AdapterError::Timeout { .. })
    ));
    for n in 2..4 {
        let reply = class.call(echo(&format!("<n>{n}</n>"))).await.unwrap();
        assert_eq!(
            text(&reply.payload),
            format!(r#"<EchoResponse xmlns="urn:test"><n>{n}</n></EchoResponse>"#)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A loopback HTTP/1.1 server that answers every POST with its body and counts the connections
/// it accepted; with `close_after_reply` it closes each connection after one response (as a
/// backend whose keep-alive timeout is shorter than the broker's would).
struct CountingServer {
    addr: String,
    accepted: Arc<AtomicUsize>,
}

impl CountingServer {
    async fn start(close_after_reply: bool) -> CountingServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        runtime().spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_echo(stream, close_after_reply));
            }
        });
        CountingServer { addr, accepted }
    }

    fn url(&self) -> String {
        format!("http://{}/echo", self.addr)
    }
}

async fn serve_echo(mut s: tokio::net::TcpStream, close_after_reply: bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    loop {
        let (head, len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut req = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
                let len = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                    .unwrap_or(0usize);
                break (n, len);
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(got) => buf.extend_from_slice(&chunk[..got]),
            }
        };
        while buf.len() < head + len {
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(got) => buf.extend_from_slice(&chunk[..got]),
            }
        }
        let body: Vec<u8> = buf.drain(..head + len).skip(head).collect();
        let mut reply =
            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
        reply.extend_from_slice(&body);
        if s.write_all(&reply).await.is_err() || close_after_reply {
            return;
        }
    }
}

/// Callers on several threads, each with its own runtime (as actix workers are), all get their
/// own answers; each thread keeps its connection alive across its calls; `max_workers` bounds
/// the requests in flight across all of them.
#[test]
fn callers_on_many_runtimes_keep_their_connections() {
    let server = runtime().block_on(CountingServer::start(false));
    let mut config = http_config("threads", &[server.url()]);
    config.max_workers = 2;
    let class = runtime()
        .block_on(HttpClass::start(config, runtime()))
        .unwrap();
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let class = class.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    for i in 0..20 {
                        let body = format!("<T{t}>{i}</T{t}>");
                        let reply = class.call(request("Echo", &body)).await.unwrap();
                        assert_eq!(reply.status, ReplyStatus::Ok);
                        assert_eq!(text(&reply.payload), body);
                    }
                })
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Sequential calls on one thread reuse one connection.
    assert_eq!(server.accepted.load(Ordering::SeqCst), 3);
}

/// A backend that closes idle connections costs no failed request: the closed connection is
/// noticed before use and a fresh one is opened.
#[tokio::test]
async fn connections_closed_by_the_backend_are_replaced() {
    let server = CountingServer::start(true).await;
    let class = HttpClass::start(http_config("closing", &[server.url()]), runtime())
        .await
        .unwrap();
    for i in 0..4 {
        let body = format!("<n>{i}</n>");
        let reply = class.call(request("Echo", &body)).await.unwrap();
        assert_eq!(text(&reply.payload), body);
        // Long enough for the runtime to see the close.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.accepted.load(Ordering::SeqCst), 4);
}

/// `max_workers` requests in flight, then `queue_limit` waiting, then QueueFull at once.
#[tokio::test]
async fn slots_and_queue_limit() {
    let server = Server::start(SAMPLE_SERVER, &["echo", "--http", "127.0.0.1:0"]);
    let mut config = http_config("slots", &[format!("http://{}/echo", server.addr)]);
    config.max_workers = 1;
    config.queue_limit = 1;
    let class = HttpClass::start(config, runtime()).await.unwrap();
    let (a, b) = (class.clone(), class.clone());
    let first = tokio::spawn(async move { a.call(echo("<sleepMs>400</sleepMs>")).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = tokio::spawn(async move { b.call(echo("<n>2</n>")).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    match class.call(echo("<n>3</n>")).await {
        Err(AdapterError::QueueFull { limit: 1, .. }) => {}
        other => panic!("expected QueueFull, got {other:?}"),
    }
    assert_eq!(first.await.unwrap().unwrap().status, ReplyStatus::Ok);
    let reply = second.await.unwrap().unwrap();
    assert!(text(&reply.payload).contains("<n>2</n>"));
}
