//! What the daemon costs: a continue request (`take_turn` + `write_and_release(Lazy)`) through
//! `cookie-store serve` against the same in sled in this process, and the round-trip latency of one
//! call.
//!
//! 1. Throughput: 32 tasks on a 2-thread runtime (one broker's worth of concurrent requests), each
//!    looping continues on its own session for `SECONDS`; ops/s = continues completed / elapsed.
//! 2. Latency: one task, one call at a time, p50/p99: `ping` (a round trip on every connection of
//!    the pool at once), one call (`take_turn` of a missing session: one round trip) and a
//!    continue (two).
//!
//! Run: `cargo run --release -p cookie-store --example remote_bench [SECONDS] [URL]`.
//! With a URL (`cookie-store://127.0.0.1:7070`, a daemon started with `cookie-store serve`), that
//! daemon is measured; without one, a daemon is served from this process on its own 2-thread
//! runtime over loopback TCP (same protocol and sockets, shared CPU). The figures depend on the
//! CPU count; compare runs on one machine.

use cookie_store::remote::{Server, ServerLimits};
use cookie_store::{now_ms, Durability, SledStore, Store};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod common;
use common::record;

const SESSIONS: usize = 32;
const LONG: Duration = Duration::from_secs(30);
const LATENCY_SAMPLES: usize = 5_000;

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn continue_once(store: &dyn Store, id: &str) -> Result<(), Error> {
    let (turn, mut r) = store
        .take_turn(id, LONG, LONG)
        .await?
        .ok_or("session missing")?;
    r.last_access_ms = now_ms();
    store.write_and_release(turn, &r, Durability::Lazy).await?;
    Ok(())
}

/// Continues per second with `SESSIONS` tasks, each on its own session.
async fn throughput(store: Arc<dyn Store>, tag: &str, seconds: u64) -> Result<f64, Error> {
    for i in 0..SESSIONS {
        store
            .create(&record(format!("{tag}{i:02}")), Durability::Lazy)
            .await?;
    }
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..SESSIONS)
        .map(|i| {
            let (store, done, stop) = (store.clone(), done.clone(), stop.clone());
            let id = format!("{tag}{i:02}");
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    continue_once(store.as_ref(), &id).await?;
                    done.fetch_add(1, Ordering::Relaxed);
                    // In-process sled never has to wait, so its loop would never give the runtime
                    // back; a broker's request ends here anyway.
                    tokio::task::yield_now().await;
                }
                Ok::<(), Error>(())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// p50 and p99 of `op`, in microseconds.
async fn latency<F, Fut>(mut op: F) -> Result<(f64, f64), Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    for _ in 0..200 {
        op().await?;
    }
    let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
    for _ in 0..LATENCY_SAMPLES {
        let t = Instant::now();
        op().await?;
        samples.push(t.elapsed());
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    Ok((at(0.50).as_secs_f64() * 1e6, at(0.99).as_secs_f64() * 1e6))
}

async fn measure(store: Arc<dyn Store>, name: &str, seconds: u64) -> Result<(), Error> {
    let ops = throughput(store.clone(), &format!("{name}-t"), seconds).await?;
    println!("{name:>9}: {ops:>9.0} continues/s ({SESSIONS} concurrent sessions)");
    store
        .create(&record(format!("{name}-lat")), Durability::Lazy)
        .await?;
    let id = format!("{name}-lat");
    let (p50, p99) = latency(|| {
        let store = store.clone();
        async move { store.ping().await.map_err(Error::from) }
    })
    .await?;
    println!("{name:>9}: ping      p50 {p50:>7.1} µs  p99 {p99:>7.1} µs (every connection)");
    let (p50, p99) = latency(|| {
        let store = store.clone();
        async move {
            match store.take_turn("missing", LONG, LONG).await? {
                None => Ok(()),
                Some(_) => Err(Error::from("a session that should not exist")),
            }
        }
    })
    .await?;
    println!("{name:>9}: one call  p50 {p50:>7.1} µs  p99 {p99:>7.1} µs (take_turn of a missing session)");
    let (p50, p99) = latency(|| {
        let (store, id) = (store.clone(), id.clone());
        async move { continue_once(store.as_ref(), &id).await }
    })
    .await?;
    println!("{name:>9}: continue  p50 {p50:>7.1} µs  p99 {p99:>7.1} µs");
    Ok(())
}

fn main() -> Result<(), Error> {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let url = std::env::args().nth(2);
    let callers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    // In-process sled.
    let dir = tempfile::tempdir()?;
    let local: Arc<dyn Store> = Arc::new(SledStore::open(dir.path().join("local"))?);
    callers.block_on(measure(local, "in-proc", seconds))?;

    // Through a daemon: the one named, or one served from here.
    let mut _daemon_runtime = None;
    let url = match url {
        Some(url) => url,
        None => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path().join("daemon"))?);
            let server =
                runtime.block_on(Server::bind("127.0.0.1:0", store, ServerLimits::default()))?;
            let addr = server.local_addr()?;
            runtime.spawn(server.run(std::future::pending()));
            _daemon_runtime = Some(runtime);
            format!("cookie-store://{addr}")
        }
    };
    let remote = cookie_store::open(&url)?;
    println!("(daemon: {url})");
    callers.block_on(measure(remote, "daemon", seconds))?;
    Ok(())
}
