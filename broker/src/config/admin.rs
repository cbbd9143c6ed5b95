//! `[admin]`: the operators' listener (`crate::admin`): where it listens, and the token it wants.
//! Off unless `listen` is set; never on the public port.

use super::{ConfigError, Ctx, Overrides, Placeholders};
use crate::cluster::Secret;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The environment variable that may hold the admin token.
pub const ADMIN_TOKEN_ENV: &str = "BROKER_ADMIN_TOKEN";

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub(super) struct AdminSection {
    /// Default: no admin listener.
    pub listen: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<String>,
}

/// `[admin]`, checked.
#[derive(Debug, Clone, Default)]
pub struct AdminSettings {
    /// Where the admin API and `/metrics` are served; `None`: nowhere.
    pub listen: Option<SocketAddr>,
    /// What a request must present as `Authorization: Bearer <token>`.
    pub token: Option<Secret>,
}

impl AdminSection {
    pub fn build(
        self,
        cx: &Ctx<'_>,
        overrides: &Overrides,
        placeholders: &Placeholders,
        public: SocketAddr,
    ) -> Result<AdminSettings, ConfigError> {
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
        Ok(AdminSettings { listen, token })
    }
}
