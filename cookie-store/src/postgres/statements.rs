//! Every statement the store runs, prepared once per connection so that each call is one round trip.
//!
//! Conventions: times the records carry (expiry deadlines) are the brokers' milliseconds since the
//! epoch, passed in; turn leases use the database's clock (`clock_timestamp()`), the one clock all
//! brokers share. A turn statement names its turn as `id = $1 AND epoch = $2 AND lease_until IS NOT
//! NULL`: zero rows means the turn is no longer held (fenced). The expiry filing rules are those of
//! [`crate::expiry`], written in SQL so that no write needs to read the row first:
//! - a write moves `expiry_ms` to the real deadline when the filed one has passed or the real one
//!   became earlier (`refiled_deadline`);
//! - a release moves it when the filed one has passed and the session is still alive.
//!
//! Moving `expiry_ms` also drops a sweeper's claim on the row, which was about the old deadline.

use tokio_postgres::{Client, Error, Statement};

/// The turn grant of `take`, `write_handover` and `release_handover`: record, epoch, filed deadline.
const GRANT: &str = "RETURNING record, epoch, expiry_ms";

/// The filing rule of a write, `$6` being the record's real deadline and `$7` now (broker ms).
const WRITE_SET: &str = "record = $3, endpoint = $4, client_ip = $5, expires_ms = $6,
         expiry_ms = CASE WHEN expiry_ms <= $7 OR $6 < expiry_ms THEN $6 ELSE expiry_ms END,
         sweep_until = CASE WHEN expiry_ms <= $7 OR $6 < expiry_ms THEN NULL ELSE sweep_until END";

/// The filing rule of a release, `$3` being now (broker ms).
const RELEASE_SET: &str = "expiry_ms = CASE WHEN expiry_ms <= $3 AND expires_ms > $3 THEN expires_ms ELSE expiry_ms END,
         sweep_until = CASE WHEN expiry_ms <= $3 AND expires_ms > $3 THEN NULL ELSE sweep_until END";

const HELD: &str = "WHERE id = $1 AND epoch = $2 AND lease_until IS NOT NULL";

/// The prepared statements of one connection.
pub(super) struct Statements {
    /// `$1` id, `$2` record, `$3` deadline, `$4` endpoint, `$5` client IP.
    pub create: Statement,
    /// `$1` id, `$2` lease ms. One row: (record, epoch, expiry_ms, NULL) when granted, or
    /// (NULL, NULL, NULL, lease ms left) when someone holds it; no row when there is no session.
    pub take: Statement,
    /// `$1` id, `$2` epoch, `$3` record, `$4` endpoint, `$5` client IP, `$6` deadline, `$7` now.
    pub write: Statement,
    /// As `write`, and the turn is given up.
    pub write_release: Statement,
    /// As `write`, and the turn goes straight to a waiter of this process: `$8` its lease ms.
    pub write_handover: Statement,
    /// `$1` id, `$2` epoch, `$3` now.
    pub release: Statement,
    /// As `release`, handing the turn to a waiter of this process: `$4` its lease ms.
    pub release_handover: Statement,
    /// `$1` id, `$2` epoch.
    pub delete: Statement,
    /// `$1` now, `$2` limit, `$3` sweeper, `$4` claim ms.
    pub due: Statement,
    /// `$1` endpoint, `$2` now, `$3` limit.
    pub count_all: Statement,
    /// `$1` endpoint, `$2` client IP, `$3` now, `$4` limit.
    pub count_ip: Statement,
    pub register: Statement,
    pub live_brokers: Statement,
    pub log_decision: Statement,
    pub forget_decision: Statement,
    pub pending_decisions: Statement,
    pub ping: Statement,
    /// On a `synchronous_commit = on` connection: a commit record whose flush covers every WAL
    /// record before it, including other connections' lazy commits.
    pub flush: Statement,
}

impl Statements {
    pub(super) async fn prepare(client: &Client) -> Result<Self, Error> {
        let lease = "clock_timestamp() + $2::bigint * interval '1 millisecond'";
        Ok(Self {
            create: client
                .prepare(
                    "INSERT INTO cookie_sessions (id, record, expiry_ms, expires_ms, endpoint, client_ip)
                     VALUES ($1, $2, $3, $3, $4, $5)
                     ON CONFLICT (id) DO NOTHING",
                )
                .await?,
            take: client
                .prepare(&format!(
                    "WITH taken AS (
                         UPDATE cookie_sessions
                            SET epoch = nextval('cookie_epochs'), lease_until = {lease}
                          WHERE id = $1 AND (lease_until IS NULL OR lease_until <= clock_timestamp())
                         {GRANT}
                     )
                     SELECT record, epoch, expiry_ms, NULL::bigint FROM taken
                     UNION ALL
                     SELECT NULL, NULL, NULL,
                            GREATEST(0, COALESCE(
                                (extract(epoch FROM lease_until - clock_timestamp()) * 1000)::bigint, 0))
                       FROM cookie_sessions
                      WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM taken)"
                ))
                .await?,
            write: client
                .prepare(&format!("UPDATE cookie_sessions SET {WRITE_SET} {HELD}"))
                .await?,
            write_release: client
                .prepare(&format!(
                    "UPDATE cookie_sessions SET {WRITE_SET}, lease_until = NULL {HELD}"
                ))
                .await?,
            write_handover: client
                .prepare(&format!(
                    "UPDATE cookie_sessions
                        SET {WRITE_SET}, epoch = nextval('cookie_epochs'),
                            lease_until = clock_timestamp() + $8::bigint * interval '1 millisecond'
                      {HELD} {GRANT}"
                ))
                .await?,
            release: client
                .prepare(&format!(
                    "UPDATE cookie_sessions SET {RELEASE_SET}, lease_until = NULL {HELD}"
                ))
                .await?,
            release_handover: client
                .prepare(&format!(
                    "UPDATE cookie_sessions
                        SET {RELEASE_SET}, epoch = nextval('cookie_epochs'),
                            lease_until = clock_timestamp() + $4::bigint * interval '1 millisecond'
                      {HELD} {GRANT}"
                ))
                .await?,
            delete: client
                .prepare(&format!("DELETE FROM cookie_sessions {HELD}"))
                .await?,
            due: client
                .prepare(
                    "WITH due AS (
                         SELECT id FROM cookie_sessions
                          WHERE expiry_ms <= $1
                            AND (sweep_until IS NULL OR sweep_until <= clock_timestamp()
                                 OR sweep_owner = $3)
                          ORDER BY expiry_ms, id
                          LIMIT $2
                          FOR UPDATE SKIP LOCKED
                     )
                     UPDATE cookie_sessions s
                        SET sweep_owner = $3,
                            sweep_until = clock_timestamp() + $4::bigint * interval '1 millisecond'
                       FROM due
                      WHERE s.id = due.id
                     RETURNING s.id, s.expiry_ms",
                )
                .await?,
            count_all: client
                .prepare(
                    "SELECT count(*) FROM (
                         SELECT 1 FROM cookie_sessions
                          WHERE endpoint = $1 AND expires_ms > $2
                          LIMIT $3) live",
                )
                .await?,
            count_ip: client
                .prepare(
                    "SELECT count(*) FROM (
                         SELECT 1 FROM cookie_sessions
                          WHERE endpoint = $1 AND client_ip = $2 AND expires_ms > $3
                          LIMIT $4) live",
                )
                .await?,
            register: client
                .prepare(
                    "INSERT INTO cookie_brokers (id, instance, advertise, lease_until_ms)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (id) DO UPDATE
                        SET instance = EXCLUDED.instance, advertise = EXCLUDED.advertise,
                            lease_until_ms = EXCLUDED.lease_until_ms",
                )
                .await?,
            live_brokers: client
                .prepare(
                    "SELECT id, instance, advertise, lease_until_ms FROM cookie_brokers
                      WHERE lease_until_ms > $1 ORDER BY id",
                )
                .await?,
            log_decision: client
                .prepare(
                    "INSERT INTO cookie_decisions (txn_id, session_id, decision) VALUES ($1, $2, $3)
                     ON CONFLICT (txn_id) DO UPDATE
                        SET session_id = EXCLUDED.session_id, decision = EXCLUDED.decision",
                )
                .await?,
            forget_decision: client
                .prepare("DELETE FROM cookie_decisions WHERE txn_id = $1")
                .await?,
            pending_decisions: client
                .prepare("SELECT txn_id, decision FROM cookie_decisions ORDER BY txn_id")
                .await?,
            ping: client.prepare("SELECT 1").await?,
            flush: client.prepare("SELECT txid_current()").await?,
        })
    }
}
