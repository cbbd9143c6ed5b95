//! Routing: which server class serves a service called on an endpoint.
//!
//! Built from the configuration at start and again at each reload (`crate::reload`); the engine,
//! the coordinator and the admin API share one [`Roster`], which a reload swaps whole, so a
//! request sees either the old table or the new one, never half of each. Lookups borrow the
//! caller's strings: the per-endpoint map is keyed by service name, so finding a route allocates
//! nothing.
//!
//! A class removed by a reload is *draining*: no route leads to it any more, but it is still
//! found by name ([`Router::class`]) for the dialogs and transactions it holds, until they are done
//! and it is stopped.

use crate::config::Config;
use adapters::{Context, ServerClass};
use std::collections::HashMap;
use std::sync::Arc;

/// Where one service goes.
#[derive(Clone)]
pub struct Route {
    pub class: Arc<dyn ServerClass>,
    /// What the backend is told (the configured operation).
    pub operation: Arc<str>,
    pub response_encoding: Option<crate::dialect::OutputEncoding>,
    pub abort_transaction_on_fault: bool,
    /// A record service's layouts: the engine turns the XML into the request record and the reply
    /// record back (`record_service.rs`).
    pub record: Option<Arc<crate::record_service::RecordService>>,
}

impl Route {
    /// Whether the class keeps conversation state (needs a dialog).
    pub fn is_context_sensitive(&self) -> bool {
        self.class.config().context == Context::Sensitive
    }

    pub fn class_name(&self) -> &str {
        self.class.name()
    }
}

/// What this broker serves now; a reload stores a new [`Router`] in it.
pub type Roster = arc_swap::ArcSwap<Router>;

/// Endpoint path → service name → route; and the server classes by name.
#[derive(Default, Clone)]
pub struct Router {
    endpoints: HashMap<String, HashMap<String, Route>>,
    /// Every class, the draining ones included.
    classes: HashMap<String, Arc<dyn ServerClass>>,
    /// The configured classes, in configuration order.
    configured: Vec<Arc<dyn ServerClass>>,
    /// Classes a reload removed that still hold work.
    draining: Vec<Arc<dyn ServerClass>>,
    /// The removed services of draining classes: only a session holding work on the class (its
    /// dialog, a transaction it takes part in) still reaches them, until that work is done.
    retired: HashMap<String, HashMap<String, Route>>,
}

impl Router {
    /// Build the routing table; `classes` must hold every class the services name (the configuration
    /// validated that).
    pub fn new(config: &Config, classes: &HashMap<String, Arc<dyn ServerClass>>) -> Router {
        Router::with_draining(config, classes, Vec::new())
    }

    /// [`Router::new`], with classes a reload removed that still hold work.
    pub fn with_draining(
        config: &Config,
        classes: &HashMap<String, Arc<dyn ServerClass>>,
        draining: Vec<Arc<dyn ServerClass>>,
    ) -> Router {
        let mut endpoints: HashMap<String, HashMap<String, Route>> = HashMap::new();
        for e in &config.endpoints {
            endpoints.entry(e.path.clone()).or_default();
        }
        for s in &config.services {
            let Some(class) = classes.get(&s.server_class) else {
                continue;
            };
            let route = Route {
                class: class.clone(),
                operation: Arc::from(s.operation.as_str()),
                response_encoding: s
                    .response_encoding
                    .as_deref()
                    .and_then(crate::dialect::OutputEncoding::for_label),
                abort_transaction_on_fault: s.abort_transaction_on_fault,
                record: s.record.clone(),
            };
            endpoints
                .entry(s.endpoint.clone())
                .or_default()
                .insert(s.name.clone(), route);
        }
        let configured: Vec<Arc<dyn ServerClass>> = config
            .server_classes
            .iter()
            .filter_map(|c| classes.get(&c.name).cloned())
            .collect();
        let mut all = classes.clone();
        for class in &draining {
            all.entry(class.name().to_string())
                .or_insert_with(|| class.clone());
        }
        Router {
            endpoints,
            classes: all,
            configured,
            draining,
            retired: HashMap::new(),
        }
    }

    /// Keep `previous`'s routes to classes that are draining now (and are no longer routed), for
    /// the sessions that hold work on them.
    pub fn keep_retired_routes(&mut self, previous: &Router) {
        let tables = previous.endpoints.iter().chain(previous.retired.iter());
        for (endpoint, services) in tables {
            for (service, route) in services {
                let draining = self.draining.iter().any(|c| Arc::ptr_eq(c, &route.class));
                if draining && self.route(endpoint, service).is_none() {
                    self.retired
                        .entry(endpoint.clone())
                        .or_default()
                        .insert(service.clone(), route.clone());
                }
            }
        }
    }

    /// The route of `service` on `endpoint` for a session that holds work on the classes
    /// `holding` names: the configured route, or a draining class's old one when the session
    /// holds work there.
    pub fn route_for_session<'a>(
        &'a self,
        endpoint: &str,
        service: &str,
        mut holding: impl FnMut(&str) -> bool,
    ) -> Option<&'a Route> {
        self.route(endpoint, service).or_else(|| {
            self.retired
                .get(endpoint)?
                .get(service)
                .filter(|r| holding(r.class.name()))
        })
    }

    /// The server class of this name (the one holding a session's dialog, say), draining or not.
    pub fn class(&self, name: &str) -> Option<&Arc<dyn ServerClass>> {
        self.classes.get(name)
    }

    /// The configured classes, in configuration order.
    pub fn configured(&self) -> &[Arc<dyn ServerClass>] {
        &self.configured
    }

    /// Classes a reload removed that still hold work.
    pub fn draining(&self) -> &[Arc<dyn ServerClass>] {
        &self.draining
    }

    /// Every class: the configured ones, then the draining ones.
    pub fn all(&self) -> impl Iterator<Item = &Arc<dyn ServerClass>> {
        self.configured.iter().chain(self.draining.iter())
    }

    /// A copy without the draining class `name` (it was stopped).
    pub fn without_draining(&self, name: &str) -> Router {
        let mut next = self.clone();
        next.draining.retain(|c| c.name() != name);
        for services in next.retired.values_mut() {
            services.retain(|_, r| r.class.name() != name);
        }
        if !next.configured.iter().any(|c| c.name() == name) {
            next.classes.remove(name);
        }
        next
    }

    /// The route of `service` on `endpoint`, if configured.
    pub fn route(&self, endpoint: &str, service: &str) -> Option<&Route> {
        self.endpoints.get(endpoint)?.get(service)
    }
}
