//! # The `cookie-store serve` daemon and its client (`cookie-store://HOST:PORT`)
//!
//! sled lets one process open a database, so brokers that share one host share their sessions
//! through a daemon that owns it: `cookie-store serve --data DIR --listen ADDR` runs a
//! [`SledStore`](crate::SledStore) and serves the [`Store`] trait over TCP; each broker opens
//! `cookie-store://HOST:PORT` and gets a [`RemoteStore`], a [`Store`] like any other.
//!
//! | room | what lives there |
//! | --- | --- |
//! | `frame` | cutting messages out of the byte stream: length, version byte, request ID |
//! | `protocol` | the messages: one request and one response shape per trait method |
//! | [`server`] | the daemon: connections, a future per request, turns released on close, shutdown |
//! | [`client`] | [`RemoteStore`]: a pool of multiplexed connections, timeouts, reconnects |
//!
//! The turn queues live in the daemon's `SledStore`, exactly as in one broker process: the
//! daemon adds no state of its own beyond which connection holds which turn. Everything a client
//! was told is durable is on disk before the daemon answers, so `kill -9` of the daemon loses
//! nothing acknowledged; brokers see `Unavailable` while it is down, and carry on by themselves
//! once it is back (their held turns fenced by the new epoch generation). `PROTOCOL.md`, next to
//! this crate's manifest, describes the wire format byte by byte.
//!
//! There is no authentication: the daemon is for brokers on its own host, so it should listen on
//! a loopback address (the default, `127.0.0.1:7070`).

pub mod client;
mod frame;
mod protocol;
pub mod server;

pub use client::{ClientOptions, RemoteStore};
pub use server::{Server, ServerLimits};

use crate::{Store, StoreError};
use std::sync::Arc;

/// Connect to the daemon a `cookie-store://HOST:PORT[?param=value&...]` URL names (parameters:
/// [`ClientOptions`]). A bad URL is a [`StoreError::Config`] naming what is wrong; a daemon that
/// does not answer is [`StoreError::Unavailable`] naming its address.
pub fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(RemoteStore::open(url)?))
}
