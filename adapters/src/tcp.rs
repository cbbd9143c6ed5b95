//! # The tcp adapter: the wire protocol to servers someone else runs
//!
//! Same protocol, same pool as the process adapter; a worker is a TCP connection instead of a
//! child process. Each worker slot holds one connection (one outstanding request per connection,
//! as on a pipe), so `max_workers` bounds the requests in flight to the class.
//!
//! - Connections are opened round robin over `addresses`; when an address refuses, the same
//!   attempt tries the next ones before it counts as failed, so one dead server among several
//!   costs a connect error in the log, not a failed request.
//! - A broken connection is a dead worker: the request on it fails with `WorkerLost`, and the pool
//!   reconnects with the restart backoff.
//! - Unlike the process adapter, starting the class does not fail when no server answers yet:
//!   the servers' lifecycle is not the broker's, so the pool logs the error, answers requests with
//!   `Unreachable`, and keeps reconnecting in the background.
//! - Dialogs and transactions pin a connection exactly as they pin a process: the server must keep
//!   their in-memory state per connection (the pool's module docs describe the pinning).
//! - `TCP_NODELAY` is set: a request is one write of a whole frame, and Nagle's algorithm would
//!   only add a delayed-ACK round to every small reply.

use async_trait::async_trait;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::runtime::Handle;

use crate::pool::{Connector, Link, PoolClass, Transport};
use crate::{AdapterError, AdapterKind};
use crate::{ServerClassConfig, WorkerId};

/// How long one connection attempt to one address may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A server class reached over TCP.
pub type TcpClass = PoolClass<TcpConnector>;

impl TcpClass {
    /// Open `min_workers` connections (each handshaken) and return the class. Connection
    /// failures are logged and retried, not fatal; an empty address list is.
    pub async fn start(
        config: ServerClassConfig,
        runtime: Handle,
    ) -> Result<Arc<TcpClass>, AdapterError> {
        let AdapterKind::Tcp { addresses } = config.adapter.clone() else {
            return Err(AdapterError::Unsupported {
                class: config.name.clone(),
                reason: "not a tcp adapter configuration".to_string(),
            });
        };
        if addresses.is_empty() {
            return Err(AdapterError::Unreachable {
                class: config.name.clone(),
                reason: "the tcp adapter has no addresses".to_string(),
            });
        }
        let connector = TcpConnector {
            addresses,
            next: AtomicUsize::new(0),
        };
        PoolClass::launch(config, connector, runtime, false).await
    }
}

/// Opens a tcp class's connections, round robin over its addresses.
pub struct TcpConnector {
    addresses: Vec<String>,
    next: AtomicUsize,
}

#[async_trait]
impl Connector for TcpConnector {
    async fn connect(&self, _worker: &WorkerId) -> Result<Link, String> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut errors = Vec::new();
        for k in 0..self.addresses.len() {
            let address = &self.addresses[(start + k) % self.addresses.len()];
            let stream =
                match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        errors.push(format!("{address}: {e}"));
                        continue;
                    }
                    Err(_) => {
                        errors.push(format!("{address}: no answer within {CONNECT_TIMEOUT:?}"));
                        continue;
                    }
                };
            let _ = stream.set_nodelay(true);
            let peer = stream
                .peer_addr()
                .map_or_else(|_| address.clone(), |a| a.to_string());
            let (reader, writer) = stream.into_split();
            return Ok(Link {
                transport: Transport::Stream {
                    reader: Box::new(reader),
                    writer: Box::new(writer),
                },
                child: None,
                pid: None,
                peer,
            });
        }
        Err(format!("cannot connect: {}", errors.join("; ")))
    }
}
