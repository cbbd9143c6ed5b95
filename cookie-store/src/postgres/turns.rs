//! Turns: a row's epoch and lease in the database, and an arrival-order queue in this process.
//!
//! ## In the database
//! A session's row carries the turn: `epoch` (from the `cookie_epochs` sequence, so strictly
//! increasing over every grant by every broker) and `lease_until` (NULL when free). Taking an idle
//! turn is one statement ([`super::statements::Statements::take`]): an `UPDATE … WHERE id = $1 AND
//! the lease is free or expired RETURNING record, epoch`, which also says, when it takes nothing,
//! whether the row exists and how long the holder's lease has left. Writes and releases name the
//! epoch; zero rows updated means the turn moved on ([`StoreError::Fenced`]). A holder that died
//! loses the turn when its lease passes: the next `take` finds it expired.
//!
//! ## In this process
//! Requests of one session that reach the same broker queue here, in arrival order, and never ask
//! the database while a request of this process holds the turn. Releasing hands the turn straight
//! to the first waiter in the same statement (`release_handover`, `write_handover`: a new epoch and
//! the waiter's lease instead of NULL), so a queued request costs no extra round trip and no timer.
//!
//! An entry exists while a request of this process holds the turn ([`State::Held`]) or while a
//! task of this store is getting it from the database for the queue ([`State::Taking`]: the
//! *driver*, or a release that is handing it over). Only that task answers the queue's front, so
//! the front is never served twice.
//!
//! ## Across processes
//! A turn held by another broker is polled for: the driver retries the `take` after 1 ms, 2 ms, 4 ms
//! … up to `turn_poll_ms` (20 ms by default), never past the holder's lease or the waiter's
//! deadline. Why polling and not LISTEN/NOTIFY: a NOTIFY takes a cluster-wide lock at commit, which
//! would serialise every release of every session to serve the rare request that waits on another
//! broker; and a session's concurrent requests normally reach one broker (sessions are sequential
//! conversations), so polling costs nothing until there is contention, and then a few cheap
//! statements that write nothing. Waiters of different processes are not ordered among themselves:
//! a poller can be overtaken by the holder's own queue, bounded by its wait.
//!
//! ## Cancellation
//! Everything that talks to the database runs as a task on the store's runtime, so a caller that
//! gives up (its future dropped) never leaves a statement half-done. A waiter dropped while queued
//! leaves the queue; one dropped just after being handed the turn gives it back.

use super::pool::{db_error, Class};
use super::{class_of, decode_record, ms, Inner, Row};
use crate::{now_ms, Durability, SessionRecord, StoreError, Turn};
use parking_lot::{Mutex, MutexGuard};
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Number of shards of the local table: enough that requests of different sessions rarely share one.
const SHARDS: usize = 64;

/// A waiter never sleeps longer than this in one go (keeps `Instant` arithmetic and tokio's timer
/// range safe for `Duration::MAX` waits).
const MAX_NAP: Duration = Duration::from_secs(24 * 3600);

/// First pause between two tries of a turn held by another process.
const FIRST_POLL: Duration = Duration::from_millis(1);

/// Longest lease asked of the database (an interval far beyond any real lease, far from overflow).
const MAX_LEASE_MS: i64 = 100 * 365 * 24 * 3600 * 1000;

/// What a waiter is sent: the turn and record, `None` when there is no such session, or the error.
pub(super) type Grant = Result<Option<(Turn, SessionRecord)>, StoreError>;

/// The turns this process holds or waits for.
pub(super) struct LocalTurns {
    shards: Box<[Mutex<HashMap<String, Entry>>]>,
    hasher: std::collections::hash_map::RandomState,
    waiter_ids: AtomicU64,
}

struct Entry {
    state: State,
    waiters: VecDeque<Waiter>,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// A task of this store is getting the turn from the database for the front of the queue.
    Taking,
    /// A request of this process holds the turn under `epoch` until `lease_until` (local clock).
    Held { epoch: u64, lease_until: Instant },
}

struct Waiter {
    id: u64,
    lease: Duration,
    deadline: Instant,
    grant: oneshot::Sender<Grant>,
}

/// What a `take` statement found. (Lives for one statement: boxing the record would only add an
/// allocation per turn.)
#[allow(clippy::large_enum_variant)]
enum Taken {
    Granted {
        epoch: u64,
        record: SessionRecord,
    },
    /// Someone else holds the turn; their lease has this long left (database clock).
    HeldElsewhere {
        lease_left: Duration,
    },
    Missing,
}

/// How a turn ends.
pub(super) enum Finish {
    Release,
    WriteRelease(Row, Durability),
    Delete(Durability),
}

impl LocalTurns {
    pub(super) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
            waiter_ids: AtomicU64::new(0),
        }
    }

    fn shard(&self, id: &str) -> MutexGuard<'_, HashMap<String, Entry>> {
        let index = (self.hasher.hash_one(id) % SHARDS as u64) as usize;
        self.shards[index].lock()
    }

    /// Forget turns whose holder's lease ran out with nobody waiting (a request that never released).
    /// The database row keeps its expired lease; the next taker takes it from there.
    pub(super) fn prune_expired(&self) {
        let now = Instant::now();
        for shard in self.shards.iter() {
            let mut map = shard.lock();
            map.retain(|_, e| {
                !(e.waiters.is_empty()
                    && matches!(e.state, State::Held { lease_until, .. } if lease_until <= now))
            });
            if map.capacity() > 64 && map.len() < map.capacity() / 4 {
                map.shrink_to_fit();
            }
        }
    }

    /// Waiters queued in this process for the turn of `id` (tests and diagnostics).
    pub(super) fn waiting(&self, id: &str) -> usize {
        self.shard(id).get(id).map_or(0, |e| e.waiters.len())
    }

    /// Sessions with an entry (held or being taken) in this process (tests and diagnostics).
    pub(super) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

impl Entry {
    /// Drop waiters at the front that went away (their futures were dropped).
    fn drop_gone(&mut self) {
        while self.waiters.front().is_some_and(|w| w.grant.is_closed()) {
            self.waiters.pop_front();
        }
    }
}

/// Take the turn of `id` (see [`crate::SessionStore::take_turn`]).
pub(super) async fn take_turn(
    inner: &Arc<Inner>,
    id: &str,
    lease: Duration,
    wait: Duration,
) -> Grant {
    let now = Instant::now();
    let deadline = later(now, wait);
    let (grant, rx) = oneshot::channel();
    let waiter_id = inner.turns.waiter_ids.fetch_add(1, Ordering::Relaxed);
    let waiter = Waiter {
        id: waiter_id,
        lease,
        deadline,
        grant,
    };
    let drive = {
        let mut map = inner.turns.shard(id);
        match map.get_mut(id) {
            None => {
                map.insert(
                    id.to_owned(),
                    Entry {
                        state: State::Taking,
                        waiters: VecDeque::from([waiter]),
                    },
                );
                true
            }
            Some(entry) => {
                let mut drive = false;
                if let State::Held { lease_until, .. } = entry.state {
                    if lease_until <= now {
                        // The holder here let its lease run out: take the turn from it.
                        entry.state = State::Taking;
                        drive = true;
                    } else if wait.is_zero() {
                        return Err(StoreError::TurnTimeout(id.to_owned()));
                    }
                }
                entry.waiters.push_back(waiter);
                drive
            }
        }
    };
    if drive {
        spawn_driver(inner, id);
    }
    let mut queued = Queued {
        inner,
        id,
        waiter_id,
        deadline,
        rx,
        settled: false,
    };
    let outcome = queued.wait().await;
    queued.settled = true;
    outcome
}

fn spawn_driver(inner: &Arc<Inner>, id: &str) {
    let (inner2, id) = (inner.clone(), id.to_owned());
    inner.handle.spawn(async move { drive(&inner2, &id).await });
}

/// Get the turn of `id` from the database for the front of its queue, until the queue is served or
/// empty. Runs while the entry is [`State::Taking`], and is the only task answering the front then.
async fn drive(inner: &Arc<Inner>, id: &str) {
    let mut pause = FIRST_POLL;
    loop {
        let lease = {
            let mut map = inner.turns.shard(id);
            let Some(entry) = map.get_mut(id) else {
                return;
            };
            entry.drop_gone();
            match entry.waiters.front() {
                Some(front) => front.lease,
                None => {
                    map.remove(id);
                    return;
                }
            }
        };
        match inner.db_take(id, lease).await {
            Ok(Taken::Granted { epoch, record }) => {
                if !deliver(inner, id, epoch, record, lease).await {
                    return;
                }
                pause = FIRST_POLL;
            }
            Ok(Taken::Missing) => {
                answer_all(inner, id, |_| Ok(None));
                return;
            }
            Ok(Taken::HeldElsewhere { lease_left }) => {
                let nap = {
                    let mut map = inner.turns.shard(id);
                    let Some(entry) = map.get_mut(id) else {
                        return;
                    };
                    let now = Instant::now();
                    // Fronts whose wait is over get their timeout now; the next one is tried next.
                    while let Some(front) = entry.waiters.front() {
                        if front.grant.is_closed() {
                            entry.waiters.pop_front();
                        } else if front.deadline <= now {
                            if let Some(w) = entry.waiters.pop_front() {
                                let _ = w.grant.send(Err(StoreError::TurnTimeout(id.to_owned())));
                            }
                        } else {
                            break;
                        }
                    }
                    let Some(front) = entry.waiters.front() else {
                        map.remove(id);
                        return;
                    };
                    pause
                        .min(lease_left.max(FIRST_POLL))
                        .min(front.deadline.saturating_duration_since(now))
                };
                tokio::time::sleep(nap).await;
                pause = (pause * 2).min(inner.options.turn_poll_max);
            }
            Err(error) => {
                answer_all(inner, id, |_| Err(duplicate(&error)));
                return;
            }
        }
    }
}

/// Send every waiter of `id` its answer and forget the entry.
fn answer_all(inner: &Inner, id: &str, answer: impl Fn(&Waiter) -> Grant) {
    let mut map = inner.turns.shard(id);
    if let Some(entry) = map.remove(id) {
        for w in entry.waiters {
            let reply = answer(&w);
            let _ = w.grant.send(reply);
        }
    }
}

/// Hand the turn `(id, epoch)`, just granted by the database with `lease`, to the first waiter
/// still listening. Returns true when nobody was, the turn was given back, and waiters arrived
/// meanwhile: the caller goes on driving.
async fn deliver(
    inner: &Arc<Inner>,
    id: &str,
    epoch: u64,
    record: SessionRecord,
    lease: Duration,
) -> bool {
    let mut record = Some(record);
    {
        let mut map = inner.turns.shard(id);
        if let Some(entry) = map.get_mut(id) {
            while let Some(w) = entry.waiters.pop_front() {
                let Some(r) = record.take() else {
                    break;
                };
                let turn = Turn {
                    session_id: id.to_owned(),
                    epoch,
                };
                match w.grant.send(Ok(Some((turn, r)))) {
                    Ok(()) => {
                        entry.state = State::Held {
                            epoch,
                            lease_until: later(Instant::now(), lease),
                        };
                        return false;
                    }
                    // That waiter went away: the record comes back for the next one.
                    Err(returned) => record = returned.ok().flatten().map(|(_, r)| r),
                }
            }
        }
    }
    // Nobody wants it any more: give it back, then see whether someone came meanwhile.
    if let Err(error) = inner.db_finish(id, epoch, &Finish::Release, None).await {
        tracing::warn!(session = %crate::short_id(id), %error, "giving back an unwanted turn");
    }
    let mut map = inner.turns.shard(id);
    match map.get_mut(id) {
        Some(entry) if !entry.waiters.is_empty() => true,
        Some(_) => {
            map.remove(id);
            false
        }
        None => false,
    }
}

/// End the turn `turn` as `how` says (see the release methods of [`crate::Store`]). Runs on the
/// store's runtime, so it completes even if its caller goes away.
pub(super) async fn finish(inner: Arc<Inner>, turn: Turn, how: Finish) -> Result<(), StoreError> {
    let Turn {
        session_id: id,
        epoch,
    } = turn;
    // Is this the turn our table says a request of ours holds? Then our queue is ours to serve.
    let (local, handover) = {
        let mut map = inner.turns.shard(&id);
        match map.get_mut(&id) {
            Some(entry) if matches!(entry.state, State::Held { epoch: e, .. } if e == epoch) => {
                entry.state = State::Taking;
                entry.drop_gone();
                let lease = match how {
                    Finish::Delete(_) => None,
                    _ => entry.waiters.front().map(|w| w.lease),
                };
                (true, lease)
            }
            _ => (false, None),
        }
    };
    let outcome = inner.db_finish(&id, epoch, &how, handover).await;
    if local {
        match &outcome {
            Ok(Some((next_epoch, record))) => {
                let (inner2, id2) = (inner.clone(), id.clone());
                let (next_epoch, record) = (*next_epoch, record.clone());
                let lease = handover.unwrap_or_default();
                inner.handle.spawn(async move {
                    if deliver(&inner2, &id2, next_epoch, record, lease).await {
                        drive(&inner2, &id2).await;
                    }
                });
            }
            // Deleted: whoever queued behind the delete finds no record.
            Ok(None) if matches!(how, Finish::Delete(_)) => answer_all(&inner, &id, |_| Ok(None)),
            // Released (or fenced, or failed): the queue, if any, goes to the database for it.
            _ => {
                let mut map = inner.turns.shard(&id);
                if map.get(&id).is_some_and(|e| e.waiters.is_empty()) {
                    map.remove(&id);
                } else {
                    drop(map);
                    spawn_driver(&inner, &id);
                }
            }
        }
    }
    outcome.map(drop)
}

impl Inner {
    /// One `take` statement for `id` with `lease`.
    async fn db_take(&self, id: &str, lease: Duration) -> Result<Taken, StoreError> {
        let conn = self.pools.get(Class::Lazy)?;
        let rows = conn
            .client
            .query(&conn.st.take, &[&id, &lease_ms(lease)])
            .await
            .map_err(|e| db_error(&self.target, "taking a turn", &e))?;
        let Some(row) = rows.first() else {
            return Ok(Taken::Missing);
        };
        let epoch: Option<i64> = self.col(row, 1)?;
        let Some(epoch) = epoch else {
            let left: Option<i64> = self.col(row, 3)?;
            return Ok(Taken::HeldElsewhere {
                lease_left: Duration::from_millis(left.unwrap_or(0).max(0) as u64),
            });
        };
        let epoch = epoch.max(0) as u64;
        let bytes: Vec<u8> = self.col(row, 0)?;
        let expiry: i64 = self.col(row, 2)?;
        match decode_record(id, &bytes, expiry) {
            Ok(record) => Ok(Taken::Granted { epoch, record }),
            Err(e) => {
                // Holding nothing after an error: give the turn straight back.
                let _ = self.db_finish(id, epoch, &Finish::Release, None).await;
                Err(e)
            }
        }
    }

    /// The statement that ends turn `(id, epoch)` as `how` says; with `handover`, the turn goes to a
    /// waiter of this process with that lease and its grant is returned.
    pub(super) async fn db_finish(
        &self,
        id: &str,
        epoch: u64,
        how: &Finish,
        handover: Option<Duration>,
    ) -> Result<Option<(u64, SessionRecord)>, StoreError> {
        let fenced = || StoreError::Fenced {
            session_id: id.to_owned(),
            epoch,
        };
        let db_epoch = i64::try_from(epoch).map_err(|_| fenced())?;
        let now = ms(now_ms());
        let (class, doing) = match how {
            Finish::Release => (Class::Lazy, "releasing a turn"),
            Finish::WriteRelease(_, d) => (class_of(*d), "writing a session"),
            Finish::Delete(d) => (class_of(*d), "deleting a session"),
        };
        let conn = self.pools.get(class)?;
        let (client, st) = (&conn.client, &conn.st);
        let failed = |e: tokio_postgres::Error| db_error(&self.target, doing, &e);
        match (how, handover) {
            (Finish::Release, None) => {
                let n = client
                    .execute(&st.release, &[&id, &db_epoch, &now])
                    .await
                    .map_err(failed)?;
                if n == 0 {
                    return Err(fenced());
                }
                Ok(None)
            }
            (Finish::Release, Some(lease)) => {
                let rows = client
                    .query(
                        &st.release_handover,
                        &[&id, &db_epoch, &now, &lease_ms(lease)],
                    )
                    .await
                    .map_err(failed)?;
                match self.grant_of(id, rows.first())? {
                    Some(grant) => Ok(Some(grant)),
                    None => Err(fenced()),
                }
            }
            (Finish::WriteRelease(row, _), None) => {
                let n = client
                    .execute(
                        &st.write_release,
                        &[
                            &id,
                            &db_epoch,
                            &row.bytes,
                            &row.endpoint,
                            &row.client_ip,
                            &row.expires_ms,
                            &now,
                        ],
                    )
                    .await
                    .map_err(failed)?;
                if n == 0 {
                    return Err(fenced());
                }
                Ok(None)
            }
            (Finish::WriteRelease(row, _), Some(lease)) => {
                let rows = client
                    .query(
                        &st.write_handover,
                        &[
                            &id,
                            &db_epoch,
                            &row.bytes,
                            &row.endpoint,
                            &row.client_ip,
                            &row.expires_ms,
                            &now,
                            &lease_ms(lease),
                        ],
                    )
                    .await
                    .map_err(failed)?;
                match self.grant_of(id, rows.first())? {
                    Some(grant) => Ok(Some(grant)),
                    None => Err(fenced()),
                }
            }
            (Finish::Delete(_), _) => {
                let n = client
                    .execute(&st.delete, &[&id, &db_epoch])
                    .await
                    .map_err(failed)?;
                if n == 0 {
                    return Err(fenced());
                }
                Ok(None)
            }
        }
    }

    /// Write under a held turn, keeping it.
    pub(super) async fn db_write(
        &self,
        turn: &Turn,
        row: &Row,
        durability: Durability,
    ) -> Result<(), StoreError> {
        let id = turn.session_id.as_str();
        let fenced = || StoreError::Fenced {
            session_id: id.to_owned(),
            epoch: turn.epoch,
        };
        let db_epoch = i64::try_from(turn.epoch).map_err(|_| fenced())?;
        let conn = self.pools.get(class_of(durability))?;
        let n = conn
            .client
            .execute(
                &conn.st.write,
                &[
                    &id,
                    &db_epoch,
                    &row.bytes,
                    &row.endpoint,
                    &row.client_ip,
                    &row.expires_ms,
                    &ms(now_ms()),
                ],
            )
            .await
            .map_err(|e| db_error(&self.target, "writing a session", &e))?;
        if n == 0 {
            return Err(fenced());
        }
        Ok(())
    }

    /// The grant in a `RETURNING record, epoch, expiry_ms` row; `None` for no row.
    fn grant_of(
        &self,
        id: &str,
        row: Option<&tokio_postgres::Row>,
    ) -> Result<Option<(u64, SessionRecord)>, StoreError> {
        let Some(row) = row else {
            return Ok(None);
        };
        let bytes: Vec<u8> = self.col(row, 0)?;
        let epoch: i64 = self.col(row, 1)?;
        let expiry: i64 = self.col(row, 2)?;
        Ok(Some((
            epoch.max(0) as u64,
            decode_record(id, &bytes, expiry)?,
        )))
    }
}

/// A waiter in a session's queue. Dropped before it settles (its future was cancelled), it takes
/// itself out of the queue or gives back a turn it was handed meanwhile.
struct Queued<'a> {
    inner: &'a Arc<Inner>,
    id: &'a str,
    waiter_id: u64,
    deadline: Instant,
    rx: oneshot::Receiver<Grant>,
    settled: bool,
}

impl Queued<'_> {
    async fn wait(&mut self) -> Grant {
        let closed = || {
            Err(StoreError::Unavailable(
                "the PostgreSQL store shut down while waiting for a turn".into(),
            ))
        };
        loop {
            let wake_at = {
                let map = self.inner.turns.shard(self.id);
                let now = Instant::now();
                match map
                    .get(self.id)
                    .map(|e| (e.state, e.waiters.front().map(|w| w.id)))
                {
                    // Our answer is in the channel already.
                    None => None,
                    // Being tried at the database: the driver times out the front itself (after
                    // the try under way), everyone else times out here.
                    Some((State::Taking, front)) => (front != Some(self.waiter_id)
                        || now < self.deadline)
                        .then_some(self.deadline),
                    Some((State::Held { lease_until, .. }, _)) => {
                        Some(self.deadline.min(lease_until))
                    }
                }
                .map(|at| at.min(later(now, MAX_NAP)))
            };
            let woken = match wake_at {
                None => Some((&mut self.rx).await),
                Some(at) => tokio::select! {
                    biased;
                    granted = &mut self.rx => Some(granted),
                    () = tokio::time::sleep_until(at.into()) => None,
                },
            };
            if let Some(granted) = woken {
                return granted.unwrap_or_else(|_| closed());
            }
            let mut drive = false;
            {
                let mut map = self.inner.turns.shard(self.id);
                if let Ok(granted) = self.rx.try_recv() {
                    return granted;
                }
                let now = Instant::now();
                let Some(entry) = map.get_mut(self.id) else {
                    continue;
                };
                if let State::Held { lease_until, .. } = entry.state {
                    if lease_until <= now {
                        // The holder here let its lease run out: fence it, serve the queue.
                        entry.state = State::Taking;
                        drive = true;
                    }
                }
                // The front of a queue being tried at the database waits for that try's answer.
                let front = entry.waiters.front().map(|w| w.id) == Some(self.waiter_id);
                let answered_by_driver = matches!(entry.state, State::Taking) && front;
                if now >= self.deadline && !answered_by_driver {
                    entry.waiters.retain(|w| w.id != self.waiter_id);
                    if drive {
                        drop(map);
                        spawn_driver(self.inner, self.id);
                    }
                    return Err(StoreError::TurnTimeout(self.id.to_owned()));
                }
            }
            if drive {
                spawn_driver(self.inner, self.id);
            }
        }
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        {
            let mut map = self.inner.turns.shard(self.id);
            if let Some(entry) = map.get_mut(self.id) {
                let queued = entry.waiters.len();
                entry.waiters.retain(|w| w.id != self.waiter_id);
                if entry.waiters.len() != queued {
                    return;
                }
            }
        }
        // Not queued any more: we were answered (under the lock, so the answer is in the channel).
        // A turn nobody will use goes back.
        if let Ok(Ok(Some((turn, _)))) = self.rx.try_recv() {
            let inner = self.inner.clone();
            self.inner
                .handle
                .spawn(async move { finish(inner, turn, Finish::Release).await });
        }
    }
}

fn lease_ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis())
        .unwrap_or(i64::MAX)
        .min(MAX_LEASE_MS)
}

/// `from + by`, saturating a long way in the future instead of overflowing `Instant`.
fn later(from: Instant, by: Duration) -> Instant {
    from.checked_add(by)
        .or_else(|| from.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(from)
}

/// A copy of `e` for each of several waiters (`StoreError` is not `Clone`: its sources need not be).
fn duplicate(e: &StoreError) -> StoreError {
    match e {
        StoreError::AlreadyExists(id) => StoreError::AlreadyExists(id.clone()),
        StoreError::Fenced { session_id, epoch } => StoreError::Fenced {
            session_id: session_id.clone(),
            epoch: *epoch,
        },
        StoreError::TurnTimeout(id) => StoreError::TurnTimeout(id.clone()),
        StoreError::Record { id, source } => StoreError::Record {
            id: id.clone(),
            source: source.clone(),
        },
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Config(m) => StoreError::Config(m.clone()),
    }
}
