//! `kill -9` loses nothing that was acknowledged.
//!
//! Each check re-runs this very executable as a child writer (selected by an environment variable).
//! The child writes sessions into a sled store and prints each ID only after the store call
//! returned; the parent reads the acknowledgements, SIGKILLs the child mid-stream (`Child::kill`
//! sends SIGKILL on Unix), reopens the directory and looks for every acknowledged ID.
//!
//! This target has no libtest harness (`harness = false` in Cargo.toml): `main` picks the child's
//! role from the environment before anything else runs, so a writer is never a test of its own
//! that a normal run would count as passed without checking anything. Without the variable, `main`
//! runs the checks below one after the other, libtest-style (`test NAME ... ok`); names given on
//! the command line filter them by substring (`--exact` for whole names), `--list` lists them.

use cookie_store::{now_ms, Durability, SessionRecord, SessionStore, SledStore};
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::pin::Pin;
use std::process::{Command, ExitCode, Stdio};
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
fn run_child_until_killed(role: Role, dir: &Path) -> Vec<String> {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .env(CHILD_ROLE, role.name())
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
            Ok(line) => acks.extend(line.strip_prefix("ack ").map(str::to_owned)),
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

fn child_dir() -> std::path::PathBuf {
    std::env::var_os(CHILD_DIR)
        .unwrap_or_else(|| panic!("{CHILD_DIR} is not set"))
        .into()
}

/// Print an acknowledgement and push it out of the process before the next write.
fn ack(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "ack {line}").unwrap();
    out.flush().unwrap();
}

/// The child of `acknowledged_durable_writes_survive_kill_9`: durable creates, each acknowledged.
async fn child_writer() {
    let store = SledStore::open(child_dir()).unwrap();
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

/// The child of `a_durable_write_makes_earlier_lazy_ones_durable`: nine lazy creates, then a
/// durable one, over and over.
async fn child_lazy_writer() {
    let store = SledStore::open(child_dir()).unwrap();
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

async fn acknowledged_durable_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let acks = run_child_until_killed(Role::Durable, dir.path());
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

async fn a_durable_write_makes_earlier_lazy_ones_durable() {
    let dir = tempfile::tempdir().unwrap();
    let acks = run_child_until_killed(Role::Lazy, dir.path());
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

/// The child of `a_kill_mid_churn_leaves_no_record_without_its_index_entry` (run on four runtime
/// threads).
async fn child_churner() {
    let store = std::sync::Arc::new(SledStore::open(child_dir()).unwrap());
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
async fn a_kill_mid_churn_leaves_no_record_without_its_index_entry() {
    let dir = tempfile::tempdir().unwrap();
    let acks = run_child_until_killed(Role::Churn, dir.path());
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

/// The child writers, by the value of [`CHILD_ROLE`].
#[derive(Clone, Copy)]
enum Role {
    Durable,
    Lazy,
    Churn,
}

impl Role {
    const ALL: [Role; 3] = [Role::Durable, Role::Lazy, Role::Churn];

    fn name(self) -> &'static str {
        match self {
            Role::Durable => "durable",
            Role::Lazy => "lazy",
            Role::Churn => "churn",
        }
    }

    fn run(self) {
        match self {
            Role::Durable => current_thread().block_on(child_writer()),
            Role::Lazy => current_thread().block_on(child_lazy_writer()),
            Role::Churn => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(4)
                .enable_all()
                .build()
                .unwrap()
                .block_on(child_churner()),
        }
    }
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

type Check = fn() -> Pin<Box<dyn Future<Output = ()>>>;

/// The checks, by name.
const CHECKS: [(&str, Check); 3] = [
    ("acknowledged_durable_writes_survive_kill_9", || {
        Box::pin(acknowledged_durable_writes_survive_kill_9())
    }),
    ("a_durable_write_makes_earlier_lazy_ones_durable", || {
        Box::pin(a_durable_write_makes_earlier_lazy_ones_durable())
    }),
    (
        "a_kill_mid_churn_leaves_no_record_without_its_index_entry",
        || Box::pin(a_kill_mid_churn_leaves_no_record_without_its_index_entry()),
    ),
];

fn main() -> ExitCode {
    if let Ok(role) = std::env::var(CHILD_ROLE) {
        let role = Role::ALL
            .into_iter()
            .find(|r| r.name() == role)
            .unwrap_or_else(|| panic!("unknown {CHILD_ROLE} {role:?}"));
        role.run();
        return ExitCode::SUCCESS;
    }
    // The libtest arguments that select tests; the others (`--nocapture`, `--test-threads 1`…) are
    // accepted and ignored: the checks run one at a time and never capture output anyway.
    let mut filters = Vec::new();
    let mut skips = Vec::new();
    let (mut exact, mut list) = (false, false);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--exact" => exact = true,
            "--list" => list = true,
            "--skip" => skips.extend(args.next()),
            // Flags whose value is the next argument, which is not a filter.
            "--test-threads" | "--color" | "--format" | "--logfile" | "-Z" => {
                args.next();
            }
            flag if flag.starts_with('-') => {}
            filter => filters.push(filter.to_owned()),
        }
    }
    let matches = |name: &str, pattern: &String| {
        if exact {
            name == pattern
        } else {
            name.contains(pattern.as_str())
        }
    };
    let selected: Vec<_> = CHECKS
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| matches(name, f)))
        .filter(|(name, _)| !skips.iter().any(|s| matches(name, s)))
        .collect();
    if list {
        for (name, _) in &selected {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    println!("\nrunning {} tests", selected.len());
    let mut failed = Vec::new();
    for (name, check) in &selected {
        print!("test {name} ... ");
        let _ = std::io::stdout().flush();
        match std::panic::catch_unwind(|| current_thread().block_on(check())) {
            Ok(()) => println!("ok"),
            Err(_) => {
                println!("FAILED");
                failed.push(*name);
            }
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        selected.len() - failed.len(),
        failed.len()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failures: {failed:?}");
        ExitCode::FAILURE
    }
}
