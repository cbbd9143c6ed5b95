//! `soapbench sql`: a `SELECT` of one row inside a sqlSession, through the broker to PostgreSQL,
//! against the same statement sent straight to PostgreSQL by a plain client (tokio-postgres, one
//! connection per virtual client, the statement prepared once): the floor. With `--sqlite`, the
//! same on a SQLite file, the floor being rusqlite on one connection (and thread) per client. Side by side in one run,
//! the targets alternating round by round, with the same number of virtual clients.
//!
//! Each broker client initiates one session (its first batch pins a connection), then sends the
//! batch `SELECT owner, balance FROM bench_account WHERE id = @id` with a typed parameter in a
//! closed loop. The floor client runs the same query with `$1`. Reported: operations per second,
//! p50 and p99, and the broker/floor ratios.

use super::floor::{self, Figures, LoopArgs, SoapConnection};
use super::hist::Histogram;
use base64::Engine as _;
use std::process::Command;

#[derive(clap::Args, Debug, Clone)]
pub struct SqlArgs {
    /// The PostgreSQL server (a database on it is created and dropped), e.g.
    /// postgres://postgres@127.0.0.1:5432/postgres. Default: $COOKIE_STORE_TEST_PG.
    #[arg(long)]
    pub postgres: Option<String>,
    /// A SQLite file in a temporary directory instead of PostgreSQL.
    #[arg(long, conflicts_with = "postgres")]
    pub sqlite: bool,
    #[command(flatten)]
    pub loops: LoopArgs,
}

const USER: &str = "bench";
const PASSWORD: &str = "bench";
const QUERY_PG: &str = "SELECT owner, balance FROM bench_account WHERE id = $1";
const QUERY_SQL: &str = "SELECT owner, balance FROM bench_account WHERE id = @id";
const ROWS: i32 = 1000;
const OPTIONS: &str = "http://schemas.microsoft.com/sqlserver/2004/SOAP/Options";

pub fn run(args: SqlArgs) -> Result<(), String> {
    let loops = &args.loops;
    let bin_dir = floor::bin_dir(loops)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let dir = tempfile::Builder::new()
        .prefix("soapbench-sql-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    // The broker's `database`, and what the floor connects to.
    let (base, db_name, db_url, floor_name) = if args.sqlite {
        let path = dir.path().join("bench.db");
        prepare_sqlite(&path)?;
        let url = format!("sqlite:{}", path.display());
        (String::new(), String::new(), url, "sqlite-direct")
    } else {
        let base = args
            .postgres
            .clone()
            .or_else(|| std::env::var("COOKIE_STORE_TEST_PG").ok())
            .ok_or("soapbench sql needs --postgres URL (or COOKIE_STORE_TEST_PG), or --sqlite")?;
        let db_name = format!("soapbench_sql_{}", std::process::id());
        let db_url = with_database(&base, &db_name);
        rt.block_on(prepare_database(&base, &db_name, &db_url))?;
        (base, db_name, db_url, "postgres-direct")
    };

    let hash = Command::new(bin_dir.join("broker"))
        .args(["hash-password", "--user", USER])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            if let Some(mut i) = c.stdin.take() {
                i.write_all(PASSWORD.as_bytes())?;
            }
            c.wait_with_output()
        })
        .map_err(|e| format!("broker hash-password: {e}"))?;
    let user_line = String::from_utf8_lossy(&hash.stdout).trim().to_string();
    let data = dir.path().join("data").display().to_string();
    let (addr, broker) = floor::start_broker("broker-sql", dir.path(), &bin_dir, |addr| {
        format!(
            r#"[broker]
listen = "{addr}"
data_dir = {data:?}
workers = {workers}

[log]
level = "warn"

[auth]
users = [{user_line:?}]

[[endpoint]]
path = "/sql"
dialect = "sqlsession"
sessions = true
session_timeout = "10m"

[[server_class]]
name = "db"
adapter = "sql"
database = {db_url:?}
context = "sensitive"
min_workers = 1
max_workers = {max}
request_timeout = "30s"

[[service]]
name = "sqlbatch"
endpoint = "/sql"
server_class = "db"
"#,
            workers = loops.broker_workers,
            max = loops.connections + 2,
        )
    })?;

    println!(
        "sql ({}): SELECT of one row, {} virtual clients, {} rounds of {:?} (+{:?} warm-up)",
        if args.sqlite { "SQLite" } else { "PostgreSQL" },
        loops.connections,
        loops.rounds,
        loops.duration,
        loops.warmup
    );
    let outcome = floor::rounds(loops, floor_name, |target| {
        rt.block_on(async {
            match target {
                floor::BROKER => through_broker(&addr, loops).await,
                _ if args.sqlite => sqlite_direct(&db_url, loops),
                _ => direct(&db_url, loops).await,
            }
        })
    });
    drop(broker);
    if !args.sqlite {
        rt.block_on(drop_database(&base, &db_name));
    }
    outcome
}

fn with_database(url: &str, name: &str) -> String {
    let (head, query) = url
        .split_once('?')
        .map_or((url, None), |(h, q)| (h, Some(q)));
    let base = head.rsplit_once('/').map_or(head, |(b, _)| b);
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

async fn pg(url: &str) -> Result<tokio_postgres::Client, String> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    tokio::spawn(conn);
    Ok(client)
}

async fn prepare_database(base: &str, name: &str, url: &str) -> Result<(), String> {
    let admin = pg(base).await?;
    let _ = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
        .await;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .map_err(|e| format!("CREATE DATABASE {name}: {e}"))?;
    let db = pg(url).await?;
    db.batch_execute(&format!(
        "CREATE TABLE bench_account (id INTEGER PRIMARY KEY, owner TEXT NOT NULL, balance NUMERIC(12,2) NOT NULL);
         INSERT INTO bench_account SELECT g, 'owner ' || g, g * 1.25 FROM generate_series(1, {ROWS}) g;"
    ))
    .await
    .map_err(|e| format!("creating bench_account: {e}"))
}

async fn drop_database(base: &str, name: &str) {
    if let Ok(admin) = pg(base).await {
        let _ = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
    }
}

fn prepare_sqlite(path: &std::path::Path) -> Result<(), String> {
    let db = rusqlite::Connection::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    db.execute_batch(&format!(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE bench_account (id INTEGER PRIMARY KEY, owner TEXT NOT NULL, balance NUMERIC(12,2) NOT NULL);
         WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {ROWS})
         INSERT INTO bench_account SELECT n, 'owner ' || n, n * 1.25 FROM g;"
    ))
    .map_err(|e| format!("creating bench_account: {e}"))
}

/// The SQLite floor: each client a thread with its own connection and the statement prepared
/// once (SQLite's calls block, so one thread each, as the broker's sql adapter has).
fn sqlite_direct(url: &str, loops: &LoopArgs) -> Result<Figures, String> {
    let path = url.trim_start_matches("sqlite:").to_string();
    let threads: Vec<_> = (0..loops.connections)
        .map(|i| {
            let (path, loops) = (path.clone(), loops.clone());
            std::thread::spawn(move || -> Result<(Histogram, u64), String> {
                let db = rusqlite::Connection::open(&path).map_err(|e| e.to_string())?;
                let mut stmt = db
                    .prepare(&QUERY_PG.replace("$1", "?1"))
                    .map_err(|e| e.to_string())?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .map_err(|e| e.to_string())?;
                Ok(rt.block_on(floor::measure(&loops, i, ROWS, |n| {
                    let ok = stmt
                        .query_row([n], |row| {
                            Ok((row.get::<_, String>(0)?, row.get::<_, f64>(1)?))
                        })
                        .is_ok();
                    std::future::ready(ok)
                })))
            })
        })
        .collect();
    let mut hist = Histogram::new();
    let mut errors = 0;
    for t in threads {
        let (h, e) = t.join().map_err(|_| "a sqlite client panicked")??;
        hist.merge(&h);
        errors += e;
    }
    Ok(Figures::of(&hist, errors, loops.duration))
}

async fn direct(url: &str, loops: &LoopArgs) -> Result<Figures, String> {
    floor::closed_loop(loops, |i| {
        let (url, loops) = (url.to_string(), loops.clone());
        async move {
            let client = pg(&url).await?;
            let stmt = client.prepare(QUERY_PG).await.map_err(|e| e.to_string())?;
            let client = std::rc::Rc::new(client);
            Ok(floor::measure(&loops, i, ROWS, |n| {
                let (client, stmt) = (client.clone(), stmt.clone());
                async move { client.query_one(&stmt, &[&n]).await.is_ok() }
            })
            .await)
        }
    })
    .await
}

fn select(id: i32) -> String {
    format!(
        "<sql:sqlbatch xmlns:sql=\"http://schemas.microsoft.com/sqlserver/2004/SOAP\"><sql:BatchCommands>{QUERY_SQL}</sql:BatchCommands><sql:Parameters><p:SqlParameter xmlns:p=\"http://schemas.microsoft.com/sqlserver/2004/SOAP/types/SqlParameter\" name=\"id\" sqlDbType=\"Int\"><p:Value>{id}</p:Value></p:SqlParameter></sql:Parameters></sql:sqlbatch>"
    )
}

async fn through_broker(addr: &str, loops: &LoopArgs) -> Result<Figures, String> {
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    floor::closed_loop(loops, |i| {
        let (addr, auth, loops) = (addr.to_string(), auth.clone(), loops.clone());
        async move {
            let mut conn = SoapConnection::open(&addr, "/sql", "\"sqlbatch\"", Some(auth)).await?;
            let initiate = format!("<o:sqlSession xmlns:o=\"{OPTIONS}\" initiate=\"true\"/>");
            let (ok, body) = conn.post(&initiate, &select(1)).await?;
            let id = floor::attribute_of(ok, &body, "sessionId")?;
            let header = format!("<o:sqlSession xmlns:o=\"{OPTIONS}\" sessionId=\"{id}\"/>");
            let result = floor::measure(&loops, i, ROWS, |n| {
                let reply = conn.post(&header, &select(n));
                async move {
                    matches!(reply.await, Ok((true, body)) if !body.windows(11).any(|w| w == b"SqlMessage "))
                }
            })
            .await;
            let terminate = format!("<o:sqlSession xmlns:o=\"{OPTIONS}\" sessionId=\"{id}\" terminate=\"true\"/>");
            let _ = conn.post(&terminate, "").await;
            Ok(result)
        }
    })
    .await
}
