//! The `cookie-store serve` daemon as brokers use it: a real daemon process on a loopback port,
//! a fresh data directory each, reached through `cookie-store://` URLs.
//!
//! - the [`Store`] conformance suite (`tests/conformance`), each test against its own daemon;
//! - `kill -9` of the daemon loses no acknowledged durable write, calls fail fast while it is down,
//!   and the same client carries on once it is back;
//! - two clients (two brokers) contending for one turn: arrival order and fencing across them;
//! - a connection that closes gives back its turns; a malformed frame closes only its connection;
//! - the process: SIGTERM flushes and exits 0; a held directory or a bad address exits 1 with one
//!   line.
//!
//! Every daemon is killed when its handle drops, so a failing test leaves no process behind.

mod conformance;
mod wait;

use cookie_store::{
    now_ms, Durability, Participant, SessionRecord, Store, StoreError, TxnDecision,
};
use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(60);
/// Only a hang takes this long.
const HANG: Duration = Duration::from_secs(20);

/// A daemon process, SIGKILLed when dropped.
struct Daemon {
    child: Child,
    addr: String,
}

impl Daemon {
    /// Start `cookie-store serve` on `dir` and `listen`, and wait for its "serving" line.
    fn start(dir: &Path, listen: &str, extra: &[&str]) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cookie-store"))
            .arg("serve")
            .arg("--data")
            .arg(dir)
            .args(["--listen", listen])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning the daemon");
        let stdout = child.stdout.take().expect("the daemon's stdout");
        let (line_tx, line) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = line_tx.send(lines.next());
            // Keep draining so the daemon never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match line.recv_timeout(HANG) {
            Ok(Some(Ok(line))) => line,
            other => {
                let _ = child.kill();
                panic!("the daemon did not say where it listens: {other:?}");
            }
        };
        let addr = line
            .split_once("cookie-store://")
            .map(|(_, addr)| addr.trim().to_owned())
            .unwrap_or_else(|| panic!("unexpected first line from the daemon: {line}"));
        Daemon { child, addr }
    }

    fn url(&self, params: &str) -> String {
        format!("cookie-store://{}{params}", self.addr)
    }

    /// SIGKILL, and wait until the process is gone.
    fn kill_9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaping the daemon");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a conformance test's store needs kept alive: its daemon, then its directory.
struct Fixture {
    _daemon: Daemon,
    _dir: tempfile::TempDir,
}

async fn daemon_store() -> (Arc<dyn Store>, Fixture) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let daemon = Daemon::start(dir.path(), "127.0.0.1:0", &[]);
    let store = cookie_store::open(&daemon.url("")).expect("connecting to the daemon");
    (
        store,
        Fixture {
            _daemon: daemon,
            _dir: dir,
        },
    )
}

conformance::store_conformance!(daemon_store);

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
        dialect_state: vec![],
        expiry_indexed_ms: 0,
    }
}

fn decision(txn_id: &str) -> TxnDecision {
    TxnDecision {
        txn_id: txn_id.into(),
        session_id: "s-txn".into(),
        commit: true,
        participants: vec![Participant {
            server_class: "ledger".into(),
            worker: "ledger#1".into(),
        }],
        coordinator: "b1".into(),
        decided_ms: now_ms(),
    }
}

/// Start `task`, which begins with a take_turn that must wait, and return once the daemon has
/// queued it: polled once (the request is on its way), then a ping over the same client's
/// connections (everything sent before has been read by the daemon).
async fn queued<F>(store: &Arc<dyn Store>, task: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let mut task = Box::pin(task);
    let first = Pin::new(&mut task).poll(&mut Context::from_waker(Waker::noop()));
    assert!(first.is_pending(), "the take_turn did not have to wait");
    let handle = tokio::spawn(task);
    store.ping().await.expect("ping");
    handle
}

/// Poll `store` until it answers again (after a daemon restart), within [`HANG`].
async fn until_back(store: &Arc<dyn Store>) {
    wait::until(HANG, "the client to reconnect", move || store.ping()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_durable_writes_survive_kill_9_and_the_same_client_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), "127.0.0.1:0", &[]);
    // A long call timeout: a call that returns quickly while the daemon is down failed fast, it
    // did not time out.
    let store = cookie_store::open(&daemon.url("?timeout=60s&backoff_max=100ms")).unwrap();

    // One of each durable operation, acknowledged before the kill.
    store
        .create(&record("written"), Durability::Durable)
        .await
        .unwrap();
    let (turn, mut r) = store
        .take_turn("written", LONG, LONG)
        .await
        .unwrap()
        .unwrap();
    r.dialect_state = b"durable write".to_vec();
    store
        .write_and_release(turn, &r, Durability::Durable)
        .await
        .unwrap();
    store
        .create(&record("deleted"), Durability::Durable)
        .await
        .unwrap();
    let (turn, _) = store
        .take_turn("deleted", LONG, LONG)
        .await
        .unwrap()
        .unwrap();
    store.delete(turn, Durability::Durable).await.unwrap();
    store.log_decision(&decision("t-1")).await.unwrap();
    store
        .create(&record("held"), Durability::Durable)
        .await
        .unwrap();
    let (held, _) = store.take_turn("held", LONG, LONG).await.unwrap().unwrap();

    // A stream of durable creates from 8 concurrent writers, killed in mid-stream.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (store, acked) = (store.clone(), acked.clone());
            tokio::spawn(async move {
                for n in 0.. {
                    let id = format!("c-{w}-{n}");
                    if store
                        .create(&record(&id), Durability::Durable)
                        .await
                        .is_err()
                    {
                        return;
                    }
                    acked.lock().unwrap().push(id);
                }
            })
        })
        .collect();
    let acked_so_far = &acked;
    wait::until(HANG, "200 acknowledged writes", move || async move {
        let n = acked_so_far.lock().unwrap().len();
        if n >= 200 {
            Ok(())
        } else {
            Err(format!("{n} acknowledged"))
        }
    })
    .await;
    daemon.kill_9();
    for writer in writers {
        tokio::time::timeout(HANG, writer)
            .await
            .expect("a writer hung on a dead daemon")
            .unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    // Down: calls fail with Unavailable, long before the 60 s call timeout.
    let asked = Instant::now();
    let err = store
        .create(&record("while-down"), Durability::Durable)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );
    let err = store.ping().await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");

    // Back on the same directory and address: the same client, not reopened, works again.
    let _daemon = Daemon::start(dir.path(), &daemon.addr, &[]);
    until_back(&store).await;
    for id in &acked {
        assert!(
            store.take_turn(id, LONG, LONG).await.unwrap().is_some(),
            "acknowledged create of {id} lost ({} acknowledged)",
            acked.len()
        );
    }
    let (turn, written) = store
        .take_turn("written", LONG, LONG)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(written.dialect_state, b"durable write");
    store.release(turn).await.unwrap();
    assert!(store
        .take_turn("deleted", LONG, LONG)
        .await
        .unwrap()
        .is_none());
    let pending: Vec<_> = store
        .pending_decisions()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.txn_id)
        .collect();
    assert_eq!(pending, ["t-1"]);
    // The turn held across the restart is fenced; the session itself carries on.
    let err = store.release(held).await.unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err:?}");
    let (turn, _) = store
        .take_turn("held", LONG, Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    store.release(turn).await.unwrap();
}

#[tokio::test]
async fn two_brokers_contending_for_a_turn_are_served_in_arrival_order_and_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), "127.0.0.1:0", &[]);
    let a = cookie_store::open(&daemon.url("?connections=2")).unwrap();
    let b = cookie_store::open(&daemon.url("?connections=1")).unwrap();
    a.create(&record("s1"), Durability::Durable).await.unwrap();

    let (a_first, seen) = a
        .take_turn("s1", Duration::from_millis(300), LONG)
        .await
        .unwrap()
        .unwrap();
    // Arrival order: b, then a again.
    let b2 = b.clone();
    let b_waits = queued(&b, async move {
        let (turn, mut r) = b2.take_turn("s1", LONG, LONG).await.unwrap().unwrap();
        r.dialect_state = b"written by b".to_vec();
        b2.write_and_release(turn.clone_turn(), &r, Durability::Durable)
            .await
            .unwrap();
        turn.epoch
    })
    .await;
    let a2 = a.clone();
    let a_waits = queued(&a, async move { a2.take_turn("s1", LONG, LONG).await }).await;

    // a's lease runs out: the turn goes to b (first in line), and a's first turn is fenced.
    let b_epoch = tokio::time::timeout(HANG, b_waits).await.unwrap().unwrap();
    assert!(b_epoch > a_first.epoch);
    let stale = SessionRecord {
        dialect_state: b"written by a, too late".to_vec(),
        ..seen
    };
    let err = a
        .write(&a_first, &stale, Durability::Durable)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Fenced { epoch, .. } if epoch == a_first.epoch),
        "{err:?}"
    );
    // Then to a's second request, which sees b's write.
    let (a_second, r) = tokio::time::timeout(HANG, a_waits)
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(a_second.epoch > b_epoch);
    assert_eq!(r.dialect_state, b"written by b");
    a.release(a_second).await.unwrap();
}

/// `Turn` is deliberately not `Clone`; the test needs the epoch after handing the turn back.
trait CloneTurn {
    fn clone_turn(&self) -> cookie_store::Turn;
}

impl CloneTurn for cookie_store::Turn {
    fn clone_turn(&self) -> cookie_store::Turn {
        cookie_store::Turn {
            session_id: self.session_id.clone(),
            epoch: self.epoch,
        }
    }
}

#[tokio::test]
async fn a_closed_connection_gives_back_the_turns_it_held() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), "127.0.0.1:0", &[]);
    let survivor = cookie_store::open(&daemon.url("")).unwrap();
    survivor
        .create(&record("s1"), Durability::Durable)
        .await
        .unwrap();
    {
        // A broker that takes the turn for a minute and dies.
        let doomed = cookie_store::open(&daemon.url("")).unwrap();
        let (_turn, _) = doomed.take_turn("s1", LONG, LONG).await.unwrap().unwrap();
    }
    // Well before the minute's lease ends, the daemon has given the turn back.
    let (turn, _) = survivor
        .take_turn("s1", LONG, HANG)
        .await
        .unwrap()
        .expect("the session exists");
    survivor.release(turn).await.unwrap();
}

/// Send `bytes` on a fresh connection and close its sending side; return what the daemon wrote
/// before closing it.
fn send_raw(addr: &str, bytes: &[u8]) -> Vec<u8> {
    let mut raw = TcpStream::connect(addr).unwrap();
    raw.set_read_timeout(Some(HANG)).unwrap();
    raw.write_all(bytes).unwrap();
    raw.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    raw.read_to_end(&mut answer)
        .expect("the daemon did not close the connection");
    answer
}

#[tokio::test]
async fn a_malformed_frame_closes_only_its_own_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), "127.0.0.1:0", &["--max-frame-bytes", "4096"]);
    let store = cookie_store::open(&daemon.url("?connections=1")).unwrap();
    store
        .create(&record("s1"), Durability::Durable)
        .await
        .unwrap();
    let (turn, mut r) = store.take_turn("s1", LONG, LONG).await.unwrap().unwrap();

    for (what, bytes) in [
        ("an unknown version", vec![0, 0, 0, 3, 9, 1, 13]),
        ("a frame over the limit", vec![0, 0, 16, 1]),
        ("an empty frame", vec![0, 0, 0, 0]),
        ("an undecodable message", vec![0, 0, 0, 4, 1, 1, 99, 99]),
        ("request ID 0", vec![0, 0, 0, 3, 1, 0, 13]),
    ] {
        let answer = send_raw(&daemon.addr, &bytes);
        // The daemon says why before closing: one frame with request ID 0.
        assert!(answer.len() > 6, "{what}: {answer:?}");
        assert_eq!(&answer[4..6], &[1, 0], "{what}: {answer:?}");
    }
    // A frame cut short by the peer is not an error worth a reply; the connection just ends.
    assert!(send_raw(&daemon.addr, &[0, 0, 0, 9, 1]).is_empty());

    // The well-behaved connection and its turn were not disturbed, nor was the daemon.
    r.dialect_state = b"still here".to_vec();
    store.write(&turn, &r, Durability::Durable).await.unwrap();
    store.release(turn).await.unwrap();
    store.ping().await.unwrap();
    assert!(daemon.child.try_wait().unwrap().is_none());
}

fn signal(daemon: &Daemon, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(daemon.child.id()).unwrap();
    // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

/// Whether /proc shows every thread of `pid` stopped by a signal (state `T`).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat"))
            .ok()
            // The state follows the parenthesised command name, which may hold spaces.
            .and_then(|stat| {
                stat.rsplit_once(") ")
                    .map(|(_, rest)| rest.starts_with('T'))
            })
            .unwrap_or(false)
    })
}

#[tokio::test]
async fn a_daemon_that_stops_answering_fails_calls_at_the_call_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), "127.0.0.1:0", &[]);
    let store = cookie_store::open(&daemon.url("?timeout=300ms")).unwrap();
    store
        .create(&record("s1"), Durability::Durable)
        .await
        .unwrap();

    // Frozen, its connections still open: nothing tells the client, only the timeout. kill(2)
    // returns before a thread running on the other core has stopped (CI once saw the ping
    // answered), so wait until every thread of the daemon shows the stopped state.
    signal(&daemon, libc::SIGSTOP);
    wait::until_some(HANG, "every daemon thread to stop", || {
        all_threads_stopped(daemon.child.id()).then_some(())
    });
    let asked = Instant::now();
    let err = store.ping().await.unwrap_err();
    assert!(
        matches!(err, StoreError::Unavailable(ref m) if m.contains("no answer")),
        "{err:?}"
    );
    // A take_turn gets the timeout on top of its own wait.
    let err = store
        .take_turn("s1", LONG, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(
        asked.elapsed() >= Duration::from_millis(800) && asked.elapsed() < HANG,
        "{:?}",
        asked.elapsed()
    );

    // Thawed, it answers the abandoned calls (the late turn is given back) and new ones.
    signal(&daemon, libc::SIGCONT);
    let (turn, _) = store
        .take_turn("s1", LONG, HANG)
        .await
        .unwrap()
        .expect("the session exists");
    store.release(turn).await.unwrap();
    store.ping().await.unwrap();
}

fn exit_within(daemon: &mut Daemon, limit: Duration) -> std::process::ExitStatus {
    wait::until_some(limit, "the daemon to exit", || {
        daemon.child.try_wait().unwrap()
    })
}

#[tokio::test]
async fn sigterm_flushes_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    // No background flush: only the shutdown's flush can save a lazy write.
    let mut daemon = Daemon::start(dir.path(), "127.0.0.1:0", &["--flush-every-ms", "0"]);
    let store = cookie_store::open(&daemon.url("")).unwrap();
    store
        .create(&record("lazy"), Durability::Lazy)
        .await
        .unwrap();
    signal(&daemon, libc::SIGTERM);
    let status = exit_within(&mut daemon, HANG);
    assert_eq!(status.code(), Some(0), "{status:?}");
    let err = store.ping().await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");

    let again = Daemon::start(dir.path(), "127.0.0.1:0", &[]);
    let store = cookie_store::open(&again.url("")).unwrap();
    assert!(store.take_turn("lazy", LONG, LONG).await.unwrap().is_some());
}

/// Run the daemon expecting it to fail at once; return its stderr.
fn fails_at_start(dir: &Path, listen: &str, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cookie-store"))
        .arg("serve")
        .arg("--data")
        .arg(dir)
        .args(["--listen", listen])
        .args(extra)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    stderr
}

#[test]
fn a_held_directory_or_an_unusable_address_exits_1_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), "127.0.0.1:0", &[]);
    let why = fails_at_start(dir.path(), "127.0.0.1:0", &[]);
    assert!(why.contains("in use by another process"), "{why}");

    let other = tempfile::tempdir().unwrap();
    let why = fails_at_start(other.path(), &daemon.addr, &[]);
    assert!(
        why.contains(&format!("cannot listen on {}", daemon.addr)),
        "{why}"
    );
    let why = fails_at_start(other.path(), "no-port-here", &[]);
    assert!(why.contains("cannot listen on no-port-here"), "{why}");
    let why = fails_at_start(
        other.path(),
        "127.0.0.1:0",
        &["--cache-capacity-bytes", "4096"],
    );
    assert!(
        why.contains("--cache-capacity-bytes must be at least"),
        "{why}"
    );
}
