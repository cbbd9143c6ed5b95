//! The SQLite backend: `database = "sqlite:<path>"`, one `rusqlite` connection per worker.
//!
//! The file is created (with its directory) when missing and opened in WAL mode, so that the
//! class's connections read while one of them writes; a writer waits up to [`BUSY_TIMEOUT`] for
//! another connection's write transaction (a session holding one open) before its statement fails
//! with SQLite's "database is locked" as a `SqlMessage`.
//!
//! Parameters are bound by name: SQLite reads `@id` natively, which is how SQL Server batches name
//! them. A statement naming a parameter the batch does not declare fails as SQL Server's does
//! (message 137, "Must declare the scalar variable").

use super::{first_keyword, Batch, Column, Connection, Database, Item, SqlType, Value};
use rusqlite::fallible_iterator::FallibleIterator as _;
use rusqlite::types::ValueRef;
use std::path::PathBuf;
use std::time::Duration;

/// How long a statement waits for another connection's lock before it fails.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A SQLite database file.
pub struct Sqlite {
    path: PathBuf,
}

impl Sqlite {
    pub fn new(path: PathBuf) -> Sqlite {
        Sqlite { path }
    }

    fn open(&self) -> Result<rusqlite::Connection, String> {
        let name = self.path.display();
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("sqlite:{name}: cannot create {}: {e}", dir.display()))?;
        }
        let conn = rusqlite::Connection::open(&self.path)
            .map_err(|e| format!("sqlite:{name}: cannot open: {e}"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .and_then(|()| conn.pragma_update(None, "journal_mode", "WAL"))
            .map_err(|e| format!("sqlite:{name}: cannot configure: {e}"))?;
        Ok(conn)
    }

    /// Run the class's `init_sql` once, before any worker starts.
    pub fn init(&self, sql: &str) -> Result<(), String> {
        self.open()?
            .execute_batch(sql)
            .map_err(|e| format!("sqlite:{}: {e}", self.path.display()))
    }
}

#[async_trait::async_trait(?Send)]
impl Database for Sqlite {
    async fn connect(&self) -> Result<Box<dyn Connection>, String> {
        Ok(Box::new(SqliteConnection { conn: self.open()? }))
    }

    fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }

    fn source(&self) -> &'static str {
        "sqlite"
    }
}

struct SqliteConnection {
    conn: rusqlite::Connection,
}

/// A statement's failure as the stream reports it.
fn message(number: i64, text: String) -> Item {
    Item::Message {
        class: 16,
        number,
        state: 1,
        line: 0,
        text,
    }
}

fn sql_error(e: &rusqlite::Error) -> Item {
    match e {
        rusqlite::Error::SqliteFailure(code, text) => message(
            code.extended_code.into(),
            text.clone().unwrap_or_else(|| code.to_string()),
        ),
        other => message(0, other.to_string()),
    }
}

// The calls block the connection's own thread, which serves nothing else.
#[async_trait::async_trait(?Send)]
impl Connection for SqliteConnection {
    async fn run(&mut self, batch: &Batch) -> Vec<Item> {
        let mut items = Vec::new();
        let mut statements = rusqlite::Batch::new(&self.conn, &batch.sql);
        loop {
            let mut stmt = match statements.next() {
                Ok(Some(stmt)) => stmt,
                Ok(None) => break,
                Err(e) => {
                    items.push(sql_error(&e));
                    break;
                }
            };
            if let Err(item) = bind(&mut stmt, batch) {
                items.push(item);
                break;
            }
            match run_statement(&mut stmt, &self.conn) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => {}
                Err(e) => {
                    items.push(sql_error(&e));
                    break;
                }
            }
        }
        items
    }

    async fn in_transaction(&mut self, _hint: &Batch, _was_open: bool) -> bool {
        !self.conn.is_autocommit()
    }

    async fn rollback(&mut self) -> Result<(), String> {
        if self.conn.is_autocommit() {
            return Ok(());
        }
        self.conn
            .execute_batch("ROLLBACK")
            .map_err(|e| e.to_string())
    }
}

/// Bind every parameter the statement names from the batch's declared ones.
fn bind(stmt: &mut rusqlite::Statement<'_>, batch: &Batch) -> Result<(), Item> {
    for i in 1..=stmt.parameter_count() {
        let Some(name) = stmt.parameter_name(i).map(str::to_string) else {
            return Err(message(
                0,
                "positional parameters (?) are not supported; name them (@id)".to_string(),
            ));
        };
        let bare = name.trim_start_matches(['@', ':', '$']);
        let Some(param) = batch.params.iter().find(|p| &p.name[1..] == bare) else {
            return Err(Item::Message {
                class: 15,
                number: 137,
                state: 2,
                line: 0,
                text: format!("Must declare the scalar variable \"@{bare}\"."),
            });
        };
        let bound = match &param.value {
            Value::Null => stmt.raw_bind_parameter(i, rusqlite::types::Null),
            Value::Bool(b) => stmt.raw_bind_parameter(i, i64::from(*b)),
            Value::Int(v) => stmt.raw_bind_parameter(i, *v),
            Value::Float(v) => stmt.raw_bind_parameter(i, *v),
            Value::Decimal(s) | Value::Text(s) => stmt.raw_bind_parameter(i, s.as_str()),
            Value::Bytes(b) => stmt.raw_bind_parameter(i, b.as_slice()),
        };
        bound.map_err(|e| sql_error(&e))?;
    }
    Ok(())
}

/// Run one bound statement: its rowset, its row count (INSERT, UPDATE, DELETE), or nothing.
fn run_statement(
    stmt: &mut rusqlite::Statement<'_>,
    conn: &rusqlite::Connection,
) -> rusqlite::Result<Option<Item>> {
    if stmt.column_count() == 0 {
        let changes = stmt.raw_execute()?;
        let dml = stmt
            .expanded_sql()
            .map(|s| first_keyword(&s))
            .is_some_and(|k| matches!(k.as_str(), "INSERT" | "UPDATE" | "DELETE" | "REPLACE"));
        let _ = conn;
        return Ok(dml.then_some(Item::RowCount(changes as u64)));
    }
    let declared: Vec<(String, Option<SqlType>)> = stmt
        .columns()
        .map(|c| (c.name().to_string(), c.decl_type().map(declared_type)))
        .collect();
    // DECIMAL(p,s): SQLite stores a REAL or INTEGER; written back with the declared scale.
    let scales: Vec<Option<usize>> = stmt
        .columns()
        .map(|c| c.decl_type().and_then(scale))
        .collect();
    let width = declared.len();
    let mut rows = Vec::new();
    let mut seen: Vec<Option<SqlType>> = vec![None; width];
    let mut wide_int = vec![false; width];
    let mut raw = stmt.raw_query();
    while let Some(row) = raw.next()? {
        let mut values = Vec::with_capacity(width);
        for i in 0..width {
            let v = match row.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(n) => {
                    seen[i].get_or_insert(SqlType::Int);
                    wide_int[i] |= i32::try_from(n).is_err();
                    Value::Int(n)
                }
                ValueRef::Real(f) => {
                    seen[i].get_or_insert(SqlType::Float);
                    Value::Float(f)
                }
                ValueRef::Text(t) => {
                    seen[i].get_or_insert(SqlType::NVarChar);
                    Value::Text(String::from_utf8_lossy(t).into_owned())
                }
                ValueRef::Blob(b) => {
                    seen[i].get_or_insert(SqlType::VarBinary);
                    Value::Bytes(b.to_vec())
                }
            };
            values.push(v);
        }
        rows.push(values);
    }
    let columns: Vec<Column> = declared
        .into_iter()
        .enumerate()
        .map(|(i, (name, decl))| {
            let mut ty = decl.or(seen[i]).unwrap_or(SqlType::NVarChar);
            if ty == SqlType::Int && wide_int[i] {
                ty = SqlType::BigInt;
            }
            Column { name, ty }
        })
        .collect();
    // A value of another storage class than its column's type is written in the column's type
    // where that is exact (SQLite's dynamic typing), and as text otherwise.
    for row in &mut rows {
        for ((v, c), scale) in row.iter_mut().zip(&columns).zip(&scales) {
            *v = conform(std::mem::replace(v, Value::Null), c.ty, *scale);
        }
    }
    Ok(Some(Item::RowSet { columns, rows }))
}

fn conform(v: Value, ty: SqlType, scale: Option<usize>) -> Value {
    match (v, ty) {
        (Value::Null, _) => Value::Null,
        (Value::Int(n), SqlType::Int | SqlType::BigInt | SqlType::Bit) => Value::Int(n),
        (Value::Int(n), SqlType::Float) => Value::Float(n as f64),
        (Value::Int(n), SqlType::Decimal) => match scale {
            Some(s) if s > 0 => Value::Decimal(format!("{n}.{}", "0".repeat(s))),
            _ => Value::Decimal(n.to_string()),
        },
        (Value::Float(f), SqlType::Float) => Value::Float(f),
        (Value::Float(f), SqlType::Decimal) if f.is_finite() => Value::Decimal(match scale {
            Some(s) => format!("{f:.s$}"),
            None => f.to_string(),
        }),
        (Value::Bytes(b), SqlType::VarBinary) => Value::Bytes(b),
        (Value::Bytes(b), _) => Value::Text(String::from_utf8_lossy(&b).into_owned()),
        (Value::Text(t), SqlType::VarBinary) => Value::Bytes(t.into_bytes()),
        (Value::Text(t), _) => Value::Text(t),
        (Value::Int(n), _) => Value::Text(n.to_string()),
        (Value::Float(f), _) => Value::Text(f.to_string()),
        (other, _) => other,
    }
}

/// A declared column type read by SQLite's affinity rules, refined to the SQL Server type a
/// client expects.
fn declared_type(decl: &str) -> SqlType {
    let d = decl.to_ascii_uppercase();
    if d.contains("BIGINT") {
        SqlType::BigInt
    } else if d.contains("BOOL") || d == "BIT" {
        SqlType::Bit
    } else if d.contains("INT") {
        SqlType::Int
    } else if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") {
        SqlType::NVarChar
    } else if d.contains("BLOB") || d.contains("BINARY") {
        SqlType::VarBinary
    } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
        SqlType::Float
    } else if d.contains("DATE") || d.contains("TIME") {
        SqlType::DateTime
    } else {
        SqlType::Decimal
    }
}

/// The scale of a `DECIMAL(p,s)` or `NUMERIC(p,s)` declaration.
fn scale(decl: &str) -> Option<usize> {
    let d = decl.to_ascii_uppercase();
    if !(d.contains("DEC") || d.contains("NUMERIC") || d.contains("MONEY")) {
        return None;
    }
    let inside = d.split_once('(')?.1.split_once(')')?.0;
    inside.split_once(',')?.1.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::batch::{self, SQL_NS};

    fn batch(sql: &str, params: &str) -> Batch {
        let xml = format!("<s:sqlbatch xmlns:s=\"{SQL_NS}\"><s:BatchCommands>{sql}</s:BatchCommands><s:Parameters>{params}</s:Parameters></s:sqlbatch>");
        batch::read(xml.as_bytes(), 1 << 20).expect("batch")
    }

    #[tokio::test]
    async fn statements_run_in_order_with_typed_results_and_stop_at_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::new(dir.path().join("sub/t.db"));
        db.init("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, amount DECIMAL(10,2))")
            .unwrap();
        let mut c = db.connect().await.unwrap();
        let items = c.run(&batch(
            "INSERT INTO t VALUES (1, @n, 2.5); INSERT INTO t VALUES (2, NULL, 3); SELECT id, name, amount FROM t ORDER BY id; SELECT * FROM missing; SELECT 1",
            "<SqlParameter name=\"n\" sqlDbType=\"NVarChar\"><Value>ann</Value></SqlParameter>",
        )).await;
        assert_eq!(items.len(), 4, "{items:?}");
        assert_eq!(items[0], Item::RowCount(1));
        let Item::RowSet { columns, rows } = &items[2] else {
            panic!("{items:?}")
        };
        assert_eq!(
            columns.iter().map(|c| c.ty).collect::<Vec<_>>(),
            [SqlType::Int, SqlType::NVarChar, SqlType::Decimal]
        );
        assert_eq!(
            rows[0],
            [
                Value::Int(1),
                Value::Text("ann".into()),
                Value::Decimal("2.50".into())
            ]
        );
        assert_eq!(
            rows[1][2],
            Value::Decimal("3.00".into()),
            "the declared scale"
        );
        assert_eq!(rows[1][1], Value::Null);
        assert!(
            matches!(&items[3], Item::Message { class: 16, text, .. } if text.contains("no such table"))
        );
    }

    #[tokio::test]
    async fn an_undeclared_parameter_is_sql_servers_message_137_and_a_transaction_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::new(dir.path().join("t.db"));
        let mut c = db.connect().await.unwrap();
        let items = c.run(&batch("SELECT @nope", "")).await;
        assert!(
            matches!(&items[..], [Item::Message { number: 137, .. }]),
            "{items:?}"
        );
        assert!(!c.in_transaction(&Batch::default(), false).await);
        c.run(&batch("BEGIN; CREATE TEMP TABLE x (a)", "")).await;
        assert!(c.in_transaction(&Batch::default(), false).await);
        c.rollback().await.unwrap();
        assert!(!c.in_transaction(&Batch::default(), false).await);
    }
}
