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

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// The writer batches frames queued meanwhile into one write of up to this many bytes.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

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

/// Read the next frame into `buf` (version byte onwards). `Ok(false)` on a clean end of stream
/// (the peer closed the connection between frames).
pub(crate) async fn read<R: AsyncRead + Unpin>(
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

/// Decode a frame read by [`read`] into its request ID and message.
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

    #[tokio::test]
    async fn frames_round_trip_and_a_clean_close_is_not_an_error() {
        let mut wire = encode(7, &("hello".to_string(), 300u64));
        wire.extend(encode(u64::MAX, &()));
        let mut reader = wire.as_slice();
        let mut buf = Vec::new();
        assert!(read(&mut reader, 1024, &mut buf).await.unwrap());
        assert_eq!(
            decode::<(String, u64)>(&buf).unwrap(),
            (7, ("hello".into(), 300))
        );
        assert!(read(&mut reader, 1024, &mut buf).await.unwrap());
        assert_eq!(decode::<()>(&buf).unwrap(), (u64::MAX, ()));
        assert!(!read(&mut reader, 1024, &mut buf).await.unwrap());
    }

    #[tokio::test]
    async fn malformed_frames_are_refused_with_their_reason() {
        let mut buf = Vec::new();
        let too_large = [0, 0, 4, 1, 1];
        assert!(matches!(
            read(&mut too_large.as_slice(), 1024, &mut buf).await,
            Err(FrameError::TooLarge {
                len: 1025,
                max: 1024
            })
        ));
        assert!(matches!(
            read(&mut [0u8, 0, 0, 0].as_slice(), 1024, &mut buf).await,
            Err(FrameError::Empty)
        ));
        assert!(matches!(
            read(&mut [0u8, 0, 0, 9, 1, 2].as_slice(), 1024, &mut buf).await,
            Err(FrameError::Truncated)
        ));
        assert!(matches!(
            read(&mut [0u8, 0].as_slice(), 1024, &mut buf).await,
            Err(FrameError::Truncated)
        ));
        assert!(matches!(
            decode::<u8>(&[2, 0, 0]),
            Err(FrameError::Version(2))
        ));
        assert!(matches!(
            decode::<String>(&[PROTOCOL_V1, 1, 5, b'a']),
            Err(FrameError::Decode(_))
        ));
    }
}
