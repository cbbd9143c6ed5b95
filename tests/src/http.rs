//! A small HTTP/1.1 client over `std::net::TcpStream` that controls every byte it sends.
//!
//! Tests need what ordinary clients hide: no `Content-Type` at all, a wrong one, a body sent
//! chunked, a 10 MiB body the server refuses half way, two requests on one connection, a request
//! whose reply is read later (to observe the order in which replies complete), and the client side
//! bound to another loopback address. Every read has a timeout (10 s by default), so a broker that
//! hangs fails the test instead of stalling the suite.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The default bound on connecting and on each read.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How the request body travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length: N` (also for an empty body).
    ContentLength,
    /// `Transfer-Encoding: chunked`, in chunks of this many bytes.
    Chunked(usize),
    /// Neither header (only sensible without a body).
    None,
}

/// One HTTP request, as bytes to be.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query (`/soap`).
    pub target: String,
    /// Headers besides Host, Content-Length/Transfer-Encoding and Connection.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub framing: Framing,
}

impl Request {
    pub fn new(method: &str, target: &str) -> Request {
        Request {
            method: method.to_string(),
            target: target.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
            framing: Framing::ContentLength,
        }
    }

    /// A POST with an optional Content-Type.
    pub fn post(target: &str, content_type: Option<&str>, body: impl Into<Vec<u8>>) -> Request {
        let mut r = Request::new("POST", target);
        if let Some(ct) = content_type {
            r.headers.push(("Content-Type".into(), ct.into()));
        }
        r.body = body.into();
        r
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn framing(mut self, framing: Framing) -> Request {
        self.framing = framing;
        self
    }

    /// The request head (request line and headers) for `host`.
    fn head(&self, host: &str, keep_alive: bool) -> Vec<u8> {
        let mut h = format!(
            "{} {} HTTP/1.1\r\nHost: {host}\r\n",
            self.method, self.target
        );
        for (k, v) in &self.headers {
            h.push_str(&format!("{k}: {v}\r\n"));
        }
        match self.framing {
            Framing::ContentLength => {
                h.push_str(&format!("Content-Length: {}\r\n", self.body.len()))
            }
            Framing::Chunked(_) => h.push_str("Transfer-Encoding: chunked\r\n"),
            Framing::None => {}
        }
        h.push_str(if keep_alive {
            "Connection: keep-alive\r\n"
        } else {
            "Connection: close\r\n"
        });
        h.push_str("\r\n");
        h.into_bytes()
    }

    /// The body as it goes on the wire.
    fn wire_body(&self) -> Vec<u8> {
        match self.framing {
            Framing::ContentLength | Framing::None => self.body.clone(),
            Framing::Chunked(size) => {
                let size = size.max(1);
                let mut out = Vec::with_capacity(self.body.len() + self.body.len() / size * 8 + 8);
                for chunk in self.body.chunks(size) {
                    out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                    out.extend_from_slice(chunk);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
                out
            }
        }
    }
}

/// An HTTP reply.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The Content-Type's media type, lower case, without parameters.
    pub fn media_type(&self) -> Option<String> {
        self.header("content-type").map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
    }

    /// The Content-Type's `charset` parameter, if any, without quotes.
    pub fn charset(&self) -> Option<String> {
        let ct = self.header("content-type")?;
        ct.split(';').skip(1).find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("charset")
                .then(|| v.trim().trim_matches('"').to_string())
        })
    }

    /// The body as text (lossy UTF-8), for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A one-line-ish description for assertion messages.
    pub fn describe(&self) -> String {
        let body = self.text();
        let clipped: String = body.chars().take(1500).collect();
        format!(
            "HTTP {} {}; Content-Type {:?}; body: {}",
            self.status,
            self.reason,
            self.header("content-type"),
            clipped
        )
    }
}

/// Where a request goes: host:port from an `http://host:port/path` URL.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
}

/// Split `http://127.0.0.1:8080/soap` into address, Host header and path.
pub fn parse_url(url: &str) -> Target {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("only http:// URLs are supported: {url}"));
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = host
        .to_socket_addrs()
        .unwrap_or_else(|e| panic!("cannot resolve {host}: {e}"))
        .next()
        .unwrap_or_else(|| panic!("{host} resolves to nothing"));
    Target {
        addr,
        host: host.to_string(),
        path: path.to_string(),
    }
}

/// Connection options.
#[derive(Debug, Clone)]
pub struct Client {
    /// Bind the client side to this local address (e.g. 127.0.0.2) before connecting.
    pub local_ip: Option<IpAddr>,
    /// Bound on connecting and on each read or write.
    pub timeout: Duration,
}

impl Default for Client {
    fn default() -> Self {
        Client {
            local_ip: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl Client {
    pub fn new() -> Client {
        Client::default()
    }

    pub fn bind(mut self, ip: IpAddr) -> Client {
        self.local_ip = Some(ip);
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// Open a connection to the URL's host (the path is ignored).
    pub fn connect(&self, url: &str) -> Connection {
        let t = parse_url(url);
        let stream = match self.local_ip {
            None => TcpStream::connect_timeout(&t.addr, self.timeout)
                .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", t.addr)),
            Some(ip) => {
                use socket2::{Domain, Protocol, SockAddr, Socket, Type};
                let domain = if t.addr.is_ipv4() {
                    Domain::IPV4
                } else {
                    Domain::IPV6
                };
                let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))
                    .expect("creating a socket");
                s.bind(&SockAddr::from(SocketAddr::new(ip, 0)))
                    .unwrap_or_else(|e| panic!("cannot bind the client side to {ip}: {e}"));
                s.connect_timeout(&SockAddr::from(t.addr), self.timeout)
                    .unwrap_or_else(|e| panic!("cannot connect from {ip} to {}: {e}", t.addr));
                s.into()
            }
        };
        stream
            .set_read_timeout(Some(self.timeout))
            .expect("setting the read timeout");
        stream
            .set_write_timeout(Some(self.timeout))
            .expect("setting the write timeout");
        let _ = stream.set_nodelay(true);
        Connection {
            reader: BufReader::new(stream),
            host: t.host,
            keep_alive: false,
        }
    }

    /// Send one request on a fresh connection (closed afterwards) and read the reply.
    pub fn send(&self, url: &str, request: &Request) -> Reply {
        let mut c = self.connect(url);
        c.send(request);
        c.read_reply(&request.method)
    }

    /// Like [`Client::send`], but the body is written from another thread while the reply is read,
    /// so a server that answers before reading the whole body (413) is seen answering rather than
    /// as a broken pipe. Returns the reply, or the read error if no reply came at all.
    pub fn send_racing(&self, url: &str, request: &Request) -> Result<Reply, String> {
        let mut c = self.connect(url);
        let head = request.head(&c.host, false);
        let body = request.wire_body();
        let mut writer = c.reader.get_ref().try_clone().expect("cloning the socket");
        let sender = std::thread::spawn(move || -> std::io::Result<()> {
            writer.write_all(&head)?;
            for chunk in body.chunks(64 * 1024) {
                writer.write_all(chunk)?;
            }
            writer.flush()
        });
        let reply = c.try_read_reply(&request.method);
        let _ = sender.join();
        reply
    }
}

/// One connection; requests on it are sent and their replies read one after the other.
pub struct Connection {
    reader: BufReader<TcpStream>,
    host: String,
    keep_alive: bool,
}

impl Connection {
    /// Ask for keep-alive on the following requests (default: `Connection: close`).
    pub fn keep_alive(mut self, on: bool) -> Connection {
        self.keep_alive = on;
        self
    }

    /// The local address of the client side.
    pub fn local_addr(&self) -> SocketAddr {
        self.reader.get_ref().local_addr().expect("local address")
    }

    /// Write a whole request (head and body).
    pub fn send(&mut self, request: &Request) {
        let mut bytes = request.head(&self.host, self.keep_alive);
        bytes.extend_from_slice(&request.wire_body());
        let s = self.reader.get_mut();
        s.write_all(&bytes)
            .unwrap_or_else(|e| panic!("sending {} {}: {e}", request.method, request.target));
        s.flush().expect("flushing the request");
    }

    /// Read one reply (to a request of `method`), panicking on any error.
    pub fn read_reply(&mut self, method: &str) -> Reply {
        self.try_read_reply(method)
            .unwrap_or_else(|e| panic!("reading the reply: {e}"))
    }

    /// Read one reply.
    pub fn try_read_reply(&mut self, method: &str) -> Result<Reply, String> {
        let r = &mut self.reader;
        let mut line = String::new();
        // Skip interim 1xx replies (100 Continue).
        let (status, reason, headers) = loop {
            line.clear();
            read_line(r, &mut line)?;
            let status_line = line.trim_end().to_string();
            let mut parts = status_line.splitn(3, ' ');
            let version = parts.next().unwrap_or("");
            if !version.starts_with("HTTP/1.") {
                return Err(format!("not an HTTP/1.x status line: {status_line:?}"));
            }
            let status: u16 = parts
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("bad status line {status_line:?}"))?;
            let reason = parts.next().unwrap_or("").to_string();
            let mut headers = Vec::new();
            loop {
                line.clear();
                read_line(r, &mut line)?;
                let l = line.trim_end_matches(['\r', '\n']);
                if l.is_empty() {
                    break;
                }
                let (k, v) = l
                    .split_once(':')
                    .ok_or_else(|| format!("bad header line {l:?}"))?;
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
            if (100..200).contains(&status) {
                continue;
            }
            break (status, reason, headers);
        };
        let find = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let mut body = Vec::new();
        let no_body = method.eq_ignore_ascii_case("HEAD") || status == 204 || status == 304;
        if !no_body {
            if find("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
            {
                loop {
                    line.clear();
                    read_line(r, &mut line)?;
                    let size_text = line.trim().split(';').next().unwrap_or("").to_string();
                    let size = usize::from_str_radix(&size_text, 16)
                        .map_err(|_| format!("bad chunk size {size_text:?}"))?;
                    if size == 0 {
                        // Trailers, then the empty line.
                        loop {
                            line.clear();
                            read_line(r, &mut line)?;
                            if line.trim().is_empty() {
                                break;
                            }
                        }
                        break;
                    }
                    let start = body.len();
                    body.resize(start + size, 0);
                    r.read_exact(&mut body[start..])
                        .map_err(|e| format!("reading a chunk: {e}"))?;
                    line.clear();
                    read_line(r, &mut line)?;
                }
            } else if let Some(len) = find("content-length") {
                let len: usize = len
                    .parse()
                    .map_err(|_| format!("bad Content-Length {len:?}"))?;
                body.resize(len, 0);
                r.read_exact(&mut body)
                    .map_err(|e| format!("reading a body of {len} bytes: {e}"))?;
            } else {
                r.read_to_end(&mut body)
                    .map_err(|e| format!("reading the body to the end: {e}"))?;
            }
        }
        Ok(Reply {
            status,
            reason,
            headers,
            body,
        })
    }
}

fn read_line(r: &mut BufReader<TcpStream>, line: &mut String) -> Result<(), String> {
    match r.read_line(line) {
        Ok(0) => Err("the connection closed before a complete reply".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("reading: {e}")),
    }
}

/// POST `body` to `url` with an optional Content-Type and extra headers, on a fresh connection.
pub fn post(
    url: &str,
    content_type: Option<&str>,
    headers: &[(&str, &str)],
    body: impl Into<Vec<u8>>,
) -> Reply {
    let t = parse_url(url);
    let mut r = Request::post(&t.path, content_type, body);
    for (k, v) in headers {
        r.headers.push((k.to_string(), v.to_string()));
    }
    Client::new().send(url, &r)
}

/// GET `url`.
pub fn get(url: &str) -> Reply {
    request("GET", url, &[], Vec::new())
}

/// Any method, with headers and a body (Content-Length framing).
pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
    let t = parse_url(url);
    let mut r = Request::new(method, &t.path);
    r.body = body;
    for (k, v) in headers {
        r.headers.push((k.to_string(), v.to_string()));
    }
    Client::new().send(url, &r)
}

/// GET `url` with `Authorization: Bearer TOKEN` (the admin listener's API).
pub fn get_with_bearer(url: &str, token: &str) -> Reply {
    let bearer = format!("Bearer {token}");
    request(
        "GET",
        url,
        &[("Authorization", bearer.as_str())],
        Vec::new(),
    )
}

/// GET `url` with a short timeout, returning the status, or None if nothing answered.
pub fn probe(url: &str, timeout: Duration) -> Option<u16> {
    let t = parse_url(url);
    let stream = TcpStream::connect_timeout(&t.addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    let mut c = Connection {
        reader: BufReader::new(stream),
        host: t.host.clone(),
        keep_alive: false,
    };
    let r = Request::new("GET", &t.path).framing(Framing::None);
    let bytes = r.head(&t.host, false);
    c.reader.get_mut().write_all(&bytes).ok()?;
    c.try_read_reply("GET").ok().map(|r| r.status)
}

/// What a [`backend`] received: one entry per request, its head (request line and headers) and
/// its body.
pub type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// An HTTP/1.1 backend of the test's own on 127.0.0.1 (a real socket, for what the broker's http
/// adapter sends): it answers every request with `content_type` and `reply`, keeps connections
/// alive, and records what it received. Returns its URL (`http://127.0.0.1:PORT/backend`).
pub fn backend(content_type: &'static str, reply: Vec<u8>) -> (String, Received) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a backend port");
    let url = format!(
        "http://{}/backend",
        listener.local_addr().expect("the backend's address")
    );
    let received: Received = Received::default();
    let seen = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(DEFAULT_TIMEOUT));
            let Ok(clone) = stream.try_clone() else {
                continue;
            };
            let mut reader = BufReader::new(clone);
            // One request after the other on the connection, until it closes.
            while let Some((head, body)) = read_request(&mut reader) {
                seen.lock().expect("lock").push((head, body));
                let mut out = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                    reply.len()
                )
                .into_bytes();
                out.extend_from_slice(&reply);
                if stream.write_all(&out).is_err() {
                    break;
                }
            }
        }
    });
    (url, received)
}

/// One request (head, body) from `reader`, `None` at the end of the connection.
fn read_request(reader: &mut impl BufRead) -> Option<(String, Vec<u8>)> {
    let mut head = String::new();
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        let end = line == "\r\n";
        head.push_str(&line);
        if end {
            break;
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some((head, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-shot server: accepts one connection, reads the request head (and a Content-Length
    /// body), answers `reply` bytes, and returns the peer address and the request bytes it read.
    fn one_shot(reply: &'static [u8]) -> (String, std::thread::JoinHandle<(SocketAddr, Vec<u8>)>) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/x", l.local_addr().expect("addr"));
        let h = std::thread::spawn(move || {
            let (mut s, peer) = l.accept().expect("accept");
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = s.read(&mut buf).expect("read");
                got.extend_from_slice(&buf[..n]);
                let head_done = got.windows(4).any(|w| w == b"\r\n\r\n");
                let complete = got.ends_with(b"\r\n\r\n") || got.ends_with(b"body");
                if n == 0 || (head_done && complete) {
                    break;
                }
            }
            s.write_all(reply).expect("write");
            (peer, got)
        });
        (url, h)
    }

    #[test]
    fn reads_chunked_replies_and_skips_100_continue() {
        let (url, h) = one_shot(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/xml; charset=\"Shift_JIS\"\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n",
        );
        let r = post(&url, Some("text/xml"), &[], b"body".to_vec());
        h.join().expect("server");
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"abcde");
        assert_eq!(r.charset().as_deref(), Some("Shift_JIS"));
        assert_eq!(r.media_type().as_deref(), Some("text/xml"));
    }

    #[test]
    fn sends_chunked_bodies() {
        let (url, h) = one_shot(b"HTTP/1.1 204 No Content\r\n\r\n");
        let req = Request::post("/x", None, b"hello world".to_vec()).framing(Framing::Chunked(4));
        let r = Client::new().send(&url, &req);
        let (_, got) = h.join().expect("server");
        assert_eq!(r.status, 204);
        let text = String::from_utf8(got).expect("ASCII");
        assert!(text.contains("Transfer-Encoding: chunked\r\n"), "{text}");
        assert!(
            text.ends_with("4\r\nhell\r\n4\r\no wo\r\n3\r\nrld\r\n0\r\n\r\n"),
            "{text}"
        );
    }

    #[test]
    fn binds_the_client_side_to_another_loopback_address() {
        let (url, h) = one_shot(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        let ip: IpAddr = "127.0.0.2".parse().expect("ip");
        let r = Client::new()
            .bind(ip)
            .send(&url, &Request::new("GET", "/x").framing(Framing::None));
        let (peer, _) = h.join().expect("server");
        assert_eq!(r.body, b"ok");
        assert_eq!(
            peer.ip(),
            ip,
            "the server must see the connection coming from 127.0.0.2"
        );
    }
}
