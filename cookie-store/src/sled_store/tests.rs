//! Tests of the sled backend that need its insides (turn table, expiry index, flush counter), its
//! directory (reopen, a second open) or its on-disk bytes. What every backend must do is in the
//! conformance suite, `tests/conformance`, run against sled by `tests/sled.rs`; the crash tests,
//! which need a child process, are in `tests/crash.rs`.

use super::*;
use crate::Participant;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

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
async fn timed_out_cancelled_and_served_waiters_leave_nothing_in_the_turn_table() {
    let (_dir, store) = fresh();
    store
        .create(&record("s1", now_ms(), 60_000), Durability::Lazy)
        .await
        .unwrap();
    let (holder, _) = store.take_turn("s1", LONG, LONG).await.unwrap().unwrap();
    let err = store.take_turn("s1", LONG, Duration::from_millis(20)).await;
    assert!(matches!(err, Err(StoreError::TurnTimeout(_))), "{err:?}");
    assert_eq!(
        store.turns().waiting("s1"),
        0,
        "a timed-out waiter leaves the queue"
    );
    let cancelled =
        tokio::time::timeout(Duration::from_millis(20), store.take_turn("s1", LONG, LONG)).await;
    assert!(cancelled.is_err());
    assert_eq!(
        store.turns().waiting("s1"),
        0,
        "a dropped waiter leaves the queue"
    );
    store.release(holder).await.unwrap();
    assert_eq!(
        store.turns().len(),
        0,
        "release of the last turn removes the entry"
    );
    assert!(store.take_turn("nope", LONG, LONG).await.unwrap().is_none());
    assert_eq!(store.turns().len(), 0, "a missing session holds nothing");
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

#[tokio::test]
async fn a_store_dropped_after_lazy_writes_can_be_opened_again_at_once() {
    // sled's detached IO threads can keep the directory's lock for a moment after the drop; the
    // open waits for them (LOCK_RETRY) instead of reporting the directory in use.
    let dir = tempfile::tempdir().unwrap();
    for round in 0..20 {
        let store = SledStore::open(dir.path()).unwrap();
        for i in 0..50 {
            store
                .create(
                    &record(&format!("r{round}-{i}"), now_ms(), 60_000),
                    Durability::Lazy,
                )
                .await
                .unwrap();
        }
        drop(store);
    }
    let store = SledStore::open(dir.path()).unwrap();
    // sled flushes when the last handle goes, so even the lazy writes of the last round are there.
    assert!(stored(&store, "r19-49").await.is_some());
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
    // Dispatched to the daemon's client, which names what is wrong (more in remote::client).
    assert!(matches!(
        crate::open("cookie-store://localhost"),
        Err(StoreError::Config(ref m)) if m.contains("missing port")
    ));
    assert!(matches!(
        crate::open("redis://x"),
        Err(StoreError::Config(_))
    ));
    assert!(crate::open(&format!("sled:{}", dir.path().display())).is_ok());
}

#[test]
fn sled_url_options_are_parsed_and_bad_ones_named() {
    assert_eq!(
        SledOptions::parse_url("sled:/d").unwrap(),
        ("/d", SledOptions::default())
    );
    let (dir, options) =
        SledOptions::parse_url("sled:./x?cache_capacity_bytes=268435456&flush_every_ms=0").unwrap();
    assert_eq!(dir, "./x");
    assert_eq!(options.cache_capacity_bytes, 256 << 20);
    assert_eq!(options.flush_every_ms, None);
    // Percent-encoded values decode (the directory is a path and is taken as written).
    let (dir, options) = SledOptions::parse_url("sled:./a%20b?flush_every_ms=%32%35").unwrap();
    assert_eq!(dir, "./a%20b");
    assert_eq!(options.flush_every_ms, Some(25));
    for (url, names) in [
        (
            "sled:/d?cache_capacity_bytes=lots",
            "cache_capacity_bytes=lots",
        ),
        ("sled:/d?cache_capacity_bytes=1000", "at least 1048576"),
        ("sled:/d?flush_every=5", "unknown parameter flush_every"),
        ("sled:?flush_every_ms=5", "needs a directory"),
    ] {
        match crate::open(url) {
            Err(StoreError::Config(m)) => assert!(m.contains(names), "{url}: {m}"),
            other => panic!("{url}: {:?}", other.map(|_| ())),
        }
    }
}

// ---- records ----

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
    let queued_by = std::time::Instant::now() + Duration::from_secs(10);
    while store.turns().waiting("s1") < 1 {
        assert!(
            std::time::Instant::now() < queued_by,
            "the other runtime's take_turn never queued"
        );
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
    let b1 = BrokerInfo {
        id: "b1".into(),
        instance: "b1/0123456789ab".into(),
        advertise: "http://b1".into(),
        lease_until_ms: 2_000,
    };
    {
        let store = SledStore::open(dir.path()).unwrap();
        store.register_broker(&b1).await.unwrap();
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
    assert_eq!(store.live_brokers(1_500).await.unwrap(), [b1]);
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
async fn a_delete_takes_the_index_entries_with_the_record() {
    let (_dir, store) = fresh();
    for id in ["kept", "gone"] {
        store
            .create(
                &client_record(id, "/dsml", Some("10.0.0.1"), 60_000),
                Durability::Lazy,
            )
            .await
            .unwrap();
    }
    let (turn, _) = store.take_turn("gone", LONG, LONG).await.unwrap().unwrap();
    store.delete(turn, Durability::Lazy).await.unwrap();
    assert_eq!(store.clients.len(), 1);
    assert_eq!(store.index_entries().len(), 1);
    assert_eq!(store.index_entries()[0].1, "kept");
}

#[tokio::test]
async fn a_refile_moves_the_clients_entry_deadline_with_the_expiry_entry() {
    let (_dir, store) = fresh();
    let now = now_ms();
    // Filed 100 ms from now; kept alive until 60 s from now.
    let r = client_record("s", "/dsml", Some("10.0.0.1"), 100);
    store.create(&r, Durability::Lazy).await.unwrap();
    let (turn, mut rec) = store.take_turn("s", LONG, LONG).await.unwrap().unwrap();
    rec.idle_timeout_ms = 60_000;
    // The filed deadline has passed by the time of this write: the entries move. (Passing it is
    // the behaviour under test.)
    tokio::time::sleep(Duration::from_millis(150)).await;
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

// ---- create and delete without a sled transaction ----

fn clients_entries(store: &SledStore) -> Vec<(Vec<u8>, u64)> {
    store
        .clients
        .iter()
        .map(|entry| {
            let (k, v) = entry.unwrap();
            (
                k.to_vec(),
                u64::from_be_bytes(v.as_ref().try_into().unwrap()),
            )
        })
        .collect()
}

/// What a `create` that lost the compare-and-swap to another create of the same ID filed: its
/// entries, the way `create` writes them.
fn file_as_a_losing_create(
    store: &SledStore,
    loser: &SessionRecord,
) -> (Vec<u8>, Vec<u8>, [u8; 8]) {
    let deadline = loser.expires_at_ms();
    let key = index_key(deadline, &loser.id);
    let client = client_key(&loser.endpoint, loser.client_ip, &loser.id);
    store.expiry.insert(key.as_slice(), EMPTY).unwrap();
    store
        .clients
        .insert(client.as_slice(), &deadline.to_be_bytes())
        .unwrap();
    (key, client, deadline.to_be_bytes())
}

#[tokio::test]
async fn a_create_losing_a_race_for_its_id_leaves_the_winners_entries_as_they_were() {
    let (_dir, store) = fresh();
    let winner = client_record("s", "/dsml", Some("10.0.0.1"), 60_000);
    store.create(&winner, Durability::Lazy).await.unwrap();
    let winner_deadline = winner.expires_at_ms();
    let winner_bytes = store.sessions.get("s").unwrap().unwrap();

    // Same client key, later deadline: the clients entry is the winner's and gets its value back;
    // the loser's expiry entry goes.
    let loser = client_record("s", "/dsml", Some("10.0.0.1"), 120_000);
    let (key, client, filed) = file_as_a_losing_create(&store, &loser);
    assert_eq!(store.index_entries().len(), 2);
    store
        .undo_create_entries("s", &key, &client, &filed, Some(&winner_bytes))
        .unwrap();
    assert_eq!(store.index_entries(), [(winner_deadline, "s".to_owned())]);
    assert_eq!(clients_entries(&store), [(client.clone(), winner_deadline)]);

    // Another client IP: the loser's clients entry goes too.
    let elsewhere = client_record("s", "/dsml", Some("10.0.0.2"), 120_000);
    let (key, other_client, filed) = file_as_a_losing_create(&store, &elsewhere);
    store
        .undo_create_entries("s", &key, &other_client, &filed, Some(&winner_bytes))
        .unwrap();
    assert_eq!(store.index_entries(), [(winner_deadline, "s".to_owned())]);
    assert_eq!(clients_entries(&store), [(client, winner_deadline)]);

    // The same deadline and client as the winner's: nothing of the winner's goes.
    let (key, client, filed) = file_as_a_losing_create(&store, &winner);
    store
        .undo_create_entries("s", &key, &client, &filed, Some(&winner_bytes))
        .unwrap();
    assert_eq!(store.index_entries(), [(winner_deadline, "s".to_owned())]);
    assert_eq!(clients_entries(&store), [(client, winner_deadline)]);
}

#[tokio::test]
async fn a_retried_create_of_a_stored_id_files_nothing() {
    let (_dir, store) = fresh();
    let first = client_record("s", "/dsml", Some("10.0.0.1"), 60_000);
    store.create(&first, Durability::Lazy).await.unwrap();
    let retry = client_record("s", "/dsml", Some("10.0.0.9"), 90_000);
    assert!(matches!(
        store.create(&retry, Durability::Durable).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(store.index_entries().len(), 1);
    assert_eq!(clients_entries(&store).len(), 1);
}

#[tokio::test]
async fn entries_a_crash_left_without_their_record_are_dropped_when_met() {
    // A crash between a create's index writes and its record, or between a delete's record removal
    // and its index removals, leaves entries whose record is gone.
    let (_dir, store) = fresh();
    let now = now_ms();
    let ghost = client_record("ghost", "/dsml", Some("10.0.0.1"), 1_000);
    file_as_a_losing_create(&store, &ghost);
    store
        .create(
            &client_record("live", "/dsml", Some("10.0.0.1"), 60_000),
            Durability::Lazy,
        )
        .await
        .unwrap();

    // Before its filed deadline the ghost still counts: the count trusts a deadline ahead.
    assert_eq!(
        store
            .count_sessions("/dsml", ip("10.0.0.1"), now, 10)
            .await
            .unwrap(),
        2
    );
    // Once it has passed, the count reads the record, finds none and drops the entry; so does the
    // sweeper with the expiry entry.
    let later = now + 5_000;
    assert_eq!(
        store
            .count_sessions("/dsml", ip("10.0.0.1"), later, 10)
            .await
            .unwrap(),
        1
    );
    assert_eq!(clients_entries(&store).len(), 1);
    assert!(store.due_for_expiry(later, 10).await.unwrap().is_empty());
    assert_eq!(store.index_entries().len(), 1);
    assert_eq!(store.index_entries()[0].1, "live");
}
