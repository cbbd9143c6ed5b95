//! The PostgreSQL backend's hot paths beside sled's, with the same workload on both.
//!
//! 1. Continue requests: 32 sessions, one task each, every task looping `take_turn` +
//!    `write_and_release(Lazy)` with a later `last_access_ms` (two round trips on PostgreSQL).
//! 2. Durable creates: 32 tasks creating sessions with `Durability::Durable`.
//! 3. Durable deletes: 32 tasks taking the turn of those sessions and deleting them durably.
//!
//! Phases 1 and 2 run for a fixed time after a warm-up, phase 3 until everything phase 2 created
//! is gone; each reports operations per second. The caller
//! runtime has two worker threads; on a 2-core machine it shares the CPUs with the PostgreSQL server
//! (and the store's own runtime), so compare figures of one machine only.
//!
//! Run (the URL of a database the user may create tables in; `scripts/postgres.sh start` gives one):
//! `cargo run --release -p cookie-store --example pg_bench -- postgres://… [SECONDS]`

use cookie_store::{now_ms, Durability, SledStore, Store};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod common;
use common::record;

const TASKS: usize = 32;
const LONG: Duration = Duration::from_secs(30);
const WARMUP: Duration = Duration::from_secs(1);

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Run `op(task, n)` in `TASKS` concurrent loops: `WARMUP` unmeasured, then `measure`. Returns ops/s.
async fn phase<F, Fut>(measure: Duration, op: F) -> Result<f64, Error>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), Error>> + Send,
{
    let op = Arc::new(op);
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (op, counting, stop, done) =
                (op.clone(), counting.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    op(task, n).await?;
                    // sled's calls can complete without ever yielding; without this the loops
                    // would starve the runtime's timer (and never see `stop`).
                    tokio::task::yield_now().await;
                    n += 1;
                    if counting.load(Ordering::Relaxed) {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok::<_, Error>(())
            })
        })
        .collect();
    tokio::time::sleep(WARMUP).await;
    counting.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(measure).await;
    let counted = done.load(Ordering::Relaxed);
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    Ok(counted as f64 / took.as_secs_f64())
}

async fn run(name: &str, store: Arc<dyn Store>, measure: Duration) -> Result<(), Error> {
    // 1. Continue requests on 32 sessions.
    for task in 0..TASKS {
        store
            .create(&record(format!("c{task:02}")), Durability::Lazy)
            .await?;
    }
    let s = store.clone();
    let continues = phase(measure, move |task, _| {
        let store = s.clone();
        async move {
            let id = format!("c{task:02}");
            let (turn, mut r) = store
                .take_turn(&id, LONG, LONG)
                .await?
                .ok_or("a session vanished")?;
            r.last_access_ms = now_ms();
            store.write_and_release(turn, &r, Durability::Lazy).await?;
            Ok(())
        }
    })
    .await?;
    println!(
        "{name:<10} continue (take_turn + write_and_release Lazy, {TASKS} sessions): {continues:>8.0} ops/s"
    );

    // 2. Durable creates.
    let s = store.clone();
    let creates = phase(measure, move |task, n| {
        let store = s.clone();
        async move {
            store
                .create(&record(format!("d{task:02}-{n:08}")), Durability::Durable)
                .await?;
            Ok(())
        }
    })
    .await?;
    println!("{name:<10} durable create ({TASKS} tasks): {creates:>8.0} ops/s");

    // 3. Durable deletes of everything phase 2 created: each task walks its own IDs until the
    //    first missing one. Fixed work, timed.
    let started = Instant::now();
    let deleters: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut deleted = 0u64;
                loop {
                    let id = format!("d{task:02}-{deleted:08}");
                    let Some((turn, _)) = store.take_turn(&id, LONG, LONG).await? else {
                        return Ok::<_, Error>(deleted);
                    };
                    store.delete(turn, Durability::Durable).await?;
                    tokio::task::yield_now().await;
                    deleted += 1;
                }
            })
        })
        .collect();
    let mut deleted = 0;
    for d in deleters {
        deleted += d.await??;
    }
    let deletes = deleted as f64 / started.elapsed().as_secs_f64();
    println!("{name:<10} durable take_turn + delete ({TASKS} tasks): {deletes:>8.0} ops/s");
    Ok(())
}

fn main() -> Result<(), Error> {
    let url = std::env::args()
        .nth(1)
        .ok_or("usage: pg_bench postgres://… [SECONDS]")?;
    let seconds: u64 = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let measure = Duration::from_secs(seconds);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    let dir = tempfile::tempdir()?;
    let sled: Arc<dyn Store> = Arc::new(SledStore::open(dir.path())?);
    runtime.block_on(run("sled", sled, measure))?;

    let pg: Arc<dyn Store> = cookie_store::open(&url)?;
    runtime.block_on(run("postgres", pg, measure))?;
    Ok(())
}
