//! One connection's thread: a [`crate::inproc::Server`] over the in-memory link, the way a
//! process worker serves the wire protocol over its stdin and stdout.
//!
//! - `REQUEST` runs the batch in the payload (`sqlbatch`, or a named method's statement with the
//!   payload's parameters, by the request's operation) and replies with the `SqlResultStream`. A payload that
//!   is not a batch (unknown method, a parameter of the wrong type, SQL text over the limit) is an
//!   application fault (`Client`) and runs nothing. In a dialog the reply's `open-transaction`
//!   names the transaction the session holds open on the connection, while one is. Outside a dialog a transaction may not outlive
//!   the request: one left open is rolled back and the stream says so;
//! - `DIALOG-ABORT` (the session ended or expired) rolls back, closes the connection and opens a
//!   fresh one for the worker's next user, then acknowledges;
//! - the transaction control messages are refused: a sql class's transactions are the database's.
//!
//! The thread ends when the broker's side of the link closes; its connection closes with it (and
//! the database rolls back whatever was open).

use super::{batch, stream, Connection, Database, Item};
use crate::inproc::{self, GiveUp};
use crate::protocol::{Dialog, Reply, Request};
use crate::ReplyStatus;
use bytes::Bytes;
use std::sync::Arc;
use tokio::sync::oneshot;

/// The most bytes of SQL text one batch may hold (SQL Server's own limit is 65 536 × the network
/// packet size; a SOAP request is bounded by the broker's body limit before it gets here).
pub const MAX_SQL_BYTES: usize = 1024 * 1024;

/// The thread's body: open the connection, report it, serve until the link closes.
pub(super) fn run(
    db: Arc<dyn Database>,
    link: crate::pool::FrameLink,
    max_frame: usize,
    methods: Arc<[crate::SqlMethod]>,
    opened: oneshot::Sender<Result<(), String>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = opened.send(Err(format!("cannot build the connection's runtime: {e}")));
            return;
        }
    };
    runtime.block_on(async move {
        let conn = match db.connect().await {
            Ok(conn) => conn,
            Err(e) => {
                let _ = opened.send(Err(e));
                return;
            }
        };
        let _ = opened.send(Ok(()));
        let server = SqlServer {
            db,
            conn,
            methods,
            open: None,
        };
        inproc::serve(server, link, max_frame, "sql connection").await;
    });
}

/// One connection and what its session holds on it.
struct SqlServer {
    db: Arc<dyn Database>,
    conn: Box<dyn Connection>,
    /// The class's named web methods.
    methods: Arc<[crate::SqlMethod]>,
    /// The transaction the session holds open on this connection, by the token it is reported
    /// under (`open-transaction`) until it ends.
    open: Option<String>,
}

impl inproc::Server for SqlServer {
    fn name(&self) -> String {
        format!("broker sql adapter ({})", self.db.source())
    }

    fn no_transactions(&self) -> &'static str {
        "a sql class's transactions are the database's own"
    }

    async fn request(&mut self, req: Request) -> Result<Reply, GiveUp> {
        // sqlbatch, or one of the class's named methods (the service's operation).
        let read = if req.operation == "sqlbatch" {
            batch::read(&req.payload, MAX_SQL_BYTES).map(|b| (b, stream::SQL_NS.to_string()))
        } else {
            match self.methods.iter().find(|m| m.name == req.operation) {
                Some(m) => batch::read_method(&req.payload, m)
                    .map(|(b, ns)| (b, ns.unwrap_or_else(|| stream::SQL_NS.to_string()))),
                None => Err(batch::BatchError::UnknownMethod(req.operation.clone())),
            }
        };
        let (status, payload) = match read {
            Err(e) => (
                ReplyStatus::Fault {
                    code: "Client".to_string(),
                    string: e.to_string(),
                },
                Bytes::new(),
            ),
            Ok((batch, ns)) => {
                let conn = &mut self.conn;
                let mut items = conn.run(&batch).await;
                let sessionless = req.dialog == Dialog::None;
                if !sessionless {
                    self.open = match (
                        conn.in_transaction(&batch, self.open.is_some()).await,
                        self.open.take(),
                    ) {
                        (false, _) => None,
                        (true, Some(token)) => Some(token),
                        (true, None) => Some(new_transaction_token()),
                    };
                } else if conn.in_transaction(&batch, false).await {
                    let text = match conn.rollback().await {
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
                // A pooled connection serves many principals: what a batch outside a session
                // may have left on it (temporary tables, settings) goes with a fresh one.
                if sessionless && leaves_state(&batch.sql) {
                    match self.db.connect().await {
                        Ok(fresh) => self.conn = fresh,
                        Err(e) => {
                            tracing::warn!(error = %e, "sql connection: cannot reopen after a batch outside a session; the worker stops");
                            return Err(GiveUp);
                        }
                    }
                }
                let mut out = String::with_capacity(1024);
                let server = self.db.source();
                stream::write_result_stream(&req.operation, &ns, &items, server, &mut out);
                let status = if sessionless {
                    ReplyStatus::Ok
                } else {
                    ReplyStatus::DialogContinue
                };
                (status, Bytes::from(out))
            }
        };
        Ok(Reply {
            id: req.id,
            status,
            payload,
            open_transaction: self.open.clone(),
        })
    }

    async fn dialog_abort(&mut self) -> Result<(), GiveUp> {
        self.open = None;
        let _ = self.conn.rollback().await;
        // A fresh connection: the session's temporary tables and settings go with the old.
        match self.db.connect().await {
            Ok(c) => {
                self.conn = c;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "sql connection: cannot reopen after a session ended; the worker stops");
                Err(GiveUp)
            }
        }
    }
}

/// A token for a transaction that just began: 8 random bytes in base64, like SQL Server's 8-byte
/// transaction descriptors. It only names the transaction to its session's client; nothing is
/// looked up by it.
fn new_transaction_token() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(fastrand::u64(..).to_be_bytes())
}

/// Whether a batch may leave state on its connection beyond its transaction: temporary objects
/// (`TEMP` anywhere), or a statement that starts with SET, PRAGMA, ATTACH, PREPARE, LISTEN or
/// DECLARE. Conservative (statements are split at every `;`): a false alarm costs one reconnect.
fn leaves_state(sql: &str) -> bool {
    const LEADING: &[&str] = &["SET", "PRAGMA", "ATTACH", "PREPARE", "LISTEN", "DECLARE"];
    let words = |s: &'_ str| {
        s.split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .filter(|w| !w.is_empty())
            .map(str::to_ascii_uppercase)
            .collect::<Vec<_>>()
    };
    sql.split(';').any(|statement| {
        let w = words(statement);
        w.iter().any(|w| w == "TEMP" || w == "TEMPORARY")
            || w.first()
                .is_some_and(|first| LEADING.contains(&first.as_str()))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn batches_that_may_leave_state_are_recognised() {
        assert!(super::leaves_state("create temp table x (a)"));
        assert!(super::leaves_state("CREATE TEMPORARY TABLE x (a)"));
        assert!(super::leaves_state("SET search_path = x"));
        assert!(!super::leaves_state(
            "SELECT settings FROM t WHERE temperature > 3"
        ));
        assert!(!super::leaves_state("UPDATE t SET x = 1"));
        assert!(super::leaves_state("SELECT 1; pragma foreign_keys = on"));
    }
}
