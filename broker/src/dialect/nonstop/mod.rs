//! # The NonStop dialect (`spec/nonstop.md`)
//!
//! Modelled on HP NonStop SOAP 3.x. Clients steer sessions with one header element,
//!
//! ```xml
//! <nsk:Session xmlns:nsk="urn:compaq_nsk_oss_SoapHeader" SessionID="…" SessionCommand="Begin|End|AbortSubsession"
//!              BeginNewTransaction="yes|no" CurrentTransactionCommand="End|Abort"/>
//! ```
//!
//! and pick the reply's character encoding with `<nsk:Encoding OutputEncoding="Shift_JIS"/>`. The
//! namespace is also accepted with a trailing `/` (the manual's own example uses it) and the reply uses
//! whichever form the request used. `SessionId` is accepted as an alias of `SessionID`; replies always
//! say `SessionID`.
//!
//! This module reads the header (`read`) and writes replies; every error becomes a fault in one
//! place, [`faults`].

pub mod faults;
mod read;
pub mod wsdl;

pub use faults::NonStopError;
pub use read::{NS, NS_SLASH};

use super::{
    encode_output, render_fault, Dialect, HttpInfo, HttpReply, OutputEncoding, ReadResult,
    Rejection,
};
use crate::engine::{Reply, Response};
use crate::soap::{self, Envelope, SoapVersion};
use actix_web::http::StatusCode;
use std::collections::HashMap;

/// What a NonStop reply must remember from its request.
#[derive(Debug, Clone)]
pub struct NonStopContext {
    /// The header namespace in the form the client used.
    pub namespace: &'static str,
    /// The output encoding: the Encoding header, else the service's configured one, else UTF-8.
    pub encoding: OutputEncoding,
    /// Whether the client chose the encoding with an Encoding header (which beats the service's).
    pub encoding_from_header: bool,
}

impl Default for NonStopContext {
    fn default() -> Self {
        NonStopContext {
            namespace: NS,
            encoding: OutputEncoding::UTF_8,
            encoding_from_header: false,
        }
    }
}

/// The NonStop dialect of one endpoint.
pub struct NonStop {
    /// Looks up a service's configured response encoding (endpoint path, service name).
    /// The configured response encoding of each service of the endpoint that has one.
    service_encodings: HashMap<String, OutputEncoding>,
}

impl NonStop {
    /// `service_encodings`: service name → its configured response encoding.
    pub fn new(service_encodings: HashMap<String, OutputEncoding>) -> NonStop {
        NonStop { service_encodings }
    }
}

impl Dialect for NonStop {
    type ReplyContext = NonStopContext;
    type Error = NonStopError;
    const NAME: &'static str = "nonstop";

    fn understands(&self, namespace: Option<&str>, local_name: &str) -> bool {
        matches!(namespace, Some(NS) | Some(NS_SLASH))
            && matches!(local_name, "Session" | "Encoding")
    }

    fn read_request(&self, envelope: Envelope, http: &HttpInfo) -> ReadResult<Self> {
        let (mut request, mut cx) = read::read(envelope).map_err(|r| {
            let (error, context) = *r;
            Rejection { error, context }
        })?;
        if !cx.encoding_from_header {
            if let Some(call) = &request.call {
                if let Some(enc) = self.service_encodings.get(&call.service) {
                    cx.encoding = *enc;
                }
            }
        }
        request.principal = http.principal.clone();
        request.client_ip = http.client_ip;
        Ok((request, cx))
    }

    fn write_error(
        &self,
        version: SoapVersion,
        cx: NonStopContext,
        error: NonStopError,
    ) -> HttpReply {
        let fault = faults::to_fault(&error, version, &cx, None);
        encoded(version, render_fault(version, &fault), cx.encoding)
    }

    fn write_reply(
        &self,
        version: SoapVersion,
        cx: NonStopContext,
        response: Response,
    ) -> HttpReply {
        let header = response
            .session
            .as_ref()
            .map(|s| session_header(cx.namespace, &s.id, s.subsession_open));
        match response.result {
            Ok(reply) => {
                let mut out = Vec::with_capacity(256);
                let headers: Vec<&str> = header.iter().map(String::as_str).collect();
                let body: &[u8] = match &reply {
                    Reply::Body(b) => b,
                    Reply::Empty => b"",
                    Reply::Ended => b"<Response>Session ended.</Response>",
                };
                soap::write_response(version, &headers, body, &mut out);
                let (content_type, body) = encode_output(version, out, cx.encoding);
                HttpReply {
                    status: StatusCode::OK,
                    content_type,
                    body: body.into(),
                    outcome: crate::dialect::OK,
                }
            }
            Err(e) => {
                let error = NonStopError::Engine(Box::new(e));
                let fault = faults::to_fault(&error, version, &cx, header);
                encoded(version, render_fault(version, &fault), cx.encoding)
            }
        }
    }
}

fn encoded(version: SoapVersion, reply: HttpReply, encoding: OutputEncoding) -> HttpReply {
    if encoding.is_utf8() {
        return reply;
    }
    let (content_type, body) = encode_output(version, reply.body.into_vec(), encoding);
    HttpReply {
        status: reply.status,
        content_type,
        body: body.into(),
        outcome: reply.outcome,
    }
}

/// `<nsk:Session xmlns:nsk="…" SessionID="…"/>`, plus `Subsession="on"` while a dialog is open. Never
/// marked mustUnderstand (JAX-WS and gSOAP clients reject undeclared mustUnderstand headers).
pub fn session_header(namespace: &str, id: &str, subsession_open: bool) -> String {
    let mut h = String::with_capacity(96 + id.len());
    h.push_str("<nsk:Session xmlns:nsk=\"");
    soap::escape_attr(namespace, &mut h);
    h.push_str("\" SessionID=\"");
    soap::escape_attr(id, &mut h);
    h.push('"');
    if subsession_open {
        h.push_str(" Subsession=\"on\"");
    }
    h.push_str("/>");
    h
}
