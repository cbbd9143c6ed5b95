//! End-to-end test harness for the SOAP session broker.
//!
//! The tests in `tests/tests/*.rs` start real `broker` processes ([`broker::BrokerProcess`]), talk to
//! them over loopback HTTP with a small client that controls every byte ([`http`]), and read the
//! replies by namespace URI and local name ([`soap`], [`xml`]). Nothing here links the broker's code:
//! the broker is tested from the outside, as its clients see it.
//!
//! The `broker` binary must be built first: `cargo build --workspace --bins` (the project's test
//! command, `scripts/test.sh`, does that before `cargo test`).

pub mod broker;
pub mod browser;
pub mod config;
pub mod daemon;
pub mod dsml;
pub mod http;
pub mod ledger;
pub mod postgres;
pub mod proc;
pub mod soak;
pub mod soap;
pub mod sql;
pub mod wait;
pub mod xml;

pub use broker::BrokerProcess;
pub use config::TestConfig;
