//! The PostgreSQL backend (`postgres://…`). Not built yet.

use crate::{Store, StoreError};
use std::sync::Arc;

/// Connect to the database a `postgres://…` URL names.
pub fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    Err(StoreError::Config(format!(
        "store URL {}: the PostgreSQL backend is not available in this build yet; use sled:DIR",
        url.split('@').next_back().unwrap_or(url)
    )))
}
