//! Routing: which server class serves a service called on an endpoint.
//!
//! Built once from the configuration. Lookups borrow the caller's strings: the per-endpoint map is
//! keyed by service name, so finding a route allocates nothing.

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

/// Endpoint path → service name → route; and the server classes by name.
#[derive(Default, Clone)]
pub struct Router {
    endpoints: HashMap<String, HashMap<String, Route>>,
    classes: HashMap<String, Arc<dyn ServerClass>>,
}

impl Router {
    /// Build the routing table; `classes` must hold every class the services name (the configuration
    /// validated that).
    pub fn new(config: &Config, classes: &HashMap<String, Arc<dyn ServerClass>>) -> Router {
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
        Router {
            endpoints,
            classes: classes.clone(),
        }
    }

    /// The server class of this name (the one holding a session's dialog, say).
    pub fn class(&self, name: &str) -> Option<&Arc<dyn ServerClass>> {
        self.classes.get(name)
    }

    /// The route of `service` on `endpoint`, if configured.
    pub fn route(&self, endpoint: &str, service: &str) -> Option<&Route> {
        self.endpoints.get(endpoint)?.get(service)
    }
}
