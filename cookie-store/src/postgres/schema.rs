//! The tables, and how a database gets them: stepwise migrations under an advisory lock.
//!
//! ## Tables (schema version 1)
//! - `cookie_sessions`: one row per session. `record` is the encoded [`crate::SessionRecord`];
//!   beside it, the columns the store queries by: `expiry_ms` (where the expiry index files the
//!   session, the record's `expiry_indexed_ms`; the column is the truth and overrides the copy in
//!   the record on every read), `expires_ms` (the real deadline), `endpoint` and `client_ip` (the
//!   counting index), and the turn: `epoch` (from the `cookie_epochs` sequence) and `lease_until`
//!   (NULL when nobody holds the turn). `sweep_owner`/`sweep_until` are a sweeper's claim on a due row.
//!   `fillfactor = 70` leaves room in each page so that the updates of a continue request, which
//!   touch no indexed column, stay HOT (no index writes).
//! - `cookie_sessions_expiry (expiry_ms, id)`: the expiry index, read front first.
//! - `cookie_sessions_clients (endpoint, client_ip, expiry_ms)`: the counting index.
//! - `cookie_brokers`: the registry; `cookie_decisions`: the commit-decision log.
//! - `cookie_schema_version`: one row, the version of all of the above.
//!
//! ## Migrations
//! [`migrate`] runs in one transaction holding a transaction-scoped advisory lock, so brokers
//! starting together take turns: the first creates or upgrades, the others find the work done. Each
//! step of [`STEPS`] moves the schema one version up; a database already at a version newer than
//! this build knows is refused (an older broker must not write rows whose meaning it does not know).

use crate::StoreError;
use tokio_postgres::Client;

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i32 = STEPS.len() as i32;

/// Key of the advisory lock serialising migrations ("cookie_s" in ASCII).
const MIGRATION_LOCK: i64 = 0x636f_6f6b_6965_5f73;

/// Step `i` takes the schema from version `i` to `i + 1`.
const STEPS: &[&str] = &[
    // 0 → 1: the first schema.
    "CREATE TABLE cookie_sessions (
         id          text PRIMARY KEY,
         record      bytea NOT NULL,
         endpoint    text NOT NULL,
         client_ip   text,
         expiry_ms   bigint NOT NULL,
         expires_ms  bigint NOT NULL,
         epoch       bigint NOT NULL DEFAULT 0,
         lease_until timestamptz,
         sweep_owner text,
         sweep_until timestamptz
     ) WITH (fillfactor = 70);
     CREATE INDEX cookie_sessions_expiry ON cookie_sessions (expiry_ms, id);
     CREATE INDEX cookie_sessions_clients ON cookie_sessions (endpoint, client_ip, expiry_ms);
     CREATE SEQUENCE cookie_epochs AS bigint CACHE 1;
     CREATE TABLE cookie_brokers (
         id             text PRIMARY KEY,
         instance       text NOT NULL,
         advertise      text NOT NULL,
         lease_until_ms bigint NOT NULL
     );
     CREATE TABLE cookie_decisions (
         txn_id     text PRIMARY KEY,
         session_id text NOT NULL,
         decision   bytea NOT NULL
     );",
];

/// Bring the database's schema to [`SCHEMA_VERSION`], or refuse a newer one. `target` names the
/// database in messages.
pub(super) async fn migrate(client: &mut Client, target: &str) -> Result<(), StoreError> {
    let failed = |doing: &str, e: tokio_postgres::Error| super::pool::db_error(target, doing, &e);
    let tx = client
        .transaction()
        .await
        .map_err(|e| failed("starting the schema migration", e))?;
    tx.batch_execute(&format!(
        "SET LOCAL synchronous_commit = on;
         SELECT pg_advisory_xact_lock({MIGRATION_LOCK});"
    ))
    .await
    .map_err(|e| failed("locking the schema", e))?;
    // Looked up before creating: CREATE … IF NOT EXISTS needs the CREATE privilege even when the
    // table is there, and a broker's role may have been granted only the rows of a database a
    // DBA migrated.
    let versioned: bool = tx
        .query_one(
            "SELECT to_regclass('cookie_schema_version') IS NOT NULL",
            &[],
        )
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| failed("looking for the schema", e))?;
    if !versioned {
        tx.batch_execute(
            "CREATE TABLE cookie_schema_version (
                 version     integer NOT NULL,
                 migrated_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(|e| failed("creating the schema version table", e))?;
    }
    let found: i32 = tx
        .query_one(
            "SELECT COALESCE(max(version), 0) FROM cookie_schema_version",
            &[],
        )
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| failed("reading the schema version", e))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::Config(format!(
            "PostgreSQL database {target} has cookie-store schema version {found}, newer than \
             this build's {SCHEMA_VERSION}: it was upgraded by a newer broker; run that version \
             (or newer) here too"
        )));
    }
    if found == SCHEMA_VERSION {
        // Nothing to do; the rollback just ends the transaction and frees the lock.
        return Ok(());
    }
    for (step, sql) in STEPS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(sql)
            .await
            .map_err(|e| failed(&format!("migrating the schema to version {}", step + 1), e))?;
    }
    tx.execute("DELETE FROM cookie_schema_version", &[])
        .await
        .map_err(|e| failed("recording the schema version", e))?;
    tx.execute(
        "INSERT INTO cookie_schema_version (version) VALUES ($1)",
        &[&SCHEMA_VERSION],
    )
    .await
    .map_err(|e| failed("recording the schema version", e))?;
    tx.commit()
        .await
        .map_err(|e| failed("committing the schema migration", e))?;
    tracing::info!(
        database = target,
        from = found,
        to = SCHEMA_VERSION,
        "cookie-store schema migrated"
    );
    Ok(())
}

/// How far every new connection moves the epoch sequence ahead before it grants a turn.
///
/// Turns are taken with `synchronous_commit = off`, and PostgreSQL WAL-logs a sequence only every 32
/// values: a server crash can lose the last unflushed values and hand them out again, and an
/// epoch handed out twice would let a stale holder's write through. A crash breaks every
/// connection, so each new connection first moves the sequence this far ahead in a durable
/// transaction, far beyond anything a lost WAL tail can hold. The cost is epoch space: 2^31
/// connection openings over the database's life.
pub(super) const EPOCH_FLOOR_STEP: i64 = 1 << 32;

/// Move the epoch sequence [`EPOCH_FLOOR_STEP`] ahead, durably (see there).
pub(super) async fn raise_epoch_floor(client: &mut Client, target: &str) -> Result<(), StoreError> {
    let failed = |e: tokio_postgres::Error| {
        super::pool::db_error(target, "raising the epoch floor of a new connection", &e)
    };
    let tx = client.transaction().await.map_err(failed)?;
    // txid_current gives the transaction an ID, so its commit is a WAL record that waits for the
    // flush; setval's own record is written before it.
    tx.batch_execute(&format!(
        "SET LOCAL synchronous_commit = on;
         SELECT txid_current();
         SELECT setval('cookie_epochs', nextval('cookie_epochs') + {EPOCH_FLOOR_STEP});"
    ))
    .await
    .map_err(failed)?;
    tx.commit().await.map_err(failed)
}
