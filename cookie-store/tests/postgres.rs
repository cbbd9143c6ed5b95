//! The PostgreSQL backend against a real server: the [`Store`] conformance suite
//! (`tests/conformance`), each test on a fresh database, and what only PostgreSQL has: schema
//! migration, several brokers (stores) on one database, concurrent sweepers, a server crash, an
//! outage.
//!
//! The server is the private cluster `scripts/test.sh` starts (`scripts/postgres.sh`), named by
//! `COOKIE_STORE_TEST_PG`; without it these tests fail, saying so. The crash and outage tests stop
//! and start that server (`COOKIE_STORE_TEST_PG_CTL`), so they hold [`SERVER`] exclusively while
//! every other test holds it shared.

mod conformance;
mod wait;

use cookie_store::postgres::{PgStore, SCHEMA_VERSION};
use cookie_store::{
    now_ms, Durability, SessionRecord, SessionStore, Store, StoreError, StoreHealth,
};
use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

const LONG: Duration = Duration::from_secs(30);

/// Store settings for tests: few connections (every test has its own store), quick reconnects.
const SETTINGS: &str = "pool_size=2&lazy_pool_size=2&reconnect_max_ms=200";

/// Shared by tests that use the server, exclusive for those that stop it.
static SERVER: LazyLock<Arc<RwLock<()>>> = LazyLock::new(|| Arc::new(RwLock::new(())));

// ---- a fresh database per test ----

/// The test cluster's URL, or a failure that says how to get one.
fn cluster_url() -> String {
    match std::env::var("COOKIE_STORE_TEST_PG") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "COOKIE_STORE_TEST_PG is not set: the PostgreSQL tests need the private cluster that \
             `bash scripts/test.sh` starts (or set COOKIE_STORE_TEST_PG=postgres://… yourself)"
        ),
    }
}

/// `url` with its database replaced by `dbname` (query string kept).
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

/// `url` with its user info replaced by `userinfo`.
fn with_user(url: &str, userinfo: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a postgres:// URL");
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let host = match rest[..authority_end].rfind('@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    format!("{scheme}://{userinfo}@{host}")
}

/// Run `sql` on the cluster's own database, on a thread of its own (callable from any context).
fn admin(sql: String) -> Result<(), String> {
    let url = cluster_url();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
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
    .map_err(|_| "admin thread panicked".to_string())?
}

/// A fresh, empty database, dropped (with whatever is still connected to it) when this is.
struct TestDb {
    url: String,
    name: String,
}

impl TestDb {
    fn new() -> TestDb {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "cookie_test_{}_{}_{}",
            std::process::id(),
            now_ms() % 1_000_000,
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        admin(format!("CREATE DATABASE {name}")).expect("creating a test database");
        TestDb {
            url: with_database(&cluster_url(), &name),
            name,
        }
    }

    /// The store URL of this database with the test settings and `extra` ones.
    fn store_url(&self, extra: &str) -> String {
        let sep = if self.url.contains('?') { '&' } else { '?' };
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!("&{extra}")
        };
        format!("{}{sep}{SETTINGS}{extra}", self.url)
    }

    fn open(&self, extra: &str) -> PgStore {
        PgStore::open(&self.store_url(extra)).expect("opening the PostgreSQL store")
    }

    /// Run `sql` in this database.
    async fn sql(&self, sql: &str) -> Vec<tokio_postgres::Row> {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("connecting to the test database");
        let driver = tokio::spawn(connection);
        let rows = client.query(sql, &[]).await.expect(sql);
        drop(client);
        let _ = driver.await;
        rows
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Err(e) = admin(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )) {
            eprintln!("leaving test database {}: {e}", self.name);
        }
    }
}

async fn shared() -> OwnedRwLockReadGuard<()> {
    SERVER.clone().read_owned().await
}

async fn exclusive() -> OwnedRwLockWriteGuard<()> {
    SERVER.clone().write_owned().await
}

/// The conformance factory: a store on a fresh database; the database goes after the store.
async fn postgres() -> (Arc<dyn Store>, (TestDb, OwnedRwLockReadGuard<()>)) {
    let server = shared().await;
    let db = TestDb::new();
    let store: Arc<dyn Store> = Arc::new(db.open(""));
    (store, (db, server))
}

conformance::store_conformance!(postgres);

// ---- helpers ----

fn record(id: &str, last_access_ms: u64, idle_timeout_ms: u64) -> SessionRecord {
    SessionRecord {
        id: id.into(),
        endpoint: "/soap".into(),
        dialect: "nonstop".into(),
        principal: None,
        client_ip: None,
        created_ms: last_access_ms,
        last_access_ms,
        idle_timeout_ms,
        transaction: None,
        subsession: None,
        dialect_state: vec![],
        expiry_indexed_ms: 0,
    }
}

/// Run the cluster's pg_ctl (as its owner) with `args`.
fn pg_ctl(args: &[&str]) {
    let ctl = std::env::var("COOKIE_STORE_TEST_PG_CTL").unwrap_or_else(|_| {
        panic!(
            "COOKIE_STORE_TEST_PG_CTL is not set: this test stops and starts the private cluster \
             of `bash scripts/test.sh`"
        )
    });
    let status = Command::new(&ctl)
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("running {ctl}: {e}"));
    assert!(status.success(), "{ctl} {args:?}: {status}");
}

/// Wait until `store` answers a ping again (it reconnects by itself), at most `within`.
async fn until_back(store: &PgStore, within: Duration) {
    wait::until(within, "the store to come back", move || async move {
        match store.ping().await {
            Err(StoreError::Unavailable(e)) => Err(e),
            Err(e) => panic!("the store failed otherwise than unavailable: {e}"),
            Ok(()) => Ok(()),
        }
    })
    .await;
}

// ---- schema ----

/// An empty database gets the schema at open; opening again (several brokers at once, or a
/// restart) changes nothing and keeps the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_is_created_once_and_reopening_keeps_everything() {
    let _server = shared().await;
    let db = TestDb::new();
    assert!(db
        .sql("SELECT 1 FROM pg_tables WHERE tablename = 'cookie_sessions'")
        .await
        .is_empty());

    // Three brokers starting together on the empty database: the advisory lock lets one migrate.
    let urls: Vec<String> = (0..3).map(|_| db.store_url("")).collect();
    let opened: Vec<_> = urls
        .into_iter()
        .map(|url| std::thread::spawn(move || PgStore::open(&url)))
        .collect();
    let stores: Vec<PgStore> = opened
        .into_iter()
        .map(|t| t.join().expect("open thread").expect("concurrent open"))
        .collect();
    let versions = db.sql("SELECT version FROM cookie_schema_version").await;
    assert_eq!(versions.len(), 1, "one version row");
    assert_eq!(versions[0].get::<_, i32>(0), SCHEMA_VERSION);

    stores[0]
        .create(&record("s1", now_ms(), 60_000), Durability::Durable)
        .await
        .unwrap();
    drop(stores);
    let again = db.open("");
    let (turn, r) = again.take_turn("s1", LONG, LONG).await.unwrap().unwrap();
    assert_eq!(r.id, "s1");
    again.release(turn).await.unwrap();
    assert_eq!(
        db.sql("SELECT version FROM cookie_schema_version")
            .await
            .len(),
        1
    );
}

/// A database migrated by a newer build is refused with a message that says so.
#[tokio::test]
async fn a_newer_schema_is_refused() {
    let _server = shared().await;
    let db = TestDb::new();
    drop(db.open(""));
    db.sql(&format!(
        "UPDATE cookie_schema_version SET version = {}",
        SCHEMA_VERSION + 1
    ))
    .await;
    let err = PgStore::open(&db.store_url(""))
        .err()
        .expect("a newer schema must be refused");
    let text = err.to_string();
    assert!(matches!(err, StoreError::Config(_)), "{text}");
    assert!(text.contains("newer"), "{text}");
}

/// Opening fails at once, and says why, for a wrong database or an unreachable server; the
/// password never shows.
#[tokio::test]
async fn open_errors_name_the_problem_without_the_password() {
    let _server = shared().await;
    let url = with_database(&cluster_url(), "cookie_no_such_database");
    let err = PgStore::open(&format!("{url}?{SETTINGS}"))
        .err()
        .expect("no such database");
    assert!(err.to_string().contains("no such database"), "{err}");

    // A role the server does not know: refused at authentication.
    let url = with_user(&cluster_url(), "cookie_no_such_role:hunter2");
    let err = PgStore::open(&format!("{url}?{SETTINGS}"))
        .err()
        .expect("no such role");
    let text = err.to_string();
    assert!(text.contains("authentication failed"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");

    // TLS demanded of a build without it: refused by name, before connecting.
    let err = PgStore::open(&format!("{}?sslmode=require", cluster_url()))
        .err()
        .expect("sslmode=require");
    assert!(
        matches!(err, StoreError::Config(ref m) if m.contains("TLS")),
        "{err}"
    );

    // A port on loopback where nothing listens (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let err = PgStore::open(&format!(
        "postgres://app:hunter2@127.0.0.1:{port}/x?{SETTINGS}"
    ))
    .err()
    .expect("nothing listens there");
    let text = err.to_string();
    assert!(
        matches!(err, StoreError::Unavailable(_)) && text.contains("cannot reach"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}

/// `open` and every call work outside any runtime's context and from several runtimes at once: a
/// waiter on one thread's runtime is woken by a release made on another's.
#[test]
fn callable_from_outside_and_from_several_runtimes() {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let here = runtime();
    let _server = here.block_on(shared());
    let db = TestDb::new();
    let store = Arc::new(db.open(""));
    here.block_on(store.create(&record("s1", now_ms(), 60_000), Durability::Durable))
        .unwrap();
    let (holder, _) = here
        .block_on(store.take_turn("s1", LONG, LONG))
        .unwrap()
        .unwrap();
    let store2 = store.clone();
    let other = std::thread::spawn(move || {
        runtime().block_on(async {
            let (turn, mut r) = store2.take_turn("s1", LONG, LONG).await.unwrap().unwrap();
            r.dialect_state = b"other runtime".to_vec();
            store2
                .write_and_release(turn, &r, Durability::Durable)
                .await
                .unwrap();
        })
    });
    wait::until_some(
        Duration::from_secs(10),
        "the other runtime's take_turn to queue",
        || (store.waiting("s1") >= 1).then_some(()),
    );
    here.block_on(store.release(holder)).unwrap();
    other.join().unwrap();
    let (turn, r) = here
        .block_on(store.take_turn("s1", LONG, LONG))
        .unwrap()
        .unwrap();
    assert_eq!(r.dialect_state, b"other runtime");
    here.block_on(store.release(turn)).unwrap();
    drop(store);
}

// ---- several brokers on one database ----

/// Two stores on one database are two brokers: the turn is exclusive across them (no update is
/// lost when both increment one counter under it), a waiter in the other process gets it when the
/// holder releases, and a holder whose lease ran out is fenced by the other broker's take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_brokers_contend_for_one_turn() {
    let _server = shared().await;
    let db = TestDb::new();
    let a: Arc<PgStore> = Arc::new(db.open(""));
    let b: Arc<PgStore> = Arc::new(db.open(""));
    a.create(&record("s1", now_ms(), 600_000), Durability::Durable)
        .await
        .unwrap();

    // B waits while A holds; A's release lets it in.
    let (held, _) = a.take_turn("s1", LONG, LONG).await.unwrap().unwrap();
    let b2 = b.clone();
    let waiter = tokio::spawn(async move { b2.take_turn("s1", LONG, LONG).await });
    // A negative check: 50 ms is the window in which a wrongly granted turn would show.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished(), "B got a turn A holds");
    a.release(held).await.unwrap();
    let (turn, _) = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("B never got the released turn")
        .unwrap()
        .unwrap()
        .unwrap();
    b.release(turn).await.unwrap();

    // Mutual exclusion: 2 × 4 tasks × 10 read-modify-writes of one counter.
    let tasks: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .flat_map(|store| (0..4).map(move |_| store.clone()))
        .map(|store| {
            tokio::spawn(async move {
                for _ in 0..10 {
                    let (turn, mut r) = store.take_turn("s1", LONG, LONG).await.unwrap().unwrap();
                    let n = r.dialect_state.first().copied().unwrap_or(0);
                    tokio::task::yield_now().await;
                    r.dialect_state = vec![n + 1];
                    store
                        .write_and_release(turn, &r, Durability::Lazy)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("contending tasks hung")
            .unwrap();
    }
    let (turn, r) = a.take_turn("s1", LONG, LONG).await.unwrap().unwrap();
    assert_eq!(r.dialect_state, [80], "lost updates under the turn");
    a.release(turn).await.unwrap();

    // Fencing across brokers: A's lease runs out, B takes the turn, A's writes are refused.
    let (old, seen) = a
        .take_turn("s1", Duration::from_millis(100), LONG)
        .await
        .unwrap()
        .unwrap();
    let started = Instant::now();
    let (new, _) = b.take_turn("s1", LONG, LONG).await.unwrap().unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(50),
        "B did not wait for the lease"
    );
    assert!(new.epoch > old.epoch, "epochs grow across brokers");
    let stale = SessionRecord {
        dialect_state: b"stale".to_vec(),
        ..seen.clone()
    };
    assert!(matches!(
        a.write(&old, &stale, Durability::Durable).await,
        Err(StoreError::Fenced { .. })
    ));
    assert!(matches!(
        a.write_and_release(old, &stale, Durability::Lazy).await,
        Err(StoreError::Fenced { .. })
    ));
    b.write_and_release(new, &seen, Durability::Durable)
        .await
        .unwrap();
    let (turn, r) = a
        .take_turn("s1", LONG, Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.dialect_state, [80]);
    a.release(turn).await.unwrap();
}

/// Brokers sweeping at once get disjoint batches of due sessions, and between them sweep every
/// one; rows claimed by a sweeper that died are free for the others once its claim lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sweepers_never_get_the_same_session() {
    let _server = shared().await;
    let db = TestDb::new();
    let stores: Vec<Arc<PgStore>> = (0..3)
        .map(|_| Arc::new(db.open("sweep_claim_ms=400")))
        .collect();
    let due_at = |i: u64| record(&format!("s{i:02}"), now_ms() - 10_000 - i, 1_000);
    for i in 0..60 {
        stores[0]
            .create(&due_at(i), Durability::Lazy)
            .await
            .unwrap();
    }
    // Three sweepers at once, each as the broker's: claim a batch of 7, take each turn, delete.
    let sweeps: Vec<_> = stores
        .iter()
        .cloned()
        .map(|store| {
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let batch = store.due_for_expiry(now_ms(), 7).await.unwrap();
                    if batch.is_empty() {
                        return mine;
                    }
                    for id in batch {
                        if let Some((turn, _)) =
                            store.take_turn(&id, LONG, Duration::ZERO).await.unwrap()
                        {
                            store.delete(turn, Durability::Lazy).await.unwrap();
                        }
                        mine.push(id);
                    }
                }
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for (i, sweep) in sweeps.into_iter().enumerate() {
        let ids = tokio::time::timeout(Duration::from_secs(60), sweep)
            .await
            .expect("a sweeper hung")
            .unwrap();
        for id in ids {
            assert!(
                seen.insert(id.clone()),
                "sweeper {i} got {id}, which another sweeper had"
            );
        }
    }
    assert_eq!(seen.len(), 60, "every due session went to some sweeper");

    // A sweeper claims everything due and dies: nobody else gets those rows until the claim lapses.
    for i in 0..10 {
        stores[0]
            .create(&due_at(i), Durability::Lazy)
            .await
            .unwrap();
    }
    assert_eq!(
        stores[0].due_for_expiry(now_ms(), 100).await.unwrap().len(),
        10
    );
    assert!(stores[1]
        .due_for_expiry(now_ms(), 100)
        .await
        .unwrap()
        .is_empty());
    // The claims lapse 400 ms after they were made; then another sweeper gets the rows.
    let other = &stores[1];
    wait::until(
        Duration::from_secs(10),
        "the lapsed claims to be free for another sweeper",
        move || async move {
            let claimed = other.due_for_expiry(now_ms(), 100).await.unwrap().len();
            if claimed == 10 {
                Ok(())
            } else {
                Err(format!("it got {claimed} of 10"))
            }
        },
    )
    .await;
}

// ---- crash and outage ----

/// A durable write survives a crash of the server (`pg_ctl stop -m immediate`: no shutdown
/// checkpoint, recovery from the WAL at start); the store reconnects by itself afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_write_survives_a_server_crash() {
    let _server = exclusive().await;
    let db = TestDb::new();
    let store = db.open("");
    store
        .create(&record("durable", now_ms(), 600_000), Durability::Durable)
        .await
        .unwrap();
    let (turn, mut r) = store
        .take_turn("durable", LONG, LONG)
        .await
        .unwrap()
        .unwrap();
    r.dialect_state = b"committed".to_vec();
    store
        .write_and_release(turn, &r, Durability::Durable)
        .await
        .unwrap();

    pg_ctl(&["stop", "-m", "immediate"]);
    pg_ctl(&["start"]);

    until_back(&store, Duration::from_secs(20)).await;
    let (turn, back) = store
        .take_turn("durable", LONG, LONG)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.dialect_state, b"committed");
    store.release(turn).await.unwrap();
    let other = db.open("");
    let (turn, back) = other
        .take_turn("durable", LONG, LONG)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.dialect_state, b"committed");
    other.release(turn).await.unwrap();
}

/// While the server is down, calls fail at once with `Unavailable` (none hangs); once it is back,
/// the same store works again without being reopened, and epochs keep growing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_unavailable_and_the_store_recovers_by_itself() {
    let _server = exclusive().await;
    let db = TestDb::new();
    let store = db.open("");
    store
        .create(&record("s1", now_ms(), 600_000), Durability::Durable)
        .await
        .unwrap();
    let (turn, _) = store.take_turn("s1", LONG, LONG).await.unwrap().unwrap();
    let before = turn.epoch;
    store.release(turn).await.unwrap();

    pg_ctl(&["stop", "-m", "fast"]);
    let calls = async {
        let ping = store.ping().await;
        let take = store.take_turn("s1", LONG, LONG).await;
        let create = store
            .create(&record("s2", now_ms(), 600_000), Durability::Durable)
            .await;
        (ping, take, create)
    };
    let (ping, take, create) = tokio::time::timeout(Duration::from_secs(20), calls)
        .await
        .expect("a call hung while the server was down");
    let down = |r: &Result<(), StoreError>| matches!(r, Err(StoreError::Unavailable(_)));
    assert!(down(&ping), "{ping:?}");
    assert!(matches!(take, Err(StoreError::Unavailable(_))), "{take:?}");
    assert!(down(&create), "{create:?}");

    pg_ctl(&["start"]);
    until_back(&store, Duration::from_secs(20)).await;
    let (turn, r) = store.take_turn("s1", LONG, LONG).await.unwrap().unwrap();
    assert_eq!(r.id, "s1");
    assert!(turn.epoch > before, "epochs keep growing across the outage");
    store.release(turn).await.unwrap();
    store
        .create(&record("s2", now_ms(), 600_000), Durability::Durable)
        .await
        .unwrap();
}
