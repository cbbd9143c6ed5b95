//! The process adapter against the real `sample-server` binary and the Python reference server.

mod common;

use adapters::process::ProcessClass;
use adapters::{AdapterError, ReplyStatus, ServerClass};
use common::*;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test]
async fn echo_round_trip() {
    let class = ProcessClass::start(echo_config("rt"), runtime())
        .await
        .unwrap();
    let reply = class.call(echo("<a>1</a><b>two</b>")).await.unwrap();
    assert_eq!(reply.status, ReplyStatus::Ok);
    assert_eq!(
        text(&reply.payload),
        r#"<EchoResponse xmlns="urn:test"><a>1</a><b>two</b></EchoResponse>"#
    );
    assert_eq!(reply.worker, "rt#1");

    let reply = class.call(request("Nope", "<Nope/>")).await.unwrap();
    assert_eq!(
        reply.status,
        ReplyStatus::Fault {
            code: "Client".into(),
            string: "unknown operation Nope".into()
        }
    );
    class.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn python_reference_server_as_a_process_class() {
    let class = ProcessClass::start(process_config("py", &["python3", PYTHON_SERVER]), runtime())
        .await
        .unwrap();
    let reply = class
        .call(request(
            "Echo",
            r#"<e:Echo xmlns:e="urn:e"><e:x>1</e:x></e:Echo>"#,
        ))
        .await
        .unwrap();
    assert_eq!(reply.status, ReplyStatus::Ok);
    assert_eq!(
        text(&reply.payload),
        r#"<e:EchoResponse xmlns:e="urn:e"><e:x>1</e:x></e:EchoResponse>"#
    );
    let reply = class.call(request("Other", "<Other/>")).await.unwrap();
    assert!(matches!(reply.status, ReplyStatus::Fault { ref code, .. } if code == "Client"));
    class.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn grows_to_max_workers_then_queues() {
    let mut config = echo_config("grow");
    config.min_workers = 1;
    config.max_workers = 3;
    let class = ProcessClass::start(config, runtime()).await.unwrap();
    assert_eq!(class.status().workers.len(), 1);

    let calls: Vec<_> = (0..6)
        .map(|_| {
            let class = class.clone();
            tokio::spawn(async move { class.call(echo("<sleepMs>400</sleepMs>")).await })
        })
        .collect();
    // Three busy workers and three requests waiting: grown to the maximum, not beyond.
    assert!(
        wait_for(Duration::from_secs(3), || {
            let s = class.status();
            s.workers.iter().filter(|w| w.busy).count() == 3 && s.queued == 3
        })
        .await,
        "{:?}",
        class.status()
    );
    assert_eq!(class.status().workers.len(), 3);
    assert_eq!(class.status().starting, 0);

    let mut workers = HashSet::new();
    for call in calls {
        let reply = call.await.unwrap().unwrap();
        assert_eq!(reply.status, ReplyStatus::Ok);
        workers.insert(reply.worker);
    }
    assert_eq!(workers.len(), 3, "{workers:?}");
    class.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn queue_full_faults_at_once() {
    let mut config = echo_config("full");
    config.min_workers = 1;
    config.max_workers = 1;
    config.queue_limit = 2;
    let class = ProcessClass::start(config, runtime()).await.unwrap();
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let class = class.clone();
            tokio::spawn(async move { class.call(echo("<sleepMs>300</sleepMs>")).await })
        })
        .collect();
    assert!(wait_for(Duration::from_secs(3), || class.status().queued == 2).await);

    let started = Instant::now();
    match class.call(echo("")).await {
        Err(AdapterError::QueueFull { limit: 2, .. }) => {}
        other => panic!("expected QueueFull, got {other:?}"),
    }
    // At once: not after the 300 ms the queued requests take.
    assert!(started.elapsed() < Duration::from_millis(250));
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().status, ReplyStatus::Ok);
    }
    class.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn timeout_recycles_the_worker() {
    let mut config = echo_config("slow");
    config.min_workers = 1;
    config.max_workers = 1;
    config.request_timeout = Duration::from_millis(300);
    let class = ProcessClass::start(config, runtime()).await.unwrap();
    let first = class.status().workers[0].clone();
    let pid = first.pid.unwrap();

    let started = Instant::now();
    match class.call(echo("<sleepMs>5000</sleepMs>")).await {
        Err(AdapterError::Timeout {
            timeout_ms: 300, ..
        }) => {}
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));

    // The next request is served by a fresh worker; the hung one is gone.
    let reply = class.call(echo("<n>2</n>")).await.unwrap();
    assert_eq!(reply.status, ReplyStatus::Ok);
    assert_ne!(reply.worker, first.id);
    assert!(wait_for(Duration::from_secs(3), || !alive(pid)).await);
    class.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn crash_mid_request_is_worker_lost_then_replaced() {
    let mut config = echo_config("crash");
    config.min_workers = 1;
    config.max_workers = 1;
    let class = ProcessClass::start(config, runtime()).await.unwrap();

    match class.call(echo("<crash/>")).await {
        Err(AdapterError::WorkerLost { worker, reason, .. }) => {
            assert_eq!(worker, "crash#1");
            assert!(reason.contains("exit status: 3"), "{reason}");
        }
        other => panic!("expected WorkerLost, got {other:?}"),
    }
    let reply = class.call(echo("<after/>")).await.unwrap();
    assert_eq!(reply.status, ReplyStatus::Ok);
    assert_eq!(reply.worker, "crash#2");
    class.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_missing_command_is_unreachable_at_start() {
    let config = process_config("missing", &["/nonexistent/legacy-server", "--flag"]);
    match ProcessClass::start(config, runtime()).await {
        Err(AdapterError::Unreachable { reason, .. }) => {
            assert!(
                reason.contains("/nonexistent/legacy-server --flag"),
                "{reason}"
            );
            assert!(reason.contains("No such file"), "{reason}");
        }
        Err(other) => panic!("expected Unreachable, got {other:?}"),
        Ok(_) => panic!("expected Unreachable, got a class"),
    }
}

#[tokio::test]
async fn a_command_that_exits_at_once_is_unreachable_at_start() {
    let config = process_config(
        "quitter",
        &["sh", "-c", "echo 'no config file' >&2; exit 4"],
    );
    match ProcessClass::start(config, runtime()).await {
        Err(AdapterError::Unreachable { reason, .. }) => {
            assert!(reason.contains("before HELLO"), "{reason}");
            assert!(reason.contains("exit status: 4"), "{reason}");
        }
        Err(other) => panic!("expected Unreachable, got {other:?}"),
        Ok(_) => panic!("expected Unreachable, got a class"),
    }
}

#[tokio::test]
async fn idle_workers_are_reaped_down_to_min() {
    let mut config = echo_config("reap");
    config.min_workers = 1;
    config.max_workers = 3;
    config.idle_timeout = Duration::from_millis(300);
    let class = ProcessClass::start(config, runtime()).await.unwrap();
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let class = class.clone();
            tokio::spawn(async move { class.call(echo("<sleepMs>200</sleepMs>")).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let pids: Vec<u32> = class
        .status()
        .workers
        .iter()
        .filter_map(|w| w.pid)
        .collect();
    assert_eq!(pids.len(), 3);
    assert!(wait_for(Duration::from_secs(5), || class.status().workers.len() == 1).await);
    let kept = class.status().workers[0].pid.unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || {
            pids.iter().filter(|p| **p != kept).all(|p| !alive(*p))
        })
        .await
    );
    // Still serving with the one left.
    assert_eq!(class.call(echo("")).await.unwrap().status, ReplyStatus::Ok);
    class.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn shutdown_finishes_in_flight_work_and_stops_the_children() {
    let mut config = echo_config("stop");
    config.min_workers = 2;
    let class = ProcessClass::start(config, runtime()).await.unwrap();
    let pids: Vec<u32> = class
        .status()
        .workers
        .iter()
        .filter_map(|w| w.pid)
        .collect();
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|p| alive(*p)));

    let in_flight = {
        let class = class.clone();
        tokio::spawn(async move { class.call(echo("<sleepMs>300</sleepMs>")).await })
    };
    // Shut down only once the request is on a worker (in flight, not merely submitted).
    let busy = || class.status().workers.iter().any(|w| w.busy);
    assert!(wait_for(Duration::from_secs(3), busy).await);
    class.shutdown(Duration::from_secs(5)).await;

    assert_eq!(in_flight.await.unwrap().unwrap().status, ReplyStatus::Ok);
    assert!(
        pids.iter().all(|p| !alive(*p)),
        "children still alive after shutdown"
    );
    assert!(class.status().workers.is_empty());
    assert!(matches!(
        class.call(echo("")).await,
        Err(AdapterError::ShuttingDown { .. })
    ));
}

#[tokio::test]
async fn dropping_the_class_stops_the_children() {
    let class = ProcessClass::start(echo_config("drop"), runtime())
        .await
        .unwrap();
    let pid = class.status().workers[0].pid.unwrap();
    drop::<Arc<ProcessClass>>(class);
    assert!(wait_for(Duration::from_secs(5), || !alive(pid)).await);
}

/// A worker whose broker is gone notices its closed stdin and exits (both servers).
#[test]
fn workers_exit_when_stdin_closes() {
    for command in [vec![SAMPLE_SERVER, "echo"], vec!["python3", PYTHON_SERVER]] {
        let mut child = std::process::Command::new(command[0])
            .args(&command[1..])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "{command:?} did not exit");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(status.success(), "{command:?}: {status}");
    }
}

/// A worker started for a caller lives on the caller's runtime (no thread hand-off per request).
/// When that runtime ends, its worker task goes with it: the pool forgets the worker, whose process
/// sees its stdin close and may exit cleanly (not killed at once), serves the next caller, on
/// another runtime, with a new worker, and shuts down without waiting for the one that vanished.
#[test]
fn a_worker_whose_callers_runtime_ended_is_forgotten_and_replaced() {
    let marks = tempfile::TempDir::new().unwrap();
    let current = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    // The shell writes a mark once the server has exited on end of file: only a worker process
    // that was not killed leaves one.
    let script = format!(
        "\"$0\" echo; echo clean > \"{}/$$\"",
        marks.path().display()
    );
    let mut config = process_config("home", &["sh", "-c", &script, SAMPLE_SERVER]);
    config.worker_io = adapters::WorkerIo::Caller;
    config.min_workers = 0;
    config.max_workers = 2;
    let main = current();
    let class = main
        .block_on(ProcessClass::start(config, runtime()))
        .unwrap();

    let caller = current();
    let first = caller.block_on(class.call(echo("<a/>"))).unwrap();
    let pid = class.status().workers[0].pid.expect("a process");
    assert!(class.worker_alive(&first.worker));
    drop(caller);

    main.block_on(async {
        // The vanished worker is no longer counted, and its process is gone.
        assert!(
            wait_for(Duration::from_secs(3), || {
                class.status().workers.iter().all(|w| w.id != first.worker)
            })
            .await
        );
        assert!(
            wait_for(Duration::from_secs(3), || unsafe {
                libc::kill(pid as i32, 0)
            } != 0)
            .await,
            "the vanished worker's process is gone"
        );
        let mark = marks.path().join(pid.to_string());
        assert_eq!(
            std::fs::read_to_string(&mark).ok().as_deref(),
            Some("clean\n"),
            "the vanished worker exited on its own, after its server"
        );
        let second = class.call(echo("<b/>")).await.unwrap();
        assert_eq!(second.status, ReplyStatus::Ok);
        assert_ne!(second.worker, first.worker);
        let started = Instant::now();
        class.shutdown(Duration::from_secs(1)).await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "shutdown waited for a ghost"
        );
        assert!(class.status().workers.is_empty());
    });
}
