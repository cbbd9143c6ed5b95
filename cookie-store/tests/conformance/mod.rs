//! The conformance suite of the [`Store`] trait: what every backend must do, run against each one.
//!
//! A backend's test file declares this module and instantiates the suite with a *factory*:
//!
//! ```ignore
//! mod conformance;
//!
//! async fn sled() -> (Arc<dyn Store>, tempfile::TempDir) {
//!     let dir = tempfile::tempdir().expect("a temporary directory");
//!     let store = SledStore::open(dir.path()).expect("a fresh sled store");
//!     (Arc::new(store), dir)
//! }
//!
//! conformance::store_conformance!(sled);
//! ```
//!
//! ## The contract
//! - `store_conformance!(factory)` expands, where it is invoked, into one `#[tokio::test]`
//!   (current-thread runtime) per behaviour, named after the behaviour (the `pub async fn`s below).
//! - `factory` is any expression callable with no arguments that returns a future (an `async fn`'s
//!   name, or a closure `|| async { … }`). Each test calls it once and needs a **fresh, empty**
//!   store: no sessions, brokers or decisions, and no turns held.
//! - The future's output is either the store alone, `Arc<dyn Store>`, or a pair
//!   `(Arc<dyn Store>, guard)`: the guard (a temporary directory, a daemon process, a database
//!   schema to drop) is any `Send + 'static` value kept alive until the test ends and dropped after
//!   the store.
//! - The factory may panic on setup failure; that fails the test with its message.
//! - Declare `mod conformance;` at the root of the test crate (the macro refers to
//!   `$crate::conformance`).
//!
//! ## What the suite assumes of "arrival order"
//! Turn order can only be tested if the test knows a waiter is queued before starting the next.
//! The suite's rule: a `take_turn` whose future has been polled once (and is pending), followed by
//! a `ping` on the same store handle that has returned, is in the session's queue. In-process
//! backends queue on the first poll; a networked backend must send the request on the first poll
//! and make `ping` answer only after everything sent before it has reached the server.
//!
//! Tests take real time only where the behaviour is about time (leases of 20–100 ms, waits of
//! 50 ms); they never assert that something is fast, only that it is not early, with generous upper
//! bounds that only a hang would exceed.

#![allow(dead_code)] // each test crate uses the whole suite; helpers may look unused to one of them

use cookie_store::{
    now_ms, BrokerInfo, Durability, Participant, SessionRecord, Store, StoreError,
    TransactionPhase, TransactionState, Turn, TxnDecision,
};
use std::any::Any;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

/// Expand into one `#[tokio::test]` per behaviour of the suite, each on a fresh store from
/// `$factory` (see the module documentation for the contract).
macro_rules! store_conformance {
    ($factory:expr) => {
        $crate::conformance::store_conformance!(@cases $factory;
            an_idle_turn_is_granted_without_waiting,
            waiters_get_the_turn_in_arrival_order,
            waiting_longer_than_allowed_times_out_and_frees_the_queue,
            an_expired_lease_passes_the_turn_and_fences_the_old_holder,
            an_expired_lease_with_nobody_waiting_goes_to_the_next_taker_at_once,
            a_cancelled_waiter_does_not_block_the_next,
            create_refuses_an_existing_id,
            a_missing_session_gives_none_and_holds_nothing,
            a_write_keeps_the_turn_and_reads_back,
            a_delete_removes_the_record_and_its_due_entry,
            a_waiter_behind_a_delete_finds_nothing,
            due_for_expiry_lists_exactly_the_due_ones_earliest_first,
            an_earlier_deadline_is_due_at_once,
            a_continue_after_the_deadline_takes_the_record_off_the_due_list,
            a_sweeper_finding_a_live_record_refiles_it_by_releasing,
            count_sessions_counts_by_endpoint_and_ip_and_stops_at_the_limit,
            count_sessions_follows_deletes_and_skips_expired_sessions,
            count_sessions_sees_a_session_kept_alive_past_its_first_deadline,
            list_sessions_pages_through_every_record_in_id_order,
            the_broker_registry_lists_brokers_whose_lease_holds,
            decisions_are_pending_until_forgotten,
            ping_and_flush_succeed,
        );
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let backend = $crate::conformance::Backend::from(($factory)().await);
                $crate::conformance::$case(backend.store.clone()).await;
                drop(backend);
            }
        )*
    };
}
pub(crate) use store_conformance;

/// A store under test and whatever must outlive it.
pub struct Backend {
    pub store: Arc<dyn Store>,
    /// Dropped after `store` (fields drop in declaration order).
    _guard: Box<dyn Any + Send>,
}

impl From<Arc<dyn Store>> for Backend {
    fn from(store: Arc<dyn Store>) -> Self {
        Backend {
            store,
            _guard: Box::new(()),
        }
    }
}

impl<G: Send + 'static> From<(Arc<dyn Store>, G)> for Backend {
    fn from((store, guard): (Arc<dyn Store>, G)) -> Self {
        Backend {
            store,
            _guard: Box::new(guard),
        }
    }
}

// ---- helpers ----

const LONG: Duration = Duration::from_secs(30);
/// Upper bound for things that should happen "at once": only a hang exceeds it.
const HANG: Duration = Duration::from_secs(10);

type Shared = Arc<dyn Store>;

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

fn client_record(
    id: &str,
    endpoint: &str,
    ip: Option<&str>,
    idle_timeout_ms: u64,
) -> SessionRecord {
    SessionRecord {
        endpoint: endpoint.into(),
        client_ip: ip.map(|ip| ip.parse().expect("a test IP")),
        ..record(id, now_ms(), idle_timeout_ms)
    }
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().expect("a test IP"))
}

/// Take the turn of a session that must exist and be free.
async fn take(store: &Shared, id: &str) -> (Turn, SessionRecord) {
    store
        .take_turn(id, LONG, LONG)
        .await
        .expect("take_turn")
        .unwrap_or_else(|| panic!("session {id} is missing"))
}

/// The stored record, read under a turn that is given back at once.
async fn stored(store: &Shared, id: &str) -> Option<SessionRecord> {
    let (turn, record) = store.take_turn(id, LONG, LONG).await.expect("take_turn")?;
    store.release(turn).await.expect("release");
    Some(record)
}

/// Whether nobody holds or waits for the turn of `id`: a zero-wait take succeeds. Gives it back.
async fn turn_is_free(store: &Shared, id: &str) -> bool {
    match store.take_turn(id, LONG, Duration::ZERO).await {
        Ok(Some((turn, _))) => {
            store.release(turn).await.expect("release");
            true
        }
        Ok(None) => true,
        Err(StoreError::TurnTimeout(_)) => false,
        Err(e) => panic!("take_turn with zero wait: {e:?}"),
    }
}

/// Start `task` (which begins with a `take_turn` that must wait) and return once that take_turn is
/// queued, by the suite's rule: polled once, then a `ping` on the same store.
async fn queued<F>(store: &Shared, task: F) -> tokio::task::JoinHandle<F::Output>
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

async fn joined<T>(handle: tokio::task::JoinHandle<T>) -> T {
    tokio::time::timeout(HANG, handle)
        .await
        .expect("a queued task hung")
        .expect("a queued task panicked")
}

fn sorted<T, K: Ord>(mut items: Vec<T>, key: impl Fn(&T) -> K) -> Vec<T> {
    items.sort_by_key(key);
    items
}

// ---- turns ----

/// A turn on an idle session is granted without waiting: a zero wait suffices, before and after
/// a release.
pub async fn an_idle_turn_is_granted_without_waiting(store: Shared) {
    store
        .create(&record("s1", now_ms(), 60_000), Durability::Lazy)
        .await
        .unwrap();
    for _ in 0..2 {
        let (turn, record) = store
            .take_turn("s1", LONG, Duration::ZERO)
            .await
            .unwrap()
            .expect("the session exists");
        assert_eq!(turn.session_id, "s1");
        assert_eq!(record.id, "s1");
        store.release(turn).await.unwrap();
    }
}

/// Waiters are served in arrival order, each after the previous one released.
pub async fn waiters_get_the_turn_in_arrival_order(store: Shared) {
    store
        .create(&record("s1", now_ms(), 60_000), Durability::Lazy)
        .await
        .unwrap();
    let (holder, _) = take(&store, "s1").await;

    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for name in ["first", "second", "third"] {
        let (store2, order2) = (store.clone(), order.clone());
        tasks.push(
            queued(&store, async move {
                let (turn, _) = store2.take_turn("s1", LONG, LONG).await.unwrap().unwrap();
                order2.lock().unwrap().push(name);
                // Hold the turn across a yield, so a later waiter could barge in if the queue let it.
                tokio::task::yield_now().await;
                store2.release(turn).await.unwrap();
            })
            .await,
        );
    }
    store.release(holder).await.unwrap();
    for task in tasks {
        joined(task).await;
    }
    assert_eq!(*order.lock().unwrap(), ["first", "second", "third"]);
    assert!(turn_is_free(&store, "s1").await);
}

/// A waiter gives up after its wait with `TurnTimeout` (a zero wait never queues), and leaves
/// nothing behind: once the holder releases, the turn is free.
pub async fn waiting_longer_than_allowed_times_out_and_frees_the_queue(store: Shared) {
    store
        .create(&record("s1", now_ms(), 60_000), Durability::Lazy)
        .await
        .unwrap();
    let (holder, _) = take(&store, "s1").await;

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
        waited >= Duration::from_millis(50) && waited < HANG,
        "{waited:?}"
    );

    let err = store
        .take_turn("s1", LONG, Duration::ZERO)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::TurnTimeout(_)),
        "a zero wait never queues: {err:?}"
    );
    store.release(holder).await.unwrap();
    assert!(
        turn_is_free(&store, "s1").await,
        "a timed-out waiter kept its place"
    );
}

/// A holder whose lease ran out loses the turn to the next waiter (not before), and every write,
/// release or delete with its old epoch is refused as `Fenced`.
pub async fn an_expired_lease_passes_the_turn_and_fences_the_old_holder(store: Shared) {
    store
        .create(&record("s1", now_ms(), 60_000), Durability::Lazy)
        .await
        .unwrap();
    // Measured from before the grant, so the lease (which starts at the grant) cannot end sooner.
    let started = Instant::now();
    let (old, seen) = store
        .take_turn("s1", Duration::from_millis(100), LONG)
        .await
        .unwrap()
        .unwrap();

    let (new, _) = take(&store, "s1").await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(90),
        "the waiter got the turn before the lease ran out ({waited:?})"
    );
    assert!(new.epoch > old.epoch);

    let stale = SessionRecord {
        dialect_state: b"old holder".to_vec(),
        ..seen.clone()
    };
    let old_turn = || Turn {
        session_id: "s1".into(),
        epoch: old.epoch,
    };
    let err = store
        .write(&old, &stale, Durability::Lazy)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Fenced { ref session_id, epoch } if session_id == "s1" && epoch == old.epoch),
        "{err:?}"
    );
    let err = store
        .write_and_release(old_turn(), &stale, Durability::Durable)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err:?}");
    let err = store.release(old_turn()).await.unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err:?}");
    let err = store
        .delete(old_turn(), Durability::Durable)
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

/// With nobody waiting, an expired lease does not keep the turn: the next taker gets it with a
/// zero wait, and the old holder is fenced.
pub async fn an_expired_lease_with_nobody_waiting_goes_to_the_next_taker_at_once(store: Shared) {
    store
        .create(&record("s1", now_ms(), 60_000), Durability::Lazy)
        .await
        .unwrap();
    let (old, _) = store
        .take_turn("s1", Duration::from_millis(20), LONG)
        .await
        .unwrap()
        .unwrap();
    // Letting the 20 ms lease run out is the behaviour under test.
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

/// A waiter whose future is dropped (its request was cancelled) neither keeps its place nor
/// swallows the turn: the next waiter gets it when the holder releases.
pub async fn a_cancelled_waiter_does_not_block_the_next(store: Shared) {
    store
        .create(&record("s1", now_ms(), 60_000), Durability::Lazy)
        .await
        .unwrap();
    let (holder, _) = take(&store, "s1").await;

    let cancelled =
        tokio::time::timeout(Duration::from_millis(30), store.take_turn("s1", LONG, LONG)).await;
    assert!(cancelled.is_err(), "the take_turn did not have to wait");

    let store2 = store.clone();
    let next = queued(
        &store,
        async move { store2.take_turn("s1", LONG, LONG).await },
    )
    .await;
    store.release(holder).await.unwrap();
    let (turn, _) = joined(next).await.unwrap().unwrap();
    store.release(turn).await.unwrap();
    assert!(turn_is_free(&store, "s1").await);
}

// ---- records ----

/// `create` of a taken ID fails with `AlreadyExists`, changes nothing and files nothing new.
pub async fn create_refuses_an_existing_id(store: Shared) {
    let r = record("s1", now_ms(), 60_000);
    store.create(&r, Durability::Durable).await.unwrap();
    let again = SessionRecord {
        dialect_state: b"second".to_vec(),
        ..r.clone()
    };
    let err = store.create(&again, Durability::Durable).await.unwrap_err();
    assert!(
        matches!(err, StoreError::AlreadyExists(ref id) if id == "s1"),
        "{err:?}"
    );
    assert!(stored(&store, "s1").await.unwrap().dialect_state.is_empty());
    assert_eq!(
        store.due_for_expiry(u64::MAX, 10).await.unwrap(),
        ["s1"],
        "a refused create files nothing"
    );
}

/// `take_turn` of an unknown ID returns `None` and holds nothing (a second one, with a zero wait,
/// also gets `None`, not `TurnTimeout`).
pub async fn a_missing_session_gives_none_and_holds_nothing(store: Shared) {
    assert!(store.take_turn("nope", LONG, LONG).await.unwrap().is_none());
    assert!(store
        .take_turn("nope", LONG, Duration::ZERO)
        .await
        .unwrap()
        .is_none());
}

/// `write` keeps the turn (nobody else gets it meanwhile); what was written is what the next
/// holder reads, every field of it.
pub async fn a_write_keeps_the_turn_and_reads_back(store: Shared) {
    store
        .create(&record("s1", now_ms(), 60_000), Durability::Durable)
        .await
        .unwrap();
    let (turn, mut r) = take(&store, "s1").await;
    r.principal = Some("bob".into());
    r.client_ip = ip("10.1.2.3");
    r.dialect_state = vec![0, 1, 2, 255];
    r.transaction = Some(TransactionState {
        id: "t-1".into(),
        phase: TransactionPhase::Active,
        participants: vec![Participant {
            server_class: "ledger".into(),
            worker: "ledger#1".into(),
        }],
        started_ms: 1,
        deadline_ms: 0,
    });
    store.write(&turn, &r, Durability::Durable).await.unwrap();
    assert!(
        !turn_is_free(&store, "s1").await,
        "a write gave the turn away"
    );
    store.release(turn).await.unwrap();
    let back = stored(&store, "s1").await.unwrap();
    assert_eq!(
        SessionRecord {
            expiry_indexed_ms: r.expiry_indexed_ms,
            ..back
        },
        r
    );

    let (turn, mut r) = take(&store, "s1").await;
    r.dialect_state = b"second write".to_vec();
    store
        .write_and_release(turn, &r, Durability::Lazy)
        .await
        .unwrap();
    assert!(turn_is_free(&store, "s1").await);
    assert_eq!(
        stored(&store, "s1").await.unwrap().dialect_state,
        b"second write"
    );
}

/// `delete` removes the record, gives the turn back and takes the record off the expiry index.
pub async fn a_delete_removes_the_record_and_its_due_entry(store: Shared) {
    store
        .create(&record("s1", now_ms(), 60_000), Durability::Durable)
        .await
        .unwrap();
    store
        .create(&record("s2", now_ms(), 60_000), Durability::Durable)
        .await
        .unwrap();
    let (turn, _) = take(&store, "s1").await;
    store.delete(turn, Durability::Durable).await.unwrap();
    assert!(store.take_turn("s1", LONG, LONG).await.unwrap().is_none());
    assert_eq!(store.due_for_expiry(u64::MAX, 10).await.unwrap(), ["s2"]);
    assert!(stored(&store, "s2").await.is_some());
}

/// A waiter queued behind the holder that deletes the record finds nothing, and holds nothing.
pub async fn a_waiter_behind_a_delete_finds_nothing(store: Shared) {
    store
        .create(&record("s1", now_ms(), 60_000), Durability::Lazy)
        .await
        .unwrap();
    let (turn, _) = take(&store, "s1").await;
    let store2 = store.clone();
    let waiter = queued(
        &store,
        async move { store2.take_turn("s1", LONG, LONG).await },
    )
    .await;
    store.delete(turn, Durability::Lazy).await.unwrap();
    assert!(joined(waiter).await.unwrap().is_none());
    assert!(store
        .take_turn("s1", LONG, Duration::ZERO)
        .await
        .unwrap()
        .is_none());
}

// ---- expiry ----

/// `due_for_expiry` returns the IDs whose deadline is at or before `now_ms`, earliest first, at
/// most `limit`.
pub async fn due_for_expiry_lists_exactly_the_due_ones_earliest_first(store: Shared) {
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
    assert!(store.due_for_expiry(u64::MAX, 0).await.unwrap().is_empty());
}

/// A write that moves the deadline earlier is seen by the sweeper at the new deadline.
pub async fn an_earlier_deadline_is_due_at_once(store: Shared) {
    let now = now_ms();
    store
        .create(&record("s1", now, 60_000), Durability::Durable)
        .await
        .unwrap();
    let (turn, mut r) = take(&store, "s1").await;
    r.idle_timeout_ms = 1_000;
    store.write(&turn, &r, Durability::Lazy).await.unwrap();
    store.release(turn).await.unwrap();
    assert!(store
        .due_for_expiry(now + 999, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.due_for_expiry(now + 1_000, 10).await.unwrap(), ["s1"]);
}

/// A continue that revives a record whose deadline had passed takes it off the due list, and files
/// it at its new deadline.
pub async fn a_continue_after_the_deadline_takes_the_record_off_the_due_list(store: Shared) {
    let now = now_ms();
    // Deadline now - 5 s: already due.
    store
        .create(&record("s1", now - 10_000, 5_000), Durability::Lazy)
        .await
        .unwrap();
    assert_eq!(store.due_for_expiry(now, 10).await.unwrap(), ["s1"]);

    let (turn, mut r) = take(&store, "s1").await;
    r.last_access_ms = now;
    store
        .write_and_release(turn, &r, Durability::Lazy)
        .await
        .unwrap();
    assert!(store.due_for_expiry(now, 10).await.unwrap().is_empty());
    assert_eq!(store.due_for_expiry(now + 5_000, 10).await.unwrap(), ["s1"]);
}

/// A sweeper may find a record due that a continue kept alive; taking its turn, seeing it alive and
/// releasing re-files it at its real deadline.
pub async fn a_sweeper_finding_a_live_record_refiles_it_by_releasing(store: Shared) {
    let now = now_ms();
    store
        .create(&record("s1", now, 40), Durability::Lazy)
        .await
        .unwrap();
    // A continue extends the session; a backend may leave its index entry at now + 40.
    let (turn, mut r) = take(&store, "s1").await;
    r.idle_timeout_ms = 60_000;
    store
        .write_and_release(turn, &r, Durability::Lazy)
        .await
        .unwrap();

    // Passing the 40 ms index entry's deadline is the behaviour under test.
    tokio::time::sleep(Duration::from_millis(60)).await;
    let due = store.due_for_expiry(now_ms(), 10).await.unwrap();
    assert!(due.is_empty() || due == ["s1"], "{due:?}");
    for id in due {
        let (turn, r) = take(&store, &id).await;
        assert!(!r.is_expired(now_ms()));
        store.release(turn).await.unwrap();
    }
    assert!(store.due_for_expiry(now_ms(), 10).await.unwrap().is_empty());
    assert_eq!(
        store.due_for_expiry(now + 60_000, 10).await.unwrap(),
        ["s1"]
    );
}

// ---- counting sessions by endpoint and client IP ----

/// Live sessions are counted per endpoint (exactly: not a path that extends it), per client IP
/// when given (IPv4-mapped IPv6 as IPv4), and counting stops at the limit.
pub async fn count_sessions_counts_by_endpoint_and_ip_and_stops_at_the_limit(store: Shared) {
    let now = now_ms();
    for (id, ep, addr) in [
        ("a1", "/dsml", Some("10.0.0.1")),
        ("a2", "/dsml", Some("10.0.0.1")),
        ("b1", "/dsml", Some("10.0.0.2")),
        ("v6", "/dsml", Some("::1")),
        ("n1", "/dsml", None),
        ("x1", "/dsml2", Some("10.0.0.1")),
        ("s1", "/soap", Some("10.0.0.1")),
    ] {
        store
            .create(&client_record(id, ep, addr, 60_000), Durability::Lazy)
            .await
            .unwrap();
    }
    let count = |endpoint: &'static str, client: Option<IpAddr>, limit: usize| {
        let store = store.clone();
        async move {
            store
                .count_sessions(endpoint, client, now, limit)
                .await
                .unwrap()
        }
    };
    assert_eq!(count("/dsml", None, 100).await, 5);
    assert_eq!(count("/dsml", None, 3).await, 3);
    assert_eq!(count("/dsml", None, 0).await, 0);
    assert_eq!(count("/dsml", ip("10.0.0.1"), 100).await, 2);
    assert_eq!(count("/dsml", ip("10.0.0.1"), 1).await, 1);
    assert_eq!(count("/dsml", ip("::ffff:10.0.0.1"), 100).await, 2);
    assert_eq!(count("/dsml", ip("::1"), 100).await, 1);
    assert_eq!(count("/dsml", ip("10.9.9.9"), 100).await, 0);
    assert_eq!(count("/dsml2", None, 100).await, 1);
    assert_eq!(count("/nope", None, 100).await, 0);
}

/// Listing pages through every record in ascending ID order, each page after the last ID of the
/// one before, without holding turns (a held session is listed, and its turn stays held); a
/// deleted session is not listed.
pub async fn list_sessions_pages_through_every_record_in_id_order(store: Shared) {
    assert!(store.list_sessions(None, 10).await.unwrap().is_empty());
    for id in ["c3", "a1", "e5", "b2", "d4"] {
        store
            .create(&client_record(id, "/soap", None, 60_000), Durability::Lazy)
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list_sessions(after.as_deref(), 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        seen.extend(page.into_iter().map(|r| (r.id, r.endpoint)));
    }
    let ids: Vec<&str> = seen.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["a1", "b2", "c3", "d4", "e5"]);
    assert!(seen.iter().all(|(_, ep)| ep == "/soap"));
    // A held turn does not hide the record, and listing does not take it.
    let (turn, _) = store
        .take_turn("b2", Duration::from_secs(5), Duration::ZERO)
        .await
        .unwrap()
        .expect("b2 exists");
    let listed = store.list_sessions(Some("a1"), 1).await.unwrap();
    assert_eq!(listed.first().map(|r| r.id.as_str()), Some("b2"));
    store.delete(turn, Durability::Lazy).await.unwrap();
    let all: Vec<String> = store
        .list_sessions(None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(all, ["a1", "c3", "d4", "e5"]);
}

/// A deleted session stops counting at once; an expired one stops counting at its deadline, before
/// the sweeper deletes it.
pub async fn count_sessions_follows_deletes_and_skips_expired_sessions(store: Shared) {
    let now = now_ms();
    for (id, idle) in [("live", 60_000), ("gone", 60_000), ("stale", 1_000)] {
        store
            .create(
                &client_record(id, "/dsml", Some("10.0.0.1"), idle),
                Durability::Lazy,
            )
            .await
            .unwrap();
    }
    let client = ip("10.0.0.1");
    assert_eq!(
        store
            .count_sessions("/dsml", client, now, 10)
            .await
            .unwrap(),
        3
    );

    let (turn, _) = take(&store, "gone").await;
    store.delete(turn, Durability::Lazy).await.unwrap();
    assert_eq!(
        store
            .count_sessions("/dsml", client, now, 10)
            .await
            .unwrap(),
        2
    );

    // Two seconds later "stale" has expired: not counted, though not swept yet.
    let later = now + 2_000;
    assert_eq!(
        store
            .count_sessions("/dsml", client, later, 10)
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
    assert_eq!(store.due_for_expiry(later, 10).await.unwrap(), ["stale"]);
    let (turn, _) = take(&store, "stale").await;
    store.delete(turn, Durability::Lazy).await.unwrap();
    assert_eq!(
        store.count_sessions("/dsml", None, now, 10).await.unwrap(),
        1
    );
}

/// A session whose first deadline passed but that a continue kept alive still counts, until its
/// real deadline.
pub async fn count_sessions_sees_a_session_kept_alive_past_its_first_deadline(store: Shared) {
    let start = now_ms();
    let r = SessionRecord {
        last_access_ms: start - 5_000,
        created_ms: start - 5_000,
        ..client_record("s", "/dsml", Some("10.0.0.1"), 6_000)
    };
    store.create(&r, Durability::Lazy).await.unwrap();
    let (turn, mut rec) = take(&store, "s").await;
    rec.last_access_ms = start;
    store
        .write_and_release(turn, &rec, Durability::Lazy)
        .await
        .unwrap();
    let client = ip("10.0.0.1");
    // Past the first deadline (start + 1 s), before the real one (start + 6 s): counted.
    assert_eq!(
        store
            .count_sessions("/dsml", client, start + 3_000, 10)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .count_sessions("/dsml", client, start + 7_000, 10)
            .await
            .unwrap(),
        0
    );
}

// ---- registry and decision log ----

/// `live_brokers` lists the brokers whose lease ends after `now_ms`, every field as registered; a
/// registration of a known ID replaces it (a heartbeat, or a restart with a new instance).
pub async fn the_broker_registry_lists_brokers_whose_lease_holds(store: Shared) {
    let broker = |id: &str, boot: &str, lease_until_ms: u64| BrokerInfo {
        id: id.into(),
        instance: format!("{id}/{boot}"),
        advertise: format!("http://{id}.example:8080"),
        lease_until_ms,
    };
    assert!(store.live_brokers(0).await.unwrap().is_empty());
    let (b1, b2) = (
        broker("b1", "0123456789ab", 2_000),
        broker("b2", "aa", 1_000),
    );
    store.register_broker(&b1).await.unwrap();
    store.register_broker(&b2).await.unwrap();

    let live = |now: u64| {
        let store = store.clone();
        async move { sorted(store.live_brokers(now).await.unwrap(), |b| b.id.clone()) }
    };
    assert_eq!(live(500).await, vec![b1.clone(), b2]);
    assert_eq!(live(1_500).await, vec![b1.clone()]);
    assert_eq!(
        live(1_000).await,
        vec![b1],
        "a lease ending at now no longer holds"
    );
    assert!(live(2_000).await.is_empty());

    let b2_restarted = broker("b2", "bb", 3_000);
    store.register_broker(&b2_restarted).await.unwrap();
    assert_eq!(live(2_500).await, [b2_restarted]);
}

/// A logged decision is pending until forgotten; forgetting an unknown one is not an error.
pub async fn decisions_are_pending_until_forgotten(store: Shared) {
    assert!(store.pending_decisions().await.unwrap().is_empty());
    let decision = TxnDecision {
        txn_id: "t-1".into(),
        session_id: "s-1".into(),
        commit: true,
        participants: vec![
            Participant {
                server_class: "ledger".into(),
                worker: "ledger#1".into(),
            },
            Participant {
                server_class: "audit".into(),
                worker: "audit#2".into(),
            },
        ],
        coordinator: "b1".into(),
        decided_ms: 5,
    };
    let abort = TxnDecision {
        txn_id: "t-2".into(),
        commit: false,
        participants: vec![],
        ..decision.clone()
    };
    store.log_decision(&decision).await.unwrap();
    store.log_decision(&abort).await.unwrap();
    assert_eq!(
        sorted(store.pending_decisions().await.unwrap(), |d| d
            .txn_id
            .clone()),
        [decision.clone(), abort]
    );
    store.forget_decision("t-2").await.unwrap();
    store.forget_decision("never-logged").await.unwrap();
    assert_eq!(store.pending_decisions().await.unwrap(), [decision]);
}

/// `ping` answers on a working store; `flush` succeeds with and without writes to flush.
pub async fn ping_and_flush_succeed(store: Shared) {
    store.ping().await.unwrap();
    store.flush().await.unwrap();
    store
        .create(&record("s1", now_ms(), 60_000), Durability::Lazy)
        .await
        .unwrap();
    store.flush().await.unwrap();
    store.ping().await.unwrap();
    assert!(stored(&store, "s1").await.is_some());
}
