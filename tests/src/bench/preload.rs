//! Filling a stopped broker's sled store with idle sessions, directly through `cookie_store`, much
//! faster than `Begin` over HTTP. The records are what the broker's NonStop `Begin` writes for an
//! anonymous client of `/soap` on loopback; they are filed in the expiry index like any other.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cookie_store::{Durability, SessionRecord, SessionStore, SledStore, StoreHealth};

#[derive(clap::Args, Debug, Clone)]
pub struct PreloadArgs {
    /// The sled directory of the store (the broker's `store.url` without `sled:`; with the
    /// generated configurations and the embedded default that is DATA_DIR/cookies). The broker
    /// must not be running.
    #[arg(long)]
    pub dir: PathBuf,
    /// Sessions to add.
    #[arg(long, default_value_t = 1_000_000)]
    pub count: u64,
    /// Idle timeout of the sessions (they expire this long after the preload).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub idle: Duration,
    /// The endpoint the sessions belong to.
    #[arg(long, default_value = "/soap")]
    pub endpoint: String,
    /// Writer threads.
    #[arg(long, default_value_t = 2)]
    pub writers: usize,
}

/// What a preload did.
pub struct Preloaded {
    pub count: u64,
    pub elapsed: Duration,
}

impl Preloaded {
    pub fn rate(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// splitmix64: well-spread 64-bit values from a counter.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A session ID shaped like the broker's (32 lowercase hex digits), unique per (seed, i).
pub fn session_id(seed: u64, i: u64) -> String {
    format!("{:016x}{:016x}", mix(seed ^ mix(i)), mix(i ^ 0x5eed) ^ seed)
}

/// One record as the broker's `Begin` would store it.
pub fn record(id: String, endpoint: &str, last_access_ms: u64, idle_ms: u64) -> SessionRecord {
    SessionRecord {
        id,
        endpoint: endpoint.to_string(),
        dialect: "nonstop".to_string(),
        principal: None,
        client_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        created_ms: last_access_ms,
        last_access_ms,
        idle_timeout_ms: idle_ms,
        transaction: None,
        subsession: None,
        dialect_state: Vec::new(),
        expiry_indexed_ms: 0,
    }
}

/// Add `count` sessions to the sled store in `dir`, last accessed at `last_access_ms`, expiring
/// `idle_ms` later. Lazy writes, one flush at the end.
pub fn preload(
    dir: &Path,
    count: u64,
    endpoint: &str,
    last_access_ms: u64,
    idle_ms: u64,
    writers: usize,
) -> Result<Preloaded, String> {
    let started = Instant::now();
    let store =
        Arc::new(SledStore::open(dir).map_err(|e| format!("opening {}: {e}", dir.display()))?);
    let seed = mix(cookie_store::now_ms() ^ u64::from(std::process::id()));
    let writers = writers.clamp(1, 64) as u64;
    let mut threads = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let endpoint = endpoint.to_string();
        threads.push(std::thread::spawn(move || -> Result<(), String> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let mut i = w;
                while i < count {
                    let r = record(session_id(seed, i), &endpoint, last_access_ms, idle_ms);
                    store
                        .create(&r, Durability::Lazy)
                        .await
                        .map_err(|e| format!("creating session {i}: {e}"))?;
                    i += writers;
                }
                Ok(())
            })
        }));
    }
    for t in threads {
        t.join().map_err(|_| "a preload writer panicked")??;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(store.flush())
        .map_err(|e| format!("flushing {}: {e}", dir.display()))?;
    drop(store);
    Ok(Preloaded {
        count,
        elapsed: started.elapsed(),
    })
}

/// `soapbench preload`.
pub fn main(args: PreloadArgs) -> Result<(), String> {
    let now = cookie_store::now_ms();
    let done = preload(
        &args.dir,
        args.count,
        &args.endpoint,
        now,
        args.idle.as_millis() as u64,
        args.writers,
    )?;
    println!(
        "preloaded {} sessions into {} in {:.1}s ({:.0}/s), idle timeout {}; store size on disk {:.1} MiB",
        done.count,
        args.dir.display(),
        done.elapsed.as_secs_f64(),
        done.rate(),
        humantime::format_duration(args.idle),
        dir_size(&args.dir) as f64 / 1048576.0
    );
    Ok(())
}

/// Bytes of the files under `dir` (recursively).
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_look_like_the_brokers_and_differ() {
        let a = session_id(7, 1);
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        let set: std::collections::HashSet<String> =
            (0..10_000).map(|i| session_id(7, i)).collect();
        assert_eq!(set.len(), 10_000);
    }

    #[test]
    fn preloaded_records_decode_and_expire_on_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let done = preload(dir.path(), 50, "/soap", 1_000, 500, 2).expect("preload");
        assert_eq!(done.count, 50);
        let store = SledStore::open(dir.path()).expect("reopen");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt");
        let due = rt.block_on(store.due_for_expiry(1_499, 100)).expect("due");
        assert!(due.is_empty());
        let due = rt.block_on(store.due_for_expiry(1_500, 100)).expect("due");
        assert_eq!(due.len(), 50);
    }
}
