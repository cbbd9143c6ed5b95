//! Transactions and dialogs through the pool: pins, targeted routing, control messages, and what
//! happens when a pinned worker dies. The workers are the Python reference server
//! (`examples/echo_server.py`), whose `Put`/`Get` are transactional and whose `Count` is a dialog.

mod common;

use adapters::process::ProcessClass;
use adapters::tcp::TcpClass;
use adapters::{
    AdapterError, AdapterKind, BackendReply, BackendRequest, DialogMarker, ReplyStatus,
    ServerClass, ServerClassConfig, Vote, WorkerId, WorkerIo,
};
use common::*;
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

/// A class of Python workers sharing one state directory.
fn kv_config(name: &str, state: &TempDir) -> ServerClassConfig {
    let dir = state.path().to_str().unwrap();
    process_config(name, &["python3", PYTHON_SERVER, "--state-dir", dir])
}

async fn kv_class(name: &str, state: &TempDir, min: usize, max: usize) -> Arc<ProcessClass> {
    let mut config = kv_config(name, state);
    config.min_workers = min;
    config.max_workers = max;
    ProcessClass::start(config, runtime()).await.unwrap()
}

fn put(key: &str, value: &str, txn: Option<&str>) -> BackendRequest {
    let mut req = request(
        "Put",
        &format!("<Put><key>{key}</key><value>{value}</value></Put>"),
    );
    req.transaction_id = txn.map(str::to_string);
    req
}

fn get(key: &str, txn: Option<&str>) -> BackendRequest {
    let mut req = request("Get", &format!("<Get><key>{key}</key></Get>"));
    req.transaction_id = txn.map(str::to_string);
    req
}

fn info() -> BackendRequest {
    request("Info", "<Info/>")
}

fn count(operation: &str, session: &str, dialog: DialogMarker) -> BackendRequest {
    let mut req = request(operation, &format!("<{operation}/>"));
    req.session_id = Some(session.to_string());
    req.dialog = dialog;
    req
}

fn on(mut req: BackendRequest, worker: &WorkerId) -> BackendRequest {
    req.worker = Some(worker.clone());
    req
}

/// The text of the reply's child element `name` (prefixed or not), if any.
fn field(reply: &BackendReply, name: &str) -> Option<String> {
    let body = text(&reply.payload);
    let start = [format!("<{name}>"), format!(":{name}>")]
        .iter()
        .find_map(|tag| body.find(tag.as_str()).map(|i| i + tag.len()))?;
    let rest = &body[start..];
    Some(rest[..rest.find('<')?].to_string())
}

async fn value(class: &dyn ServerClass, key: &str, txn: Option<&str>) -> Option<String> {
    let reply = class.call(get(key, txn)).await.unwrap();
    assert_eq!(reply.status, ReplyStatus::Ok, "{reply:?}");
    field(&reply, "value")
}

fn status_of(class: &ProcessClass, worker: &str) -> Option<adapters::process::WorkerStatus> {
    class.status().workers.into_iter().find(|w| w.id == worker)
}

/// `kill -9` the worker, and wait until the pool has noticed.
async fn kill(class: &ProcessClass, worker: &WorkerId) {
    let pid = status_of(class, worker).and_then(|w| w.pid).unwrap();
    // SAFETY: kill(2) with a pid this test's pool started; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    assert!(wait_for(Duration::from_secs(3), || !class.worker_alive(worker)).await);
}

#[tokio::test]
async fn a_transaction_pins_its_worker_until_commit() {
    transaction_pins_its_worker_until_commit(WorkerIo::Class).await;
}

/// The same with workers on the caller's runtime (`worker_io = "caller"`): the pins, the reaper
/// and commit do not depend on where a worker's I/O runs.
#[tokio::test]
async fn a_transaction_pins_its_worker_until_commit_with_workers_on_the_callers_runtime() {
    transaction_pins_its_worker_until_commit(WorkerIo::Caller).await;
}

async fn transaction_pins_its_worker_until_commit(io: WorkerIo) {
    let state = TempDir::new().unwrap();
    let mut config = kv_config("pin", &state);
    config.worker_io = io;
    config.min_workers = 0;
    config.max_workers = 3;
    config.idle_timeout = Duration::from_millis(100);
    let class = ProcessClass::start(config, runtime()).await.unwrap();

    let w = class.call(put("k", "v1", Some("t1"))).await.unwrap().worker;
    let pinned = status_of(&class, &w).unwrap();
    assert_eq!(pinned.transaction.as_deref(), Some("t1"));
    assert!(!pinned.prepared);

    // Free work goes elsewhere, and does not see the uncommitted write.
    let other = class.call(get("k", None)).await.unwrap();
    assert_ne!(other.worker, w);
    assert_eq!(field(&other, "value"), None);
    // The transaction sees its own write on its worker, which more of its work goes to even
    // when the request does not name it.
    let mine = class.call(on(get("k", Some("t1")), &w)).await.unwrap();
    assert_eq!(field(&mine, "value").as_deref(), Some("v1"));
    assert_eq!(class.call(get("k", Some("t1"))).await.unwrap().worker, w);

    // Idle far beyond idle_timeout: the unpinned worker is reaped, the pinned one is not.
    assert!(wait_for(Duration::from_secs(3), || class.status().workers.len() == 1).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(class.worker_alive(&w));

    class.commit(Some(&w), "t1").await.unwrap();
    assert_eq!(status_of(&class, &w).and_then(|s| s.transaction), None);
    assert_eq!(value(&*class, "k", None).await.as_deref(), Some("v1"));
    // Released: now it may be reaped like any other worker (min_workers = 0).
    assert!(wait_for(Duration::from_secs(3), || !class.worker_alive(&w)).await);
    class.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn targeted_requests_queue_behind_their_worker() {
    let state = TempDir::new().unwrap();
    let class = kv_class("target", &state, 2, 3).await;
    let w = class.call(put("a", "1", Some("t"))).await.unwrap().worker;

    // A slow request of the transaction, then a second one while it runs: the second waits in
    // the worker's own queue instead of going to an idle worker.
    let slow = {
        let class = class.clone();
        let mut req = on(request("Info", "<Info><sleepMs>500</sleepMs></Info>"), &w);
        req.transaction_id = Some("t".into());
        tokio::spawn(async move { class.call(req).await })
    };
    assert!(
        wait_for(Duration::from_secs(2), || status_of(&class, &w)
            .unwrap()
            .busy)
        .await
    );
    let second = {
        let class = class.clone();
        let req = on(put("b", "2", Some("t")), &w);
        tokio::spawn(async move { class.call(req).await })
    };
    assert!(
        wait_for(Duration::from_secs(2), || status_of(&class, &w)
            .unwrap()
            .queued
            == 1)
        .await
    );
    // Meanwhile free work is served by another worker.
    assert_ne!(class.call(info()).await.unwrap().worker, w);
    assert_eq!(slow.await.unwrap().unwrap().worker, w);
    assert_eq!(second.await.unwrap().unwrap().worker, w);
    assert_eq!(value(&*class, "b", None).await, None);

    // A worker holds one transaction: another one targeted at it is refused.
    match class.call(on(put("c", "3", Some("u")), &w)).await {
        Err(AdapterError::Unsupported { reason, .. }) => {
            assert!(reason.contains("holds transaction t"), "{reason}")
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    class.abort(Some(&w), "t").await.unwrap();
    assert_eq!(status_of(&class, &w).unwrap().transaction, None);
    assert_eq!(value(&*class, "a", None).await, None);
    class.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_killed_participant_is_gone_with_its_unprepared_work() {
    let state = TempDir::new().unwrap();
    let class = kv_class("gone", &state, 2, 2).await;
    let w = class
        .call(put("k", "lost", Some("t")))
        .await
        .unwrap()
        .worker;
    kill(&class, &w).await;

    for result in [
        class.call(on(get("k", Some("t")), &w)).await.map(|_| ()),
        class.prepare(&w, "t").await.map(|_| ()),
        // One-phase commit: no other worker has the work, so it must not be acknowledged.
        class.commit(Some(&w), "t").await,
    ] {
        match result {
            Err(AdapterError::PinnedWorkerGone { worker, .. }) => assert_eq!(worker, w),
            other => panic!("expected PinnedWorkerGone, got {other:?}"),
        }
    }
    // Aborting is fine: any worker acknowledges.
    class.abort(Some(&w), "t").await.unwrap();
    assert_eq!(value(&*class, "k", None).await, None);
    assert!(class.recover().await.unwrap().is_empty());
    class.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn prepare_yes_keeps_the_pin_and_no_releases_it() {
    let state = TempDir::new().unwrap();
    let class = kv_class("vote", &state, 2, 3).await;
    let yes = class
        .call(put("y", "1", Some("t-yes")))
        .await
        .unwrap()
        .worker;
    let no = class
        .call(put("n", "1", Some("t-no")))
        .await
        .unwrap()
        .worker;
    assert_ne!(yes, no);
    let mut veto = on(request("RollbackOnly", "<RollbackOnly/>"), &no);
    veto.transaction_id = Some("t-no".into());
    assert_eq!(class.call(veto).await.unwrap().status, ReplyStatus::Ok);

    assert_eq!(class.prepare(&yes, "t-yes").await.unwrap(), Vote::Yes);
    let s = status_of(&class, &yes).unwrap();
    assert_eq!(
        (s.transaction.as_deref(), s.prepared),
        (Some("t-yes"), true)
    );
    assert_eq!(class.recover().await.unwrap(), vec!["t-yes".to_string()]);

    assert_eq!(
        class.prepare(&no, "t-no").await.unwrap(),
        Vote::No("marked rollback-only".into())
    );
    assert_eq!(status_of(&class, &no).unwrap().transaction, None);

    class.commit(Some(&yes), "t-yes").await.unwrap();
    assert_eq!(status_of(&class, &yes).unwrap().transaction, None);
    assert_eq!(value(&*class, "y", None).await.as_deref(), Some("1"));
    assert_eq!(value(&*class, "n", None).await, None);
    assert!(class.recover().await.unwrap().is_empty());
    class.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn phase_two_on_a_dead_participant_goes_to_another_worker() {
    let state = TempDir::new().unwrap();
    let class = kv_class("phase2", &state, 2, 2).await;
    let w = class
        .call(put("k", "durable", Some("t")))
        .await
        .unwrap()
        .worker;
    assert_eq!(class.prepare(&w, "t").await.unwrap(), Vote::Yes);
    kill(&class, &w).await;

    class.commit(Some(&w), "t").await.unwrap();
    assert_eq!(value(&*class, "k", None).await.as_deref(), Some("durable"));
    assert!(class.recover().await.unwrap().is_empty());
    // Idempotent.
    class.commit(Some(&w), "t").await.unwrap();
    class.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn recover_lists_what_a_killed_worker_prepared() {
    let state = TempDir::new().unwrap();
    let class = kv_class("recover", &state, 1, 2).await;
    let w = class.call(put("k", "v", Some("t/1"))).await.unwrap().worker;
    assert_eq!(class.prepare(&w, "t/1").await.unwrap(), Vote::Yes);
    kill(&class, &w).await;

    // The replacement worker finds it in the shared state directory.
    assert_eq!(class.recover().await.unwrap(), vec!["t/1".to_string()]);
    class.abort(None, "t/1").await.unwrap();
    assert!(class.recover().await.unwrap().is_empty());
    assert_eq!(value(&*class, "k", None).await, None);
    class.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn commit_without_a_worker_goes_to_the_holder() {
    let state = TempDir::new().unwrap();
    let class = kv_class("holder", &state, 2, 2).await;
    let w = class.call(put("k", "v", Some("t"))).await.unwrap().worker;
    class.commit(None, "t").await.unwrap();
    assert_eq!(status_of(&class, &w).unwrap().transaction, None);
    assert_eq!(value(&*class, "k", None).await.as_deref(), Some("v"));
    class.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn dialogs_begin_continue_end_and_abort() {
    dialogs_begin_continue_end_and_abort_with(WorkerIo::Class).await;
}

/// The same with workers on the caller's runtime (`worker_io = "caller"`).
#[tokio::test]
async fn dialogs_begin_continue_end_and_abort_with_workers_on_the_callers_runtime() {
    dialogs_begin_continue_end_and_abort_with(WorkerIo::Caller).await;
}

async fn dialogs_begin_continue_end_and_abort_with(io: WorkerIo) {
    let state = TempDir::new().unwrap();
    let mut config = kv_config("dialog", &state);
    config.min_workers = 1;
    config.max_workers = 3;
    config.worker_io = io;
    let class = ProcessClass::start(config, runtime()).await.unwrap();

    let first = class
        .call(count("Count", "s1", DialogMarker::Begin))
        .await
        .unwrap();
    assert_eq!(first.status, ReplyStatus::DialogContinue);
    assert_eq!(field(&first, "n").as_deref(), Some("1"));
    let w = first.worker;
    assert_eq!(status_of(&class, &w).unwrap().dialogs, 1);
    // A dialog-holding worker takes no context-free work.
    assert_ne!(class.call(info()).await.unwrap().worker, w);

    let next = class
        .call(on(count("Count", "s1", DialogMarker::Continue), &w))
        .await
        .unwrap();
    assert_eq!(
        (next.status.clone(), field(&next, "n").as_deref()),
        (ReplyStatus::DialogContinue, Some("2"))
    );
    let end = class
        .call(on(count("CountEnd", "s1", DialogMarker::Continue), &w))
        .await
        .unwrap();
    assert_eq!(
        (end.status.clone(), field(&end, "n").as_deref()),
        (ReplyStatus::DialogEnd, Some("3"))
    );
    assert_eq!(status_of(&class, &w).unwrap().dialogs, 0);

    // The broker aborts a dialog: the server forgets it, the pin is released.
    let w2 = class
        .call(count("Count", "s2", DialogMarker::Begin))
        .await
        .unwrap()
        .worker;
    assert_eq!(status_of(&class, &w2).unwrap().dialogs, 1);
    class.abort_dialog(&w2, "s2").await.unwrap();
    assert_eq!(status_of(&class, &w2).unwrap().dialogs, 0);
    // Idempotent, on the server and in the pool.
    class.abort_dialog(&w2, "s2").await.unwrap();
    let after = class
        .call(on(count("Count", "s2", DialogMarker::Continue), &w2))
        .await
        .unwrap();
    assert_eq!(after.status, ReplyStatus::DialogAbort);

    // A continue must name its worker.
    assert!(matches!(
        class
            .call(count("Count", "s3", DialogMarker::Continue))
            .await,
        Err(AdapterError::Unsupported { .. })
    ));
    class.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_dead_dialog_worker() {
    let state = TempDir::new().unwrap();
    let class = kv_class("deaddlg", &state, 1, 2).await;
    let w = class
        .call(count("Count", "s", DialogMarker::Begin))
        .await
        .unwrap()
        .worker;
    kill(&class, &w).await;
    assert!(matches!(
        class
            .call(on(count("Count", "s", DialogMarker::Continue), &w))
            .await,
        Err(AdapterError::PinnedWorkerGone { .. })
    ));
    // Aborting a dialog whose worker is gone is not an error.
    class.abort_dialog(&w, "s").await.unwrap();
    class.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn max_dialogs_per_worker_is_respected() {
    let state = TempDir::new().unwrap();
    let mut config = kv_config("maxdlg", &state);
    config.min_workers = 1;
    config.max_workers = 3;
    config.max_dialogs_per_worker = 2;
    let class = ProcessClass::start(config, runtime()).await.unwrap();

    let mut workers = Vec::new();
    for session in ["s1", "s2", "s3"] {
        let reply = class
            .call(count("Count", session, DialogMarker::Begin))
            .await
            .unwrap();
        assert_eq!(reply.status, ReplyStatus::DialogContinue);
        workers.push(reply.worker);
    }
    // Two dialogs fill the first worker; the third opens on another.
    assert_eq!(workers[0], workers[1]);
    assert_ne!(workers[0], workers[2]);
    assert_eq!(status_of(&class, &workers[0]).unwrap().dialogs, 2);
    assert_eq!(status_of(&class, &workers[2]).unwrap().dialogs, 1);
    // Context-free work goes to neither.
    let free = class.call(info()).await.unwrap().worker;
    assert!(!workers.contains(&free), "{free} {workers:?}");
    // Aborting one session's dialog twice leaves the other's pinned.
    for _ in 0..2 {
        class.abort_dialog(&workers[0], "s1").await.unwrap();
    }
    assert_eq!(status_of(&class, &workers[0]).unwrap().dialogs, 1);
    class.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn requests_carry_timeout_ms() {
    let state = TempDir::new().unwrap();
    let class = kv_class("timeoutms", &state, 1, 1).await;
    let reply = class.call(info()).await.unwrap();
    let ms: u64 = field(&reply, "timeoutMs").unwrap().parse().unwrap();
    // What is left of the 10 s request_timeout when the request was sent.
    assert!(ms > 0 && ms <= 10_000, "{ms}");
    assert_eq!(field(&reply, "worker"), Some(reply.worker.clone()));
    class.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn tcp_connections_hold_dialogs_and_transactions() {
    let state = TempDir::new().unwrap();
    let dir = state.path().to_str().unwrap();
    let server = Server::start(
        "python3",
        &[PYTHON_SERVER, "--tcp", "0", "--state-dir", dir],
    );
    let mut config = ServerClassConfig::new(
        "tcpkv",
        AdapterKind::Tcp {
            addresses: vec![server.addr.clone()],
        },
    );
    config.min_workers = 2;
    config.request_timeout = Duration::from_secs(5);
    let class = TcpClass::start(config, runtime()).await.unwrap();

    let w = class
        .call(count("Count", "s", DialogMarker::Begin))
        .await
        .unwrap()
        .worker;
    let next = class
        .call(on(count("Count", "s", DialogMarker::Continue), &w))
        .await
        .unwrap();
    assert_eq!(field(&next, "n").as_deref(), Some("2"));
    class.abort_dialog(&w, "s").await.unwrap();

    let p = class.call(put("k", "v", Some("t"))).await.unwrap().worker;
    assert_eq!(class.prepare(&p, "t").await.unwrap(), Vote::Yes);
    assert_eq!(class.recover().await.unwrap(), vec!["t".to_string()]);
    class.commit(Some(&p), "t").await.unwrap();
    assert_eq!(value(&*class, "k", None).await.as_deref(), Some("v"));
    assert!(class.worker_alive(&p));
    assert!(!class.worker_alive(&"tcpkv#99".to_string()));
    class.shutdown(Duration::from_secs(1)).await;
}
