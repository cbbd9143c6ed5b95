//! The embedded backend: sled in this process, shared by every actix worker thread of the broker.
//!
//! sled takes an exclusive file lock on its directory, so exactly one process owns the data; that is
//! what lets turns live in process memory ([`crate::turns`]) instead of being written per request.
//!
//! Trees:
//! - `sessions`: session ID → encoded [`SessionRecord`];
//! - `expiry`: 8-byte big-endian deadline ++ session ID → empty ([`crate::expiry`]);
//! - `clients`: endpoint ++ client IP ++ session ID → the record's filed expiry deadline
//!   ([`client_key`]), the index [`SessionStore::count_sessions`](crate::SessionStore::count_sessions) counts through;
//! - `brokers`: broker ID → encoded [`BrokerInfo`];
//! - `decisions`: transaction ID → encoded [`TxnDecision`];
//! - `meta`: the epoch generation ([`crate::epochs`]).
//!
//! A crash must never leave a record without its index entries (it would never expire, and never
//! count). Moving an entry is one sled transaction with the record. Creating and deleting, the hot
//! paths of a churning client, are not transactions (in sled 0.34 each transaction rolls the log and
//! takes the database's lock exclusively): `create` files the entries before it writes the record,
//! `delete` removes the record before its entries, and sled recovers a prefix of its log. The
//! converse, an entry whose record is gone or filed elsewhere, is harmless: [`SledStore::due_for_expiry`]
//! drops such entries as it meets them, and [`SessionStore::count_sessions`](crate::SessionStore::count_sessions) once their filed deadline has
//! passed (until then a crash's leftover counts, at most one session timeout long).
//!
//! Cost of a continue request: `take_turn` is one sled `get`; `write_and_release(Lazy)` is one sled
//! `insert` (the index entry stays where it is unless it is already due, see [`crate::expiry`]).
//! Durable writes add a share of one grouped flush ([`crate::group_flush`]).

use crate::codec::{self, BROKER_FORMAT_V2, DECISION_FORMAT_V2};
use crate::epochs::{EpochSource, GENERATION_KEY};
use crate::expiry::{due_bound, index_key, parse_index_key, refiled_deadline, Filed};
use crate::group_flush::GroupFlush;
use crate::turns::TurnTable;
use crate::{
    now_ms, short_id, BrokerInfo, BrokerRegistry, DecisionLog, Durability, RecordError,
    SessionRecord, SessionStore, StoreError, StoreHealth, Turn, TxnDecision,
};
use async_trait::async_trait;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;
use std::net::IpAddr;
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

impl SledOptions {
    /// Split a `sled:DIR[?cache_capacity_bytes=N&flush_every_ms=N]` URL into its directory and
    /// options (`flush_every_ms=0` turns the background flush off). A directory whose name holds a
    /// `?` cannot be named this way. A bad URL is a [`StoreError::Config`] naming the parameter.
    pub fn parse_url(url: &str) -> Result<(&str, SledOptions), StoreError> {
        let bad = |what: String| StoreError::Config(format!("store URL {url}: {what}"));
        let rest = url
            .strip_prefix("sled:")
            .ok_or_else(|| bad("not a sled: URL".into()))?;
        let (dir, query) = rest.split_once('?').unwrap_or((rest, ""));
        if dir.is_empty() {
            return Err(bad(
                "sled: URL needs a directory, as in sled:./broker-data/cookies".into(),
            ));
        }
        let mut options = SledOptions::default();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let number = value
                .parse::<u64>()
                .map_err(|_| bad(format!("{key}={value} is not a whole number")));
            match key.as_ref() {
                "cache_capacity_bytes" => {
                    options.cache_capacity_bytes = number?;
                    if options.cache_capacity_bytes < MIN_CACHE_BYTES {
                        return Err(bad(format!(
                            "cache_capacity_bytes must be at least {MIN_CACHE_BYTES} (1 MiB)"
                        )));
                    }
                }
                "flush_every_ms" => options.flush_every_ms = Some(number?).filter(|&ms| ms > 0),
                _ => {
                    return Err(bad(format!(
                    "unknown parameter {key} (sled: takes cache_capacity_bytes and flush_every_ms)"
                )))
                }
            }
        }
        Ok((dir, options))
    }
}

/// Below this sled's cache thrashes on every request.
const MIN_CACHE_BYTES: u64 = 1024 * 1024;

impl Default for SledOptions {
    fn default() -> Self {
        Self {
            flush_every_ms: Some(500),
            cache_capacity_bytes: 1024 * 1024 * 1024,
        }
    }
}

/// The sled backend of [`Store`](crate::Store). One per data directory per process; share it (in an `Arc`) among
/// all the threads and runtimes of the process.
pub struct SledStore {
    turns: TurnTable,
    flusher: GroupFlush,
    sessions: sled::Tree,
    expiry: sled::Tree,
    clients: sled::Tree,
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
        let config = sled::Config::new()
            .path(dir)
            .flush_every_ms(options.flush_every_ms)
            .cache_capacity(options.cache_capacity_bytes);
        // A store of this process dropped a moment ago can still hold the directory's lock: sled
        // writes its IO buffers on detached threads that keep the file open until they finish.
        // Another process's lock outlasts the wait and is reported as such.
        let retry_until = std::time::Instant::now() + LOCK_RETRY;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(e) if is_lock_error(&e) && std::time::Instant::now() < retry_until => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(open_error(dir, e)),
            }
        };
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
        // Stores written before this index existed have no entries for their sessions; that only
        // matters for endpoints with session limits (DSML), which came with the index.
        let clients = tree("clients")?;
        let brokers = tree("brokers")?;
        let decisions = tree("decisions")?;
        let meta = tree("meta")?;
        let epochs = EpochSource::open(meta.clone())?;
        Ok(SledStore {
            turns: TurnTable::new(epochs),
            flusher: GroupFlush::start(db)?,
            sessions,
            expiry,
            clients,
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
                let client = client_key(&record.endpoint, record.client_ip, id);
                self.sessions_and_expiry(id, |s, x, c| {
                    s.insert(id.as_bytes(), bytes.as_slice())?;
                    x.remove(old_key.as_slice())?;
                    x.insert(new_key.as_slice(), EMPTY)?;
                    c.insert(client.as_slice(), &deadline.to_be_bytes())?;
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
        self.sessions_and_expiry(id, |s, x, c| {
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
            c.insert(
                client_key(&record.endpoint, record.client_ip, id),
                &deadline.to_be_bytes(),
            )?;
            Ok(())
        })
    }

    /// Run `f` as one sled transaction over the sessions, expiry and clients trees; an abort
    /// carries the decode error of session `id`.
    fn sessions_and_expiry<R>(
        &self,
        id: &str,
        f: impl Fn(
            &TransactionalTree,
            &TransactionalTree,
            &TransactionalTree,
        ) -> Result<R, ConflictableTransactionError<RecordError>>,
    ) -> Result<R, StoreError> {
        (&self.sessions, &self.expiry, &self.clients)
            .transaction(|(s, x, c)| f(s, x, c))
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
        self.sessions_and_expiry(id, |s, x, _| {
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

    /// Undo the index entries a losing `create` of `id` filed (`key`, and `client` with value
    /// `filed`), keeping those the winner's record (`current`) is filed under. Each removal is a
    /// compare-and-swap on the value this create wrote, so it never takes an entry rewritten since.
    fn undo_create_entries(
        &self,
        id: &str,
        key: &[u8],
        client: &[u8],
        filed: &[u8; 8],
        current: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let winner = current.and_then(|bytes| SessionRecord::decode(bytes).ok());
        let undo = |e| sled_error("undoing the entries of a duplicate create", id, e);
        if winner
            .as_ref()
            .is_none_or(|w| index_key(w.expiry_indexed_ms, id) != key)
        {
            let _ = self
                .expiry
                .compare_and_swap(key, Some(EMPTY), None::<&[u8]>)
                .map_err(undo)?;
        }
        // The clients value is the winner's filed deadline, not this create's.
        let restored = winner
            .filter(|w| client_key(&w.endpoint, w.client_ip, id) == client)
            .map(|w| w.expiry_indexed_ms.to_be_bytes());
        let _ = self
            .clients
            .compare_and_swap(client, Some(filed), restored.as_ref().map(|r| r.as_slice()))
            .map_err(undo)?;
        Ok(())
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
impl SessionStore for SledStore {
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
        // A retried create (its first reply lost) finds the record without touching the indexes.
        if self
            .sessions
            .contains_key(id)
            .map_err(|e| sled_error("reading session", id, e))?
        {
            return Err(StoreError::AlreadyExists(id.to_owned()));
        }
        // No sled transaction: sled 0.34 makes every one roll its log and take its global lock
        // exclusively, which cost churn most of its throughput (BENCHMARKS.md, "Churn"). The index
        // entries go in first and the record last, by compare-and-swap from nothing, so a crash
        // between them leaves entries without a record (dropped when met), never a record without
        // its entries (it would never expire). sled recovers its log in LSN order up to the first
        // tear (its pagecache/segment.rs), a prefix, so that order holds after a crash too.
        let key = index_key(deadline, id);
        let client = client_key(&record.endpoint, record.client_ip, id);
        let filed = deadline.to_be_bytes();
        self.expiry
            .insert(key.as_slice(), EMPTY)
            .map_err(|e| sled_error("filing session for expiry", id, e))?;
        self.clients
            .insert(client.as_slice(), &filed)
            .map_err(|e| sled_error("filing session by client", id, e))?;
        let swapped = self
            .sessions
            .compare_and_swap(id, None::<&[u8]>, Some(bytes))
            .map_err(|e| sled_error("creating session", id, e))?;
        if let Err(lost) = swapped {
            // Another create of the same ID won between the check and the swap.
            self.undo_create_entries(id, &key, &client, &filed, lost.current.as_deref())?;
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
            // The record first, then its entries, without a sled transaction (see `create`): an
            // entry left by a crash in between is dropped when the sweeper or a count meets it.
            let removed = self
                .sessions
                .remove(id.as_bytes())
                .map_err(|e| sled_error("deleting session", &id, e))?;
            let mut expiry_keys = Vec::with_capacity(2);
            if let Some(indexed) = filed.map(|f| f.indexed_ms) {
                expiry_keys.push(index_key(indexed, &id));
            }
            // The stored record knows where it is filed; an undecodable one leaves only the cached
            // entry to remove.
            if let Some(record) = removed.and_then(|bytes| SessionRecord::decode(&bytes).ok()) {
                let key = index_key(record.expiry_indexed_ms, &id);
                if !expiry_keys.contains(&key) {
                    expiry_keys.push(key);
                }
                self.clients
                    .remove(client_key(&record.endpoint, record.client_ip, &id))
                    .map_err(|e| sled_error("unfiling session by client", &id, e))?;
            }
            for key in expiry_keys {
                self.expiry
                    .remove(key)
                    .map_err(|e| sled_error("unfiling session for expiry", &id, e))?;
            }
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

    async fn list_sessions(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        use std::ops::Bound;
        let start = match after {
            Some(id) => Bound::Excluded(id.as_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        let mut out = Vec::with_capacity(limit.min(1024));
        for entry in self
            .sessions
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
            .take(limit)
        {
            let (key, bytes) = entry
                .map_err(|e| StoreError::Unavailable(format!("scanning the sessions: {e}")))?;
            let record = SessionRecord::decode(&bytes).map_err(|source| StoreError::Record {
                id: String::from_utf8_lossy(&key).into_owned(),
                source,
            })?;
            out.push(record);
        }
        Ok(out)
    }

    async fn count_sessions(
        &self,
        endpoint: &str,
        client_ip: Option<IpAddr>,
        now_ms: u64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let mut prefix = endpoint_prefix(endpoint);
        if let Some(ip) = client_ip {
            push_ip(&mut prefix, Some(ip));
        }
        let mut live = 0;
        for entry in self.clients.scan_prefix(&prefix) {
            if live >= limit {
                break;
            }
            let (key, value) = entry
                .map_err(|e| StoreError::Unavailable(format!("scanning the clients index: {e}")))?;
            // The value is the record's filed expiry deadline, which is never later than its real
            // one: an entry whose deadline is ahead is live without reading its record.
            let filed = value
                .as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            if filed > now_ms {
                live += 1;
                continue;
            }
            let Some(id) = client_key_id(&key, prefix.len()) else {
                tracing::warn!(key = ?key, "dropping a malformed clients index key");
                let _ = self
                    .clients
                    .compare_and_swap(&key, Some(&value), None::<&[u8]>);
                continue;
            };
            let stored = self
                .sessions
                .get(id)
                .map_err(|e| sled_error("reading session", id, e))?;
            match stored.as_deref().map(SessionRecord::decode) {
                Some(Ok(record)) => {
                    // Expired but not swept yet: not counted, the sweeper deletes it.
                    if !record.is_expired(now_ms) {
                        live += 1;
                    }
                }
                // The record is gone (it could not be decoded when it was deleted): drop the
                // entry unless it changed meanwhile.
                None => {
                    let _ = self
                        .clients
                        .compare_and_swap(&key, Some(&value), None::<&[u8]>)
                        .map_err(|e| sled_error("clients index", id, e))?;
                }
                Some(Err(error)) => {
                    tracing::warn!(session = %short_id(id), %error, "not counting an undecodable record");
                }
            }
        }
        Ok(live.min(limit))
    }
}

#[async_trait]
impl BrokerRegistry for SledStore {
    async fn register_broker(&self, info: &BrokerInfo) -> Result<(), StoreError> {
        // Lazy: a heartbeat lost in a crash is simply sent again.
        self.brokers
            .insert(info.id.as_bytes(), codec::encode(BROKER_FORMAT_V2, info))
            .map(drop)
            .map_err(|e| sled_error("registering broker", &info.id, e))
    }

    async fn live_brokers(&self, now_ms: u64) -> Result<Vec<BrokerInfo>, StoreError> {
        let mut live = Vec::new();
        for entry in self.brokers.iter() {
            let (key, bytes) =
                entry.map_err(|e| StoreError::Unavailable(format!("scanning brokers: {e}")))?;
            let info: BrokerInfo =
                codec::decode(BROKER_FORMAT_V2, &bytes).map_err(|source| StoreError::Record {
                    id: format!("broker {}", String::from_utf8_lossy(&key)),
                    source,
                })?;
            if info.lease_until_ms > now_ms {
                live.push(info);
            }
        }
        Ok(live)
    }
}

#[async_trait]
impl DecisionLog for SledStore {
    async fn log_decision(&self, decision: &TxnDecision) -> Result<(), StoreError> {
        self.decisions
            .insert(
                decision.txn_id.as_bytes(),
                codec::encode(DECISION_FORMAT_V2, decision),
            )
            .map_err(|e| sled_error("logging decision of transaction", &decision.txn_id, e))?;
        self.flusher.flush().await
    }

    async fn forget_decision(&self, txn_id: &str) -> Result<(), StoreError> {
        self.decisions
            .remove(txn_id)
            .map_err(|e| sled_error("forgetting decision of transaction", txn_id, e))?;
        // Not flushed: a removal lost in a crash only makes recovery re-send commits that every
        // participant acknowledges again (they are idempotent) and forget the decision then.
        Ok(())
    }

    async fn pending_decisions(&self) -> Result<Vec<TxnDecision>, StoreError> {
        self.decisions
            .iter()
            .map(|entry| {
                let (key, bytes) = entry.map_err(|e| {
                    StoreError::Unavailable(format!("scanning the decision log: {e}"))
                })?;
                codec::decode(DECISION_FORMAT_V2, &bytes).map_err(|source| StoreError::Record {
                    id: format!("decision {}", String::from_utf8_lossy(&key)),
                    source,
                })
            })
            .collect()
    }
}

#[async_trait]
impl StoreHealth for SledStore {
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

/// The clients-index prefix of an endpoint: its length (2 bytes, big-endian) and its bytes, so that
/// no endpoint's prefix is a prefix of another's.
fn endpoint_prefix(endpoint: &str) -> Vec<u8> {
    let bytes = endpoint.as_bytes();
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    let mut key = Vec::with_capacity(2 + bytes.len() + 17 + 32);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(&bytes[..usize::from(len)]);
    key
}

/// Append a client IP: a tag byte (0 none, 4 IPv4, 6 IPv6) and the address bytes. IPv4-mapped
/// IPv6 addresses are written as IPv4, so one client counts once whichever socket family it came
/// through.
fn push_ip(key: &mut Vec<u8>, ip: Option<IpAddr>) {
    match ip.map(|ip| ip.to_canonical()) {
        None => key.push(0),
        Some(IpAddr::V4(v4)) => {
            key.push(4);
            key.extend_from_slice(&v4.octets());
        }
        Some(IpAddr::V6(v6)) => {
            key.push(6);
            key.extend_from_slice(&v6.octets());
        }
    }
}

/// The clients-index key of a session: endpoint prefix, client IP, session ID.
fn client_key(endpoint: &str, ip: Option<IpAddr>, id: &str) -> Vec<u8> {
    let mut key = endpoint_prefix(endpoint);
    push_ip(&mut key, ip);
    key.extend_from_slice(id.as_bytes());
    key
}

/// The session ID of a clients-index key found under a prefix of `prefix_len` bytes (the endpoint
/// prefix, or the endpoint and IP prefix).
fn client_key_id(key: &[u8], prefix_len: usize) -> Option<&str> {
    let endpoint_len = usize::from(u16::from_be_bytes([*key.first()?, *key.get(1)?]));
    let ip_at = 2 + endpoint_len;
    let ip_len = match key.get(ip_at)? {
        0 => 0,
        4 => 4,
        6 => 16,
        _ => return None,
    };
    let id_at = ip_at + 1 + ip_len;
    if id_at < prefix_len {
        return None;
    }
    std::str::from_utf8(key.get(id_at..)?).ok()
}

fn sled_error(doing: &str, id: &str, e: sled::Error) -> StoreError {
    StoreError::Unavailable(format!("sled, {doing} {id}: {e}"))
}

/// How long `open` waits for the directory's lock to be let go before reporting it in use.
const LOCK_RETRY: Duration = Duration::from_millis(500);

fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

fn open_error(dir: &Path, e: sled::Error) -> StoreError {
    if is_lock_error(&e) {
        return StoreError::Unavailable(format!(
            "{} is in use by another process (sled allows one process per database; \
             share it through `cookie-store serve` instead): {e}",
            dir.display()
        ));
    }
    StoreError::Unavailable(format!("opening sled database {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests;
