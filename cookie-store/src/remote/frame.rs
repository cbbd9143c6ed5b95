//! Frames: how messages are cut out of a TCP byte stream.
//!
//! ```text
//! +----------------+---------+------------------+------------------------+
//! | length: u32 BE | version | request ID       | message                |
//! | (bytes after   | u8 = 1  | postcard varint  | postcard (protocol.rs) |
//! |  this field)   |         |                  |                        |
//! +----------------+---------+------------------+------------------------+
//! ```
//!
//! The length prefix lets a reader take a whole frame before decoding it, and refuse one larger
//! than its limit before reading it. After the length comes the crate's usual encoding
//! ([`crate::codec`]): a format byte, here the protocol version, then postcard, here of the pair
//! (request ID, message). The request ID is what lets one connection carry many requests at once:
//! a response carries the ID of its request and responses come back in any order, so a
//! `take_turn` queued in the daemon holds up nothing else. ID 0 is reserved for messages about
//! the connection itself (the daemon's reason for closing it). `PROTOCOL.md` has it byte by byte.

use bytes::BytesMut;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::{Decoder, FramedRead, LengthDelimitedCodec};

/// The writer batches frames queued meanwhile into one write of up to this many bytes.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// The reader's buffer starts this large: one read takes many small frames at once.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// The version byte of every frame this build writes, and the only one it reads.
pub(crate) const PROTOCOL_V1: u8 = 1;

/// The request ID of messages about the connection rather than a request.
pub(crate) const CONNECTION_ID: u64 = 0;

/// Why a frame could not be read. Anything but [`FrameError::Closed`] ends the connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// The length prefix announces more than this end accepts.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// A length prefix of zero: not even a version byte.
    #[error("empty frame")]
    Empty,
    /// A version byte this build does not speak.
    #[error("protocol version {0} (this build speaks version {PROTOCOL_V1})")]
    Version(u8),
    /// The bytes after the version byte are not a request ID and a message.
    #[error("undecodable message: {0}")]
    Decode(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Encode one frame: length, version, `id`, `message`.
pub(crate) fn encode<T: Serialize>(id: u64, message: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&[0; 4]);
    out.push(PROTOCOL_V1);
    // postcard into a Vec fails only for types serde cannot express in it, which ours avoid; an
    // empty message makes the peer report an undecodable frame rather than this end panic.
    let mut out = postcard::to_extend(&(id, message), out).unwrap_or_else(|_| {
        let mut header = vec![0; 4];
        header.push(PROTOCOL_V1);
        header
    });
    let len = u32::try_from(out.len() - 4).unwrap_or(u32::MAX);
    out[..4].copy_from_slice(&len.to_be_bytes());
    out
}

/// A connection's incoming frames, read through [`FrameCodec`]: `reader.next().await` gives the
/// next frame (version byte onwards), `None` on a clean end of stream (the peer closed the
/// connection between frames).
///
/// Cancel-safe: a partly read frame stays in the reader's buffer, so dropping a `next()` future
/// (a `select!` branch that lost) loses nothing; the next call goes on where it stopped.
pub(crate) type FrameReader<R> = FramedRead<R, FrameCodec>;

/// A [`FrameReader`] of `reader` that refuses frames longer than `max` bytes.
pub(crate) fn reader<R: AsyncRead>(reader: R, max: usize) -> FrameReader<R> {
    FramedRead::with_capacity(reader, FrameCodec::new(max), READ_BUFFER_BYTES)
}

/// tokio-util's length-delimited codec (u32 big-endian length, then that many bytes), with this
/// protocol's errors: an announced length of zero or above the limit is refused as soon as the
/// length is read, and an end of stream inside a frame is [`FrameError::Truncated`].
pub(crate) struct FrameCodec {
    inner: LengthDelimitedCodec,
    max: usize,
    /// Bytes of the current frame (its length, perhaps some of its body) were taken: the buffer
    /// does not start with a length any more, and an end of stream now truncates the frame.
    in_frame: bool,
}

impl FrameCodec {
    fn new(max: usize) -> FrameCodec {
        FrameCodec {
            inner: LengthDelimitedCodec::builder()
                .big_endian()
                .length_field_type::<u32>()
                .max_frame_length(max)
                .new_codec(),
            max,
            in_frame: false,
        }
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        if !self.in_frame {
            if let Some(prefix) = src.get(..4) {
                let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
                if len == 0 {
                    return Err(FrameError::Empty);
                }
                if len > self.max {
                    return Err(FrameError::TooLarge { len, max: self.max });
                }
            }
        }
        let had_bytes = !src.is_empty();
        let frame = self.inner.decode(src)?;
        self.in_frame = frame.is_none() && (self.in_frame || had_bytes);
        Ok(frame)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if self.in_frame => Err(FrameError::Truncated),
            None => Ok(None),
        }
    }
}

/// The next frame of `reader`, `Ok(None)` on a clean end of stream. Cancel-safe (see
/// [`FrameReader`]).
pub(crate) async fn read<R: AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
) -> Result<Option<BytesMut>, FrameError> {
    reader.next().await.transpose()
}

/// Write every frame sent on `frames` to `writer`, in order, until all senders are gone or the
/// peer stops reading. Frames queued while a write is in progress go out together in the next one,
/// so many requests (or responses) in flight cost few system calls.
pub(crate) async fn write_all<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut frames: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH_BYTES);
    while let Some(first) = frames.recv().await {
        batch.extend_from_slice(&first);
        while batch.len() < WRITE_BATCH_BYTES {
            match frames.try_recv() {
                Ok(frame) => batch.extend_from_slice(&frame),
                Err(_) => break,
            }
        }
        if let Err(error) = writer.write_all(&batch).await {
            tracing::debug!(%error, "peer stopped reading; dropping what is left to write");
            return;
        }
        batch.clear();
    }
    let _ = writer.shutdown().await;
}

/// Decode a frame read by a [`FrameReader`] into its request ID and message.
pub(crate) fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<(u64, T), FrameError> {
    match frame.split_first() {
        None => Err(FrameError::Empty),
        Some((&PROTOCOL_V1, body)) => {
            postcard::from_bytes(body).map_err(|e| FrameError::Decode(e.to_string()))
        }
        Some((&other, _)) => Err(FrameError::Version(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    async fn read_all(wire: &[u8], max: usize) -> Vec<Result<Option<BytesMut>, FrameError>> {
        let mut reader = reader(wire, max);
        let mut out = Vec::new();
        loop {
            let next = read(&mut reader).await;
            let last = !matches!(next, Ok(Some(_)));
            out.push(next);
            if last {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn frames_round_trip_and_a_clean_close_is_not_an_error() {
        let mut wire = encode(7, &("hello".to_string(), 300u64));
        wire.extend(encode(u64::MAX, &()));
        let mut reader = reader(wire.as_slice(), 1024);
        let frame = read(&mut reader).await.unwrap().unwrap();
        assert_eq!(
            decode::<(String, u64)>(&frame).unwrap(),
            (7, ("hello".into(), 300))
        );
        let frame = read(&mut reader).await.unwrap().unwrap();
        assert_eq!(decode::<()>(&frame).unwrap(), (u64::MAX, ()));
        assert!(read(&mut reader).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn malformed_frames_are_refused_with_their_reason() {
        let first = |mut results: Vec<Result<Option<BytesMut>, FrameError>>| results.remove(0);
        assert!(matches!(
            first(read_all(&[0, 0, 4, 1, 1], 1024).await),
            Err(FrameError::TooLarge {
                len: 1025,
                max: 1024
            })
        ));
        assert!(matches!(
            first(read_all(&[0, 0, 0, 0], 1024).await),
            Err(FrameError::Empty)
        ));
        for truncated in [&[0u8, 0, 0, 9, 1, 2][..], &[0, 0], &[0, 0, 0, 9]] {
            assert!(
                matches!(
                    first(read_all(truncated, 1024).await),
                    Err(FrameError::Truncated)
                ),
                "{truncated:?}"
            );
        }
        assert!(matches!(
            decode::<u8>(&[2, 0, 0]),
            Err(FrameError::Version(2))
        ));
        assert!(matches!(
            decode::<String>(&[PROTOCOL_V1, 1, 5, b'a']),
            Err(FrameError::Decode(_))
        ));
    }

    #[tokio::test]
    async fn a_read_cancelled_in_the_middle_of_a_frame_loses_nothing() {
        let (mut peer, ours) = tokio::io::duplex(1024);
        let mut reader = reader(ours, 1024);
        let wire = [
            encode(1, &"first".to_string()),
            encode(2, &"second".to_string()),
        ]
        .concat();
        // Half the first frame's length, then half its body: each read times out (is dropped).
        for part in [&wire[..2], &wire[2..7]] {
            peer.write_all(part).await.unwrap();
            let cancelled = tokio::time::timeout(Duration::from_millis(20), read(&mut reader));
            assert!(cancelled.await.is_err(), "a partial frame must not be read");
        }
        peer.write_all(&wire[7..]).await.unwrap();
        drop(peer);
        let frame = read(&mut reader).await.unwrap().unwrap();
        assert_eq!(decode::<String>(&frame).unwrap(), (1, "first".into()));
        let frame = read(&mut reader).await.unwrap().unwrap();
        assert_eq!(decode::<String>(&frame).unwrap(), (2, "second".into()));
        assert!(read(&mut reader).await.unwrap().is_none());
    }

    /// The hand-written reader the codec replaced (not cancel-safe), kept for the benchmark.
    mod handwritten {
        use super::super::FrameError;
        use tokio::io::{AsyncRead, AsyncReadExt};

        /// Read the next frame into `buf` (version byte onwards). `Ok(false)` on a clean end of stream
        /// (the peer closed the connection between frames).
        pub(super) async fn read<R: AsyncRead + Unpin>(
            reader: &mut R,
            max: usize,
            buf: &mut Vec<u8>,
        ) -> Result<bool, FrameError> {
            let mut prefix = [0u8; 4];
            // The first byte tells a clean close apart from a truncated frame.
            match reader.read(&mut prefix[..1]).await? {
                0 => return Ok(false),
                _ => read_exact(reader, &mut prefix[1..]).await?,
            }
            let len = u32::from_be_bytes(prefix) as usize;
            if len == 0 {
                return Err(FrameError::Empty);
            }
            if len > max {
                return Err(FrameError::TooLarge { len, max });
            }
            buf.clear();
            buf.resize(len, 0);
            read_exact(reader, buf).await?;
            Ok(true)
        }

        async fn read_exact<R: AsyncRead + Unpin>(
            reader: &mut R,
            buf: &mut [u8],
        ) -> Result<(), FrameError> {
            reader.read_exact(buf).await.map(drop).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    FrameError::Truncated
                } else {
                    FrameError::Io(e)
                }
            })
        }
    }

    /// `cargo test --release -p cookie-store --lib frame_bench -- --ignored --nocapture`
    #[tokio::test]
    #[ignore]
    async fn frame_bench() {
        use std::time::Instant;
        const N: usize = 1_000_000;
        // A take_turn response's size: a record of a few hundred bytes.
        let one = encode(7, &vec![0x5au8; 300]);
        let wire: Vec<u8> = one.iter().copied().cycle().take(one.len() * N).collect();

        let t = Instant::now();
        let mut r = tokio::io::BufReader::with_capacity(READ_BUFFER_BYTES, wire.as_slice());
        let mut buf = Vec::new();
        let mut n = 0;
        while handwritten::read(&mut r, 1024, &mut buf).await.unwrap() {
            n += std::hint::black_box(buf.len()).min(1);
        }
        let before = t.elapsed().as_nanos() as f64 / N as f64;
        assert_eq!(n, N);

        let t = Instant::now();
        let mut r = reader(wire.as_slice(), 1024);
        let mut n = 0;
        while let Some(frame) = read(&mut r).await.unwrap() {
            n += std::hint::black_box(frame.len()).min(1);
        }
        let after = t.elapsed().as_nanos() as f64 / N as f64;
        assert_eq!(n, N);
        println!(
            "frame read, {} bytes: hand-written {before:.1} ns/op, LengthDelimitedCodec {after:.1} ns/op",
            one.len()
        );
    }
}
