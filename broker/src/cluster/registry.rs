//! The broker registry: who lives, and whether this broker itself still counts as alive.
//!
//! Every `heartbeat` (`[cluster] heartbeat`, default 1 s) a task on the engine runtime registers
//! this broker in the store — `BrokerInfo { id, instance, advertise, lease_until_ms = now + lease }`
//! — and reads back the live brokers into an in-memory snapshot. Requests consult the snapshot
//! ([`Registry::live`]) and never pay a store round trip for it; only a conclusion that matters
//! (taking a broker's work over because it is gone) is confirmed with a fresh read
//! ([`Registry::refresh`]), since the snapshot may predate a broker that just started.
//!
//! ## Self-fencing
//! Other brokers judge this one by the lease it last registered. Once that lease has run out they
//! may take its work over: abort its transactions (presumed abort) and lose its dialogs. So this
//! broker must not write a commit decision once its lease may have run out in their eyes, nor for
//! a commit that began before a lapse (another broker may have aborted it meanwhile):
//! [`Registry::fence`] is taken when a two-phase commit begins, and [`Registry::may_decide`] is
//! asked right before the decision is written. It refuses when the lease has less than one
//! `heartbeat` left (a margin for clock skew and for the write itself), or when the lease lapsed
//! at any moment since the fence was taken (a lapse is noticed when the next registration succeeds
//! after the previous lease's end). What remains is a pause of more than that margin between the
//! check and the store's write; the turn lease of the session (much longer) bounds it further.
//!
//! ## When "not live" means "gone"
//! A broker is *gone* — its work may be taken over — when a fresh read shows its broker ID
//! registered by a newer instance (it restarted), or its lease has run out while this broker's own
//! registrations have been succeeding for at least one whole lease ([`Registry::is_gone`]). The
//! second condition matters after a store outage (the daemon restarting): nobody could renew
//! during it, so every lease looks expired until each broker's next heartbeat; a broker that just
//! got the store back waits one lease before it believes an expired lease, and in that window a
//! request that would need a take-over gets a retriable fault instead.
//!
//! What this cannot cover is a broker cut off from the store alone (a partition, a long pause)
//! while the others carry on: they take its work over after its lease, as they should, but its
//! workers may still hold the taken-over transactions' in-memory work (and their locks) and
//! dialog slots. It logs that its lease lapsed; restart such a broker.
//!
//! Clocks: leases are absolute times written by one broker and read by others, so brokers on
//! several hosts need clocks that agree to well within `lease - heartbeat` (NTP does).
//!
//! On clean shutdown the broker registers a lease of 0, so the others take its (by then stopped)
//! work over at once instead of after the lease.

use super::{nonce_of_instance, Instance};
use cookie_store::{now_ms, BrokerInfo, BrokerRegistry, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// The registry as this broker sees it.
pub struct Registry {
    store: Arc<dyn BrokerRegistry>,
    me: Instance,
    advertise: String,
    heartbeat: Duration,
    lease: Duration,
    state: Mutex<State>,
    /// Woken when a broker that was live is not any more (recovery then runs at once).
    departed: Notify,
}

#[derive(Default)]
struct State {
    /// Live brokers by instance, as of the last read.
    live: HashMap<String, BrokerInfo>,
    /// The lease this broker last registered successfully (ms since the epoch; 0: never).
    own_lease_until_ms: u64,
    /// How many times this broker's lease ran out before it was renewed.
    lapses: u64,
    /// The store refused the last heartbeat (logged once per outage).
    failing: bool,
    /// Since when this broker's registrations have been succeeding without a failure (ms since
    /// the epoch; 0: not now). At start, one lease before the first success: a broker that has
    /// just started has no outage to recover from.
    healthy_since_ms: u64,
}

/// Taken when a two-phase commit begins; [`Registry::may_decide`] checks it before the decision.
#[derive(Debug, Clone, Copy)]
pub struct Fence {
    lapses: u64,
}

/// Why this broker may not write a commit decision now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FenceError {
    #[error("this broker's registry lease lapsed during the commit (other brokers may have taken its work over)")]
    Lapsed,
    #[error("this broker's registry lease has {left_ms} ms left (less than one heartbeat); the store may be unreachable")]
    Expiring { left_ms: u64 },
}

impl Registry {
    pub fn new(
        store: Arc<dyn BrokerRegistry>,
        me: Instance,
        advertise: String,
        heartbeat: Duration,
        lease: Duration,
    ) -> Registry {
        Registry {
            store,
            me,
            advertise,
            heartbeat,
            lease,
            state: Mutex::new(State::default()),
            departed: Notify::new(),
        }
    }

    pub fn instance(&self) -> &Instance {
        &self.me
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Register (renew the lease), then refresh the snapshot. Called every heartbeat, and once at
    /// start before the first request.
    pub async fn heartbeat_once(&self) -> Result<(), StoreError> {
        let started = now_ms();
        let until = started.saturating_add(self.lease.as_millis() as u64);
        let info = BrokerInfo {
            id: self.me.broker_id().to_string(),
            instance: self.me.as_str().to_string(),
            advertise: self.advertise.clone(),
            lease_until_ms: until,
        };
        if let Err(e) = self.store.register_broker(&info).await {
            let mut state = self.state();
            if !state.failing {
                tracing::warn!(error = %e, "cannot renew this broker's registry lease; retrying every heartbeat");
                state.failing = true;
            }
            state.healthy_since_ms = 0;
            return Err(e);
        }
        {
            let mut state = self.state();
            let previous = state.own_lease_until_ms;
            // The registration took effect somewhere before now: if the previous lease had already
            // ended by then, others may have seen this broker dead.
            if previous != 0 && previous <= now_ms() {
                state.lapses += 1;
                tracing::warn!(
                    lapsed_ms = now_ms() - previous,
                    "this broker's registry lease had run out before it was renewed; commits under way are fenced"
                );
            }
            if state.failing {
                tracing::info!("registry lease renewed; the store answers again");
                state.failing = false;
                state.healthy_since_ms = now_ms();
            } else if state.healthy_since_ms == 0 {
                state.healthy_since_ms = started.saturating_sub(self.lease.as_millis() as u64);
            }
            state.own_lease_until_ms = until;
        }
        self.refresh().await
    }

    /// Read the live brokers from the store into the snapshot (a store round trip).
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let brokers = self.store.live_brokers(now_ms()).await?;
        let live: HashMap<String, BrokerInfo> = brokers
            .into_iter()
            .filter(|b| b.lease_until_ms > 0)
            .map(|b| (b.instance.clone(), b))
            .collect();
        let gone: Vec<String> = {
            let mut state = self.state();
            let gone = state
                .live
                .keys()
                .filter(|i| !live.contains_key(*i) && i.as_str() != self.me.as_str())
                .cloned()
                .collect();
            state.live = live;
            gone
        };
        if !gone.is_empty() {
            tracing::info!(brokers = ?gone, "brokers left the registry (lease ended or restarted)");
            self.departed.notify_one();
        }
        Ok(())
    }

    /// The live broker running `instance`, by the snapshot (no store call). This broker's own
    /// instance is not answered here: callers treat their own tags first.
    pub fn live(&self, instance: &str) -> Option<BrokerInfo> {
        let now = now_ms();
        self.state()
            .live
            .get(instance)
            .filter(|b| b.lease_until_ms > now)
            .cloned()
    }

    /// The first of `instances` that is live, by the snapshot.
    pub fn first_live(&self, instances: &[String]) -> Option<BrokerInfo> {
        instances.iter().find_map(|i| self.live(i))
    }

    /// Whether a broker whose instance has this nonce is live, by the snapshot (recovery reads the
    /// coordinator of a prepared transaction from its ID's nonce). This broker counts as live.
    pub fn nonce_live(&self, nonce: &str) -> bool {
        if nonce == self.me.nonce() {
            return true;
        }
        let now = now_ms();
        self.state()
            .live
            .values()
            .any(|b| nonce_of_instance(&b.instance) == nonce && b.lease_until_ms > now)
    }

    /// Whether `instance` is live, by the snapshot; this broker's own instance counts as live.
    pub fn instance_live(&self, instance: &str) -> bool {
        instance == self.me.as_str() || self.live(instance).is_some()
    }

    /// Whether an instance that is not live (by the snapshot) is *gone*: replaced by a newer
    /// instance of its broker ID, or silent past its lease while this broker has been able to see
    /// renewals for a whole lease (see "When not live means gone"). Call after [`Registry::refresh`].
    pub fn is_gone(&self, instance: &str) -> bool {
        if instance == self.me.as_str() {
            return false;
        }
        let broker = super::broker_of_instance(instance);
        let now = now_ms();
        let state = self.state();
        if let Some(current) = state.live.values().find(|b| b.id == broker) {
            if current.instance != instance {
                return true; // restarted: the registry keeps one instance per broker ID
            }
        }
        self.can_judge(&state, now)
    }

    /// Whether expired leases can be believed (this broker saw renewals for a whole lease).
    pub fn leases_trustworthy(&self) -> bool {
        self.can_judge(&self.state(), now_ms())
    }

    fn can_judge(&self, state: &State, now: u64) -> bool {
        !state.failing
            && state.healthy_since_ms != 0
            && now.saturating_sub(state.healthy_since_ms) >= self.lease.as_millis() as u64
    }

    /// Woken when a broker left the registry.
    pub fn departed(&self) -> &Notify {
        &self.departed
    }

    /// A fence for a commit that begins now.
    pub fn fence(&self) -> Fence {
        Fence {
            lapses: self.state().lapses,
        }
    }

    /// Whether a commit decision may be written now (see "Self-fencing").
    pub fn may_decide(&self, fence: &Fence) -> Result<(), FenceError> {
        let state = self.state();
        if state.lapses != fence.lapses {
            return Err(FenceError::Lapsed);
        }
        let now = now_ms();
        let margin = self.heartbeat.as_millis() as u64;
        if now.saturating_add(margin) >= state.own_lease_until_ms {
            return Err(FenceError::Expiring {
                left_ms: state.own_lease_until_ms.saturating_sub(now),
            });
        }
        Ok(())
    }

    /// Leave the registry (clean shutdown): a lease of 0, so the others take over at once.
    pub async fn deregister(&self) {
        let info = BrokerInfo {
            id: self.me.broker_id().to_string(),
            instance: self.me.as_str().to_string(),
            advertise: self.advertise.clone(),
            lease_until_ms: 0,
        };
        if let Err(e) = self.store.register_broker(&info).await {
            tracing::warn!(error = %e, "could not leave the registry; the others will notice when the lease ends");
        }
    }

    /// Run the heartbeat on `runtime` until `stop` turns true.
    pub fn spawn_heartbeat(
        self: Arc<Self>,
        runtime: &tokio::runtime::Handle,
        mut stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(self.heartbeat);
            // A late tick is not made up for with a burst: the next one renews for a whole lease.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => return,
                }
                // Errors are logged inside (once per outage); the next tick retries.
                let _ = self.heartbeat_once().await;
                if *stop.borrow() {
                    return;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cookie_store::{SledStore, Store};

    fn registry(store: &Arc<dyn Store>, id: &str, nonce: &str, heartbeat_ms: u64) -> Registry {
        Registry::new(
            store.clone(),
            Instance::with_nonce(id, nonce),
            format!("http://127.0.0.1:1/{id}"),
            Duration::from_millis(heartbeat_ms),
            Duration::from_millis(heartbeat_ms * 3),
        )
    }

    fn sled() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).expect("sled"));
        (dir, store)
    }

    #[tokio::test]
    async fn brokers_see_each_other_and_a_departure_after_the_lease() {
        let (_dir, store) = sled();
        let a = registry(&store, "a", "aaaaaaaaaaaa", 100);
        let b = registry(&store, "b", "bbbbbbbbbbbb", 100);
        a.heartbeat_once().await.expect("a registers");
        b.heartbeat_once().await.expect("b registers");
        // a's snapshot predates b: a fresh read finds it.
        assert!(a.live("b/bbbbbbbbbbbb").is_none());
        a.refresh().await.expect("refresh");
        let seen = a.live("b/bbbbbbbbbbbb").expect("b is live");
        assert_eq!(seen.advertise, "http://127.0.0.1:1/b");
        assert!(a.nonce_live("bbbbbbbbbbbb") && a.nonce_live("aaaaaaaaaaaa"));
        assert!(!a.nonce_live("cccccccccccc"));
        // b stops renewing: once its lease (300 ms) ends, it is gone, and a is told.
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(
            a.live("b/bbbbbbbbbbbb").is_none(),
            "the snapshot checks the lease"
        );
        let told = a.departed().notified();
        a.heartbeat_once().await.expect("a renews");
        tokio::time::timeout(Duration::from_secs(1), told)
            .await
            .expect("a departure is announced");
        // b restarted as a new instance: the old one stays gone.
        let b2 = registry(&store, "b", "b2b2b2b2b2b2", 100);
        b2.heartbeat_once().await.expect("b2 registers");
        a.refresh().await.expect("refresh");
        assert!(a.live("b/bbbbbbbbbbbb").is_none());
        assert!(a.live("b/b2b2b2b2b2b2").is_some());
        // A clean shutdown is seen at once.
        b2.deregister().await;
        a.refresh().await.expect("refresh");
        assert!(a.live("b/b2b2b2b2b2b2").is_none());
    }

    #[tokio::test]
    async fn expired_leases_are_believed_only_once_renewals_could_be_seen() {
        let (_dir, store) = sled();
        let a = registry(&store, "a", "aaaaaaaaaaaa", 100);
        a.heartbeat_once().await.expect("a registers");
        // A broker that just started has no outage behind it: an unknown instance is gone.
        assert!(a.leases_trustworthy());
        assert!(a.is_gone("c/cccccccccccc"));
        assert!(!a.is_gone("a/aaaaaaaaaaaa"), "never itself");
        // After an outage (a failed heartbeat), expired leases are not believed for one lease.
        a.state().failing = true;
        assert!(!a.is_gone("c/cccccccccccc"));
        a.heartbeat_once().await.expect("back");
        assert!(!a.leases_trustworthy());
        assert!(!a.is_gone("c/cccccccccccc"));
        // ...but a restart is certain at once.
        let b = registry(&store, "b", "b2b2b2b2b2b2", 100);
        b.heartbeat_once().await.expect("b registers");
        a.refresh().await.expect("refresh");
        assert!(a.is_gone("b/bbbbbbbbbbbb"), "replaced by b/b2b2b2b2b2b2");
        tokio::time::sleep(Duration::from_millis(320)).await;
        a.heartbeat_once().await.expect("renew");
        assert!(a.leases_trustworthy());
        assert!(a.is_gone("c/cccccccccccc"));
    }

    #[tokio::test]
    async fn a_lapsed_lease_fences_decisions_until_and_after_renewal() {
        let (_dir, store) = sled();
        // Lease 900 ms, margin (one heartbeat) 300 ms.
        let a = registry(&store, "a", "aaaaaaaaaaaa", 300);
        let never = a.fence();
        assert!(
            matches!(a.may_decide(&never), Err(FenceError::Expiring { .. })),
            "never registered"
        );
        a.heartbeat_once().await.expect("register");
        let fence = a.fence();
        a.may_decide(&fence)
            .expect("a fresh lease allows a decision");
        // Within one heartbeat of the lease's end: refused.
        tokio::time::sleep(Duration::from_millis(650)).await;
        assert!(matches!(
            a.may_decide(&fence),
            Err(FenceError::Expiring { .. })
        ));
        // Past the end, then renewed: a commit that began before the lapse stays fenced...
        tokio::time::sleep(Duration::from_millis(300)).await;
        a.heartbeat_once().await.expect("renew");
        assert_eq!(a.may_decide(&fence), Err(FenceError::Lapsed));
        // ...and one that begins now may decide.
        a.may_decide(&a.fence()).expect("a new commit");
    }
}
