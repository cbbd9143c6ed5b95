//! Fencing epochs that keep increasing across restarts without a disk write per turn.
//!
//! Turns live in process memory, so after a restart the turn table is empty; a broker paused across
//! that restart must still find its old epoch stale. Writing a counter per grant would cost a sled
//! write (and a flush, to survive a crash) on every request. Instead each open of the data directory
//! takes a new *generation* from the meta tree, flushed before the first grant, and epochs are
//! `(generation << 40) | counter` with the counter in memory. Every epoch of a later open is larger
//! than every epoch of an earlier one. Should one process issue 2^40 grants, the next block is
//! reserved (written and flushed) before its first epoch is handed out.

use crate::StoreError;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bits of an epoch taken by the in-process counter.
const COUNTER_BITS: u32 = 40;
/// Key of the highest generation ever reserved in the meta tree (u64, big-endian).
pub(crate) const GENERATION_KEY: &[u8] = b"generation";

/// Hands out strictly increasing epochs for one open of the store.
pub(crate) struct EpochSource {
    /// The last epoch handed out.
    last: AtomicU64,
    /// The highest generation persisted; epochs above its block need a reservation first.
    reserved: AtomicU64,
    /// Serialises reservations (rare: once per 2^40 grants).
    reserving: Mutex<()>,
    meta: sled::Tree,
}

impl EpochSource {
    /// Reserve the next generation in `meta` (flushed) and start counting in its block.
    pub(crate) fn open(meta: sled::Tree) -> Result<Self, StoreError> {
        let previous = read_generation(&meta)?;
        let generation = previous
            .checked_add(1)
            .filter(|g| {
                g.checked_shl(COUNTER_BITS)
                    .is_some_and(|e| e >> COUNTER_BITS == *g)
            })
            .ok_or_else(|| {
                StoreError::Unavailable("epoch generations exhausted in the meta tree".into())
            })?;
        persist_generation(&meta, generation)?;
        Ok(Self {
            last: AtomicU64::new(generation << COUNTER_BITS),
            reserved: AtomicU64::new(generation),
            reserving: Mutex::new(()),
            meta,
        })
    }

    /// The generation this open reserved (diagnostic).
    #[cfg(test)]
    pub(crate) fn generation(&self) -> u64 {
        self.last.load(Ordering::Relaxed) >> COUNTER_BITS
    }

    /// The next epoch: larger than every epoch handed out before, in this process or an earlier one.
    pub(crate) fn next(&self) -> u64 {
        let epoch = self.last.fetch_add(1, Ordering::Relaxed) + 1;
        let block = epoch >> COUNTER_BITS;
        if block > self.reserved.load(Ordering::Acquire) {
            self.reserve(block);
        }
        epoch
    }

    fn reserve(&self, block: u64) {
        let _one_at_a_time = self.reserving.lock();
        if block <= self.reserved.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = persist_generation(&self.meta, block) {
            // The store is failing anyway (the caller's next write will say so); the only risk
            // left is epoch reuse after a restart that this very failure may prevent.
            tracing::error!(error = %e, block, "could not reserve the next epoch generation");
        }
        self.reserved.store(block, Ordering::Release);
    }

    /// Move the counter close to the end of its block (tests of the reservation path).
    #[cfg(test)]
    pub(crate) fn skip_to_end_of_block(&self, left: u64) {
        let generation = self.generation();
        self.last.store(
            ((generation + 1) << COUNTER_BITS) - 1 - left,
            Ordering::Relaxed,
        );
    }
}

/// The highest generation ever reserved in `meta`, 0 for a new directory.
pub(crate) fn read_generation(meta: &sled::Tree) -> Result<u64, StoreError> {
    let stored = meta
        .get(GENERATION_KEY)
        .map_err(|e| StoreError::Unavailable(format!("reading the epoch generation: {e}")))?;
    match stored {
        None => Ok(0),
        Some(bytes) => <[u8; 8]>::try_from(bytes.as_ref())
            .map(u64::from_be_bytes)
            .map_err(|_| StoreError::Record {
                id: "meta/generation".into(),
                source: crate::RecordError::Corrupt(format!("{} bytes, expected 8", bytes.len())),
            }),
    }
}

fn persist_generation(meta: &sled::Tree, generation: u64) -> Result<(), StoreError> {
    meta.insert(GENERATION_KEY, &generation.to_be_bytes())
        .and_then(|_| meta.flush())
        .map(drop)
        .map_err(|e| StoreError::Unavailable(format!("persisting the epoch generation: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_grow_per_open_and_block_overflow_is_reserved() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let meta = db.open_tree("meta").unwrap();

        let first = EpochSource::open(meta.clone()).unwrap();
        let e1 = first.next();
        assert_eq!(first.generation(), 1);
        let second = EpochSource::open(meta.clone()).unwrap();
        let e2 = second.next();
        assert!(
            e2 > e1,
            "a later open must issue larger epochs ({e2} <= {e1})"
        );
        assert_eq!(read_generation(&meta).unwrap(), 2);

        // Crossing into the next block reserves it before use, so a third open starts above it.
        second.skip_to_end_of_block(1);
        let a = second.next();
        let b = second.next();
        assert!(b > a && b >> COUNTER_BITS == 3, "crossed into block 3");
        assert_eq!(read_generation(&meta).unwrap(), 3);
        let third = EpochSource::open(meta).unwrap();
        assert!(third.next() > b);
    }
}
