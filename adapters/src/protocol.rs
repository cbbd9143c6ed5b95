//! # The backend wire protocol
//!
//! The process and tcp adapters talk to workers with this protocol; `adapters/PROTOCOL.md` is the
//! specification for the people who write those workers (in any language). This module is the Rust
//! codec: the broker's side, and the sample server's.
//!
//! ## The shape, in one screen
//!
//! Every message is one **frame**:
//!
//! ```text
//! +----------------+----------------------------------------------+-----------------+
//! | length: u32 BE | header block (UTF-8 text)                    | payload (bytes) |
//! |  = N           | "REQUEST 17\n" "key: value\n" ... "\n"       | the rest of N   |
//! +----------------+----------------------------------------------+-----------------+
//! ```
//!
//! - `N` counts everything after the four length bytes. A frame longer than the agreed maximum
//!   (default 16 MiB) is refused *before* reading it, so a broken peer cannot make us allocate
//!   gigabytes.
//! - The first line is `KIND ID`: the message kind in capitals and a decimal message id. A reply
//!   echoes the id of the message it answers. `HELLO` uses id 0.
//! - Then `key: value` lines (keys lower case; values one line, so CR and LF are refused when
//!   encoding), then an empty line.
//! - The payload is whatever remains: XML for requests and replies, text for the others.
//!
//! Text headers and a length-prefixed frame are the compromise that makes a conforming server easy
//! to write (read four bytes, read N bytes, split at the first empty line; no escaping rules, no
//! schema compiler) while keeping binary-safe payloads and a hard size bound.
//!
//! ## Layers
//!
//! - [`Frame`]: the generic kind/id/headers/payload, with [`Frame::encode`] and [`Frame::decode`].
//! - [`Message`]: the typed messages (`HELLO`, `REQUEST`, `REPLY`, the transaction and dialog
//!   control messages), converted to and from frames.
//! - [`OpenHead`]: a frame's head encoded once ahead of sending, closed with a last number-valued
//!   header (a request's `timeout-ms`) when it is written.
//! - [`FrameReader`]: reads frames from any `AsyncRead`. Like mini-redis's `Connection`, it buffers
//!   what it has read, so `read_frame` is cancel safe and can sit in a `select!` next to a timer.
//! - [`read_frame_blocking`]: the same for plain `std::io::Read` (the sample server's stdin).
//!
//! Every decoding failure is a [`ProtocolError`]; the caller closes the connection and logs the
//! reason. Nothing in here panics on input or waits for bytes that will never come: the length
//! prefix says exactly how much to read.

use bytes::{Buf, Bytes, BytesMut};
use futures_util::StreamExt;
use std::fmt::{self, Write as _};
use std::io::Read;
use tokio::io::AsyncRead;
use tokio_util::codec::{Decoder, FramedRead};

use crate::ReplyStatus;

/// The protocol version this crate speaks (and the highest it offers in `HELLO`).
pub const PROTOCOL_VERSION: u32 = 1;

/// Every version this crate can speak, offered in the broker's `HELLO`.
pub const SUPPORTED_VERSIONS: &[u32] = &[1];

/// The default largest frame, in bytes after the length prefix (16 MiB).
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// Why bytes could not be read as a frame, or a frame could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The length prefix announces more than the agreed maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// The peer closed the stream in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// The frame's content breaks the rules (the text says which).
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A header or first-line value cannot be encoded (for example it contains a line break).
    #[error("cannot encode frame: {0}")]
    Unencodable(String),
    /// The stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// A header value that may hold any text: base64.
fn b64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn unb64(value: &str, key: &str) -> Result<String, ProtocolError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| malformed(format!("{key} is not base64 of UTF-8 text")))
}

fn malformed(reason: impl Into<String>) -> ProtocolError {
    ProtocolError::Malformed(reason.into())
}

// ---------------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------------

/// One frame: the generic form every message takes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The message kind: capital letters and `-` (`REQUEST`, `DIALOG-ABORT`).
    pub kind: String,
    /// The message id; a reply carries the id of what it answers.
    pub id: u64,
    /// `key: value` headers in order. Keys are lower case; each appears at most once.
    pub headers: Vec<(String, String)>,
    pub payload: Bytes,
}

impl Frame {
    pub fn new(kind: &str, id: u64) -> Self {
        Frame {
            kind: kind.to_string(),
            id,
            headers: Vec::new(),
            payload: Bytes::new(),
        }
    }

    /// Add a header (builder style).
    pub fn header(mut self, key: &str, value: impl Into<String>) -> Self {
        self.headers.push((key.to_string(), value.into()));
        self
    }

    /// Add a header when the value is present.
    pub fn header_opt(self, key: &str, value: Option<impl Into<String>>) -> Self {
        match value {
            Some(v) => self.header(key, v),
            None => self,
        }
    }

    pub fn with_payload(mut self, payload: impl Into<Bytes>) -> Self {
        self.payload = payload.into();
        self
    }

    /// The value of a header (keys are stored lower case).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn require(&self, key: &str) -> Result<&str, ProtocolError> {
        self.get(key)
            .ok_or_else(|| malformed(format!("{} {}: missing header `{key}`", self.kind, self.id)))
    }

    /// The complete frame (length prefix included), refusing values that would break the framing
    /// and frames longer than `max_frame`.
    pub fn encode(&self, max_frame: usize) -> Result<Bytes, ProtocolError> {
        let head = self.encode_head(max_frame)?;
        let mut out = BytesMut::with_capacity(head.len() + self.payload.len());
        out.extend_from_slice(&head);
        out.extend_from_slice(&self.payload);
        Ok(out.freeze())
    }

    /// The length prefix and the header block, without the payload (the prefix counts it): a
    /// sender can write these few bytes and then the payload it already holds, with the same
    /// checks as [`Frame::encode`] and no copy of a large payload.
    pub fn encode_head(&self, max_frame: usize) -> Result<Bytes, ProtocolError> {
        let mut head = OpenHead::new(self)?;
        head.close(None, max_frame)?;
        Ok(head.buf.freeze())
    }

    /// Decode a frame's body: the `N` bytes after the length prefix.
    pub fn decode(body: Bytes) -> Result<Frame, ProtocolError> {
        // Find the empty line that ends the header block. Lines end in LF; a CR before it is
        // tolerated on input (servers written on Windows), never produced.
        let mut lines = Vec::new();
        let mut start = 0;
        let end_of_head = loop {
            let Some(nl) = body[start..].iter().position(|&b| b == b'\n') else {
                return Err(malformed("header block is not terminated by an empty line"));
            };
            let mut line = &body[start..start + nl];
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            start += nl + 1;
            if line.is_empty() {
                break start;
            }
            lines.push(line);
        };

        let mut lines = lines.into_iter().map(|line| {
            std::str::from_utf8(line).map_err(|_| malformed("header block is not UTF-8"))
        });
        let first = lines
            .next()
            .ok_or_else(|| malformed("empty header block (no `KIND ID` line)"))??;
        let (kind, id) = first
            .split_once(' ')
            .ok_or_else(|| malformed(format!("first line {first:?} is not `KIND ID`")))?;
        if !valid_kind(kind) {
            return Err(malformed(format!("message kind {kind:?} is not valid")));
        }
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| malformed(format!("message id {id:?} is not a decimal number")))?;

        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            let line = line?;
            let (key, value) = line
                .split_once(':')
                .ok_or_else(|| malformed(format!("header line {line:?} has no ':'")))?;
            let key = key.trim().to_ascii_lowercase();
            if !valid_key(&key) {
                return Err(malformed(format!("header key {key:?} is not valid")));
            }
            if headers.iter().any(|(k, _)| *k == key) {
                return Err(malformed(format!("header `{key}` appears twice")));
            }
            headers.push((key, value.trim().to_string()));
        }

        Ok(Frame {
            kind: kind.to_string(),
            id,
            headers,
            payload: body.slice(end_of_head..),
        })
    }
}

/// A frame's head encoded ahead of sending, but for one last number-valued header that is only
/// known when the frame is written: the pool encodes a `REQUEST` once, in the caller's thread,
/// and its worker adds `timeout-ms` (what is left of the deadline by then) as it writes it.
///
/// [`OpenHead::new`] checks and encodes the first line and the headers; [`OpenHead::close`]
/// appends the last header and the empty line and fills in the length prefix, in the buffer
/// reserved up front (no allocation). The bytes are those of [`Frame::encode_head`] for the frame
/// with that header last.
#[derive(Debug)]
pub struct OpenHead {
    /// The four prefix bytes (filled by `close`), the first line and the headers so far.
    buf: BytesMut,
    /// Where the headers end (`close` may be called again: it starts over from here).
    open_len: usize,
    payload_len: usize,
}

/// The most a closing header adds: `key: ` + 20 digits + LF + the empty line.
const CLOSING_ROOM: usize = 24 + 20 + 2;

impl OpenHead {
    /// Check and encode `frame`'s first line and headers (its payload is only counted).
    pub fn new(frame: &Frame) -> Result<OpenHead, ProtocolError> {
        if !valid_kind(&frame.kind) {
            return Err(ProtocolError::Unencodable(format!(
                "message kind {:?} is not capital letters and '-'",
                frame.kind
            )));
        }
        let size: usize = frame
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.len() + 3)
            .sum();
        let mut buf = BytesMut::with_capacity(4 + frame.kind.len() + 22 + size + CLOSING_ROOM);
        buf.extend_from_slice(&[0; 4]);
        // Writing to a BytesMut cannot fail.
        let _ = writeln!(buf, "{} {}", frame.kind, frame.id);
        for (key, value) in &frame.headers {
            if !valid_key(key) {
                return Err(ProtocolError::Unencodable(format!(
                    "header key {key:?} is not lower-case letters, digits and '-'"
                )));
            }
            // A line break in a value would let it forge headers or end the block early.
            if value.contains(['\r', '\n']) {
                return Err(ProtocolError::Unencodable(format!(
                    "header `{key}` contains a line break"
                )));
            }
            buf.extend_from_slice(key.as_bytes());
            buf.extend_from_slice(b": ");
            buf.extend_from_slice(value.as_bytes());
            buf.extend_from_slice(b"\n");
        }
        Ok(OpenHead {
            open_len: buf.len(),
            buf,
            payload_len: frame.payload.len(),
        })
    }

    /// The frame's length (after the prefix, payload included) once closed with `last`.
    pub fn frame_len(&self, last: Option<(&str, u64)>) -> usize {
        let last = last.map_or(0, |(key, value)| key.len() + 2 + digits(value) + 1);
        self.open_len - 4 + last + 1 + self.payload_len
    }

    /// Check that the frame closed with `last` fits in `max_frame` (and the length prefix).
    pub fn check(&self, last: Option<(&str, u64)>, max_frame: usize) -> Result<(), ProtocolError> {
        let len = self.frame_len(last);
        if len > max_frame || len > u32::MAX as usize {
            return Err(ProtocolError::TooLarge {
                len,
                max: max_frame,
            });
        }
        Ok(())
    }

    /// Append `last` (a lower-case key and its number) and the empty line, fill in the length
    /// prefix, and return the head's bytes; the payload follows them on the wire.
    pub fn close(
        &mut self,
        last: Option<(&'static str, u64)>,
        max_frame: usize,
    ) -> Result<&[u8], ProtocolError> {
        if let Some((key, _)) = last {
            if !valid_key(key) {
                return Err(ProtocolError::Unencodable(format!(
                    "header key {key:?} is not lower-case letters, digits and '-'"
                )));
            }
        }
        self.check(last, max_frame)?;
        let len = self.frame_len(last) as u32;
        self.buf.truncate(self.open_len);
        if let Some((key, value)) = last {
            let _ = writeln!(self.buf, "{key}: {value}");
        }
        self.buf.extend_from_slice(b"\n");
        self.buf[..4].copy_from_slice(&len.to_be_bytes());
        Ok(&self.buf)
    }
}

/// How many decimal digits `n` has.
fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

fn valid_kind(kind: &str) -> bool {
    !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_uppercase() || b == b'-')
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Try to take one frame off the front of `buf`; `Ok(None)` when more bytes are needed.
///
/// This is the whole streaming decoder: the length check happens as soon as the four prefix bytes
/// are there, so an oversized frame fails before its body is read.
pub fn decode_frame(buf: &mut BytesMut, max_frame: usize) -> Result<Option<Frame>, ProtocolError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    check_len(len, max_frame)?;
    if buf.len() < 4 + len {
        // Reserve once for the whole frame instead of growing step by step.
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    let body = buf.split_to(len).freeze();
    Frame::decode(body).map(Some)
}

/// Decode a frame handed over in two parts by an in-process link (`pool::FrameLink`): `head` is
/// the length prefix and the header block (as [`Frame::encode_head`] or [`OpenHead::close`] wrote
/// it), `payload` the payload the sender held, taken as it is. A head that carries its (small)
/// payload itself, as a whole encoded frame does, is accepted with an empty `payload`. The checks
/// are those of [`decode_frame`].
pub fn decode_parts(head: Bytes, payload: Bytes, max_frame: usize) -> Result<Frame, ProtocolError> {
    if head.len() < 4 {
        return Err(ProtocolError::Truncated);
    }
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    check_len(len, max_frame)?;
    if len != head.len() - 4 + payload.len() {
        return Err(malformed(format!(
            "length prefix {len} but {} bytes handed over",
            head.len() - 4 + payload.len()
        )));
    }
    let frame = Frame::decode(head.slice(4..))?;
    if payload.is_empty() {
        return Ok(frame);
    }
    if !frame.payload.is_empty() {
        return Err(malformed(
            "payload bytes in the head of a frame handed over in parts",
        ));
    }
    Ok(Frame { payload, ..frame })
}

fn check_len(len: usize, max_frame: usize) -> Result<(), ProtocolError> {
    if len > max_frame {
        return Err(ProtocolError::TooLarge {
            len,
            max: max_frame,
        });
    }
    if len == 0 {
        return Err(malformed("zero-length frame"));
    }
    Ok(())
}

/// Reads frames from an async byte stream (a child's stdout, a TCP connection): tokio-util's
/// `FramedRead` (the buffer, the reads, the end of stream) around [`decode_frame`].
///
/// Why not tokio-util's `LengthDelimitedCodec` too, as the daemon protocol does: this protocol
/// refuses a zero or oversized length before the body is read and decodes the frame in the same
/// step; wrapping the codec for that needs a state flag (see cookie-store's `remote/frame.rs`),
/// while `decode_frame` is stateless, twelve lines, and what the tests drive byte by byte.
#[derive(Debug)]
pub struct FrameReader<R> {
    frames: FramedRead<R, FrameCodec>,
}

/// [`decode_frame`] as a tokio-util `Decoder`; an end of stream inside a frame is `Truncated`.
#[derive(Debug)]
struct FrameCodec {
    max_frame: usize,
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        decode_frame(src, self.max_frame)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        match decode_frame(src, self.max_frame)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(ProtocolError::Truncated),
        }
    }
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, max_frame: usize) -> Self {
        FrameReader {
            frames: FramedRead::with_capacity(inner, FrameCodec { max_frame }, 8 * 1024),
        }
    }

    /// The next frame; `Ok(None)` when the peer closed the stream between frames.
    ///
    /// Cancel safe: bytes read before a cancellation stay in the buffer for the next call.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, ProtocolError> {
        self.frames.next().await.transpose()
    }

    pub fn into_inner(self) -> R {
        self.frames.into_inner()
    }
}

/// Read one frame from a blocking reader; `Ok(None)` on a clean end of stream between frames.
///
/// Reads exactly the prefix and then exactly the body, never past the frame, so it needs no buffer
/// kept between calls (the sample server reads its stdin with it). tokio-util's codecs are async
/// only; the checks and the decoding are the async reader's (`check_len`, `Frame::decode`).
pub fn read_frame_blocking<R: Read>(
    reader: &mut R,
    max_frame: usize,
) -> Result<Option<Frame>, ProtocolError> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match reader.read(&mut prefix[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(ProtocolError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_be_bytes(prefix) as usize;
    check_len(len, max_frame)?;
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ProtocolError::Truncated
        } else {
            ProtocolError::Io(e)
        }
    })?;
    Frame::decode(Bytes::from(body)).map(Some)
}

// ---------------------------------------------------------------------------------------------
// Typed messages
// ---------------------------------------------------------------------------------------------

/// The dialog marker as it travels (the broker keeps the worker id; the server needs only this).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialog {
    None,
    Begin,
    Continue,
}

impl Dialog {
    pub fn as_str(self) -> &'static str {
        match self {
            Dialog::None => "none",
            Dialog::Begin => "begin",
            Dialog::Continue => "continue",
        }
    }

    fn parse(s: &str) -> Option<Dialog> {
        match s {
            "none" => Some(Dialog::None),
            "begin" => Some(Dialog::Begin),
            "continue" => Some(Dialog::Continue),
            _ => None,
        }
    }
}

/// `HELLO`: the version handshake, first in each direction on a new connection.
///
/// The broker offers `versions` and names its preference in `protocol`; the server answers with
/// the `protocol` it chose and its `server` name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hello {
    pub protocol: u32,
    /// Versions the sender can speak (the broker's offer; optional from the server).
    pub versions: Vec<u32>,
    /// The server's self-description, for the log (server to broker).
    pub server: Option<String>,
    /// The server class this connection serves (broker to server).
    pub class: Option<String>,
    /// The worker id the broker gave this connection (broker to server).
    pub worker: Option<String>,
    /// The largest frame the sender accepts.
    pub max_frame: Option<usize>,
    /// Set by a server that refuses the handshake: why.
    pub error: Option<String>,
}

/// `REQUEST <id>`: one service call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub id: u64,
    pub service: String,
    pub operation: String,
    pub session: Option<String>,
    pub transaction: Option<String>,
    pub dialog: Dialog,
    /// `timeout-ms`: how many milliseconds the broker will still wait for the reply when it sends
    /// the request, so that a server waiting for a lock can give up with an application fault
    /// before the broker times out and kills it. Optional on the wire (older brokers omit it).
    pub timeout_ms: Option<u64>,
    /// The body element as XML bytes.
    pub payload: Bytes,
    /// `principal` and `credential` (each base64, so that any byte may be in them): the client's
    /// user name and password, for a class that binds with them. Never logged.
    pub credential: Option<crate::Credential>,
}

/// `REPLY <id>`: the answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub id: u64,
    pub status: ReplyStatus,
    /// The response element, the fault detail, or error text.
    pub payload: Bytes,
    /// `open-transaction`: in a dialog, the server holds a transaction of its own open on the
    /// dialog's connection (a sql class's `BEGIN` not yet committed), named by this opaque token.
    /// Absent: none is open. The broker shows it to dialects that report transaction boundaries.
    pub open_transaction: Option<String>,
}

/// A participant's vote in `VOTE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vote {
    /// Prepared: the work is durable on the server and will be committed or aborted on command.
    Yes,
    /// Cannot commit; the server has already rolled the transaction back.
    No,
}

/// Every message of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// `HELLO 0` (both directions).
    Hello(Hello),
    /// `REQUEST <id>` (broker to server).
    Request(Request),
    /// `REPLY <id>` (server to broker).
    Reply(Reply),
    /// `PREPARE <id>` with `transaction` (broker to server): phase one.
    Prepare { id: u64, transaction: String },
    /// `VOTE <id>` with `transaction`, `vote: yes|no` and an optional `reason`.
    Vote {
        id: u64,
        transaction: String,
        vote: Vote,
        reason: Option<String>,
    },
    /// `COMMIT <id>` with `transaction`: phase two, commit. Idempotent.
    Commit { id: u64, transaction: String },
    /// `ABORT <id>` with `transaction`: roll back (prepared or not). Idempotent.
    Abort { id: u64, transaction: String },
    /// `ACK <id>`: the answer to `COMMIT`, `ABORT` and `DIALOG-ABORT`.
    Ack {
        id: u64,
        transaction: Option<String>,
    },
    /// `RECOVER <id>`: list transactions prepared but not yet committed or aborted.
    Recover { id: u64 },
    /// `RECOVERED <id>` with `count`; the payload lists the transaction ids, one per line.
    Recovered { id: u64, transactions: Vec<String> },
    /// `DIALOG-ABORT <id>` with `session`: the broker ends the dialog that session holds.
    DialogAbort { id: u64, session: String },
}

impl Message {
    /// The message id (0 for `HELLO`).
    pub fn id(&self) -> u64 {
        match self {
            Message::Hello(_) => 0,
            Message::Request(r) => r.id,
            Message::Reply(r) => r.id,
            Message::Prepare { id, .. }
            | Message::Vote { id, .. }
            | Message::Commit { id, .. }
            | Message::Abort { id, .. }
            | Message::Ack { id, .. }
            | Message::Recover { id }
            | Message::Recovered { id, .. }
            | Message::DialogAbort { id, .. } => *id,
        }
    }

    /// The wire kind (`REQUEST`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello(_) => "HELLO",
            Message::Request(_) => "REQUEST",
            Message::Reply(_) => "REPLY",
            Message::Prepare { .. } => "PREPARE",
            Message::Vote { .. } => "VOTE",
            Message::Commit { .. } => "COMMIT",
            Message::Abort { .. } => "ABORT",
            Message::Ack { .. } => "ACK",
            Message::Recover { .. } => "RECOVER",
            Message::Recovered { .. } => "RECOVERED",
            Message::DialogAbort { .. } => "DIALOG-ABORT",
        }
    }

    /// Encode straight to bytes (length prefix included).
    pub fn encode(&self, max_frame: usize) -> Result<Bytes, ProtocolError> {
        self.to_frame()?.encode(max_frame)
    }

    /// This message as an in-process link hands it over (`pool::FrameLink`): the length prefix
    /// and header block, and the payload it already holds (not copied). A message that cannot be
    /// encoded (over the frame limit) is replaced by an `error` reply saying so: an in-process
    /// server's answer must reach the broker in some form.
    pub fn encode_parts(&self, max_frame: usize) -> (Bytes, Bytes) {
        let encoded = self
            .to_frame()
            .and_then(|f| f.encode_head(max_frame).map(|head| (head, f.payload)));
        match encoded {
            Ok(parts) => parts,
            Err(e) => {
                let refusal = Message::Reply(Reply {
                    id: self.id(),
                    status: ReplyStatus::Error(format!("cannot encode the answer: {e}")),
                    payload: Bytes::new(),
                    open_transaction: None,
                });
                // An error reply without a payload is a few dozen bytes: always encodable.
                let head = refusal.encode(max_frame).unwrap_or_default();
                (head, Bytes::new())
            }
        }
    }

    /// The generic frame for this message. Fails only for values the format cannot carry.
    pub fn to_frame(&self) -> Result<Frame, ProtocolError> {
        let frame = Frame::new(self.kind(), self.id());
        Ok(match self {
            Message::Hello(h) => {
                let versions = (!h.versions.is_empty()).then(|| {
                    h.versions
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                });
                frame
                    .header("protocol", h.protocol.to_string())
                    .header_opt("versions", versions)
                    .header_opt("server", h.server.clone())
                    .header_opt("class", h.class.clone())
                    .header_opt("worker", h.worker.clone())
                    .header_opt("max-frame", h.max_frame.map(|m| m.to_string()))
                    .header_opt("error", h.error.clone())
            }
            Message::Request(r) => frame
                .header("service", r.service.clone())
                .header("operation", r.operation.clone())
                .header_opt("session", r.session.clone())
                .header_opt("transaction", r.transaction.clone())
                .header("dialog", r.dialog.as_str())
                .header_opt("timeout-ms", r.timeout_ms.map(|t| t.to_string()))
                .header_opt("principal", r.credential.as_ref().map(|c| b64(&c.user)))
                .header_opt(
                    "credential",
                    r.credential.as_ref().map(|c| b64(&c.password)),
                )
                .with_payload(r.payload.clone()),
            Message::Reply(r) => {
                let frame = match &r.status {
                    ReplyStatus::Ok => frame.header("status", "ok"),
                    ReplyStatus::DialogContinue => frame.header("status", "dialog-continue"),
                    ReplyStatus::DialogEnd => frame.header("status", "dialog-end"),
                    ReplyStatus::DialogAbort => frame.header("status", "dialog-abort"),
                    ReplyStatus::Fault { code, string } => frame
                        .header("status", "fault")
                        .header("fault-code", code.clone())
                        .header("fault-string", string.clone()),
                    ReplyStatus::Error(reason) => {
                        let reason = (!reason.is_empty()).then(|| reason.clone());
                        frame.header("status", "error").header_opt("reason", reason)
                    }
                };
                frame
                    .header_opt("open-transaction", r.open_transaction.clone())
                    .with_payload(r.payload.clone())
            }
            Message::Prepare { transaction, .. }
            | Message::Commit { transaction, .. }
            | Message::Abort { transaction, .. } => {
                frame.header("transaction", check_token(transaction)?)
            }
            Message::Vote {
                transaction,
                vote,
                reason,
                ..
            } => frame
                .header("transaction", check_token(transaction)?)
                .header(
                    "vote",
                    match vote {
                        Vote::Yes => "yes",
                        Vote::No => "no",
                    },
                )
                .header_opt("reason", reason.clone()),
            Message::Ack { transaction, .. } => {
                frame.header_opt("transaction", transaction.clone())
            }
            Message::Recover { .. } => frame,
            Message::Recovered { transactions, .. } => {
                let mut list = String::new();
                for t in transactions {
                    list.push_str(check_token(t)?);
                    list.push('\n');
                }
                frame
                    .header("count", transactions.len().to_string())
                    .with_payload(list)
            }
            Message::DialogAbort { session, .. } => frame.header("session", session.clone()),
        })
    }

    /// Decode a frame's body (the bytes after the length prefix) into a message.
    pub fn decode(body: Bytes) -> Result<Message, ProtocolError> {
        Message::from_frame(Frame::decode(body)?)
    }

    /// The typed message a frame carries. Unknown headers are ignored (newer peers may add
    /// some); missing required ones and unknown kinds are errors.
    pub fn from_frame(frame: Frame) -> Result<Message, ProtocolError> {
        let id = frame.id;
        let text = |key: &str| frame.get(key).map(str::to_string);
        let txn = || frame.require("transaction").map(str::to_string);
        Ok(match frame.kind.as_str() {
            "HELLO" => {
                let protocol = parse_number(frame.require("protocol")?, "protocol")?;
                let versions = match frame.get("versions") {
                    None => Vec::new(),
                    Some(list) => list
                        .split(',')
                        .map(|v| parse_number(v.trim(), "versions"))
                        .collect::<Result<_, _>>()?,
                };
                let max_frame = match frame.get("max-frame") {
                    None => None,
                    Some(v) => Some(parse_number(v, "max-frame")?),
                };
                Message::Hello(Hello {
                    protocol,
                    versions,
                    server: text("server"),
                    class: text("class"),
                    worker: text("worker"),
                    max_frame,
                    error: text("error"),
                })
            }
            "REQUEST" => {
                let dialog = match frame.get("dialog") {
                    None => Dialog::None,
                    Some(d) => Dialog::parse(d)
                        .ok_or_else(|| malformed(format!("REQUEST {id}: unknown dialog {d:?}")))?,
                };
                let timeout_ms = match frame.get("timeout-ms") {
                    None => None,
                    Some(v) => Some(parse_number(v, "timeout-ms")?),
                };
                let credential = match (frame.get("principal"), frame.get("credential")) {
                    (None, None) => None,
                    (Some(user), Some(password)) => Some(crate::Credential {
                        user: unb64(user, "principal")?,
                        password: unb64(password, "credential")?,
                    }),
                    _ => {
                        return Err(malformed(format!(
                            "REQUEST {id}: principal and credential go together"
                        )))
                    }
                };
                Message::Request(Request {
                    id,
                    credential,
                    service: frame.require("service")?.to_string(),
                    operation: frame.require("operation")?.to_string(),
                    session: text("session"),
                    transaction: text("transaction"),
                    dialog,
                    timeout_ms,
                    payload: frame.payload.clone(),
                })
            }
            "REPLY" => {
                let status = match frame.require("status")? {
                    "ok" => ReplyStatus::Ok,
                    "dialog-continue" => ReplyStatus::DialogContinue,
                    "dialog-end" => ReplyStatus::DialogEnd,
                    "dialog-abort" => ReplyStatus::DialogAbort,
                    "fault" => ReplyStatus::Fault {
                        code: frame.require("fault-code")?.to_string(),
                        string: frame.get("fault-string").unwrap_or_default().to_string(),
                    },
                    "error" => ReplyStatus::Error(text("reason").unwrap_or_default()),
                    other => {
                        return Err(malformed(format!("REPLY {id}: unknown status {other:?}")))
                    }
                };
                Message::Reply(Reply {
                    id,
                    status,
                    payload: frame.payload.clone(),
                    open_transaction: text("open-transaction"),
                })
            }
            "PREPARE" => Message::Prepare {
                id,
                transaction: txn()?,
            },
            "VOTE" => Message::Vote {
                id,
                transaction: txn()?,
                vote: match frame.require("vote")? {
                    "yes" => Vote::Yes,
                    "no" => Vote::No,
                    other => return Err(malformed(format!("VOTE {id}: unknown vote {other:?}"))),
                },
                reason: text("reason"),
            },
            "COMMIT" => Message::Commit {
                id,
                transaction: txn()?,
            },
            "ABORT" => Message::Abort {
                id,
                transaction: txn()?,
            },
            "ACK" => Message::Ack {
                id,
                transaction: text("transaction"),
            },
            "RECOVER" => Message::Recover { id },
            "RECOVERED" => {
                let list = std::str::from_utf8(&frame.payload)
                    .map_err(|_| malformed(format!("RECOVERED {id}: payload is not UTF-8")))?;
                let transactions: Vec<String> = list
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect();
                if let Some(count) = frame.get("count") {
                    let count: usize = parse_number(count, "count")?;
                    if count != transactions.len() {
                        return Err(malformed(format!(
                            "RECOVERED {id}: count says {count} but the payload lists {}",
                            transactions.len()
                        )));
                    }
                }
                Message::Recovered { id, transactions }
            }
            "DIALOG-ABORT" => Message::DialogAbort {
                id,
                session: frame.require("session")?.to_string(),
            },
            other => return Err(malformed(format!("unknown message kind {other:?}"))),
        })
    }
}

/// Transaction ids travel on payload lines and as header values: no whitespace at all.
fn check_token(t: &str) -> Result<&str, ProtocolError> {
    if t.is_empty() || t.chars().any(char::is_whitespace) {
        Err(ProtocolError::Unencodable(format!(
            "transaction id {t:?} is empty or contains whitespace"
        )))
    } else {
        Ok(t)
    }
}

fn parse_number<T: std::str::FromStr>(value: &str, what: &str) -> Result<T, ProtocolError> {
    value
        .trim()
        .parse()
        .map_err(|_| malformed(format!("`{what}` value {value:?} is not a number")))
}

impl fmt::Display for Frame {
    /// A one-line summary for logs (never the payload: it may be large or sensitive).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} ({} headers, {} payload bytes)",
            self.kind,
            self.id,
            self.headers.len(),
            self.payload.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = DEFAULT_MAX_FRAME;

    fn roundtrip(msg: Message) {
        let bytes = msg.encode(MAX).unwrap();
        let mut buf = BytesMut::from(&bytes[..]);
        let frame = decode_frame(&mut buf, MAX).unwrap().unwrap();
        assert!(buf.is_empty());
        assert_eq!(Message::from_frame(frame).unwrap(), msg);
    }

    fn body(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    #[test]
    fn every_message_roundtrips() {
        roundtrip(Message::Hello(Hello {
            protocol: 1,
            versions: vec![1, 2],
            class: Some("echo".into()),
            worker: Some("echo#1".into()),
            max_frame: Some(MAX),
            ..Default::default()
        }));
        roundtrip(Message::Hello(Hello {
            protocol: 1,
            server: Some("sample-server echo".into()),
            ..Default::default()
        }));
        roundtrip(Message::Request(Request {
            credential: None,
            id: 17,
            service: "Echo".into(),
            operation: "Echo".into(),
            session: Some("s-1".into()),
            transaction: None,
            dialog: Dialog::Begin,
            timeout_ms: Some(179_950),
            payload: body("<Echo xmlns=\"urn:x\"><a>1</a></Echo>"),
        }));
        for status in [
            ReplyStatus::Ok,
            ReplyStatus::DialogContinue,
            ReplyStatus::DialogEnd,
            ReplyStatus::DialogAbort,
            ReplyStatus::Fault {
                code: "Client".into(),
                string: "unknown operation X".into(),
            },
            ReplyStatus::Error("disk full".into()),
        ] {
            roundtrip(Message::Reply(Reply {
                id: 17,
                status: status.clone(),
                payload: body("<r/>"),
                open_transaction: None,
            }));
            roundtrip(Message::Reply(Reply {
                id: 18,
                status,
                payload: body("<r/>"),
                open_transaction: Some("3q2+7w8AAAA=".into()),
            }));
        }
        roundtrip(Message::Prepare {
            id: 3,
            transaction: "t-1".into(),
        });
        roundtrip(Message::Vote {
            id: 3,
            transaction: "t-1".into(),
            vote: Vote::No,
            reason: Some("constraint violated".into()),
        });
        roundtrip(Message::Commit {
            id: 4,
            transaction: "t-1".into(),
        });
        roundtrip(Message::Abort {
            id: 5,
            transaction: "t-1".into(),
        });
        roundtrip(Message::Ack {
            id: 5,
            transaction: Some("t-1".into()),
        });
        roundtrip(Message::Recover { id: 6 });
        roundtrip(Message::Recovered {
            id: 6,
            transactions: vec!["t-1".into(), "t-9".into()],
        });
        roundtrip(Message::Recovered {
            id: 6,
            transactions: vec![],
        });
        roundtrip(Message::DialogAbort {
            id: 7,
            session: "s-1".into(),
        });
    }

    #[test]
    fn an_open_head_closed_with_timeout_ms_is_the_requests_encoded_head() {
        let request = |timeout_ms| {
            Message::Request(Request {
                credential: None,
                id: 41,
                service: "Echo".into(),
                operation: "Echo".into(),
                session: Some("s".into()),
                transaction: None,
                dialog: Dialog::Begin,
                timeout_ms,
                payload: Bytes::from_static(b"<Echo/>"),
            })
        };
        let mut open = OpenHead::new(&request(None).to_frame().unwrap()).unwrap();
        // Closed twice, with a shorter number the second time (as a retried write would be).
        for left in [180_000, 7] {
            let want = request(Some(left))
                .to_frame()
                .unwrap()
                .encode_head(MAX)
                .unwrap();
            let head = open.close(Some(("timeout-ms", left)), MAX).unwrap();
            assert_eq!(head, &want[..]);
            assert_eq!(
                open.frame_len(Some(("timeout-ms", left))) + 4,
                want.len() + 7
            );
        }
        // Without a last header it is the plain head; the limit counts the payload.
        let plain = request(None).to_frame().unwrap().encode_head(MAX).unwrap();
        assert_eq!(open.close(None, MAX).unwrap(), &plain[..]);
        let len = open.frame_len(Some(("timeout-ms", 180_000)));
        assert!(open.check(Some(("timeout-ms", 180_000)), len).is_ok());
        assert!(matches!(
            open.close(Some(("timeout-ms", 180_000)), len - 1),
            Err(ProtocolError::TooLarge { .. })
        ));
        assert_eq!(
            (digits(0), digits(9), digits(10), digits(u64::MAX)),
            (1, 1, 2, 20)
        );
    }

    #[test]
    fn exact_bytes_of_a_request() {
        let msg = Message::Request(Request {
            credential: None,
            id: 1,
            service: "Echo".into(),
            operation: "Echo".into(),
            session: None,
            transaction: None,
            dialog: Dialog::None,
            timeout_ms: None,
            payload: body("<Echo/>"),
        });
        let bytes = msg.encode(MAX).unwrap();
        let text = "REQUEST 1\nservice: Echo\noperation: Echo\ndialog: none\n\n<Echo/>";
        assert_eq!(&bytes[..4], &(text.len() as u32).to_be_bytes());
        assert_eq!(&bytes[4..], text.as_bytes());
    }

    /// The example exchange in PROTOCOL.md §7 is what this codec produces.
    #[test]
    fn protocol_md_example_bytes() {
        let hello = Message::Hello(Hello {
            protocol: 1,
            versions: vec![1],
            class: Some("echo".into()),
            worker: Some("echo#1".into()),
            max_frame: Some(DEFAULT_MAX_FRAME),
            ..Default::default()
        });
        assert_eq!(&hello.encode(MAX).unwrap()[..4], &[0, 0, 0, 0x50]);
        let request = Message::Request(Request {
            credential: None,
            id: 1,
            service: "Echo".into(),
            operation: "Echo".into(),
            session: Some("7f3a9c".into()),
            transaction: None,
            dialog: Dialog::None,
            timeout_ms: Some(180_000),
            payload: body(r#"<Echo xmlns="urn:example"><text>hi</text></Echo>"#),
        });
        let bytes = request.encode(MAX).unwrap();
        assert_eq!(&bytes[..4], &[0, 0, 0, 0x89]);
        assert!(bytes[4..].starts_with(
            b"REQUEST 1\nservice: Echo\noperation: Echo\nsession: 7f3a9c\ndialog: none\ntimeout-ms: 180000\n\n<Echo"
        ));
        // encode_head is encode without the payload, the prefix still counting it.
        let head = request.to_frame().unwrap().encode_head(MAX).unwrap();
        assert_eq!(&bytes[..head.len()], &head[..]);
        assert_eq!(bytes.len() - head.len(), 48);
        let fault = Message::Reply(Reply {
            open_transaction: None,
            id: 2,
            status: ReplyStatus::Fault {
                code: "Client".into(),
                string: "unknown operation Frob".into(),
            },
            payload: Bytes::new(),
        });
        assert_eq!(&fault.encode(MAX).unwrap()[..4], &[0, 0, 0, 0x4f]);
    }

    /// The two-phase commit in PROTOCOL.md §8 (and §7's second request) is what this codec
    /// produces.
    #[test]
    fn protocol_md_two_phase_example_lengths() {
        let t = "7f3a9c-1".to_string();
        let request = |id, service: &str, session: Option<&str>, txn: Option<&str>, payload| {
            Message::Request(Request {
                credential: None,
                id,
                service: service.into(),
                operation: service.into(),
                session: session.map(Into::into),
                transaction: txn.map(Into::into),
                dialog: Dialog::None,
                timeout_ms: Some(180_000),
                payload: body(payload),
            })
        };
        let cases = [
            (request(2, "Frob", None, None, "<Frob/>"), 0x50),
            (
                request(
                    5,
                    "Put",
                    Some("7f3a9c"),
                    Some("7f3a9c-1"),
                    r#"<Put xmlns="urn:example"><key>balance</key><value>90</value></Put>"#,
                ),
                0xaf,
            ),
            (
                Message::Reply(Reply {
                    open_transaction: None,
                    id: 5,
                    status: ReplyStatus::Ok,
                    payload: body(r#"<PutResponse xmlns="urn:example"/>"#),
                }),
                0x36,
            ),
            (
                Message::Prepare {
                    id: 6,
                    transaction: t.clone(),
                },
                0x21,
            ),
            (
                Message::Vote {
                    id: 6,
                    transaction: t.clone(),
                    vote: Vote::Yes,
                    reason: None,
                },
                0x28,
            ),
            (
                Message::Commit {
                    id: 7,
                    transaction: t.clone(),
                },
                0x20,
            ),
            (
                Message::Ack {
                    id: 7,
                    transaction: Some(t.clone()),
                },
                0x1d,
            ),
            (Message::Recover { id: 8 }, 0x0b),
            (
                Message::Recovered {
                    id: 8,
                    transactions: vec![t.clone()],
                },
                0x1f,
            ),
        ];
        for (message, len) in cases {
            let bytes = message.encode(MAX).unwrap();
            assert_eq!(&bytes[..4], &[0, 0, 0, len], "{}", message.kind());
        }
    }

    #[test]
    fn lenient_input_crlf_case_and_unknown_headers() {
        let frame = Frame::decode(body(
            "REPLY 9\r\nStatus: ok\r\nX-Extra:  whatever \r\n\r\n<EchoResponse/>",
        ))
        .unwrap();
        assert_eq!(frame.get("x-extra"), Some("whatever"));
        let msg = Message::from_frame(frame).unwrap();
        assert_eq!(
            msg,
            Message::Reply(Reply {
                open_transaction: None,
                id: 9,
                status: ReplyStatus::Ok,
                payload: body("<EchoResponse/>"),
            })
        );
    }

    #[test]
    fn payload_may_contain_blank_lines_and_binary() {
        let payload = Bytes::from_static(b"\n\n\x00\xff\r\n");
        let frame = Frame::new("REPLY", 1)
            .header("status", "ok")
            .with_payload(payload.clone());
        let bytes = frame.encode(MAX).unwrap();
        let decoded = Frame::decode(bytes.slice(4..)).unwrap();
        assert_eq!(decoded.payload, payload);
    }

    #[test]
    fn refuses_line_breaks_in_values() {
        let frame = Frame::new("REPLY", 1)
            .header("status", "fault")
            .header("fault-string", "two\nlines");
        assert!(matches!(
            frame.encode(MAX),
            Err(ProtocolError::Unencodable(_))
        ));
        let frame = Frame::new("REPLY", 1).header("status", "ok\r");
        assert!(matches!(
            frame.encode(MAX),
            Err(ProtocolError::Unencodable(_))
        ));
        let frame = Frame::new("REPLY", 1).header("Bad Key", "x");
        assert!(frame.encode(MAX).is_err());
        let frame = Frame::new("reply", 1);
        assert!(frame.encode(MAX).is_err());
        let msg = Message::Commit {
            id: 1,
            transaction: "has space".into(),
        };
        assert!(msg.encode(MAX).is_err());
    }

    #[test]
    fn refuses_oversized_frames_both_ways() {
        let frame = Frame::new("REPLY", 1)
            .header("status", "ok")
            .with_payload(vec![b'x'; 100]);
        assert!(matches!(
            frame.encode(64),
            Err(ProtocolError::TooLarge { max: 64, .. })
        ));
        // Only the prefix has arrived: the decoder must refuse at once, not wait for the body.
        let mut buf = BytesMut::from(&(1_000_000u32).to_be_bytes()[..]);
        assert!(matches!(
            decode_frame(&mut buf, 1000),
            Err(ProtocolError::TooLarge {
                len: 1_000_000,
                max: 1000
            })
        ));
        let mut reader = &(u32::MAX).to_be_bytes()[..];
        assert!(matches!(
            read_frame_blocking(&mut reader, MAX),
            Err(ProtocolError::TooLarge { .. })
        ));
    }

    #[test]
    fn waits_for_partial_frames_and_splits_concatenated_ones() {
        let a = Message::Recover { id: 1 }.encode(MAX).unwrap();
        let b = Message::Ack {
            id: 2,
            transaction: None,
        }
        .encode(MAX)
        .unwrap();
        let mut all = a.to_vec();
        all.extend_from_slice(&b);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        // Feed one byte at a time: every prefix is "need more", never an error.
        for byte in all {
            buf.extend_from_slice(&[byte]);
            if let Some(frame) = decode_frame(&mut buf, MAX).unwrap() {
                out.push(Message::from_frame(frame).unwrap());
            }
        }
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].kind(), "ACK");
    }

    /// Protects the client's credentials on the wire: any text survives (base64 headers), the
    /// password never shows in Debug, and a principal without its credential is refused.
    #[test]
    fn credentials_round_trip_hidden_and_paired() {
        let request = Message::Request(Request {
            credential: Some(crate::Credential {
                user: "ann\nx: y".into(),
                password: "p:ä\n\0".into(),
            }),
            id: 3,
            service: "batchRequest".into(),
            operation: "batchRequest".into(),
            session: None,
            transaction: None,
            dialog: Dialog::None,
            timeout_ms: None,
            payload: body("<b/>"),
        });
        assert!(!format!("{request:?}").contains("p:ä"));
        let encoded = request.encode(1 << 20).expect("encoded");
        let frame = Frame::decode(encoded.slice(4..)).expect("a frame");
        assert_eq!(Message::from_frame(frame).expect("a message"), request);
        let half = Frame::decode(Bytes::from_static(
            b"REQUEST 4\nservice: S\noperation: S\nprincipal: YW5u\n\n",
        ))
        .expect("a frame");
        assert!(Message::from_frame(half).is_err());
    }

    /// Protects the in-process link: a message handed over in parts decodes to what its whole
    /// encoding decodes to, the payload is the sender's buffer (not a copy), an answer over the
    /// frame limit is replaced by an error reply, and parts that disagree with their length prefix
    /// or exceed the receiver's limit are refused.
    #[test]
    fn messages_handed_over_in_parts_decode_as_their_encoding_does() {
        let payload = Bytes::from(format!("<r>{}</r>", "x".repeat(1000)));
        let reply = Message::Reply(Reply {
            id: 9,
            status: ReplyStatus::DialogContinue,
            payload: payload.clone(),
            open_transaction: Some("AAAAAAAAAAA=".into()),
        });
        let (head, body) = reply.encode_parts(1 << 20);
        assert_eq!(body.as_ptr(), payload.as_ptr(), "not copied");
        let whole = reply.encode(1 << 20).expect("encoded");
        assert_eq!([&head[..], &body[..]].concat(), whole.to_vec());
        let frame = decode_parts(head.clone(), body.clone(), 1 << 20).expect("decoded");
        assert_eq!(frame.payload.as_ptr(), payload.as_ptr(), "not copied");
        assert_eq!(
            Message::from_frame(frame).expect("a reply"),
            Message::decode(whole.slice(4..)).expect("a reply")
        );
        // A whole encoded frame in the head, no payload part: the HELLO the pool sends.
        assert!(decode_parts(whole.clone(), Bytes::new(), 1 << 20).is_ok());
        // Over the receiver's limit; a prefix that does not match the parts.
        assert!(matches!(
            decode_parts(head.clone(), body.clone(), 200),
            Err(ProtocolError::TooLarge { .. })
        ));
        assert!(decode_parts(head.clone(), body.slice(1..), 1 << 20).is_err());
        assert!(decode_parts(whole, body, 1 << 20).is_err());
        // Over the sender's limit: an error reply instead.
        let (small, rest) = reply.encode_parts(200);
        assert!(rest.is_empty());
        let text = String::from_utf8_lossy(&small[4..]).into_owned();
        assert!(text.starts_with("REPLY 9\nstatus: error\n"), "{text}");
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        let cases: &[&[u8]] = &[
            b"",
            b"\n",
            b"REQUEST 1",
            b"REQUEST 1\nservice: Echo\n",
            b"REQUEST\n\n",
            b"REQUEST x\n\n",
            b"REQUEST -1\n\n",
            b"REQUEST 99999999999999999999999\n\n",
            b"request 1\n\n",
            b"REQUEST 1\nno colon here\n\n",
            b"REQUEST 1\n: empty key\n\n",
            b"REQUEST 1\nservice: a\nservice: b\n\n",
            b"REQUEST 1\n\xff\xfe: x\n\n",
            b"\xff\xff 1\n\n",
        ];
        for case in cases {
            assert!(
                matches!(
                    Frame::decode(Bytes::copy_from_slice(case)),
                    Err(ProtocolError::Malformed(_))
                ),
                "{:?} should be malformed",
                String::from_utf8_lossy(case)
            );
        }
        // Well-framed but semantically wrong messages.
        let typed: &[&str] = &[
            "REQUEST 1\noperation: Echo\n\n",
            "REQUEST 1\nservice: E\noperation: E\ndialog: sideways\n\n",
            "REQUEST 1\nservice: E\noperation: E\ntimeout-ms: soon\n\n",
            "REPLY 1\n\n",
            "REPLY 1\nstatus: maybe\n\n",
            "REPLY 1\nstatus: fault\n\n",
            "HELLO 0\nserver: x\n\n",
            "HELLO 0\nprotocol: one\n\n",
            "VOTE 1\ntransaction: t\nvote: perhaps\n\n",
            "COMMIT 1\n\n",
            "RECOVERED 1\ncount: 2\n\nt-1\n",
            "DIALOG-ABORT 1\n\n",
            "SHOUT 1\n\n",
        ];
        for case in typed {
            assert!(
                matches!(
                    Message::decode(body(case)),
                    Err(ProtocolError::Malformed(_))
                ),
                "{case:?} should be malformed"
            );
        }
        let mut zero = BytesMut::from(&[0u8, 0, 0, 0][..]);
        assert!(matches!(
            decode_frame(&mut zero, MAX),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn truncated_streams() {
        let bytes = Message::Recover { id: 1 }.encode(MAX).unwrap();
        // Clean end between frames.
        let mut empty: &[u8] = &[];
        assert!(read_frame_blocking(&mut empty, MAX).unwrap().is_none());
        // End inside the prefix, and inside the body.
        for cut in [2, bytes.len() - 1] {
            let mut part = &bytes[..cut];
            assert!(matches!(
                read_frame_blocking(&mut part, MAX),
                Err(ProtocolError::Truncated)
            ));
        }
    }

    #[tokio::test]
    async fn async_reader_handles_eof_and_truncation() {
        let bytes = Message::Recover { id: 1 }.encode(MAX).unwrap();
        let mut whole = bytes.to_vec();
        whole.extend_from_slice(&bytes[..5]);
        let mut reader = FrameReader::new(&whole[..], MAX);
        assert!(reader.read_frame().await.unwrap().is_some());
        assert!(matches!(
            reader.read_frame().await,
            Err(ProtocolError::Truncated)
        ));
        let mut reader = FrameReader::new(&bytes[..], MAX);
        assert!(reader.read_frame().await.unwrap().is_some());
        assert!(reader.read_frame().await.unwrap().is_none());
    }

    /// The async reader's cost per frame, a REQUEST of the continue benchmark's size:
    /// `cargo test --release -p adapters --lib reader_bench -- --ignored --nocapture`
    #[tokio::test]
    #[ignore]
    async fn reader_bench() {
        use std::time::Instant;
        const N: usize = 1_000_000;
        let one = Frame::new("REQUEST", 7)
            .header("service", "Echo")
            .header("timeout-ms", "30000")
            .with_payload(vec![b'x'; 400])
            .encode(MAX)
            .unwrap();
        let wire: Vec<u8> = one.iter().copied().cycle().take(one.len() * N).collect();
        let t = Instant::now();
        let mut reader = FrameReader::new(wire.as_slice(), MAX);
        let mut n = 0;
        while let Some(frame) = reader.read_frame().await.unwrap() {
            n += std::hint::black_box(frame.payload.len()).min(1);
        }
        let per = t.elapsed().as_nanos() as f64 / N as f64;
        assert_eq!(n, N);
        println!(
            "FrameReader, {} bytes a frame: {per:.1} ns/frame",
            one.len()
        );
    }
}
