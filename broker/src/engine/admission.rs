//! Who may use a session, and whether a new one may be created.
//!
//! Two questions every dialect shares, answered from the endpoint's settings:
//! - **binding**: a session is bound to the endpoint it was begun on, to its principal (unless the
//!   endpoint sets `auth_match = false`) and, where the endpoint asks for it (`ip_match`, DSML's
//!   `sessionsIPMatch`), to its client IP; a request that does not match is refused exactly like one
//!   naming an unknown session, and the session stays intact for its owner;
//! - **admission**: whether the endpoint's session limits (`sessions_max`, `sessions_max_per_ip`)
//!   leave room for one more session.
//!
//! ## Counting
//! Sessions are counted in the store ([`SessionStore::count_sessions`]), not in this process, so that
//! several brokers sharing a store share the limits. The store counts through an index by endpoint
//! and client IP and stops at the limit: a Begin reads at most `limit` index entries of its own
//! endpoint, never the whole store. An endpoint without limits (the NonStop default) costs no store
//! work at all.
//!
//! ## The race
//! Counting and creating are two store calls, and the body of a Begin runs between them. Two Begins
//! that both count `max - 1` would both pass. Within one broker this is closed here: a Begin
//! *reserves* its place (a per-endpoint, per-IP in-flight count, taken under a per-endpoint lock
//! together with the store count) and holds it, through the [`Admission`] it returns, until the
//! engine has created the record or given up. Across brokers sharing a store the race remains: the
//! limits can be overshot by at most one session per concurrently beginning broker. DSML treats the
//! limits as resource guards, not as exact quotas, so this is accepted rather than paid for with a
//! store-wide lock on every Begin.

use super::{EngineError, Request};
use crate::config::EndpointConfig;
use cookie_store::{now_ms, SessionRecord, SessionStore};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Whether `request` may use the session `record`.
pub(super) fn binding_matches(
    endpoint: &EndpointConfig,
    record: &SessionRecord,
    request: &Request,
) -> bool {
    record.endpoint == endpoint.path
        && (!endpoint.auth_match || record.principal == request.principal)
        && (!endpoint.ip_match || same_ip(record.client_ip, request.client_ip))
}

/// IPv4 and IPv4-mapped IPv6 forms of one address are the same client. An unknown address (no
/// peer address: never on TCP) matches only another unknown one.
fn same_ip(a: Option<IpAddr>, b: Option<IpAddr>) -> bool {
    a.map(|ip| ip.to_canonical()) == b.map(|ip| ip.to_canonical())
}

/// A granted admission: the place of a session being begun. Keep it until the session's record is
/// created (or the Begin failed); dropping it gives the place back.
#[derive(Debug, Default)]
pub(super) struct Admission {
    /// Held only for its `Drop`, which gives the place back.
    _reservation: Option<Reservation>,
}

#[derive(Debug)]
struct Reservation {
    gate: Arc<Gate>,
    ip: Option<IpAddr>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.gate.unreserve(self.ip);
    }
}

/// The per-endpoint state of this process: a lock that makes count-and-reserve atomic among this
/// broker's Begins, and the places reserved by Begins still in flight.
#[derive(Debug, Default)]
struct Gate {
    lock: tokio::sync::Mutex<()>,
    pending: Mutex<Pending>,
}

#[derive(Debug, Default)]
struct Pending {
    total: usize,
    by_ip: HashMap<Option<IpAddr>, usize>,
}

impl Gate {
    fn pending(&self, ip: Option<IpAddr>) -> (usize, usize) {
        let p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        (p.total, p.by_ip.get(&ip).copied().unwrap_or(0))
    }

    fn reserve(&self, ip: Option<IpAddr>) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.total += 1;
        *p.by_ip.entry(ip).or_insert(0) += 1;
    }

    fn unreserve(&self, ip: Option<IpAddr>) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.total = p.total.saturating_sub(1);
        if let Some(n) = p.by_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                p.by_ip.remove(&ip);
            }
        }
    }
}

/// The engine's gates, by endpoint path (one per endpoint with session limits).
#[derive(Debug, Default)]
pub(super) struct Gates(Mutex<HashMap<String, Arc<Gate>>>);

impl Gates {
    fn gate(&self, endpoint: &str) -> Arc<Gate> {
        let mut gates = self.0.lock().unwrap_or_else(|e| e.into_inner());
        gates.entry(endpoint.to_string()).or_default().clone()
    }
}

/// Whether a new session may be created for `request` on `endpoint`. On success, hold the returned
/// [`Admission`] until the session's record is created.
pub(super) async fn admit(
    gates: &Gates,
    store: &dyn SessionStore,
    endpoint: &EndpointConfig,
    request: &Request,
) -> Result<Admission, EngineError> {
    if !endpoint.has_session_limits() {
        return Ok(Admission::default());
    }
    let ip = request.client_ip.map(|ip| ip.to_canonical());
    let gate = gates.gate(&endpoint.path);
    let _serialised = gate.lock.lock().await;
    let now = now_ms();
    // The per-IP limit first: it is the smaller one by default, and the cheaper count.
    if endpoint.sessions_max_per_ip > 0 {
        if let Some(addr) = ip {
            let max = endpoint.sessions_max_per_ip;
            let (_, pending) = gate.pending(ip);
            let stored = if pending >= max {
                0
            } else {
                store
                    .count_sessions(&endpoint.path, Some(addr), now, max - pending)
                    .await?
            };
            if stored + pending >= max {
                return Err(EngineError::SessionLimit(format!(
                    "sessions_max_per_ip = {max} on {}",
                    endpoint.path
                )));
            }
        }
    }
    if endpoint.sessions_max > 0 {
        let max = endpoint.sessions_max;
        let (pending, _) = gate.pending(ip);
        let stored = if pending >= max {
            0
        } else {
            store
                .count_sessions(&endpoint.path, None, now, max - pending)
                .await?
        };
        if stored + pending >= max {
            return Err(EngineError::SessionLimit(format!(
                "sessions_max = {max} on {}",
                endpoint.path
            )));
        }
    }
    gate.reserve(ip);
    Ok(Admission {
        _reservation: Some(Reservation {
            gate: gate.clone(),
            ip,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Overrides};
    use cookie_store::{Durability, SledStore};

    fn endpoint(path: &str, max: usize, per_ip: usize) -> EndpointConfig {
        let text = format!(
            "[[endpoint]]\npath = \"{path}\"\ndialect = \"dsml\"\nsessions_max = {max}\nsessions_max_per_ip = {per_ip}\n"
        );
        Config::from_toml("t.toml", &text, &Overrides::default())
            .expect("config")
            .endpoints
            .remove(0)
    }

    fn request(ip: &str, principal: Option<&str>) -> Request {
        let mut r = Request::new("dsml");
        r.client_ip = Some(ip.parse().expect("ip"));
        r.principal = principal.map(str::to_string);
        r
    }

    fn record(id: &str, endpoint: &str, ip: &str, principal: Option<&str>) -> SessionRecord {
        let now = now_ms();
        SessionRecord {
            id: id.into(),
            endpoint: endpoint.into(),
            dialect: "dsml".into(),
            principal: principal.map(str::to_string),
            client_ip: Some(ip.parse().expect("ip")),
            created_ms: now,
            last_access_ms: now,
            idle_timeout_ms: 60_000,
            transaction: None,
            subsession: None,
            dialect_state: Vec::new(),
            expiry_indexed_ms: 0,
        }
    }

    #[test]
    fn binding_honours_ip_match_and_auth_match() {
        let mut ep = endpoint("/b", 0, 0);
        let rec = record("s", "/b", "127.0.0.1", Some("alice"));
        assert!(binding_matches(
            &ep,
            &rec,
            &request("127.0.0.1", Some("alice"))
        ));
        assert!(binding_matches(
            &ep,
            &rec,
            &request("::ffff:127.0.0.1", Some("alice"))
        ));
        assert!(!binding_matches(
            &ep,
            &rec,
            &request("127.0.0.2", Some("alice"))
        ));
        assert!(!binding_matches(
            &ep,
            &rec,
            &request("127.0.0.1", Some("bob"))
        ));
        assert!(!binding_matches(&ep, &rec, &request("127.0.0.1", None)));
        ep.ip_match = false;
        assert!(binding_matches(
            &ep,
            &rec,
            &request("127.0.0.2", Some("alice"))
        ));
        ep.auth_match = false;
        assert!(binding_matches(
            &ep,
            &rec,
            &request("127.0.0.2", Some("bob"))
        ));
        let other = record("s", "/elsewhere", "127.0.0.1", Some("alice"));
        assert!(!binding_matches(
            &ep,
            &other,
            &request("127.0.0.1", Some("alice"))
        ));
    }

    #[tokio::test]
    async fn limits_count_stored_sessions_and_begins_in_flight() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path()).expect("store");
        let gates = Gates::default();
        let ep = endpoint("/limits-test", 3, 2);
        let a = request("10.0.0.1", None);
        let b = request("10.0.0.2", None);

        store
            .create(
                &record("a1", "/limits-test", "10.0.0.1", None),
                Durability::Lazy,
            )
            .await
            .expect("create");
        // One stored, one in flight for 10.0.0.1: its per-IP limit (2) is reached.
        let held = admit(&gates, &store, &ep, &a)
            .await
            .expect("second of 10.0.0.1");
        let e = admit(&gates, &store, &ep, &a)
            .await
            .expect_err("third of 10.0.0.1");
        assert!(
            matches!(&e, EngineError::SessionLimit(m) if m.contains("per_ip")),
            "{e:?}"
        );
        // Another IP still fits the total (1 stored + 1 in flight + this one = 3).
        let held_b = admit(&gates, &store, &ep, &b)
            .await
            .expect("first of 10.0.0.2");
        let e = admit(&gates, &store, &ep, &b)
            .await
            .expect_err("total reached");
        assert!(
            matches!(&e, EngineError::SessionLimit(m) if m.starts_with("sessions_max =")),
            "{e:?}"
        );
        // A Begin that gave up frees its place.
        drop(held_b);
        let _again = admit(&gates, &store, &ep, &b).await.expect("place freed");
        drop(held);
    }

    #[tokio::test]
    async fn no_limits_means_no_store_work() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path()).expect("store");
        let gates = Gates::default();
        let ep = endpoint("/free", 0, 0);
        for _ in 0..10 {
            let admission = admit(&gates, &store, &ep, &request("10.0.0.1", None))
                .await
                .expect("admitted");
            assert!(admission._reservation.is_none());
        }
    }
}
