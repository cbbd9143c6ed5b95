//! The background expiry sweeper.
//!
//! NonStop only noticed an expired session when a request named it, so clients that vanished left
//! orphan records forever. The broker also checks lazily, but in addition this task takes due records
//! from the store's expiry index in small batches (never a full scan) and deletes them under their
//! turn, so a busy session is never swept from under a request.

use super::SessionEngine;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Run the sweeper on `runtime` until `stop` turns true.
pub fn spawn_sweeper(
    engine: Arc<SessionEngine>,
    runtime: &tokio::runtime::Handle,
    interval: Duration,
    batch: usize,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            // A full batch means more may be due: keep going without waiting for the next tick, but
            // boundedly, since busy sessions stay due until their request ends.
            for _ in 0..64 {
                match engine.sweep_once(batch).await {
                    Ok((examined, deleted)) => {
                        if deleted > 0 {
                            tracing::info!(expired = deleted, "expired sessions swept");
                        }
                        if examined < batch {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "expiry sweep failed; retrying next interval");
                        break;
                    }
                }
            }
            if *stop.borrow() {
                break;
            }
        }
    })
}
