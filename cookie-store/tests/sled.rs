//! The [`Store`] conformance suite (`tests/conformance`) against the embedded sled backend, each
//! test on a fresh store in its own temporary directory.

mod conformance;

use cookie_store::{SledStore, Store};
use std::sync::Arc;

async fn sled() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SledStore::open(dir.path()).expect("a fresh sled store");
    (Arc::new(store), dir)
}

conformance::store_conformance!(sled);
