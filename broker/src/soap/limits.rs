//! Limits on untrusted input, and the roles this node plays.
//!
//! `soap.md` ("Limits on untrusted input") fixes the defaults: body 1 MiB, element depth 64,
//! attributes per element 64, header blocks 32, name length 256, total elements 100 000. The parser
//! enforces each while streaming, so a hostile message costs at most one pass over at most
//! `max_body_bytes` bytes; exceeding a limit is a Sender/Client fault naming it.

/// Limits enforced by [`parse_envelope`](super::parse_envelope). Field names are the configuration
/// keys, and [`SoapError::LimitExceeded`](super::SoapError::LimitExceeded) reports them by that name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body in bytes (also enforced earlier by the HTTP layer).
    pub max_body_bytes: usize,
    /// Deepest element nesting; the Envelope is depth 1.
    pub max_depth: usize,
    /// Most attributes on one element, namespace declarations included.
    pub max_attributes: usize,
    /// Most child elements of the SOAP Header, targeted at this node or not.
    pub max_header_blocks: usize,
    /// Longest qualified name (`prefix:local`) of an element or attribute, in bytes.
    pub max_name_len: usize,
    /// Most elements in the whole message.
    pub max_elements: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1024 * 1024,
            max_depth: 64,
            max_attributes: 64,
            max_header_blocks: 32,
            max_name_len: 256,
            max_elements: 100_000,
        }
    }
}

/// Most namespace bindings in scope at once. Not configurable: quick-xml resolves a prefix by a
/// linear scan of the bindings in scope, so this cap keeps resolution linear in the input. Real
/// clients declare a handful.
pub const MAX_NAMESPACE_BINDINGS: usize = 128;

/// Roles (SOAP 1.2) / actors (SOAP 1.1) this node plays besides `next` and `ultimateReceiver`
/// (configured per endpoint). A header block whose `role`/`actor` is one of these is targeted at
/// this node (SOAP 1.2 Part 1 §2.2, SOAP 1.1 §4.2.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roles {
    pub extra: Vec<String>,
}
