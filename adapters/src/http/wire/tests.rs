//! The exchange against a scripted HTTP/1.1 peer on loopback: real sockets, and responses
//! written byte for byte as a backend could send them (framings and failures the sample echo
//! backend never produces).

use super::*;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What the peer does after reading one request.
enum Step {
    /// Write these bytes, split into pieces of at most `piece` bytes (each its own write).
    Reply { bytes: Vec<u8>, piece: usize },
    /// Write these bytes, then close the connection.
    ReplyAndClose(Vec<u8>),
    /// Close without answering.
    Close,
}

fn reply(bytes: &[u8]) -> Step {
    Step::Reply {
        bytes: bytes.to_vec(),
        piece: usize::MAX,
    }
}

/// A peer serving one connection by `steps` (one per request). Returns its address and the
/// requests it read, head and body.
async fn peer(steps: Vec<Step>) -> (String, JoinHandle<Vec<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        let mut buf = Vec::new();
        for step in steps {
            // Read one whole request: its head, then Content-Length bytes.
            let (head_len, body_len) = loop {
                let mut headers = [httparse::EMPTY_HEADER; 16];
                let mut req = httparse::Request::new(&mut headers);
                if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
                    let len = req
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                        .unwrap_or(0usize);
                    break (n, len);
                }
                let mut chunk = [0u8; 4096];
                let got = s.read(&mut chunk).await.unwrap();
                assert!(got > 0, "the client closed mid-request");
                buf.extend_from_slice(&chunk[..got]);
            };
            while buf.len() < head_len + body_len {
                let mut chunk = [0u8; 4096];
                let got = s.read(&mut chunk).await.unwrap();
                assert!(got > 0, "the client closed mid-body");
                buf.extend_from_slice(&chunk[..got]);
            }
            seen.push(buf.drain(..head_len + body_len).collect());
            match step {
                Step::Reply { bytes, piece } => {
                    for part in bytes.chunks(piece.max(1)) {
                        s.write_all(part).await.unwrap();
                        s.flush().await.unwrap();
                        if piece != usize::MAX {
                            tokio::task::yield_now().await;
                        }
                    }
                }
                Step::ReplyAndClose(bytes) => {
                    s.write_all(&bytes).await.unwrap();
                    return seen;
                }
                Step::Close => return seen,
            }
        }
        // Keep the connection open until the client is done with it.
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
        seen
    });
    (addr, task)
}

async fn open(addr: &str) -> Conn {
    let (host, port) = addr.rsplit_once(':').unwrap();
    connect(host, port.parse().unwrap(), Duration::from_secs(3))
        .await
        .unwrap()
}

const TARGET: Target<'static> = Target {
    path: "/svc?x=1",
    host: "backend.test:80",
};

async fn post(conn: &mut Conn, body: &str) -> Result<(Response, bool), WireError> {
    conn.post(
        &TARGET,
        &[("x-service", "Echo"), ("x-session-id", "abc")],
        body.as_bytes(),
        1024,
    )
    .await
}

fn broken_reason(r: Result<(Response, bool), WireError>) -> String {
    match r {
        Err(WireError::Broken(reason)) => reason,
        other => panic!("expected a broken exchange, got {other:?}"),
    }
}

/// The request is one well-formed POST; a length-framed response keeps the connection, and the
/// next request goes over the same one.
#[tokio::test]
async fn content_length_keeps_the_connection() {
    let (addr, task) = peer(vec![
        reply(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
        reply(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy"),
    ])
    .await;
    let mut conn = open(&addr).await;
    let (r, reusable) = post(&mut conn, "<a/>").await.unwrap();
    assert_eq!(
        (r.status, &r.body[..], reusable),
        (200, &b"hello"[..], true)
    );
    assert!(conn.is_usable());
    let (r, reusable) = post(&mut conn, "<b/>").await.unwrap();
    assert_eq!((r.status, &r.body[..], reusable), (503, &b"busy"[..], true));
    drop(conn);
    let seen = task.await.unwrap();
    assert_eq!(
        String::from_utf8(seen[0].clone()).unwrap(),
        "POST /svc?x=1 HTTP/1.1\r\nhost: backend.test:80\r\nx-service: Echo\r\n\
         x-session-id: abc\r\ncontent-length: 4\r\n\r\n<a/>"
    );
}

/// Chunked bodies, with chunk extensions and trailer fields, arriving a few bytes at a time.
#[tokio::test]
async fn chunked_body_in_pieces() {
    let response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n\
                     5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n";
    let (addr, _task) = peer(vec![
        Step::Reply {
            bytes: response.to_vec(),
            piece: 3,
        },
        reply(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
    ])
    .await;
    let mut conn = open(&addr).await;
    let (r, reusable) = post(&mut conn, "x").await.unwrap();
    assert_eq!((&r.body[..], reusable), (&b"hello world"[..], true));
    let (r, reusable) = post(&mut conn, "y").await.unwrap();
    assert_eq!((&r.body[..], reusable), (&b""[..], true));
}

/// Interim responses are skipped; 204 has no body even with a Content-Length.
#[tokio::test]
async fn interim_responses_and_bodyless_statuses() {
    let (addr, _task) = peer(vec![
        reply(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        reply(b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n"),
    ])
    .await;
    let mut conn = open(&addr).await;
    let (r, _) = post(&mut conn, "x").await.unwrap();
    assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]));
    let (r, reusable) = post(&mut conn, "x").await.unwrap();
    assert_eq!((r.status, r.body.len(), reusable), (204, 0, true));
}

/// A body delimited by the end of the connection, `Connection: close`, HTTP/1.0 and bytes
/// nobody asked for all end the connection's reuse.
#[tokio::test]
async fn responses_that_end_reuse() {
    for (response, body) in [
        (
            &b"HTTP/1.1 200 OK\r\n\r\nuntil close"[..],
            &b"until close"[..],
        ),
        (
            &b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 2\r\n\r\nok"[..],
            &b"ok"[..],
        ),
        (
            &b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"[..],
            &b"ok"[..],
        ),
        (
            &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA"[..],
            &b"ok"[..],
        ),
    ] {
        let (addr, _task) = peer(vec![Step::ReplyAndClose(response.to_vec())]).await;
        let mut conn = open(&addr).await;
        let (r, reusable) = post(&mut conn, "x").await.unwrap();
        assert_eq!(&r.body[..], body, "{}", String::from_utf8_lossy(response));
        assert!(!reusable, "{}", String::from_utf8_lossy(response));
    }
}

/// Malformed, oversized and truncated responses break the exchange with a reason.
#[tokio::test]
async fn bad_responses_break_the_exchange() {
    let many_headers: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
    let huge_head = format!(
        "HTTP/1.1 200 OK\r\nX-Big: {}\r\n",
        "a".repeat(MAX_HEAD_BYTES)
    );
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n".to_vec(),
            "larger than max_frame_bytes",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n801\r\n".to_vec(),
            "larger than max_frame_bytes",
        ),
        (
            format!("HTTP/1.1 200 OK\r\n{many_headers}\r\n").into_bytes(),
            "more than 64 headers",
        ),
        (huge_head.into_bytes(), "response head is larger"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok".to_vec(),
            "conflicting Content-Length",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n".to_vec(),
            "invalid Content-Length",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
            "invalid chunk size",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX".to_vec(),
            "not followed by CRLF",
        ),
        (b"SMTP ready\r\n\r\n".to_vec(), "not valid HTTP/1.1"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort".to_vec(),
            "after 5 of 10 body bytes",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-".to_vec(),
            "middle of the response head",
        ),
        (
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec(),
            "switched protocols",
        ),
    ];
    for (response, expected) in cases {
        let (addr, _task) = peer(vec![Step::ReplyAndClose(response.clone())]).await;
        let mut conn = open(&addr).await;
        let reason = broken_reason(post(&mut conn, "x").await);
        assert!(
            reason.contains(expected),
            "{:?}: {reason}",
            String::from_utf8_lossy(&response[..response.len().min(80)])
        );
    }
    let (addr, _task) = peer(vec![Step::Close]).await;
    let mut conn = open(&addr).await;
    assert!(broken_reason(post(&mut conn, "x").await).contains("before a response arrived"));
}

/// An idle connection the backend has closed is seen as unusable before anything is sent on it.
#[tokio::test]
async fn a_closed_idle_connection_is_not_usable() {
    let (addr, task) = peer(vec![Step::ReplyAndClose(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
    )])
    .await;
    let mut conn = open(&addr).await;
    let (_, reusable) = post(&mut conn, "x").await.unwrap();
    assert!(reusable, "the response itself allows reuse");
    task.await.unwrap();
    // The runtime learns of the close from epoll; give it a few turns.
    let deadline = Instant::now() + Duration::from_secs(5);
    while conn.is_usable() {
        assert!(Instant::now() < deadline, "the close was never noticed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn header_values() {
    assert!(valid_header_value("Echo"));
    assert!(valid_header_value("a b\tc"));
    assert!(!valid_header_value("bad\r\nX-Injected: 1"));
    assert!(!valid_header_value("caf\u{e9}"));
    let mut out = Vec::new();
    for n in [0usize, 7, 10, 1000, usize::MAX] {
        out.clear();
        push_decimal(&mut out, n);
        assert_eq!(out, n.to_string().as_bytes());
    }
}
