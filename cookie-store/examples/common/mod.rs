//! What the store benchmarks share (not an example itself: cargo builds only `examples/*.rs`).

use cookie_store::{now_ms, SessionRecord};

/// A typical NonStop session record (about 100 bytes encoded), last accessed now.
pub fn record(id: String) -> SessionRecord {
    let now = now_ms();
    SessionRecord {
        id,
        endpoint: "/soap".into(),
        dialect: "nonstop".into(),
        principal: Some("alice".into()),
        client_ip: Some([127, 0, 0, 1].into()),
        created_ms: now,
        last_access_ms: now,
        idle_timeout_ms: 1_800_000,
        transaction: None,
        subsession: None,
        dialect_state: vec![7; 32],
        expiry_indexed_ms: 0,
    }
}
