//! Which broker instances a session record names, and the transaction tombstone.
//!
//! A session's work lives at one broker instance at a time: the engine only adds a tag (a dialog's
//! worker, a transaction participant) while no tag names another live instance, so the tags of a
//! record normally name one instance. Should two live instances ever be named (a broker whose lease
//! lapsed and came back while another took its work over), the participants' instance wins: a
//! commit decision may hang on it, a dialog is only a cart.
//!
//! A **tombstone** is a transaction the broker aborted because the broker holding it stopped, kept
//! in the record (phase `Aborting`, no participants, no deadline) until a request that names the
//! transaction is told so (-1021). It names no instance and holds no work.

use super::instance_of_tag;
use cookie_store::{SessionRecord, TransactionPhase, TransactionState};

/// The instances other than `me` named by the record's tags: the transaction's participants first,
/// then the dialog's worker; each once.
pub fn foreign_instances(record: &SessionRecord, me: &str) -> Vec<String> {
    let participants = record
        .transaction
        .iter()
        .filter(|t| !is_tombstone(t))
        .flat_map(|t| t.participants.iter().map(|p| p.worker.as_str()));
    let dialog = record.subsession.iter().map(|s| s.worker.as_str());
    let mut out: Vec<String> = Vec::new();
    for tag in participants.chain(dialog) {
        // A tag without an instance cannot be addressed by anyone: treat it as held by nobody
        // alive, which takes it over like a dead broker's.
        let instance = instance_of_tag(tag).unwrap_or("");
        if instance != me && !out.iter().any(|o| o == instance) {
            out.push(instance.to_string());
        }
    }
    out
}

/// Whether the transaction has participants tagged by an instance other than `me`.
pub fn has_foreign_participants(txn: &TransactionState, me: &str) -> bool {
    !is_tombstone(txn)
        && txn
            .participants
            .iter()
            .any(|p| instance_of_tag(&p.worker) != Some(me))
}

/// Whether this is a tombstone (see the module docs).
pub fn is_tombstone(txn: &TransactionState) -> bool {
    txn.phase == TransactionPhase::Aborting
}

/// The tombstone of an aborted transaction: same ID and start, no participants, no deadline (it
/// must not bring the session's expiry forward).
pub fn tombstone(txn: &TransactionState) -> TransactionState {
    TransactionState {
        id: txn.id.clone(),
        phase: TransactionPhase::Aborting,
        participants: Vec::new(),
        started_ms: txn.started_ms,
        deadline_ms: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cookie_store::{Participant, SubsessionState};

    fn record(participants: &[&str], dialog: Option<&str>) -> SessionRecord {
        SessionRecord {
            id: "s".into(),
            endpoint: "/soap".into(),
            dialect: "nonstop".into(),
            principal: None,
            client_ip: None,
            created_ms: 1,
            last_access_ms: 1,
            idle_timeout_ms: 1000,
            transaction: (!participants.is_empty()).then(|| TransactionState {
                id: "t".into(),
                phase: TransactionPhase::Active,
                participants: participants
                    .iter()
                    .map(|w| Participant {
                        server_class: "ledger".into(),
                        worker: w.to_string(),
                    })
                    .collect(),
                started_ms: 1,
                deadline_ms: 99,
            }),
            subsession: dialog.map(|w| SubsessionState {
                server_class: "cart".into(),
                worker: w.into(),
                broker: "x".into(),
                dialog_id: "s".into(),
            }),
            dialect_state: Vec::new(),
            expiry_indexed_ms: 0,
        }
    }

    #[test]
    fn foreign_instances_list_participants_first_and_skip_mine() {
        let me = "b1/aaaaaaaaaaaa";
        assert!(foreign_instances(&record(&[], None), me).is_empty());
        assert!(foreign_instances(&record(&["ledger#1@b1/aaaaaaaaaaaa"], None), me).is_empty());
        let r = record(
            &["ledger#1@b2/bbbbbbbbbbbb", "savings#1@b2/bbbbbbbbbbbb"],
            Some("cart#1@b3/cccccccccccc"),
        );
        assert_eq!(
            foreign_instances(&r, me),
            vec!["b2/bbbbbbbbbbbb".to_string(), "b3/cccccccccccc".to_string()]
        );
        // A restarted broker is another instance.
        let r = record(&[], Some("cart#1@b1/000000000000"));
        assert_eq!(
            foreign_instances(&r, me),
            vec!["b1/000000000000".to_string()]
        );
    }

    #[test]
    fn tombstones_name_nobody_and_expire_nothing() {
        let me = "b1/aaaaaaaaaaaa";
        let mut r = record(&["ledger#1@b2/bbbbbbbbbbbb"], None);
        let txn = r.transaction.clone().expect("a transaction");
        assert!(has_foreign_participants(&txn, me));
        let t = tombstone(&txn);
        assert!(is_tombstone(&t) && t.participants.is_empty() && t.deadline_ms == 0);
        assert!(!has_foreign_participants(&t, me));
        r.transaction = Some(t);
        assert!(foreign_instances(&r, me).is_empty());
        assert_eq!(r.expires_at_ms(), 1001, "only the idle timeout counts");
    }
}
