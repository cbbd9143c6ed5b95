//! # In-process servers: the server side of the wire protocol, once
//!
//! The sql and ldap adapters' workers are not processes: each is a connection (to a database, to
//! a directory) served inside the broker, on a thread or task of its own. So that the pool, its
//! dialogs, limits, timeouts and restarts stay the same code for every kind of class, such a
//! worker still speaks the wire protocol (`adapters/PROTOCOL.md`), over an in-memory link
//! ([`link`]) instead of a child's stdin and stdout: whole frames handed over, their payloads
//! not copied, so that a large answer (ten thousand directory entries) is held once, by whoever
//! holds it at the time.
//!
//! [`serve`] is that protocol's server loop: it answers `HELLO`, hands each `REQUEST` and
//! `DIALOG-ABORT` to the kind's [`Server`], refuses the transaction control messages (these
//! classes' transactions are their backend's own), writes every answer, and ends when the
//! broker's side of the pipe closes or the server gives up.

use crate::pool::{FrameLink, Link, Transport};
use crate::protocol::{self, Hello, Message, Reply, Request};
use crate::{ReplyStatus, WorkerId};
use bytes::Bytes;

/// The server gives up: the worker stops, and the pool starts another.
pub(crate) struct GiveUp;

/// One kind of in-process server (a sql connection, an ldap connection).
pub(crate) trait Server {
    /// What `HELLO` names the server (`broker sql adapter (sqlite)`).
    fn name(&self) -> String;
    /// Why a transaction control message is refused, for its `error` reply.
    fn no_transactions(&self) -> &'static str;
    /// Answer one request (the reply's `id` is the request's).
    async fn request(&mut self, request: Request) -> Result<Reply, GiveUp>;
    /// The session that held this worker's dialog ended or expired: drop what it held.
    async fn dialog_abort(&mut self) -> Result<(), GiveUp>;
    /// The pipe closed: close the connection.
    async fn close(&mut self) {}
}

/// A link for a worker: the broker's end as a [`Link`] (named `peer` in logs), and the server's.
pub(crate) fn link(peer: &str, worker: &WorkerId) -> (Link, FrameLink) {
    let (broker_side, server_side) = FrameLink::pair();
    let link = Link {
        transport: Transport::Frames(broker_side),
        child: None,
        pid: None,
        peer: format!("{peer} ({worker})"),
    };
    (link, server_side)
}

/// Serve the wire protocol on `link` until the broker closes it or `server` gives up. `label`
/// names the kind in log lines (`sql connection`).
pub(crate) async fn serve<S: Server>(
    mut server: S,
    mut link: FrameLink,
    mut max_frame: usize,
    label: &str,
) {
    loop {
        let frame = match link.recv(max_frame).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "{label}: bad frame from the broker; closing");
                break;
            }
        };
        let answer = match Message::from_frame(frame) {
            Ok(Message::Hello(hello)) => {
                if let Some(m) = hello.max_frame {
                    max_frame = max_frame.min(m);
                }
                Message::Hello(Hello {
                    protocol: protocol::PROTOCOL_VERSION,
                    server: Some(server.name()),
                    max_frame: Some(max_frame),
                    ..Hello::default()
                })
            }
            Ok(Message::Request(request)) => match server.request(request).await {
                Ok(reply) => Message::Reply(reply),
                Err(GiveUp) => break,
            },
            Ok(Message::DialogAbort { id, .. }) => match server.dialog_abort().await {
                Ok(()) => Message::Ack {
                    id,
                    transaction: None,
                },
                Err(GiveUp) => break,
            },
            Ok(other) => Message::Reply(Reply {
                id: other.id(),
                status: ReplyStatus::Error(format!(
                    "{} is not supported: {}",
                    other.kind(),
                    server.no_transactions()
                )),
                payload: Bytes::new(),
                open_transaction: None,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "{label}: bad message from the broker; closing");
                break;
            }
        };
        if link.send(answer.encode_parts(max_frame)).await.is_err() {
            break;
        }
    }
    server.close().await;
}
