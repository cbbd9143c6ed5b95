//! # Reloading the configuration without a restart (`POST /reload`, SIGHUP)
//!
//! The configuration is read again as at start (the same file, or the embedded default, with the
//! same command-line overrides) and checked the same way: a file with a mistake changes nothing,
//! and the answer names the key. What a running broker can take on, it takes on at once:
//!
//! - **Server classes.** A new class starts (its `min_workers`) before any route leads to it. A
//!   removed class *drains*: no new request reaches it, the dialogs and transactions its workers
//!   hold finish (found by name, `crate::router`), then its workers stop. A class whose settings
//!   changed keeps running as it was; the answer lists it under `restart_needed` (its workers and
//!   the dialogs pinned to them cannot change adapter under a client).
//! - **Services.** Routed as the new file says: a new service answers at once, a removed one is
//!   an unknown service from the next request on.
//! - **Endpoints.** An existing path takes its new settings (timeouts, roles, limits, auth, the
//!   WSDL) from the next request; a request in progress finishes with the old ones. On the
//!   sqlSession dialect, as after SQL Server's `ALTER ENDPOINT`, a changed endpoint ends the
//!   sessions begun before the change (their next request gets the unknown-session fault).
//!   A path added or removed, or a changed dialect, needs a restart: the HTTP routes are fixed
//!   when the listener starts.
//! - **Everything else** (`[broker]`, `[log]`, `[store]`, `[limits]`, `[auth]`, `[cluster]`,
//!   `[admin]`) takes effect at the next start; a change there is listed under `restart_needed`.
//!
//! Reloads run one at a time. The swap itself is one store into each [`crate::router::Roster`]
//! and endpoint slot: a request sees the old configuration or the new one, never half of each.

use crate::config::{Config, ConfigError, DialectKind, EndpointConfig, Overrides};
use crate::dialect::dsml::Dsml;
use crate::dialect::nonstop::NonStop;
use crate::dialect::sqlsession::SqlSession;
use crate::engine::SessionEngine;
use crate::router::{Roster, Router};
use crate::server::{Endpoint, EndpointSlot, Shared};
use crate::soap::Roles;
use adapters::ServerClass;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where the configuration comes from: what the command line said at start.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// `--config FILE`; `None`: the embedded default.
    pub path: Option<PathBuf>,
    pub overrides: Overrides,
}

impl ConfigSource {
    pub fn load(&self) -> Result<Config, ConfigError> {
        match &self.path {
            Some(path) => Config::load(path, &self.overrides),
            None => Config::embedded(&self.overrides),
        }
    }
}

/// One endpoint as the HTTP routes hold it.
#[derive(Clone)]
pub enum Served {
    NonStop(Arc<EndpointSlot<NonStop>>),
    Dsml(Arc<EndpointSlot<Dsml>>),
    SqlSession(Arc<EndpointSlot<SqlSession>>),
}

impl Served {
    /// Endpoint `e` of `config`, ready to serve.
    pub fn build(config: &Config, e: &EndpointConfig) -> Served {
        let figures = || Arc::new(crate::metrics::get().endpoint(&e.path, e.dialect.name()));
        match e.dialect {
            DialectKind::NonStop => Served::NonStop(Arc::new(EndpointSlot::from_pointee(nonstop(
                config,
                e,
                figures(),
            )))),
            DialectKind::Dsml => Served::Dsml(Arc::new(EndpointSlot::from_pointee(dsml(
                config,
                e,
                figures(),
            )))),
            DialectKind::SqlSession => Served::SqlSession(Arc::new(EndpointSlot::from_pointee(
                sqlsession(config, e, figures()),
            ))),
        }
    }

    fn dialect(&self) -> DialectKind {
        match self {
            Served::NonStop(_) => DialectKind::NonStop,
            Served::Dsml(_) => DialectKind::Dsml,
            Served::SqlSession(_) => DialectKind::SqlSession,
        }
    }

    /// Serve `e` of `config` from the next request on (same path, same dialect), keeping the
    /// endpoint's figures.
    fn replace(&self, config: &Config, e: &EndpointConfig) {
        match self {
            Served::NonStop(slot) => {
                let figures = slot.load().metrics.clone();
                slot.store(Arc::new(nonstop(config, e, figures)));
            }
            Served::Dsml(slot) => {
                let figures = slot.load().metrics.clone();
                slot.store(Arc::new(dsml(config, e, figures)));
            }
            Served::SqlSession(slot) => {
                let figures = slot.load().metrics.clone();
                slot.store(Arc::new(sqlsession(config, e, figures)));
            }
        }
    }
}

type Figures = Arc<crate::metrics::EndpointMetrics>;

fn roles(e: &EndpointConfig) -> Roles {
    Roles {
        extra: e.roles.clone(),
    }
}

fn nonstop(config: &Config, e: &EndpointConfig, metrics: Figures) -> Endpoint<NonStop> {
    let encodings: HashMap<String, crate::dialect::OutputEncoding> = config
        .services
        .iter()
        .filter(|s| s.endpoint == e.path)
        .filter_map(|s| {
            let enc = crate::dialect::OutputEncoding::for_label(s.response_encoding.as_deref()?)?;
            Some((s.name.clone(), enc))
        })
        .collect();
    Endpoint {
        config: e.clone(),
        roles: roles(e),
        dialect: NonStop::new(encodings),
        metrics,
        wsdl: wsdl_of(config, e, &crate::dialect::nonstop::wsdl::HEADERS),
    }
}

fn dsml(config: &Config, e: &EndpointConfig, metrics: Figures) -> Endpoint<Dsml> {
    Endpoint {
        config: e.clone(),
        roles: roles(e),
        dialect: Dsml::new(e.max_requests_per_batch),
        metrics,
        wsdl: wsdl_of(config, e, &crate::dialect::dsml::wsdl::HEADERS),
    }
}

fn sqlsession(config: &Config, e: &EndpointConfig, metrics: Figures) -> Endpoint<SqlSession> {
    Endpoint {
        config: e.clone(),
        roles: roles(e),
        dialect: SqlSession::new(e.sessions, e.session_timeout, e.soap12_sender_400),
        metrics,
        wsdl: wsdl_of(config, e, &crate::dialect::sqlsession::wsdl::HEADERS),
    }
}

/// The WSDL of endpoint `e` with the services configured on it.
fn wsdl_of(config: &Config, e: &EndpointConfig, headers: &crate::wsdl::Headers) -> bytes::Bytes {
    let services: Vec<&crate::config::ServiceConfig> = config
        .services
        .iter()
        .filter(|s| s.endpoint == e.path)
        .collect();
    bytes::Bytes::from(crate::wsdl::document(
        e,
        &services,
        headers,
        &config.broker.advertise,
    ))
}

/// What one reload did.
#[derive(Debug, Default, serde::Serialize)]
pub struct ReloadReport {
    /// Server classes started.
    pub classes_added: Vec<String>,
    /// Server classes removed: no route leads to them; they stop once their work is done.
    pub classes_draining: Vec<String>,
    /// Services routed now that were not (`endpoint service`).
    pub services_added: Vec<String>,
    pub services_removed: Vec<String>,
    /// Endpoints serving new settings.
    pub endpoints_changed: Vec<String>,
    /// Sessions of changed sqlSession endpoints ended.
    pub sessions_ended: usize,
    /// What changed but takes effect only at the next start.
    pub restart_needed: Vec<String>,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("configuration error: {0}")]
    Config(#[from] ConfigError),
    #[error("server class {0:?} is still draining after an earlier reload removed it; add it again once it has stopped (GET /classes)")]
    StillDraining(String),
    /// The adapter's error names the class.
    #[error("a new server class could not start: {0}")]
    ServerClass(adapters::AdapterError),
}

/// What a reload changes, and how.
pub struct Reloader {
    source: ConfigSource,
    /// The configuration the broker started with: the sections that need a restart compare to it.
    started: Config,
    /// The configuration applied now (changed classes keep their old settings here, so each
    /// reload reports them until a restart); the lock makes reloads one at a time.
    applied: tokio::sync::Mutex<Config>,
    roster: Arc<Roster>,
    served: HashMap<String, Served>,
    shared: actix_web::web::Data<Shared>,
    engine: Arc<SessionEngine>,
    /// The engine runtime: new classes' tasks and the draining watchers run there.
    runtime: tokio::runtime::Handle,
}

/// How often a draining class is looked at.
const DRAIN_POLL: Duration = Duration::from_millis(200);
/// How long a drained class's workers get to stop.
const DRAINED_GRACE: Duration = Duration::from_secs(5);

impl Reloader {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        source: ConfigSource,
        started: Config,
        roster: Arc<Roster>,
        served: HashMap<String, Served>,
        shared: actix_web::web::Data<Shared>,
        engine: Arc<SessionEngine>,
        runtime: tokio::runtime::Handle,
    ) -> Reloader {
        Reloader {
            source,
            applied: tokio::sync::Mutex::new(started.clone()),
            started,
            roster,
            served,
            shared,
            engine,
            runtime,
        }
    }

    /// Read the configuration again and apply what can be applied (see the module docs).
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let mut applied = self.applied.lock().await;
        let source = self.source.clone();
        let next = self
            .runtime
            .spawn_blocking(move || source.load())
            .await
            .map_err(|e| {
                ReloadError::Config(ConfigError {
                    file: "(reload)".into(),
                    key: "(file)".into(),
                    problem: format!("reading it failed: {e}"),
                    line: None,
                })
            })??;
        let mut report = ReloadReport::default();
        self.restart_only_sections(&next, &mut report);

        // Server classes: start the new ones first; nothing is swapped if one fails.
        let current = self.roster.load_full();
        let mut classes: HashMap<String, Arc<dyn ServerClass>> = HashMap::new();
        let mut started_now: Vec<Arc<dyn ServerClass>> = Vec::new();
        let mut kept_configs = Vec::new();
        for c in &next.server_classes {
            let old = applied.server_classes.iter().find(|o| o.name == c.name);
            let running = current
                .configured()
                .iter()
                .find(|k| k.name() == c.name)
                .cloned();
            match (old, running) {
                (Some(old), Some(running)) => {
                    if old != c {
                        report.restart_needed.push(format!(
                            "server_class {:?}: its changed settings take effect at the next start",
                            c.name
                        ));
                    }
                    kept_configs.push(old.clone());
                    classes.insert(c.name.clone(), running);
                }
                _ => {
                    if current.draining().iter().any(|d| d.name() == c.name) {
                        stop_all(&started_now).await;
                        return Err(ReloadError::StillDraining(c.name.clone()));
                    }
                    let built = self
                        .runtime
                        .spawn(adapters::build(c.clone(), self.runtime.clone()))
                        .await;
                    let class = match built {
                        Ok(Ok(class)) => class,
                        Ok(Err(e)) => {
                            stop_all(&started_now).await;
                            return Err(ReloadError::ServerClass(e));
                        }
                        Err(e) => {
                            stop_all(&started_now).await;
                            return Err(ReloadError::ServerClass(
                                adapters::AdapterError::Unsupported {
                                    class: c.name.clone(),
                                    reason: format!("its start-up task failed: {e}"),
                                },
                            ));
                        }
                    };
                    started_now.push(class.clone());
                    report.classes_added.push(c.name.clone());
                    kept_configs.push(c.clone());
                    classes.insert(c.name.clone(), class);
                }
            }
        }
        let mut draining: Vec<Arc<dyn ServerClass>> = current.draining().to_vec();
        let mut newly_draining = Vec::new();
        for class in current.configured() {
            if !classes.contains_key(class.name()) {
                report.classes_draining.push(class.name().to_string());
                draining.push(class.clone());
                newly_draining.push(class.clone());
            }
        }

        // Services, for the report.
        let key = |s: &crate::config::ServiceConfig| format!("{} {}", s.endpoint, s.name);
        let before: Vec<String> = applied.services.iter().map(key).collect();
        let after: Vec<String> = next.services.iter().map(key).collect();
        report.services_added = after
            .iter()
            .filter(|k| !before.contains(k))
            .cloned()
            .collect();
        report.services_removed = before
            .iter()
            .filter(|k| !after.contains(k))
            .cloned()
            .collect();

        // Endpoints: only paths served since the start can change.
        let mut endpoints = applied.endpoints.clone();
        let mut ended_sql = Vec::new();
        for e in &next.endpoints {
            match self.served.get(&e.path) {
                None => report.restart_needed.push(format!(
                    "endpoint {:?}: a new path is served from the next start",
                    e.path
                )),
                Some(served) if served.dialect() != e.dialect => {
                    report.restart_needed.push(format!(
                        "endpoint {:?}: its dialect changes at the next start",
                        e.path
                    ))
                }
                Some(_) => {
                    if let Some(old) = endpoints.iter_mut().find(|o| o.path == e.path) {
                        if old != e {
                            report.endpoints_changed.push(e.path.clone());
                            if e.dialect == DialectKind::SqlSession {
                                ended_sql.push(e.path.clone());
                            }
                            *old = e.clone();
                        }
                    }
                }
            }
        }
        for old in &applied.endpoints {
            if !next.endpoints.iter().any(|e| e.path == old.path) {
                report.restart_needed.push(format!(
                    "endpoint {:?}: removed, but served (without its services) until the next start",
                    old.path
                ));
            }
        }

        // The swap.
        let changed_at = cookie_store::now_ms();
        let mut router = Router::with_draining(&next, &classes, draining);
        router.keep_retired_routes(&current);
        self.roster.store(Arc::new(router));
        for e in &endpoints {
            if let Some(served) = self.served.get(&e.path) {
                if served.dialect() == e.dialect {
                    served.replace(&next, e);
                }
            }
        }
        self.shared.endpoints.store(Arc::new(
            endpoints
                .iter()
                .map(|e| (e.path.clone(), e.clone()))
                .collect(),
        ));
        for class in newly_draining {
            self.watch_draining(class);
        }
        let mut now_applied = next;
        now_applied.server_classes = kept_configs;
        now_applied.endpoints = endpoints;
        *applied = now_applied;

        for path in ended_sql {
            match self.engine.admin_end_endpoint(&path, changed_at).await {
                Ok(n) => report.sessions_ended += n,
                Err(e) => {
                    tracing::error!(endpoint = %path, error = %e, "reload: could not end the sessions of a changed sqlSession endpoint")
                }
            }
        }
        tracing::info!(?report, "configuration reloaded");
        Ok(report)
    }

    /// A change in a section only a restart applies.
    fn restart_only_sections(&self, next: &Config, report: &mut ReloadReport) {
        // The Debug forms compare every field but print secrets redacted: those are compared
        // on their own.
        let s = &self.started;
        let debug_differs =
            |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
        let auth_differs = match (&s.authenticator, &next.authenticator) {
            (None, None) => false,
            (Some(a), Some(b)) => !a.same_credentials(b),
            _ => true,
        };
        let sections = [
            ("[broker]", debug_differs(&s.broker, &next.broker)),
            ("[log]", debug_differs(&s.log, &next.log)),
            ("[store]", debug_differs(&s.store, &next.store)),
            ("[limits]", debug_differs(&s.limits, &next.limits)),
            ("[auth]", auth_differs),
            (
                "[cluster]",
                debug_differs(&s.cluster, &next.cluster) || s.cluster.secret != next.cluster.secret,
            ),
            (
                "[admin]",
                debug_differs(&s.admin, &next.admin) || s.admin.token != next.admin.token,
            ),
        ];
        for (name, differs) in sections {
            if differs {
                report
                    .restart_needed
                    .push(format!("{name}: takes effect at the next start"));
            }
        }
    }

    /// Stop `class` once it holds no dialog and no transaction, and forget it.
    fn watch_draining(&self, class: Arc<dyn ServerClass>) {
        let roster = self.roster.clone();
        self.runtime.spawn(async move {
            tracing::info!(class = %class.name(), "server class removed by a reload: draining");
            loop {
                let (dialogs, transactions) = crate::admin::held_by(&class);
                if dialogs + transactions == 0 {
                    break;
                }
                tokio::time::sleep(DRAIN_POLL).await;
            }
            roster.rcu(|r| r.without_draining(class.name()));
            class.shutdown(DRAINED_GRACE).await;
            tracing::info!(class = %class.name(), "drained server class stopped");
        });
    }
}

async fn stop_all(classes: &[Arc<dyn ServerClass>]) {
    for class in classes {
        class.shutdown(DRAINED_GRACE).await;
    }
}
