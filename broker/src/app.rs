//! Start-up and shutdown of a whole broker process.
//!
//! Start-up: open the store, join the broker registry (the first heartbeat, before anything can
//! begin a transaction), start the server classes (their minimum workers), run transaction
//! recovery, build the router and the engine, start the heartbeat, recovery and sweeper tasks,
//! bind the HTTP listener. Adapters, the store's background work and the
//! sweeper run on one multi-threaded tokio runtime (the *engine runtime*); actix-web runs its own
//! single-threaded worker runtimes and reaches the engine only through runtime-agnostic futures.
//!
//! Shutdown (SIGTERM or SIGINT): actix stops accepting and lets requests in flight finish (up to
//! `broker.shutdown_timeout`); then the sweeper, recovery and heartbeat stop, the server classes stop
//! their workers, the broker leaves the registry (a lease of 0: the others take over at once what
//! it held) and the store flushes.

use crate::cluster::{Forwarder, Instance, Peer, Registry};
use crate::config::Config;
use crate::coordinator::{spawn_recovery, Coordinator};
use crate::engine::{spawn_sweeper, SessionEngine};
use crate::reload::Served;
use crate::router::Router;
use crate::server::{self, Shared};
use actix_web::{web, App, HttpServer};
use adapters::ServerClass;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// What a forwarded request's reply may hold beyond the largest backend frame (the envelope).
const FORWARD_REPLY_OVERHEAD: usize = 1024 * 1024;

/// Why the broker could not run. Each is one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("store {url}: {source}")]
    Store {
        url: String,
        source: cookie_store::StoreError,
    },
    #[error("store {url}: cannot join the broker registry: {source}")]
    Registry {
        url: String,
        source: cookie_store::StoreError,
    },
    /// The adapter's error names the class already.
    #[error("{source}")]
    ServerClass {
        name: String,
        source: adapters::AdapterError,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
}

/// Run the broker until SIGTERM/SIGINT. Prints where it listens once ready.
pub fn run(config: Config, source: crate::reload::ConfigSource) -> Result<(), RunError> {
    let data_dir = &config.broker.data_dir;
    std::fs::create_dir_all(data_dir).map_err(|source| RunError::DataDir {
        path: data_dir.display().to_string(),
        source,
    })?;

    // Bind first: a port in use is reported before any store is opened or worker started.
    let listen = config.broker.listen;
    let listener = std::net::TcpListener::bind(listen)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| RunError::Listen {
            addr: listen.to_string(),
            source,
        })?;

    let engine_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("engine")
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;

    let store = cookie_store::open(&config.store.url).map_err(|source| RunError::Store {
        url: cookie_store::redact_url(&config.store.url),
        source,
    })?;
    let store = crate::metrics::MeteredStore::wrap(store);

    // Join the registry first: other brokers must see this instance live before it begins any
    // transaction, and at a restart this registration replaces the previous run's, whose work is
    // then taken over (recovery below) without waiting for its lease.
    let cluster = &config.cluster;
    let instance = Instance::new(&config.broker.id);
    let registry = Arc::new(Registry::new(
        store.clone(),
        instance.clone(),
        config.broker.advertise.clone(),
        cluster.heartbeat,
        cluster.lease,
    ));
    engine_rt
        .block_on(registry.heartbeat_once())
        .map_err(|source| RunError::Registry {
            url: cookie_store::redact_url(&config.store.url),
            source,
        })?;
    let peer: Option<Arc<dyn Peer>> = match &cluster.secret {
        Some(secret) => {
            tracing::info!(instance = %instance, advertise = %config.broker.advertise, secret_from = cluster.secret_source, "cluster: internal paths served, forwarding enabled");
            let largest_frame = config
                .server_classes
                .iter()
                .map(|c| c.max_frame_bytes)
                .max()
                .unwrap_or(0);
            Some(Arc::new(Forwarder::new(
                secret.clone(),
                &config.broker.id,
                engine_rt.handle().clone(),
                cluster.connect_timeout,
                cluster.forward_timeout,
                largest_frame.max(config.limits.max_body_bytes) + FORWARD_REPLY_OVERHEAD,
            )))
        }
        None => {
            tracing::info!(instance = %instance, "cluster: no secret configured ([cluster] secret, secret_file or BROKER_CLUSTER_SECRET): no internal paths are served and nothing is forwarded; a request for a session another broker holds gets a fault");
            None
        }
    };

    // Start every server class; if one fails, stop those already started before giving up.
    let mut classes: HashMap<String, Arc<dyn ServerClass>> = HashMap::new();
    for c in &config.server_classes {
        let name = c.name.clone();
        match engine_rt.block_on(adapters::build(c.clone(), engine_rt.handle().clone())) {
            Ok(class) => {
                classes.insert(name, class);
            }
            Err(source) => {
                engine_rt.block_on(stop_classes(&classes, Duration::from_secs(2)));
                return Err(RunError::ServerClass { name, source });
            }
        }
    }

    let roster = Arc::new(crate::router::Roster::from_pointee(Router::new(
        &config, &classes,
    )));
    let coordinator = Arc::new(Coordinator::new(
        store.clone(),
        store.clone(),
        roster.clone(),
        registry.clone(),
        engine_rt.handle().clone(),
    ));
    // Finish what a crash interrupted before the first request: logged commit decisions are
    // re-sent, prepared transactions without one are aborted.
    match engine_rt.block_on(coordinator.recover()) {
        Ok(report) => tracing::info!(?report, "transaction recovery at start"),
        Err(e) => {
            tracing::error!(error = %e, "transaction recovery at start failed; retrying periodically")
        }
    }
    let engine = Arc::new(SessionEngine::new(
        store.clone(),
        roster.clone(),
        coordinator.clone(),
        config.store.turn_lease,
        peer,
    ));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let heartbeat = registry
        .clone()
        .spawn_heartbeat(engine_rt.handle(), stop_rx.clone());
    let recovery = spawn_recovery(
        coordinator,
        engine_rt.handle(),
        cluster.recovery_interval,
        stop_rx.clone(),
    );
    let sweeper = spawn_sweeper(
        engine.clone(),
        engine_rt.handle(),
        config.store.sweep_interval,
        config.store.sweep_batch,
        config.store.sweep_rate,
        stop_rx,
    );

    let shared = web::Data::new(Shared {
        engine: engine.clone(),
        store: store.clone(),
        limits: config.limits.clone(),
        authenticator: config.authenticator.clone(),
        secret: cluster.secret.clone(),
        endpoints: arc_swap::ArcSwap::from_pointee(
            config
                .endpoints
                .iter()
                .map(|e| (e.path.clone(), e.clone()))
                .collect(),
        ),
        request_spans: config.log.request_spans,
    });
    let internal = cluster.secret.is_some();
    let served: Vec<(String, Served)> = config
        .endpoints
        .iter()
        .map(|e| (e.path.clone(), Served::build(&config, e)))
        .collect();
    let reloader = Arc::new(crate::reload::Reloader::new(
        source,
        config.clone(),
        roster.clone(),
        served.iter().cloned().collect(),
        shared.clone(),
        engine.clone(),
        engine_rt.handle().clone(),
    ));

    let limits = config.limits.clone();
    let mut http = HttpServer::new(move || {
        let mut app = App::new()
            .app_data(shared.clone())
            .route("/healthz", web::get().to(server::healthz));
        if internal {
            app = app.configure(|cfg| server::configure_internal(cfg, &limits));
        }
        for (_, ep) in &served {
            app = match ep.clone() {
                Served::NonStop(ep) => {
                    app.configure(|cfg| server::configure_endpoint(cfg, ep, &limits))
                }
                Served::Dsml(ep) => {
                    app.configure(|cfg| server::configure_endpoint(cfg, ep, &limits))
                }
                Served::SqlSession(ep) => {
                    app.configure(|cfg| server::configure_endpoint(cfg, ep, &limits))
                }
            };
        }
        app
    })
    .shutdown_timeout(config.broker.shutdown_timeout.as_secs().max(1));
    if let Some(n) = config.broker.workers {
        http = http.workers(n);
    }

    // The admin listener: its own server, one worker, stopped when the public one stops (which
    // alone handles the signals).
    let drain = Arc::new(crate::admin::Drain::new(config.admin.drain_timeout));
    let admin = match (config.admin.listen, config.admin.token.clone()) {
        (Some(addr), Some(token)) => {
            let state = web::Data::new(crate::admin::AdminState {
                token,
                principals: config.admin.principals.clone(),
                authenticator: config.authenticator.clone(),
                classes: roster.clone(),
                reloader: reloader.clone(),
                engine: engine.clone(),
                store: store.clone(),
                drain: drain.clone(),
                endpoints: config
                    .endpoints
                    .iter()
                    .map(|e| (e.path.clone(), e.dialect.name()))
                    .collect(),
                live_count_limit: config.admin.live_count_limit,
            });
            let server = HttpServer::new(move || {
                App::new().configure(|cfg| crate::admin::configure(cfg, state.clone()))
            })
            .workers(1)
            .disable_signals()
            .shutdown_timeout(1);
            Some((addr, server))
        }
        _ => None,
    };

    let system = actix_web::rt::System::new();
    let result = system.block_on(async {
        let server = http.listen(listener).map_err(|source| RunError::Listen {
            addr: listen.to_string(),
            source,
        })?;
        let bound = server.addrs().first().copied().unwrap_or(listen);
        let admin = match admin {
            Some((addr, admin)) => {
                let admin = admin.bind(addr).map_err(|source| RunError::Listen {
                    addr: addr.to_string(),
                    source,
                })?;
                let at = admin.addrs().first().copied().unwrap_or(addr);
                if !at.ip().is_loopback() {
                    tracing::warn!(admin = %at, "the admin listener is reachable beyond this machine: keep its token secret and its port firewalled");
                }
                tracing::info!(admin = %at, "admin listener ready (GET /metrics)");
                let admin = admin.run();
                let handle = admin.handle();
                actix_web::rt::spawn(admin);
                Some(handle)
            }
            None => None,
        };
        announce(&config, bound);
        spawn_sighup_reload(reloader.clone());
        let server = server.run();
        // A finished drain stops the public server as SIGTERM does (requests in flight finish).
        let public = server.handle();
        actix_web::rt::spawn(async move {
            drain.done.notified().await;
            public.stop(true).await;
        });
        let ran = server.await.map_err(|source| RunError::Listen {
            addr: listen.to_string(),
            source,
        });
        if let Some(admin) = admin {
            admin.stop(true).await;
        }
        ran
    });

    tracing::info!("stopping: sweeper, server classes, store");
    let _ = stop_tx.send(true);
    engine_rt.block_on(async {
        let _ = sweeper.await;
        let _ = recovery.await;
        let _ = heartbeat.await;
        // Those a reload added or is draining too.
        for class in roster.load().all() {
            class.shutdown(Duration::from_secs(5)).await;
        }
        // Only now: the others may take over what this broker held once its workers are gone.
        registry.deregister().await;
        if let Err(e) = store.flush().await {
            tracing::error!(error = %e, "final store flush failed");
        }
    });
    engine_rt.shutdown_timeout(Duration::from_secs(2));
    tracing::info!("stopped");
    result
}

async fn stop_classes(classes: &HashMap<String, Arc<dyn ServerClass>>, grace: Duration) {
    for class in classes.values() {
        class.shutdown(grace).await;
    }
}

/// Tell the operator where we are and how to try it: every endpoint with its dialect and services,
/// and a curl line only for what this configuration really serves (a `--config` file replaces the
/// embedded default, so its samples may be gone).
fn announce(config: &Config, bound: std::net::SocketAddr) {
    use crate::config::DialectKind;
    use std::io::Write;
    tracing::info!(id = %config.broker.id, listen = %bound, data = %config.broker.data_dir.display(), store = %cookie_store::redact_url(&config.store.url), "broker ready");
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "broker {} listening on http://{bound}",
        config.broker.id
    );
    let _ = writeln!(
        out,
        "data directory: {}  (store: {})",
        config.broker.data_dir.display(),
        cookie_store::redact_url(&config.store.url)
    );
    if config.endpoints.is_empty() {
        tracing::warn!("the configuration has no [[endpoint]]: every request gets 404");
    }
    for endpoint in &config.endpoints {
        let services: Vec<&str> = config
            .services
            .iter()
            .filter(|s| s.endpoint == endpoint.path)
            .map(|s| s.name.as_str())
            .collect();
        let _ = writeln!(
            out,
            "endpoint {} ({}): {}",
            endpoint.path,
            endpoint.dialect.name(),
            if services.is_empty() {
                "no services".to_string()
            } else {
                services.join(", ")
            }
        );
    }
    let echo = config.endpoints.iter().find(|e| {
        e.dialect == DialectKind::NonStop
            && config
                .services
                .iter()
                .any(|s| s.endpoint == e.path && s.name == "Echo")
    });
    if let Some(endpoint) = echo {
        let _ = writeln!(out, "try it:");
        let _ = writeln!(
            out,
            "  curl -s -H 'Content-Type: text/xml' -H 'SOAPAction: \"\"' --data '<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\"><soapenv:Header><nsk:Session xmlns:nsk=\"urn:compaq_nsk_oss_SoapHeader\" SessionCommand=\"Begin\"/></soapenv:Header><soapenv:Body><Echo><text>hello</text></Echo></soapenv:Body></soapenv:Envelope>' http://{bound}{}",
            endpoint.path
        );
    }
    let _ = out.flush();
}

/// SIGHUP reloads the configuration, as `POST /reload` does; the outcome goes to the log.
fn spawn_sighup_reload(reloader: Arc<crate::reload::Reloader>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: reload with POST /reload");
            return;
        }
    };
    actix_web::rt::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            if let Err(e) = reloader.reload().await {
                tracing::error!(error = %e, "reload refused; nothing changed");
            }
        }
    });
}
