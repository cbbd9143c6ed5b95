//! # Configuration: the TOML file, read once into typed, validated structs
//!
//! The broker reads its configuration in two steps, and each step has one job:
//!
//! 1. **Reading** (`sections.rs`, and `adapters::config` for `[[server_class]]`). Serde reads the
//!    file into one struct per section. The structs are declarative: every default is written
//!    once, as a serde default next to its key, and every struct refuses keys it does not know
//!    (`deny_unknown_fields`), so a typo is an error instead of a setting silently ignored. A
//!    value of the wrong type, an unknown key or a bad duration is reported here, with the key
//!    path (through `serde_path_to_error`), the file and the line.
//! 2. **Checking** (each section's `build`). A section checks what it can on its own (`min_workers`
//!    ≤ `max_workers`, an address that parses) and builds its typed settings; `[[server_class]]` is
//!    checked by the adapters crate, which owns what a class is. [`Config::from_toml`] then makes
//!    the checks that span sections: services naming endpoints and classes that exist, a turn
//!    lease longer than every request timeout, endpoints that authenticate having a credentials
//!    file.
//!
//! Every error names the file, the key (`server_class[1].max_workers`) and what is wrong, so a user
//! can act on it without reading code. `docs/configuration.md` is the reference of every key;
//! `reference.rs` fails when it and the structs disagree.
//!
//! A file that sets nothing is valid: every section takes its defaults and there are no
//! endpoints, server classes or services (the broker warns at start-up that it serves nothing).

mod admin;
mod sections;
mod service;

pub use admin::{AdminSettings, ADMIN_TOKEN_ENV};

#[cfg(test)]
mod reference;
#[cfg(test)]
mod snapshot;
#[cfg(test)]
mod tests;

use adapters::ServerClassConfig;
use sections::FileSections;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The embedded default, also printed by `--print-default-config`.
pub const DEFAULT_CONFIG: &str = include_str!("../default_config.toml");

/// NonStop's ceiling for the session timeout: 432000 minutes (300 days). Longer values are clamped.
pub const MAX_SESSION_TIMEOUT: Duration = Duration::from_secs(432_000 * 60);

/// A configuration problem: which file, which key, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {key}: {problem}")]
pub struct ConfigError {
    pub file: String,
    /// The key path (`server_class[1].max_workers`), or `(file)` / `(toml)` for a file that cannot
    /// be read or is not TOML.
    pub key: String,
    /// What is wrong; for a problem found while reading the TOML, followed by the line and its text.
    pub problem: String,
    /// The line of the file the problem is on, where the TOML reader knows it (wrong types,
    /// unknown keys, bad durations, syntax), for programs; the message already shows it.
    pub line: Option<usize>,
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
    pub admin: AdminSettings,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub level: String,
    pub format: LogFormat,
    /// One `request` span per request (its fields on every line logged inside it); off: none.
    pub request_spans: bool,
    /// Where spans are exported with OTLP/HTTP (the collector's `…/v1/traces`), with the
    /// `otlp` feature; `None`: nowhere.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of the exported spans.
    pub otlp_service_name: String,
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
    SqlSession,
}

impl DialectKind {
    /// The name written in the configuration (`dialect = "…"`).
    pub fn name(self) -> &'static str {
        match self {
            DialectKind::NonStop => "nonstop",
            DialectKind::Dsml => "dsml",
            DialectKind::SqlSession => "sqlsession",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
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
    /// sqlsession: whether clients may start sessions (`SESSIONS = ENABLED`).
    pub sessions: bool,
    /// sqlsession: SOAP 1.2 Sender faults get HTTP 400 (`fault_status = "soap"`) instead of SQL
    /// Server's 500.
    pub soap12_sender_400: bool,
    /// The namespace of the endpoint's WSDL, and of its record services' elements.
    pub namespace: String,
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
    /// A record service's layouts (its class has `payload = "record"`).
    pub record: Option<std::sync::Arc<crate::record_service::RecordService>>,
}

/// Command-line overrides applied on top of the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub store: Option<String>,
    pub id: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub advertise: Option<String>,
    /// `--admin-listen`: overrides `admin.listen`.
    pub admin_listen: Option<String>,
}

/// Parse a human duration ("30m", "500ms", "2h 30m"). Negative values are refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    adapters::config::duration::parse(s)
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
            line: None,
        })?;
        Config::from_toml(&file, &text, overrides)
    }

    /// Parse and validate TOML text; `file` names it in errors.
    pub fn from_toml(file: &str, text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        let cx = Ctx { file };
        let raw = read_sections(file, text)?;

        // The sections in the order a reader meets them, each checked on its own, then the
        // checks between sections.
        let broker = raw.broker.build(&cx, overrides)?;
        let log = raw.log.build(&cx)?;
        let placeholders = Placeholders::new(&broker.data_dir);
        let turn_lease = raw.store.turn_lease;
        let mut store = raw.store.build(&cx, overrides, &placeholders, &broker)?;
        let limits = sections::build_limits(raw.limits, &cx)?;
        let endpoints = sections::endpoints(&cx, raw.endpoint)?;
        let authenticator = raw.auth.build(&cx, &placeholders, &endpoints)?;
        let server_classes = server_classes(&cx, raw.server_class, &placeholders)?;
        let services =
            service::services(&cx, raw.service, &endpoints, &server_classes, &placeholders)?;
        store.turn_lease = sections::turn_lease(&cx, turn_lease, &server_classes)?;
        let cluster = raw.cluster.build(&cx, &placeholders, &store, &endpoints)?;
        let admin = raw.admin.build(
            &cx,
            overrides,
            &placeholders,
            broker.listen,
            authenticator.as_deref(),
        )?;

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
            admin,
        })
    }
}

/// `[[server_class]]`: each table is checked by the adapters crate (`ServerClassSection::build`),
/// the names' uniqueness here.
fn server_classes(
    cx: &Ctx<'_>,
    raw: Vec<adapters::ServerClassSection>,
    placeholders: &Placeholders,
) -> Result<Vec<ServerClassConfig>, ConfigError> {
    let mut classes: Vec<ServerClassConfig> = Vec::new();
    for (i, s) in raw.into_iter().enumerate() {
        if classes.iter().any(|c| c.name == s.name) {
            return Err(cx.err(
                format!("server_class[{i}].name"),
                format!("{:?} is configured twice", s.name),
            ));
        }
        let class = s
            .build(&|v| placeholders.expand(v))
            .map_err(|e| cx.err(format!("server_class[{i}].{}", e.key), e.problem))?;
        classes.push(class);
    }
    Ok(classes)
}

/// Names the file in the errors of the checking step.
struct Ctx<'a> {
    file: &'a str,
}

impl Ctx<'_> {
    fn err(&self, key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            key: key.into(),
            problem: problem.into(),
            line: None,
        }
    }

    /// A count that must be at least 1.
    fn positive(&self, key: &str, value: usize) -> Result<usize, ConfigError> {
        match value {
            0 => Err(self.err(key, "must be at least 1")),
            v => Ok(v),
        }
    }
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

/// The reading step: TOML into the section structs. Serde's errors keep their key path (from
/// `serde_path_to_error`) and the TOML reader's position, so that a wrong type reads
/// `broker.toml: limits.max_depth: invalid type: string "deep", expected usize (line 2: …)`.
fn read_sections(file: &str, text: &str) -> Result<FileSections, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|e| toml_error(file, text, None, &e))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        toml_error(file, text, Some(path), e.inner())
    })
}

/// Turn a TOML or serde error into a [`ConfigError`] naming the key (when the error is about
/// one), the problem, and the line with its text.
fn toml_error(file: &str, text: &str, path: Option<String>, e: &toml::de::Error) -> ConfigError {
    let mut problem = e.message().trim().replace('\n', " ");
    // `serde_path_to_error` writes the root as "."; a syntax error has no path at all.
    let mut key = match path {
        Some(p) if p != "." => p,
        Some(_) => "(top level)".to_string(),
        None => "(toml)".to_string(),
    };
    // A missing required key is reported on its table: name the key itself, as the checks do.
    if let Some(field) = problem
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        key = if key == "(top level)" {
            field.to_string()
        } else {
            format!("{key}.{field}")
        };
        problem = "is required".to_string();
    }
    // serde's wording for a value outside an enum, in the words the checks use.
    if let Some((value, expected)) = problem
        .strip_prefix("unknown variant `")
        .and_then(|r| r.split_once("`, expected "))
    {
        let names = expected
            .trim_start_matches("one of ")
            .replace('`', "")
            .replace(" or ", ", ");
        problem = format!("{value:?} is not one of {names}");
    }
    let line = e.span().map(|span| {
        let upto = &text[..span.start.min(text.len())];
        upto.matches('\n').count() + 1
    });
    if let Some(n) = line {
        let line_text = text.lines().nth(n - 1).unwrap_or("").trim();
        problem = format!("{problem} (line {n}: `{line_text}`)");
    }
    ConfigError {
        file: file.to_string(),
        key,
        problem,
        line,
    }
}
