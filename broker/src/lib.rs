//! # broker: a multi-protocol SOAP session broker
//!
//! Clients open sessions, and later run transactions and hold dialogs, with legacy server classes
//! through SOAP headers, as they did with HP NonStop SOAP. A request flows one way through the crate:
//!
//! ```text
//! server (HTTP) → soap (envelope) → dialect (headers) → engine (sessions, store) → router → adapters
//!                                                                                  ↓
//! server (HTTP) ← soap (envelope) ← dialect (headers, faults) ← engine ← ← ← ← ← reply
//! ```
//!
//! - [`config`]: the TOML configuration, parsed once into typed structs;
//! - [`soap`]: SOAP 1.1/1.2 envelopes: streaming parse with limits, mustUnderstand, faults;
//! - [`dialect`]: session dialects (NonStop today) behind the [`dialect::Dialect`] trait;
//! - [`engine`]: the dialect-neutral session engine and the expiry sweeper;
//! - [`coordinator`]: the two-phase-commit coordinator and its recovery;
//! - [`cluster`]: several brokers sharing one store: registry, forwarding, take-over;
//! - [`router`]: service → server class;
//! - [`record_service`]: a record service's XML to its class's request record, and the reply back;
//! - [`server`]: the actix-web front end;
//! - [`wsdl`]: each endpoint's WSDL, written from the configuration;
//! - [`metrics`], [`admin`], [`reload`]: what operators see and do; [`tracecontext`]: W3C `traceparent`;
//! - [`app`]: start-up and clean shutdown of the whole broker.

pub mod admin;
pub mod app;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod coordinator;
pub mod dialect;
pub mod engine;
pub mod logging;
pub mod metrics;
pub mod record_service;
pub mod reload;
pub mod router;
pub mod server;
pub mod soap;
pub mod tracecontext;
pub mod wsdl;
