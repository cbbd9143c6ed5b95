//! The broker registry: which broker processes live, and how to reach them.
//!
//! Each broker renews its entry (a heartbeat) well within its lease; an entry whose lease has
//! run out belongs to a broker taken for dead, whose sessions, workers and transactions the
//! others may take over.

use crate::StoreError;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// A broker process as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    pub id: String,
    /// This run of the broker: `<id>/<boot nonce>`, new at every start. Workers, dialogs and
    /// transactions are tagged with it, so a restarted broker is never taken for the run that
    /// pinned them.
    pub instance: String,
    /// How other brokers reach it (`http://host:port`).
    pub advertise: String,
    /// Until when its heartbeat lease holds, ms since the epoch.
    pub lease_until_ms: u64,
}

/// Where brokers announce themselves and find each other.
#[async_trait]
pub trait BrokerRegistry: Send + Sync + 'static {
    /// Announce or renew a broker in the registry.
    async fn register_broker(&self, info: &BrokerInfo) -> Result<(), StoreError>;

    /// Brokers whose lease holds at `now_ms`.
    async fn live_brokers(&self, now_ms: u64) -> Result<Vec<BrokerInfo>, StoreError>;
}
