//! # The store, split by concern
//!
//! One store backend keeps three unrelated kinds of state, and each user of the store needs only
//! one of them:
//!
//! | part | what it keeps | who uses it |
//! | --- | --- | --- |
//! | [`SessionStore`] | session records and their turns | the session engine, the sweeper, [`HeldTurn`](crate::HeldTurn), transaction recovery (settling a session) |
//! | [`BrokerRegistry`] | which broker processes live | the cluster registry (heartbeats, peers) |
//! | [`DecisionLog`] | two-phase commit decisions | the transaction coordinator |
//! | [`StoreHealth`] | reachability and the final flush | `GET /healthz`, shutdown |
//!
//! Every backend implements all four, and [`Store`] is simply "all four at once": it has no
//! methods of its own and a blanket impl, so a backend never writes `impl Store`. Whoever opens a
//! store ([`crate::open`]) gets an `Arc<dyn Store>` and hands each user the part it needs; Rust
//! turns `Arc<dyn Store>` into `Arc<dyn SessionStore>` by itself (trait upcasting, Rust 1.86):
//!
//! ```no_run
//! # fn main() -> Result<(), cookie_store::StoreError> {
//! use cookie_store::{DecisionLog, SessionStore, Store};
//! use std::sync::Arc;
//!
//! let store: Arc<dyn Store> = cookie_store::open("sled:/tmp/cookies")?;
//! let sessions: Arc<dyn SessionStore> = store.clone();
//! let decisions: Arc<dyn DecisionLog> = store;
//! # let _ = (sessions, decisions);
//! # Ok(())
//! # }
//! ```
//!
//! A user that holds only its part cannot touch the others by mistake, and a test of it needs a
//! fake of that part alone.
//!
//! All methods may be called from any tokio runtime: backends keep their background work on their
//! own threads or runtime and talk to callers only through futures that need no particular reactor.

mod decisions;
mod registry;
mod sessions;

pub use decisions::{DecisionLog, TxnDecision};
pub use registry::{BrokerInfo, BrokerRegistry};
pub use sessions::{Durability, SessionStore, Turn};

use crate::StoreError;
use async_trait::async_trait;

/// The lifecycle of a whole store, whatever parts it keeps.
#[async_trait]
pub trait StoreHealth: Send + Sync + 'static {
    /// Cheap liveness check (for `GET /healthz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Make every write so far durable (shutdown).
    async fn flush(&self) -> Result<(), StoreError>;
}

/// A whole store: every part at once. What [`crate::open`] returns and the `cookie-store` daemon
/// serves; see the module docs for handing out the parts.
pub trait Store: SessionStore + BrokerRegistry + DecisionLog + StoreHealth {}

impl<T: SessionStore + BrokerRegistry + DecisionLog + StoreHealth + ?Sized> Store for T {}
