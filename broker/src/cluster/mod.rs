//! # Several brokers, one store
//!
//! Any number of broker processes, on one host or many, may share a store (the `cookie-store`
//! daemon, PostgreSQL) and serve any request of any session. Most of a session lives in its record,
//! so any broker can continue it. Two things do not fit in a record: a dialog's worker (its state is
//! in one process's memory) and a transaction's uncommitted work (in its participants' memory). They
//! live with the broker process that started them, and this module is about that one fact:
//!
//! - **Who is who** ([`Instance`]): a broker process is `<broker id>/<boot nonce>`, new at every
//!   start. Every worker tag in a record (`<worker>@<instance>`, the dialog's worker and the
//!   transaction's participants) and every transaction ID (`<nonce>-<uuid>`) names the instance that
//!   holds it, so a restarted broker is never taken for the run that held the work.
//! - **Who lives** ([`registry`]): each broker renews a lease in the store's registry every
//!   `heartbeat` and keeps a snapshot of the others, so that a request never pays a store round trip
//!   to learn it. A broker whose own lease lapsed writes no commit decision (self-fencing).
//! - **Forwarding** ([`peer`], [`forward`]): a request for a session whose work another *live*
//!   broker holds is sent to it through a [`Peer`], already parsed (`POST
//!   <advertise>/_cluster/forward`, authenticated with the cluster secret), and the holder's answer
//!   is rendered here in the client's dialect. The engine decides and forwards; the HTTP layer
//!   only serves the internal paths.
//! - **Take-over**: work whose broker is gone (its lease ran out, or it restarted as a new instance)
//!   is taken over by whichever broker next holds the session's turn: the dialog is lost (-356 when
//!   next used, the session lives on); the transaction is committed when the decision log says so,
//!   otherwise aborted (presumed abort) and left in the record as a *tombstone* until a request that
//!   names the transaction hears -1021 (the engine's module docs give the exact rule).
//!
//! What lives where: [`Instance`], tag parsing and [`Secret`] here; the registry and its heartbeat
//! in [`registry`]; the HTTP client to other brokers and the internal path names in [`forward`]; the
//! pure question "which instances does this record name" in [`ownership`]; the engine's view of
//! other brokers in [`peer`].

pub mod forward;
pub mod ownership;
pub mod peer;
pub mod registry;

pub use forward::Forwarder;
pub use peer::{Peer, PeerError};
pub use registry::{Fence, FenceError, Registry};

use std::sync::Arc;

/// One run of a broker process: `<broker id>/<nonce>`, the nonce new at every start (12 hex digits
/// from a v4 UUID: 48 random bits, plenty to tell the runs of one broker ID apart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    broker_id: String,
    nonce: String,
    full: String,
}

/// Length of an instance nonce, in hex digits.
pub const NONCE_LEN: usize = 12;

impl Instance {
    /// A new instance of broker `broker_id` (which must contain neither `/` nor `@`: the
    /// configuration refuses such IDs).
    pub fn new(broker_id: &str) -> Instance {
        let uuid = uuid::Uuid::new_v4().simple().to_string();
        Instance::with_nonce(broker_id, &uuid[..NONCE_LEN])
    }

    /// An instance with a given nonce (tests, and reading one back).
    pub fn with_nonce(broker_id: &str, nonce: &str) -> Instance {
        Instance {
            broker_id: broker_id.to_string(),
            nonce: nonce.to_string(),
            full: format!("{broker_id}/{nonce}"),
        }
    }

    pub fn broker_id(&self) -> &str {
        &self.broker_id
    }

    pub fn nonce(&self) -> &str {
        &self.nonce
    }

    /// `<broker id>/<nonce>`, as tags, decisions and the registry write it.
    pub fn as_str(&self) -> &str {
        &self.full
    }
}

impl std::fmt::Display for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.full)
    }
}

/// The instance a worker tag (`<worker>@<instance>`) names.
pub fn instance_of_tag(tag: &str) -> Option<&str> {
    tag.rsplit_once('@').map(|(_, instance)| instance)
}

/// The broker ID part of an instance (`b2` of `b2/0123456789ab`).
pub fn broker_of_instance(instance: &str) -> &str {
    instance
        .rsplit_once('/')
        .map(|(id, _)| id)
        .unwrap_or(instance)
}

/// The nonce part of an instance.
pub fn nonce_of_instance(instance: &str) -> &str {
    instance
        .rsplit_once('/')
        .map(|(_, nonce)| nonce)
        .unwrap_or(instance)
}

/// The coordinator nonce a transaction ID (`<nonce>-<uuid>`) carries; `None` for an ID of another
/// shape (written by a broker before transaction IDs carried it).
pub fn nonce_of_txn(txn_id: &str) -> Option<&str> {
    let (nonce, _) = txn_id.split_once('-')?;
    (nonce.len() == NONCE_LEN && nonce.bytes().all(|b| b.is_ascii_hexdigit())).then_some(nonce)
}

/// The cluster secret: what brokers show each other on internal calls. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

/// The shortest secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

impl Secret {
    /// A secret of at least [`MIN_SECRET_BYTES`] printable ASCII characters (it travels in an HTTP
    /// header). Leading and trailing whitespace is not part of it (a file's final newline).
    pub fn new(text: &str) -> Result<Secret, String> {
        let text = text.trim();
        if text.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "is {} bytes long; at least {MIN_SECRET_BYTES} are required",
                text.len()
            ));
        }
        if let Some(bad) = text.bytes().find(|b| !(0x20..0x7f).contains(b)) {
            return Err(format!(
                "holds a byte (0x{bad:02x}) that is not printable ASCII; it travels in an HTTP header"
            ));
        }
        Ok(Secret(text.into()))
    }

    /// Whether `given` is the secret, in time that does not depend on where they differ (only on
    /// the length of `given`), so that a caller cannot find it byte by byte.
    pub fn matches(&self, given: &[u8]) -> bool {
        let ours = self.0.as_bytes();
        // Fold every byte of the longer one in, so the work does not stop early either.
        let mut diff = (ours.len() != given.len()) as u8;
        for i in 0..ours.len().max(given.len()) {
            let a = ours.get(i).copied().unwrap_or(0);
            let b = given.get(i).copied().unwrap_or(0xff);
            diff |= a ^ b;
        }
        std::hint::black_box(diff) == 0
    }

    /// The header value brokers send.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_tags_and_transaction_ids_name_each_other() {
        let me = Instance::with_nonce("b1", "0123456789ab");
        assert_eq!(me.as_str(), "b1/0123456789ab");
        let tag = format!("ledger#3@{me}");
        assert_eq!(instance_of_tag(&tag), Some(me.as_str()));
        assert_eq!(broker_of_instance(me.as_str()), "b1");
        assert_eq!(nonce_of_instance(me.as_str()), "0123456789ab");
        assert_eq!(instance_of_tag("no-tag"), None);
        assert_eq!(
            nonce_of_txn("0123456789ab-5f0c0a7e2c3b4d6e8f9a0b1c2d3e4f5a"),
            Some("0123456789ab")
        );
        // An ID from before transaction IDs carried their coordinator.
        assert_eq!(nonce_of_txn("5f0c0a7e2c3b4d6e8f9a0b1c2d3e4f5a"), None);
        assert_eq!(nonce_of_txn("short-x"), None);
        let fresh = Instance::new("b1");
        assert_eq!(fresh.nonce().len(), NONCE_LEN);
        assert_ne!(fresh.nonce(), Instance::new("b1").nonce());
    }

    #[test]
    fn secrets_are_long_printable_and_compared_whole() {
        assert!(Secret::new("short").is_err());
        assert!(Secret::new("sixteen-bytes-ok").is_ok());
        assert!(Secret::new("sixteen bytes\u{1}xx").is_err());
        let s = Secret::new("  correct horse battery staple\n").expect("a secret");
        assert!(s.matches(b"correct horse battery staple"));
        assert!(!s.matches(b"correct horse battery stapl"));
        assert!(!s.matches(b"correct horse battery staplee"));
        assert!(!s.matches(b"Correct horse battery staple"));
        assert!(!s.matches(b""));
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
    }
}
