//! SOAP versions, their envelope namespaces and media types.
//!
//! The version of a message is decided by one thing only: the namespace of its document element
//! (SOAP 1.1 §4.1.2, SOAP 1.2 Part 1 §5.4.7). The HTTP media type is checked by the HTTP layer, not
//! here. The reply always uses the request's version, except a VersionMismatch fault, which is always
//! SOAP 1.1 (`soap.md`, "Versions and media types").

/// SOAP 1.1 envelope namespace (SOAP 1.1 Note §4.1.2).
pub const SOAP11_ENV_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// SOAP 1.2 envelope namespace (Part 1 §5.1).
pub const SOAP12_ENV_NS: &str = "http://www.w3.org/2003/05/soap-envelope";

/// SOAP 1.1 actor meaning "the first SOAP application that processes the message" (§4.2.2).
pub const SOAP11_ACTOR_NEXT: &str = "http://schemas.xmlsoap.org/soap/actor/next";
/// SOAP 1.2 role `next` (Part 1 §2.2): every node plays it.
pub const SOAP12_ROLE_NEXT: &str = "http://www.w3.org/2003/05/soap-envelope/role/next";
/// SOAP 1.2 role `ultimateReceiver`, also what an absent `role` means (Part 1 §5.2.2).
pub const SOAP12_ROLE_ULTIMATE_RECEIVER: &str =
    "http://www.w3.org/2003/05/soap-envelope/role/ultimateReceiver";
/// SOAP 1.2 role `none`: blocks for it are never processed by anyone (Part 1 §2.2).
pub const SOAP12_ROLE_NONE: &str = "http://www.w3.org/2003/05/soap-envelope/role/none";

/// A SOAP version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SoapVersion {
    V11,
    V12,
}

impl SoapVersion {
    /// The envelope namespace URI of this version.
    pub fn envelope_ns(self) -> &'static str {
        match self {
            SoapVersion::V11 => SOAP11_ENV_NS,
            SoapVersion::V12 => SOAP12_ENV_NS,
        }
    }

    /// The `Content-Type` of a message of this version as the broker writes it.
    pub fn content_type(self) -> &'static str {
        match self {
            SoapVersion::V11 => "text/xml; charset=utf-8",
            SoapVersion::V12 => "application/soap+xml; charset=utf-8",
        }
    }

    /// The bare media type (`text/xml` / `application/soap+xml`), for matching requests.
    pub fn media_type(self) -> &'static str {
        match self {
            SoapVersion::V11 => "text/xml",
            SoapVersion::V12 => "application/soap+xml",
        }
    }

    /// The envelope prefix the broker writes: `SOAP-ENV` for 1.1 (clients compare the raw
    /// `faultcode` text, `soap_clients.md` §2.8 item 7), `env` for 1.2.
    pub fn default_prefix(self) -> &'static str {
        match self {
            SoapVersion::V11 => "SOAP-ENV",
            SoapVersion::V12 => "env",
        }
    }

    /// The version whose envelope namespace is `ns`, if any.
    pub fn from_envelope_ns(ns: &str) -> Option<SoapVersion> {
        match ns {
            SOAP11_ENV_NS => Some(SoapVersion::V11),
            SOAP12_ENV_NS => Some(SoapVersion::V12),
            _ => None,
        }
    }
}

impl std::fmt::Display for SoapVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SoapVersion::V11 => "SOAP 1.1",
            SoapVersion::V12 => "SOAP 1.2",
        })
    }
}
