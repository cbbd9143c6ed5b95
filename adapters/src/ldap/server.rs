//! One LDAP connection's task: the wire protocol (`adapters/PROTOCOL.md`) served over the in-memory
//! pipe.
//!
//! - `HELLO` is answered with protocol 1;
//! - `REQUEST` runs the `batchRequest` in the payload and replies with the `batchResponse`
//!   (`dialog-continue` in a dialog, `ok` outside one; `dialog-end` when the connection dropped
//!   during a session's batch, so that its next request gets a fresh one). A payload that is not a
//!   batchRequest is an application fault (`Client`) and runs nothing;
//! - `DIALOG-ABORT` (the session ended or expired) closes the connection, so that its paged
//!   searches and whatever else it held go with it, then acknowledges; the next batch connects
//!   and binds anew;
//! - the transaction control messages are refused: a directory has no transactions here.
//!
//! The task ends when the broker's side of the pipe closes, unbinding the connection.

use super::{dsml, run, Binding};
use crate::protocol::{self, Dialog, FrameReader, Hello, Message, Reply};
use crate::ReplyStatus;
use bytes::Bytes;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings};
use std::sync::Arc;
use tokio::io::{AsyncWriteExt, DuplexStream};

/// Why there is no usable connection: the DSML `errorResponse` type and its message.
pub struct Unusable {
    pub kind: &'static str,
    pub message: String,
}

/// The worker's connection, opened (and bound) when needed.
pub struct Conn {
    binding: Arc<Binding>,
    class: String,
    ldap: Option<Ldap>,
}

impl Conn {
    pub fn new(binding: Arc<Binding>, class: String) -> Conn {
        Conn {
            binding,
            class,
            ldap: None,
        }
    }

    /// The open connection, connecting and binding first when there is none.
    pub async fn ensure(&mut self) -> Result<&mut Ldap, Unusable> {
        if self.ldap.is_none() {
            self.ldap = Some(self.open().await?);
        }
        self.ldap.as_mut().ok_or_else(|| Unusable {
            kind: "couldNotConnect",
            message: "no connection".to_string(),
        })
    }

    async fn open(&self) -> Result<Ldap, Unusable> {
        let b = &self.binding;
        let settings = LdapConnSettings::new().set_conn_timeout(b.connect_timeout);
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &b.url)
            .await
            .map_err(|e| Unusable {
                kind: "couldNotConnect",
                message: format!("cannot connect to the directory {}: {e}", b.url),
            })?;
        let class = self.class.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(class = %class, error = %e, "ldap connection ended");
            }
        });
        if let Some(dn) = &b.bind_dn {
            let password = b.bind_password.as_deref().unwrap_or("");
            let bound = ldap.simple_bind(dn, password).await.map_err(|e| Unusable {
                kind: "couldNotConnect",
                message: format!("the directory {} did not answer the bind: {e}", b.url),
            })?;
            if bound.rc != 0 {
                let _ = ldap.unbind().await;
                return Err(Unusable {
                    kind: "authenticationFailed",
                    message: format!(
                        "the directory refused the bind as {dn}: {} ({}){}",
                        run::descr(bound.rc),
                        bound.rc,
                        if bound.text.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", bound.text)
                        }
                    ),
                });
            }
        }
        Ok(ldap)
    }

    /// Close the connection (the next batch opens a fresh one).
    pub async fn close(&mut self) {
        if let Some(mut ldap) = self.ldap.take() {
            let _ = ldap.unbind().await;
        }
    }
}

/// Every operation of the batch answered with the same `errorResponse`.
fn unusable_response(batch: &dsml::BatchRequest, why: &Unusable) -> String {
    let p = batch
        .prefix
        .as_ref()
        .map(|p| format!("{p}:"))
        .unwrap_or_default();
    let xmlns = batch
        .prefix
        .as_ref()
        .map(|p| format!("xmlns:{p}"))
        .unwrap_or_else(|| "xmlns".to_string());
    let esc = |s: &str| quick_xml::escape::escape(s).into_owned();
    let mut out = format!("<{p}batchResponse {xmlns}=\"{}\"", dsml::DSML_NS);
    if let Some(id) = &batch.request_id {
        out.push_str(&format!(" requestID=\"{}\"", esc(id)));
    }
    out.push('>');
    for op in &batch.operations {
        out.push_str(&format!("<{p}errorResponse"));
        if let Some(id) = &op.request_id {
            out.push_str(&format!(" requestID=\"{}\"", esc(id)));
        }
        out.push_str(&format!(
            " type=\"{}\"><{p}message>{}</{p}message></{p}errorResponse>",
            why.kind,
            esc(&why.message)
        ));
        if !batch.resume {
            break;
        }
    }
    out.push_str(&format!("</{p}batchResponse>"));
    out
}

pub(super) async fn serve(mut conn: Conn, pipe: DuplexStream, mut max_frame: usize) {
    let (read, mut write) = tokio::io::split(pipe);
    let mut reader = FrameReader::new(read, max_frame);
    loop {
        let frame = match reader.read_frame().await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "ldap connection: bad frame from the broker; closing");
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
                    server: Some("broker ldap adapter".to_string()),
                    max_frame: Some(max_frame),
                    ..Hello::default()
                })
            }
            Ok(Message::Request(req)) => {
                let in_dialog = req.dialog != Dialog::None;
                let (status, payload) = match dsml::read(&req.payload) {
                    Err(reason) => (
                        ReplyStatus::Fault {
                            code: "Client".to_string(),
                            string: reason,
                        },
                        Bytes::new(),
                    ),
                    Ok(batch) => match conn.ensure().await {
                        Err(why) => {
                            let status = if in_dialog {
                                ReplyStatus::DialogEnd
                            } else {
                                ReplyStatus::Ok
                            };
                            (status, Bytes::from(unusable_response(&batch, &why)))
                        }
                        Ok(ldap) => {
                            let outcome = run::run(ldap, batch).await;
                            let status = match (in_dialog, outcome.connection_lost) {
                                (false, _) => ReplyStatus::Ok,
                                (true, false) => ReplyStatus::DialogContinue,
                                // The session's connection is gone: its dialog ends with this
                                // reply, and its next request gets a fresh connection.
                                (true, true) => ReplyStatus::DialogEnd,
                            };
                            if outcome.connection_lost {
                                conn.close().await;
                            }
                            (status, Bytes::from(outcome.xml))
                        }
                    },
                };
                Message::Reply(Reply {
                    id: req.id,
                    status,
                    payload,
                    open_transaction: None,
                })
            }
            Ok(Message::DialogAbort { id, .. }) => {
                conn.close().await;
                Message::Ack {
                    id,
                    transaction: None,
                }
            }
            Ok(other) => Message::Reply(Reply {
                id: other.id(),
                status: ReplyStatus::Error(format!(
                    "{} is not supported: a directory class has no transactions",
                    other.kind()
                )),
                payload: Bytes::new(),
                open_transaction: None,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "ldap connection: bad message from the broker; closing");
                break;
            }
        };
        let bytes = match answer.encode(max_frame) {
            Ok(b) => b,
            Err(e) => match (Message::Reply(Reply {
                id: answer.id(),
                status: ReplyStatus::Error(format!("cannot encode the answer: {e}")),
                payload: Bytes::new(),
                open_transaction: None,
            }))
            .encode(max_frame)
            {
                Ok(b) => b,
                Err(_) => break,
            },
        };
        if write.write_all(&bytes).await.is_err() || write.flush().await.is_err() {
            break;
        }
    }
    conn.close().await;
}
