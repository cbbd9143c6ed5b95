//! `[admin]`: the operators' listener (`crate::admin`): where it listens, and the token it wants.
//! Off unless `listen` is set; never on the public port.

use super::{ConfigError, Ctx, Overrides, Placeholders};
use crate::cluster::Secret;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The environment variable that may hold the admin token.
pub const ADMIN_TOKEN_ENV: &str = "BROKER_ADMIN_TOKEN";

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct AdminSection {
    /// Default: no admin listener.
    pub listen: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<String>,
    /// Users of `[auth]` who may also use the admin API with HTTP Basic.
    pub principals: Vec<String>,
    pub live_count_limit: usize,
    #[serde(
        default = "default_drain_timeout",
        deserialize_with = "adapters::config::duration::deserialize"
    )]
    pub drain_timeout: std::time::Duration,
}

fn default_drain_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(300)
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            listen: None,
            token: None,
            token_file: None,
            principals: Vec::new(),
            live_count_limit: 100_000,
            drain_timeout: default_drain_timeout(),
        }
    }
}

/// `[admin]`, checked.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Where the admin API and `/metrics` are served; `None`: nowhere.
    pub listen: Option<SocketAddr>,
    /// What a request must present as `Authorization: Bearer <token>`.
    pub token: Option<Secret>,
    /// The `[auth]` users whose HTTP Basic credentials the admin API accepts besides the token.
    pub principals: Vec<String>,
    /// The most live sessions `/metrics` counts per endpoint (the count's cost grows with it).
    pub live_count_limit: usize,
    /// How long a drain waits for the dialogs and transactions held here before the broker exits
    /// anyway (those left are then lost, as after a crash: -356, recovery).
    pub drain_timeout: std::time::Duration,
}

impl AdminSection {
    pub fn build(
        self,
        cx: &Ctx<'_>,
        overrides: &Overrides,
        placeholders: &Placeholders,
        public: SocketAddr,
        authenticator: Option<&crate::auth::Authenticator>,
    ) -> Result<AdminSettings, ConfigError> {
        for (i, user) in self.principals.iter().enumerate() {
            let key = format!("admin.principals[{i}]");
            match authenticator {
                None => {
                    return Err(cx.err(
                        key,
                        "admin principals sign in with [auth] credentials: set auth.credentials_file or auth.users",
                    ))
                }
                Some(a) if !a.has_user(user) => {
                    return Err(cx.err(
                        key,
                        format!("{user:?} is not a user of the [auth] credentials"),
                    ))
                }
                Some(_) => {}
            }
        }
        let token = match (self.token, self.token_file) {
            (Some(_), Some(_)) => {
                return Err(cx.err(
                    "admin.token",
                    "set either admin.token or admin.token_file, not both",
                ))
            }
            (Some(text), None) => Some(Secret::new(&text).map_err(|p| cx.err("admin.token", p))?),
            (None, Some(file)) => {
                let path = PathBuf::from(placeholders.expand(&file));
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    cx.err(
                        "admin.token_file",
                        format!("{}: cannot read: {e}", path.display()),
                    )
                })?;
                Some(Secret::new(&text).map_err(|p| {
                    cx.err(
                        "admin.token_file",
                        format!("{}: the token {p}", path.display()),
                    )
                })?)
            }
            (None, None) => match std::env::var(ADMIN_TOKEN_ENV) {
                Ok(text) if !text.trim().is_empty() => Some(Secret::new(&text).map_err(|p| {
                    cx.err(
                        "admin.token",
                        format!("the environment variable {ADMIN_TOKEN_ENV} {p}"),
                    )
                })?),
                _ => None,
            },
        };
        let listen = match overrides.admin_listen.clone().or(self.listen) {
            None => None,
            Some(text) => {
                let addr: SocketAddr = text.parse().map_err(|e| {
                    cx.err(
                        "admin.listen",
                        format!(
                            "{text:?} is not an address (HOST:PORT, such as 127.0.0.1:8081): {e}"
                        ),
                    )
                })?;
                if addr == public || (addr.port() == public.port() && addr.port() != 0) {
                    return Err(cx.err(
                        "admin.listen",
                        format!("{addr} is the public listener's port: the admin API needs a listener of its own"),
                    ));
                }
                if token.is_none() {
                    return Err(cx.err(
                        "admin.token",
                        format!("the admin listener needs a token: admin.token, admin.token_file or {ADMIN_TOKEN_ENV} (16+ printable ASCII characters)"),
                    ));
                }
                Some(addr)
            }
        };
        if self.live_count_limit == 0 {
            return Err(cx.err("admin.live_count_limit", "must be at least 1"));
        }
        if self.drain_timeout.is_zero() {
            return Err(cx.err("admin.drain_timeout", "must be more than zero"));
        }
        Ok(AdminSettings {
            listen,
            token,
            principals: self.principals,
            live_count_limit: self.live_count_limit,
            drain_timeout: self.drain_timeout,
        })
    }
}
