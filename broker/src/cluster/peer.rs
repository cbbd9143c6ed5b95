//! # Other brokers, as the engine sees them
//!
//! When another live broker holds a session's work (its dialog's worker, its transaction's
//! participants), the engine hands the request to that broker through a [`Peer`] and answers with
//! what the holder answered. The engine owns the whole policy (when to forward, what to do when
//! the holder cannot be reached, when to take its work over: see "Several brokers" in the
//! engine's module docs); a peer only carries a request there and an answer back, and says which
//! way a failed call failed:
//!
//! - [`PeerError::NotDelivered`]: the request never reached the holder, so it may run elsewhere
//!   (the engine reads the registry again and takes the work over if the holder is gone);
//! - [`PeerError::Refused`]: the holder refused the call (the brokers' secrets differ): a
//!   configuration error;
//! - [`PeerError::Lost`]: the call failed after the request may have reached the holder: it may
//!   have run, so only the client may decide to retry.
//!
//! What travels is the engine's own [`Request`], already parsed by the dialect (with the client's
//! principal and address), and the holder's [`Response`], already classified: the holder neither
//! parses the envelope nor runs the dialect, and the forwarding broker renders the answer in the
//! client's dialect as if the work had been done there. The HTTP implementation is
//! [`Forwarder`](super::Forwarder); tests use fakes.
//!
//! ## Wire format
//! `POST /_cluster/forward` carries [`FORWARD_VERSION`] (one byte) and then a postcard-encoded
//! [`Forwarded`]; the answer (HTTP 200) carries the same version byte and a postcard-encoded
//! [`Response`]. A broker that cannot read the version answers 400, which the sender reports as a
//! refusal: brokers of different releases must not guess at each other's requests.

use crate::engine::{PeerExpiry, Request, Response};
use async_trait::async_trait;
use cookie_store::BrokerInfo;
use serde::{Deserialize, Serialize};

/// The version byte of forwarded requests and their answers.
pub const FORWARD_VERSION: u8 = 1;

/// The other brokers of the cluster.
#[async_trait]
pub trait Peer: Send + Sync + 'static {
    /// Run `request` of endpoint `endpoint` at `holder`, which holds its session's work, and
    /// return its answer.
    async fn forward(
        &self,
        holder: &BrokerInfo,
        endpoint: &str,
        request: &Request,
    ) -> Result<Response, PeerError>;

    /// Ask `holder` to expire session `id` if it is due (another broker's sweeper found it so).
    async fn expire(&self, holder: &BrokerInfo, id: &str) -> Result<PeerExpiry, PeerError>;

    /// Ask `holder` to end session `id` now, due or not (an operator asked this broker's admin
    /// API); [`PeerExpiry::Expired`] means it was ended. Default: refused (a peer that cannot).
    async fn end(&self, holder: &BrokerInfo, id: &str) -> Result<PeerExpiry, PeerError> {
        let _ = (holder, id);
        Err(PeerError::Refused(
            "ending sessions is not supported by this peer".into(),
        ))
    }
}

/// How a call to another broker failed (see the module docs for what each allows).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("not delivered: {0}")]
    NotDelivered(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("no answer: {0}")]
    Lost(String),
}

/// A forwarded request: the endpoint it was sent to, and the request.
#[derive(Debug, Serialize, Deserialize)]
pub struct Forwarded {
    pub endpoint: String,
    pub request: Request,
}

/// Encode a forwarded request (or an answer) with its version byte.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    postcard::to_extend(value, vec![FORWARD_VERSION]).map_err(|e| format!("encoding: {e}"))
}

/// Decode what [`encode`] wrote; the error says what is wrong (a version this broker cannot read,
/// or bytes that are not a request of this version).
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        Some((&FORWARD_VERSION, rest)) => postcard::from_bytes(rest)
            .map_err(|e| format!("undecodable (version {FORWARD_VERSION}): {e}")),
        Some((v, _)) => Err(format!(
            "version {v} is not understood here (this broker speaks version {FORWARD_VERSION})"
        )),
        None => Err("empty".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Reply, ServiceCall, SessionDirective, SessionInfo};
    use bytes::Bytes;

    #[test]
    fn requests_and_answers_cross_whole_and_versions_are_checked() {
        let mut request = Request::new("nonstop");
        request.session = SessionDirective::Continue("0123456789abcdef".into());
        request.transaction.begin_new = true;
        request.principal = Some("alice".into());
        request.client_ip = Some("127.0.0.9".parse().expect("ip"));
        request.forwarded = true;
        request.call = Some(ServiceCall {
            credential: None,
            service: "Deposit".into(),
            payload: Bytes::from_static(b"<Deposit><amount>5</amount></Deposit>"),
        });
        let bytes = encode(&Forwarded {
            endpoint: "/soap".into(),
            request,
        })
        .expect("encode");
        assert_eq!(bytes[0], FORWARD_VERSION);
        let back: Forwarded = decode(&bytes).expect("decode");
        assert_eq!(back.endpoint, "/soap");
        assert_eq!(back.request.dialect, "nonstop");
        assert_eq!(back.request.principal.as_deref(), Some("alice"));
        assert!(back.request.transaction.begin_new);
        assert!(
            !back.request.forwarded,
            "the receiver decides that, not the sender"
        );
        assert_eq!(
            back.request.call.map(|c| c.payload),
            Some(Bytes::from_static(b"<Deposit><amount>5</amount></Deposit>"))
        );

        let answer = Response {
            session: Some(SessionInfo::new("0123456789abcdef".into())),
            result: Ok(Reply::Body(Bytes::from_static(b"<ok/>"))),
        };
        let back: Response = decode(&encode(&answer).expect("encode")).expect("decode");
        assert_eq!(back.session, answer.session);
        assert_eq!(
            back.result.ok(),
            Some(Reply::Body(Bytes::from_static(b"<ok/>")))
        );

        let mut other = bytes.clone();
        other[0] = 9;
        let e = decode::<Forwarded>(&other).expect_err("another version");
        assert!(e.contains("version 9 is not understood"), "{e}");
        assert!(decode::<Forwarded>(&[]).is_err());
        assert!(decode::<Forwarded>(&[FORWARD_VERSION, 0xff, 0xff]).is_err());
    }
}
