//! One encoding for every stored value: a format byte, then postcard.
//!
//! Session records, broker registrations and commit decisions all outlive the broker version that
//! wrote them, so each starts with a format byte that a newer broker can dispatch on. The body is
//! [postcard](https://docs.rs/postcard): compact varints, no field names, which keeps a typical
//! session record well under 256 bytes. Keeping the framing in one place means a new value type
//! cannot forget it.

use crate::RecordError;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Format byte of a [`crate::BrokerInfo`] in the brokers tree (V2: with the instance). Entries
/// live only as long as a heartbeat lease, and V1 was never written by a released broker, so only
/// V2 is read.
pub(crate) const BROKER_FORMAT_V2: u8 = 2;

/// Format byte of a [`crate::TxnDecision`] in the decision log (V2: with the session ID). V1
/// decisions were never written by a released broker, so only V2 is read.
pub(crate) const DECISION_FORMAT_V2: u8 = 2;

/// Encode `value` behind the format byte `format`.
pub(crate) fn encode<T: Serialize>(format: u8, value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.push(format);
    // postcard into a Vec cannot fail for our types (no maps with non-string keys, no unsupported
    // types); fall back to an empty body, which decodes as Corrupt, rather than panic.
    postcard::to_extend(value, out).unwrap_or_else(|_| vec![format])
}

/// Decode bytes written by [`encode`] with the format byte `format`.
pub(crate) fn decode<T: DeserializeOwned>(format: u8, bytes: &[u8]) -> Result<T, RecordError> {
    match bytes.split_first() {
        None => Err(RecordError::Empty),
        Some((&f, body)) if f == format => {
            postcard::from_bytes(body).map_err(|e| RecordError::Corrupt(e.to_string()))
        }
        Some((&other, _)) => Err(RecordError::UnknownFormat(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BrokerInfo, Participant, TxnDecision};

    #[test]
    fn broker_and_decision_round_trip() {
        let b = BrokerInfo {
            id: "b1".into(),
            instance: "b1/0123456789ab".into(),
            advertise: "http://127.0.0.1:8080".into(),
            lease_until_ms: 1_700_000_000_000,
        };
        let bytes = encode(BROKER_FORMAT_V2, &b);
        assert_eq!(bytes[0], BROKER_FORMAT_V2);
        assert_eq!(decode::<BrokerInfo>(BROKER_FORMAT_V2, &bytes).unwrap(), b);

        let d = TxnDecision {
            txn_id: "t-1".into(),
            session_id: "s-1".into(),
            commit: true,
            participants: vec![Participant {
                server_class: "ledger".into(),
                worker: "ledger#1".into(),
            }],
            coordinator: "b1".into(),
            decided_ms: 1_700_000_000_001,
        };
        let bytes = encode(DECISION_FORMAT_V2, &d);
        assert_eq!(
            decode::<TxnDecision>(DECISION_FORMAT_V2, &bytes).unwrap(),
            d
        );
    }

    #[test]
    fn refuses_other_formats_and_garbage() {
        assert_eq!(
            decode::<BrokerInfo>(BROKER_FORMAT_V2, &[]),
            Err(RecordError::Empty)
        );
        assert_eq!(
            decode::<BrokerInfo>(BROKER_FORMAT_V2, &[7, 0]),
            Err(RecordError::UnknownFormat(7))
        );
        assert!(matches!(
            decode::<BrokerInfo>(BROKER_FORMAT_V2, &[BROKER_FORMAT_V2, 0xff]),
            Err(RecordError::Corrupt(_))
        ));
    }
}
