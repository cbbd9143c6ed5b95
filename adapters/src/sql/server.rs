//! One connection's thread: the wire protocol (`adapters/PROTOCOL.md`) served over the in-memory
//! pipe, the way a process worker serves it over its stdin and stdout.
//!
//! - `HELLO` is answered with protocol 1;
//! - `REQUEST` runs the batch in the payload and replies with the `SqlResultStream`. A payload that
//!   is not a batch (unknown method, a parameter of the wrong type, SQL text over the limit) is an
//!   application fault (`Client`) and runs nothing. Outside a dialog a transaction may not outlive
//!   the request: one left open is rolled back and the stream says so;
//! - `DIALOG-ABORT` (the session ended or expired) rolls back, closes the connection and opens a
//!   fresh one for the worker's next user, then acknowledges;
//! - the transaction control messages are refused: a sql class's transactions are the database's.
//!
//! The thread ends when the broker's side of the pipe closes; its connection closes with it (and
//! the database rolls back whatever was open).

use super::{batch, stream, Connection, Database, Item};
use crate::protocol::{self, Dialog, FrameReader, Hello, Message, Reply};
use crate::ReplyStatus;
use bytes::Bytes;
use std::sync::Arc;
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::sync::oneshot;

/// The most bytes of SQL text one batch may hold (SQL Server's own limit is 65 536 × the network
/// packet size; a SOAP request is bounded by the broker's body limit before it gets here).
pub const MAX_SQL_BYTES: usize = 1024 * 1024;

/// The thread's body: open the connection, report it, serve until the pipe closes.
pub(super) fn run(
    db: Arc<dyn Database>,
    pipe: DuplexStream,
    max_frame: usize,
    opened: oneshot::Sender<Result<(), String>>,
) {
    let conn = match db.connect() {
        Ok(conn) => conn,
        Err(e) => {
            let _ = opened.send(Err(e));
            return;
        }
    };
    let _ = opened.send(Ok(()));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "sql connection thread: cannot build its runtime");
            return;
        }
    };
    let source = db.describe();
    runtime.block_on(serve(db, conn, pipe, max_frame, &source));
}

async fn serve(
    db: Arc<dyn Database>,
    mut conn: Box<dyn Connection>,
    pipe: DuplexStream,
    mut max_frame: usize,
    source: &str,
) {
    let (read, mut write) = tokio::io::split(pipe);
    let mut reader = FrameReader::new(read, max_frame);
    let server = if source.starts_with("sqlite:") {
        "sqlite"
    } else {
        "postgres"
    };
    loop {
        let frame = match reader.read_frame().await {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "sql connection: bad frame from the broker; closing");
                return;
            }
        };
        let answer = match Message::from_frame(frame) {
            Ok(Message::Hello(hello)) => {
                if let Some(m) = hello.max_frame {
                    max_frame = max_frame.min(m);
                }
                Message::Hello(Hello {
                    protocol: protocol::PROTOCOL_VERSION,
                    server: Some(format!("broker sql adapter ({server})")),
                    max_frame: Some(max_frame),
                    ..Hello::default()
                })
            }
            Ok(Message::Request(req)) => {
                let (status, payload) = match batch::read(&req.payload, MAX_SQL_BYTES) {
                    Err(e) => (
                        ReplyStatus::Fault {
                            code: "Client".to_string(),
                            string: e.to_string(),
                        },
                        Bytes::new(),
                    ),
                    Ok(batch) => {
                        let mut items = conn.run(&batch);
                        if req.dialog == Dialog::None && conn.in_transaction() {
                            let text = match conn.rollback() {
                                Ok(()) => "The transaction the batch left open was rolled back: outside a session a transaction ends with its request.".to_string(),
                                Err(e) => format!("The transaction the batch left open could not be rolled back: {e}"),
                            };
                            items.push(Item::Message {
                                class: 16,
                                number: 266,
                                state: 2,
                                line: 0,
                                text,
                            });
                        }
                        let mut out = String::with_capacity(1024);
                        stream::write_result_stream("sqlbatch", &items, server, &mut out);
                        let status = if req.dialog == Dialog::None {
                            ReplyStatus::Ok
                        } else {
                            ReplyStatus::DialogContinue
                        };
                        (status, Bytes::from(out))
                    }
                };
                Message::Reply(Reply {
                    id: req.id,
                    status,
                    payload,
                })
            }
            Ok(Message::DialogAbort { id, .. }) => {
                let _ = conn.rollback();
                // A fresh connection: the session's temporary tables and settings go with the old.
                drop(conn);
                conn = match db.connect() {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "sql connection: cannot reopen after a session ended; the worker stops");
                        return;
                    }
                };
                Message::Ack {
                    id,
                    transaction: None,
                }
            }
            Ok(other) => Message::Reply(Reply {
                id: other.id(),
                status: ReplyStatus::Error(format!(
                    "{} is not supported: a sql class's transactions are the database's own",
                    other.kind()
                )),
                payload: Bytes::new(),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "sql connection: bad message from the broker; closing");
                return;
            }
        };
        let bytes = match answer.encode(max_frame) {
            Ok(b) => b,
            Err(e) => match (Message::Reply(Reply {
                id: answer.id(),
                status: ReplyStatus::Error(format!("cannot encode the answer: {e}")),
                payload: Bytes::new(),
            }))
            .encode(max_frame)
            {
                Ok(b) => b,
                Err(_) => return,
            },
        };
        if write.write_all(&bytes).await.is_err() || write.flush().await.is_err() {
            return;
        }
    }
}
