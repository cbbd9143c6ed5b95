//! # One HTTP/1.1 exchange on one keep-alive connection
//!
//! The http adapter needs very little of HTTP: it POSTs one body with a known length and reads
//! one response. This module does exactly that, inline in the caller's future: the request head
//! and body go out in one `write`, the response is read into a buffer the connection keeps and
//! parsed with `httparse`. No connection task, no channel between tasks, no header map: per
//! request that is one `write` and (usually) one `read` on the socket, which is what a reverse
//! proxy like nginx does too. (A general client such as hyper's drives each connection from a
//! task of its own and hands every request to it through a channel; on the benchmark that
//! machinery cost more CPU than the broker's SOAP work.)
//!
//! What a response may be (RFC 9112): any number of interim `1xx` responses first (skipped),
//! then a status line and headers (at most [`MAX_HEADERS`] headers in [`MAX_HEAD_BYTES`]),
//! then a body framed by `Transfer-Encoding: chunked`, by `Content-Length`, or by the end of the
//! connection; `204` and `304` have none. The body must fit in the caller's limit. The
//! connection is kept for the next request only when the exchange ended cleanly: HTTP/1.1, no
//! `Connection: close`, a length-framed body, and nothing unread after it.
//!
//! Everything that goes wrong after the first byte of the request was written is
//! [`WireError::Broken`]: the backend may or may not have acted on the request, so the caller
//! must not send it again. [`WireError::Stale`] is the one exception: a reused connection that
//! refused the very first write (the backend had closed it while idle) took nothing, and the
//! request may go out on a fresh connection.

use bytes::Bytes;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Response headers accepted (hyper's default is 100; backends send a handful).
pub(crate) const MAX_HEADERS: usize = 64;
/// Largest response head (status line and headers), and largest chunked trailer section.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How much the read buffer grows by per read.
const READ_CHUNK: usize = 8 * 1024;

/// How an exchange failed.
#[derive(Debug)]
pub(crate) enum WireError {
    /// The connection was reused and the backend had closed it: nothing was written.
    Stale,
    /// The exchange broke after the request (or part of it) may have reached the backend, or the
    /// response was not valid HTTP/1.1 or too large. The text says which.
    Broken(String),
}

/// A response, body complete.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    pub body: Bytes,
}

/// A keep-alive connection to one backend.
pub(crate) struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet consumed; empty between exchanges.
    buf: Vec<u8>,
    /// The request being written (kept for its capacity).
    out: Vec<u8>,
    /// Exchanges completed on this connection.
    served: u64,
    /// When it was last put back idle.
    pub idle_since: Instant,
}

/// The request head's fixed parts for one backend url.
pub(crate) struct Target<'a> {
    /// `/path?query` as sent on the request line.
    pub path: &'a str,
    /// The `Host` header value (the url's authority).
    pub host: &'a str,
}

/// Open a connection (TCP_NODELAY: the request is one write, Nagle would only delay it).
pub(crate) async fn connect(host: &str, port: u16, timeout: Duration) -> io::Result<Conn> {
    // An IPv6 literal comes bracketed from the url's authority.
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let stream = match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
        Ok(stream) => stream?,
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no connection within {timeout:?}"),
            ))
        }
    };
    stream.set_nodelay(true)?;
    Ok(Conn {
        stream,
        buf: Vec::with_capacity(READ_CHUNK),
        out: Vec::with_capacity(2 * 1024),
        served: 0,
        idle_since: Instant::now(),
    })
}

impl Conn {
    /// Whether an idle connection can still carry a request: the backend has neither closed it
    /// nor sent anything unasked. Costs no system call unless the runtime has seen the socket
    /// become readable.
    pub(crate) fn is_usable(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// POST `body` with `headers` (name, value pairs, already checked to be valid header
    /// values) and read the whole response, its body at most `max_body` bytes. Returns the
    /// response and whether the connection may be reused.
    pub(crate) async fn post(
        &mut self,
        target: &Target<'_>,
        headers: &[(&str, &str)],
        body: &[u8],
        max_body: usize,
    ) -> Result<(Response, bool), WireError> {
        self.out.clear();
        write_head(&mut self.out, target, headers, body.len());
        self.out.extend_from_slice(body);
        self.send().await?;
        let result = self.read_response(max_body).await;
        self.served += 1;
        result
    }

    /// Write the whole request. A reused connection that fails the first write took nothing.
    async fn send(&mut self) -> Result<(), WireError> {
        let mut written = 0;
        while written < self.out.len() {
            match self.stream.write(&self.out[written..]).await {
                Ok(0) => {
                    return Err(WireError::Broken(
                        "the connection closed while the request was being written".into(),
                    ))
                }
                Ok(n) => written += n,
                Err(_) if written == 0 && self.served > 0 => return Err(WireError::Stale),
                Err(e) => return Err(WireError::Broken(format!("writing the request: {e}"))),
            }
        }
        Ok(())
    }

    /// Read more bytes into `buf`; false at end of stream.
    async fn fill(&mut self) -> Result<bool, WireError> {
        self.buf.reserve(READ_CHUNK);
        match self.stream.read_buf(&mut self.buf).await {
            Ok(0) => Ok(false),
            Ok(_) => Ok(true),
            Err(e) => Err(WireError::Broken(format!("reading the response: {e}"))),
        }
    }

    async fn read_response(&mut self, max_body: usize) -> Result<(Response, bool), WireError> {
        let head = loop {
            match parse_head(&self.buf)? {
                Some(head) if (100..200).contains(&head.status) && head.status != 101 => {
                    // An interim response (100 Continue, 103 Early Hints): the real one follows.
                    self.buf.drain(..head.len);
                }
                Some(head) => break head,
                None => {
                    if self.buf.len() > MAX_HEAD_BYTES {
                        return Err(broken(format!(
                            "the response head is larger than {MAX_HEAD_BYTES} bytes"
                        )));
                    }
                    if !self.fill().await? {
                        return Err(broken(if self.buf.is_empty() {
                            "the connection closed before a response arrived".to_string()
                        } else {
                            "the connection closed in the middle of the response head".to_string()
                        }));
                    }
                }
            }
        };
        if head.status == 101 {
            return Err(broken("the backend switched protocols (101)".into()));
        }
        self.buf.drain(..head.len);
        let no_body = head.status == 204 || head.status == 304;
        let (body, framed) = match head.framing {
            _ if no_body => (Bytes::new(), true),
            Framing::Chunked => (self.read_chunked(max_body).await?, true),
            Framing::Length(n) => (self.read_length(n, max_body).await?, true),
            Framing::Close => (self.read_to_end(max_body).await?, false),
        };
        // Anything left over was never asked for: the connection cannot be trusted any more.
        let reusable = framed && head.keep_alive && self.buf.is_empty();
        Ok((
            Response {
                status: head.status,
                body,
            },
            reusable,
        ))
    }

    async fn read_length(&mut self, n: u64, max_body: usize) -> Result<Bytes, WireError> {
        let n = usize::try_from(n)
            .ok()
            .filter(|n| *n <= max_body)
            .ok_or_else(|| too_large(max_body))?;
        while self.buf.len() < n {
            if !self.fill().await? {
                return Err(broken(format!(
                    "the connection closed after {} of {n} body bytes",
                    self.buf.len()
                )));
            }
        }
        let body = Bytes::copy_from_slice(&self.buf[..n]);
        self.buf.drain(..n);
        Ok(body)
    }

    async fn read_to_end(&mut self, max_body: usize) -> Result<Bytes, WireError> {
        while self.fill().await? {
            if self.buf.len() > max_body {
                return Err(too_large(max_body));
            }
        }
        if self.buf.len() > max_body {
            return Err(too_large(max_body));
        }
        Ok(Bytes::from(std::mem::take(&mut self.buf)))
    }

    /// A chunked body: `size[;ext]CRLF data CRLF` ... `0CRLF` trailers `CRLF`.
    async fn read_chunked(&mut self, max_body: usize) -> Result<Bytes, WireError> {
        let mut body = Vec::new();
        let mut at = 0; // parse position in `buf`
        loop {
            let (line, size) = loop {
                match httparse::parse_chunk_size(&self.buf[at..]) {
                    Ok(httparse::Status::Complete(found)) => break found,
                    Ok(httparse::Status::Partial) => {
                        if self.buf.len() - at > MAX_HEAD_BYTES {
                            return Err(broken("a chunk size line is too long".into()));
                        }
                        self.more("a chunk size").await?;
                    }
                    Err(_) => {
                        return Err(broken("the chunked body has an invalid chunk size".into()))
                    }
                }
            };
            at += line;
            if size == 0 {
                break;
            }
            let size = usize::try_from(size)
                .ok()
                .filter(|s| body.len().saturating_add(*s) <= max_body)
                .ok_or_else(|| too_large(max_body))?;
            while self.buf.len() < at + size + 2 {
                self.more("a chunk").await?;
            }
            body.extend_from_slice(&self.buf[at..at + size]);
            if &self.buf[at + size..at + size + 2] != b"\r\n" {
                return Err(broken("a chunk is not followed by CRLF".into()));
            }
            at += size + 2;
            // Consumed chunks are dropped so the buffer holds at most one chunk and a bit.
            self.buf.drain(..at);
            at = 0;
        }
        // Trailer fields (ignored), then the empty line.
        loop {
            match self.buf[at..].windows(2).position(|w| w == b"\r\n") {
                Some(0) => {
                    at += 2;
                    break;
                }
                Some(i) => at += i + 2,
                None => {
                    if self.buf.len() - at > MAX_HEAD_BYTES {
                        return Err(broken("the chunked trailer is too large".into()));
                    }
                    self.more("the chunked trailer").await?;
                }
            }
        }
        self.buf.drain(..at);
        Ok(Bytes::from(body))
    }

    /// Read more while parsing a chunked body; end of stream there is an error.
    async fn more(&mut self, what: &str) -> Result<(), WireError> {
        if self.fill().await? {
            Ok(())
        } else {
            Err(broken(format!(
                "the connection closed in the middle of {what}"
            )))
        }
    }
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Chunked,
    Length(u64),
    /// Until the backend closes the connection.
    Close,
}

struct Head {
    status: u16,
    /// Length of the status line and headers, final CRLF included.
    len: usize,
    framing: Framing,
    keep_alive: bool,
}

/// Parse a response head at the start of `buf`: `None` while incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, WireError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(broken(format!(
                "the response has more than {MAX_HEADERS} headers"
            )))
        }
        Err(e) => return Err(broken(format!("the response is not valid HTTP/1.1: {e}"))),
    };
    let status = response.code.unwrap_or(0);
    // HTTP/1.0 closes after each response unless told otherwise; this client does not try.
    let mut keep_alive = response.version == Some(1);
    let mut chunked = false;
    let mut other_coding = false;
    let mut length: Option<u64> = None;
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| broken("the response has an invalid Content-Length".into()))?;
            if length.is_some_and(|l| l != n) {
                return Err(broken(
                    "the response has conflicting Content-Length headers".into(),
                ));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding decides: chunked must be last for the body to be chunk-framed.
            let value = String::from_utf8_lossy(h.value);
            match value.rsplit(',').next().map(str::trim) {
                Some(last) if last.eq_ignore_ascii_case("chunked") => {
                    chunked = true;
                    other_coding = false;
                }
                _ => {
                    chunked = false;
                    other_coding = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            let value = String::from_utf8_lossy(h.value);
            if value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"))
            {
                keep_alive = false;
            }
        }
    }
    // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3); a body in another coding
    // runs to the end of the connection.
    let framing = if chunked {
        Framing::Chunked
    } else if other_coding {
        Framing::Close
    } else {
        match length {
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        }
    };
    Ok(Some(Head {
        status,
        len,
        framing,
        keep_alive,
    }))
}

/// `POST path HTTP/1.1`, `Host`, the caller's headers and `Content-Length`.
fn write_head(out: &mut Vec<u8>, target: &Target<'_>, headers: &[(&str, &str)], len: usize) {
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(target.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(target.host.as_bytes());
    for (name, value) in headers {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(b"\r\ncontent-length: ");
    push_decimal(out, len);
    out.extend_from_slice(b"\r\n\r\n");
}

/// `n` in decimal, without an intermediate `String`.
fn push_decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Whether `value` may be sent as a header value as it is: visible ASCII, spaces and tabs (the
/// rule of `http::HeaderValue::from_str`; in particular no CR or LF, which would end the header).
pub(crate) fn valid_header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

fn broken(reason: String) -> WireError {
    WireError::Broken(reason)
}

fn too_large(max_body: usize) -> WireError {
    WireError::Broken(format!(
        "the response body is larger than max_frame_bytes ({max_body} bytes)"
    ))
}

#[cfg(test)]
mod tests;
