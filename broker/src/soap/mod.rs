//! The SOAP 1.1 / 1.2 envelope layer: parse a request envelope, decide which header blocks are for
//! this node, check `mustUnderstand`, and write responses and faults.
//!
//! The rules are those of `spec/soap.md` (background: `reference/dsml_sql_soap.md` §3,
//! `reference/soap_clients.md` §2.8). In request order:
//!
//! 1. [`parse_envelope`] reads the untrusted bytes in one streaming, non-recursive pass, enforcing
//!    the [`Limits`], UTF-8, no DTD and no processing instruction, the Envelope/Header/Body
//!    structure, and picks the SOAP version from the Envelope's namespace. It keeps only the header
//!    blocks targeted at this node ([`Roles`]) and the Body's first element, as self-contained bytes
//!    a backend can parse alone.
//! 2. [`check_must_understand`] runs before anything else looks at the message (SOAP 1.2 Part 1
//!    §2.6: a mandatory block not understood stops all processing, the Body included).
//! 3. Any [`SoapError`] becomes a [`Fault`] through [`SoapError::to_fault`]; [`write_fault`] renders
//!    it, [`Fault::status`] gives its HTTP status and [`Fault::wire_version`] its version (a
//!    VersionMismatch fault is always SOAP 1.1). [`write_response`] renders normal replies.
//!
//! Matching is always on namespace URI and local name, never on prefixes; output uses the
//! conventional prefixes `SOAP-ENV` (1.1) and `env` (1.2) and never marks a header
//! `mustUnderstand`.

mod envelope;
mod error;
mod fault;
mod limits;
mod version;
mod write;

#[cfg(test)]
mod tests;

pub use envelope::{
    check_must_understand, parse_envelope, Attribute, BodyElement, Envelope, HeaderBlock,
};
pub use error::{QName, SoapError};
pub use fault::{Fault, FaultCode};
pub use limits::{Limits, Roles, MAX_NAMESPACE_BINDINGS};
pub use version::{
    SoapVersion, SOAP11_ACTOR_NEXT, SOAP11_ENV_NS, SOAP12_ENV_NS, SOAP12_ROLE_NEXT,
    SOAP12_ROLE_NONE, SOAP12_ROLE_ULTIMATE_RECEIVER,
};
pub use write::{
    escape_attr, escape_text, response_around, write_fault, write_fault_with_prefix,
    write_response, write_response_with_prefix,
};
