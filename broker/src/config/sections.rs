//! The sections of the file as serde reads them, each with its defaults, and each section's own
//! checks (`build`). `[[server_class]]` lives in `adapters::config`.
//!
//! A key whose default depends on something else (an endpoint's dialect, the longest
//! `request_timeout`, the listen address) is an `Option` here and resolved in `build`; every other
//! default is the section's `Default` (tables) or a `#[serde(default = …)]` (arrays of tables,
//! whose required keys have none). `docs/configuration.md` states them all, and `reference.rs`
//! checks that it does so truly.

use super::{
    BrokerSettings, ClusterSettings, ConfigError, Ctx, DialectKind, EndpointConfig, LogFormat,
    LogSettings, Overrides, Placeholders, StoreSettings, CLUSTER_SECRET_ENV, MAX_SESSION_TIMEOUT,
};
use adapters::config::duration;
use adapters::{ServerClassConfig, ServerClassSection};
use serde::Deserialize;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The whole file. A section left out takes its defaults; an array left out is empty.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub(super) struct FileSections {
    pub broker: BrokerSection,
    pub log: LogSection,
    pub store: StoreSection,
    pub limits: LimitsSection,
    pub auth: AuthSection,
    pub cluster: ClusterSection,
    pub admin: super::admin::AdminSection,
    pub endpoint: Vec<EndpointSection>,
    pub server_class: Vec<ServerClassSection>,
    pub service: Vec<super::service::ServiceSection>,
}

// ---- [broker] -----------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct BrokerSection {
    /// Default: `<hostname>-<pid>`.
    pub id: Option<String>,
    pub listen: String,
    pub data_dir: PathBuf,
    /// Default: `http://<listen>`.
    pub advertise: Option<String>,
    /// Default: the number of CPUs (actix's choice).
    pub workers: Option<usize>,
    #[serde(deserialize_with = "duration::deserialize")]
    pub shutdown_timeout: Duration,
}

impl Default for BrokerSection {
    fn default() -> Self {
        BrokerSection {
            id: None,
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./broker-data"),
            advertise: None,
            workers: None,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

fn default_broker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "broker".to_string());
    format!("{host}-{}", std::process::id())
}

impl BrokerSection {
    pub fn build(self, cx: &Ctx<'_>, overrides: &Overrides) -> Result<BrokerSettings, ConfigError> {
        let b = self;
        let listen_s = overrides.listen.clone().unwrap_or(b.listen);
        let listen: SocketAddr = listen_s.parse().map_err(|e| {
            cx.err(
                "broker.listen",
                format!("{listen_s:?} is not an address like 127.0.0.1:8080 ({e})"),
            )
        })?;
        let data_dir = overrides.data_dir.clone().unwrap_or(b.data_dir);
        if data_dir.as_os_str().is_empty() {
            return Err(cx.err("broker.data_dir", "must not be empty"));
        }
        let id = overrides
            .id
            .clone()
            .or(b.id)
            .unwrap_or_else(default_broker_id);
        if id.trim().is_empty() {
            return Err(cx.err("broker.id", "must not be empty"));
        }
        // The ID is part of the instance tags in session records (`<worker>@<id>/<nonce>`).
        if let Some(bad) = id
            .chars()
            .find(|c| matches!(c, '/' | '@') || c.is_whitespace() || c.is_control())
        {
            return Err(cx.err(
                "broker.id",
                format!("{id:?} contains {bad:?}; use letters, digits, '-', '_' or '.'"),
            ));
        }
        let advertise = overrides
            .advertise
            .clone()
            .or(b.advertise)
            .unwrap_or_else(|| format!("http://{listen}"));
        let advertise = advertise.trim_end_matches('/').to_string();
        if !advertise.starts_with("http://")
            || advertise.len() <= "http://".len()
            || advertise["http://".len()..].contains('/')
        {
            return Err(cx.err(
                "broker.advertise",
                format!("{advertise:?} is not an http://HOST:PORT address (how other brokers reach this one)"),
            ));
        }
        if let Some(0) = b.workers {
            return Err(cx.err("broker.workers", "must be at least 1"));
        }
        Ok(BrokerSettings {
            id,
            listen,
            data_dir,
            advertise,
            workers: b.workers,
            shutdown_timeout: b.shutdown_timeout,
        })
    }
}

// ---- [log] --------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct LogSection {
    pub level: LogLevel,
    pub format: LogFormat,
    pub request_spans: bool,
    pub otlp_endpoint: Option<String>,
    pub otlp_service_name: String,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            level: LogLevel::default(),
            format: LogFormat::default(),
            request_spans: true,
            otlp_endpoint: None,
            otlp_service_name: "soap-broker".into(),
        }
    }
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(super) enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogSection {
    pub fn build(self, cx: &Ctx<'_>) -> Result<LogSettings, ConfigError> {
        let level = match self.level {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        };
        let otlp_endpoint = match self.otlp_endpoint {
            None => None,
            Some(_) if !cfg!(feature = "otlp") => {
                return Err(cx.err(
                    "log.otlp_endpoint",
                    "this broker was built without the OpenTelemetry exporter: build it with `cargo build --release -p broker --features otlp`, or remove the key",
                ))
            }
            Some(url) => {
                let trimmed = url.trim().trim_end_matches('/');
                let host = trimmed.strip_prefix("http://").unwrap_or("");
                if host.is_empty() || host.contains('/') {
                    return Err(cx.err(
                        "log.otlp_endpoint",
                        format!("{url:?} is not an OTLP/HTTP collector's base URL (http://HOST:PORT; spans go to its /v1/traces)"),
                    ));
                }
                Some(format!("{trimmed}/v1/traces"))
            }
        };
        if self.otlp_service_name.trim().is_empty() {
            return Err(cx.err("log.otlp_service_name", "must not be empty"));
        }
        Ok(LogSettings {
            level: level.to_string(),
            format: self.format,
            request_spans: self.request_spans,
            otlp_endpoint,
            otlp_service_name: self.otlp_service_name,
        })
    }
}

// ---- [store] ------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct StoreSection {
    pub url: String,
    #[serde(deserialize_with = "duration::deserialize")]
    pub sweep_interval: Duration,
    pub sweep_batch: usize,
    pub sweep_rate: usize,
    /// Default: the longest `request_timeout` plus 30 s ([`turn_lease`]).
    #[serde(deserialize_with = "duration::option")]
    pub turn_lease: Option<Duration>,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            url: "sled:{data_dir}/cookies".into(),
            sweep_interval: Duration::from_secs(1),
            sweep_batch: 256,
            sweep_rate: 5000,
            turn_lease: None,
        }
    }
}

impl StoreSection {
    /// The store's settings but its turn lease, which [`turn_lease`] sets once the server classes
    /// are known.
    pub fn build(
        self,
        cx: &Ctx<'_>,
        overrides: &Overrides,
        placeholders: &Placeholders,
        broker: &BrokerSettings,
    ) -> Result<StoreSettings, ConfigError> {
        let url = placeholders.expand(&overrides.store.clone().unwrap_or(self.url));
        if !(url.starts_with("sled:")
            || url.starts_with("cookie-store://")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(cx.err(
                "store.url",
                format!("{url:?}: expected sled:DIR, cookie-store://HOST:PORT or postgres://..."),
            ));
        }
        // Other brokers sharing the store reach this one at its advertised address: the wildcard a
        // server listens on is no address for them.
        let shared = !url.starts_with("sled:");
        let host = &broker.advertise["http://".len()..];
        if shared && (host.starts_with("0.0.0.0:") || host.starts_with("[::]:")) {
            return Err(cx.err(
                "broker.advertise",
                format!(
                    "{:?} is a wildcard address, which the other brokers sharing store {} cannot reach; set broker.advertise (or --advertise) to an address they can",
                    broker.advertise,
                    url.split('@').next_back().unwrap_or(&url)
                ),
            ));
        }
        let store = StoreSettings {
            url,
            sweep_interval: self.sweep_interval,
            sweep_batch: cx.positive("store.sweep_batch", self.sweep_batch)?,
            sweep_rate: cx.positive("store.sweep_rate", self.sweep_rate)?,
            turn_lease: Duration::ZERO,
        };
        if store.sweep_interval.is_zero() {
            return Err(cx.err("store.sweep_interval", "must be more than zero"));
        }
        Ok(store)
    }
}

/// `store.turn_lease`: by default the longest request_timeout plus 30 s, and never less than the
/// longest request_timeout (a request still running would lose its turn).
pub(super) fn turn_lease(
    cx: &Ctx<'_>,
    configured: Option<Duration>,
    classes: &[ServerClassConfig],
) -> Result<Duration, ConfigError> {
    let longest_request = classes
        .iter()
        .map(|c| c.request_timeout)
        .max()
        .unwrap_or_default();
    let lease = configured.unwrap_or(longest_request + Duration::from_secs(30));
    if lease <= longest_request {
        return Err(cx.err(
            "store.turn_lease",
            format!(
                "{} must be longer than the longest server_class request_timeout ({})",
                humantime::format_duration(lease),
                humantime::format_duration(longest_request)
            ),
        ));
    }
    Ok(lease)
}

// ---- [limits] -----------------------------------------------------------------------------------

/// Read straight into `soap::Limits`, whose `Default` is the front end's own; here each is checked
/// to be positive.
pub(super) type LimitsSection = crate::soap::Limits;

pub(super) fn build_limits(
    l: LimitsSection,
    cx: &Ctx<'_>,
) -> Result<crate::soap::Limits, ConfigError> {
    Ok(crate::soap::Limits {
        max_body_bytes: cx.positive("limits.max_body_bytes", l.max_body_bytes)?,
        max_depth: cx.positive("limits.max_depth", l.max_depth)?,
        max_attributes: cx.positive("limits.max_attributes", l.max_attributes)?,
        max_header_blocks: cx.positive("limits.max_header_blocks", l.max_header_blocks)?,
        max_name_len: cx.positive("limits.max_name_len", l.max_name_len)?,
        max_elements: cx.positive("limits.max_elements", l.max_elements)?,
    })
}

// ---- [[endpoint]] -------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EndpointSection {
    pub path: String,
    pub dialect: DialectName,
    /// Default: [`EndpointDefaults`], by dialect.
    #[serde(default, deserialize_with = "duration::option")]
    pub session_timeout: Option<Duration>,
    #[serde(
        default = "default_transaction_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub transaction_timeout: Duration,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(
        default = "default_turn_wait",
        deserialize_with = "duration::deserialize"
    )]
    pub turn_wait: Duration,
    /// Default: `none`, except `required` on sqlsession (which accepts nothing else).
    #[serde(default)]
    pub auth: Option<AuthName>,
    /// sqlsession only: whether clients may start sessions (SQL Server's `SESSIONS = ENABLED`).
    #[serde(default)]
    pub sessions: Option<bool>,
    /// sqlsession only: `sqlserver` (500 for every fault) or `soap` (SOAP 1.2's 400 for Sender).
    #[serde(default)]
    pub fault_status: Option<FaultStatusName>,
    #[serde(default)]
    pub sessions_max: Option<usize>,
    #[serde(default)]
    pub sessions_max_per_ip: Option<usize>,
    #[serde(default)]
    pub ip_match: Option<bool>,
    #[serde(default)]
    pub auth_match: Option<bool>,
    #[serde(default)]
    pub max_requests_per_batch: Option<usize>,
    /// Default: `urn:soap-broker:<path>`.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// `/soap` → `urn:soap-broker:soap`, `/a/b` → `urn:soap-broker:a:b`.
fn default_namespace(path: &str) -> String {
    let rest = path.trim_matches('/').replace('/', ":");
    if rest.is_empty() {
        "urn:soap-broker".into()
    } else {
        format!("urn:soap-broker:{rest}")
    }
}

fn default_transaction_timeout() -> Duration {
    Duration::from_secs(120)
}

fn default_turn_wait() -> Duration {
    Duration::from_secs(300)
}

/// The `dialect` key, with the dialects this build does not serve yet, which get their own error.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(super) enum DialectName {
    NonStop,
    Dsml,
    SqlSession,
}

/// The `fault_status` key of a sqlsession endpoint.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum FaultStatusName {
    SqlServer,
    Soap,
}

/// The `auth` key of an endpoint.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(super) enum AuthName {
    None,
    Optional,
    Required,
    Directory,
}

/// The defaults of the endpoint keys whose default depends on the dialect.
struct EndpointDefaults {
    session_timeout: Duration,
    sessions_max: usize,
    sessions_max_per_ip: usize,
    ip_match: bool,
    auth_match: bool,
    max_requests_per_batch: usize,
}

impl EndpointDefaults {
    fn of(dialect: DialectKind) -> EndpointDefaults {
        match dialect {
            // NonStop SOAP had no session limits and bound sessions to nothing but their cookie; the
            // broker binds them to their principal.
            DialectKind::NonStop => EndpointDefaults {
                session_timeout: Duration::from_secs(30 * 60),
                sessions_max: 0,
                sessions_max_per_ip: 0,
                ip_match: false,
                auth_match: true,
                max_requests_per_batch: 1000,
            },
            // DSML Services for Windows ([MS-DSML] <6>, dsmlv2.config): sessionsTTL 600 s,
            // sessionsMax 100, sessionsMaxPerIP 5, sessionsIPMatch and sessionsAuthMatch on,
            // maxRequestsPerBatch 1000.
            DialectKind::Dsml => EndpointDefaults {
                session_timeout: Duration::from_secs(600),
                sessions_max: 100,
                sessions_max_per_ip: 5,
                ip_match: true,
                auth_match: true,
                max_requests_per_batch: 1000,
            },
            // SQL Server 2005 endpoints: SESSION_TIMEOUT 60 s (the most a client may ask for), no
            // session count limit (the connection limit is the server class's max_workers), sessions
            // bound to the principal that started them and to nothing else.
            DialectKind::SqlSession => EndpointDefaults {
                session_timeout: Duration::from_secs(60),
                sessions_max: 0,
                sessions_max_per_ip: 0,
                ip_match: false,
                auth_match: true,
                max_requests_per_batch: 1000,
            },
        }
    }
}

/// `[[endpoint]]`: each table, and paths unique across them.
pub(super) fn endpoints(
    cx: &Ctx<'_>,
    raw: Vec<EndpointSection>,
) -> Result<Vec<EndpointConfig>, ConfigError> {
    let mut endpoints = Vec::new();
    let mut paths = HashSet::new();
    for (i, e) in raw.into_iter().enumerate() {
        let k = |f: &str| format!("endpoint[{i}].{f}");
        endpoints.push(e.build(cx, &k, &mut paths)?);
    }
    Ok(endpoints)
}

impl EndpointSection {
    fn build(
        self,
        cx: &Ctx<'_>,
        k: &dyn Fn(&str) -> String,
        paths: &mut HashSet<String>,
    ) -> Result<EndpointConfig, ConfigError> {
        let e = self;
        let path = e.path;
        if path.trim().is_empty() {
            return Err(cx.err(k("path"), "must not be empty"));
        }
        if !path.starts_with('/') {
            return Err(cx.err(k("path"), format!("{path:?} must start with /")));
        }
        if path == "/healthz"
            || path.starts_with("/_broker")
            || path.starts_with(crate::cluster::forward::PREFIX)
        {
            return Err(cx.err(k("path"), format!("{path:?} is reserved by the broker")));
        }
        if !paths.insert(path.clone()) {
            return Err(cx.err(k("path"), format!("{path:?} is configured twice")));
        }
        let dialect = match e.dialect {
            DialectName::NonStop => DialectKind::NonStop,
            DialectName::Dsml => DialectKind::Dsml,
            DialectName::SqlSession => DialectKind::SqlSession,
        };
        let sql = dialect == DialectKind::SqlSession;
        if e.sessions.is_some() && !sql {
            return Err(cx.err(
                k("sessions"),
                format!(
                    "only applies to dialect = \"sqlsession\", not {:?}",
                    dialect.name()
                ),
            ));
        }
        if e.fault_status.is_some() && !sql {
            return Err(cx.err(
                k("fault_status"),
                format!(
                    "only applies to dialect = \"sqlsession\", not {:?}",
                    dialect.name()
                ),
            ));
        }
        let auth = match (e.auth, sql) {
            (None, true) | (Some(AuthName::Required), _) => crate::auth::AuthMode::Required,
            (Some(_), true) => {
                return Err(cx.err(
                    k("auth"),
                    "dialect = \"sqlsession\" requires auth = \"required\" (SQL Server's SOAP endpoints allow no anonymous access)",
                ))
            }
            (None | Some(AuthName::None), false) => crate::auth::AuthMode::None,
            (Some(AuthName::Optional), false) => crate::auth::AuthMode::Optional,
            (Some(AuthName::Directory), false) if dialect.name() == "dsml" => {
                crate::auth::AuthMode::Directory
            }
            (Some(AuthName::Directory), false) => {
                return Err(cx.err(
                    k("auth"),
                    "\"directory\" (credentials checked by an ldap class's directory) only applies to dialect = \"dsml\"",
                ))
            }
        };
        if sql && e.auth_match == Some(false) {
            return Err(cx.err(
                k("auth_match"),
                "dialect = \"sqlsession\" binds every session to its principal; auth_match cannot be false",
            ));
        }
        let defaults = EndpointDefaults::of(dialect);
        let session_timeout = e
            .session_timeout
            .unwrap_or(defaults.session_timeout)
            .min(MAX_SESSION_TIMEOUT);
        if session_timeout.is_zero() {
            return Err(cx.err(k("session_timeout"), "must be more than zero"));
        }
        if e.max_requests_per_batch.is_some() && dialect != DialectKind::Dsml {
            return Err(cx.err(
                k("max_requests_per_batch"),
                format!(
                    "only applies to dialect = \"dsml\", not {:?}",
                    dialect.name()
                ),
            ));
        }
        let max_requests_per_batch = cx.positive(
            &k("max_requests_per_batch"),
            e.max_requests_per_batch
                .unwrap_or(defaults.max_requests_per_batch),
        )?;
        let namespace = match e.namespace {
            Some(ns) if ns.trim().is_empty() || ns.contains(char::is_whitespace) => {
                return Err(cx.err(
                    k("namespace"),
                    format!("{ns:?} is not a namespace name (a URI such as urn:example:accounts)"),
                ))
            }
            Some(ns) => ns,
            None => default_namespace(&path),
        };
        Ok(EndpointConfig {
            namespace,
            path,
            dialect,
            session_timeout,
            transaction_timeout: e.transaction_timeout,
            roles: e.roles,
            auth,
            sessions: e.sessions.unwrap_or(false),
            soap12_sender_400: e.fault_status == Some(FaultStatusName::Soap),
            turn_wait: e.turn_wait,
            sessions_max: e.sessions_max.unwrap_or(defaults.sessions_max),
            sessions_max_per_ip: e
                .sessions_max_per_ip
                .unwrap_or(defaults.sessions_max_per_ip),
            ip_match: e.ip_match.unwrap_or(defaults.ip_match),
            auth_match: e.auth_match.unwrap_or(defaults.auth_match),
            max_requests_per_batch,
        })
    }
}

// ---- [auth] -------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct AuthSection {
    pub credentials_file: Option<String>,
    /// `user:hash` lines written in the configuration itself (the embedded default's sample user).
    pub users: Vec<String>,
    pub realm: String,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            credentials_file: None,
            users: Vec::new(),
            realm: "soap-broker".into(),
        }
    }
}

impl AuthSection {
    /// The credentials, loaded; and every endpoint that authenticates has them.
    pub fn build(
        self,
        cx: &Ctx<'_>,
        placeholders: &Placeholders,
        endpoints: &[EndpointConfig],
    ) -> Result<Option<std::sync::Arc<crate::auth::Authenticator>>, ConfigError> {
        let realm = self.realm;
        if realm.is_empty() || realm.contains('"') {
            return Err(cx.err(
                "auth.realm",
                "must be non-empty and contain no double quote",
            ));
        }
        let mut text = String::new();
        if let Some(f) = self.credentials_file.as_deref() {
            let path = PathBuf::from(placeholders.expand(f));
            text = std::fs::read_to_string(&path).map_err(|e| {
                cx.err(
                    "auth.credentials_file",
                    format!("{}: cannot read: {e}", path.display()),
                )
            })?;
            crate::auth::Authenticator::parse(&text, &realm)
                .map_err(|p| cx.err("auth.credentials_file", format!("{}: {p}", path.display())))?;
        }
        for (i, line) in self.users.iter().enumerate() {
            crate::auth::Authenticator::parse(line, &realm)
                .map_err(|p| cx.err(format!("auth.users[{i}]"), p.replacen("line 1: ", "", 1)))?;
            text.push('\n');
            text.push_str(line);
        }
        let authenticator = if self.credentials_file.is_none() && self.users.is_empty() {
            None
        } else {
            let auth = crate::auth::Authenticator::parse(&text, &realm)
                .map_err(|p| cx.err("auth.users", p))?;
            Some(std::sync::Arc::new(auth))
        };
        if authenticator.is_none() {
            if let Some(i) = endpoints.iter().position(|e| {
                !matches!(
                    e.auth,
                    crate::auth::AuthMode::None | crate::auth::AuthMode::Directory
                )
            }) {
                return Err(cx.err(
                    format!("endpoint[{i}].auth"),
                    "needs credentials: set auth.credentials_file or auth.users (users made with `broker hash-password`)",
                ));
            }
        }
        Ok(authenticator)
    }
}

// ---- [cluster] ----------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct ClusterSection {
    pub secret: Option<String>,
    pub secret_file: Option<String>,
    #[serde(deserialize_with = "duration::deserialize")]
    pub heartbeat: Duration,
    #[serde(deserialize_with = "duration::deserialize")]
    pub lease: Duration,
    #[serde(deserialize_with = "duration::deserialize")]
    pub recovery_interval: Duration,
    /// Default: the longest `turn_wait` plus `store.turn_lease`.
    #[serde(deserialize_with = "duration::option")]
    pub forward_timeout: Option<Duration>,
    #[serde(deserialize_with = "duration::deserialize")]
    pub connect_timeout: Duration,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            secret: None,
            secret_file: None,
            heartbeat: Duration::from_secs(1),
            lease: Duration::from_secs(5),
            recovery_interval: Duration::from_secs(30),
            forward_timeout: None,
            connect_timeout: Duration::from_secs(2),
        }
    }
}

impl ClusterSection {
    /// The secret from exactly one place, a lease longer than two heartbeats.
    pub fn build(
        self,
        cx: &Ctx<'_>,
        placeholders: &Placeholders,
        store: &StoreSettings,
        endpoints: &[EndpointConfig],
    ) -> Result<ClusterSettings, ConfigError> {
        let (secret, secret_source) = match (self.secret, self.secret_file) {
            (Some(_), Some(_)) => {
                return Err(cx.err(
                    "cluster.secret",
                    "set either cluster.secret or cluster.secret_file, not both",
                ))
            }
            (Some(text), None) => {
                let s =
                    crate::cluster::Secret::new(&text).map_err(|p| cx.err("cluster.secret", p))?;
                (Some(s), "cluster.secret")
            }
            (None, Some(file)) => {
                let path = PathBuf::from(placeholders.expand(&file));
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    cx.err(
                        "cluster.secret_file",
                        format!("{}: cannot read: {e}", path.display()),
                    )
                })?;
                let s = crate::cluster::Secret::new(&text).map_err(|p| {
                    cx.err(
                        "cluster.secret_file",
                        format!("{}: the secret {p}", path.display()),
                    )
                })?;
                (Some(s), "cluster.secret_file")
            }
            (None, None) => match std::env::var(CLUSTER_SECRET_ENV) {
                Ok(text) if !text.trim().is_empty() => {
                    let s = crate::cluster::Secret::new(&text).map_err(|p| {
                        cx.err(
                            "cluster.secret",
                            format!("the environment variable {CLUSTER_SECRET_ENV} {p}"),
                        )
                    })?;
                    (Some(s), CLUSTER_SECRET_ENV)
                }
                _ => (None, "none"),
            },
        };
        let heartbeat = self.heartbeat;
        if heartbeat.is_zero() {
            return Err(cx.err("cluster.heartbeat", "must be more than zero"));
        }
        let lease = self.lease;
        if lease <= heartbeat * 2 {
            return Err(cx.err(
                "cluster.lease",
                format!(
                    "{} must be longer than two heartbeats ({} each): one late heartbeat must not make a broker look dead",
                    humantime::format_duration(lease),
                    humantime::format_duration(heartbeat)
                ),
            ));
        }
        if self.recovery_interval.is_zero() {
            return Err(cx.err("cluster.recovery_interval", "must be more than zero"));
        }
        // A forwarded request may wait for the session's turn, then run: give it that long.
        let longest_wait = endpoints
            .iter()
            .map(|e| e.turn_wait)
            .max()
            .unwrap_or_default();
        let forward_timeout = self
            .forward_timeout
            .unwrap_or(longest_wait + store.turn_lease);
        if forward_timeout.is_zero() {
            return Err(cx.err("cluster.forward_timeout", "must be more than zero"));
        }
        if self.connect_timeout.is_zero() {
            return Err(cx.err("cluster.connect_timeout", "must be more than zero"));
        }
        Ok(ClusterSettings {
            secret,
            secret_source,
            heartbeat,
            lease,
            recovery_interval: self.recovery_interval,
            forward_timeout,
            connect_timeout: self.connect_timeout,
        })
    }
}
