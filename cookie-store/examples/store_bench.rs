//! A quick measure of the sled backend's two hot paths.
//!
//! 1. A continue request on one thread: `take_turn` + `write_and_release(Lazy)` with a later
//!    `last_access_ms`, round-robin over 1,000 sessions.
//! 2. Durable creates: one writer alone (a flush per write), then 64 concurrent writers sharing
//!    flushes through group commit.
//!
//! Run: `cargo run --release -p cookie-store --example store_bench [CONTINUES] [CREATES_PER_WRITER]`.
//! The figures depend on the disk's fsync cost and the CPU count; compare runs on one machine.

use cookie_store::{now_ms, Durability, SessionStore, SledStore};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod common;
use common::record;

const SESSIONS: usize = 1_000;
const WRITERS: usize = 64;
const LONG: Duration = Duration::from_secs(30);

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let continues = arg(1, 300_000);
    let creates_per_writer = arg(2, 50);
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SledStore::open(dir.path())?);

    // 1. Continue requests, one thread.
    let one_thread = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    one_thread.block_on(async {
        for i in 0..SESSIONS {
            store.create(&record(format!("c{i:04}")), Durability::Lazy).await?;
        }
        let ids: Vec<String> = (0..SESSIONS).map(|i| format!("c{i:04}")).collect();
        let started = Instant::now();
        for n in 0..continues {
            let id = &ids[n % SESSIONS];
            let Some((turn, mut r)) = store.take_turn(id, LONG, LONG).await? else {
                return Err(format!("session {id} vanished").into());
            };
            r.last_access_ms = now_ms();
            store.write_and_release(turn, &r, Durability::Lazy).await?;
        }
        let took = started.elapsed();
        println!(
            "continue (take_turn + write_and_release Lazy), 1 thread: {:.0} ops/s ({:.2} us each, {continues} ops)",
            continues as f64 / took.as_secs_f64(),
            took.as_secs_f64() * 1e6 / continues as f64
        );
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;

    // 2. Durable creates: alone, then 64 at a time.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let alone = creates_per_writer * 4;
        let flushes_before = store.flush_count();
        let started = Instant::now();
        for i in 0..alone {
            store.create(&record(format!("a{i:06}")), Durability::Durable).await?;
        }
        let took = started.elapsed();
        println!(
            "durable create, 1 writer: {:.0} creates/s, {:.2} flushes per write ({alone} creates)",
            alone as f64 / took.as_secs_f64(),
            (store.flush_count() - flushes_before) as f64 / alone as f64
        );

        let flushes_before = store.flush_count();
        let started = Instant::now();
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0..creates_per_writer {
                        store.create(&record(format!("g{w:02}-{i:06}")), Durability::Durable).await?;
                    }
                    Ok::<_, cookie_store::StoreError>(())
                })
            })
            .collect();
        for writer in writers {
            writer.await??;
        }
        let took = started.elapsed();
        let total = WRITERS * creates_per_writer;
        println!(
            "durable create, {WRITERS} concurrent writers: {:.0} creates/s, {:.3} flushes per write ({total} creates)",
            total as f64 / took.as_secs_f64(),
            (store.flush_count() - flushes_before) as f64 / total as f64
        );
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    Ok(())
}
