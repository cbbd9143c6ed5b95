//! The messages: one request and one response shape per [`Store`](crate::Store) method.
//!
//! Values cross the wire as they are stored on disk: a session record as
//! [`SessionRecord::encode`] makes it, broker registrations and commit decisions through
//! [`crate::codec`], each behind its own format byte. So a record from a newer broker reaches an
//! older daemon as "unknown format 3", an error for that one request, rather than as garbage, and
//! the protocol version only changes when the messages themselves do.
//!
//! Durations travel as whole milliseconds, errors as [`WireError`], which mirrors
//! [`StoreError`] variant for variant so a caller cannot tell a remote store from a local one.

use crate::codec::{self, BROKER_FORMAT_V2, DECISION_FORMAT_V2};
use crate::{BrokerInfo, Durability, RecordError, SessionRecord, StoreError, TxnDecision};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::time::Duration;

/// Client to daemon. Variant order is part of the protocol (postcard writes the index).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Request {
    /// [`crate::SessionStore::create`].
    Create {
        record: Vec<u8>,
        durability: WireDurability,
    },
    /// [`crate::SessionStore::take_turn`].
    TakeTurn {
        session_id: String,
        lease_ms: u64,
        wait_ms: u64,
    },
    /// [`crate::SessionStore::write`].
    Write {
        turn: WireTurn,
        record: Vec<u8>,
        durability: WireDurability,
    },
    /// [`crate::SessionStore::write_and_release`].
    WriteAndRelease {
        turn: WireTurn,
        record: Vec<u8>,
        durability: WireDurability,
    },
    /// [`crate::SessionStore::release`].
    Release { turn: WireTurn },
    /// [`crate::SessionStore::delete`].
    Delete {
        turn: WireTurn,
        durability: WireDurability,
    },
    /// [`crate::SessionStore::due_for_expiry`].
    DueForExpiry { now_ms: u64, limit: u64 },
    /// [`crate::SessionStore::count_sessions`].
    CountSessions {
        endpoint: String,
        client_ip: Option<IpAddr>,
        now_ms: u64,
        limit: u64,
    },
    /// [`crate::BrokerRegistry::register_broker`].
    RegisterBroker { broker: Vec<u8> },
    /// [`crate::BrokerRegistry::live_brokers`].
    LiveBrokers { now_ms: u64 },
    /// [`crate::DecisionLog::log_decision`].
    LogDecision { decision: Vec<u8> },
    /// [`crate::DecisionLog::forget_decision`].
    ForgetDecision { txn_id: String },
    /// [`crate::DecisionLog::pending_decisions`].
    PendingDecisions,
    /// [`crate::StoreHealth::ping`].
    Ping,
    /// [`crate::StoreHealth::flush`].
    Flush,
    /// Abandon the `TakeTurn` with this request ID (its caller gave up). No response.
    Cancel { request: u64 },
    /// [`crate::SessionStore::list_sessions`] (added last: variant order is the protocol).
    ListSessions { after: Option<String>, limit: u64 },
}

/// Daemon to client. Variant order is part of the protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Response {
    /// Success of a method that returns nothing.
    Done,
    /// `TakeTurn`: the epoch and the encoded record, or nothing when no record exists.
    Turn(Option<GrantedTurn>),
    /// `DueForExpiry`: session IDs.
    Ids(Vec<String>),
    /// `CountSessions`.
    Count(u64),
    /// `LiveBrokers`: encoded registrations.
    Brokers(Vec<Vec<u8>>),
    /// `PendingDecisions`: encoded decisions.
    Decisions(Vec<Vec<u8>>),
    /// The method failed.
    Error(WireError),
    /// `ListSessions`: encoded records (added last: variant order is the protocol).
    Records(Vec<Vec<u8>>),
}

impl Response {
    /// The variant's name, for messages: a response's fields may hold whole session IDs.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Response::Done => "Done",
            Response::Turn(_) => "Turn",
            Response::Ids(_) => "Ids",
            Response::Count(_) => "Count",
            Response::Brokers(_) => "Brokers",
            Response::Decisions(_) => "Decisions",
            Response::Error(_) => "Error",
            Response::Records(_) => "Records",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GrantedTurn {
    pub epoch: u64,
    pub record: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireTurn {
    pub session_id: String,
    pub epoch: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum WireDurability {
    Lazy,
    Durable,
}

/// [`StoreError`] on the wire, plus `Protocol` for a request the daemon could not make sense of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum WireError {
    AlreadyExists(String),
    Fenced {
        session_id: String,
        epoch: u64,
    },
    TurnTimeout(String),
    Record {
        id: String,
        error: WireRecordError,
    },
    Unavailable(String),
    Config(String),
    /// The request (or, with request ID 0, the connection) broke the protocol; the text says how.
    Protocol(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum WireRecordError {
    Empty,
    UnknownFormat(u8),
    Corrupt(String),
}

impl From<Durability> for WireDurability {
    fn from(d: Durability) -> Self {
        match d {
            Durability::Lazy => WireDurability::Lazy,
            Durability::Durable => WireDurability::Durable,
        }
    }
}

impl From<WireDurability> for Durability {
    fn from(d: WireDurability) -> Self {
        match d {
            WireDurability::Lazy => Durability::Lazy,
            WireDurability::Durable => Durability::Durable,
        }
    }
}

impl From<&crate::Turn> for WireTurn {
    fn from(turn: &crate::Turn) -> Self {
        WireTurn {
            session_id: turn.session_id.clone(),
            epoch: turn.epoch,
        }
    }
}

impl From<WireTurn> for crate::Turn {
    fn from(turn: WireTurn) -> Self {
        crate::Turn {
            session_id: turn.session_id,
            epoch: turn.epoch,
        }
    }
}

impl From<StoreError> for WireError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::AlreadyExists(id) => WireError::AlreadyExists(id),
            StoreError::Fenced { session_id, epoch } => WireError::Fenced { session_id, epoch },
            StoreError::TurnTimeout(id) => WireError::TurnTimeout(id),
            StoreError::Record { id, source } => WireError::Record {
                id,
                error: match source {
                    RecordError::Empty => WireRecordError::Empty,
                    RecordError::UnknownFormat(f) => WireRecordError::UnknownFormat(f),
                    RecordError::Corrupt(why) => WireRecordError::Corrupt(why),
                },
            },
            StoreError::Unavailable(why) => WireError::Unavailable(why),
            StoreError::Config(why) => WireError::Config(why),
        }
    }
}

impl WireError {
    /// The error a caller sees; `daemon` (its address) prefixes what happened over there.
    pub(crate) fn into_store_error(self, daemon: &str) -> StoreError {
        match self {
            WireError::AlreadyExists(id) => StoreError::AlreadyExists(id),
            WireError::Fenced { session_id, epoch } => StoreError::Fenced { session_id, epoch },
            WireError::TurnTimeout(id) => StoreError::TurnTimeout(id),
            WireError::Record { id, error } => StoreError::Record {
                id,
                source: match error {
                    WireRecordError::Empty => RecordError::Empty,
                    WireRecordError::UnknownFormat(f) => RecordError::UnknownFormat(f),
                    WireRecordError::Corrupt(why) => RecordError::Corrupt(why),
                },
            },
            WireError::Unavailable(why) => {
                StoreError::Unavailable(format!("cookie-store daemon at {daemon}: {why}"))
            }
            WireError::Config(why) => {
                StoreError::Config(format!("cookie-store daemon at {daemon}: {why}"))
            }
            WireError::Protocol(why) => StoreError::Unavailable(format!(
                "cookie-store daemon at {daemon} refused a request: {why}"
            )),
        }
    }
}

/// Milliseconds of a duration, saturating (a `Duration::MAX` wait stays "forever").
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(crate) fn encode_broker(info: &BrokerInfo) -> Vec<u8> {
    codec::encode(BROKER_FORMAT_V2, info)
}

pub(crate) fn encode_decision(decision: &TxnDecision) -> Vec<u8> {
    codec::encode(DECISION_FORMAT_V2, decision)
}

/// Decode a record that crossed the wire; `id` names it in the error.
pub(crate) fn decode_record(id: &str, bytes: &[u8]) -> Result<SessionRecord, StoreError> {
    SessionRecord::decode(bytes).map_err(|source| StoreError::Record {
        id: id.to_owned(),
        source,
    })
}

pub(crate) fn decode_broker(bytes: &[u8]) -> Result<BrokerInfo, StoreError> {
    codec::decode(BROKER_FORMAT_V2, bytes).map_err(|source| StoreError::Record {
        id: "broker registration".into(),
        source,
    })
}

pub(crate) fn decode_decision(bytes: &[u8]) -> Result<TxnDecision, StoreError> {
    codec::decode(DECISION_FORMAT_V2, bytes).map_err(|source| StoreError::Record {
        id: "commit decision".into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::frame;

    /// The worked example of `PROTOCOL.md`: the frame in its hex block is exactly what this build
    /// writes for the request it describes, and the response frame likewise.
    #[test]
    fn the_worked_example_in_protocol_md_is_what_we_write() {
        let doc = include_str!("../../PROTOCOL.md");
        let example = |marker: &str| -> Vec<u8> {
            let start = doc
                .find(marker)
                .unwrap_or_else(|| panic!("PROTOCOL.md lost its `{marker}` block"));
            let block = &doc[start + marker.len()..];
            let end = block.find("```").expect("an unterminated example block");
            block[..end]
                .split_whitespace()
                .map(|byte| u8::from_str_radix(byte, 16).expect("a hex byte"))
                .collect()
        };
        let request = Request::TakeTurn {
            session_id: "s1".into(),
            lease_ms: 30_000,
            wait_ms: 5_000,
        };
        assert_eq!(
            example("```text example-request\n"),
            frame::encode(7, &request)
        );
        let response = Response::Error(WireError::TurnTimeout("s1".into()));
        assert_eq!(
            example("```text example-response\n"),
            frame::encode(7, &response)
        );
    }

    #[test]
    fn errors_cross_the_wire_variant_for_variant() {
        let errors = [
            StoreError::AlreadyExists("a".into()),
            StoreError::Fenced {
                session_id: "b".into(),
                epoch: 9,
            },
            StoreError::TurnTimeout("c".into()),
            StoreError::Record {
                id: "d".into(),
                source: RecordError::UnknownFormat(3),
            },
            StoreError::Record {
                id: "e".into(),
                source: RecordError::Corrupt("x".into()),
            },
        ];
        for e in errors {
            let before = format!("{e:?}");
            let back = WireError::from(e).into_store_error("127.0.0.1:1");
            assert_eq!(format!("{back:?}"), before);
        }
        let down =
            WireError::from(StoreError::Unavailable("disk".into())).into_store_error("127.0.0.1:1");
        assert!(
            matches!(down, StoreError::Unavailable(ref m) if m.contains("127.0.0.1:1") && m.contains("disk")),
            "{down:?}"
        );
    }
}
