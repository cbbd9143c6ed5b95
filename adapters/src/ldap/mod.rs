//! # The ldap adapter: a directory behind the DSML endpoint
//!
//! DSML Services for Windows was a gateway: each DSMLv2 operation of a `batchRequest` became an
//! LDAP operation on a real directory, and a DSML session held one LDAP connection, so that a
//! paged search could go on across requests and a bind stayed bound. This adapter is that gateway
//! behind the broker's `dsml` dialect:
//!
//! - each worker of the class is **one LDAP connection** ([ldap3], driven by a task on the class's
//!   runtime), bound as the class's `bind_dn` (a service account) or anonymously;
//! - a DSML session is a dialog (the class is context-sensitive), so every request of a session
//!   runs on the one connection the session was given: a paged-results cookie from one request
//!   is good in the next. A batch outside a session runs on any connection no session holds;
//! - the session's end or expiry (`DIALOG-ABORT`) closes its connection (and its paged searches
//!   with it); a fresh one, bound anew, takes its place;
//! - the wire protocol (`adapters/PROTOCOL.md`) runs over an in-memory link, as for the sql
//!   adapter, so the pool, its dialogs, limits and timeouts are the same code for every kind.
//!
//! Reading the batch is [`dsml`]; running it and writing the `batchResponse` is [`run`].
//!
//! When the directory cannot be reached (at start, or later), the worker lives on and answers
//! each operation with `errorResponse type="couldNotConnect"`, trying again at every batch; a
//! failed bind is `authenticationFailed`. A connection that drops during a batch answers with
//! `connectionClosed`; in a session that also ends the dialog (`dialog-end`), so the session's next
//! request gets a fresh connection.

pub mod dsml;
pub mod run;
mod server;

use crate::pool::{Connector, Link, PoolClass};
use crate::{AdapterError, AdapterKind, ServerClassConfig, WorkerId};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;

/// How the class's connections bind. Its `Debug` shows no password.
#[derive(Clone, PartialEq, Eq)]
pub struct Binding {
    /// `ldap://host:port`.
    pub url: String,
    /// The service account's DN; `None`: anonymous.
    pub bind_dn: Option<String>,
    /// Its password (never logged).
    pub bind_password: Option<String>,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// Whose identity a connection binds with.
    pub mode: BindMode,
    /// `search_window`: the most entries a search without a size limit or controls asks the
    /// directory for at a time (simple paged results, RFC 2696, run by the adapter); 0 is off.
    /// See "Windowed searches" in `run.rs`.
    pub search_window: u32,
}

/// `search_window`'s default: 500 entries of a few hundred bytes each stay well under a megabyte
/// in the LDAP client's buffers, and a ten-thousand-entry search costs 20 round trips instead of
/// one (about 2 ms more on a LAN, against the hundreds its entries take to write).
pub const DEFAULT_SEARCH_WINDOW: u32 = 500;

/// Whose identity a connection binds with (`bind`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindMode {
    /// No bind: the directory's anonymous access.
    Anonymous,
    /// `bind_dn` with `bind_password`, for every connection.
    Service,
    /// As the client: its HTTP Basic user name mapped to a DN, with its password (the endpoint's
    /// `auth = "directory"`). A session's connection stays bound as its client.
    Principal(PrincipalDn),
}

/// How a client's user name becomes the DN it binds as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalDn {
    /// `bind_dn_template`, `{user}` replaced by the user name (DN-escaped, RFC 4514).
    Template(String),
    /// A search under `bind_search_base` with `bind_search_filter` (`{user}` replaced, escaped as a
    /// filter value), bound as `bind_dn` (or anonymously); exactly one entry must match.
    Search { base: String, filter: String },
}

impl std::fmt::Debug for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Binding")
            .field("url", &self.url)
            .field("bind_dn", &self.bind_dn)
            .field("bind_password", &self.bind_password.as_ref().map(|_| "***"))
            .field("connect_timeout", &self.connect_timeout)
            .field("mode", &self.mode)
            .field("search_window", &self.search_window)
            .finish()
    }
}

/// A server class whose workers are connections to one directory.
pub type LdapClass = PoolClass<LdapConnector>;

impl LdapClass {
    /// Start the class's workers. A directory that is down does not stop the class from starting:
    /// its batches are answered with `couldNotConnect` until the directory is back.
    pub async fn start(
        config: ServerClassConfig,
        runtime: Handle,
    ) -> Result<Arc<LdapClass>, AdapterError> {
        let AdapterKind::Ldap(binding) = config.adapter.clone() else {
            return Err(AdapterError::Unsupported {
                class: config.name.clone(),
                reason: "not an ldap adapter configuration".to_string(),
            });
        };
        let connector = LdapConnector {
            binding: Arc::new(binding),
            max_frame: config.max_frame_bytes,
            class: config.name.clone(),
        };
        PoolClass::launch(config, connector, runtime, true).await
    }
}

/// Opens a class's connections, each served by a task behind an in-memory link.
pub struct LdapConnector {
    binding: Arc<Binding>,
    max_frame: usize,
    class: String,
}

#[async_trait]
impl Connector for LdapConnector {
    async fn connect(&self, worker: &WorkerId) -> Result<Link, String> {
        let (link, server_side) = crate::inproc::link(&self.binding.url, worker);
        let mut conn = server::Conn::new(self.binding.clone(), self.class.clone());
        // Connect now so that the first batch need not wait; failing is not fatal (see above).
        if let Err(e) = conn.ensure().await {
            tracing::warn!(class = %self.class, worker = %worker, error = %e.message, "ldap: the directory cannot be reached yet; batches get couldNotConnect until it can");
        }
        tokio::spawn(crate::inproc::serve(
            conn,
            server_side,
            self.max_frame,
            "ldap connection",
        ));
        Ok(link)
    }
}
