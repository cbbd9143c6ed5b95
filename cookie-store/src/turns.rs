//! The turn table: who holds each session's turn, who waits for it, and until when.
//!
//! One process owns the sled database, so turns need no disk at all: they live here, in memory, and
//! a restart (which loses them) also starts a new epoch generation (see [`crate::epochs`]), fencing
//! every turn granted before it.
//!
//! Only sessions with a request in flight have an entry; releasing the last turn removes it, so memory
//! follows active sessions, not stored ones. The table is split into shards, each a sync mutex over a
//! map, so requests of different sessions rarely touch the same lock; a lock is only ever held for a
//! few map operations (and the holder's sled write, see [`TurnTable::with_turn`]), never across an
//! await.
//!
//! Waiters queue in arrival order, each with a oneshot on which the releasing holder hands it the
//! turn, so a turn on an idle session is granted at once and a handover needs no timer. Timers are
//! only for the waiters: each sleeps until its own wait deadline or the holder's lease deadline,
//! whichever comes first; a waiter that wakes to find the lease expired takes the turn from the holder
//! (new epoch) and hands it to the front of the queue. A waiter whose future is dropped leaves the
//! queue (or passes on a turn it was just handed), so it never wedges the session.

use crate::epochs::EpochSource;
use crate::expiry::Filed;
use crate::StoreError;
use parking_lot::{Mutex, MutexGuard};
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Number of shards: enough that concurrent requests of different sessions rarely share one.
const SHARDS: usize = 64;

/// A waiter never sleeps longer than this in one go; it re-reads the holder's lease and sleeps again.
/// Keeps `Instant` arithmetic and tokio's timer range safe for `Duration::MAX` leases and waits.
const MAX_NAP: Duration = Duration::from_secs(24 * 3600);

pub(crate) struct TurnTable {
    shards: Box<[Mutex<HashMap<String, Entry>>]>,
    hasher: std::collections::hash_map::RandomState,
    epochs: EpochSource,
    waiter_ids: AtomicU64,
}

/// The turn of one session that someone holds.
struct Entry {
    epoch: u64,
    lease_until: Instant,
    waiters: VecDeque<Waiter>,
    /// Where the holder's record is filed in the expiry index, once the holder has read it.
    filed: Option<Filed>,
}

struct Waiter {
    id: u64,
    lease: Duration,
    grant: oneshot::Sender<u64>,
}

impl TurnTable {
    pub(crate) fn new(epochs: EpochSource) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
            epochs,
            waiter_ids: AtomicU64::new(0),
        }
    }

    fn shard(&self, id: &str) -> MutexGuard<'_, HashMap<String, Entry>> {
        let index = (self.hasher.hash_one(id) % SHARDS as u64) as usize;
        self.shards[index].lock()
    }

    /// Take the turn of `id` for `lease`, waiting at most `wait`; returns the epoch.
    pub(crate) async fn acquire(
        &self,
        id: &str,
        lease: Duration,
        wait: Duration,
    ) -> Result<u64, StoreError> {
        let started = Instant::now();
        let (waiter_id, grant) = {
            let mut map = self.shard(id);
            let now = Instant::now();
            let Some(entry) = map.get_mut(id) else {
                let epoch = self.epochs.next();
                let entry = Entry {
                    epoch,
                    lease_until: later(now, lease),
                    waiters: VecDeque::new(),
                    filed: None,
                };
                map.insert(id.to_owned(), entry);
                return Ok(epoch);
            };
            // A holder whose lease ran out loses the turn to the queue, or to us if nobody queues.
            if entry.lease_until <= now && !self.hand_over(entry, now) {
                let epoch = self.epochs.next();
                entry.grant(epoch, later(now, lease));
                return Ok(epoch);
            }
            if wait.is_zero() {
                return Err(StoreError::TurnTimeout(id.to_owned()));
            }
            let (tx, rx) = oneshot::channel();
            let waiter_id = self.waiter_ids.fetch_add(1, Ordering::Relaxed);
            entry.waiters.push_back(Waiter {
                id: waiter_id,
                lease,
                grant: tx,
            });
            (waiter_id, rx)
        };
        let mut queued = Queued {
            table: self,
            id,
            waiter_id,
            grant,
            settled: false,
        };
        let outcome = queued.wait_until(later(started, wait)).await;
        queued.settled = true;
        outcome
    }

    /// Give the turn to the first live waiter (new epoch, its lease). Returns false when nobody
    /// waits, leaving the entry to the caller.
    fn hand_over(&self, entry: &mut Entry, now: Instant) -> bool {
        while let Some(waiter) = entry.waiters.pop_front() {
            if waiter.grant.is_closed() {
                continue;
            }
            let epoch = self.epochs.next();
            if waiter.grant.send(epoch).is_ok() {
                entry.grant(epoch, later(now, waiter.lease));
                return true;
            }
        }
        false
    }

    /// Run `f` on the cached filing of the turn `(id, epoch)`, under the shard lock, or fail with
    /// `Fenced` if that turn is no longer held. Holding the lock across `f` (a sled write, a few
    /// microseconds, never an await) is what makes the fence exact: the turn cannot pass to a waiter
    /// between the epoch check and the write.
    pub(crate) fn with_turn<R>(
        &self,
        id: &str,
        epoch: u64,
        f: impl FnOnce(&mut Option<Filed>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let mut map = self.shard(id);
        match map.get_mut(id) {
            Some(entry) if entry.epoch == epoch => f(&mut entry.filed),
            _ => Err(fenced(id, epoch)),
        }
    }

    /// Like [`TurnTable::with_turn`], then give the turn to the next waiter whatever `f` returned
    /// (the caller has given up its `Turn`).
    pub(crate) fn with_turn_then_release<R>(
        &self,
        id: &str,
        epoch: u64,
        f: impl FnOnce(&mut Option<Filed>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let mut map = self.shard(id);
        let Some(entry) = map.get_mut(id).filter(|e| e.epoch == epoch) else {
            return Err(fenced(id, epoch));
        };
        let outcome = f(&mut entry.filed);
        if !self.hand_over(entry, Instant::now()) {
            map.remove(id);
        }
        outcome
    }

    /// Give the turn `(id, epoch)` back.
    pub(crate) fn release(&self, id: &str, epoch: u64) -> Result<(), StoreError> {
        self.with_turn_then_release(id, epoch, |_| Ok(()))
    }

    /// Drop entries whose lease ran out with nobody waiting (a holder that never released, e.g. a
    /// request task that died). Their holders are fenced, as they would be by the next taker.
    pub(crate) fn prune_expired(&self) -> usize {
        let now = Instant::now();
        let mut pruned = 0;
        for shard in self.shards.iter() {
            let mut map = shard.lock();
            let before = map.len();
            map.retain(|_, e| !(e.waiters.is_empty() && e.lease_until <= now));
            pruned += before - map.len();
            // Give back the memory of a past burst of activity.
            if map.capacity() > 64 && map.len() < map.capacity() / 4 {
                map.shrink_to_fit();
            }
        }
        pruned
    }

    /// Entries in the table (held turns), for tests.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// Waiters queued for the turn of `id`, for tests.
    #[cfg(test)]
    pub(crate) fn waiting(&self, id: &str) -> usize {
        self.shard(id).get(id).map_or(0, |e| e.waiters.len())
    }

    #[cfg(test)]
    pub(crate) fn epochs(&self) -> &EpochSource {
        &self.epochs
    }
}

impl Entry {
    fn grant(&mut self, epoch: u64, lease_until: Instant) {
        self.epoch = epoch;
        self.lease_until = lease_until;
        // The new holder reads the record itself.
        self.filed = None;
    }
}

/// A waiter in a session's queue. Dropped before it settles (its future was cancelled), it takes
/// itself out of the queue or passes on a turn it was handed meanwhile.
struct Queued<'a> {
    table: &'a TurnTable,
    id: &'a str,
    waiter_id: u64,
    grant: oneshot::Receiver<u64>,
    settled: bool,
}

impl Queued<'_> {
    async fn wait_until(&mut self, wait_deadline: Instant) -> Result<u64, StoreError> {
        loop {
            let wake_at = {
                let map = self.table.shard(self.id);
                let lease_until = map.get(self.id).map_or(wait_deadline, |e| e.lease_until);
                lease_until
                    .min(wait_deadline)
                    .min(later(Instant::now(), MAX_NAP))
            };
            tokio::select! {
                biased;
                granted = &mut self.grant => {
                    return granted.map_err(|_| {
                        StoreError::Unavailable(format!("turn queue of session {} dropped a waiter", self.id))
                    });
                }
                () = tokio::time::sleep_until(wake_at.into()) => {}
            }
            let mut map = self.table.shard(self.id);
            if let Ok(epoch) = self.grant.try_recv() {
                return Ok(epoch);
            }
            let now = Instant::now();
            let Some(entry) = map.get_mut(self.id) else {
                // Unreachable while we queue in the entry; stop rather than spin.
                return Err(StoreError::Unavailable(format!(
                    "turn queue of session {} vanished",
                    self.id
                )));
            };
            if entry.lease_until <= now {
                // The holder's lease ran out: fence it and serve the queue in order (maybe us).
                self.table.hand_over(entry, now);
                if let Ok(epoch) = self.grant.try_recv() {
                    return Ok(epoch);
                }
            }
            if now >= wait_deadline {
                entry.waiters.retain(|w| w.id != self.waiter_id);
                return Err(StoreError::TurnTimeout(self.id.to_owned()));
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
            let mut map = self.table.shard(self.id);
            if let Some(entry) = map.get_mut(self.id) {
                let queued = entry.waiters.len();
                entry.waiters.retain(|w| w.id != self.waiter_id);
                if entry.waiters.len() != queued {
                    return;
                }
            }
        }
        // Not in the queue any more: the turn was handed to us (under the lock, so the grant is
        // already in the channel). Nobody will use it; pass it on.
        if let Ok(epoch) = self.grant.try_recv() {
            let _ = self.table.release(self.id, epoch);
        }
    }
}

fn fenced(id: &str, epoch: u64) -> StoreError {
    StoreError::Fenced {
        session_id: id.to_owned(),
        epoch,
    }
}

/// `from + by`, saturating a long way in the future instead of overflowing `Instant`.
fn later(from: Instant, by: Duration) -> Instant {
    from.checked_add(by)
        .or_else(|| from.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(from)
}
