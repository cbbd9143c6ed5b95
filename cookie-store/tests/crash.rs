//! `kill -9` loses nothing that was acknowledged.
//!
//! Each parent test re-runs this very test binary as a child (selected by an environment variable and
//! an exact test-name filter). The child writes sessions into a sled store and prints each ID only
//! after the store call returned; the parent reads the acknowledgements, SIGKILLs the child mid-stream
//! (`Child::kill` sends SIGKILL on Unix), reopens the directory and looks for every acknowledged ID.

use cookie_store::{now_ms, Durability, SessionRecord, SledStore, Store};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Set in the child: which writer to run. Its data directory is in `CHILD_DIR`.
const CHILD_ROLE: &str = "COOKIE_STORE_CRASH_CHILD";
const CHILD_DIR: &str = "COOKIE_STORE_CRASH_DIR";
/// Acknowledgements the parent waits for before killing.
const ACKS_BEFORE_KILL: usize = 200;
/// A child left behind by a parent that died stops on its own after this long.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);

fn record(id: &str) -> SessionRecord {
    let now = now_ms();
    SessionRecord {
        id: id.into(),
        endpoint: "/soap".into(),
        dialect: "nonstop".into(),
        principal: None,
        client_ip: None,
        created_ms: now,
        last_access_ms: now,
        idle_timeout_ms: 3_600_000,
        transaction: None,
        subsession: None,
        dialect_state: vec![0; 64],
        expiry_indexed_ms: 0,
    }
}

/// Run the child writer `role`, returning what it acknowledged (the text after `ack `) before the kill.
fn run_child_until_killed(role: &str, test_name: &str, dir: &Path) -> Vec<String> {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ROLE, role)
        .env(CHILD_DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Read on a thread so a stuck child fails the test instead of hanging it.
    let (lines_tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut acks = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while acks.len() < ACKS_BEFORE_KILL {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            // libtest prints "test NAME ... " without a newline, so the first ack shares its line.
            Ok(line) => acks.extend(line.split_once("ack ").map(|(_, ack)| ack.to_owned())),
            Err(e) => {
                let _ = child.kill();
                panic!(
                    "child stopped acknowledging after {} writes: {e}",
                    acks.len()
                );
            }
        }
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the child was meant to die by SIGKILL, got {status}"
    );
    // Acknowledgements still in the pipe go unchecked; the ones read are the sample.
    drop(lines);
    let _ = reader.join();
    acks
}

async fn present(store: &SledStore, id: &str) -> bool {
    match store
        .take_turn(id, Duration::from_secs(5), Duration::from_secs(5))
        .await
        .unwrap()
    {
        Some((turn, record)) => {
            assert_eq!(record.id, id);
            store.release(turn).await.unwrap();
            true
        }
        None => false,
    }
}

fn child_dir() -> Option<std::path::PathBuf> {
    std::env::var_os(CHILD_DIR).map(Into::into)
}

/// Print an acknowledgement and push it out of the process before the next write.
fn ack(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "ack {line}").unwrap();
    out.flush().unwrap();
}

#[tokio::test]
async fn child_writer() {
    if std::env::var(CHILD_ROLE).as_deref() != Ok("durable") {
        return; // only meaningful as the child of `acknowledged_durable_writes_survive_kill_9`
    }
    let store = SledStore::open(child_dir().unwrap()).unwrap();
    let started = Instant::now();
    for i in 0.. {
        let id = format!("d{i:06}");
        store
            .create(&record(&id), Durability::Durable)
            .await
            .unwrap();
        ack(&id);
        if started.elapsed() > CHILD_LIFETIME {
            break;
        }
    }
}

#[tokio::test]
async fn child_lazy_writer() {
    if std::env::var(CHILD_ROLE).as_deref() != Ok("lazy") {
        return; // only meaningful as the child of `a_durable_write_makes_earlier_lazy_ones_durable`
    }
    let store = SledStore::open(child_dir().unwrap()).unwrap();
    let started = Instant::now();
    for i in 0.. {
        let id = format!("s{i:06}");
        // Nine lazy writes, then a durable one that must carry them all to disk.
        if i % 10 == 9 {
            store
                .create(&record(&id), Durability::Durable)
                .await
                .unwrap();
            ack(&format!("durable {id}"));
        } else {
            store.create(&record(&id), Durability::Lazy).await.unwrap();
            ack(&format!("lazy {id}"));
        }
        if started.elapsed() > CHILD_LIFETIME {
            break;
        }
    }
}

#[tokio::test]
async fn acknowledged_durable_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let acks = run_child_until_killed("durable", "child_writer", dir.path());
    assert_eq!(acks[0], "d000000", "acknowledgements were skipped");
    let store = SledStore::open(dir.path()).unwrap();
    let mut missing = Vec::new();
    for line in &acks {
        let id = line.as_str();
        if !present(&store, id).await {
            missing.push(id.to_owned());
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged durable creates lost: {missing:?}",
        missing.len(),
        acks.len()
    );
}

#[tokio::test]
async fn a_durable_write_makes_earlier_lazy_ones_durable() {
    let dir = tempfile::tempdir().unwrap();
    let acks = run_child_until_killed("lazy", "child_lazy_writer", dir.path());
    let ids: Vec<(bool, &str)> = acks
        .iter()
        .filter_map(|rest| {
            rest.strip_prefix("durable ")
                .map(|id| (true, id))
                .or_else(|| rest.strip_prefix("lazy ").map(|id| (false, id)))
        })
        .collect();
    let last_durable = ids
        .iter()
        .rposition(|(durable, _)| *durable)
        .expect("the child acknowledged a durable write");
    let store = SledStore::open(dir.path()).unwrap();
    let mut missing = Vec::new();
    for (_, id) in &ids[..=last_durable] {
        if !present(&store, id).await {
            missing.push(*id);
        }
    }
    assert!(
        missing.is_empty(),
        "writes acknowledged before the durable {} were lost: {missing:?}",
        ids[last_durable].1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn child_churner() {
    if std::env::var(CHILD_ROLE).as_deref() != Ok("churn") {
        return; // only meaningful as the child of `a_kill_mid_churn_leaves_no_record_without_its_index_entry`
    }
    let store = std::sync::Arc::new(SledStore::open(child_dir().unwrap()).unwrap());
    let started = Instant::now();
    // Four churning clients, as a broker's Begin/End traffic is: create, then delete every other
    // session; lazy writes, with a durable one now and then.
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    let id = format!("c{c}-{i:06}");
                    let durability = if i % 8 == 7 {
                        Durability::Durable
                    } else {
                        Durability::Lazy
                    };
                    ack(&format!("begin {id}"));
                    store.create(&record(&id), durability).await.unwrap();
                    if i % 2 == 1 {
                        let (turn, _) = store
                            .take_turn(&id, Duration::from_secs(5), Duration::from_secs(5))
                            .await
                            .unwrap()
                            .unwrap();
                        store.delete(turn, durability).await.unwrap();
                        if durability == Durability::Durable {
                            ack(&format!("deleted {id}"));
                        }
                    }
                    if started.elapsed() > CHILD_LIFETIME {
                        break;
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
}

/// `create` files the index entries before the record and `delete` removes the record before its
/// entries, without a sled transaction: whatever instant the kill lands on, a record that survives
/// is in the expiry index (else it would never expire), and a durably deleted one stays deleted.
#[tokio::test]
async fn a_kill_mid_churn_leaves_no_record_without_its_index_entry() {
    let dir = tempfile::tempdir().unwrap();
    let acks = run_child_until_killed("churn", "child_churner", dir.path());
    let begun: Vec<&str> = acks
        .iter()
        .filter_map(|a| a.strip_prefix("begin "))
        .collect();
    let deleted: Vec<&str> = acks
        .iter()
        .filter_map(|a| a.strip_prefix("deleted "))
        .collect();
    let store = SledStore::open(dir.path()).unwrap();
    let filed = store.due_for_expiry(u64::MAX, usize::MAX).await.unwrap();
    let mut survivors = 0;
    for id in &begun {
        if present(&store, id).await {
            survivors += 1;
            assert!(
                filed.iter().any(|f| f == id),
                "session {id} survived the kill without its expiry index entry"
            );
            assert!(
                !deleted.contains(id),
                "durably deleted session {id} is back"
            );
        }
    }
    assert!(survivors > 0, "no session survived: nothing was checked");
}
