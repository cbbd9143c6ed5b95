//! # A reply's body, without copying what the server class answered
//!
//! Most replies are small and rendered whole into one buffer ([`ReplyBody::Whole`]). A large
//! answer (a DSML search of thousands of entries, a big SQL result set) arrives from its server
//! class as one shared buffer; copying it into the envelope would hold it twice. Such a reply is
//! [`ReplyBody::Around`]: the envelope's start, the class's bytes as they came, the envelope's end.
//!
//! As an HTTP body it is sent in slices of [`SLICE`] bytes (cheap views of the same buffer): the
//! HTTP/1 writer copies each chunk into its write buffer before the socket takes it, so one chunk
//! the size of the payload would be that second copy after all.

use actix_web::body::{BodySize, MessageBody};
use bytes::Bytes;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The largest chunk handed to the HTTP writer at a time.
pub const SLICE: usize = 32 * 1024;

/// A SOAP response envelope with `payload` as its Body's content: rendered whole when the payload
/// is small (one buffer, as before), else around the payload as it came.
pub fn envelope(
    version: crate::soap::SoapVersion,
    prefix: &str,
    headers: &[&str],
    payload: Bytes,
) -> ReplyBody {
    if payload.len() <= SLICE {
        let mut out = Vec::new();
        crate::soap::write_response_with_prefix(version, prefix, headers, &payload, &mut out);
        return ReplyBody::Whole(out);
    }
    let (head, tail) = crate::soap::response_around(version, prefix, headers);
    ReplyBody::Around {
        head,
        payload,
        tail,
    }
}

/// The body of a rendered reply.
#[derive(Debug, Clone)]
pub enum ReplyBody {
    /// Rendered whole.
    Whole(Vec<u8>),
    /// `head`, then `payload` (not copied), then `tail`.
    Around {
        head: Vec<u8>,
        payload: Bytes,
        tail: Vec<u8>,
    },
}

impl ReplyBody {
    /// The body's length in bytes (the Content-Length).
    pub fn len(&self) -> usize {
        match self {
            ReplyBody::Whole(b) => b.len(),
            ReplyBody::Around {
                head,
                payload,
                tail,
            } => head.len() + payload.len() + tail.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole body in one buffer (a copy for `Around`): for tests and logs, not the reply path.
    pub fn to_vec(&self) -> Vec<u8> {
        match self {
            ReplyBody::Whole(b) => b.clone(),
            ReplyBody::Around {
                head,
                payload,
                tail,
            } => [&head[..], payload, tail].concat(),
        }
    }

    /// The whole body in one buffer, copied only if it is not one already.
    pub fn into_vec(self) -> Vec<u8> {
        match self {
            ReplyBody::Whole(b) => b,
            around => around.to_vec(),
        }
    }

    /// The HTTP body: a whole body as it is, the parts of another in order.
    pub fn into_http(self) -> HttpBody {
        match self {
            ReplyBody::Whole(b) => HttpBody {
                len: b.len() as u64,
                parts: [Bytes::from(b), Bytes::new(), Bytes::new()],
                next: 0,
            },
            ReplyBody::Around {
                head,
                payload,
                tail,
            } => HttpBody {
                len: (head.len() + payload.len() + tail.len()) as u64,
                parts: [Bytes::from(head), payload, Bytes::from(tail)],
                next: 0,
            },
        }
    }
}

impl From<Vec<u8>> for ReplyBody {
    fn from(b: Vec<u8>) -> ReplyBody {
        ReplyBody::Whole(b)
    }
}

/// A [`ReplyBody`] as actix sends it: its parts in order, each in slices of at most [`SLICE`].
pub struct HttpBody {
    len: u64,
    parts: [Bytes; 3],
    next: usize,
}

impl MessageBody for HttpBody {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        BodySize::Sized(self.len)
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = &mut *self;
        while this.next < this.parts.len() {
            let part = &mut this.parts[this.next];
            if part.is_empty() {
                this.next += 1;
                continue;
            }
            let n = part.len().min(SLICE);
            return Poll::Ready(Some(Ok(part.split_to(n))));
        }
        Poll::Ready(None)
    }

    /// A small whole body goes out as one buffer, as a `Vec<u8>` body would.
    fn try_into_bytes(self) -> Result<Bytes, Self> {
        let [first, second, third] = &self.parts;
        if self.next == 0 && second.is_empty() && third.is_empty() && first.len() <= SLICE {
            let [first, _, _] = self.parts;
            Ok(first)
        } else {
            Err(self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(body: ReplyBody) -> Vec<Bytes> {
        let mut b = body.into_http();
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut out = Vec::new();
        while let Poll::Ready(Some(Ok(c))) = Pin::new(&mut b).poll_next(&mut cx) {
            out.push(c);
        }
        out
    }

    #[test]
    fn a_payload_goes_out_in_slices_of_the_same_buffer_between_head_and_tail() {
        let payload = Bytes::from(vec![b'x'; 2 * SLICE + 5]);
        let body = ReplyBody::Around {
            head: b"<E><B>".to_vec(),
            payload: payload.clone(),
            tail: b"</B></E>".to_vec(),
        };
        assert_eq!(body.len(), 6 + 2 * SLICE + 5 + 8);
        assert!(matches!(
            body.clone().into_http().size(),
            BodySize::Sized(n) if n == body.len() as u64
        ));
        let got = chunks(body.clone());
        let lens: Vec<usize> = got.iter().map(Bytes::len).collect();
        assert_eq!(lens, vec![6, SLICE, SLICE, 5, 8]);
        // The slices are views of the payload's buffer, not copies.
        assert_eq!(got[1].as_ptr(), payload.as_ptr());
        assert_eq!(got.concat(), body.to_vec());
    }

    #[test]
    fn an_envelope_is_the_same_bytes_whole_or_around() {
        use crate::soap::SoapVersion;
        for n in [10, SLICE + 1] {
            let payload = Bytes::from(vec![b'y'; n]);
            let body = envelope(SoapVersion::V11, "SOAP", &["<h/>"], payload.clone());
            assert_eq!(matches!(body, ReplyBody::Around { .. }), n > SLICE);
            let mut whole = Vec::new();
            crate::soap::write_response_with_prefix(
                SoapVersion::V11,
                "SOAP",
                &["<h/>"],
                &payload,
                &mut whole,
            );
            assert_eq!(body.to_vec(), whole);
        }
    }

    #[test]
    fn a_small_whole_body_is_one_buffer() {
        let body = ReplyBody::from(b"ok".to_vec());
        assert_eq!(
            body.clone().into_http().try_into_bytes().ok(),
            Some(Bytes::from_static(b"ok"))
        );
        assert_eq!(chunks(body), vec![Bytes::from_static(b"ok")]);
        assert!(chunks(ReplyBody::from(Vec::new())).is_empty());
    }
}
