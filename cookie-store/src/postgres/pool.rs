//! Connections: two fixed sets, one per durability class, each connection re-opened when it breaks.
//!
//! A [`Pool`] is a fixed number of slots. A slot holds a live connection or nothing; calls take the
//! next live one round-robin and never wait for a connection: with none live they fail at once with
//! [`StoreError::Unavailable`] (the broker turns that into a fault the client can retry), while the
//! slot re-opens its connection in the background, pausing 50 ms and doubling up to
//! `reconnect_max_ms` between tries, each pause jittered down to half (`backoff.rs`). A connection that breaks (server restart, network cut) is
//! noticed by the task driving it, which empties the slot and starts that loop; so the store recovers
//! by itself, without a call having to fail first.
//!
//! Why fixed sets and no pool crate: tokio-postgres pipelines concurrent statements on one
//! connection, so a call never needs a connection of its own and there is nothing to check out or
//! return, only a choice among live connections. The two classes differ only in the session
//! setting `synchronous_commit` (see [`Class`]).
//!
//! Every new connection, before it serves a call, raises the epoch floor
//! ([`super::schema::raise_epoch_floor`]) and prepares the statements.

use super::options::PgOptions;
use super::schema;
use super::statements::Statements;
use crate::StoreError;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio_postgres::{Client, NoTls};

/// First pause before re-opening a broken connection.
const RECONNECT_MIN: Duration = Duration::from_millis(50);

/// How hard a connection's commits hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    /// `synchronous_commit = on`: a commit returns once its WAL is flushed. PostgreSQL flushes the
    /// WAL of every commit waiting at that moment together, so concurrent durable writes (on
    /// different connections) share fsyncs: the group commit.
    Durable,
    /// `synchronous_commit = off`: a commit returns at once, the WAL writer flushes it within
    /// `3 × wal_writer_delay` (600 ms by default). A server crash can lose those last commits, never
    /// corrupt anything.
    Lazy,
}

/// A live connection and its prepared statements.
pub(super) struct Conn {
    pub client: Client,
    pub st: Statements,
}

/// What every connection is opened with.
pub(super) struct Connector {
    pub config: tokio_postgres::Config,
    /// `user@host:port/dbname`, for messages.
    pub target: String,
    pub reconnect_max: Duration,
    pub runtime: Handle,
}

/// The connections of one class.
pub(super) struct Pool {
    class: Class,
    slots: Box<[Slot]>,
    next: AtomicUsize,
    connector: Arc<Connector>,
}

#[derive(Default)]
struct Slot {
    conn: Mutex<Option<Arc<Conn>>>,
    /// A task is re-opening this slot's connection.
    reconnecting: AtomicBool,
}

impl Pool {
    /// Open `size` connections of `class`; the first failure is the error (at start, an unreachable
    /// or misconfigured server must be reported, not retried forever).
    pub(super) async fn open(
        connector: Arc<Connector>,
        class: Class,
        size: usize,
    ) -> Result<Arc<Pool>, StoreError> {
        let pool = Arc::new(Pool {
            class,
            slots: (0..size).map(|_| Slot::default()).collect(),
            next: AtomicUsize::new(0),
            connector,
        });
        let opened: Vec<_> = (0..size)
            .map(|index| {
                let (pool, runtime) = (pool.clone(), pool.connector.runtime.clone());
                runtime.spawn(async move {
                    let conn = pool.connect(index).await?;
                    *pool.slots[index].conn.lock() = Some(conn);
                    Ok::<_, StoreError>(())
                })
            })
            .collect();
        for task in opened {
            task.await.map_err(|e| {
                StoreError::Unavailable(format!("opening a PostgreSQL connection: {e}"))
            })??;
        }
        Ok(pool)
    }

    /// A live connection, or `Unavailable` when none is (they are being re-opened).
    pub(super) fn get(self: &Arc<Self>) -> Result<Arc<Conn>, StoreError> {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let index = (start + i) % n;
            let live = {
                let slot = self.slots[index].conn.lock();
                slot.as_ref().filter(|c| !c.client.is_closed()).cloned()
            };
            match live {
                Some(conn) => return Ok(conn),
                None => self.reconnect(index),
            }
        }
        Err(StoreError::Unavailable(format!(
            "no live connection to PostgreSQL at {} (reconnecting)",
            self.connector.target
        )))
    }

    /// Open the connection of slot `index`: connect, start the task that drives it (and notices
    /// when it breaks), set the class, raise the epoch floor, prepare the statements.
    async fn connect(self: &Arc<Self>, index: usize) -> Result<Arc<Conn>, StoreError> {
        let target = &self.connector.target;
        let (mut client, connection) = self
            .connector
            .config
            .connect(NoTls)
            .await
            .map_err(|e| connect_error(target, &e))?;
        let pool = self.clone();
        self.connector.runtime.spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(target = %pool.connector.target, %error, "PostgreSQL connection broke");
            }
            // Closed, by the server or by us: re-open, unless the slot already moved on.
            pool.slots[index].conn.lock().take_if(|c| c.client.is_closed());
            pool.reconnect(index);
        });
        let setting = match self.class {
            Class::Durable => "SET synchronous_commit = on",
            Class::Lazy => "SET synchronous_commit = off",
        };
        client
            .batch_execute(setting)
            .await
            .map_err(|e| db_error(target, "setting synchronous_commit", &e))?;
        schema::raise_epoch_floor(&mut client, target).await?;
        let st = Statements::prepare(&client).await.map_err(|e| {
            db_error(
                target,
                "preparing statements (is the schema there? it is created at open)",
                &e,
            )
        })?;
        Ok(Arc::new(Conn { client, st }))
    }

    /// Start re-opening slot `index` in the background, unless that is under way already.
    fn reconnect(self: &Arc<Self>, index: usize) {
        let slot = &self.slots[index];
        if slot.reconnecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = self.clone();
        self.connector.runtime.spawn(async move {
            let mut pauses = crate::backoff::pauses(RECONNECT_MIN, pool.connector.reconnect_max);
            loop {
                let live = pool.slots[index]
                    .conn
                    .lock()
                    .as_ref()
                    .is_some_and(|c| !c.client.is_closed());
                if live {
                    break;
                }
                match pool.connect(index).await {
                    Ok(conn) => {
                        *pool.slots[index].conn.lock() = Some(conn);
                        tracing::info!(target = %pool.connector.target, class = ?pool.class, "PostgreSQL connection re-opened");
                        break;
                    }
                    Err(error) => {
                        let pause = pauses.next().unwrap_or(pool.connector.reconnect_max);
                        tracing::debug!(%error, ?pause, "PostgreSQL reconnect failed");
                        tokio::time::sleep(pause).await;
                    }
                }
            }
            pool.slots[index]
                .reconnecting
                .store(false, Ordering::Release);
        });
    }
}

/// Both classes.
pub(super) struct Pools {
    pub durable: Arc<Pool>,
    pub lazy: Arc<Pool>,
}

impl Pools {
    pub(super) async fn open(
        connector: Arc<Connector>,
        options: &PgOptions,
    ) -> Result<Pools, StoreError> {
        let durable = Pool::open(connector.clone(), Class::Durable, options.pool_size).await?;
        let lazy = Pool::open(connector, Class::Lazy, options.lazy_pool_size).await?;
        Ok(Pools { durable, lazy })
    }

    pub(super) fn get(&self, class: Class) -> Result<Arc<Conn>, StoreError> {
        match class {
            Class::Durable => self.durable.get(),
            Class::Lazy => self.lazy.get(),
        }
    }
}

/// The error of a failed connect, naming the problem: unreachable server, authentication, missing
/// database. tokio-postgres never puts the password in its errors.
pub(super) fn connect_error(target: &str, e: &tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let what = match code {
            "28P01" | "28000" => "authentication failed",
            "3D000" => "no such database",
            "53300" => "too many connections",
            "57P03" => "the server is starting up or shutting down",
            _ => "refused the connection",
        };
        return StoreError::Unavailable(format!(
            "PostgreSQL at {target}: {what} ({}: {})",
            code,
            db.message()
        ));
    }
    let cause = std::error::Error::source(e)
        .map(|s| s.to_string())
        .unwrap_or_else(|| e.to_string());
    StoreError::Unavailable(format!("cannot reach PostgreSQL at {target}: {cause}"))
}

/// The error of a failed statement: always `Unavailable` (the call may be retried), with the server's
/// message when there is one.
pub(super) fn db_error(target: &str, doing: &str, e: &tokio_postgres::Error) -> StoreError {
    let what = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None if e.is_closed() => "connection closed".to_owned(),
        None => e.to_string(),
    };
    StoreError::Unavailable(format!("PostgreSQL at {target}, {doing}: {what}"))
}
