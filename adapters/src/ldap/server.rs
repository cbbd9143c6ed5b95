//! One LDAP connection's task: a [`crate::inproc::Server`] over the in-memory link.
//!
//! - `REQUEST` runs the `batchRequest` in the payload and replies with the `batchResponse`
//!   (`dialog-continue` in a dialog, `ok` outside one; `dialog-end` when the connection dropped
//!   during a session's batch, so that its next request gets a fresh one). A payload that is not a
//!   batchRequest is an application fault (`Client`) and runs nothing;
//! - `DIALOG-ABORT` (the session ended or expired) closes the connection, so that its paged
//!   searches and whatever else it held go with it, then acknowledges; the next batch connects
//!   and binds anew;
//! - the transaction control messages are refused: a directory has no transactions here.
//!
//! The task ends when the broker's side of the link closes, unbinding the connection.

use super::{dsml, run, BindMode, Binding, PrincipalDn};
use crate::inproc::GiveUp;
use crate::protocol::{Dialog, Reply, Request};
use crate::Credential;
use crate::ReplyStatus;
use bytes::Bytes;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings};
use std::sync::Arc;

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
    /// With `bind = "principal"`: the client the connection is bound as now.
    bound_as: Option<Credential>,
    /// The class's search window, and whether the session pages a search of its own here.
    paging: run::Paging,
}

impl Conn {
    pub fn new(binding: Arc<Binding>, class: String) -> Conn {
        Conn {
            binding: binding.clone(),
            class,
            paging: run::Paging {
                window: binding.search_window,
                client_paging: false,
            },
            ldap: None,
            bound_as: None,
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
        if let (BindMode::Service, Some(dn)) = (&b.mode, &b.bind_dn) {
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
        self.bound_as = None;
        // The directory's paging state goes with the connection.
        self.paging.client_paging = false;
        if let Some(mut ldap) = self.ldap.take() {
            let _ = ldap.unbind().await;
        }
    }

    /// With `bind = "principal"`: make sure the connection is bound as the request's client,
    /// binding it (again) when it is bound as nobody or someone else. A session's connection is
    /// bound once, at its first request; its later requests must bring the same password, or
    /// they are refused without touching the bind. Other modes: nothing to do.
    pub async fn authorize(&mut self, credential: Option<&Credential>) -> Result<(), Unusable> {
        let BindMode::Principal(dn_of) = &self.binding.mode else {
            return Ok(());
        };
        let dn_of = dn_of.clone();
        let refused = |message: String| Unusable {
            kind: "authenticationFailed",
            message,
        };
        let Some(credential) = credential else {
            return Err(refused(
                "this endpoint binds to the directory as its client: send HTTP Basic credentials"
                    .to_string(),
            ));
        };
        if credential.password.is_empty() {
            // An empty password is an unauthenticated bind (RFC 4513 §5.1.2), which many
            // directories accept as anonymous: never a way in.
            return Err(refused("an empty password is not accepted".to_string()));
        }
        if let Some(bound) = &self.bound_as {
            if bound.user == credential.user && same_secret(&bound.password, &credential.password) {
                return Ok(());
            }
        }
        self.bound_as = None;
        let (service_dn, service_pw) = (
            self.binding.bind_dn.clone(),
            self.binding.bind_password.clone(),
        );
        let ldap = self.ensure().await?;
        let dn = match &dn_of {
            PrincipalDn::Template(t) => t.replace("{user}", &escape_dn_value(&credential.user)),
            PrincipalDn::Search { base, filter } => {
                // Look the DN up as the service account (or anonymously).
                let (who, pw) = (
                    service_dn.unwrap_or_default(),
                    service_pw.unwrap_or_default(),
                );
                let bound = ldap.simple_bind(&who, &pw).await.map_err(|e| Unusable {
                    kind: "couldNotConnect",
                    message: format!("the directory did not answer the lookup bind: {e}"),
                })?;
                if bound.rc != 0 {
                    return Err(refused(format!(
                        "the directory refused the lookup account {who:?}: {} ({})",
                        run::descr(bound.rc),
                        bound.rc
                    )));
                }
                let mut value = String::new();
                dsml::escape(credential.user.as_bytes(), &mut value);
                let filter = filter.replace("{user}", &value);
                let found = ldap
                    .search(base, ldap3::Scope::Subtree, &filter, vec!["1.1"])
                    .await
                    .map_err(|e| Unusable {
                        kind: "couldNotConnect",
                        message: format!("the directory did not answer the lookup: {e}"),
                    })?;
                let mut dns: Vec<String> = found
                    .0
                    .into_iter()
                    .filter(|e| !e.is_ref())
                    .map(|e| ldap3::SearchEntry::construct(e).dn)
                    .collect();
                if dns.len() != 1 {
                    return Err(refused(format!(
                        "the user name matches {} directory entries (exactly one is needed)",
                        dns.len()
                    )));
                }
                dns.remove(0)
            }
        };
        let bound = ldap
            .simple_bind(&dn, &credential.password)
            .await
            .map_err(|e| Unusable {
                kind: "couldNotConnect",
                message: format!("the directory did not answer the bind: {e}"),
            })?;
        if bound.rc != 0 {
            return Err(refused(format!(
                "the directory refused the bind as {dn}: {} ({})",
                run::descr(bound.rc),
                bound.rc
            )));
        }
        self.bound_as = Some(credential.clone());
        Ok(())
    }
}

/// Compare two secrets in time independent of where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An RDN value escaped for a DN string (RFC 4514 §2.4).
fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '\\' | ',' | '+' | '"' | '<' | '>' | ';' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
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

/// The connection, once open and bound as the request's client where the class binds so.
async fn authorized<'a>(
    conn: &'a mut Conn,
    credential: Option<&Credential>,
) -> Result<(&'a mut Ldap, &'a mut run::Paging), Unusable> {
    conn.ensure().await?;
    conn.authorize(credential).await?;
    conn.ensure().await?;
    let Conn { ldap, paging, .. } = conn;
    match ldap.as_mut() {
        Some(ldap) => Ok((ldap, paging)),
        None => Err(Unusable {
            kind: "couldNotConnect",
            message: "no connection".to_string(),
        }),
    }
}

impl crate::inproc::Server for Conn {
    fn name(&self) -> String {
        "broker ldap adapter".to_string()
    }

    fn no_transactions(&self) -> &'static str {
        "a directory class has no transactions"
    }

    async fn request(&mut self, req: Request) -> Result<Reply, GiveUp> {
        let in_dialog = req.dialog != Dialog::None;
        let (status, payload) = match dsml::read(&req.payload) {
            Err(reason) => (
                ReplyStatus::Fault {
                    code: "Client".to_string(),
                    string: reason,
                },
                Bytes::new(),
            ),
            Ok(batch) => match authorized(self, req.credential.as_ref()).await {
                Err(why) => {
                    // A later request of a session with the wrong password leaves the session's
                    // connection (still bound as its client) to the session; otherwise a session
                    // without a usable connection gives it up.
                    let status = match req.dialog {
                        Dialog::None => ReplyStatus::Ok,
                        Dialog::Continue if why.kind == "authenticationFailed" => {
                            ReplyStatus::DialogContinue
                        }
                        _ => ReplyStatus::DialogEnd,
                    };
                    (status, Bytes::from(unusable_response(&batch, &why)))
                }
                Ok((ldap, paging)) => {
                    let outcome = run::run(ldap, batch, paging).await;
                    let status = match (in_dialog, outcome.connection_lost) {
                        (false, _) => ReplyStatus::Ok,
                        (true, false) => ReplyStatus::DialogContinue,
                        // The session's connection is gone: its dialog ends with this reply, and
                        // its next request gets a fresh connection.
                        (true, true) => ReplyStatus::DialogEnd,
                    };
                    if outcome.connection_lost {
                        Conn::close(self).await;
                    }
                    (status, Bytes::from(outcome.xml))
                }
            },
        };
        Ok(Reply {
            id: req.id,
            status,
            payload,
            open_transaction: None,
        })
    }

    /// The session ended or expired: close its connection, so that its paged searches and
    /// whatever else it held go with it; the next batch connects and binds anew.
    async fn dialog_abort(&mut self) -> Result<(), GiveUp> {
        Conn::close(self).await;
        Ok(())
    }

    async fn close(&mut self) {
        Conn::close(self).await;
    }
}
