//! The session record: what the store keeps for one session, and its on-disk encoding.
//!
//! A record is small (well under 1 KiB for a typical session) and starts with a format byte so that a
//! newer broker can still read what an older one wrote. The body after the format byte is
//! [postcard](https://docs.rs/postcard), a compact varint encoding of the serde structure below.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// The format byte of the first record layout (no transaction deadline). Still decoded.
pub const RECORD_FORMAT_V1: u8 = 1;

/// The format byte written before every encoded record today. Bump it (and keep a decoder for the
/// old one) whenever [`SessionRecord`] changes shape.
pub const RECORD_FORMAT_V2: u8 = 2;

/// Everything the broker knows about one session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The opaque, URL-safe session ID the client holds.
    pub id: String,
    /// The endpoint path the session was begun on (`/soap`, `/dsml`, ...).
    pub endpoint: String,
    /// The dialect that owns the session (`nonstop`, `dsml`, `sqlsession`).
    pub dialect: String,
    /// The authenticated principal the session is bound to; `None` for anonymous.
    pub principal: Option<String>,
    /// The client IP the session is bound to, where the dialect binds sessions to an address.
    pub client_ip: Option<IpAddr>,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Last access time, milliseconds since the Unix epoch. Written lazily (see [`crate::Durability`]).
    pub last_access_ms: u64,
    /// Idle timeout in milliseconds: the session expires at `last_access_ms + idle_timeout_ms`.
    pub idle_timeout_ms: u64,
    /// The open transaction, if any.
    pub transaction: Option<TransactionState>,
    /// The open subsession (dialog with a context-sensitive server class), if any.
    pub subsession: Option<SubsessionState>,
    /// Small opaque state owned by the dialect.
    pub dialect_state: Vec<u8>,
    /// Where the expiry index currently files this record (ms since the epoch). Maintained by the
    /// store backends, never by callers: the index is only rewritten when this deadline has passed or
    /// the real deadline moved earlier, so a continue request does not touch the index.
    pub expiry_indexed_ms: u64,
}

impl SessionRecord {
    /// When this session expires if nobody touches it again: its idle deadline, or its open
    /// transaction's deadline when that comes first (a transaction older than its timeout aborts and
    /// ends the session, NonStop's TMF autoabort), so the expiry index finds both.
    pub fn expires_at_ms(&self) -> u64 {
        let idle = self.last_access_ms.saturating_add(self.idle_timeout_ms);
        match &self.transaction {
            Some(t) if t.deadline_ms > 0 => idle.min(t.deadline_ms),
            _ => idle,
        }
    }

    /// Whether the session has expired at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        now_ms >= self.expires_at_ms()
    }

    /// Encode with the format byte in front.
    pub fn encode(&self) -> Vec<u8> {
        crate::codec::encode(RECORD_FORMAT_V2, self)
    }

    /// Decode a record written by [`SessionRecord::encode`] (any known format version).
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        match bytes.first() {
            Some(&RECORD_FORMAT_V1) => {
                crate::codec::decode::<v1::SessionRecord>(RECORD_FORMAT_V1, bytes).map(Into::into)
            }
            _ => crate::codec::decode(RECORD_FORMAT_V2, bytes),
        }
    }
}

/// The state of a session's open transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionState {
    /// Transaction ID, unique across brokers.
    pub id: String,
    /// Where the transaction is in its life.
    pub phase: TransactionPhase,
    /// Workers that did work under the transaction: the commit's participants.
    pub participants: Vec<Participant>,
    /// Start time, ms since the epoch.
    pub started_ms: u64,
    /// When the transaction times out (`started_ms + transaction_timeout`), ms since the epoch;
    /// 0 for none. Part of [`SessionRecord::expires_at_ms`].
    pub deadline_ms: u64,
}

/// Life cycle of a transaction as the session record sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransactionPhase {
    Active,
    Preparing,
    Committing,
    Aborting,
}

/// One participant of a transaction: a worker of a transactional server class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    pub server_class: String,
    pub worker: String,
}

/// The open dialog with a context-sensitive server class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubsessionState {
    pub server_class: String,
    pub worker: String,
    /// The broker process holding the dialog (its registry ID).
    pub broker: String,
    pub dialog_id: String,
}

/// Why a stored record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("empty record")]
    Empty,
    #[error("record written in unknown format {0} (by a newer broker?)")]
    UnknownFormat(u8),
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

/// The V1 layout, kept to read records written before transactions had a deadline.
mod v1 {
    use super::{Participant, SubsessionState, TransactionPhase};
    use serde::Deserialize;
    use std::net::IpAddr;

    #[derive(Deserialize)]
    pub(super) struct SessionRecord {
        id: String,
        endpoint: String,
        dialect: String,
        principal: Option<String>,
        client_ip: Option<IpAddr>,
        created_ms: u64,
        last_access_ms: u64,
        idle_timeout_ms: u64,
        transaction: Option<TransactionState>,
        subsession: Option<SubsessionState>,
        dialect_state: Vec<u8>,
        expiry_indexed_ms: u64,
    }

    #[derive(Deserialize)]
    struct TransactionState {
        id: String,
        phase: TransactionPhase,
        participants: Vec<Participant>,
        started_ms: u64,
    }

    impl From<SessionRecord> for super::SessionRecord {
        fn from(r: SessionRecord) -> Self {
            super::SessionRecord {
                id: r.id,
                endpoint: r.endpoint,
                dialect: r.dialect,
                principal: r.principal,
                client_ip: r.client_ip,
                created_ms: r.created_ms,
                last_access_ms: r.last_access_ms,
                idle_timeout_ms: r.idle_timeout_ms,
                transaction: r.transaction.map(|t| super::TransactionState {
                    id: t.id,
                    phase: t.phase,
                    participants: t.participants,
                    started_ms: t.started_ms,
                    deadline_ms: 0,
                }),
                subsession: r.subsession,
                dialect_state: r.dialect_state,
                expiry_indexed_ms: r.expiry_indexed_ms,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SessionRecord {
        SessionRecord {
            id: "0f6c2b0e4a3d4c59a1f0b7c2d3e4f5a6".into(),
            endpoint: "/soap".into(),
            dialect: "nonstop".into(),
            principal: Some("alice".into()),
            client_ip: Some("127.0.0.2".parse().unwrap()),
            created_ms: 1_700_000_000_000,
            last_access_ms: 1_700_000_100_000,
            idle_timeout_ms: 1_800_000,
            transaction: Some(TransactionState {
                id: "t-1".into(),
                phase: TransactionPhase::Active,
                participants: vec![Participant {
                    server_class: "ledger".into(),
                    worker: "ledger#1".into(),
                }],
                started_ms: 1_700_000_050_000,
                deadline_ms: 1_700_000_170_000,
            }),
            subsession: None,
            dialect_state: vec![1, 2, 3],
            expiry_indexed_ms: 1_700_001_800_000,
        }
    }

    #[test]
    fn round_trips_and_stays_compact() {
        let r = sample();
        let bytes = r.encode();
        assert_eq!(bytes[0], RECORD_FORMAT_V2);
        assert!(bytes.len() < 256, "typical record is {} bytes", bytes.len());
        assert_eq!(SessionRecord::decode(&bytes).unwrap(), r);
    }

    #[test]
    fn refuses_unknown_format_and_garbage() {
        assert_eq!(SessionRecord::decode(&[]), Err(RecordError::Empty));
        assert_eq!(
            SessionRecord::decode(&[99, 1, 2]),
            Err(RecordError::UnknownFormat(99))
        );
        assert!(matches!(
            SessionRecord::decode(&[RECORD_FORMAT_V2, 0xff]),
            Err(RecordError::Corrupt(_))
        ));
    }

    /// A record written by the V1 layout (before transaction deadlines) still reads, deadline 0.
    #[test]
    fn reads_v1_records() {
        #[derive(Serialize)]
        struct TxnV1 {
            id: String,
            phase: TransactionPhase,
            participants: Vec<Participant>,
            started_ms: u64,
        }
        let mut r = sample();
        let t = r.transaction.take().unwrap();
        let v1 = (
            &r.id,
            &r.endpoint,
            &r.dialect,
            &r.principal,
            &r.client_ip,
            r.created_ms,
            r.last_access_ms,
            r.idle_timeout_ms,
            Some(TxnV1 {
                id: t.id.clone(),
                phase: t.phase,
                participants: t.participants.clone(),
                started_ms: t.started_ms,
            }),
            &r.subsession,
            &r.dialect_state,
            r.expiry_indexed_ms,
        );
        let bytes = crate::codec::encode(RECORD_FORMAT_V1, &v1);
        let read = SessionRecord::decode(&bytes).unwrap();
        r.transaction = Some(TransactionState {
            deadline_ms: 0,
            ..t
        });
        assert_eq!(read, r);
    }

    #[test]
    fn expiry_is_last_access_plus_timeout() {
        let mut r = sample();
        r.transaction = None;
        assert_eq!(r.expires_at_ms(), 1_700_001_900_000);
        assert!(!r.is_expired(1_700_001_899_999));
        assert!(r.is_expired(1_700_001_900_000));
    }

    #[test]
    fn a_transaction_deadline_brings_expiry_forward() {
        let r = sample();
        assert_eq!(r.expires_at_ms(), 1_700_000_170_000);
    }
}
