//! # The configuration of a server class
//!
//! Two layers, so that the TOML stays declarative and the adapters never see text:
//!
//! - [`ServerClassSection`] is one `[[server_class]]` table as written: serde fills in every key the
//!   file leaves out from [`defaults`] (the one place a default is written down) and refuses keys
//!   it does not know, so a typo is an error rather than a silently ignored setting.
//! - [`ServerClassSection::build`] checks what one table can check on its own (a command for the
//!   process adapter, `min_workers` ≤ `max_workers`, no transactions over http, …) and gives the
//!   typed [`ServerClassConfig`] the adapters run from. A problem comes back as a [`FieldError`]
//!   naming the key inside the table (`max_workers`); the broker, which knows the file and the
//!   table's index, turns it into `broker.toml: server_class[1].max_workers: must be at least 1`.
//!
//! What needs more than one table (two classes with one name, a service naming a class that does
//! not exist) is the broker's to check.
//!
//! Durations are human strings ("500ms", "30s", "2h 30m") read by [`duration`], which the broker
//! uses for its own sections too.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Whether a class keeps conversation state in its workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Context {
    /// Any worker can answer any request.
    Free,
    /// A dialog must stay with one worker.
    Sensitive,
}

/// Which threads run a process or tcp class's worker I/O (`worker_io`; see "Homes" in
/// `pool/dispatch.rs`). Measured on a 2-core AMD EPYC, `continue` through the process adapter:
/// `caller` gave 8–11 % more requests per second with one HTTP worker thread, and 8–11 % fewer
/// with two (the HTTP threads, busy with requests, then answer the pipes late), so `class` is the
/// default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerIo {
    /// The class's own runtime drives every worker: a request is handed to it and back.
    Class,
    /// A worker started for a request is driven by that request's thread, which then reads and
    /// writes its pipes or socket itself when it is served there (no hand-off to another thread).
    Caller,
}

/// How the class is reached, with the adapter's own settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdapterKind {
    /// Child processes speaking the wire protocol on stdin/stdout.
    Process {
        /// Program and arguments.
        command: Vec<String>,
        /// Extra environment for the workers.
        env: Vec<(String, String)>,
        /// Working directory (default: the broker's).
        cwd: Option<PathBuf>,
    },
    /// Servers someone else runs, speaking the wire protocol over TCP.
    Tcp { addresses: Vec<String> },
    /// HTTP services receiving the body element by POST.
    Http { urls: Vec<String> },
    /// A SQL database: each worker is one connection (`sql/`).
    Sql {
        /// `sqlite:<path>` (the file is created if missing) or `postgres://…`.
        database: String,
        /// SQL run once when the class starts (on its first connection): a sample schema.
        init_sql: Option<String>,
        /// Named web methods, each a parameterised statement (`methods`).
        methods: Vec<SqlMethod>,
    },
    /// An LDAP directory behind a DSML endpoint: each worker is one connection (`ldap/`).
    Ldap(crate::ldap::Binding),
}

/// A named web method of a sql class: the Body element `<name>` with one child per parameter runs
/// `sql`, its `@parameters` typed as declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlMethod {
    pub name: String,
    pub sql: String,
    /// Parameter names (without `@`) and their `sqlDbType`s.
    pub parameters: Vec<(String, crate::sql::SqlType)>,
}

/// One `[[server_class.methods]]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlMethodSection {
    pub name: String,
    pub sql: String,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
}

impl AdapterKind {
    /// The configuration's name for the kind (`process`, `tcp`, `http`), for messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            AdapterKind::Process { .. } => "process",
            AdapterKind::Tcp { .. } => "tcp",
            AdapterKind::Http { .. } => "http",
            AdapterKind::Sql { .. } => "sql",
            AdapterKind::Ldap(_) => "ldap",
        }
    }
}

/// Everything a server class needs to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerClassConfig {
    pub name: String,
    pub adapter: AdapterKind,
    pub context: Context,
    pub transactional: bool,
    pub one_txn_per_dialog: bool,
    /// Workers started up front (process) or connections kept open (tcp).
    pub min_workers: usize,
    /// The most workers (process) or connection slots (tcp, http concurrency).
    pub max_workers: usize,
    pub max_dialogs_per_worker: usize,
    /// How long a reply may take before the request faults (-351) and the worker is recycled.
    pub request_timeout: Duration,
    /// Requests that may wait for a free worker before further ones fault at once.
    pub queue_limit: usize,
    /// A worker above `min_workers` idle this long is stopped.
    pub idle_timeout: Duration,
    /// First delay before restarting a dead worker; doubles up to `restart_backoff_max`.
    pub restart_backoff: Duration,
    pub restart_backoff_max: Duration,
    /// Largest wire-protocol frame accepted or sent.
    pub max_frame_bytes: usize,
    /// Which threads run the workers' I/O (process and tcp adapters).
    pub worker_io: WorkerIo,
    /// What a request's and a reply's payload is: the Body's XML, or a fixed-layout record.
    pub payload: PayloadFormat,
}

/// What the class's workers read and write (`payload`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// The service element as XML (every adapter).
    #[default]
    Xml,
    /// A fixed-layout record: the broker turns the XML into the service's request record and the
    /// reply record back into XML (process, tcp and http adapters; `[service.record]`).
    Record,
}

impl ServerClassConfig {
    /// Whether the class binds as the client and so is given its credentials (an ldap class with
    /// `bind = "principal"`); no other class ever sees a client's password.
    pub fn binds_as_client(&self) -> bool {
        matches!(
            &self.adapter,
            AdapterKind::Ldap(b) if matches!(b.mode, crate::ldap::BindMode::Principal(_))
        )
    }

    /// Whether the class serves calls outside any session. A context-sensitive class keeps a
    /// dialog's state in its worker and so needs a session, except a sql or ldap class: a batch
    /// outside a session runs on any connection no dialog holds.
    pub fn serves_sessionless(&self) -> bool {
        self.context == Context::Free
            || matches!(self.adapter, AdapterKind::Sql { .. } | AdapterKind::Ldap(_))
    }

    /// A configuration with the documented defaults, for the given name and adapter.
    pub fn new(name: impl Into<String>, adapter: AdapterKind) -> Self {
        ServerClassConfig {
            name: name.into(),
            adapter,
            context: defaults::context(),
            transactional: false,
            one_txn_per_dialog: false,
            min_workers: defaults::min_workers(),
            max_workers: defaults::max_workers(),
            max_dialogs_per_worker: defaults::max_dialogs_per_worker(),
            request_timeout: defaults::request_timeout(),
            queue_limit: defaults::queue_limit(),
            idle_timeout: defaults::idle_timeout(),
            restart_backoff: defaults::restart_backoff(),
            restart_backoff_max: defaults::restart_backoff_max(),
            max_frame_bytes: defaults::max_frame_bytes(),
            payload: PayloadFormat::Xml,
            worker_io: defaults::worker_io(),
        }
    }
}

/// The default of every `[[server_class]]` key that has one, shared by serde and
/// [`ServerClassConfig::new`] (`docs/configuration.md` states them; a broker test checks it does).
pub mod defaults {
    use super::{AdapterName, Context, WorkerIo};
    use std::time::Duration;

    pub fn adapter() -> AdapterName {
        AdapterName::Process
    }
    pub fn context() -> Context {
        Context::Free
    }
    pub fn min_workers() -> usize {
        1
    }
    pub fn max_workers() -> usize {
        4
    }
    pub fn max_dialogs_per_worker() -> usize {
        1
    }
    pub fn request_timeout() -> Duration {
        Duration::from_secs(180)
    }
    pub fn queue_limit() -> usize {
        1024
    }
    pub fn idle_timeout() -> Duration {
        Duration::from_secs(300)
    }
    pub fn restart_backoff() -> Duration {
        Duration::from_millis(100)
    }
    pub fn restart_backoff_max() -> Duration {
        Duration::from_secs(10)
    }
    pub fn max_frame_bytes() -> usize {
        16 * 1024 * 1024
    }
    pub fn worker_io() -> WorkerIo {
        WorkerIo::Class
    }
}

/// Human durations in serde: `#[serde(deserialize_with = "duration::deserialize")]`.
///
/// Why not the `humantime-serde` crate: its error for a bad value is serde's generic
/// `invalid value: string "-5m", expected a duration`, which loses what today's configuration
/// errors say and users (and the tests) rely on: that the value is *negative*, and an example of
/// what to write. This module is the same `humantime` parser with those messages.
pub mod duration {
    use serde::de::{self, Deserializer, Visitor};
    use std::fmt;
    use std::time::Duration;

    /// Parse a human duration ("30m", "500ms", "2h 30m"). Negative values are refused.
    pub fn parse(s: &str) -> Result<Duration, String> {
        let t = s.trim();
        if t.starts_with('-') {
            return Err(format!("{s:?} is negative; durations must be zero or more"));
        }
        humantime::parse_duration(t).map_err(|e| {
            format!("{s:?} is not a duration ({e}); write e.g. \"30s\", \"30m\", \"2h\"")
        })
    }

    struct Human;

    impl Visitor<'_> for Human {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration string such as \"30s\"")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse(v).map_err(E::custom)
        }
    }

    /// A required (or `default = …`) duration field.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_str(Human)
    }

    /// An optional duration field (`#[serde(default, deserialize_with = "duration::option")]`):
    /// TOML has no null, so a present key is always a value.
    pub fn option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        deserialize(d).map(Some)
    }
}

/// A problem with one key of a section, named relative to the section (`max_workers`); the caller
/// adds the file and the section's place in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub key: &'static str,
    pub problem: String,
}

impl FieldError {
    fn new(key: &'static str, problem: impl Into<String>) -> Self {
        FieldError {
            key,
            problem: problem.into(),
        }
    }
}

/// The `adapter` key: which adapter reaches the class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdapterName {
    Process,
    Tcp,
    Http,
    Sql,
    Ldap,
}

impl AdapterName {
    fn name(self) -> &'static str {
        match self {
            AdapterName::Process => "process",
            AdapterName::Tcp => "tcp",
            AdapterName::Http => "http",
            AdapterName::Sql => "sql",
            AdapterName::Ldap => "ldap",
        }
    }
}

/// One `[[server_class]]` table as written. The adapter-specific keys (`command`, `env`, `cwd`,
/// `addresses`, `urls`) stay optional so that [`ServerClassSection::build`] can refuse one given
/// to the wrong adapter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerClassSection {
    pub name: String,
    #[serde(default = "defaults::adapter")]
    pub adapter: AdapterName,
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub addresses: Option<Vec<String>>,
    #[serde(default)]
    pub urls: Option<Vec<String>>,
    #[serde(default)]
    pub database: Option<String>,
    #[serde(default)]
    pub init_sql: Option<String>,
    #[serde(default)]
    pub methods: Option<Vec<SqlMethodSection>>,
    #[serde(default)]
    pub directory: Option<String>,
    #[serde(default)]
    pub bind_dn: Option<String>,
    #[serde(default)]
    pub bind_password: Option<String>,
    #[serde(default, deserialize_with = "duration::option")]
    pub connect_timeout: Option<Duration>,
    #[serde(default)]
    pub bind: Option<String>,
    #[serde(default)]
    pub bind_dn_template: Option<String>,
    #[serde(default)]
    pub bind_search_base: Option<String>,
    #[serde(default)]
    pub bind_search_filter: Option<String>,
    #[serde(default)]
    pub search_window: Option<u32>,
    #[serde(default = "defaults::context")]
    pub context: Context,
    #[serde(default)]
    pub transactional: bool,
    #[serde(default)]
    pub one_txn_per_dialog: bool,
    #[serde(default = "defaults::min_workers")]
    pub min_workers: usize,
    #[serde(default = "defaults::max_workers")]
    pub max_workers: usize,
    #[serde(default = "defaults::max_dialogs_per_worker")]
    pub max_dialogs_per_worker: usize,
    #[serde(
        default = "defaults::request_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub request_timeout: Duration,
    #[serde(default = "defaults::queue_limit")]
    pub queue_limit: usize,
    #[serde(
        default = "defaults::idle_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub idle_timeout: Duration,
    #[serde(
        default = "defaults::restart_backoff",
        deserialize_with = "duration::deserialize"
    )]
    pub restart_backoff: Duration,
    #[serde(
        default = "defaults::restart_backoff_max",
        deserialize_with = "duration::deserialize"
    )]
    pub restart_backoff_max: Duration,
    #[serde(default = "defaults::max_frame_bytes")]
    pub max_frame_bytes: usize,
    #[serde(default)]
    pub worker_io: Option<WorkerIo>,
    #[serde(default)]
    pub payload: PayloadFormat,
}

impl ServerClassSection {
    /// Check the table on its own and build the class's configuration. `expand` rewrites the
    /// placeholders (`{data_dir}`, `{broker_exe}`) in `command`, `env` and `cwd`.
    pub fn build(self, expand: &dyn Fn(&str) -> String) -> Result<ServerClassConfig, FieldError> {
        let s = self;
        if s.name.trim().is_empty() {
            return Err(FieldError::new("name", "must not be empty"));
        }
        let adapter = s.adapter.name();
        let present = [
            ("command", s.command.is_some(), AdapterName::Process),
            ("env", s.env.is_some(), AdapterName::Process),
            ("cwd", s.cwd.is_some(), AdapterName::Process),
            ("addresses", s.addresses.is_some(), AdapterName::Tcp),
            ("urls", s.urls.is_some(), AdapterName::Http),
            ("database", s.database.is_some(), AdapterName::Sql),
            ("init_sql", s.init_sql.is_some(), AdapterName::Sql),
            ("methods", s.methods.is_some(), AdapterName::Sql),
            ("directory", s.directory.is_some(), AdapterName::Ldap),
            ("bind_dn", s.bind_dn.is_some(), AdapterName::Ldap),
            (
                "bind_password",
                s.bind_password.is_some(),
                AdapterName::Ldap,
            ),
            (
                "connect_timeout",
                s.connect_timeout.is_some(),
                AdapterName::Ldap,
            ),
            ("bind", s.bind.is_some(), AdapterName::Ldap),
            (
                "bind_dn_template",
                s.bind_dn_template.is_some(),
                AdapterName::Ldap,
            ),
            (
                "bind_search_base",
                s.bind_search_base.is_some(),
                AdapterName::Ldap,
            ),
            (
                "bind_search_filter",
                s.bind_search_filter.is_some(),
                AdapterName::Ldap,
            ),
            (
                "search_window",
                s.search_window.is_some(),
                AdapterName::Ldap,
            ),
        ];
        if s.adapter == AdapterName::Http && s.worker_io.is_some() {
            return Err(FieldError::new(
                "worker_io",
                "only applies to the process and tcp adapters (the http adapter always runs on \
                 the request's thread)",
            ));
        }
        if matches!(s.adapter, AdapterName::Sql | AdapterName::Ldap) && s.worker_io.is_some() {
            return Err(FieldError::new(
                "worker_io",
                "only applies to the process and tcp adapters (a sql or ldap connection is \
                 driven by its own thread or task)",
            ));
        }
        let kind = match s.adapter {
            AdapterName::Process => {
                let command = s.command.unwrap_or_default();
                if command.first().is_none_or(|p| p.trim().is_empty()) {
                    return Err(FieldError::new(
                        "command",
                        "is required for adapter = \"process\" (program and arguments)",
                    ));
                }
                AdapterKind::Process {
                    command: command.iter().map(|a| expand(a)).collect(),
                    env: s
                        .env
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(key, v)| (key, expand(&v)))
                        .collect(),
                    cwd: s.cwd.as_deref().map(|c| PathBuf::from(expand(c))),
                }
            }
            AdapterName::Tcp => {
                let addresses = s.addresses.unwrap_or_default();
                if addresses.is_empty() {
                    return Err(FieldError::new(
                        "addresses",
                        "is required for adapter = \"tcp\" (a list of host:port)",
                    ));
                }
                AdapterKind::Tcp { addresses }
            }
            AdapterName::Http => {
                let urls = s.urls.unwrap_or_default();
                if urls.is_empty() {
                    return Err(FieldError::new(
                        "urls",
                        "is required for adapter = \"http\" (a list of http:// URLs)",
                    ));
                }
                if let Some(bad) = urls.iter().find(|u| !u.starts_with("http://")) {
                    return Err(FieldError::new(
                        "urls",
                        format!("{bad:?} is not an http:// URL"),
                    ));
                }
                AdapterKind::Http { urls }
            }
            AdapterName::Sql => {
                let database = s.database.clone().unwrap_or_default();
                let database = expand(database.trim());
                let known = database.starts_with("sqlite:")
                    || database.starts_with("postgres://")
                    || database.starts_with("postgresql://");
                if !known {
                    return Err(FieldError::new(
                        "database",
                        format!(
                            "{:?} is not a database the sql adapter knows; write \
                             \"sqlite:<path>\" or \"postgres://user@host:port/dbname\"",
                            crate::sql::redact(&database)
                        ),
                    ));
                }
                if database == "sqlite:" {
                    return Err(FieldError::new(
                        "database",
                        "names no file; write \"sqlite:<path>\" (e.g. \"sqlite:{data_dir}/sample.db\")",
                    ));
                }
                let mut methods: Vec<SqlMethod> = Vec::new();
                for m in s.methods.clone().unwrap_or_default() {
                    let ok_name = m
                        .name
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_alphabetic() || c == '_')
                        && m.name.chars().all(|c| c.is_alphanumeric() || c == '_');
                    if !ok_name || m.name == "sqlbatch" {
                        return Err(FieldError::new(
                            "methods",
                            format!("{:?} is not a method name (an XML name of letters, digits and _, not sqlbatch)", m.name),
                        ));
                    }
                    if methods.iter().any(|x| x.name == m.name) {
                        return Err(FieldError::new(
                            "methods",
                            format!("{:?} is declared twice", m.name),
                        ));
                    }
                    if m.sql.trim().is_empty() {
                        return Err(FieldError::new(
                            "methods",
                            format!("{}: sql is empty", m.name),
                        ));
                    }
                    let mut parameters = Vec::new();
                    for (p, ty) in &m.parameters {
                        let Some(t) = crate::sql::SqlType::from_db_type(ty) else {
                            return Err(FieldError::new(
                                "methods",
                                format!("{}: parameter {p}: unknown sqlDbType {ty:?} (Int, BigInt, Bit, Float, Decimal, NVarChar, VarBinary, DateTime, …)", m.name),
                            ));
                        };
                        parameters.push((p.trim_start_matches('@').to_string(), t));
                    }
                    methods.push(SqlMethod {
                        name: m.name,
                        sql: m.sql,
                        parameters,
                    });
                }
                AdapterKind::Sql {
                    database,
                    init_sql: s.init_sql.clone(),
                    methods,
                }
            }
            AdapterName::Ldap => {
                let url = expand(s.directory.as_deref().unwrap_or_default().trim());
                if !url.starts_with("ldap://") {
                    return Err(FieldError::new(
                        "directory",
                        if url.is_empty() {
                            "is required for adapter = \"ldap\" (an ldap://host:port URL)"
                                .to_string()
                        } else {
                            format!("{url:?} is not an ldap:// URL (ldaps:// and StartTLS are not offered yet)")
                        },
                    ));
                }
                if s.bind_password.is_some() && s.bind_dn.is_none() {
                    return Err(FieldError::new(
                        "bind_password",
                        "is given without bind_dn (whose password is it?)",
                    ));
                }
                let connect_timeout = s.connect_timeout.unwrap_or(Duration::from_secs(5));
                if connect_timeout.is_zero() {
                    return Err(FieldError::new("connect_timeout", "must be more than 0"));
                }
                use crate::ldap::{BindMode, PrincipalDn};
                let default_bind = if s.bind_dn.is_some() {
                    "service"
                } else {
                    "anonymous"
                };
                let mode = match s.bind.as_deref().unwrap_or(default_bind) {
                    "anonymous" => BindMode::Anonymous,
                    "service" if s.bind_dn.is_none() => {
                        return Err(FieldError::new(
                            "bind",
                            "\"service\" needs bind_dn (and bind_password): the account to bind as",
                        ))
                    }
                    "service" => BindMode::Service,
                    "principal" => {
                        let with_user = |key: &'static str, v: &str| {
                            if v.contains("{user}") {
                                Ok(())
                            } else {
                                Err(FieldError::new(
                                    key,
                                    "must contain {user}, the client's user name",
                                ))
                            }
                        };
                        match (&s.bind_dn_template, &s.bind_search_base, &s.bind_search_filter) {
                            (Some(t), None, None) => {
                                with_user("bind_dn_template", t)?;
                                BindMode::Principal(PrincipalDn::Template(t.clone()))
                            }
                            (None, Some(base), Some(filter)) => {
                                with_user("bind_search_filter", filter)?;
                                BindMode::Principal(PrincipalDn::Search {
                                    base: base.clone(),
                                    filter: filter.clone(),
                                })
                            }
                            _ => {
                                return Err(FieldError::new(
                                    "bind",
                                    "\"principal\" needs either bind_dn_template (e.g. \"uid={user},ou=people,dc=example,dc=com\") \
                                     or bind_search_base and bind_search_filter (e.g. \"(uid={user})\"), not both",
                                ))
                            }
                        }
                    }
                    other => {
                        return Err(FieldError::new(
                            "bind",
                            format!("{other:?} is not one of anonymous, service, principal"),
                        ))
                    }
                };
                if !matches!(mode, BindMode::Principal(_))
                    && (s.bind_dn_template.is_some()
                        || s.bind_search_base.is_some()
                        || s.bind_search_filter.is_some())
                {
                    let key = if s.bind_dn_template.is_some() {
                        "bind_dn_template"
                    } else if s.bind_search_base.is_some() {
                        "bind_search_base"
                    } else {
                        "bind_search_filter"
                    };
                    return Err(FieldError::new(
                        key,
                        "only applies with bind = \"principal\"",
                    ));
                }
                AdapterKind::Ldap(crate::ldap::Binding {
                    url,
                    bind_dn: s.bind_dn.clone(),
                    bind_password: s.bind_password.clone(),
                    connect_timeout,
                    mode,
                    search_window: s
                        .search_window
                        .unwrap_or(crate::ldap::DEFAULT_SEARCH_WINDOW),
                })
            }
        };
        // A key of another adapter is most likely a mistake about which adapter this is.
        if let Some((key, _, owner)) = present
            .iter()
            .find(|(_, given, owner)| *given && *owner != s.adapter)
        {
            return Err(FieldError::new(
                key,
                format!(
                    "only applies to adapter = \"{}\", not {adapter:?}",
                    owner.name()
                ),
            ));
        }
        if s.adapter == AdapterName::Http {
            if s.transactional {
                return Err(FieldError::new(
                    "transactional",
                    "the http adapter cannot carry transactions; use the process or tcp adapter",
                ));
            }
            if s.context == Context::Sensitive {
                return Err(FieldError::new(
                    "context",
                    "the http adapter is context-free only",
                ));
            }
        }
        if s.adapter == AdapterName::Ldap && s.transactional {
            return Err(FieldError::new(
                "transactional",
                "a directory class has no transactions",
            ));
        }
        if s.adapter == AdapterName::Sql && s.transactional {
            return Err(FieldError::new(
                "transactional",
                "a sql class's transactions are the database's own (BEGIN, COMMIT in the batch); \
                 the broker does not coordinate them",
            ));
        }
        if s.payload == PayloadFormat::Record
            && matches!(s.adapter, AdapterName::Sql | AdapterName::Ldap)
        {
            return Err(FieldError::new(
                "payload",
                format!("a {adapter} class speaks its own protocol, not records; \"record\" is for the process, tcp and http adapters"),
            ));
        }
        if s.one_txn_per_dialog && s.context != Context::Sensitive {
            return Err(FieldError::new(
                "one_txn_per_dialog",
                "only applies to context = \"sensitive\" classes",
            ));
        }
        let at_least_one = |key: &'static str, value: usize| match value {
            0 => Err(FieldError::new(key, "must be at least 1")),
            _ => Ok(()),
        };
        at_least_one("max_workers", s.max_workers)?;
        if s.min_workers > s.max_workers {
            return Err(FieldError::new(
                "min_workers",
                format!(
                    "{} is more than max_workers ({})",
                    s.min_workers, s.max_workers
                ),
            ));
        }
        at_least_one("max_dialogs_per_worker", s.max_dialogs_per_worker)?;
        if s.request_timeout.is_zero() {
            return Err(FieldError::new("request_timeout", "must be more than zero"));
        }
        at_least_one("max_frame_bytes", s.max_frame_bytes)?;
        Ok(ServerClassConfig {
            name: s.name,
            adapter: kind,
            context: s.context,
            transactional: s.transactional,
            one_txn_per_dialog: s.one_txn_per_dialog,
            min_workers: s.min_workers,
            max_workers: s.max_workers,
            max_dialogs_per_worker: s.max_dialogs_per_worker,
            request_timeout: s.request_timeout,
            queue_limit: s.queue_limit,
            idle_timeout: s.idle_timeout,
            restart_backoff: s.restart_backoff,
            restart_backoff_max: s.restart_backoff_max,
            max_frame_bytes: s.max_frame_bytes,
            worker_io: s.worker_io.unwrap_or_else(defaults::worker_io),
            payload: s.payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> Result<ServerClassSection, toml::de::Error> {
        toml::from_str(text)
    }

    fn build(text: &str) -> Result<ServerClassConfig, FieldError> {
        let s = section(text).expect("a well-formed table");
        s.build(&|v| v.replace("{data_dir}", "/d"))
    }

    /// Protects the ldap adapter's section: an ldap:// directory, no password without a DN, no
    /// password in the configuration's Debug (which the broker logs and snapshots).
    #[test]
    fn ldap_sections_are_checked_and_hide_their_password() {
        let c = build("name = \"d\"\nadapter = \"ldap\"\ndirectory = \"ldap://127.0.0.1:389\"\nbind_dn = \"cn=svc\"\nbind_password = \"hunter2\"\n")
            .expect("valid");
        let shown = format!("{c:?}");
        assert!(
            shown.contains("cn=svc") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert!(c.serves_sessionless());
        for (text, key) in [
            ("directory = \"ldaps://h\"\n", "directory"),
            ("", "directory"),
            (
                "directory = \"ldap://h\"\nbind_password = \"x\"\n",
                "bind_password",
            ),
            (
                "directory = \"ldap://h\"\nconnect_timeout = \"0s\"\n",
                "connect_timeout",
            ),
            (
                "directory = \"ldap://h\"\ntransactional = true\n",
                "transactional",
            ),
        ] {
            let e = build(&format!("name = \"d\"\nadapter = \"ldap\"\n{text}")).unwrap_err();
            assert_eq!(e.key, key, "{text}: {}", e.problem);
        }
        let e = build("name = \"d\"\ncommand = [\"a\"]\nbind_dn = \"cn=x\"\n").unwrap_err();
        assert_eq!(e.key, "bind_dn");
    }

    /// Protects the sql adapter's section: a database it knows, methods with known types, no
    /// transactions of the broker's, and no password in an error.
    #[test]
    fn sql_classes_are_checked() {
        let c = build("name = \"d\"\nadapter = \"sql\"\ndatabase = \"sqlite:{data_dir}/x.db\"\n")
            .expect("sqlite");
        assert_eq!(
            c.adapter,
            AdapterKind::Sql {
                database: "sqlite:/d/x.db".into(),
                init_sql: None,
                methods: vec![]
            }
        );
        let e = build("name = \"d\"\nadapter = \"sql\"\ndatabase = \"mysql://app:s3cret@h/db\"\n")
            .unwrap_err();
        assert_eq!(e.key, "database");
        assert!(!e.problem.contains("s3cret"), "{}", e.problem);
        let e = build(
            "name = \"d\"\nadapter = \"sql\"\ndatabase = \"sqlite:x\"\ntransactional = true\n",
        )
        .unwrap_err();
        assert_eq!(e.key, "transactional");
        let e = build("name = \"d\"\nadapter = \"sql\"\ndatabase = \"sqlite:x\"\n[[methods]]\nname = \"M\"\nsql = \"SELECT @a\"\nparameters = { a = \"Integer\" }\n")
            .unwrap_err();
        assert!(
            e.key == "methods" && e.problem.contains("unknown sqlDbType"),
            "{e:?}"
        );
        let e = build("name = \"d\"\ndatabase = \"sqlite:x\"\ncommand = [\"a\"]\n").unwrap_err();
        assert_eq!(e.key, "database", "a sql key on a process class");
    }

    #[test]
    fn a_table_with_only_its_required_keys_has_the_defaults_of_new() {
        let c = build("name = \"x\"\ncommand = [\"a\"]\n").expect("valid");
        let expected = ServerClassConfig::new(
            "x",
            AdapterKind::Process {
                command: vec!["a".into()],
                env: vec![],
                cwd: None,
            },
        );
        assert_eq!(c, expected);
    }

    #[test]
    fn placeholders_are_expanded_in_command_env_and_cwd() {
        let c = build("name = \"x\"\ncommand = [\"{data_dir}/bin\"]\nenv = { A = \"{data_dir}\" }\ncwd = \"{data_dir}/w\"\n")
            .expect("valid");
        assert_eq!(
            c.adapter,
            AdapterKind::Process {
                command: vec!["/d/bin".into()],
                env: vec![("A".into(), "/d".into())],
                cwd: Some(PathBuf::from("/d/w")),
            }
        );
    }

    #[test]
    fn errors_name_the_key_within_the_table() {
        let key = |text: &str| build(text).map(|_| ()).unwrap_err().key;
        assert_eq!(key("name = \" \"\ncommand = [\"a\"]\n"), "name");
        assert_eq!(key("name = \"x\"\n"), "command");
        assert_eq!(key("name = \"x\"\nadapter = \"tcp\"\n"), "addresses");
        assert_eq!(
            key("name = \"x\"\nadapter = \"tcp\"\naddresses = [\"a:1\"]\ncwd = \"/\"\n"),
            "cwd"
        );
        assert_eq!(
            key("name = \"x\"\nadapter = \"http\"\nurls = [\"http://a\"]\ntransactional = true\n"),
            "transactional"
        );
        assert_eq!(
            key("name = \"x\"\ncommand = [\"a\"]\none_txn_per_dialog = true\n"),
            "one_txn_per_dialog"
        );
        assert_eq!(
            key("name = \"x\"\ncommand = [\"a\"]\nmin_workers = 3\nmax_workers = 2\n"),
            "min_workers"
        );
        assert_eq!(
            key("name = \"x\"\ncommand = [\"a\"]\nrequest_timeout = \"0s\"\n"),
            "request_timeout"
        );
    }

    #[test]
    fn serde_refuses_unknown_keys_and_bad_durations_with_today_s_words() {
        let e = section("name = \"x\"\ncommnd = [\"a\"]\n").unwrap_err();
        assert!(e.message().contains("commnd"), "{e}");
        let e = section("name = \"x\"\nidle_timeout = \"-1s\"\n").unwrap_err();
        assert!(e.message().contains("is negative"), "{e}");
        let e = section("name = \"x\"\nidle_timeout = \"soon\"\n").unwrap_err();
        assert!(e.message().contains("write e.g. \"30s\""), "{e}");
        assert_eq!(duration::parse(" 2h 30m "), Ok(Duration::from_secs(9000)));
    }
}
