//! The fault model shared by both SOAP versions.
//!
//! One [`Fault`] value renders as either version (see [`write_fault`](super::write_fault)):
//!
//! * SOAP 1.1 §4.4: `faultcode` is a QName in the envelope namespace (`Client`, `Server`,
//!   `MustUnderstand`, `VersionMismatch`), extensible with dotted suffixes (`Client.Process`);
//!   `faultstring`, optional `faultactor`, optional `detail`; children unqualified (WS-I BP R1001).
//! * SOAP 1.2 Part 1 §5.4: `env:Code/env:Value` (`Sender`, `Receiver`, `MustUnderstand`,
//!   `VersionMismatch`, `DataEncodingUnknown`) with an optional `env:Subcode`, `env:Reason/env:Text`,
//!   optional `env:Role`, optional `env:Detail`.
//!
//! Client ⇔ Sender and Server ⇔ Receiver are the same codes under two names.
//!
//! HTTP status (`soap.md`, "Faults"): every SOAP 1.1 fault is 500 (WS-I BP R1126; JAX-WS and suds
//! treat a 400 carrying a 1.1 fault as a transport error, `soap_clients.md` §2.8 item 1); SOAP 1.2
//! `Sender` is 400 and everything else 500 (Part 2 §7.5.2.2), unless a dialect overrides it.

use actix_web::http::StatusCode;

use super::error::QName;
use super::version::SoapVersion;

/// A fault code, named as in SOAP 1.2; [`FaultCode::soap11_name`] gives the SOAP 1.1 name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultCode {
    Sender,
    Receiver,
    MustUnderstand,
    VersionMismatch,
    /// SOAP 1.2 only; rendered as `Client` in SOAP 1.1, which has no equivalent.
    DataEncodingUnknown,
}

impl FaultCode {
    /// Local name of the code in SOAP 1.1 (`faultcode`).
    pub fn soap11_name(self) -> &'static str {
        match self {
            FaultCode::Sender | FaultCode::DataEncodingUnknown => "Client",
            FaultCode::Receiver => "Server",
            FaultCode::MustUnderstand => "MustUnderstand",
            FaultCode::VersionMismatch => "VersionMismatch",
        }
    }

    /// Local name of the code in SOAP 1.2 (`env:Code/env:Value`).
    pub fn soap12_name(self) -> &'static str {
        match self {
            FaultCode::Sender => "Sender",
            FaultCode::Receiver => "Receiver",
            FaultCode::MustUnderstand => "MustUnderstand",
            FaultCode::VersionMismatch => "VersionMismatch",
            FaultCode::DataEncodingUnknown => "DataEncodingUnknown",
        }
    }
}

/// A SOAP fault, ready to render in either version.
#[derive(Debug, Clone)]
pub struct Fault {
    pub code: FaultCode,
    /// SOAP 1.1: dotted suffix of the code, `"Process"` → `SOAP-ENV:Client.Process`. SOAP 1.2:
    /// ignored unless `subcode_qname` is set.
    pub subcode: Option<String>,
    /// SOAP 1.2 `env:Subcode/env:Value` (its prefix is declared on the element). Ignored in 1.1.
    pub subcode_qname: Option<QName>,
    /// `faultstring` / `env:Reason/env:Text xml:lang="en"`; escaped on output.
    pub reason: String,
    /// SOAP 1.1 `faultactor` / SOAP 1.2 `env:Role`; escaped on output.
    pub actor: Option<String>,
    /// Raw, trusted XML fragment placed inside `detail` / `env:Detail`.
    pub detail: Option<String>,
    /// SOAP 1.2: one `env:NotUnderstood` header block per entry. SOAP 1.1 has no such header.
    pub not_understood: Vec<QName>,
    /// Add the `Upgrade` header listing the supported envelopes, SOAP 1.2 first, then 1.1
    /// (Part 1 §5.4.7). Only a node that speaks SOAP 1.2 should set it.
    pub upgrade: bool,
    /// Raw header blocks a dialect wants on the fault (self-contained; never `mustUnderstand`).
    pub extra_headers: Vec<String>,
    /// Overrides the HTTP status that [`Fault::status`] would choose.
    pub http_status: Option<StatusCode>,
    /// What the request's outcome is called in the metrics (a dialect's fault code, such as
    /// NonStop's `-1001`); `None`: the SOAP code (`Client`, `Server`, …).
    pub outcome: Option<std::borrow::Cow<'static, str>>,
}

impl Fault {
    /// A fault with just a code and a reason.
    pub fn new(code: FaultCode, reason: impl Into<String>) -> Fault {
        Fault {
            code,
            subcode: None,
            subcode_qname: None,
            reason: reason.into(),
            actor: None,
            detail: None,
            not_understood: Vec::new(),
            upgrade: false,
            extra_headers: Vec::new(),
            http_status: None,
            outcome: None,
        }
    }

    /// The metrics' outcome label of this fault.
    pub fn outcome_label(&self) -> std::borrow::Cow<'static, str> {
        match &self.outcome {
            Some(o) => o.clone(),
            None => std::borrow::Cow::Borrowed(match self.code {
                FaultCode::VersionMismatch => "VersionMismatch",
                FaultCode::MustUnderstand => "MustUnderstand",
                FaultCode::Sender => "Client",
                FaultCode::Receiver => "Server",
                _ => "fault",
            }),
        }
    }

    /// The version the fault is written in when the reply would be `requested`: a VersionMismatch
    /// fault is always SOAP 1.1 (`soap.md`; SOAP 1.2 Part 1 Appendix A), since the sender's version
    /// is unknown. Use it for the `Content-Type` too.
    pub fn wire_version(&self, requested: SoapVersion) -> SoapVersion {
        if self.code == FaultCode::VersionMismatch {
            SoapVersion::V11
        } else {
            requested
        }
    }

    /// The HTTP status of this fault in a reply of version `v`: the override if set; else SOAP 1.1
    /// → 500 always; SOAP 1.2 → 400 for `Sender`, 500 for the rest.
    pub fn status(&self, v: SoapVersion) -> StatusCode {
        if let Some(s) = self.http_status {
            return s;
        }
        match (self.wire_version(v), self.code) {
            (SoapVersion::V12, FaultCode::Sender) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}
