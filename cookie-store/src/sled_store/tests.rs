//! Tests of the sled backend that need its insides (turn table, expiry index, flush counter).
//! The crash tests, which need a child process, are in `tests/crash.rs`.

use super::*;
use crate::Participant;
use parking_lot::Mutex;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

const LONG: Duration = Duration::from_secs(30);

fn record(id: &str, last_access_ms: u64, idle_timeout_ms: u64) -> SessionRecord {
    SessionRecord {
        id: id.into(),
        endpoint: "/soap".into(),
        dialect: "nonstop".into(),
        principal: Some("alice".into()),
        client_ip: None,
        created_ms: last_access_ms,
        last_access_ms,
        idle_timeout_ms,
        transaction: None,
        subsession: None,
        dialect_state: vec![],
        expiry_indexed_ms: 0,
    }
}

fn fresh() -> (tempfile::TempDir, SledStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    (dir, store)
}

/// Poll a future once with a waker that does nothing: `Ready` proves it needed no timer or wakeup.
fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(Waker::noop()))
}

async fn stored(store: &SledStore, id: &str) -> Option<SessionRecord> {
    let (turn, record) = store.take_turn(id, LONG, LONG).await.unwrap()?;
    store.release(turn).await.unwrap();
    Some(record)
}

// ---- turns ----

#[test]
fn an_idle_turn_is_granted_on_the_first_poll() {
    let (_dir, store) = fresh();
    let r = record("s1", now_ms(), 60_000);
    let mut create = store.create(&r, Durability::Lazy);
    assert!(matches!(poll_once(&mut create), Poll::Ready(Ok(()))));
    drop(create);

    // No runtime at all here: granting an idle turn must not touch a timer or wait for a wakeup.
    let mut take = store.take_turn("s1", LONG, LONG);
    let Poll::Ready(Ok(Some((turn, record)))) = poll_once(&mut take) else {
        panic!("an idle turn was not granted at once");
    };
    drop(take);
    assert_eq!(record.id, "s1");
    let mut release = store.release(turn);
    assert!(matches!(poll_once(&mut release), Poll::Ready(Ok(()))));
    drop(release);
    assert_eq!(
        store.turns().len(),
        0,
        "release of the last turn removes the entry"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn waiters_get_the_turn_in_arrival_order() {
    let (_dir, store) = fresh();
    let store = Arc::new(store);
    store
        .create(&record("s1", now_ms(), 60_000), Durability::Lazy)
        .await
        .unwrap();
    let (holder, _) = store.take_turn("s1", LONG, LONG).await.unwrap().unwrap();

    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (queued, name) in ["first", "second", "third"].into_iter().enumerate() {
        let (store2, order2) = (store.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let (turn, _) = store2.take_turn("s1", LONG, LONG).await.unwrap().unwrap();
            order2.lock().push(name);
            // Hold the turn across a yield, so a later waiter could barge in if the queue let it.
            tokio::task::yield_now().await;
            store2.release(turn).await.unwrap();
        }));
        while store.turns().waiting("s1") < queued + 1 {
            tokio::task::yield_now().await;
        }
    }
    store.release(holder).await.unwrap();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(*order.lock(), ["first", "second", "third"]);
    assert_eq!(store.turns().len(), 0);
}

#[tokio::test]
async fn waiting_longer_than_allowed_times_out_and_leaves_the_queue() {
    let (_dir, store) = fresh();
    store
        .create(&record("s1", now_ms(), 60_000), Durability::Lazy)
        .await
        .unwrap();
    let (holder, _) = store.take_turn("s1", LONG, LONG).await.unwrap().unwrap();

    let started = Instant::now();
    let err = store
        .take_turn("s1", LONG, Duration::from_millis(50))
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(
        matches!(err, StoreError::TurnTimeout(ref id) if id == "s1"),
        "{err:?}"
    );
    assert!(
        waited >= Duration::from_millis(50) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert_eq!(
        store.turns().waiting("s1"),
        0,
        "a timed-out waiter leaves the queue"
    );

    let err = store
        .take_turn("s1", LONG, Duration::ZERO)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::TurnTimeout(_)),
        "a zero wait never queues"
    );
    store.release(holder).await.unwrap();
    assert_eq!(store.turns().len(), 0);
}

#[tokio::test]
async fn an_expired_lease_passes_the_turn_and_fences_the_old_holder() {
    let (_dir, store) = fresh();
    store
        .create(&record("s1", now_ms(), 60_000), Durability::Lazy)
        .await
        .unwrap();
    let (old, seen) = store
        .take_turn("s1", Duration::from_millis(100), LONG)
        .await
        .unwrap()
        .unwrap();

    let started = Instant::now();
    let (new, _) = store.take_turn("s1", LONG, LONG).await.unwrap().unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(80),
        "the waiter got the turn before the lease ran out"
    );
    assert!(new.epoch > old.epoch);

    let stale = SessionRecord {
        dialect_state: b"old holder".to_vec(),
        ..seen.clone()
    };
    let err = store
        .write(&old, &stale, Durability::Lazy)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Fenced { ref session_id, epoch } if session_id == "s1" && epoch == old.epoch)
    );
    let old_epoch = old.epoch;
    let err = store
        .write_and_release(old, &stale, Durability::Durable)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err:?}");
    let err = store
        .release(Turn {
            session_id: "s1".into(),
            epoch: old_epoch,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err:?}");

    let fresh_state = SessionRecord {
        dialect_state: b"new holder".to_vec(),
        ..seen
    };
    store
        .write_and_release(new, &fresh_state, Durability::Lazy)
        .await
        .unwrap();
    assert_eq!(
        stored(&store, "s1").await.unwrap().dialect_state,
        b"new holder"
    );
}

#[tokio::test]
async fn an_expired_lease_with_nobody_waiting_goes_to_the_next_taker_at_once() {
    let (_dir, store) = fresh();
    store
        .create(&record("s1", now_ms(), 60_000), Durability::Lazy)
        .await
        .unwrap();
    let (old, _) = store
        .take_turn("s1", Duration::from_millis(20), LONG)
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(40)).await;
    let (new, _) = store
        .take_turn("s1", LONG, Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    assert!(new.epoch > old.epoch);
    assert!(matches!(
        store.release(old).await,
        Err(StoreError::Fenced { .. })
    ));
    store.release(new).await.unwrap();
}

#[tokio::test]
async fn a_cancelled_waiter_does_not_block_the_next() {
    let (_dir, store) = fresh();
    let store = Arc::new(store);
    store
        .create(&record("s1", now_ms(), 60_000), Durability::Lazy)
        .await
        .unwrap();
    let (holder, _) = store.take_turn("s1", LONG, LONG).await.unwrap().unwrap();

    // Cancelled while queued: its future is dropped by the timeout.
    let cancelled =
        tokio::time::timeout(Duration::from_millis(30), store.take_turn("s1", LONG, LONG)).await;
    assert!(cancelled.is_err());
    assert_eq!(
        store.turns().waiting("s1"),
        0,
        "a dropped waiter leaves the queue"
    );

    let store2 = store.clone();
    let next = tokio::spawn(async move { store2.take_turn("s1", LONG, LONG).await });
    while store.turns().waiting("s1") < 1 {
        tokio::task::yield_now().await;
    }
    store.release(holder).await.unwrap();
    let (turn, _) = tokio::time::timeout(Duration::from_secs(2), next)
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .unwrap();
    store.release(turn).await.unwrap();
    assert_eq!(store.turns().len(), 0);
}

#[tokio::test]
async fn a_waiter_dropped_after_being_handed_the_turn_passes_it_on() {
    let (_dir, store) = fresh();
    store
        .create(&record("s1", now_ms(), 60_000), Durability::Lazy)
        .await
        .unwrap();
    let (holder, _) = store.take_turn("s1", LONG, LONG).await.unwrap().unwrap();

    let mut first = store.take_turn("s1", LONG, LONG);
    assert!(poll_once(&mut first).is_pending());
    let mut second = store.take_turn("s1", LONG, LONG);
    assert!(poll_once(&mut second).is_pending());
    assert_eq!(store.turns().waiting("s1"), 2);

    // The release hands the turn to `first`, which is dropped before it ever looks.
    store.release(holder).await.unwrap();
    drop(first);
    let Poll::Ready(Ok(Some((turn, _)))) = poll_once(&mut second) else {
        panic!("the turn handed to a dropped waiter was not passed on");
    };
    drop(second);
    store.release(turn).await.unwrap();
    assert_eq!(store.turns().len(), 0);
}

#[tokio::test]
async fn epochs_grow_across_a_reopen_of_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let store = SledStore::open(dir.path()).unwrap();
        store
            .create(&record("s1", now_ms(), 60_000), Durability::Durable)
            .await
            .unwrap();
        let (turn, _) = store.take_turn("s1", LONG, LONG).await.unwrap().unwrap();
        let epoch = turn.epoch;
        store.release(turn).await.unwrap();
        epoch
    };
    let store = SledStore::open(dir.path()).unwrap();
    let (turn, _) = store.take_turn("s1", LONG, LONG).await.unwrap().unwrap();
    assert!(
        turn.epoch > first,
        "epoch {} after reopen is not above {first}",
        turn.epoch
    );
    assert_eq!(
        turn.epoch >> 40,
        (first >> 40) + 1,
        "one generation per open"
    );
    assert_eq!(store.turns().epochs().generation(), 2);
}

#[test]
fn a_second_open_of_a_held_directory_is_refused_clearly() {
    let (dir, _store) = fresh();
    let err = SledStore::open(dir.path())
        .err()
        .expect("second open must fail");
    assert!(
        matches!(err, StoreError::Unavailable(ref m) if m.contains("another process")),
        "{err}"
    );
}

#[test]
fn store_urls() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(crate::open("sled:"), Err(StoreError::Config(_))));
    assert!(matches!(
        crate::open("postgres://x/y"),
        Err(StoreError::Config(_))
    ));
    assert!(matches!(
        crate::open("redis://x"),
        Err(StoreError::Config(_))
    ));
    assert!(crate::open(&format!("sled:{}", dir.path().display())).is_ok());
}

// ---- records ----

#[tokio::test]
async fn create_refuses_an_existing_id() {
    let (_dir, store) = fresh();
    let r = record("s1", now_ms(), 60_000);
    store.create(&r, Durability::Durable).await.unwrap();
    let err = store.create(&r, Durability::Durable).await.unwrap_err();
    assert!(
        matches!(err, StoreError::AlreadyExists(ref id) if id == "s1"),
        "{err:?}"
    );
    assert_eq!(
        store.index_entries().len(),
        1,
        "a refused create files nothing"
    );
}

#[tokio::test]
async fn a_missing_session_gives_none_and_holds_nothing() {
    let (_dir, store) = fresh();
    assert!(store.take_turn("nope", LONG, LONG).await.unwrap().is_none());
    assert_eq!(store.turns().len(), 0);
    let mut again = store.take_turn("nope", LONG, Duration::ZERO);
    assert!(
        matches!(poll_once(&mut again), Poll::Ready(Ok(None))),
        "the first take_turn kept the turn"
    );
}

#[tokio::test]
async fn a_write_reads_back_and_a_delete_removes_record_and_index() {
    let (_dir, store) = fresh();
    store
        .create(&record("s1", now_ms(), 60_000), Durability::Durable)
        .await
        .unwrap();
    let (turn, mut r) = store.take_turn("s1", LONG, LONG).await.unwrap().unwrap();
    r.principal = Some("bob".into());
    r.transaction = Some(crate::TransactionState {
        id: "t-1".into(),
        phase: crate::TransactionPhase::Active,
        participants: vec![Participant {
            server_class: "ledger".into(),
            worker: "ledger#1".into(),
        }],
        started_ms: 1,
        deadline_ms: 0,
    });
    store.write(&turn, &r, Durability::Durable).await.unwrap();
    store.release(turn).await.unwrap();
    assert_eq!(stored(&store, "s1").await.unwrap(), r);

    let (turn, _) = store.take_turn("s1", LONG, LONG).await.unwrap().unwrap();
    store.delete(turn, Durability::Durable).await.unwrap();
    assert!(store.take_turn("s1", LONG, LONG).await.unwrap().is_none());
    assert!(store.index_entries().is_empty());
    assert_eq!(store.turns().len(), 0);
}

#[tokio::test]
async fn a_waiter_behind_a_delete_finds_nothing() {
    let (_dir, store) = fresh();
    let store = Arc::new(store);
    store
        .create(&record("s1", now_ms(), 60_000), Durability::Lazy)
        .await
        .unwrap();
    let (turn, _) = store.take_turn("s1", LONG, LONG).await.unwrap().unwrap();
    let store2 = store.clone();
    let waiter = tokio::spawn(async move { store2.take_turn("s1", LONG, LONG).await });
    while store.turns().waiting("s1") < 1 {
        tokio::task::yield_now().await;
    }
    store.delete(turn, Durability::Lazy).await.unwrap();
    assert!(waiter.await.unwrap().unwrap().is_none());
    assert_eq!(store.turns().len(), 0);
}

#[tokio::test]
async fn an_undecodable_record_is_a_record_error_and_holds_nothing() {
    let (_dir, store) = fresh();
    store.sessions.insert("bad", &[9u8, 9]).unwrap();
    let err = store.take_turn("bad", LONG, LONG).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Record { ref id, source: RecordError::UnknownFormat(9) } if id == "bad"),
        "{err:?}"
    );
    assert_eq!(store.turns().len(), 0);
    store.ping().await.unwrap();
}

// ---- expiry ----

#[tokio::test]
async fn due_for_expiry_lists_exactly_the_due_ones_earliest_first() {
    let (_dir, store) = fresh();
    // Deadlines relative to a base far in the future, so the real clock does not interfere.
    let base = now_ms() + 10_000_000;
    for (id, idle) in [("c", 300), ("a", 100), ("d", 400), ("b", 200)] {
        store
            .create(&record(id, base, idle), Durability::Lazy)
            .await
            .unwrap();
    }
    assert!(store
        .due_for_expiry(base + 99, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.due_for_expiry(base + 250, 10).await.unwrap(),
        ["a", "b"]
    );
    assert_eq!(
        store.due_for_expiry(base + 200, 10).await.unwrap(),
        ["a", "b"],
        "a deadline equal to now is due"
    );
    assert_eq!(
        store.due_for_expiry(base + 1000, 3).await.unwrap(),
        ["a", "b", "c"]
    );
    assert_eq!(
        store.due_for_expiry(base + 1000, 10).await.unwrap(),
        ["a", "b", "c", "d"]
    );
    assert_eq!(store.due_for_expiry(u64::MAX, 1).await.unwrap(), ["a"]);
    assert_eq!(
        stored(&store, "c").await.unwrap().expiry_indexed_ms,
        base + 300
    );
}

#[tokio::test]
async fn a_continue_write_leaves_the_index_alone() {
    let (_dir, store) = fresh();
    let now = now_ms();
    store
        .create(&record("s1", now, 60_000), Durability::Durable)
        .await
        .unwrap();
    let filed = store.index_entries();
    assert_eq!(filed, [(now + 60_000, "s1".to_owned())]);

    let (turn, mut r) = store.take_turn("s1", LONG, LONG).await.unwrap().unwrap();
    r.last_access_ms = now + 5_000;
    store
        .write_and_release(turn, &r, Durability::Lazy)
        .await
        .unwrap();

    assert_eq!(
        store.index_entries(),
        filed,
        "a later deadline must not move the entry"
    );
    let back = stored(&store, "s1").await.unwrap();
    assert_eq!(back.last_access_ms, now + 5_000);
    assert_eq!(back.expiry_indexed_ms, now + 60_000);
    assert_eq!(
        store.due_for_expiry(now + 60_000, 10).await.unwrap(),
        ["s1"]
    );
}

#[tokio::test]
async fn an_earlier_deadline_moves_the_entry_at_once() {
    let (_dir, store) = fresh();
    let now = now_ms();
    store
        .create(&record("s1", now, 60_000), Durability::Durable)
        .await
        .unwrap();
    let (turn, mut r) = store.take_turn("s1", LONG, LONG).await.unwrap().unwrap();
    r.idle_timeout_ms = 1_000;
    store.write(&turn, &r, Durability::Lazy).await.unwrap();
    store.release(turn).await.unwrap();
    assert_eq!(store.index_entries(), [(now + 1_000, "s1".to_owned())]);
    assert_eq!(
        stored(&store, "s1").await.unwrap().expiry_indexed_ms,
        now + 1_000
    );
}

#[tokio::test]
async fn a_write_after_the_filed_deadline_passed_refiles_it() {
    let (_dir, store) = fresh();
    let now = now_ms();
    // Filed at now - 5 s: already due.
    store
        .create(&record("s1", now - 10_000, 5_000), Durability::Lazy)
        .await
        .unwrap();
    assert_eq!(store.due_for_expiry(now, 10).await.unwrap(), ["s1"]);

    let (turn, mut r) = store.take_turn("s1", LONG, LONG).await.unwrap().unwrap();
    r.last_access_ms = now;
    store
        .write_and_release(turn, &r, Durability::Lazy)
        .await
        .unwrap();

    assert_eq!(store.index_entries(), [(now + 5_000, "s1".to_owned())]);
    assert_eq!(
        stored(&store, "s1").await.unwrap().expiry_indexed_ms,
        now + 5_000
    );
    assert!(store.due_for_expiry(now, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_sweeper_finding_a_live_record_refiles_it_by_releasing() {
    let (_dir, store) = fresh();
    let now = now_ms();
    store
        .create(&record("s1", now, 40), Durability::Lazy)
        .await
        .unwrap();
    // A continue extends the session; the entry stays at now + 40.
    let (turn, mut r) = store.take_turn("s1", LONG, LONG).await.unwrap().unwrap();
    r.idle_timeout_ms = 60_000;
    store
        .write_and_release(turn, &r, Durability::Lazy)
        .await
        .unwrap();
    assert_eq!(store.index_entries(), [(now + 40, "s1".to_owned())]);

    tokio::time::sleep(Duration::from_millis(60)).await;
    let due = store.due_for_expiry(now_ms(), 10).await.unwrap();
    assert_eq!(due, ["s1"]);
    let (turn, r) = store.take_turn("s1", LONG, LONG).await.unwrap().unwrap();
    assert!(!r.is_expired(now_ms()));
    store.release(turn).await.unwrap();

    assert_eq!(store.index_entries(), [(now + 60_000, "s1".to_owned())]);
    assert!(store.due_for_expiry(now_ms(), 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn due_for_expiry_drops_entries_of_missing_or_refiled_records() {
    let (_dir, store) = fresh();
    store
        .create(&record("live", 1_000, 1_000), Durability::Lazy)
        .await
        .unwrap();
    store.expiry.insert(index_key(500, "ghost"), EMPTY).unwrap();
    store.expiry.insert(index_key(700, "live"), EMPTY).unwrap();
    assert_eq!(store.index_entries().len(), 3);

    assert_eq!(store.due_for_expiry(10_000, 10).await.unwrap(), ["live"]);
    assert_eq!(store.index_entries(), [(2_000, "live".to_owned())]);
}

// ---- durability ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_durable_writes_share_flushes() {
    let (_dir, store) = fresh();
    let store = Arc::new(store);
    let before = store.flush_count();
    let start = Arc::new(tokio::sync::Barrier::new(64));
    let writers: Vec<_> = (0..64)
        .map(|i| {
            let (store, start) = (store.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                store
                    .create(
                        &record(&format!("s{i}"), now_ms(), 60_000),
                        Durability::Durable,
                    )
                    .await
                    .unwrap();
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let flushes = store.flush_count() - before;
    eprintln!("64 durable writes, {flushes} flushes");
    assert!(
        (1..64).contains(&flushes),
        "{flushes} flushes for 64 durable writes"
    );
}

#[test]
fn callable_from_several_runtimes_at_once() {
    let (_dir, store) = fresh();
    let store = Arc::new(store);
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let here = runtime();
    here.block_on(store.create(&record("s1", now_ms(), 60_000), Durability::Durable))
        .unwrap();
    let (holder, _) = here
        .block_on(store.take_turn("s1", LONG, LONG))
        .unwrap()
        .unwrap();

    // A waiter on another thread's runtime is woken by a release made on this one.
    let store2 = store.clone();
    let other = std::thread::spawn(move || {
        runtime().block_on(async {
            let (turn, mut r) = store2.take_turn("s1", LONG, LONG).await.unwrap().unwrap();
            r.dialect_state = b"other runtime".to_vec();
            store2
                .write_and_release(turn, &r, Durability::Durable)
                .await
                .unwrap();
        })
    });
    while store.turns().waiting("s1") < 1 {
        std::thread::sleep(Duration::from_millis(1));
    }
    here.block_on(store.release(holder)).unwrap();
    other.join().unwrap();
    assert_eq!(
        here.block_on(stored(&store, "s1")).unwrap().dialect_state,
        b"other runtime"
    );
}

// ---- registry and decision log ----

#[tokio::test]
async fn brokers_and_decisions_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let decision = TxnDecision {
        txn_id: "t-1".into(),
        session_id: "s-1".into(),
        commit: true,
        participants: vec![Participant {
            server_class: "ledger".into(),
            worker: "ledger#1".into(),
        }],
        coordinator: "b1".into(),
        decided_ms: 5,
    };
    {
        let store = SledStore::open(dir.path()).unwrap();
        for (id, lease) in [("b1", 2_000), ("b2", 1_000)] {
            let info = BrokerInfo {
                id: id.into(),
                instance: format!("{id}/0123456789ab"),
                advertise: format!("http://{id}"),
                lease_until_ms: lease,
            };
            store.register_broker(&info).await.unwrap();
        }
        store.log_decision(&decision).await.unwrap();
        store
            .log_decision(&TxnDecision {
                txn_id: "t-2".into(),
                ..decision.clone()
            })
            .await
            .unwrap();
        store.forget_decision("t-2").await.unwrap();
        store.flush().await.unwrap();
    }
    let store = SledStore::open(dir.path()).unwrap();
    let live: Vec<_> = store
        .live_brokers(1_500)
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(live, ["b1"]);
    assert_eq!(store.live_brokers(500).await.unwrap().len(), 2);
    assert_eq!(store.pending_decisions().await.unwrap(), [decision]);

    store
        .decisions
        .insert("t-3", &[DECISION_FORMAT_V2, 0xff])
        .unwrap();
    assert!(matches!(
        store.pending_decisions().await,
        Err(StoreError::Record { .. })
    ));
}

// ---- counting sessions by endpoint and client IP ----

fn client_record(
    id: &str,
    endpoint: &str,
    ip: Option<&str>,
    idle_timeout_ms: u64,
) -> SessionRecord {
    SessionRecord {
        endpoint: endpoint.into(),
        client_ip: ip.map(|ip| ip.parse().unwrap()),
        ..record(id, now_ms(), idle_timeout_ms)
    }
}

fn ip(s: &str) -> Option<std::net::IpAddr> {
    Some(s.parse().unwrap())
}

#[tokio::test]
async fn count_sessions_counts_by_endpoint_and_ip_and_stops_at_the_limit() {
    let (_dir, store) = fresh();
    let now = now_ms();
    for (id, ep, addr) in [
        ("a1", "/dsml", Some("10.0.0.1")),
        ("a2", "/dsml", Some("10.0.0.1")),
        ("b1", "/dsml", Some("10.0.0.2")),
        ("v6", "/dsml", Some("::1")),
        ("n1", "/dsml", None),
        // A path that extends /dsml must not be counted with it.
        ("x1", "/dsml2", Some("10.0.0.1")),
        ("s1", "/soap", Some("10.0.0.1")),
    ] {
        store
            .create(&client_record(id, ep, addr, 60_000), Durability::Lazy)
            .await
            .unwrap();
    }
    assert_eq!(
        store.count_sessions("/dsml", None, now, 100).await.unwrap(),
        5
    );
    assert_eq!(
        store.count_sessions("/dsml", None, now, 3).await.unwrap(),
        3
    );
    assert_eq!(
        store.count_sessions("/dsml", None, now, 0).await.unwrap(),
        0
    );
    assert_eq!(
        store
            .count_sessions("/dsml", ip("10.0.0.1"), now, 100)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .count_sessions("/dsml", ip("10.0.0.1"), now, 1)
            .await
            .unwrap(),
        1
    );
    // The IPv4-mapped form of an address is the same client.
    assert_eq!(
        store
            .count_sessions("/dsml", ip("::ffff:10.0.0.1"), now, 100)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .count_sessions("/dsml", ip("::1"), now, 100)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .count_sessions("/dsml", ip("10.9.9.9"), now, 100)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .count_sessions("/dsml2", None, now, 100)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.count_sessions("/nope", None, now, 100).await.unwrap(),
        0
    );
}

#[tokio::test]
async fn count_sessions_follows_deletes_and_skips_expired_sessions() {
    let (_dir, store) = fresh();
    let now = now_ms();
    store
        .create(
            &client_record("live", "/dsml", Some("10.0.0.1"), 60_000),
            Durability::Lazy,
        )
        .await
        .unwrap();
    store
        .create(
            &client_record("gone", "/dsml", Some("10.0.0.1"), 60_000),
            Durability::Lazy,
        )
        .await
        .unwrap();
    store
        .create(
            &client_record("stale", "/dsml", Some("10.0.0.1"), 1_000),
            Durability::Lazy,
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .count_sessions("/dsml", ip("10.0.0.1"), now, 10)
            .await
            .unwrap(),
        3
    );

    // A delete (EndSession, or the sweeper) removes the index entry with the record.
    let (turn, _) = store.take_turn("gone", LONG, LONG).await.unwrap().unwrap();
    store.delete(turn, Durability::Lazy).await.unwrap();
    assert_eq!(
        store
            .count_sessions("/dsml", ip("10.0.0.1"), now, 10)
            .await
            .unwrap(),
        2
    );

    // Two seconds later "stale" has expired: not counted, though not swept yet.
    let later = now + 2_000;
    assert_eq!(
        store
            .count_sessions("/dsml", ip("10.0.0.1"), later, 10)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .count_sessions("/dsml", None, later, 10)
            .await
            .unwrap(),
        1
    );

    // The sweeper's delete takes its entry away too.
    assert_eq!(store.due_for_expiry(later, 10).await.unwrap(), ["stale"]);
    let (turn, _) = store.take_turn("stale", LONG, LONG).await.unwrap().unwrap();
    store.delete(turn, Durability::Lazy).await.unwrap();
    assert_eq!(store.clients.len(), 1);
}

#[tokio::test]
async fn count_sessions_sees_a_session_kept_alive_past_its_first_deadline() {
    let (_dir, store) = fresh();
    let start = now_ms();
    let r = SessionRecord {
        last_access_ms: start - 5_000,
        created_ms: start - 5_000,
        ..client_record("s", "/dsml", Some("10.0.0.1"), 6_000)
    };
    store.create(&r, Durability::Lazy).await.unwrap();
    // A continue moves the real deadline later without touching the indexes.
    let (turn, mut rec) = store.take_turn("s", LONG, LONG).await.unwrap().unwrap();
    rec.last_access_ms = start;
    store
        .write_and_release(turn, &rec, Durability::Lazy)
        .await
        .unwrap();
    // Past the filed deadline (start + 1 s), before the real one (start + 6 s): read and counted.
    let at = start + 3_000;
    assert_eq!(
        store
            .count_sessions("/dsml", ip("10.0.0.1"), at, 10)
            .await
            .unwrap(),
        1
    );
    // Past the real one: not counted.
    assert_eq!(
        store
            .count_sessions("/dsml", ip("10.0.0.1"), start + 7_000, 10)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn a_refile_moves_the_clients_entry_deadline_with_the_expiry_entry() {
    let (_dir, store) = fresh();
    let now = now_ms();
    // Filed 1 s from now; kept alive until 60 s from now.
    let r = client_record("s", "/dsml", Some("10.0.0.1"), 1_000);
    store.create(&r, Durability::Lazy).await.unwrap();
    let (turn, mut rec) = store.take_turn("s", LONG, LONG).await.unwrap().unwrap();
    rec.idle_timeout_ms = 60_000;
    // The filed deadline has passed by the time of this write: the entries move.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    store
        .write_and_release(turn, &rec, Durability::Lazy)
        .await
        .unwrap();
    let filed: Vec<u64> = store
        .clients
        .iter()
        .values()
        .map(|v| u64::from_be_bytes(v.unwrap().as_ref().try_into().unwrap()))
        .collect();
    assert_eq!(filed.len(), 1);
    assert!(filed[0] >= now + 60_000, "{filed:?}");
    assert_eq!(store.index_entries()[0].0, filed[0]);
}

#[test]
fn client_keys_parse_back_under_either_prefix() {
    let k = client_key("/dsml", ip("10.0.0.1"), "abc");
    assert_eq!(
        client_key_id(&k, endpoint_prefix("/dsml").len()),
        Some("abc")
    );
    assert_eq!(client_key_id(&k, k.len() - 3), Some("abc"));
    let k6 = client_key("/d", ip("2001:db8::1"), "id6");
    assert_eq!(client_key_id(&k6, 0), Some("id6"));
    let none = client_key("/d", None, "idn");
    assert_eq!(client_key_id(&none, 0), Some("idn"));
    assert_eq!(client_key_id(&[0, 9, b'x'], 0), None);
    assert!(!k.starts_with(&endpoint_prefix("/dsm")));
}
