//! Generic SOAP errors and their one mapping to faults.
//!
//! Everything the envelope layer can reject is a [`SoapError`]; [`SoapError::to_fault`] is the only
//! place such an error becomes a [`Fault`], so the codes follow `soap.md` in one spot:
//!
//! * a message that is not XML, not UTF-8, has a DTD or a processing instruction, is not an Envelope,
//!   breaks the Envelope/Header/Body structure, has a bad `mustUnderstand` or exceeds a limit: the
//!   sender is at fault → `Sender` (1.2) / `Client` (1.1) (SOAP 1.2 Part 1 §5.4.6; WS-I BP R1008,
//!   R1009, R1015);
//! * an Envelope in an unknown namespace → `VersionMismatch`, always answered as SOAP 1.1 with an
//!   `Upgrade` header (SOAP 1.2 Part 1 §5.4.7 and Appendix A);
//! * a mandatory header block not understood → `MustUnderstand` with one `NotUnderstood` per block
//!   in SOAP 1.2 (Part 1 §5.4.8, §2.6).

use std::fmt;

use super::fault::{Fault, FaultCode};
use super::version::SoapVersion;

/// A qualified name as found in a message: namespace URI and local name identify it; the prefix is
/// only how it was written (kept to render `NotUnderstood qname="p:Local"` the way the client wrote
/// it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QName {
    pub namespace: Option<String>,
    pub prefix: Option<String>,
    pub local_name: String,
}

impl fmt::Display for QName {
    /// Clark notation, `{ns}local`: unambiguous, unlike a prefix.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{{{}}}{}", ns, self.local_name),
            None => f.write_str(&self.local_name),
        }
    }
}

/// Why a SOAP message was rejected before any dialect saw it. Messages name the problem (and the
/// limit, by its configuration key); input echoed in them is clipped.
#[derive(Debug, thiserror::Error)]
pub enum SoapError {
    #[error("the request is not well-formed XML: {0}")]
    NotWellFormed(String),
    #[error("the request is not UTF-8: invalid byte sequence at byte offset {offset}; only UTF-8 is accepted")]
    NotUtf8 { offset: usize },
    #[error("the document element is {0}, not a SOAP Envelope")]
    NotEnvelope(String),
    #[error("Wrong Version: the Envelope namespace {} is neither SOAP 1.1 nor SOAP 1.2", .0.as_deref().map(|ns| format!("{ns:?}")).unwrap_or_else(|| "(none)".into()))]
    VersionMismatch(Option<String>),
    /// A well-formed envelope of a SOAP version this endpoint does not speak (DSML: SOAP 1.1 only).
    #[error("Wrong Version: this endpoint does not speak {0}")]
    VersionNotServed(SoapVersion),
    #[error("a DTD (<!DOCTYPE>) is not allowed in a SOAP message")]
    Dtd,
    #[error("a processing instruction is not allowed in a SOAP message")]
    ProcessingInstruction,
    #[error("the request exceeds the limit {limit} = {max}")]
    LimitExceeded { limit: &'static str, max: usize },
    #[error("more than {max} namespace declarations in scope")]
    TooManyNamespaces { max: usize },
    #[error("invalid mustUnderstand value: {0}")]
    BadMustUnderstand(String),
    #[error("mandatory header block(s) not understood: {}", display_list(.0))]
    MustUnderstand(Vec<QName>),
    #[error("the SOAP Envelope has no Body")]
    NoBody,
    /// Envelope/Header/Body structure broken: an element other than Header/Body in the Envelope, a
    /// second Header or Body, Header after Body, character data between them.
    #[error("invalid SOAP Envelope: {0}")]
    InvalidEnvelope(String),
}

fn display_list(list: &[QName]) -> String {
    let mut s = String::new();
    for (i, q) in list.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&q.to_string());
    }
    s
}

impl SoapError {
    /// The fault for this error in a reply of `version` (the request's version, or the endpoint's
    /// when the request had none). A VersionMismatch fault is marked for SOAP 1.1 rendering by its
    /// code (see [`Fault::wire_version`]); it carries `upgrade = true`, which an endpoint that does
    /// not speak SOAP 1.2 should clear (only a SOAP 1.2 node advertises the upgrade, `soap.md`).
    pub fn to_fault(&self, version: SoapVersion) -> Fault {
        match self {
            SoapError::VersionMismatch(_) | SoapError::VersionNotServed(_) => {
                let mut f = Fault::new(FaultCode::VersionMismatch, self.to_string());
                f.upgrade = true;
                f
            }
            SoapError::MustUnderstand(list) => {
                let mut f = Fault::new(FaultCode::MustUnderstand, self.to_string());
                // SOAP 1.1 has no standard header for this; the faultstring lists the blocks.
                if version == SoapVersion::V12 {
                    f.not_understood = list.clone();
                }
                f
            }
            _ => Fault::new(FaultCode::Sender, self.to_string()),
        }
    }

    /// The configuration key of the limit this error reports, if it is a limit error.
    pub fn limit(&self) -> Option<&'static str> {
        match self {
            SoapError::LimitExceeded { limit, .. } => Some(limit),
            _ => None,
        }
    }
}

/// Clip input echoed into an error message, so a hostile megabyte does not travel back in the
/// faultstring.
pub(crate) fn clip(s: &str) -> &str {
    const MAX: usize = 120;
    if s.len() <= MAX {
        return s;
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
