//! The `cookie-store serve` daemon and its client (`cookie-store://HOST:PORT`). Not built yet.

use crate::{Store, StoreError};
use std::sync::Arc;

/// Connect to the daemon a `cookie-store://HOST:PORT` URL names.
pub fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    Err(StoreError::Config(format!(
        "store URL {url}: the cookie-store daemon client is not available in this build yet; use sled:DIR"
    )))
}
