//! # Restart backoff with jitter
//!
//! After `n` consecutive failures the next attempt waits `base · 2^(n-1)`, capped at `max`, and
//! then scaled by a random factor in `[1 - JITTER, 1 + JITTER]` (±20 %), capped at `max` again.
//! The doubling keeps a broken server from being hammered; the jitter keeps the workers of a
//! class (and the classes of several brokers) that failed together, say when a shared database
//! went away, from all retrying in the same millisecond once it is back. At the cap the spread is
//! `[0.8 · max, max]`: `max` stays a maximum, as its configuration key promises.
//!
//! The random draw comes from the caller (a seeded [`fastrand::Rng`], or a number in `[0, 1)` for
//! [`Backoff::jittered`]), so tests stay deterministic.

use std::time::Duration;

/// How far the jitter may move a delay, as a fraction of it.
pub const JITTER: f64 = 0.2;

/// A doubling backoff from `base` to `max`, with [`JITTER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff { base, max }
    }

    /// The delay after `failures` consecutive failures, without jitter (zero for none).
    pub fn nominal(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32 << (failures - 1).min(20);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The delay after `failures` consecutive failures, jittered by a draw from `rng`.
    pub fn delay(&self, failures: u32, rng: &mut fastrand::Rng) -> Duration {
        self.jittered(failures, rng.f64())
    }

    /// The delay after `failures` consecutive failures, jittered by `unit` in `[0, 1)`: `0` gives
    /// the shortest delay (`1 - JITTER` of the nominal one), `0.5` the nominal one, values near
    /// `1` the longest (capped at `max`). Values outside `[0, 1]` are clamped.
    pub fn jittered(&self, failures: u32, unit: f64) -> Duration {
        let nominal = self.nominal(failures);
        let factor = 1.0 - JITTER + 2.0 * JITTER * unit.clamp(0.0, 1.0);
        Duration::try_from_secs_f64(nominal.as_secs_f64() * factor)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_from_base_to_max() {
        let b = Backoff::new(100 * MS, 1000 * MS);
        let got: Vec<_> = (0..7).map(|n| b.nominal(n)).collect();
        let want = [0, 100, 200, 400, 800, 1000, 1000].map(|ms| ms * MS);
        assert_eq!(got, want);
        // Absurd failure counts neither overflow nor exceed the cap.
        assert_eq!(b.nominal(u32::MAX), 1000 * MS);
    }

    #[test]
    fn jitter_stays_within_twenty_percent_and_under_max() {
        let b = Backoff::new(100 * MS, 1000 * MS);
        assert_eq!(b.jittered(1, 0.0), 80 * MS);
        assert_eq!(b.jittered(1, 0.5), 100 * MS);
        assert_eq!(b.jittered(1, 1.0), 120 * MS);
        // At the cap the jitter only shortens.
        assert_eq!(b.jittered(9, 0.0), 800 * MS);
        assert_eq!(b.jittered(9, 1.0), 1000 * MS);
        assert_eq!(b.jittered(0, 0.7), Duration::ZERO);
    }

    #[test]
    fn draws_spread_the_delays() {
        let b = Backoff::new(100 * MS, 10_000 * MS);
        let mut rng = fastrand::Rng::with_seed(7);
        let delays: Vec<_> = (0..100).map(|_| b.delay(3, &mut rng)).collect();
        assert!(delays.iter().all(|d| (320 * MS..=480 * MS).contains(d)));
        let (lo, hi) = (delays.iter().min(), delays.iter().max());
        // A hundred draws cover most of the ±20 % band rather than sitting on one value.
        assert!(
            hi.zip(lo).is_some_and(|(hi, lo)| *hi - *lo > 100 * MS),
            "{lo:?}..{hi:?}"
        );
    }
}
