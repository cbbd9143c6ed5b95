//! PostgreSQL for the end-to-end tests: a fresh database per test on the private cluster that
//! `scripts/test.sh` starts (`scripts/postgres.sh`).
//!
//! ```ignore
//! let db = broker_tests::postgres::fresh_database();
//! // Three brokers sharing sessions: each one's config gets `[store] url = db.store_url()`.
//! let config = format!("[store]\nurl = \"{}\"", db.store_url());
//! ```
//!
//! The cluster's URL comes from `COOKIE_STORE_TEST_PG`. Without it the test fails, saying to run
//! `scripts/test.sh`: a test that needs PostgreSQL never passes by skipping. The database is
//! dropped (with whatever is still connected to it) when the [`TestDatabase`] is.

use std::sync::atomic::{AtomicU32, Ordering};

/// The environment variable naming the test cluster (`postgres://postgres@127.0.0.1:PORT/postgres`).
pub const CLUSTER_URL_VAR: &str = "COOKIE_STORE_TEST_PG";

/// The URL of the test cluster, or a panic that says how to get one.
pub fn cluster_url() -> String {
    match std::env::var(CLUSTER_URL_VAR) {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "{CLUSTER_URL_VAR} is not set: this test needs the private PostgreSQL cluster that \
             `bash scripts/test.sh` starts (or set {CLUSTER_URL_VAR}=postgres://… to a server of \
             yours where the user may create databases)"
        ),
    }
}

/// A database of its own on the test cluster, empty until a broker (or store) opens it, dropped
/// when this value is.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
}

/// Create a fresh, empty database on the test cluster.
pub fn fresh_database() -> TestDatabase {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!(
        "broker_test_{}_{nanos}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    if let Err(e) = admin(format!("CREATE DATABASE {name}")) {
        panic!("creating test database {name}: {e}");
    }
    TestDatabase {
        url: with_database(&cluster_url(), &name),
        name,
    }
}

impl TestDatabase {
    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `postgres://…/NAME`, as a broker's `[store] url` takes it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The store URL for one broker of a test: the database URL with a small connection pool
    /// (several brokers share the cluster's connection limit on two cores) and quick reconnects.
    pub fn store_url(&self) -> String {
        let sep = if self.url.contains('?') { '&' } else { '?' };
        format!(
            "{}{sep}pool_size=2&lazy_pool_size=2&reconnect_max_ms=500",
            self.url
        )
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Err(e) = admin(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )) {
            eprintln!("leaving test database {} behind: {e}", self.name);
        }
    }
}

/// `url` with its database replaced by `dbname` (the query string kept).
fn with_database(url: &str, dbname: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let path_at = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    let mut out = format!("{}/{dbname}", &base[..path_at]);
    if !query.is_empty() {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// Run `sql` on the cluster's own database. On a thread with a runtime of its own, so it may be
/// called from plain tests and from inside a runtime alike.
fn admin(sql: String) -> Result<(), String> {
    let url = cluster_url();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("a runtime: {e}"))?;
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .map_err(|e| format!("connecting to {url}: {e}"))?;
            let driver = tokio::spawn(connection);
            let done = client
                .batch_execute(&sql)
                .await
                .map_err(|e| format!("{sql}: {e}"));
            drop(client);
            let _ = driver.await;
            done
        })
    })
    .join()
    .map_err(|_| "the admin thread panicked".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_in_a_url_is_replaced() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@h:1?sslmode=disable", "t2"),
            "postgres://u:p@h:1/t2?sslmode=disable"
        );
    }

    /// Needs the cluster: a fresh database exists until its guard drops.
    #[test]
    fn a_fresh_database_is_created_and_dropped() {
        let db = fresh_database();
        let name = db.name().to_owned();
        let exists = |name: &str| {
            let (url, name) = (cluster_url(), name.to_owned());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                        .await
                        .unwrap();
                    tokio::spawn(connection);
                    let rows = client
                        .query("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
                        .await
                        .unwrap();
                    !rows.is_empty()
                })
            })
            .join()
            .unwrap()
        };
        assert!(exists(&name));
        assert!(db.url().ends_with(&format!("/{name}")));
        drop(db);
        assert!(!exists(&name));
    }
}
