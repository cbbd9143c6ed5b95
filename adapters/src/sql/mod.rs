//! # The sql adapter: a pool of database connections as a server class
//!
//! SQL Server's SOAP sessions existed for the connection behind them: temporary tables, SET options
//! and an open transaction outlive the request that made them. The broker already has the thing
//! that keeps state with one backend worker for a session's life, the *dialog*, so a sql class is
//! a context-sensitive pool whose workers are **database connections**:
//!
//! - a session's first batch opens a dialog and pins one connection to the session; every later
//!   batch of the session runs on it (and another broker forwards to the one that holds it);
//! - the session's end (terminate, expiry, an operator) aborts the dialog: `DIALOG-ABORT` rolls back
//!   what is open and closes the connection; the worker opens a fresh one for its next user;
//! - a batch outside a session runs on any idle connection and may not leave a transaction open:
//!   one that does is rolled back before the reply, and the reply says so;
//! - `max_workers` is the class's connection limit; with every connection pinned or busy a request
//!   waits in the queue (`queue_limit`, 0 to refuse at once) and then gets `QueueFull`.
//!
//! Each connection is served by its own thread (`server.rs`) speaking the same wire protocol as a
//! process worker over an in-memory link (`inproc.rs`), so that the pool's dispatcher (pinning,
//! limits, restarts, reaping) is the one every adapter shares and is tested once. The cost of the
//! link is two header blocks encoded and decoded per batch (the payloads are handed over, not
//! copied), small next to a database round trip.
//!
//! The layers:
//!
//! - `batch.rs`: the request payload (`sqlbatch` with `BatchCommands` and typed `Parameters`) read
//!   into a [`Batch`];
//! - `stream.rs`: the result items written as SQL Server's `SqlResultStream`;
//! - `sqlite.rs`: the SQLite backend ([`Database`] and [`Connection`] for `sqlite:<path>`);
//! - `postgres.rs`: the PostgreSQL backend (`postgres://…`);
//! - `server.rs`: one connection's wire-protocol loop.

mod batch;
mod postgres;
mod server;
mod sqlite;
mod stream;

pub use batch::{Batch, BatchError, Param};
pub(crate) use postgres::redact;
pub use stream::write_result_stream;

use async_trait::async_trait;
use std::sync::{Arc, Mutex};
use tokio::runtime::Handle;

use crate::pool::{Connector, Link, PoolClass};
use crate::{AdapterError, AdapterKind, ServerClassConfig, WorkerId};

/// The SQL types a parameter or a column can have, by SQL Server's names (`sqlDbType`), with the
/// XSD type their values are written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlType {
    Bit,
    Int,
    BigInt,
    Float,
    Decimal,
    NVarChar,
    VarBinary,
    DateTime,
}

impl SqlType {
    /// The type from a `sqlDbType` attribute (case-sensitive, as SQL Server's enumeration is).
    pub fn from_db_type(name: &str) -> Option<SqlType> {
        Some(match name {
            "Bit" => SqlType::Bit,
            "TinyInt" | "SmallInt" | "Int" => SqlType::Int,
            "BigInt" => SqlType::BigInt,
            "Float" | "Real" => SqlType::Float,
            "Decimal" | "Money" | "SmallMoney" => SqlType::Decimal,
            "NVarChar" | "VarChar" | "NChar" | "Char" | "NText" | "Text" | "Xml" => {
                SqlType::NVarChar
            }
            "VarBinary" | "Binary" | "Image" => SqlType::VarBinary,
            "DateTime" | "SmallDateTime" | "Date" | "DateTime2" => SqlType::DateTime,
            _ => return None,
        })
    }

    /// The `sqltypes:` name written in a rowset's schema.
    pub fn sql_name(self) -> &'static str {
        match self {
            SqlType::Bit => "bit",
            SqlType::Int => "int",
            SqlType::BigInt => "bigint",
            SqlType::Float => "float",
            SqlType::Decimal => "decimal",
            SqlType::NVarChar => "nvarchar",
            SqlType::VarBinary => "varbinary",
            SqlType::DateTime => "datetime",
        }
    }
}

/// One value in a parameter or a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// A decimal kept as its text, so that no digit is lost on the way.
    Decimal(String),
    Text(String),
    Bytes(Vec<u8>),
}

/// A column of a rowset.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub ty: SqlType,
}

/// One entry of the result stream, in the order the batch produced them.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    RowSet {
        columns: Vec<Column>,
        rows: Vec<Vec<Value>>,
    },
    /// Rows affected by an INSERT, UPDATE or DELETE.
    RowCount(u64),
    /// An error or a warning, as SQL Server reports them: severity class (16: an error the user can
    /// fix, 10 and below: information), number, state and text.
    Message {
        class: u8,
        number: i64,
        state: u8,
        line: u32,
        text: String,
    },
}

/// The statement's first keyword, upper case, after comments and a `WITH` clause's name.
pub(crate) fn first_keyword(sql: &str) -> String {
    let mut s = sql.trim_start();
    loop {
        if let Some(rest) = s.strip_prefix("--") {
            s = rest.split_once('\n').map_or("", |(_, r)| r).trim_start();
        } else if let Some(rest) = s.strip_prefix("/*") {
            s = rest.split_once("*/").map_or("", |(_, r)| r).trim_start();
        } else {
            break;
        }
    }
    s.split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("")
        .to_ascii_uppercase()
}

#[cfg(test)]
#[test]
fn first_keywords_skip_comments() {
    assert_eq!(first_keyword("  -- c\n /* x */ insert into t"), "INSERT");
    assert_eq!(first_keyword("CREATE TABLE"), "CREATE");
}

/// A database the class connects to: where, and how to open one connection.
#[async_trait(?Send)]
pub trait Database: Send + Sync + 'static {
    /// Open one connection, on the thread (and its runtime) that will serve it. The error names
    /// the database.
    async fn connect(&self) -> Result<Box<dyn Connection>, String>;
    /// What to call it in logs and `HELLO` (`sqlite:/path/sample.db`; never a password).
    fn describe(&self) -> String;
    /// The `Source` of its messages (`sqlite`, `postgres`).
    fn source(&self) -> &'static str;
}

/// One open connection, served by a thread of its own (SQLite's calls block it; PostgreSQL's
/// client runs on that thread's runtime).
#[async_trait(?Send)]
pub trait Connection {
    /// Run every statement of the batch in order, stopping at the first error, which becomes the
    /// stream's last [`Item::Message`]. SQL errors never fail the call.
    async fn run(&mut self, batch: &Batch) -> Vec<Item>;
    /// Whether a transaction is open on the connection after `hint`, the batch just run;
    /// `was_open`: whether one was open before it. A backend for which asking costs a round trip
    /// skips asking when no statement of the batch could have changed the answer.
    async fn in_transaction(&mut self, hint: &Batch, was_open: bool) -> bool;
    /// Roll back whatever is open.
    async fn rollback(&mut self) -> Result<(), String>;
}

/// A server class whose workers are connections to one database.
pub type SqlClass = PoolClass<SqlConnector>;

impl SqlClass {
    /// Open the first connection (running `init_sql` on it) and return the class.
    pub async fn start(
        config: ServerClassConfig,
        runtime: Handle,
    ) -> Result<Arc<SqlClass>, AdapterError> {
        let AdapterKind::Sql {
            database,
            init_sql,
            methods,
        } = config.adapter.clone()
        else {
            return Err(AdapterError::Unsupported {
                class: config.name.clone(),
                reason: "not a sql adapter configuration".to_string(),
            });
        };
        let unreachable = |reason: String| AdapterError::Unreachable {
            class: config.name.clone(),
            reason,
        };
        let db: Arc<dyn Database> = if let Some(path) = database.strip_prefix("sqlite:") {
            let sqlite = Arc::new(sqlite::Sqlite::new(path.into()));
            if let Some(sql) = init_sql {
                let sqlite = sqlite.clone();
                tokio::task::spawn_blocking(move || sqlite.init(&sql))
                    .await
                    .map_err(|e| unreachable(format!("init_sql: {e}")))?
                    .map_err(|e| unreachable(format!("init_sql: {e}")))?;
            }
            sqlite
        } else {
            let pg = Arc::new(postgres::Postgres::new(&database).map_err(unreachable)?);
            if let Some(sql) = init_sql {
                pg.init(&sql)
                    .await
                    .map_err(|e| unreachable(format!("init_sql: {e}")))?;
            }
            pg
        };
        let connector = SqlConnector {
            db,
            methods: methods.into(),
            max_frame: config.max_frame_bytes,
            threads: Mutex::new(0),
        };
        PoolClass::launch(config, connector, runtime, true).await
    }
}

/// Opens a class's connections: each on a thread of its own, behind an in-memory link.
pub struct SqlConnector {
    db: Arc<dyn Database>,
    /// The class's named web methods.
    methods: Arc<[crate::SqlMethod]>,
    max_frame: usize,
    /// Connection threads started, for their names.
    threads: Mutex<u64>,
}

#[async_trait]
impl Connector for SqlConnector {
    async fn connect(&self, worker: &WorkerId) -> Result<Link, String> {
        let (link, server_side) = crate::inproc::link(&self.db.describe(), worker);
        let db = self.db.clone();
        let methods = self.methods.clone();
        let max_frame = self.max_frame;
        let (opened_tx, opened_rx) = tokio::sync::oneshot::channel();
        let n = {
            let mut n = self.threads.lock().unwrap_or_else(|p| p.into_inner());
            *n += 1;
            *n
        };
        std::thread::Builder::new()
            .name(format!("sql-conn-{n}"))
            .spawn(move || server::run(db, server_side, max_frame, methods, opened_tx))
            .map_err(|e| format!("cannot start a connection thread: {e}"))?;
        opened_rx
            .await
            .map_err(|_| "the connection thread ended before opening".to_string())??;
        Ok(link)
    }
}
