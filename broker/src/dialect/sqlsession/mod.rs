//! # The sqlSession dialect (`spec/sqlsession.md`)
//!
//! Modelled on SQL Server 2005's native XML web services sessions. One header element in the
//! namespace `http://schemas.microsoft.com/sqlserver/2004/SOAP/Options` (or its `https` twin,
//! answered in the form received) steers the session:
//!
//! ```xml
//! <sqloptions:sqlSession initiate="true" timeout="60"/>                 <!-- start one -->
//! <sqloptions:sqlSession sessionId="3q2+7w…=="/>                       <!-- use it -->
//! <sqloptions:sqlSession sessionId="3q2+7w…==" terminate="true"/>      <!-- end it -->
//! ```
//!
//! The point of a session is the database connection behind it: the body (`sqlbatch`) runs on a
//! connection pinned to the session (the sql adapter's dialog), so temporary tables, SET options
//! and an open transaction last from one request to the next. The engine does the rest, as for
//! every dialect; this room only translates:
//!
//! - initiate → a Begin with the requested `timeout` (the endpoint's `session_timeout` is the
//!   ceiling); the reply header carries the new `sessionId` (base64 of the session's 16 random
//!   bytes) and the effective `timeout`;
//! - use → a Continue; the reply echoes the request's header exactly;
//! - terminate → a Continue that ends the session after the body, whatever the body did, closing
//!   its connection (its open transaction rolls back); the reply echoes `terminate` and the ID;
//! - `environmentChangeNotifications transactionBoundary="true"` with initiate is kept with the
//!   session (its `dialect_state`); its replies then name the transaction the connection holds
//!   open (`transactionDescriptor`, as the sql worker reported it with the reply);
//! - unknown, expired, malformed or another principal's IDs are answered with one fault
//!   ([`faults`]), and nothing runs.
//!
//! HTTP Basic authentication is required on the endpoint (the configuration insists); the session
//! belongs to its principal and endpoint.

pub mod faults;
mod read;
pub mod wsdl;

pub use faults::SqlError;
pub use read::{client_id, engine_id, NS, NS_HTTPS};

use super::{Dialect, HttpInfo, HttpReply, ReadResult, Rejection};
use crate::engine::{Reply, Response};
use crate::soap::{self, Envelope, SoapError, SoapVersion};
use actix_web::http::StatusCode;
use bytes::Bytes;
use std::time::Duration;

/// SQL Server's SOAP namespace, the `faultactor` of its faults.
pub const FAULT_ACTOR: &str = "http://schemas.microsoft.com/sqlserver/2004/SOAP";

/// What a reply must remember from its request.
#[derive(Debug, Clone)]
pub struct SqlContext {
    /// The options namespace in the form the client used.
    pub namespace: &'static str,
    /// Initiate: the effective timeout in seconds, for the reply header.
    pub initiate_timeout: Option<u64>,
    /// Use and terminate: the request's header, echoed as received.
    pub echo: Option<Bytes>,
    /// The request terminates its session.
    pub terminate: bool,
    /// Use and terminate: the client's `sessionId`, for a reply header written afresh.
    pub session_id: Option<String>,
}

/// The session's `dialect_state` byte when it began with `environmentChangeNotifications
/// transactionBoundary="true"`: its replies name the open transaction.
pub(crate) const NOTIFY_TRANSACTIONS: u8 = 1;

impl Default for SqlContext {
    fn default() -> Self {
        SqlContext {
            namespace: NS,
            initiate_timeout: None,
            echo: None,
            terminate: false,
            session_id: None,
        }
    }
}

/// The sqlSession dialect of one endpoint.
pub struct SqlSession {
    settings: read::Settings,
    /// SOAP 1.2 Sender faults as HTTP 400 rather than SQL Server's 500.
    sender_400: bool,
}

impl SqlSession {
    /// `sessions`: whether the endpoint allows sessions; `session_timeout`: the ceiling of a
    /// client's requested timeout; `sender_400`: SOAP 1.2's status rule instead of SQL Server's.
    pub fn new(sessions: bool, session_timeout: Duration, sender_400: bool) -> SqlSession {
        SqlSession {
            settings: read::Settings {
                sessions,
                ceiling: session_timeout,
            },
            sender_400,
        }
    }
}

impl Dialect for SqlSession {
    type ReplyContext = SqlContext;
    type Error = SqlError;
    const NAME: &'static str = "sqlsession";

    fn understands(&self, namespace: Option<&str>, local_name: &str) -> bool {
        matches!(namespace, Some(NS | NS_HTTPS))
            && matches!(local_name, "sqlSession" | "environmentChangeNotifications")
    }

    fn read_request(&self, envelope: Envelope, http: &HttpInfo) -> ReadResult<Self> {
        let (mut request, cx) = read::read(envelope, &self.settings)
            .map_err(|(error, context)| Rejection { error, context })?;
        request.principal = http.principal.clone();
        request.client_ip = http.client_ip;
        Ok((request, cx))
    }

    fn write_error(&self, version: SoapVersion, cx: SqlContext, error: SqlError) -> HttpReply {
        faults::render(version, &cx, &error, self.sender_400)
    }

    fn write_reply(&self, version: SoapVersion, cx: SqlContext, response: Response) -> HttpReply {
        let reply = match response.result {
            Ok(reply) => reply,
            Err(e) => {
                return faults::render(
                    version,
                    &cx,
                    &SqlError::Engine(Box::new(e)),
                    self.sender_400,
                );
            }
        };
        // With transactionBoundary notifications the header names the open transaction, so it
        // is written afresh; otherwise a use is echoed as received.
        let notify = response
            .session
            .as_ref()
            .filter(|s| s.dialect_state.first() == Some(&NOTIFY_TRANSACTIONS));
        let descriptor = notify.and_then(|s| s.server_transaction.as_deref());
        let terminated = cx.session_id.as_ref().filter(|_| cx.terminate);
        let header = match (
            &cx.initiate_timeout,
            terminated,
            &cx.echo,
            &response.session,
        ) {
            (Some(timeout), _, _, Some(session)) => Some(initiate_header(
                cx.namespace,
                &client_id(&session.id),
                *timeout,
                descriptor,
            )),
            (_, Some(id), _, _) => Some(terminate_header(cx.namespace, id)),
            (_, _, Some(_), Some(_)) if notify.is_some() => cx
                .session_id
                .as_deref()
                .map(|id| use_header(cx.namespace, id, descriptor)),
            (_, _, Some(echo), _) => Some(String::from_utf8_lossy(echo).into_owned()),
            _ => None,
        };
        let headers: Vec<&str> = header.iter().map(String::as_str).collect();
        let payload = match reply {
            Reply::Body(b) => b,
            Reply::Empty | Reply::Ended => bytes::Bytes::new(),
        };
        HttpReply {
            status: StatusCode::OK,
            content_type: version.content_type().to_string(),
            // A large result set is sent as the worker wrote it, not copied into the envelope.
            body: crate::dialect::body::envelope(version, "SOAP-ENV", &headers, payload),
            outcome: crate::dialect::OK,
        }
    }

    fn write_soap_error(&self, version: SoapVersion, error: &SoapError) -> HttpReply {
        faults::soap_error(version, error, self.sender_400)
    }
}

fn initiate_header(ns: &str, id: &str, timeout: u64, descriptor: Option<&str>) -> String {
    let mut h = String::with_capacity(160);
    h.push_str("<sqloptions:sqlSession xmlns:sqloptions=\"");
    h.push_str(ns);
    h.push_str("\" sessionId=\"");
    soap::escape_attr(id, &mut h);
    h.push_str("\" timeout=\"");
    h.push_str(&timeout.to_string());
    h.push('"');
    push_descriptor(descriptor, &mut h);
    h.push_str("/>");
    h
}

/// A use's reply header in a session that reports transaction boundaries: its ID and, while a
/// transaction is open, `transactionDescriptor`.
fn use_header(ns: &str, id: &str, descriptor: Option<&str>) -> String {
    let mut h = String::with_capacity(160);
    h.push_str("<sqloptions:sqlSession xmlns:sqloptions=\"");
    h.push_str(ns);
    h.push_str("\" sessionId=\"");
    soap::escape_attr(id, &mut h);
    h.push('"');
    push_descriptor(descriptor, &mut h);
    h.push_str("/>");
    h
}

fn push_descriptor(descriptor: Option<&str>, h: &mut String) {
    if let Some(d) = descriptor {
        h.push_str(" transactionDescriptor=\"");
        soap::escape_attr(d, h);
        h.push('"');
    }
}

pub(crate) fn terminate_header(ns: &str, id: &str) -> String {
    let mut h = String::with_capacity(160);
    h.push_str("<sqloptions:sqlSession xmlns:sqloptions=\"");
    h.push_str(ns);
    h.push_str("\" terminate=\"true\" sessionId=\"");
    soap::escape_attr(id, &mut h);
    h.push_str("\"/>");
    h
}
