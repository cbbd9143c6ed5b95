//! Throughput of the process adapter: N echo requests of about 1 KiB through a pool of
//! `sample-server echo` workers, from concurrent callers.
//!
//! ```text
//! cargo build --release -p adapters --bins --examples
//! target/release/examples/pool_bench [N] [CALLERS] [WORKERS]     # defaults: 20000 32 <cpus>
//! ```
//!
//! The callers mimic the broker: a few OS threads, each with its own current-thread runtime (like
//! actix workers), calling a class whose I/O runs on a separate multi-threaded runtime. The
//! `sample-server` binary is looked up next to this example's directory, or at `$SAMPLE_SERVER`.

use adapters::process::ProcessClass;
use adapters::{AdapterKind, BackendRequest, DialogMarker, ServerClass, ServerClassConfig};
use bytes::Bytes;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// OS threads the callers are spread over (each one a current-thread runtime).
const CALLER_THREADS: usize = 4;

fn sample_server() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("SAMPLE_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // target/<profile>/examples/pool_bench -> target/<profile>/sample-server
    let path = exe
        .parent()
        .and_then(|examples| examples.parent())
        .map(|profile| profile.join("sample-server"))
        .ok_or("cannot locate the target directory")?;
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: run `cargo build --release -p adapters --bins --examples` first, \
             or set SAMPLE_SERVER",
            path.display()
        ))
    }
}

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let total = arg(1, 20_000);
    let callers = arg(2, 32).max(1);
    let workers = arg(3, cpus).max(1);
    let server = sample_server()?;

    // A ~1 KiB Echo body.
    let items: String = (0..30)
        .map(|i| format!("<item n=\"{i}\">value-{i:04}</item>"))
        .collect();
    let payload = Bytes::from(format!(r#"<Echo xmlns="urn:bench">{items}</Echo>"#));

    let class_runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut config = ServerClassConfig::new(
        "bench",
        AdapterKind::Process {
            command: vec![server.display().to_string(), "echo".to_string()],
            env: vec![],
            cwd: None,
        },
    );
    config.min_workers = workers;
    config.max_workers = workers;
    config.request_timeout = Duration::from_secs(30);
    let class: Arc<ProcessClass> =
        class_runtime.block_on(ProcessClass::start(config, class_runtime.handle().clone()))?;

    println!(
        "{total} requests of {} bytes, {callers} concurrent callers on {CALLER_THREADS} threads, \
         {workers} workers ({cpus} cpus)",
        payload.len()
    );
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..CALLER_THREADS.min(callers))
        .map(|t| {
            let (class, next, payload) = (class.clone(), next.clone(), payload.clone());
            // Spread the callers over the threads as evenly as possible.
            let mine = callers / CALLER_THREADS.min(callers)
                + usize::from(t < callers % CALLER_THREADS.min(callers));
            std::thread::spawn(move || -> Result<Vec<Duration>, String> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                rt.block_on(async move {
                    let tasks: Vec<_> = (0..mine)
                        .map(|_| {
                            let (class, next, payload) =
                                (class.clone(), next.clone(), payload.clone());
                            tokio::spawn(async move {
                                let mut latencies = Vec::new();
                                while next.fetch_add(1, Ordering::Relaxed) < total {
                                    let request = BackendRequest {
                                        credential: None,
                                        traceparent: None,
                                        service: "Echo".into(),
                                        operation: "Echo".into(),
                                        session_id: None,
                                        transaction_id: None,
                                        dialog: DialogMarker::None,
                                        worker: None,
                                        payload: payload.clone(),
                                    };
                                    let t0 = Instant::now();
                                    class.call(request).await.map_err(|e| e.to_string())?;
                                    latencies.push(t0.elapsed());
                                }
                                Ok::<_, String>(latencies)
                            })
                        })
                        .collect();
                    let mut all = Vec::new();
                    for task in tasks {
                        all.extend(task.await.map_err(|e| e.to_string())??);
                    }
                    Ok(all)
                })
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(total);
    for thread in threads {
        latencies.extend(thread.join().map_err(|_| "a caller thread panicked")??);
    }
    let elapsed = started.elapsed();

    latencies.sort();
    let mean = latencies.iter().sum::<Duration>() / latencies.len().max(1) as u32;
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "{} ok in {:.2} s: {:.0} req/s, mean latency {:.1} µs (p50 {:.1} µs, p99 {:.1} µs)",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        mean.as_secs_f64() * 1e6,
        pct(0.50).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6,
    );
    class_runtime.block_on(class.shutdown(Duration::from_secs(2)));
    Ok(())
}
