//! The PostgreSQL backend: `database = "postgres://user@host:port/db"`, one `tokio-postgres`
//! connection per worker, driven by the worker's own thread and runtime.
//!
//! SQL Server batches name their parameters `@name`; PostgreSQL numbers them (`$1`). A batch is
//! split into statements at top-level `;` (quotes, dollar quotes and comments respected) and each
//! declared `@name` becomes `$n` in the statement that uses it; an `@` that is not a declared
//! parameter stays as written (PostgreSQL's own `@` operators). Each statement is prepared with its
//! parameters' types (`Int` → int4, `BigInt` → int8, `Bit` → bool, `Float` → float8, `NVarChar` →
//! text, `VarBinary` → bytea; `Decimal` and `DateTime` travel as text cast to numeric and
//! timestamp) and run with the extended protocol, so results come back typed.
//!
//! Each connection keeps the statements it prepared (by text and parameter types, at most 256), so
//! a session repeating a statement pays one round trip for it, not two (measured in BENCHMARKS.md);
//! a schema change (CREATE, DROP, ALTER, DISCARD, SET, RESET) empties that cache, and a statement
//! that fails is prepared afresh next time.
//!
//! A transaction left open outside a session is found by asking the server (a `SAVEPOINT` probe,
//! one round trip), and only after a batch that contains `BEGIN` or `START`: nothing else opens a
//! transaction block in PostgreSQL.

use super::{first_keyword, Batch, Column, Connection, Database, Item, SqlType, Value};
use bytes::{BufMut, BytesMut};
use std::collections::HashMap;
use std::str::FromStr;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type};
use tokio_postgres::{Client, NoTls, Statement};

/// A PostgreSQL database.
pub struct Postgres {
    config: tokio_postgres::Config,
    display: String,
}

impl Postgres {
    pub fn new(url: &str) -> Result<Postgres, String> {
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| format!("database {:?}: {e}", redact(url)))?;
        Ok(Postgres {
            config,
            display: redact(url),
        })
    }

    async fn open(&self) -> Result<Client, String> {
        let (client, connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| format!("{}: cannot connect: {e}", self.display))?;
        // The connection's I/O runs on this thread's runtime; it ends when the client is dropped.
        tokio::spawn(connection);
        Ok(client)
    }

    /// Run the class's `init_sql` once, before any worker starts (on the caller's runtime).
    pub async fn init(&self, sql: &str) -> Result<(), String> {
        let (client, connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| format!("{}: cannot connect: {e}", self.display))?;
        let task = tokio::spawn(connection);
        let result = client
            .batch_execute(sql)
            .await
            .map_err(|e| format!("{}: {}", self.display, pg_text(&e)));
        drop(client);
        let _ = task.await;
        result
    }
}

/// The URL without its password, for logs and errors.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

#[async_trait::async_trait(?Send)]
impl Database for Postgres {
    async fn connect(&self) -> Result<Box<dyn Connection>, String> {
        Ok(Box::new(PgConnection {
            client: self.open().await?,
            prepared: HashMap::new(),
        }))
    }

    fn describe(&self) -> String {
        self.display.clone()
    }

    fn source(&self) -> &'static str {
        "postgres"
    }
}

struct PgConnection {
    client: Client,
    /// Statements prepared on this connection, by text and parameter types: a session repeating a
    /// statement pays one round trip for it, not two. Emptied when full.
    prepared: HashMap<(String, Vec<Type>), Statement>,
}

/// The most statements one connection keeps prepared.
const PREPARED_LIMIT: usize = 256;

/// A PostgreSQL error as the stream reports it: the server's message, its SQLSTATE in brackets.
fn pg_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("[{}] {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

fn message(text: String) -> Item {
    Item::Message {
        class: 16,
        number: 0,
        state: 1,
        line: 0,
        text,
    }
}

#[async_trait::async_trait(?Send)]
impl Connection for PgConnection {
    async fn run(&mut self, batch: &Batch) -> Vec<Item> {
        let mut items = Vec::new();
        for statement in split(&batch.sql) {
            let (text, used) = number_parameters(&statement, batch);
            if text.trim().is_empty() {
                continue;
            }
            let types: Vec<Type> = used.iter().map(|p| wire_type(p.ty)).collect();
            let key = (text.clone(), types.clone());
            let prepared = match self.prepared.get(&key) {
                Some(p) => p.clone(),
                None => match self.client.prepare_typed(&text, &types).await {
                    Ok(p) => {
                        if self.prepared.len() >= PREPARED_LIMIT {
                            self.prepared.clear();
                        }
                        self.prepared.insert(key, p.clone());
                        p
                    }
                    Err(e) => {
                        items.push(message(pg_text(&e)));
                        break;
                    }
                },
            };
            let params: Vec<Param<'_>> = used.iter().map(|p| Param(&p.value)).collect();
            let refs: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            if prepared.columns().is_empty() {
                match self.client.execute(&prepared, &refs).await {
                    Ok(n) => {
                        if is_dml(&text) {
                            items.push(Item::RowCount(n));
                        }
                        // A schema change can change what a prepared statement returns.
                        if changes_schema(&text) {
                            self.prepared.clear();
                        }
                    }
                    Err(e) => {
                        self.prepared.remove(&(text, types));
                        items.push(message(pg_text(&e)));
                        break;
                    }
                }
                continue;
            }
            let columns: Vec<Column> = prepared
                .columns()
                .iter()
                .map(|c| Column {
                    name: c.name().to_string(),
                    ty: sql_type(c.type_()),
                })
                .collect();
            let rows = match self.client.query(&prepared, &refs).await {
                Ok(rows) => rows,
                Err(e) => {
                    // Re-prepared next time (e.g. "cached plan must not change result type").
                    self.prepared.remove(&(text, types));
                    items.push(message(pg_text(&e)));
                    break;
                }
            };
            let mut out = Vec::with_capacity(rows.len());
            let mut failed = None;
            'rows: for row in &rows {
                let mut values = Vec::with_capacity(columns.len());
                for (i, column) in columns.iter().enumerate() {
                    match row.try_get::<_, Raw>(i) {
                        Ok(Raw(v)) => values.push(v),
                        Err(e) => {
                            failed = Some(format!(
                                "column {:?} ({}): {e}; cast it, e.g. ::text",
                                column.name,
                                prepared.columns()[i].type_()
                            ));
                            break 'rows;
                        }
                    }
                }
                out.push(values);
            }
            if let Some(text) = failed {
                items.push(message(text));
                break;
            }
            items.push(Item::RowSet { columns, rows: out });
        }
        items
    }

    async fn in_transaction(&mut self, hint: &Batch, was_open: bool) -> bool {
        // Asking costs a round trip: only when a statement could have begun or ended one (a
        // procedure's CALL may commit). A failed statement leaves a transaction open (aborted).
        const BEGINS: &[&str] = &["BEGIN", "START"];
        const ENDS: &[&str] = &["COMMIT", "ROLLBACK", "END", "ABORT", "CALL", "PREPARE"];
        let mentions = |words: &[&str]| {
            hint.sql
                .split(|c: char| !c.is_ascii_alphabetic())
                .any(|w| words.iter().any(|k| w.eq_ignore_ascii_case(k)))
        };
        if !mentions(if was_open { ENDS } else { BEGINS }) {
            return was_open;
        }
        match self.client.batch_execute("SAVEPOINT broker_probe").await {
            Ok(()) => {
                let _ = self
                    .client
                    .batch_execute("RELEASE SAVEPOINT broker_probe")
                    .await;
                true
            }
            // 25P01: no transaction; 25P02: a failed one, still open.
            Err(e) => e.code().map(|c| c.code()) == Some("25P02"),
        }
    }

    async fn rollback(&mut self) -> Result<(), String> {
        self.client
            .batch_execute("ROLLBACK")
            .await
            .map_err(|e| pg_text(&e))
    }
}

fn changes_schema(sql: &str) -> bool {
    matches!(
        first_keyword(sql).as_str(),
        "CREATE" | "DROP" | "ALTER" | "DISCARD" | "SET" | "RESET"
    )
}

fn is_dml(sql: &str) -> bool {
    matches!(
        first_keyword(sql).as_str(),
        "INSERT" | "UPDATE" | "DELETE" | "MERGE"
    )
}

/// The type a parameter is prepared with.
fn wire_type(ty: SqlType) -> Type {
    match ty {
        SqlType::Bit => Type::BOOL,
        SqlType::Int => Type::INT4,
        SqlType::BigInt => Type::INT8,
        SqlType::Float => Type::FLOAT8,
        SqlType::VarBinary => Type::BYTEA,
        SqlType::NVarChar | SqlType::Decimal | SqlType::DateTime => Type::TEXT,
    }
}

/// The SQL Server type a column of this PostgreSQL type is shown as.
fn sql_type(ty: &Type) -> SqlType {
    match *ty {
        Type::BOOL => SqlType::Bit,
        Type::INT2 | Type::INT4 | Type::OID => SqlType::Int,
        Type::INT8 => SqlType::BigInt,
        Type::FLOAT4 | Type::FLOAT8 => SqlType::Float,
        Type::NUMERIC => SqlType::Decimal,
        Type::BYTEA => SqlType::VarBinary,
        Type::TIMESTAMP | Type::TIMESTAMPTZ | Type::DATE => SqlType::DateTime,
        _ => SqlType::NVarChar,
    }
}

/// A parameter's value in PostgreSQL's binary format for the type it was prepared with.
#[derive(Debug)]
struct Param<'a>(&'a Value);

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match (self.0, ty) {
            (Value::Null, _) => return Ok(IsNull::Yes),
            (Value::Bool(b), &Type::BOOL) => out.put_u8(u8::from(*b)),
            (Value::Int(n), &Type::INT4) => out.put_i32(i32::try_from(*n)?),
            (Value::Int(n), &Type::INT8) => out.put_i64(*n),
            (Value::Float(f), &Type::FLOAT8) => out.put_f64(*f),
            (Value::Bytes(b), &Type::BYTEA) => out.put_slice(b),
            (Value::Text(t) | Value::Decimal(t), &Type::TEXT) => out.put_slice(t.as_bytes()),
            (v, ty) => return Err(format!("cannot send {v:?} as {ty}").into()),
        }
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

/// A column value read from PostgreSQL's binary format, whatever its type.
struct Raw(Value);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Raw, Box<dyn std::error::Error + Sync + Send>> {
        let be = |n: usize| -> Result<&[u8], Box<dyn std::error::Error + Sync + Send>> {
            raw.get(..n).ok_or_else(|| "truncated value".into())
        };
        Ok(Raw(match *ty {
            Type::BOOL => Value::Bool(be(1)?[0] != 0),
            Type::INT2 => Value::Int(i16::from_be_bytes(be(2)?.try_into()?).into()),
            Type::INT4 => Value::Int(i32::from_be_bytes(be(4)?.try_into()?).into()),
            Type::OID => Value::Int(u32::from_be_bytes(be(4)?.try_into()?).into()),
            Type::INT8 => Value::Int(i64::from_be_bytes(be(8)?.try_into()?)),
            Type::FLOAT4 => Value::Float(f32::from_be_bytes(be(4)?.try_into()?).into()),
            Type::FLOAT8 => Value::Float(f64::from_be_bytes(be(8)?.try_into()?)),
            Type::NUMERIC => Value::Decimal(numeric(raw)?),
            Type::BYTEA => Value::Bytes(raw.to_vec()),
            Type::TIMESTAMP | Type::TIMESTAMPTZ => {
                let micros = i64::from_be_bytes(be(8)?.try_into()?);
                Value::Text(timestamp(micros, *ty == Type::TIMESTAMPTZ))
            }
            Type::DATE => {
                let days = i32::from_be_bytes(be(4)?.try_into()?);
                let t = timestamp(i64::from(days) * 86_400_000_000, false);
                Value::Text(t[..10.min(t.len())].to_string())
            }
            Type::UUID => {
                let b = be(16)?;
                let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                Value::Text(format!(
                    "{}-{}-{}-{}-{}",
                    &hex[..8],
                    &hex[8..12],
                    &hex[12..16],
                    &hex[16..20],
                    &hex[20..]
                ))
            }
            Type::JSONB => Value::Text(String::from_utf8(raw.get(1..).unwrap_or(&[]).to_vec())?),
            Type::TEXT
            | Type::VARCHAR
            | Type::BPCHAR
            | Type::NAME
            | Type::UNKNOWN
            | Type::JSON
            | Type::XML => Value::Text(String::from_utf8(raw.to_vec())?),
            _ => return Err(format!("the sql adapter cannot read type {ty} yet").into()),
        }))
    }

    fn from_sql_null(_: &Type) -> Result<Raw, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Value::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// PostgreSQL's binary NUMERIC (base-10000 digits, weight, sign, display scale) as decimal text.
fn numeric(raw: &[u8]) -> Result<String, Box<dyn std::error::Error + Sync + Send>> {
    let word = |i: usize| -> Result<i16, Box<dyn std::error::Error + Sync + Send>> {
        let b = raw.get(2 * i..2 * i + 2).ok_or("truncated numeric")?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    };
    let ndigits = word(0)?.max(0) as usize;
    let weight = i32::from(word(1)?);
    let sign = word(2)? as u16;
    let dscale = word(3)?.max(0) as usize;
    if sign == 0xC000 {
        return Ok("NaN".to_string());
    }
    let digits: Vec<i16> = (0..ndigits)
        .map(|i| word(4 + i))
        .collect::<Result<_, _>>()?;
    let mut int = String::new();
    for w in 0..=weight.max(-1) {
        let d = usize::try_from(w)
            .ok()
            .and_then(|w| digits.get(w))
            .copied()
            .unwrap_or(0);
        if int.is_empty() {
            if d != 0 {
                int.push_str(&d.to_string());
            }
        } else {
            int.push_str(&format!("{d:04}"));
        }
    }
    if int.is_empty() {
        int.push('0');
    }
    let mut frac = String::new();
    let mut w = weight + 1;
    while frac.len() < dscale {
        let d = if w < 0 {
            0
        } else {
            digits.get(w as usize).copied().unwrap_or(0)
        };
        frac.push_str(&format!("{d:04}"));
        w += 1;
    }
    frac.truncate(dscale);
    let negative = sign == 0x4000;
    let mut s = String::with_capacity(int.len() + frac.len() + 2);
    if negative {
        s.push('-');
    }
    s.push_str(&int);
    if dscale > 0 {
        s.push('.');
        s.push_str(&frac);
    }
    Ok(s)
}

/// Microseconds since 2000-01-01 as an `xsd:dateTime` (with `Z` for timestamptz).
fn timestamp(micros: i64, utc: bool) -> String {
    const PG_EPOCH_FROM_UNIX_S: i64 = 946_684_800;
    let secs = micros.div_euclid(1_000_000) + PG_EPOCH_FROM_UNIX_S;
    let sub = micros.rem_euclid(1_000_000);
    let at = if secs >= 0 {
        std::time::UNIX_EPOCH + std::time::Duration::new(secs as u64, (sub * 1000) as u32)
    } else {
        std::time::UNIX_EPOCH - std::time::Duration::from_secs(secs.unsigned_abs())
            + std::time::Duration::from_micros(sub as u64)
    };
    let t = humantime::format_rfc3339_micros(at).to_string();
    let t = t.trim_end_matches('Z');
    let t = t.trim_end_matches('0').trim_end_matches('.');
    if utc {
        format!("{t}Z")
    } else {
        t.to_string()
    }
}

/// The batch's statements, split at `;` outside quotes, dollar quotes and comments.
pub fn split(sql: &str) -> Vec<String> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\'' | b'"' => {
                let q = b[i];
                i += 1;
                while i < b.len() {
                    if b[i] == q {
                        if b.get(i + 1) == Some(&q) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 1;
                i += 2;
                while i < b.len() && depth > 0 {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 1;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 1;
                    }
                    i += 1;
                }
                continue;
            }
            b'$' => {
                // $tag$ … $tag$ (a tag of letters, digits and _; `$1` is a parameter, not a tag).
                let tag_end = b[i + 1..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                    .map(|p| i + 1 + p);
                if let Some(e) = tag_end.filter(|&e| b[e] == b'$' && !b[i + 1].is_ascii_digit()) {
                    let tag = &sql[i..=e];
                    if let Some(close) = sql[e + 1..].find(tag) {
                        i = e + 1 + close + tag.len();
                        continue;
                    }
                    i = b.len();
                    continue;
                }
            }
            b';' => {
                out.push(sql[start..i].to_string());
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(sql[start.min(sql.len())..].to_string());
    out.retain(|s| !s.trim().is_empty());
    out
}

/// `@name` → `$n` for each declared parameter a statement uses (outside quotes and comments);
/// returns the statement and the parameters in `$n` order.
fn number_parameters<'a>(statement: &str, batch: &'a Batch) -> (String, Vec<&'a super::Param>) {
    let b = statement.as_bytes();
    let mut out = String::with_capacity(statement.len());
    let mut used: Vec<&super::Param> = Vec::new();
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        match b[i] {
            b'\'' | b'"' => {
                let q = b[i];
                i += 1;
                while i < b.len() && !(b[i] == q && b.get(i + 1) != Some(&q)) {
                    i += if b[i] == q { 2 } else { 1 };
                }
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'@' => {
                let name_end = b[i + 1..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                    .map_or(b.len(), |p| i + 1 + p);
                let name = &statement[i..name_end];
                let prev_ok = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
                if let Some(p) = batch
                    .params
                    .iter()
                    .find(|p| p.name == name)
                    .filter(|_| prev_ok)
                {
                    let n = match used.iter().position(|u| std::ptr::eq(*u, p)) {
                        Some(k) => k + 1,
                        None => {
                            used.push(p);
                            used.len()
                        }
                    };
                    out.push_str(&statement[copied..i]);
                    let cast = match p.ty {
                        SqlType::Decimal => "::numeric",
                        SqlType::DateTime => "::timestamp",
                        _ => "",
                    };
                    out.push_str(&format!("(${n}{cast})"));
                    copied = name_end;
                    i = name_end;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    out.push_str(&statement[copied.min(statement.len())..]);
    (out, used)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::Param as P;

    #[test]
    fn statements_split_outside_quotes_and_comments() {
        assert_eq!(
            split("SELECT ';'; SELECT $$a;b$$ -- c;d\n; /* e; */ SELECT 3;"),
            vec![
                "SELECT ';'",
                " SELECT $$a;b$$ -- c;d\n",
                " /* e; */ SELECT 3"
            ]
        );
    }

    #[test]
    fn declared_parameters_are_numbered_and_others_left_alone() {
        let batch = Batch {
            sql: String::new(),
            params: vec![
                P {
                    name: "@id".into(),
                    ty: SqlType::Int,
                    value: Value::Int(1),
                },
                P {
                    name: "@amt".into(),
                    ty: SqlType::Decimal,
                    value: Value::Decimal("2.5".into()),
                },
            ],
        };
        let (text, used) =
            number_parameters("SELECT @amt, '@id', x@id, @id, @id, a <@ b, @other", &batch);
        assert_eq!(
            text,
            "SELECT ($1::numeric), '@id', x@id, ($2), ($2), a <@ b, @other"
        );
        assert_eq!(used.len(), 2);
    }

    #[test]
    fn numerics_and_timestamps_read_as_postgresql_writes_them() {
        // 1234.50: ndigits 2, weight 0, sign +, dscale 2, digits [1234, 5000].
        let raw = [0, 2, 0, 0, 0, 0, 0, 2, 0x04, 0xD2, 0x13, 0x88];
        assert_eq!(numeric(&raw).unwrap(), "1234.50");
        // -0.05: ndigits 1, weight -1, sign -, dscale 2, digits [500].
        let raw = [0, 1, 0xFF, 0xFF, 0x40, 0, 0, 2, 0x01, 0xF4];
        assert_eq!(numeric(&raw).unwrap(), "-0.05");
        // 0 with scale 2.
        assert_eq!(numeric(&[0, 0, 0, 0, 0, 0, 0, 2]).unwrap(), "0.00");
        // 10000: ndigits 1, weight 1, digits [1].
        assert_eq!(numeric(&[0, 1, 0, 1, 0, 0, 0, 0, 0, 1]).unwrap(), "10000");
        assert_eq!(timestamp(0, false), "2000-01-01T00:00:00");
        assert_eq!(timestamp(1_500_000, true), "2000-01-01T00:00:01.5Z");
    }

    #[test]
    fn passwords_stay_out_of_descriptions() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/x"),
            "postgres://app@db:5432/x"
        );
    }
}
