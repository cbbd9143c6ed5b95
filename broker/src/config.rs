//! Configuration: the TOML file parsed once into typed, validated structs.
//!
//! Parsing happens in two steps. Serde reads the file into `Raw*` structs that mirror the TOML
//! (every key optional, unknown keys refused so a typo is an error rather than a silently ignored
//! setting); [`Config::from_toml`] then validates each value and builds the typed [`Config`]. Every
//! error names the file, the key (`server_class[1].max_workers`) and what is wrong, so a user can act
//! on it without reading code.

use adapters::{AdapterKind, Context, ServerClassConfig};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The embedded default, also printed by `--print-default-config`.
pub const DEFAULT_CONFIG: &str = include_str!("default_config.toml");

/// NonStop's ceiling for the session timeout: 432000 minutes (300 days). Longer values are clamped.
pub const MAX_SESSION_TIMEOUT: Duration = Duration::from_secs(432_000 * 60);

/// A configuration problem: which file, which key, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {key}: {problem}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub problem: String,
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub broker: BrokerSettings,
    pub log: LogSettings,
    pub store: StoreSettings,
    pub limits: crate::soap::Limits,
    pub endpoints: Vec<EndpointConfig>,
    pub server_classes: Vec<ServerClassConfig>,
    pub services: Vec<ServiceConfig>,
    /// The credentials file, loaded, when `[auth] credentials_file` is set.
    pub authenticator: Option<std::sync::Arc<crate::auth::Authenticator>>,
    pub cluster: ClusterSettings,
}

#[derive(Debug, Clone)]
pub struct BrokerSettings {
    pub id: String,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub advertise: String,
    pub workers: Option<usize>,
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub url: String,
    pub sweep_interval: Duration,
    pub sweep_batch: usize,
    /// The most sessions the expiry sweeper examines (and so deletes) per second; it spreads
    /// them evenly, so a backlog of expired sessions never takes the CPU from requests in one go.
    pub sweep_rate: usize,
    /// How long a request may hold a session's turn before another request (of any broker) may
    /// take it over: longer than the longest backend `request_timeout`, so that only a dead
    /// broker loses its turn.
    pub turn_lease: Duration,
}

/// `[cluster]`: several brokers sharing one store (see `crate::cluster`).
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// What brokers show each other on internal calls. `None`: this broker serves no internal
    /// path and forwards nothing.
    pub secret: Option<crate::cluster::Secret>,
    /// Where the secret came from (`cluster.secret`, `cluster.secret_file`, the environment), for
    /// the start-up log.
    pub secret_source: &'static str,
    /// How often this broker renews its registry lease and reads the others'.
    pub heartbeat: Duration,
    /// How long a registration holds: a broker silent for this long is taken for dead.
    pub lease: Duration,
    /// How often transaction recovery runs (also whenever a broker leaves the registry).
    pub recovery_interval: Duration,
    /// How long a forwarded request may take, answer included.
    pub forward_timeout: Duration,
    /// How long connecting to another broker may take.
    pub connect_timeout: Duration,
}

/// The environment variable that may hold the cluster secret.
pub const CLUSTER_SECRET_ENV: &str = "BROKER_CLUSTER_SECRET";

/// Which session dialect an endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialectKind {
    NonStop,
    Dsml,
}

impl DialectKind {
    /// The name written in the configuration (`dialect = "…"`).
    pub fn name(self) -> &'static str {
        match self {
            DialectKind::NonStop => "nonstop",
            DialectKind::Dsml => "dsml",
        }
    }
}

#[derive(Debug, Clone)]
pub struct EndpointConfig {
    pub path: String,
    pub dialect: DialectKind,
    pub session_timeout: Duration,
    pub transaction_timeout: Duration,
    /// Extra SOAP 1.2 roles / 1.1 actors this endpoint plays (besides next and ultimateReceiver).
    pub roles: Vec<String>,
    /// How long a request waits for an earlier request of the same session to finish.
    pub turn_wait: Duration,
    /// What the endpoint requires of HTTP Basic credentials.
    pub auth: crate::auth::AuthMode,
    /// Live sessions the endpoint holds at most (0: unlimited). DSML's `sessionsMax`.
    pub sessions_max: usize,
    /// Live sessions one client IP may hold at most on the endpoint (0: unlimited). DSML's
    /// `sessionsMaxPerIP`.
    pub sessions_max_per_ip: usize,
    /// A session may only be used from the client IP that began it (DSML's `sessionsIPMatch`).
    pub ip_match: bool,
    /// A session may only be used by the principal that began it (DSML's `sessionsAuthMatch`).
    pub auth_match: bool,
    /// Operations one DSML `batchRequest` may hold (DSML's `maxRequestsPerBatch`).
    pub max_requests_per_batch: usize,
}

impl EndpointConfig {
    /// Whether admission must count sessions (a limit is set).
    pub fn has_session_limits(&self) -> bool {
        self.sessions_max > 0 || self.sessions_max_per_ip > 0
    }
}

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub name: String,
    pub endpoint: String,
    pub server_class: String,
    pub operation: String,
    pub response_encoding: Option<String>,
    pub abort_transaction_on_fault: bool,
}

/// Command-line overrides applied on top of the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub store: Option<String>,
    pub id: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub advertise: Option<String>,
}

// ---- the raw TOML shape -------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    broker: RawBroker,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    cluster: RawCluster,
    #[serde(default)]
    endpoint: Vec<RawEndpoint>,
    #[serde(default)]
    server_class: Vec<RawServerClass>,
    #[serde(default)]
    service: Vec<RawService>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBroker {
    id: Option<String>,
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    advertise: Option<String>,
    workers: Option<usize>,
    shutdown_timeout: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: Option<String>,
    format: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStore {
    url: Option<String>,
    sweep_interval: Option<String>,
    sweep_batch: Option<usize>,
    sweep_rate: Option<usize>,
    turn_lease: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    secret: Option<String>,
    secret_file: Option<String>,
    heartbeat: Option<String>,
    lease: Option<String>,
    recovery_interval: Option<String>,
    forward_timeout: Option<String>,
    connect_timeout: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_body_bytes: Option<usize>,
    max_depth: Option<usize>,
    max_attributes: Option<usize>,
    max_header_blocks: Option<usize>,
    max_name_len: Option<usize>,
    max_elements: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    credentials_file: Option<String>,
    realm: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    path: Option<String>,
    dialect: Option<String>,
    session_timeout: Option<String>,
    transaction_timeout: Option<String>,
    roles: Option<Vec<String>>,
    turn_wait: Option<String>,
    auth: Option<String>,
    sessions_max: Option<usize>,
    sessions_max_per_ip: Option<usize>,
    ip_match: Option<bool>,
    auth_match: Option<bool>,
    max_requests_per_batch: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServerClass {
    name: Option<String>,
    adapter: Option<String>,
    command: Option<Vec<String>>,
    env: Option<BTreeMap<String, String>>,
    cwd: Option<String>,
    addresses: Option<Vec<String>>,
    urls: Option<Vec<String>>,
    context: Option<String>,
    transactional: Option<bool>,
    one_txn_per_dialog: Option<bool>,
    min_workers: Option<usize>,
    max_workers: Option<usize>,
    max_dialogs_per_worker: Option<usize>,
    request_timeout: Option<String>,
    queue_limit: Option<usize>,
    idle_timeout: Option<String>,
    restart_backoff: Option<String>,
    restart_backoff_max: Option<String>,
    max_frame_bytes: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: Option<String>,
    endpoint: Option<String>,
    server_class: Option<String>,
    operation: Option<String>,
    response_encoding: Option<String>,
    abort_transaction_on_fault: Option<bool>,
}

// ---- validation ---------------------------------------------------------------------------------

struct Ctx<'a> {
    file: &'a str,
}

impl Ctx<'_> {
    fn err(&self, key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            key: key.into(),
            problem: problem.into(),
        }
    }

    fn duration(
        &self,
        key: &str,
        value: Option<&str>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(default),
            Some(s) => parse_duration(s).map_err(|p| self.err(key, p)),
        }
    }

    fn required<'v>(&self, key: &str, value: &'v Option<String>) -> Result<&'v str, ConfigError> {
        match value.as_deref() {
            Some(v) if !v.trim().is_empty() => Ok(v),
            Some(_) => Err(self.err(key, "must not be empty")),
            None => Err(self.err(key, "is required")),
        }
    }

    fn positive(
        &self,
        key: &str,
        value: Option<usize>,
        default: usize,
    ) -> Result<usize, ConfigError> {
        match value.unwrap_or(default) {
            0 => Err(self.err(key, "must be at least 1")),
            v => Ok(v),
        }
    }
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
        }
    }
}

/// Parse a human duration ("30m", "500ms", "2h 30m"). Negative values are refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!("{s:?} is negative; durations must be zero or more"));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("{s:?} is not a duration ({e}); write e.g. \"30s\", \"30m\", \"2h\""))
}

fn default_broker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "broker".to_string());
    format!("{host}-{}", std::process::id())
}

impl Config {
    /// The embedded default with the given overrides.
    pub fn embedded(overrides: &Overrides) -> Result<Config, ConfigError> {
        Config::from_toml("<embedded default>", DEFAULT_CONFIG, overrides)
    }

    /// Read and validate a configuration file.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: "(file)".into(),
            problem: format!("cannot read: {e}"),
        })?;
        Config::from_toml(&file, &text, overrides)
    }

    /// Parse and validate TOML text; `file` names it in errors.
    pub fn from_toml(file: &str, text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        let cx = Ctx { file };
        let raw: RawConfig = toml::from_str(text).map_err(|e| toml_error(file, text, &e))?;

        // [broker]
        let b = raw.broker;
        let listen_s = overrides
            .listen
            .clone()
            .or(b.listen)
            .unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen: SocketAddr = listen_s.parse().map_err(|e| {
            cx.err(
                "broker.listen",
                format!("{listen_s:?} is not an address like 127.0.0.1:8080 ({e})"),
            )
        })?;
        let data_dir = overrides
            .data_dir
            .clone()
            .or(b.data_dir)
            .unwrap_or_else(|| PathBuf::from("./broker-data"));
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
        let broker = BrokerSettings {
            id,
            listen,
            data_dir: data_dir.clone(),
            advertise,
            workers: b.workers,
            shutdown_timeout: cx.duration(
                "broker.shutdown_timeout",
                b.shutdown_timeout.as_deref(),
                Duration::from_secs(30),
            )?,
        };

        // [log]
        let level = raw.log.level.unwrap_or_else(|| "info".into());
        if !["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
            return Err(cx.err(
                "log.level",
                format!("{level:?} is not one of error, warn, info, debug, trace"),
            ));
        }
        let format = match raw.log.format.as_deref().unwrap_or("human") {
            "human" => LogFormat::Human,
            "json" => LogFormat::Json,
            other => {
                return Err(cx.err("log.format", format!("{other:?} is not one of human, json")))
            }
        };
        let log = LogSettings { level, format };

        // [store]
        let placeholders = Placeholders::new(&data_dir);
        let url = overrides
            .store
            .clone()
            .or(raw.store.url)
            .unwrap_or_else(|| "sled:{data_dir}/cookies".into());
        let url = placeholders.expand(&url);
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
        let mut store = StoreSettings {
            url,
            sweep_interval: cx.duration(
                "store.sweep_interval",
                raw.store.sweep_interval.as_deref(),
                Duration::from_secs(1),
            )?,
            sweep_batch: cx.positive("store.sweep_batch", raw.store.sweep_batch, 256)?,
            sweep_rate: cx.positive("store.sweep_rate", raw.store.sweep_rate, 5000)?,
            // Set once the server classes (their request timeouts) are known, below.
            turn_lease: Duration::ZERO,
        };
        if store.sweep_interval.is_zero() {
            return Err(cx.err("store.sweep_interval", "must be more than zero"));
        }

        // [limits]
        let d = crate::soap::Limits::default();
        let l = raw.limits;
        let limits = crate::soap::Limits {
            max_body_bytes: cx.positive(
                "limits.max_body_bytes",
                l.max_body_bytes,
                d.max_body_bytes,
            )?,
            max_depth: cx.positive("limits.max_depth", l.max_depth, d.max_depth)?,
            max_attributes: cx.positive(
                "limits.max_attributes",
                l.max_attributes,
                d.max_attributes,
            )?,
            max_header_blocks: cx.positive(
                "limits.max_header_blocks",
                l.max_header_blocks,
                d.max_header_blocks,
            )?,
            max_name_len: cx.positive("limits.max_name_len", l.max_name_len, d.max_name_len)?,
            max_elements: cx.positive("limits.max_elements", l.max_elements, d.max_elements)?,
        };

        // [[endpoint]]
        let mut endpoints = Vec::new();
        let mut paths = HashSet::new();
        for (i, e) in raw.endpoint.into_iter().enumerate() {
            let k = |f: &str| format!("endpoint[{i}].{f}");
            let path = cx.required(&k("path"), &e.path)?.to_string();
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
            let dialect =
                match cx.required(&k("dialect"), &e.dialect)? {
                    "nonstop" => DialectKind::NonStop,
                    "dsml" => DialectKind::Dsml,
                    "sqlsession" => return Err(cx.err(
                        k("dialect"),
                        "this dialect is not available in this build yet (nonstop and dsml are)",
                    )),
                    other => {
                        return Err(cx.err(
                            k("dialect"),
                            format!("{other:?} is not one of nonstop, dsml, sqlsession"),
                        ))
                    }
                };
            let defaults = EndpointDefaults::of(dialect);
            let session_timeout = cx
                .duration(
                    &k("session_timeout"),
                    e.session_timeout.as_deref(),
                    defaults.session_timeout,
                )?
                .min(MAX_SESSION_TIMEOUT);
            if session_timeout.is_zero() {
                return Err(cx.err(k("session_timeout"), "must be more than zero"));
            }
            let dsml_only = |key: &str, present: bool| {
                if present && dialect != DialectKind::Dsml {
                    Err(cx.err(
                        k(key),
                        format!(
                            "only applies to dialect = \"dsml\", not {:?}",
                            dialect.name()
                        ),
                    ))
                } else {
                    Ok(())
                }
            };
            dsml_only("max_requests_per_batch", e.max_requests_per_batch.is_some())?;
            let max_requests_per_batch = cx.positive(
                &k("max_requests_per_batch"),
                e.max_requests_per_batch,
                defaults.max_requests_per_batch,
            )?;
            endpoints.push(EndpointConfig {
                path,
                dialect,
                session_timeout,
                transaction_timeout: cx.duration(
                    &k("transaction_timeout"),
                    e.transaction_timeout.as_deref(),
                    Duration::from_secs(120),
                )?,
                roles: e.roles.unwrap_or_default(),
                auth: match e.auth.as_deref().unwrap_or("none") {
                    "none" => crate::auth::AuthMode::None,
                    "optional" => crate::auth::AuthMode::Optional,
                    "required" => crate::auth::AuthMode::Required,
                    other => {
                        return Err(cx.err(
                            k("auth"),
                            format!("{other:?} is not one of none, optional, required"),
                        ))
                    }
                },
                turn_wait: cx.duration(
                    &k("turn_wait"),
                    e.turn_wait.as_deref(),
                    Duration::from_secs(300),
                )?,
                sessions_max: e.sessions_max.unwrap_or(defaults.sessions_max),
                sessions_max_per_ip: e
                    .sessions_max_per_ip
                    .unwrap_or(defaults.sessions_max_per_ip),
                ip_match: e.ip_match.unwrap_or(defaults.ip_match),
                auth_match: e.auth_match.unwrap_or(defaults.auth_match),
                max_requests_per_batch,
            });
        }

        // [auth]
        let realm = raw.auth.realm.unwrap_or_else(|| "soap-broker".to_string());
        if realm.is_empty() || realm.contains('"') {
            return Err(cx.err(
                "auth.realm",
                "must be non-empty and contain no double quote",
            ));
        }
        let authenticator = match raw.auth.credentials_file.as_deref() {
            None => None,
            Some(f) => {
                let path = PathBuf::from(placeholders.expand(f));
                let auth = crate::auth::Authenticator::load(&path, &realm).map_err(|p| {
                    cx.err("auth.credentials_file", format!("{}: {p}", path.display()))
                })?;
                Some(std::sync::Arc::new(auth))
            }
        };
        if authenticator.is_none() {
            if let Some(i) = endpoints
                .iter()
                .position(|e| e.auth != crate::auth::AuthMode::None)
            {
                return Err(cx.err(
                    format!("endpoint[{i}].auth"),
                    "needs a credentials file: set auth.credentials_file (users made with `broker hash-password`)",
                ));
            }
        }

        // [[server_class]]
        let mut server_classes: Vec<ServerClassConfig> = Vec::new();
        for (i, s) in raw.server_class.into_iter().enumerate() {
            let k = |f: &str| format!("server_class[{i}].{f}");
            let name = cx.required(&k("name"), &s.name)?.to_string();
            if server_classes.iter().any(|c| c.name == name) {
                return Err(cx.err(k("name"), format!("{name:?} is configured twice")));
            }
            let adapter = match s.adapter.as_deref().unwrap_or("process") {
                "process" => {
                    let command: Vec<String> = s.command.clone().unwrap_or_default();
                    if command.is_empty() || command[0].trim().is_empty() {
                        return Err(cx.err(
                            k("command"),
                            "is required for adapter = \"process\" (program and arguments)",
                        ));
                    }
                    AdapterKind::Process {
                        command: command.iter().map(|a| placeholders.expand(a)).collect(),
                        env: s
                            .env
                            .clone()
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(key, v)| (key, placeholders.expand(&v)))
                            .collect(),
                        cwd: s
                            .cwd
                            .as_deref()
                            .map(|c| PathBuf::from(placeholders.expand(c))),
                    }
                }
                "tcp" => {
                    let addresses = s.addresses.clone().unwrap_or_default();
                    if addresses.is_empty() {
                        return Err(cx.err(
                            k("addresses"),
                            "is required for adapter = \"tcp\" (a list of host:port)",
                        ));
                    }
                    AdapterKind::Tcp { addresses }
                }
                "http" => {
                    let urls = s.urls.clone().unwrap_or_default();
                    if urls.is_empty() {
                        return Err(cx.err(
                            k("urls"),
                            "is required for adapter = \"http\" (a list of http:// URLs)",
                        ));
                    }
                    if let Some(bad) = urls.iter().find(|u| !u.starts_with("http://")) {
                        return Err(cx.err(k("urls"), format!("{bad:?} is not an http:// URL")));
                    }
                    AdapterKind::Http { urls }
                }
                other => {
                    return Err(cx.err(
                        k("adapter"),
                        format!("{other:?} is not one of process, tcp, http"),
                    ))
                }
            };
            let adapter_name = s.adapter.clone().unwrap_or_else(|| "process".into());
            for (key, present) in [
                ("command", s.command.is_some()),
                ("env", s.env.is_some()),
                ("cwd", s.cwd.is_some()),
            ] {
                if present && adapter_name != "process" {
                    return Err(cx.err(
                        k(key),
                        format!("only applies to adapter = \"process\", not {adapter_name:?}"),
                    ));
                }
            }
            if s.addresses.is_some() && adapter_name != "tcp" {
                return Err(cx.err(
                    k("addresses"),
                    format!("only applies to adapter = \"tcp\", not {adapter_name:?}"),
                ));
            }
            if s.urls.is_some() && adapter_name != "http" {
                return Err(cx.err(
                    k("urls"),
                    format!("only applies to adapter = \"http\", not {adapter_name:?}"),
                ));
            }
            let mut c = ServerClassConfig::new(name, adapter);
            c.context = match s.context.as_deref().unwrap_or("free") {
                "free" => Context::Free,
                "sensitive" => Context::Sensitive,
                other => {
                    return Err(cx.err(
                        k("context"),
                        format!("{other:?} is not one of free, sensitive"),
                    ))
                }
            };
            c.transactional = s.transactional.unwrap_or(false);
            if c.transactional && adapter_name == "http" {
                return Err(cx.err(
                    k("transactional"),
                    "the http adapter cannot carry transactions; use the process or tcp adapter",
                ));
            }
            if c.context == Context::Sensitive && adapter_name == "http" {
                return Err(cx.err(k("context"), "the http adapter is context-free only"));
            }
            c.one_txn_per_dialog = s.one_txn_per_dialog.unwrap_or(false);
            if c.one_txn_per_dialog && c.context != Context::Sensitive {
                return Err(cx.err(
                    k("one_txn_per_dialog"),
                    "only applies to context = \"sensitive\" classes",
                ));
            }
            c.min_workers = s.min_workers.unwrap_or(c.min_workers);
            c.max_workers = cx.positive(&k("max_workers"), s.max_workers, c.max_workers)?;
            if c.min_workers > c.max_workers {
                return Err(cx.err(
                    k("min_workers"),
                    format!(
                        "{} is more than max_workers ({})",
                        c.min_workers, c.max_workers
                    ),
                ));
            }
            c.max_dialogs_per_worker = cx.positive(
                &k("max_dialogs_per_worker"),
                s.max_dialogs_per_worker,
                c.max_dialogs_per_worker,
            )?;
            c.request_timeout = cx.duration(
                &k("request_timeout"),
                s.request_timeout.as_deref(),
                c.request_timeout,
            )?;
            if c.request_timeout.is_zero() {
                return Err(cx.err(k("request_timeout"), "must be more than zero"));
            }
            c.queue_limit = s.queue_limit.unwrap_or(c.queue_limit);
            c.idle_timeout = cx.duration(
                &k("idle_timeout"),
                s.idle_timeout.as_deref(),
                c.idle_timeout,
            )?;
            c.restart_backoff = cx.duration(
                &k("restart_backoff"),
                s.restart_backoff.as_deref(),
                c.restart_backoff,
            )?;
            c.restart_backoff_max = cx.duration(
                &k("restart_backoff_max"),
                s.restart_backoff_max.as_deref(),
                c.restart_backoff_max,
            )?;
            c.max_frame_bytes =
                cx.positive(&k("max_frame_bytes"), s.max_frame_bytes, c.max_frame_bytes)?;
            server_classes.push(c);
        }

        // [[service]]
        let mut services: Vec<ServiceConfig> = Vec::new();
        for (i, s) in raw.service.into_iter().enumerate() {
            let k = |f: &str| format!("service[{i}].{f}");
            let name = cx.required(&k("name"), &s.name)?.to_string();
            let endpoint = cx.required(&k("endpoint"), &s.endpoint)?.to_string();
            if !endpoints.iter().any(|e| e.path == endpoint) {
                return Err(cx.err(
                    k("endpoint"),
                    format!("{endpoint:?} is not a configured endpoint path"),
                ));
            }
            let class = cx
                .required(&k("server_class"), &s.server_class)?
                .to_string();
            if !server_classes.iter().any(|c| c.name == class) {
                return Err(cx.err(
                    k("server_class"),
                    format!("{class:?} is not a configured server_class name"),
                ));
            }
            if services
                .iter()
                .any(|o| o.name == name && o.endpoint == endpoint)
            {
                return Err(cx.err(
                    k("name"),
                    format!("{name:?} is configured twice for endpoint {endpoint:?}"),
                ));
            }
            if let Some(enc) = &s.response_encoding {
                if encoding_rs::Encoding::for_label(enc.as_bytes()).is_none() {
                    return Err(cx.err(
                        k("response_encoding"),
                        format!("{enc:?} is not a known encoding label"),
                    ));
                }
            }
            services.push(ServiceConfig {
                operation: s.operation.clone().unwrap_or_else(|| name.clone()),
                name,
                endpoint,
                server_class: class,
                response_encoding: s.response_encoding,
                abort_transaction_on_fault: s.abort_transaction_on_fault.unwrap_or(false),
            });
        }

        // [store] turn_lease: by default the longest request_timeout plus 30 s, and never less than
        // the longest request_timeout (a request still running would lose its turn).
        let longest_request = server_classes
            .iter()
            .map(|c| c.request_timeout)
            .max()
            .unwrap_or_default();
        store.turn_lease = cx.duration(
            "store.turn_lease",
            raw.store.turn_lease.as_deref(),
            longest_request + Duration::from_secs(30),
        )?;
        if store.turn_lease <= longest_request {
            return Err(cx.err(
                "store.turn_lease",
                format!(
                    "{} must be longer than the longest server_class request_timeout ({})",
                    humantime::format_duration(store.turn_lease),
                    humantime::format_duration(longest_request)
                ),
            ));
        }

        // [cluster]
        let cluster = cluster_settings(&cx, raw.cluster, &placeholders, &store, &endpoints)?;

        Ok(Config {
            broker,
            log,
            store,
            limits,
            endpoints,
            server_classes,
            services,
            authenticator,
            cluster,
        })
    }
}

/// `[cluster]`, validated: the secret from exactly one place, a lease longer than two heartbeats.
fn cluster_settings(
    cx: &Ctx<'_>,
    raw: RawCluster,
    placeholders: &Placeholders,
    store: &StoreSettings,
    endpoints: &[EndpointConfig],
) -> Result<ClusterSettings, ConfigError> {
    let (secret, secret_source) = match (raw.secret, raw.secret_file) {
        (Some(_), Some(_)) => {
            return Err(cx.err(
                "cluster.secret",
                "set either cluster.secret or cluster.secret_file, not both",
            ))
        }
        (Some(text), None) => {
            let s = crate::cluster::Secret::new(&text).map_err(|p| cx.err("cluster.secret", p))?;
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
    let heartbeat = cx.duration(
        "cluster.heartbeat",
        raw.heartbeat.as_deref(),
        Duration::from_secs(1),
    )?;
    if heartbeat.is_zero() {
        return Err(cx.err("cluster.heartbeat", "must be more than zero"));
    }
    let lease = cx.duration(
        "cluster.lease",
        raw.lease.as_deref(),
        Duration::from_secs(5),
    )?;
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
    let recovery_interval = cx.duration(
        "cluster.recovery_interval",
        raw.recovery_interval.as_deref(),
        Duration::from_secs(30),
    )?;
    if recovery_interval.is_zero() {
        return Err(cx.err("cluster.recovery_interval", "must be more than zero"));
    }
    // A forwarded request may wait for the session's turn, then run: give it that long.
    let longest_wait = endpoints
        .iter()
        .map(|e| e.turn_wait)
        .max()
        .unwrap_or_default();
    let forward_timeout = cx.duration(
        "cluster.forward_timeout",
        raw.forward_timeout.as_deref(),
        longest_wait + store.turn_lease,
    )?;
    if forward_timeout.is_zero() {
        return Err(cx.err("cluster.forward_timeout", "must be more than zero"));
    }
    let connect_timeout = cx.duration(
        "cluster.connect_timeout",
        raw.connect_timeout.as_deref(),
        Duration::from_secs(2),
    )?;
    if connect_timeout.is_zero() {
        return Err(cx.err("cluster.connect_timeout", "must be more than zero"));
    }
    Ok(ClusterSettings {
        secret,
        secret_source,
        heartbeat,
        lease,
        recovery_interval,
        forward_timeout,
        connect_timeout,
    })
}

/// Expands `{data_dir}` and `{broker_exe}` in strings of the configuration.
struct Placeholders {
    data_dir: String,
    broker_exe: String,
}

impl Placeholders {
    fn new(data_dir: &Path) -> Self {
        let broker_exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "broker".to_string());
        Placeholders {
            data_dir: data_dir.display().to_string(),
            broker_exe,
        }
    }

    fn expand(&self, s: &str) -> String {
        s.replace("{data_dir}", &self.data_dir)
            .replace("{broker_exe}", &self.broker_exe)
    }
}

/// Turn a TOML error into one line naming the position and the offending line.
fn toml_error(file: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    let (key, _) = match e.span() {
        Some(span) => {
            let upto = &text[..span.start.min(text.len())];
            let line = upto.matches('\n').count() + 1;
            let line_text = text.lines().nth(line - 1).unwrap_or("").trim();
            (format!("line {line} (`{line_text}`)"), ())
        }
        None => ("(file)".to_string(), ()),
    };
    ConfigError {
        file: file.to_string(),
        key,
        problem: e.message().trim().replace('\n', " "),
    }
}

#[cfg(test)]
mod snapshot;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml("test.toml", text, &Overrides::default())
    }

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::embedded(&Overrides::default()).unwrap();
        assert_eq!(c.broker.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.endpoints[0].path, "/soap");
        assert_eq!(c.endpoints[0].session_timeout, Duration::from_secs(1800));
        assert!(c.store.url.starts_with("sled:"));
        assert!(c.store.url.ends_with("/cookies"), "{}", c.store.url);
        assert_eq!(c.services[0].operation, "Echo");
    }

    #[test]
    fn overrides_win() {
        let o = Overrides {
            listen: Some("127.0.0.1:9999".into()),
            store: Some("sled:/tmp/x".into()),
            id: Some("b7".into()),
            data_dir: Some("/tmp/d".into()),
            advertise: Some("http://10.0.0.7:9999".into()),
        };
        let c = Config::embedded(&o).unwrap();
        assert_eq!(c.broker.listen.port(), 9999);
        assert_eq!(c.broker.advertise, "http://10.0.0.7:9999");
        assert_eq!(c.store.url, "sled:/tmp/x");
        assert_eq!(c.broker.id, "b7");
        match &c.server_classes[0].adapter {
            AdapterKind::Process { command, .. } => assert!(!command[0].contains("{broker_exe}")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_name_file_key_and_problem() {
        let e = parse(
            "[[endpoint]]\npath = \"/soap\"\ndialect = \"nonstop\"\nsession_timeout = \"-5m\"\n",
        )
        .unwrap_err();
        assert_eq!(e.file, "test.toml");
        assert_eq!(e.key, "endpoint[0].session_timeout");
        assert!(e.problem.contains("negative"), "{e}");

        let e = parse("[[server_class]]\nname = \"x\"\nadapter = \"process\"\n").unwrap_err();
        assert_eq!(e.key, "server_class[0].command");

        let e = parse(
            "[[server_class]]\nname = \"x\"\ncommand = [\"a\"]\nmin_workers = 5\nmax_workers = 2\n",
        )
        .unwrap_err();
        assert_eq!(e.key, "server_class[0].min_workers");

        let e = parse("[[server_class]]\nname = \"h\"\nadapter = \"http\"\nurls = [\"http://x\"]\ntransactional = true\n").unwrap_err();
        assert_eq!(e.key, "server_class[0].transactional");

        let e =
            parse("[[service]]\nname = \"Echo\"\nendpoint = \"/nope\"\nserver_class = \"echo\"\n")
                .unwrap_err();
        assert_eq!(e.key, "service[0].endpoint");

        let e = parse("[broker]\nlisten = \"nowhere\"\n").unwrap_err();
        assert_eq!(e.key, "broker.listen");
    }

    #[test]
    fn sweep_rate_has_a_default_and_must_be_positive() {
        let c = Config::embedded(&Overrides::default()).unwrap();
        assert_eq!(c.store.sweep_rate, 5000);
        let c = parse("[store]\nsweep_rate = 50\n").unwrap();
        assert_eq!(c.store.sweep_rate, 50);
        let e = parse("[store]\nsweep_rate = 0\n").unwrap_err();
        assert_eq!(e.key, "store.sweep_rate");
    }

    #[test]
    fn unknown_keys_and_bad_types_are_refused_with_their_line() {
        let e = parse("[broker]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n").unwrap_err();
        assert!(e.key.contains("line 3"), "{e}");
        assert!(e.problem.contains("lisen"), "{e}");
        let e = parse("[limits]\nmax_depth = \"deep\"\n").unwrap_err();
        assert!(e.key.contains("line 2"), "{e}");
    }

    #[test]
    fn auth_needs_a_readable_credentials_file() {
        let e =
            parse("[[endpoint]]\npath = \"/soap\"\ndialect = \"nonstop\"\nauth = \"required\"\n")
                .unwrap_err();
        assert_eq!(e.key, "endpoint[0].auth");
        let e = parse("[auth]\ncredentials_file = \"/nonexistent/users\"\n").unwrap_err();
        assert_eq!(e.key, "auth.credentials_file");
        let e = parse("[[endpoint]]\npath = \"/soap\"\ndialect = \"nonstop\"\nauth = \"maybe\"\n")
            .unwrap_err();
        assert_eq!(e.key, "endpoint[0].auth");
    }

    #[test]
    fn dsml_endpoints_get_dsml_defaults_and_nonstop_ones_stay_unlimited() {
        let c = parse(
            "[[endpoint]]\npath = \"/soap\"\ndialect = \"nonstop\"\n[[endpoint]]\npath = \"/dsml\"\ndialect = \"dsml\"\n",
        )
        .unwrap();
        let (n, d) = (&c.endpoints[0], &c.endpoints[1]);
        assert_eq!(n.session_timeout, Duration::from_secs(1800));
        assert_eq!((n.sessions_max, n.sessions_max_per_ip), (0, 0));
        assert!(!n.ip_match && n.auth_match && !n.has_session_limits());
        assert_eq!(d.dialect, DialectKind::Dsml);
        assert_eq!(d.session_timeout, Duration::from_secs(600));
        assert_eq!((d.sessions_max, d.sessions_max_per_ip), (100, 5));
        assert!(d.ip_match && d.auth_match && d.has_session_limits());
        assert_eq!(d.max_requests_per_batch, 1000);

        let c = parse("[[endpoint]]\npath = \"/dsml\"\ndialect = \"dsml\"\nsessions_max = 0\nsessions_max_per_ip = 0\nip_match = false\nauth_match = false\nmax_requests_per_batch = 3\nsession_timeout = \"2s\"\n").unwrap();
        let d = &c.endpoints[0];
        assert!(!d.has_session_limits() && !d.ip_match && !d.auth_match);
        assert_eq!(d.max_requests_per_batch, 3);
        assert_eq!(d.session_timeout, Duration::from_secs(2));

        let e = parse(
            "[[endpoint]]\npath = \"/dsml\"\ndialect = \"dsml\"\nmax_requests_per_batch = 0\n",
        )
        .unwrap_err();
        assert_eq!(e.key, "endpoint[0].max_requests_per_batch");
        let e = parse(
            "[[endpoint]]\npath = \"/soap\"\ndialect = \"nonstop\"\nmax_requests_per_batch = 5\n",
        )
        .unwrap_err();
        assert_eq!(e.key, "endpoint[0].max_requests_per_batch");
        assert!(e.problem.contains("dsml"), "{e}");
        let e = parse("[[endpoint]]\npath = \"/dsml\"\ndialect = \"dsml\"\nsessions_max = -1\n")
            .unwrap_err();
        assert!(e.key.contains("line 4"), "{e}");
        let e = parse("[[endpoint]]\npath = \"/q\"\ndialect = \"sqlsession\"\n").unwrap_err();
        assert_eq!(e.key, "endpoint[0].dialect");
    }

    #[test]
    fn the_embedded_default_serves_dsml() {
        let c = Config::embedded(&Overrides::default()).unwrap();
        let d = c
            .endpoints
            .iter()
            .find(|e| e.path == "/dsml")
            .expect("a /dsml endpoint");
        assert_eq!(d.dialect, DialectKind::Dsml);
        assert_eq!((d.sessions_max, d.sessions_max_per_ip), (100, 5));
        assert!(c.services.iter().any(|s| s.name == "batchRequest"
            && s.endpoint == "/dsml"
            && s.server_class == "directory"));
    }

    #[test]
    fn cluster_settings_are_validated_and_default_sanely() {
        let c = Config::embedded(&Overrides::default()).unwrap();
        assert_eq!(c.cluster.heartbeat, Duration::from_secs(1));
        assert_eq!(c.cluster.lease, Duration::from_secs(5));
        // The longest request_timeout of the default classes is 3m (echo).
        assert_eq!(c.store.turn_lease, Duration::from_secs(210));
        assert_eq!(c.cluster.forward_timeout, Duration::from_secs(300 + 210));
        if std::env::var(CLUSTER_SECRET_ENV).is_err() {
            assert!(c.cluster.secret.is_none());
        }

        let c = parse("[cluster]\nsecret = \"0123456789abcdef\"\nheartbeat = \"200ms\"\nlease = \"1s\"\n[store]\nturn_lease = \"4s\"\n").unwrap();
        assert!(c
            .cluster
            .secret
            .as_ref()
            .is_some_and(|s| s.matches(b"0123456789abcdef")));
        assert_eq!(c.cluster.secret_source, "cluster.secret");
        assert_eq!(c.cluster.lease, Duration::from_secs(1));
        assert_eq!(c.store.turn_lease, Duration::from_secs(4));

        let e = parse("[cluster]\nsecret = \"short\"\n").unwrap_err();
        assert_eq!(e.key, "cluster.secret");
        assert!(e.problem.contains("at least 16"), "{e}");
        let e = parse("[cluster]\nheartbeat = \"1s\"\nlease = \"2s\"\n").unwrap_err();
        assert_eq!(e.key, "cluster.lease");
        assert!(e.problem.contains("two heartbeats"), "{e}");
        let e =
            parse("[cluster]\nsecret = \"0123456789abcdef\"\nsecret_file = \"/x\"\n").unwrap_err();
        assert_eq!(e.key, "cluster.secret");
        let e = parse("[cluster]\nsecret_file = \"/nonexistent/secret\"\n").unwrap_err();
        assert_eq!(e.key, "cluster.secret_file");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "from-a-file-0123456789\n").unwrap();
        let c = parse(&format!(
            "[cluster]\nsecret_file = {:?}\n",
            file.display().to_string()
        ))
        .unwrap();
        assert!(c
            .cluster
            .secret
            .as_ref()
            .is_some_and(|s| s.matches(b"from-a-file-0123456789")));

        // turn_lease must exceed every request_timeout.
        let e = parse("[store]\nturn_lease = \"10s\"\n[[server_class]]\nname = \"x\"\ncommand = [\"a\"]\nrequest_timeout = \"10s\"\n").unwrap_err();
        assert_eq!(e.key, "store.turn_lease");
        assert!(e.problem.contains("request_timeout"), "{e}");

        let e = parse("[broker]\nid = \"a/b\"\n").unwrap_err();
        assert_eq!(e.key, "broker.id");
        let e = parse("[broker]\nadvertise = \"https://x:1\"\n").unwrap_err();
        assert_eq!(e.key, "broker.advertise");
        // Sharing a store, the wildcard listen address is no address for the other brokers.
        let e = parse(
            "[broker]\nlisten = \"0.0.0.0:8080\"\n[store]\nurl = \"postgres://u:secret@db/x\"\n",
        )
        .unwrap_err();
        assert_eq!(e.key, "broker.advertise");
        assert!(!e.to_string().contains("secret"), "{e}");
        assert!(parse("[broker]\nlisten = \"0.0.0.0:8080\"\n").is_ok());
        let e = parse("[[endpoint]]\npath = \"/_cluster/x\"\ndialect = \"nonstop\"\n").unwrap_err();
        assert_eq!(e.key, "endpoint[0].path");
    }

    #[test]
    fn session_timeout_is_clamped() {
        let c = parse("[[endpoint]]\npath = \"/soap\"\ndialect = \"nonstop\"\nsession_timeout = \"500days\"\n").unwrap();
        assert_eq!(c.endpoints[0].session_timeout, MAX_SESSION_TIMEOUT);
    }
}
