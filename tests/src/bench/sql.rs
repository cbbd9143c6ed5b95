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

use super::hist::Histogram;
use super::procs::{free_port, Launch};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct SqlArgs {
    /// The PostgreSQL server (a database on it is created and dropped), e.g.
    /// postgres://postgres@127.0.0.1:5432/postgres. Default: $COOKIE_STORE_TEST_PG.
    #[arg(long)]
    pub postgres: Option<String>,
    /// A SQLite file in a temporary directory instead of PostgreSQL.
    #[arg(long, conflicts_with = "postgres")]
    pub sqlite: bool,
    /// Virtual clients: sessions through the broker, connections for the floor.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Where `broker` is (default: the directory of this executable).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// HTTP worker threads of the broker (`broker.workers`).
    #[arg(long, default_value_t = 1)]
    pub broker_workers: usize,
}

const USER: &str = "bench";
const PASSWORD: &str = "bench";
const QUERY_PG: &str = "SELECT owner, balance FROM bench_account WHERE id = $1";
const QUERY_SQL: &str = "SELECT owner, balance FROM bench_account WHERE id = @id";
const ROWS: i32 = 1000;

struct Figures {
    ops: f64,
    p50: u64,
    p99: u64,
    errors: u64,
}

pub fn run(args: SqlArgs) -> Result<(), String> {
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .parent()
            .map(PathBuf::from)
            .ok_or("no directory for this executable")?,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let dir = tempfile::Builder::new()
        .prefix("soapbench-sql-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    // The broker's `database`, and what the floor connects to.
    let (base, db_name, db_url, floor) = if args.sqlite {
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
    let addr = format!("127.0.0.1:{}", free_port()?);
    let config = format!(
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
        data = dir.path().join("data").display().to_string(),
        workers = args.broker_workers,
        max = args.connections + 2,
    );
    let config_path = dir.path().join("broker.toml");
    std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
    let launch = Launch {
        name: "broker-sql",
        dir: dir.path(),
        cpus: None,
        marker: None,
    };
    let mut cmd = Command::new(bin_dir.join("broker"));
    cmd.arg("--config").arg(&config_path);
    let broker = super::procs::start_server(&launch, cmd, addr.clone())?;

    println!(
        "sql ({}): SELECT of one row, {} virtual clients, {} rounds of {:?} (+{:?} warm-up)",
        if args.sqlite { "SQLite" } else { "PostgreSQL" },
        args.connections,
        args.rounds,
        args.duration,
        args.warmup
    );
    let mut results: Vec<(&str, Figures)> = Vec::new();
    for round in 1..=args.rounds {
        let order: [&str; 2] = if round % 2 == 1 {
            [floor, "broker-session"]
        } else {
            ["broker-session", floor]
        };
        for target in order {
            let f = rt.block_on(async {
                match target {
                    "broker-session" => through_broker(&addr, &args).await,
                    _ if args.sqlite => sqlite_direct(&db_url, &args),
                    _ => direct(&db_url, &args).await,
                }
            })?;
            println!(
                "round {round}  {target:<16} {:>8.0} ops/s  p50 {:>7.3} ms  p99 {:>7.3} ms  errors {}",
                f.ops,
                f.p50 as f64 / 1e6,
                f.p99 as f64 / 1e6,
                f.errors
            );
            results.push((target, f));
        }
    }
    let mean = |t: &str, get: &dyn Fn(&Figures) -> f64| {
        let v: Vec<f64> = results
            .iter()
            .filter(|(n, _)| *n == t)
            .map(|(_, f)| get(f))
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let (bo, po) = (mean("broker-session", &|f| f.ops), mean(floor, &|f| f.ops));
    let (b99, p99) = (
        mean("broker-session", &|f| f.p99 as f64),
        mean(floor, &|f| f.p99 as f64),
    );
    let (b50, p50) = (
        mean("broker-session", &|f| f.p50 as f64),
        mean(floor, &|f| f.p50 as f64),
    );
    println!("| target | ops/s | p50 | p99 |\n| --- | --- | --- | --- |");
    println!(
        "| {floor} (floor) | {po:.0} | {:.3} ms | {:.3} ms |",
        p50 / 1e6,
        p99 / 1e6
    );
    println!(
        "| broker-session | {bo:.0} | {:.3} ms | {:.3} ms |",
        b50 / 1e6,
        b99 / 1e6
    );
    println!(
        "ratios broker/floor: throughput {:.2}x, p50 {:.2}x, p99 {:.2}x",
        bo / po.max(1.0),
        b50 / p50.max(1.0),
        b99 / p99.max(1.0)
    );
    drop(broker);
    if !args.sqlite {
        rt.block_on(drop_database(&base, &db_name));
    }
    Ok(())
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

/// Run `clients` closed loops for warm-up + duration; each loop's `op` returns its success.
async fn closed_loop<F, Fut>(clients: usize, args: &SqlArgs, make: F) -> Result<Figures, String>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(Histogram, u64), String>> + 'static,
{
    let mut tasks = Vec::new();
    for i in 0..clients {
        tasks.push(tokio::task::spawn_local(make(i)));
    }
    let mut hist = Histogram::new();
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await.map_err(|e| e.to_string())??;
        hist.merge(&h);
        errors += e;
    }
    Ok(Figures {
        ops: hist.total as f64 / args.duration.as_secs_f64(),
        p50: hist.quantile(0.50),
        p99: hist.quantile(0.99),
        errors,
    })
}

/// One virtual client's closed loop: `op(row id)` until warm-up plus duration have passed; the
/// operations that start after the warm-up are timed (successes) or counted (failures).
async fn measure<F, Fut>(
    warmup: Duration,
    duration: Duration,
    first: usize,
    mut op: F,
) -> (Histogram, u64)
where
    F: FnMut(i32) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    let (measure_from, end) = (start + warmup, start + warmup + duration);
    let mut hist = Histogram::new();
    let mut errors = 0;
    let mut n = first as i32;
    loop {
        let t = Instant::now();
        if t >= end {
            return (hist, errors);
        }
        n = n % ROWS + 1;
        let ok = op(n).await;
        if t >= measure_from {
            if ok {
                hist.record(t.elapsed().as_nanos() as u64);
            } else {
                errors += 1;
            }
        }
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
fn sqlite_direct(url: &str, args: &SqlArgs) -> Result<Figures, String> {
    let path = url.trim_start_matches("sqlite:").to_string();
    let threads: Vec<_> = (0..args.connections)
        .map(|i| {
            let (path, warmup, duration) = (path.clone(), args.warmup, args.duration);
            std::thread::spawn(move || -> Result<(Histogram, u64), String> {
                let db = rusqlite::Connection::open(&path).map_err(|e| e.to_string())?;
                let mut stmt = db
                    .prepare(&QUERY_PG.replace("$1", "?1"))
                    .map_err(|e| e.to_string())?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .map_err(|e| e.to_string())?;
                Ok(rt.block_on(measure(warmup, duration, i, |n| {
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
    Ok(Figures {
        ops: hist.total as f64 / args.duration.as_secs_f64(),
        p50: hist.quantile(0.50),
        p99: hist.quantile(0.99),
        errors,
    })
}

async fn direct(url: &str, args: &SqlArgs) -> Result<Figures, String> {
    let local = tokio::task::LocalSet::new();
    let (warmup, duration) = (args.warmup, args.duration);
    local
        .run_until(closed_loop(args.connections, args, |i| {
            let url = url.to_string();
            async move {
                let client = pg(&url).await?;
                let stmt = client.prepare(QUERY_PG).await.map_err(|e| e.to_string())?;
                let client = std::rc::Rc::new(client);
                let (hist, errors) = measure(warmup, duration, i, |n| {
                    let (client, stmt) = (client.clone(), stmt.clone());
                    async move { client.query_one(&stmt, &[&n]).await.is_ok() }
                })
                .await;
                Ok((hist, errors))
            }
        }))
        .await
}

fn envelope(header: &str, body: &str) -> Bytes {
    Bytes::from(format!(
        "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\"><soapenv:Header>{header}</soapenv:Header><soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"
    ))
}

fn select(id: i32) -> String {
    format!(
        "<sql:sqlbatch xmlns:sql=\"http://schemas.microsoft.com/sqlserver/2004/SOAP\"><sql:BatchCommands>{QUERY_SQL}</sql:BatchCommands><sql:Parameters><p:SqlParameter xmlns:p=\"http://schemas.microsoft.com/sqlserver/2004/SOAP/types/SqlParameter\" name=\"id\" sqlDbType=\"Int\"><p:Value>{id}</p:Value></p:SqlParameter></sql:Parameters></sql:sqlbatch>"
    )
}

const OPTIONS: &str = "http://schemas.microsoft.com/sqlserver/2004/SOAP/Options";

async fn through_broker(addr: &str, args: &SqlArgs) -> Result<Figures, String> {
    let local = tokio::task::LocalSet::new();
    let (warmup, duration) = (args.warmup, args.duration);
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    local
        .run_until(closed_loop(args.connections, args, |i| {
            let addr = addr.to_string();
            let auth = auth.clone();
            async move {
                let stream = tokio::net::TcpStream::connect(&addr)
                    .await
                    .map_err(|e| format!("{addr}: {e}"))?;
                let _ = stream.set_nodelay(true);
                let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::task::spawn_local(conn);
                let mut post = |body: Bytes| {
                    let req = hyper::Request::post("/sql")
                        .header(hyper::header::HOST, addr.as_str())
                        .header(hyper::header::CONTENT_TYPE, "text/xml; charset=utf-8")
                        .header("SOAPAction", "\"sqlbatch\"")
                        .header(hyper::header::AUTHORIZATION, auth.as_str())
                        .body(Full::new(body));
                    let fut = req.map(|r| sender.send_request(r));
                    async move {
                        let resp = fut.map_err(|e| e.to_string())?.await.map_err(|e| e.to_string())?;
                        let ok = resp.status().is_success();
                        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
                        Ok::<_, String>((ok, body))
                    }
                };
                let (ok, body) = post(envelope(&format!("<o:sqlSession xmlns:o=\"{OPTIONS}\" initiate=\"true\"/>"), &select(1))).await?;
                let text = String::from_utf8_lossy(&body);
                let id = text
                    .split("sessionId=\"")
                    .nth(1)
                    .and_then(|s| s.split('"').next())
                    .filter(|_| ok)
                    .ok_or_else(|| format!("initiate failed: {text}"))?
                    .to_string();
                let header = format!("<o:sqlSession xmlns:o=\"{OPTIONS}\" sessionId=\"{id}\"/>");
                let (hist, errors) = measure(warmup, duration, i, |n| {
                    let reply = post(envelope(&header, &select(n)));
                    async move {
                        matches!(reply.await, Ok((true, body)) if !body.windows(11).any(|w| w == b"SqlMessage "))
                    }
                })
                .await;
                let _ = post(envelope(&format!("<o:sqlSession xmlns:o=\"{OPTIONS}\" sessionId=\"{id}\" terminate=\"true\"/>"), "")).await;
                Ok((hist, errors))
            }
        }))
        .await
}
