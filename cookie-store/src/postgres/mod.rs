//! The PostgreSQL backend (`postgres://…`, `postgresql://…`): brokers on several hosts sharing
//! sessions through one database.
//!
//! ```text
//! postgres://broker:secret@db.example:5432/sessions?pool_size=8&lazy_pool_size=4
//! ```
//!
//! The URL is libpq's, plus the store's settings (`options`). [`PgStore::open`] connects, creates
//! or migrates the tables (`schema`) and returns once every connection is ready, so a wrong
//! password, a missing database or an unreachable server is reported at start, by name.
//!
//! ## Why tokio-postgres
//! - It pipelines: concurrent statements on one connection go out back to back without waiting for
//!   each other's replies, so a handful of connections carries many concurrent requests, and the
//!   pool (`pool`) needs no checkout, only a choice among live connections.
//! - Prepared statements are explicit values, prepared once per connection (`statements`): each
//!   store call is exactly one round trip, which the two-round-trip continue request relies on.
//! - It is small (no compile-time query checking against a live database, no macros, no ORM) and
//!   supports this workspace's Rust 1.85; sqlx 0.9 needs 1.94, and its compile-time checks would need
//!   a database at build time.
//!
//! ## Rooms
//! - `options`: the URL and the store's settings;
//! - `pool`: connections per durability class, re-opened in the background when they break;
//! - `schema`: the tables and their migrations;
//! - `statements`: the SQL, one prepared statement per operation;
//! - `turns`: the turn (epoch and lease in the row, arrival-order queues in this process).
//!
//! ## Threads and runtimes
//! The store owns a small multi-threaded tokio runtime (`runtime_threads`, 2 by default) on which
//! every connection is driven and every statement runs; callers on any runtime await a task of it
//! (a `JoinHandle` needs no particular reactor). [`PgStore::open`] is synchronous: it waits for the
//! connections on a plain channel, never with `block_on` on the caller's runtime, so it may be
//! called from inside one. Only waiting for a busy turn uses the caller's timer, as with sled.
//!
//! ## Durability
//! [`Durability::Durable`] statements run on connections with `synchronous_commit = on`: the call
//! returns after the WAL flush, and PostgreSQL flushes the WAL of every commit waiting at that
//! moment together (group commit). [`Durability::Lazy`] ones, turn grants and reads run on
//! connections with `synchronous_commit = off`: a server crash can lose the last few hundred
//! milliseconds of them, never corrupt anything. [`StoreHealth::flush`](crate::StoreHealth::flush) commits a transaction ID on a
//! durable connection, which flushes everything before it.
//!
//! ## Limits
//! - No TLS: connections are plain TCP (or a Unix socket); `sslmode=require` is refused at open.
//!   Run the database on a private network or behind a TLS tunnel.
//! - No statement timeout of its own: a server that stops answering without closing the
//!   connection holds the calls on that connection until TCP gives up (set `keepalives_idle` or
//!   the server's `statement_timeout` where that matters).
//!
//! ## Expiry and sweeping
//! `expiry_ms` is the expiry index, filed lazily by the rules of `crate::expiry` (a continue request
//! leaves it alone, so its updates touch no indexed column and stay HOT). [`SessionStore::due_for_expiry`](crate::SessionStore::due_for_expiry)
//! claims the due rows it returns with `FOR UPDATE SKIP LOCKED` and a claim stamp (`sweep_owner`,
//! `sweep_until`, `sweep_claim_ms`): brokers sweeping at once get disjoint batches, while the same
//! store asking again gets its own claimed rows again (what the trait promises), and rows of a
//! sweeper that died are free again when its claim lapses.

pub(crate) mod options;
mod pool;
mod schema;
mod statements;
mod turns;

pub use options::PgOptions;
pub use schema::SCHEMA_VERSION;

use crate::codec::{self, DECISION_FORMAT_V2};
use crate::{
    BrokerInfo, BrokerRegistry, DecisionLog, Durability, SessionRecord, SessionStore, StoreError,
    StoreHealth, Turn, TxnDecision,
};
use async_trait::async_trait;
use pool::{db_error, Class, Connector, Pools};
use std::future::Future;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::{Handle, Runtime};
use turns::{Finish, LocalTurns};

/// Connect timeout used when the URL sets none: an unreachable host fails the start in seconds
/// instead of the kernel's minutes.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connect to the database a `postgres://…` URL names (see [`PgStore::open`]).
pub fn open(url: &str) -> Result<Arc<dyn crate::Store>, StoreError> {
    Ok(Arc::new(PgStore::open(url)?))
}

/// The PostgreSQL backend of [`Store`](crate::Store). One per broker process; share it in an `Arc`.
pub struct PgStore {
    inner: Arc<Inner>,
    /// Dropped with [`Runtime::shutdown_background`], which (unlike a plain drop) is allowed inside
    /// another runtime.
    runtime: Option<Runtime>,
}

/// What the store's tasks share.
pub(crate) struct Inner {
    pools: Pools,
    turns: LocalTurns,
    options: PgOptions,
    /// This open of the store, as sweep claims name it.
    instance: String,
    /// `user@host:port/dbname`, for messages.
    target: String,
    handle: Handle,
}

/// A record as its row stores it.
pub(crate) struct Row {
    bytes: Vec<u8>,
    endpoint: String,
    /// Canonical text form (IPv4-mapped IPv6 as IPv4), so one client counts once.
    client_ip: Option<String>,
    /// The real expiry deadline.
    expires_ms: i64,
}

impl Row {
    fn of(record: &SessionRecord) -> Row {
        Row {
            bytes: record.encode(),
            endpoint: record.endpoint.clone(),
            client_ip: record.client_ip.map(canonical_ip),
            expires_ms: ms(record.expires_at_ms()),
        }
    }
}

impl PgStore {
    /// Connect, create or migrate the schema, open the connection pools. Synchronous; callable
    /// inside or outside a tokio runtime.
    pub fn open(url: &str) -> Result<PgStore, StoreError> {
        let parsed = options::parse(url)?;
        let mut config = parsed.config;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("cookie-store");
        }
        if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Err(StoreError::Config(format!(
                "store URL {}: sslmode=require, but this build connects without TLS; use a \
                 private network or a TLS tunnel, with sslmode=disable or prefer",
                options::redact(url)
            )));
        }
        let options = parsed.options;
        let target = parsed.target;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.runtime_threads)
            .thread_name("cookie-store-pg")
            .enable_all()
            .build()
            .map_err(|e| {
                StoreError::Unavailable(format!("starting the PostgreSQL store's runtime: {e}"))
            })?;
        let runtime = ShutdownOnDrop(Some(runtime));
        let handle = runtime.handle().clone();
        let connector = Arc::new(Connector {
            config,
            target: target.clone(),
            reconnect_max: options.reconnect_max,
            runtime: handle.clone(),
        });
        let (done, opened) = std::sync::mpsc::channel();
        let pool_options = options.clone();
        handle.spawn(async move {
            let pools = async {
                bootstrap(&connector).await?;
                Pools::open(connector, &pool_options).await
            }
            .await;
            let _ = done.send(pools);
        });
        let pools = opened.recv().map_err(|_| {
            StoreError::Unavailable(format!(
                "connecting to PostgreSQL at {target}: the connecting task died"
            ))
        })??;
        let instance = format!(
            "{:016x}",
            std::collections::hash_map::RandomState::new()
                .hash_one((std::process::id(), std::time::SystemTime::now()))
        );
        tracing::info!(database = %target, instance = %instance, "PostgreSQL session store open");
        Ok(PgStore {
            inner: Arc::new(Inner {
                pools,
                turns: LocalTurns::new(),
                options,
                instance,
                target,
                handle,
            }),
            runtime: runtime.take(),
        })
    }

    /// Requests of this process queued for the turn of `id` (tests and diagnostics).
    #[doc(hidden)]
    pub fn waiting(&self, id: &str) -> usize {
        self.inner.turns.waiting(id)
    }

    /// Sessions whose turn this process holds or is taking (tests and diagnostics).
    #[doc(hidden)]
    pub fn local_turns(&self) -> usize {
        self.inner.turns.len()
    }

    /// Run `work` on the store's runtime and wait for it from whatever runtime the caller is on.
    async fn run<T, F>(&self, work: impl FnOnce(Arc<Inner>) -> F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.inner
            .handle
            .spawn(work(self.inner.clone()))
            .await
            .unwrap_or_else(|e| {
                Err(StoreError::Unavailable(format!(
                    "the PostgreSQL store's runtime: {e}"
                )))
            })
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A runtime that is shut down in the background when dropped (on `open`'s error paths).
struct ShutdownOnDrop(Option<Runtime>);

impl ShutdownOnDrop {
    fn handle(&self) -> &Handle {
        match &self.0 {
            Some(runtime) => runtime.handle(),
            None => unreachable!("taken only by take(), which consumes the guard"),
        }
    }

    fn take(mut self) -> Option<Runtime> {
        self.0.take()
    }
}

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Create or migrate the schema on a connection of its own, before the pools prepare statements
/// against it.
async fn bootstrap(connector: &Connector) -> Result<(), StoreError> {
    let (mut client, connection) = connector
        .config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| pool::connect_error(&connector.target, &e))?;
    let driver = tokio::spawn(connection);
    let migrated = schema::migrate(&mut client, &connector.target).await;
    drop(client);
    let _ = driver.await;
    migrated
}

#[async_trait]
impl SessionStore for PgStore {
    async fn create(
        &self,
        record: &SessionRecord,
        durability: Durability,
    ) -> Result<(), StoreError> {
        let deadline = record.expires_at_ms();
        let row = Row::of(&SessionRecord {
            expiry_indexed_ms: deadline,
            ..record.clone()
        });
        let id = record.id.clone();
        self.run(move |inner| async move {
            let conn = inner.pools.get(class_of(durability))?;
            let created = conn
                .client
                .execute(
                    &conn.st.create,
                    &[
                        &id,
                        &row.bytes,
                        &row.expires_ms,
                        &row.endpoint,
                        &row.client_ip,
                    ],
                )
                .await
                .map_err(|e| db_error(&inner.target, "creating a session", &e))?;
            if created == 0 {
                return Err(StoreError::AlreadyExists(id));
            }
            Ok(())
        })
        .await
    }

    async fn take_turn(
        &self,
        id: &str,
        lease: Duration,
        wait: Duration,
    ) -> Result<Option<(Turn, SessionRecord)>, StoreError> {
        turns::take_turn(&self.inner, id, lease, wait).await
    }

    async fn write(
        &self,
        turn: &Turn,
        record: &SessionRecord,
        durability: Durability,
    ) -> Result<(), StoreError> {
        debug_assert_eq!(
            record.id, turn.session_id,
            "a record written under another session's turn"
        );
        let row = Row::of(record);
        let turn = Turn {
            session_id: turn.session_id.clone(),
            epoch: turn.epoch,
        };
        self.run(move |inner| async move { inner.db_write(&turn, &row, durability).await })
            .await
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
        let row = Row::of(record);
        self.run(move |inner| turns::finish(inner, turn, Finish::WriteRelease(row, durability)))
            .await
    }

    async fn release(&self, turn: Turn) -> Result<(), StoreError> {
        self.run(move |inner| turns::finish(inner, turn, Finish::Release))
            .await
    }

    async fn delete(&self, turn: Turn, durability: Durability) -> Result<(), StoreError> {
        self.run(move |inner| turns::finish(inner, turn, Finish::Delete(durability)))
            .await
    }

    async fn due_for_expiry(&self, now_ms: u64, limit: usize) -> Result<Vec<String>, StoreError> {
        // Sweepers call this periodically: a good moment to forget turns abandoned with their lease.
        self.inner.turns.prune_expired();
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.run(move |inner| async move {
            let conn = inner.pools.get(Class::Lazy)?;
            let claim = i64::try_from(inner.options.sweep_claim.as_millis()).unwrap_or(i64::MAX);
            let rows = conn
                .client
                .query(
                    &conn.st.due,
                    &[&ms(now_ms), &count(limit), &inner.instance, &claim],
                )
                .await
                .map_err(|e| db_error(&inner.target, "claiming due sessions", &e))?;
            let mut due = Vec::with_capacity(rows.len());
            for row in &rows {
                let id: String = inner.col(row, 0)?;
                let deadline: i64 = inner.col(row, 1)?;
                due.push((deadline, id));
            }
            // UPDATE … RETURNING keeps no order: earliest first, as the index has them.
            due.sort_unstable();
            Ok(due.into_iter().map(|(_, id)| id).collect())
        })
        .await
    }

    async fn list_sessions(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let after = after.unwrap_or("").to_owned();
        self.run(move |inner| async move {
            let conn = inner.pools.get(Class::Lazy)?;
            // An operator's call, rare: not worth a prepared statement per connection.
            let rows = conn
                .client
                .query(
                    "SELECT id, record FROM cookie_sessions WHERE id > $1 ORDER BY id LIMIT $2",
                    &[&after, &count(limit)],
                )
                .await
                .map_err(|e| db_error(&inner.target, "listing sessions", &e))?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                let id: String = inner.col(row, 0)?;
                let bytes: Vec<u8> = inner.col(row, 1)?;
                out.push(
                    SessionRecord::decode(&bytes)
                        .map_err(|source| StoreError::Record { id, source })?,
                );
            }
            Ok(out)
        })
        .await
    }

    async fn count_sessions(
        &self,
        endpoint: &str,
        client_ip: Option<IpAddr>,
        now_ms: u64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        if limit == 0 {
            return Ok(0);
        }
        let endpoint = endpoint.to_owned();
        let ip = client_ip.map(canonical_ip);
        self.run(move |inner| async move {
            let conn = inner.pools.get(Class::Lazy)?;
            let (now, limit_arg) = (ms(now_ms), count(limit));
            let row = match &ip {
                None => {
                    conn.client
                        .query_one(&conn.st.count_all, &[&endpoint, &now, &limit_arg])
                        .await
                }
                Some(ip) => {
                    conn.client
                        .query_one(&conn.st.count_ip, &[&endpoint, ip, &now, &limit_arg])
                        .await
                }
            }
            .map_err(|e| db_error(&inner.target, "counting sessions", &e))?;
            let live: i64 = inner.col(&row, 0)?;
            Ok(usize::try_from(live).unwrap_or(0).min(limit))
        })
        .await
    }
}

#[async_trait]
impl BrokerRegistry for PgStore {
    async fn register_broker(&self, info: &BrokerInfo) -> Result<(), StoreError> {
        let info = info.clone();
        // Lazy: a heartbeat lost in a crash is simply sent again.
        self.run(move |inner| async move {
            let conn = inner.pools.get(Class::Lazy)?;
            conn.client
                .execute(
                    &conn.st.register,
                    &[
                        &info.id,
                        &info.instance,
                        &info.advertise,
                        &ms(info.lease_until_ms),
                    ],
                )
                .await
                .map_err(|e| db_error(&inner.target, "registering a broker", &e))?;
            Ok(())
        })
        .await
    }

    async fn live_brokers(&self, now_ms: u64) -> Result<Vec<BrokerInfo>, StoreError> {
        self.run(move |inner| async move {
            let conn = inner.pools.get(Class::Lazy)?;
            let rows = conn
                .client
                .query(&conn.st.live_brokers, &[&ms(now_ms)])
                .await
                .map_err(|e| db_error(&inner.target, "reading the broker registry", &e))?;
            rows.iter()
                .map(|row| {
                    let lease: i64 = inner.col(row, 3)?;
                    Ok(BrokerInfo {
                        id: inner.col(row, 0)?,
                        instance: inner.col(row, 1)?,
                        advertise: inner.col(row, 2)?,
                        lease_until_ms: lease.max(0) as u64,
                    })
                })
                .collect()
        })
        .await
    }
}

#[async_trait]
impl DecisionLog for PgStore {
    async fn log_decision(&self, decision: &TxnDecision) -> Result<(), StoreError> {
        let bytes = codec::encode(DECISION_FORMAT_V2, decision);
        let (txn, session) = (decision.txn_id.clone(), decision.session_id.clone());
        self.run(move |inner| async move {
            let conn = inner.pools.get(Class::Durable)?;
            conn.client
                .execute(&conn.st.log_decision, &[&txn, &session, &bytes])
                .await
                .map_err(|e| db_error(&inner.target, "logging a commit decision", &e))?;
            Ok(())
        })
        .await
    }

    async fn forget_decision(&self, txn_id: &str) -> Result<(), StoreError> {
        let txn = txn_id.to_owned();
        // Lazy: a decision that reappears after a crash is re-sent and forgotten again.
        self.run(move |inner| async move {
            let conn = inner.pools.get(Class::Lazy)?;
            conn.client
                .execute(&conn.st.forget_decision, &[&txn])
                .await
                .map_err(|e| db_error(&inner.target, "forgetting a commit decision", &e))?;
            Ok(())
        })
        .await
    }

    async fn pending_decisions(&self) -> Result<Vec<TxnDecision>, StoreError> {
        self.run(move |inner| async move {
            let conn = inner.pools.get(Class::Lazy)?;
            let rows = conn
                .client
                .query(&conn.st.pending_decisions, &[])
                .await
                .map_err(|e| db_error(&inner.target, "reading the decision log", &e))?;
            rows.iter()
                .map(|row| {
                    let txn: String = inner.col(row, 0)?;
                    let bytes: Vec<u8> = inner.col(row, 1)?;
                    codec::decode(DECISION_FORMAT_V2, &bytes).map_err(|source| StoreError::Record {
                        id: format!("decision {txn}"),
                        source,
                    })
                })
                .collect()
        })
        .await
    }
}

#[async_trait]
impl StoreHealth for PgStore {
    async fn ping(&self) -> Result<(), StoreError> {
        // Both classes: a store that can read but not commit durably is not healthy.
        self.run(move |inner| async move {
            for class in [Class::Lazy, Class::Durable] {
                let conn = inner.pools.get(class)?;
                conn.client
                    .query_one(&conn.st.ping, &[])
                    .await
                    .map_err(|e| db_error(&inner.target, "ping", &e))?;
            }
            Ok(())
        })
        .await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.run(move |inner| async move {
            let conn = inner.pools.get(Class::Durable)?;
            conn.client
                .query_one(&conn.st.flush, &[])
                .await
                .map_err(|e| db_error(&inner.target, "flushing the WAL", &e))?;
            Ok(())
        })
        .await
    }
}

impl Inner {
    /// Column `index` of `row`, or an error naming it (a schema this build does not expect).
    fn col<'a, T: tokio_postgres::types::FromSql<'a>>(
        &self,
        row: &'a tokio_postgres::Row,
        index: usize,
    ) -> Result<T, StoreError> {
        row.try_get(index).map_err(|e| {
            StoreError::Unavailable(format!(
                "PostgreSQL at {}: unexpected column {index}: {e}",
                self.target
            ))
        })
    }
}

/// Decode a stored record; the row's `expiry_ms` is where it is filed, whatever the bytes say.
pub(crate) fn decode_record(
    id: &str,
    bytes: &[u8],
    expiry_ms: i64,
) -> Result<SessionRecord, StoreError> {
    let mut record = SessionRecord::decode(bytes).map_err(|source| StoreError::Record {
        id: id.to_owned(),
        source,
    })?;
    record.expiry_indexed_ms = expiry_ms.max(0) as u64;
    Ok(record)
}

/// Milliseconds as a `bigint` (saturating: `u64::MAX` means "forever" and stays the largest).
pub(crate) fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn canonical_ip(ip: IpAddr) -> String {
    ip.to_canonical().to_string()
}

fn class_of(durability: Durability) -> Class {
    match durability {
        Durability::Durable => Class::Durable,
        Durability::Lazy => Class::Lazy,
    }
}
