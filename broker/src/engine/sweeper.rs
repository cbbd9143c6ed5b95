//! The background expiry sweeper.
//!
//! NonStop only noticed an expired session when a request named it, so clients that vanished left
//! orphan records forever. The broker also checks lazily, but in addition this task takes due records
//! from the store's expiry index in small batches (never a full scan) and deletes them under their
//! turn, so a busy session is never swept from under a request.
//!
//! ## Pacing
//!
//! Expired sessions are already invisible to clients (lazy expiry answers -1001 for them); the
//! sweeper only reclaims their storage, so it has no reason to hurry. It examines at most
//! `store.sweep_rate` sessions per second, in small steps spread evenly over the second (one
//! step every [`STEP`], `sweep_rate / 100` sessions each, at most `sweep_batch`). Unpaced, a
//! backlog of 100 000 sessions expiring together was deleted as fast as the engine runtime could
//! go (about 16 000 per second on the reference machine), took a core from the request path for
//! six seconds and more than doubled p99 (`BENCHMARKS.md`, "The sweep bar"). Paced, the same
//! backlog costs a small, steady share of CPU for longer.
//!
//! Each interval, the sweeper keeps going while it finds full steps of due sessions (a backlog),
//! but at most `64 × sweep_batch` sessions per interval, since sessions that stay due (busy with a
//! request, or held by another broker) would otherwise be looked at again and again.
//!
//! What it swept is logged at most once per second (`expired sessions swept`, with the count).

use super::SessionEngine;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The pacing step: one small batch of sessions this often.
pub const STEP: Duration = Duration::from_millis(10);

/// How often the sweep count is logged while sessions are being swept.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Sessions one step examines: `rate` spread over the steps of a second, at least 1, at most
/// `batch`.
fn step_size(batch: usize, rate: usize) -> usize {
    let steps_per_second = (Duration::from_secs(1).as_nanos() / STEP.as_nanos()) as usize;
    rate.div_ceil(steps_per_second).clamp(1, batch.max(1))
}

/// How long `examined` sessions take at `rate` per second.
fn pace(examined: usize, rate: usize) -> Duration {
    Duration::from_secs_f64(examined as f64 / rate.max(1) as f64)
}

/// Run the sweeper on `runtime` until `stop` turns true: every `interval`, and paced to `rate`
/// sessions per second (see the module docs), steps of at most `batch`.
pub fn spawn_sweeper(
    engine: Arc<SessionEngine>,
    runtime: &tokio::runtime::Handle,
    interval: Duration,
    batch: usize,
    rate: usize,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let step = step_size(batch, rate);
    let per_interval = batch.saturating_mul(64);
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut report = Report::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            let mut examined_now = 0;
            // When the next step may start: each step moves it on by the time its sessions take
            // at `rate`, so the average never exceeds the rate, whatever a step itself costs.
            let mut next_step = Instant::now();
            while examined_now < per_interval {
                match engine.sweep_once(step).await {
                    Ok((examined, deleted)) => {
                        report.add(deleted);
                        examined_now += examined;
                        if examined < step {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "expiry sweep failed; retrying next interval");
                        break;
                    }
                }
                let now = Instant::now();
                next_step = next_step.max(now.checked_sub(STEP).unwrap_or(now)) + pace(step, rate);
                tokio::select! {
                    _ = tokio::time::sleep_until(next_step) => {}
                    _ = stop.changed() => break,
                }
            }
            report.flush();
            if *stop.borrow() {
                break;
            }
        }
    })
}

/// Sessions swept since the last log line.
struct Report {
    deleted: usize,
    since: Instant,
}

impl Report {
    fn new() -> Report {
        Report {
            deleted: 0,
            since: Instant::now(),
        }
    }

    fn add(&mut self, deleted: usize) {
        self.deleted += deleted;
        if self.since.elapsed() >= REPORT_EVERY {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.deleted > 0 {
            tracing::info!(expired = self.deleted, "expired sessions swept");
        }
        self.deleted = 0;
        self.since = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_spread_the_rate_over_the_second() {
        // 100 steps per second: the rate is divided among them, rounding up.
        assert_eq!(step_size(256, 2000), 20);
        assert_eq!(step_size(256, 2001), 21);
        // A step never exceeds the batch, nor goes below one session.
        assert_eq!(step_size(256, 1_000_000), 256);
        assert_eq!(step_size(256, 1), 1);
        assert_eq!(step_size(0, 50), 1);
        assert_eq!(pace(20, 2000), Duration::from_millis(10));
        assert_eq!(pace(256, 1000), Duration::from_millis(256));
    }
}
