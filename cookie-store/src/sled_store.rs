//! The embedded backend: sled in this process, shared by every actix worker thread of the broker.
//!
//! sled takes an exclusive file lock on its directory, so exactly one process owns the data; that is
//! what lets turns live in process memory ([`crate::turns`]) instead of being written per request.
//!
//! Trees:
//! - `sessions`: session ID → encoded [`SessionRecord`];
//! - `expiry`: 8-byte big-endian deadline ++ session ID → empty ([`crate::expiry`]);
//! - `brokers`: broker ID → encoded [`BrokerInfo`];
//! - `decisions`: transaction ID → encoded [`TxnDecision`];
//! - `meta`: the epoch generation ([`crate::epochs`]).
//!
//! A record and its index entry change together in one sled transaction, so a crash never leaves a
//! record without an entry (it would never expire). The converse, an entry whose record is gone or
//! filed elsewhere, can only come from callers handing in stale filing data; [`SledStore::due_for_expiry`]
//! drops such entries as it meets them.
//!
//! Cost of a continue request: `take_turn` is one sled `get`; `write_and_release(Lazy)` is one sled
//! `insert` (the index entry stays where it is unless it is already due, see [`crate::expiry`]).
//! Durable writes add a share of one grouped flush ([`crate::group_flush`]).

use crate::codec::{self, BROKER_FORMAT_V1, DECISION_FORMAT_V1};
use crate::epochs::{EpochSource, GENERATION_KEY};
use crate::expiry::{due_bound, index_key, parse_index_key, refiled_deadline, Filed};
use crate::group_flush::GroupFlush;
use crate::turns::TurnTable;
use crate::{
    now_ms, BrokerInfo, Durability, RecordError, SessionRecord, Store, StoreError, Turn,
    TxnDecision,
};
use async_trait::async_trait;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;
use std::path::Path;
use std::time::Duration;

/// The value of an expiry index entry: the key says it all.
const EMPTY: &[u8] = &[];

/// Tunables of the sled backend. The defaults are sled's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SledOptions {
    /// How often sled flushes in the background, which bounds what a crash can take from
    /// [`Durability::Lazy`] writes. `None` turns the background flush off.
    pub flush_every_ms: Option<u64>,
    /// Page cache size in bytes.
    pub cache_capacity_bytes: u64,
}

impl Default for SledOptions {
    fn default() -> Self {
        Self {
            flush_every_ms: Some(500),
            cache_capacity_bytes: 1024 * 1024 * 1024,
        }
    }
}

/// The sled backend of [`Store`]. One per data directory per process; share it (in an `Arc`) among
/// all the threads and runtimes of the process.
pub struct SledStore {
    turns: TurnTable,
    flusher: GroupFlush,
    sessions: sled::Tree,
    expiry: sled::Tree,
    brokers: sled::Tree,
    decisions: sled::Tree,
    meta: sled::Tree,
}

impl SledStore {
    /// Open (or create) the store in `dir` with default options.
    pub fn open(dir: impl AsRef<Path>) -> Result<SledStore, StoreError> {
        Self::open_with(dir, &SledOptions::default())
    }

    /// Open (or create) the store in `dir`.
    pub fn open_with(
        dir: impl AsRef<Path>,
        options: &SledOptions,
    ) -> Result<SledStore, StoreError> {
        let dir = dir.as_ref();
        let db = sled::Config::new()
            .path(dir)
            .flush_every_ms(options.flush_every_ms)
            .cache_capacity(options.cache_capacity_bytes)
            .open()
            .map_err(|e| open_error(dir, e))?;
        let tree = |name: &str| {
            db.open_tree(name).map_err(|e| {
                StoreError::Unavailable(format!(
                    "opening sled tree {name} in {}: {e}",
                    dir.display()
                ))
            })
        };
        let sessions = tree("sessions")?;
        let expiry = tree("expiry")?;
        let brokers = tree("brokers")?;
        let decisions = tree("decisions")?;
        let meta = tree("meta")?;
        let epochs = EpochSource::open(meta.clone())?;
        Ok(SledStore {
            turns: TurnTable::new(epochs),
            flusher: GroupFlush::start(db)?,
            sessions,
            expiry,
            brokers,
            decisions,
            meta,
        })
    }

    /// Diagnostic: how many flushes the group-commit flusher has performed since open. Compared
    /// with the number of durable writes it shows how well flushes are shared.
    pub fn flush_count(&self) -> u64 {
        self.flusher.flush_count()
    }

    async fn settle(&self, durability: Durability) -> Result<(), StoreError> {
        match durability {
            Durability::Durable => self.flusher.flush().await,
            Durability::Lazy => Ok(()),
        }
    }

    /// Run `op` under the turn, make it as durable as asked, then give the turn back. A durable
    /// write keeps the turn until it is on disk, so the next holder never builds on state a crash
    /// could still take back.
    async fn finish(
        &self,
        turn: Turn,
        durability: Durability,
        op: impl FnOnce(&mut Option<Filed>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let Turn {
            session_id: id,
            epoch,
        } = turn;
        if durability == Durability::Lazy {
            return self.turns.with_turn_then_release(&id, epoch, op);
        }
        match self.turns.with_turn(&id, epoch, op) {
            Ok(()) => {}
            Err(e @ StoreError::Fenced { .. }) => return Err(e),
            Err(e) => {
                let _ = self.turns.release(&id, epoch);
                return Err(e);
            }
        }
        let flushed = self.flusher.flush().await;
        // The write was made under a valid epoch; should the lease have run out during the flush,
        // the turn has already moved on and there is nothing left to give back.
        let _ = self.turns.release(&id, epoch);
        flushed
    }

    /// Store `record` under `id` (turn held, shard locked), moving its index entry only when
    /// [`refiled_deadline`] says so.
    fn put_record(
        &self,
        id: &str,
        record: &SessionRecord,
        filed: &mut Option<Filed>,
    ) -> Result<(), StoreError> {
        let indexed = filed.map_or(record.expiry_indexed_ms, |f| f.indexed_ms);
        let expires = record.expires_at_ms();
        let refiled = refiled_deadline(indexed, expires, now_ms());
        match refiled {
            None => {
                let bytes = if record.expiry_indexed_ms == indexed {
                    record.encode()
                } else {
                    SessionRecord {
                        expiry_indexed_ms: indexed,
                        ..record.clone()
                    }
                    .encode()
                };
                self.sessions
                    .insert(id, bytes)
                    .map_err(|e| sled_error("writing session", id, e))?;
            }
            Some(deadline) => {
                let bytes = SessionRecord {
                    expiry_indexed_ms: deadline,
                    ..record.clone()
                }
                .encode();
                let (old_key, new_key) = (index_key(indexed, id), index_key(deadline, id));
                self.sessions_and_expiry(id, |s, x| {
                    s.insert(id.as_bytes(), bytes.as_slice())?;
                    x.remove(old_key.as_slice())?;
                    x.insert(new_key.as_slice(), EMPTY)?;
                    Ok(())
                })?;
            }
        }
        *filed = Some(Filed {
            indexed_ms: refiled.unwrap_or(indexed),
            expires_ms: expires,
        });
        Ok(())
    }

    /// On release: a record still alive but filed at a deadline already past (a sweeper found it
    /// due, took its turn, saw it was not expired) moves to its real deadline, so the index front
    /// holds only records that may really be due.
    fn refile_if_due(&self, id: &str, filed: &Option<Filed>) -> Result<(), StoreError> {
        let now = now_ms();
        let Some(filed) = (*filed).filter(|f| f.indexed_ms <= now && f.expires_ms > now) else {
            return Ok(());
        };
        self.sessions_and_expiry(id, |s, x| {
            let Some(bytes) = s.get(id.as_bytes())? else {
                return Ok(());
            };
            let mut record =
                SessionRecord::decode(&bytes).map_err(ConflictableTransactionError::Abort)?;
            let deadline = record.expires_at_ms();
            if record.expiry_indexed_ms == deadline {
                return Ok(());
            }
            x.remove(index_key(record.expiry_indexed_ms, id))?;
            if record.expiry_indexed_ms != filed.indexed_ms {
                x.remove(index_key(filed.indexed_ms, id))?;
            }
            record.expiry_indexed_ms = deadline;
            s.insert(id.as_bytes(), record.encode())?;
            x.insert(index_key(deadline, id), EMPTY)?;
            Ok(())
        })
    }

    /// Run `f` as one sled transaction over the sessions and expiry trees; an abort carries the
    /// decode error of session `id`.
    fn sessions_and_expiry<R>(
        &self,
        id: &str,
        f: impl Fn(
            &TransactionalTree,
            &TransactionalTree,
        ) -> Result<R, ConflictableTransactionError<RecordError>>,
    ) -> Result<R, StoreError> {
        (&self.sessions, &self.expiry)
            .transaction(|(s, x)| f(s, x))
            .map_err(|e| match e {
                TransactionError::Abort(source) => StoreError::Record {
                    id: id.to_owned(),
                    source,
                },
                TransactionError::Storage(e) => {
                    sled_error("updating session and expiry index", id, e)
                }
            })
    }

    /// Drop the index entry `key` (session `id`, filed at `deadline`) if its record is gone or
    /// filed elsewhere. Transactional, so it cannot race a refile back onto the same key.
    fn drop_stale_entry(&self, key: &[u8], id: &str, deadline: u64) -> Result<bool, StoreError> {
        self.sessions_and_expiry(id, |s, x| {
            let stale = match s.get(id.as_bytes())? {
                None => true,
                Some(bytes) => {
                    SessionRecord::decode(&bytes).is_ok_and(|r| r.expiry_indexed_ms != deadline)
                }
            };
            if stale {
                x.remove(key)?;
            }
            Ok(stale)
        })
    }

    /// The expiry index as (deadline, session ID) pairs, in order (tests).
    #[cfg(test)]
    pub(crate) fn index_entries(&self) -> Vec<(u64, String)> {
        self.expiry
            .iter()
            .keys()
            .map(|k| {
                let k = k.unwrap();
                let (deadline, id) = parse_index_key(&k).unwrap();
                (deadline, id.to_owned())
            })
            .collect()
    }

    #[cfg(test)]
    pub(crate) fn turns(&self) -> &TurnTable {
        &self.turns
    }
}

#[async_trait]
impl Store for SledStore {
    async fn create(
        &self,
        record: &SessionRecord,
        durability: Durability,
    ) -> Result<(), StoreError> {
        let id = record.id.as_str();
        let deadline = record.expires_at_ms();
        let bytes = SessionRecord {
            expiry_indexed_ms: deadline,
            ..record.clone()
        }
        .encode();
        let key = index_key(deadline, id);
        // Compare-and-swap from nothing, inside a transaction so the index entry comes with it: the
        // read joins the transaction's read set, so a concurrent create of the same ID conflicts.
        let created = self.sessions_and_expiry(id, |s, x| {
            if s.get(id.as_bytes())?.is_some() {
                return Ok(false);
            }
            s.insert(id.as_bytes(), bytes.as_slice())?;
            x.insert(key.as_slice(), EMPTY)?;
            Ok(true)
        })?;
        if !created {
            return Err(StoreError::AlreadyExists(id.to_owned()));
        }
        self.settle(durability).await
    }

    async fn take_turn(
        &self,
        id: &str,
        lease: Duration,
        wait: Duration,
    ) -> Result<Option<(Turn, SessionRecord)>, StoreError> {
        let epoch = self.turns.acquire(id, lease, wait).await?;
        // Read only now: whatever the previous holder wrote is in.
        let record =
            self.sessions
                .get(id)
                .map_err(|e| sled_error("reading session", id, e))
                .and_then(|bytes| match bytes {
                    None => Ok(None),
                    Some(bytes) => SessionRecord::decode(&bytes).map(Some).map_err(|source| {
                        StoreError::Record {
                            id: id.to_owned(),
                            source,
                        }
                    }),
                });
        let record = match record {
            Ok(Some(record)) => record,
            other => {
                let _ = self.turns.release(id, epoch);
                return other.map(|_| None);
            }
        };
        let filed = Filed {
            indexed_ms: record.expiry_indexed_ms,
            expires_ms: record.expires_at_ms(),
        };
        self.turns.with_turn(id, epoch, |cached| {
            *cached = Some(filed);
            Ok(())
        })?;
        Ok(Some((
            Turn {
                session_id: id.to_owned(),
                epoch,
            },
            record,
        )))
    }

    async fn write(
        &self,
        turn: &Turn,
        record: &SessionRecord,
        durability: Durability,
    ) -> Result<(), StoreError> {
        let id = turn.session_id.as_str();
        debug_assert_eq!(
            record.id, id,
            "a record written under another session's turn"
        );
        self.turns
            .with_turn(id, turn.epoch, |filed| self.put_record(id, record, filed))?;
        self.settle(durability).await
    }

    async fn write_and_release(
        &self,
        turn: Turn,
        record: &SessionRecord,
        durability: Durability,
    ) -> Result<(), StoreError> {
        debug_assert_eq!(
            record.id, turn.session_id,
            "a record written under another session's turn"
        );
        let id = turn.session_id.clone();
        self.finish(turn, durability, |filed| {
            self.put_record(&id, record, filed)
        })
        .await
    }

    async fn release(&self, turn: Turn) -> Result<(), StoreError> {
        let id = turn.session_id.as_str();
        self.turns
            .with_turn_then_release(id, turn.epoch, |filed| self.refile_if_due(id, filed))
    }

    async fn delete(&self, turn: Turn, durability: Durability) -> Result<(), StoreError> {
        let id = turn.session_id.clone();
        self.finish(turn, durability, |filed| {
            let cached = filed.map(|f| f.indexed_ms);
            self.sessions_and_expiry(&id, |s, x| {
                if let Some(bytes) = s.remove(id.as_bytes())? {
                    // The stored record knows where it is filed; an undecodable one leaves only
                    // the cached entry to remove (a leftover is dropped by due_for_expiry).
                    if let Ok(record) = SessionRecord::decode(&bytes) {
                        x.remove(index_key(record.expiry_indexed_ms, &id))?;
                    }
                }
                if let Some(indexed) = cached {
                    x.remove(index_key(indexed, &id))?;
                }
                Ok(())
            })?;
            *filed = None;
            Ok(())
        })
        .await
    }

    async fn due_for_expiry(&self, now_ms: u64, limit: usize) -> Result<Vec<String>, StoreError> {
        // Sweepers call this periodically: a good moment to forget turns abandoned with their lease.
        self.turns.prune_expired();
        let mut due = Vec::new();
        let entries = match due_bound(now_ms) {
            Some(bound) => self.expiry.range(..bound),
            None => self.expiry.iter(),
        };
        for entry in entries.keys() {
            if due.len() >= limit {
                break;
            }
            let key = entry
                .map_err(|e| StoreError::Unavailable(format!("scanning the expiry index: {e}")))?;
            let Some((deadline, id)) = parse_index_key(&key) else {
                tracing::warn!(key = ?key, "dropping a malformed expiry index key");
                self.expiry
                    .remove(&key)
                    .map_err(|e| StoreError::Unavailable(format!("expiry index: {e}")))?;
                continue;
            };
            let stored = self
                .sessions
                .get(id)
                .map_err(|e| sled_error("reading session", id, e))?;
            let stale = match stored.as_deref().map(SessionRecord::decode) {
                None => true,
                Some(Ok(record)) => record.expiry_indexed_ms != deadline,
                Some(Err(error)) => {
                    // Left for an operator; the sweeper could not act on it either.
                    tracing::warn!(session = id, %error, "skipping an undecodable record in the expiry index");
                    continue;
                }
            };
            if stale {
                self.drop_stale_entry(&key, id, deadline)?;
            } else {
                due.push(id.to_owned());
            }
        }
        Ok(due)
    }

    async fn register_broker(&self, info: &BrokerInfo) -> Result<(), StoreError> {
        // Lazy: a heartbeat lost in a crash is simply sent again.
        self.brokers
            .insert(info.id.as_bytes(), codec::encode(BROKER_FORMAT_V1, info))
            .map(drop)
            .map_err(|e| sled_error("registering broker", &info.id, e))
    }

    async fn live_brokers(&self, now_ms: u64) -> Result<Vec<BrokerInfo>, StoreError> {
        let mut live = Vec::new();
        for entry in self.brokers.iter() {
            let (key, bytes) =
                entry.map_err(|e| StoreError::Unavailable(format!("scanning brokers: {e}")))?;
            let info: BrokerInfo =
                codec::decode(BROKER_FORMAT_V1, &bytes).map_err(|source| StoreError::Record {
                    id: format!("broker {}", String::from_utf8_lossy(&key)),
                    source,
                })?;
            if info.lease_until_ms > now_ms {
                live.push(info);
            }
        }
        Ok(live)
    }

    async fn log_decision(&self, decision: &TxnDecision) -> Result<(), StoreError> {
        self.decisions
            .insert(
                decision.txn_id.as_bytes(),
                codec::encode(DECISION_FORMAT_V1, decision),
            )
            .map_err(|e| sled_error("logging decision of transaction", &decision.txn_id, e))?;
        self.flusher.flush().await
    }

    async fn forget_decision(&self, txn_id: &str) -> Result<(), StoreError> {
        self.decisions
            .remove(txn_id)
            .map_err(|e| sled_error("forgetting decision of transaction", txn_id, e))?;
        self.flusher.flush().await
    }

    async fn pending_decisions(&self) -> Result<Vec<TxnDecision>, StoreError> {
        self.decisions
            .iter()
            .map(|entry| {
                let (key, bytes) = entry.map_err(|e| {
                    StoreError::Unavailable(format!("scanning the decision log: {e}"))
                })?;
                codec::decode(DECISION_FORMAT_V1, &bytes).map_err(|source| StoreError::Record {
                    id: format!("decision {}", String::from_utf8_lossy(&key)),
                    source,
                })
            })
            .collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if !self.flusher.is_running() {
            return Err(StoreError::Unavailable(
                "the sled flusher thread has stopped".into(),
            ));
        }
        self.meta
            .get(GENERATION_KEY)
            .map(drop)
            .map_err(|e| StoreError::Unavailable(format!("sled: {e}")))
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.flusher.flush().await
    }
}

fn sled_error(doing: &str, id: &str, e: sled::Error) -> StoreError {
    StoreError::Unavailable(format!("sled, {doing} {id}: {e}"))
}

fn open_error(dir: &Path, e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            StoreError::Unavailable(format!(
                "{} is in use by another process (sled allows one process per database; \
             share it through `cookie-store serve` instead): {io}",
                dir.display()
            ))
        }
        other => {
            StoreError::Unavailable(format!("opening sled database {}: {other}", dir.display()))
        }
    }
}

#[cfg(test)]
mod tests;
