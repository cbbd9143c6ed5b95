//! The pauses of the reconnect loops (the daemon client's connections, the PostgreSQL pool's).
//!
//! Exponential, doubling from a minimum to a maximum, and jittered: every broker of a cluster loses
//! the daemon or PostgreSQL at the same instant when it restarts, and pauses without jitter would
//! bring all of their connections back in the same millisecond, again and again. Each pause is drawn
//! at random between half and the whole of the doubling value; backon's jitter adds 0–100 % to its
//! base, so the base runs from half the minimum to half the maximum and no pause leaves the
//! configured bounds (`backoff_max` keeps its promise: a daemon that is back is found within it).

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use std::time::Duration;

/// An endless sequence of pauses within `min..=max` (see the module doc).
pub(crate) fn pauses(min: Duration, max: Duration) -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(min / 2)
        .with_max_delay(max / 2)
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pauses stay within the configured bounds, reach the maximum's half, never end, and are
    /// not all alike (the jitter is there).
    #[test]
    fn pauses_stay_within_bounds_and_vary() {
        let (min, max) = (Duration::from_millis(50), Duration::from_secs(2));
        let seen: Vec<Duration> = pauses(min, max).take(200).collect();
        assert_eq!(seen.len(), 200);
        assert!(seen.iter().all(|p| *p >= min / 2 && *p <= max), "{seen:?}");
        assert!(
            seen[0] < min,
            "the first pause is at most the minimum: {:?}",
            seen[0]
        );
        assert!(
            seen[100..].iter().all(|p| *p >= max / 2),
            "{:?}",
            &seen[100..]
        );
        let tail = &seen[100..];
        assert!(tail.iter().any(|p| *p != tail[0]), "jittered pauses differ");
    }
}
