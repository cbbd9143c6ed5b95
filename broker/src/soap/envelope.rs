//! Parsing a SOAP envelope from untrusted bytes.
//!
//! What is checked, and why (`soap.md` is the rule book; SOAP 1.1 Note §4, SOAP 1.2 Part 1 §5):
//!
//! * **One streaming pass, no recursion.** quick-xml's `NsReader` yields events; a depth counter and
//!   a small state machine replace a tree, so a 10 000-deep message costs no stack and every limit
//!   ([`Limits`]) is checked as the element that breaks it arrives. Only the header blocks aimed at
//!   this node and the Body's first element are copied out; everything else is validated and
//!   dropped without allocating.
//! * **UTF-8 only.** The whole input is validated up front (a UTF-8 BOM is skipped); an XML
//!   declaration naming another encoding is refused rather than transcoded.
//! * **No DTD, no processing instructions** (SOAP 1.2 Part 1 §5; WS-I BP R1008/R1009). quick-xml does
//!   not interpret DTDs, so no entity is ever expanded; a reference to any entity other than the five
//!   predefined ones is a well-formedness error, which also disarms "billion laughs".
//! * **Version from the document element.** `Envelope` in the 1.1 or 1.2 namespace selects the
//!   version; `Envelope` in any other namespace is a VersionMismatch (SOAP 1.1 §4.1.2, 1.2 §5.4.7);
//!   any other document element is not SOAP at all (WS-I BP R1015).
//! * **Structure.** Optional `Header`, then exactly one `Body`, both in the envelope namespace, and
//!   nothing else but whitespace and comments (SOAP 1.2 Part 1 §5.1; WS-I BP R1011).
//! * **Names, not prefixes.** Elements and attributes are matched on namespace URI and local name;
//!   clients use every prefix imaginable and default namespaces (`soap_clients.md` §2.8 item 6).
//!   Namespace names are compared as written: quick-xml does not expand references inside
//!   `xmlns` values (no client escapes a namespace URI).
//! * **Header targeting** (`soap.md` "Header processing" step 1; SOAP 1.2 Part 1 §2.2/§5.2.2, SOAP 1.1
//!   §4.2.2): a block is for this node when it has no `actor`/`role`, or names `next`, (1.2)
//!   `ultimateReceiver`, or one of the endpoint's extra roles. Other blocks, `role/none` included,
//!   are skipped even when mandatory. `mustUnderstand` on a targeted block must be `0`/`1`, or in
//!   1.2 also `true`/`false` (step 2; Part 1 §5.2.3, WS-I BP R1013).
//! * **Self-contained fragments.** A backend parses the Body element on its own, so the namespace
//!   declarations it inherited from Envelope and Body are copied onto its start tag.

use std::borrow::Cow;

use bytes::Bytes;
use quick_xml::events::attributes::{AttrError, Attribute as XmlAttr};
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::name::{
    LocalName, NamespaceError, NamespaceResolver, PrefixDeclaration, ResolveResult,
};
use quick_xml::reader::NsReader;
use quick_xml::XmlVersion;

use super::error::{clip, QName, SoapError};
use super::limits::{Limits, Roles, MAX_NAMESPACE_BINDINGS};
use super::version::{
    SoapVersion, SOAP11_ACTOR_NEXT, SOAP12_ROLE_NEXT, SOAP12_ROLE_ULTIMATE_RECEIVER,
};

/// A parsed SOAP message: its version, the header blocks for this node, and the Body's first element.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub version: SoapVersion,
    /// Only the blocks targeted at this node, in document order.
    pub headers: Vec<HeaderBlock>,
    /// The Body's first child element; `None` when the Body has no element child.
    pub body: Option<BodyElement>,
    /// The Body has more element children after the first (SOAP allows it; a dialect whose Body
    /// holds exactly one element refuses it).
    pub more_body_elements: bool,
}

impl Envelope {
    /// The targeted header blocks named `{namespace}local_name`.
    pub fn headers_named<'a>(
        &'a self,
        namespace: Option<&'a str>,
        local_name: &'a str,
    ) -> impl Iterator<Item = &'a HeaderBlock> + 'a {
        self.headers
            .iter()
            .filter(move |h| h.namespace.as_deref() == namespace && h.local_name == local_name)
    }
}

/// The XML Schema instance namespace (`xsi:nil`).
pub const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// A header block targeted at this node.
#[derive(Debug, Clone)]
pub struct HeaderBlock {
    pub namespace: Option<String>,
    pub local_name: String,
    /// The prefix as written, for rendering `NotUnderstood qname="p:Local"`.
    pub prefix: Option<String>,
    pub must_understand: bool,
    /// Every attribute except namespace declarations and the attributes in the envelope namespace
    /// (`mustUnderstand`, `actor`/`role`, `relay`, `encodingStyle`). Values are unescaped and
    /// normalized as XML attribute values are.
    pub attributes: Vec<Attribute>,
    /// The block's bytes, self-contained like [`BodyElement::xml`], with the envelope-namespace
    /// attributes removed from its start tag, so a dialect can echo it in a response without
    /// re-parsing and without sending `mustUnderstand` back (`soap.md`, "Faults", last rule).
    pub xml: Bytes,
}

impl HeaderBlock {
    /// The value of attribute `{namespace}local_name`.
    pub fn attr(&self, namespace: Option<&str>, local_name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| a.namespace.as_deref() == namespace && a.local_name == local_name)
            .map(|a| a.value.as_str())
    }

    /// Whether the block is `xsi:nil="true"`: a header a generated client sends for a parameter
    /// left null (JAX-WS does), which says "no value" and so stands for no header at all.
    pub fn is_nil(&self) -> bool {
        matches!(
            self.attr(Some(XSI_NS), "nil").map(str::trim),
            Some("true" | "1")
        )
    }

    /// This block's name, e.g. for a MustUnderstand fault.
    pub fn qname(&self) -> QName {
        QName {
            namespace: self.namespace.clone(),
            prefix: self.prefix.clone(),
            local_name: self.local_name.clone(),
        }
    }
}

/// An attribute of a header block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub namespace: Option<String>,
    pub local_name: String,
    /// Unescaped.
    pub value: String,
}

/// The Body's first child element.
#[derive(Debug, Clone)]
pub struct BodyElement {
    pub namespace: Option<String>,
    pub local_name: String,
    /// The element's bytes, self-contained: every namespace declaration in scope from its ancestors
    /// (Envelope, Body) that the element does not redeclare itself is added to its start tag, so a
    /// backend can parse it alone. Otherwise exactly the input bytes.
    pub xml: Bytes,
    /// No child elements and only whitespace text.
    pub is_empty: bool,
}

/// Parse and check a SOAP envelope (see the module documentation for the rules).
pub fn parse_envelope(input: &[u8], limits: &Limits, roles: &Roles) -> Result<Envelope, SoapError> {
    if input.len() > limits.max_body_bytes {
        return Err(SoapError::LimitExceeded {
            limit: "max_body_bytes",
            max: limits.max_body_bytes,
        });
    }
    const BOM: &[u8] = b"\xEF\xBB\xBF";
    let doc = input.strip_prefix(BOM).unwrap_or(input);
    let bom = input.len() - doc.len();
    let text = std::str::from_utf8(doc).map_err(|e| SoapError::NotUtf8 {
        offset: bom + e.valid_up_to(),
    })?;
    check_chars(doc, bom)?;
    Parser::new(text, bom, limits, roles).run()
}

/// Step 3 of `soap.md` "Header processing": every mandatory targeted block that `understood(ns,
/// local)` rejects is listed in one MustUnderstand error (SOAP 1.2 Part 1 §2.6 asks for a single
/// fault naming them all).
pub fn check_must_understand(
    env: &Envelope,
    understood: impl Fn(Option<&str>, &str) -> bool,
) -> Result<(), SoapError> {
    let missing: Vec<QName> = env
        .headers
        .iter()
        .filter(|h| h.must_understand && !understood(h.namespace.as_deref(), &h.local_name))
        .map(HeaderBlock::qname)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(SoapError::MustUnderstand(missing))
    }
}

/// XML 1.0 forbids C0 controls other than tab, LF and CR anywhere, even escaped; quick-xml does not
/// check characters, so one branch-free scan does (it also keeps them out of echoed error text).
fn check_chars(doc: &[u8], bom: usize) -> Result<(), SoapError> {
    let bad = |b: u8| b < 0x20 && b != b'\t' && b != b'\n' && b != b'\r';
    for (i, chunk) in doc.chunks(256).enumerate() {
        if chunk.iter().fold(false, |acc, &b| acc | bad(b)) {
            let at = chunk.iter().position(|&b| bad(b)).unwrap_or(0);
            let offset = bom + i * 256 + at;
            return Err(SoapError::NotWellFormed(format!(
                "control character U+{:04X} at byte offset {offset} is not allowed in XML",
                chunk[at]
            )));
        }
    }
    Ok(())
}

fn is_xml_ws(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// Where the parser is, as far as SOAP structure goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Container {
    /// Directly inside the Envelope (or outside it).
    Envelope,
    Header,
    Body,
}

/// A header block or the body element being copied out: where it started, and what is known.
struct Capture {
    tag: TagSpan,
    /// Its element depth (Envelope = 1).
    depth: usize,
    kind: CaptureKind,
}

/// Where a start tag is in the input.
struct TagSpan {
    /// Offset of its `<`.
    start: usize,
    /// Offset just after its `>`.
    tag_end: usize,
    /// Length of its qualified name.
    qname_len: usize,
    /// An empty-element tag (`<x/>`).
    self_closing: bool,
}

enum CaptureKind {
    Header {
        block: PendingHeader,
        /// The start tag carries envelope-namespace attributes to drop from `xml`.
        strip: bool,
    },
    Body {
        namespace: Option<String>,
        local_name: String,
        has_content: bool,
    },
}

struct PendingHeader {
    namespace: Option<String>,
    local_name: String,
    prefix: Option<String>,
    must_understand: bool,
    attributes: Vec<Attribute>,
}

struct Parser<'i, 'c> {
    input: &'i str,
    /// Length of the skipped BOM, added to offsets in messages.
    bom: usize,
    reader: NsReader<&'i [u8]>,
    limits: &'c Limits,
    roles: &'c Roles,
    version: Option<SoapVersion>,
    /// Open elements.
    depth: usize,
    elements: usize,
    header_blocks: usize,
    container: Container,
    root_seen: bool,
    header_seen: bool,
    body_seen: bool,
    body_child_seen: bool,
    /// A second element child of the Body was seen.
    more_body_elements: bool,
    headers: Vec<HeaderBlock>,
    body: Option<BodyElement>,
    capture: Option<Capture>,
}

impl<'i, 'c> Parser<'i, 'c> {
    fn new(input: &'i str, bom: usize, limits: &'c Limits, roles: &'c Roles) -> Self {
        let mut reader = NsReader::from_str(input);
        reader.config_mut().enable_all_checks(true);
        reader
            .resolver_mut()
            .set_max_namespace_bindings(MAX_NAMESPACE_BINDINGS);
        Parser {
            input,
            bom,
            reader,
            limits,
            roles,
            version: None,
            depth: 0,
            elements: 0,
            header_blocks: 0,
            container: Container::Envelope,
            root_seen: false,
            header_seen: false,
            body_seen: false,
            body_child_seen: false,
            more_body_elements: false,
            headers: Vec::new(),
            body: None,
            capture: None,
        }
    }

    fn run(mut self) -> Result<Envelope, SoapError> {
        loop {
            let pos = self.reader.buffer_position() as usize;
            let event = match self.reader.read_event() {
                Ok(ev) => ev,
                Err(e) => return Err(self.xml_error(e)),
            };
            match event {
                Event::Start(e) => self.on_start(&e, pos, false)?,
                Event::Empty(e) => {
                    self.on_start(&e, pos, true)?;
                    self.on_end()?;
                }
                Event::End(_) => self.on_end()?,
                Event::Text(t) => self.on_chars(is_xml_ws(&t), "character data")?,
                // Outside the document element only literal whitespace may appear (XML 1.0 §2.8),
                // hence `false` for CDATA and references there.
                Event::CData(c) => {
                    self.on_chars(self.depth > 0 && is_xml_ws(&c), "a CDATA section")?
                }
                Event::GeneralRef(r) => {
                    let ws = check_reference(&r)?;
                    self.on_chars(self.depth > 0 && ws, "a reference")?;
                }
                Event::Comment(_) => {}
                Event::Decl(d) => {
                    if pos != 0 {
                        return Err(SoapError::NotWellFormed(
                            "an XML declaration is only allowed at the very start of the document"
                                .into(),
                        ));
                    }
                    d.version().map_err(|e| {
                        SoapError::NotWellFormed(format!("bad XML declaration: {e}"))
                    })?;
                    if let Some(enc) = d.encoding() {
                        let enc = enc.map_err(|e| {
                            SoapError::NotWellFormed(format!("bad XML declaration: {e}"))
                        })?;
                        if !enc.eq_ignore_ascii_case("utf-8") {
                            return Err(SoapError::NotWellFormed(format!(
                                "the XML declaration names encoding {:?}; only UTF-8 is accepted",
                                clip(&enc)
                            )));
                        }
                    }
                }
                Event::PI(_) => return Err(SoapError::ProcessingInstruction),
                Event::DocType(_) => return Err(SoapError::Dtd),
                Event::Eof => break,
            }
        }
        self.finish()
    }

    fn finish(self) -> Result<Envelope, SoapError> {
        if !self.root_seen {
            return Err(SoapError::NotWellFormed("no document element".into()));
        }
        if self.depth > 0 {
            return Err(SoapError::NotWellFormed(format!(
                "unexpected end of input with {} element(s) still open (truncated message?)",
                self.depth
            )));
        }
        if !self.body_seen {
            return Err(SoapError::NoBody);
        }
        let Some(version) = self.version else {
            return Err(SoapError::NotWellFormed("no document element".into()));
        };
        Ok(Envelope {
            version,
            headers: self.headers,
            body: self.body,
            more_body_elements: self.more_body_elements,
        })
    }

    fn xml_error(&self, e: quick_xml::Error) -> SoapError {
        match e {
            quick_xml::Error::Namespace(NamespaceError::TooManyBindings(max)) => {
                SoapError::TooManyNamespaces { max }
            }
            quick_xml::Error::Namespace(NamespaceError::TooDeeplyNested(_)) => {
                SoapError::LimitExceeded {
                    limit: "max_depth",
                    max: self.limits.max_depth,
                }
            }
            e => SoapError::NotWellFormed(format!(
                "{} (near byte offset {})",
                e,
                self.bom as u64 + self.reader.error_position()
            )),
        }
    }

    fn on_start(&mut self, e: &BytesStart<'i>, pos: usize, empty: bool) -> Result<(), SoapError> {
        let limits = self.limits;
        let qname = e.name().into_inner();
        if qname.len() > limits.max_name_len {
            return Err(limit("max_name_len", limits.max_name_len));
        }
        self.elements += 1;
        if self.elements > limits.max_elements {
            return Err(limit("max_elements", limits.max_elements));
        }
        let depth = self.depth + 1;
        if depth > limits.max_depth {
            return Err(limit("max_depth", limits.max_depth));
        }
        self.depth = depth;

        let resolver = self.reader.resolver();
        let (ns, local) = resolve_element(resolver, e)?;

        match (depth, self.container) {
            (1, _) => {
                if self.root_seen {
                    return Err(SoapError::NotWellFormed(
                        "a second element after the document element".into(),
                    ));
                }
                self.root_seen = true;
                if local.as_ref() != "Envelope" {
                    return Err(SoapError::NotEnvelope(describe(ns, qname)));
                }
                let version = ns
                    .and_then(SoapVersion::from_envelope_ns)
                    .ok_or_else(|| SoapError::VersionMismatch(ns.map(|n| clip(n).to_string())))?;
                self.version = Some(version);
                // encodingStyle and any other attributes on the Envelope are tolerated.
                check_attributes(resolver, limits, e)?;
            }
            (2, _) => {
                let env_ns = self.env_ns();
                let is_env = ns == Some(env_ns);
                match local.as_ref() {
                    "Header" if is_env => {
                        if self.header_seen || self.body_seen {
                            return Err(SoapError::InvalidEnvelope(
                                "Header must be the first child of Envelope and appear once".into(),
                            ));
                        }
                        self.header_seen = true;
                        self.container = Container::Header;
                    }
                    "Body" if is_env => {
                        if self.body_seen {
                            return Err(SoapError::InvalidEnvelope("more than one Body".into()));
                        }
                        self.body_seen = true;
                        self.container = Container::Body;
                    }
                    _ => {
                        return Err(SoapError::InvalidEnvelope(format!(
                            "unexpected element {} {}; only Header and Body are allowed in the Envelope",
                            describe(ns, qname),
                            if self.body_seen { "after the Body" } else { "in the Envelope" }
                        )));
                    }
                }
                check_attributes(resolver, limits, e)?;
            }
            (3, Container::Header) => {
                self.header_blocks += 1;
                if self.header_blocks > limits.max_header_blocks {
                    return Err(limit("max_header_blocks", limits.max_header_blocks));
                }
                if let Some(kind) = self.header_block(e, ns, local)? {
                    self.begin_capture(e, pos, empty, kind)?;
                }
            }
            (3, Container::Body) if !self.body_child_seen => {
                self.body_child_seen = true;
                check_attributes(resolver, limits, e)?;
                let kind = CaptureKind::Body {
                    namespace: ns.map(str::to_string),
                    local_name: local.as_ref().to_string(),
                    has_content: false,
                };
                self.begin_capture(e, pos, empty, kind)?;
            }
            (3, Container::Body) => {
                self.more_body_elements = true;
                check_attributes(resolver, limits, e)?;
            }
            _ => {
                check_attributes(resolver, limits, e)?;
                if let Some(Capture {
                    kind: CaptureKind::Body { has_content, .. },
                    depth: cap_depth,
                    ..
                }) = &mut self.capture
                {
                    if depth > *cap_depth {
                        *has_content = true;
                    }
                }
            }
        }
        Ok(())
    }

    /// Read a header block's start tag: `None` when it is not targeted at this node.
    fn header_block(
        &self,
        e: &BytesStart<'i>,
        ns: Option<&str>,
        local: LocalName<'_>,
    ) -> Result<Option<CaptureKind>, SoapError> {
        let version = self.version.unwrap_or(SoapVersion::V11);
        let env_ns = version.envelope_ns();
        let role_attr = match version {
            SoapVersion::V11 => "actor",
            SoapVersion::V12 => "role",
        };
        let resolver = self.reader.resolver();
        let mut count = 0;
        let mut must_understand: Option<Cow<'_, str>> = None;
        let mut role: Option<Cow<'_, str>> = None;
        let mut strip = false;
        let mut attributes = Vec::new();
        for a in e.attributes() {
            let Some((a_ns, a_local, attr)) =
                check_attribute(resolver, self.limits, &mut count, a)?
            else {
                continue;
            };
            if a_ns == Some(env_ns) {
                strip = true;
                let slot = match a_local.as_ref() {
                    "mustUnderstand" => &mut must_understand,
                    l if l == role_attr => &mut role,
                    _ => continue,
                };
                if slot.is_some() {
                    return Err(SoapError::NotWellFormed(format!(
                        "header block {} has two {} attributes in the envelope namespace",
                        describe(ns, e.name().into_inner()),
                        a_local.as_ref()
                    )));
                }
                *slot = Some(attribute_value(&attr)?);
            } else {
                attributes.push(Attribute {
                    namespace: a_ns.map(str::to_string),
                    local_name: a_local.as_ref().to_string(),
                    value: attribute_value(&attr)?.into_owned(),
                });
            }
        }

        if !self.is_targeted(version, role.as_deref()) {
            return Ok(None);
        }
        let must_understand = match must_understand.as_deref().map(trim_xml_ws) {
            None | Some("0") => false,
            Some("1") => true,
            Some("false") if version == SoapVersion::V12 => false,
            Some("true") if version == SoapVersion::V12 => true,
            Some(other) => {
                return Err(SoapError::BadMustUnderstand(format!(
                    "{:?} on header block {} ({} accepts {})",
                    clip(other),
                    describe(ns, e.name().into_inner()),
                    version,
                    match version {
                        SoapVersion::V11 => "0 or 1",
                        SoapVersion::V12 => "0, 1, true or false",
                    }
                )));
            }
        };
        let block = PendingHeader {
            namespace: ns.map(str::to_string),
            local_name: local.as_ref().to_string(),
            prefix: e.name().prefix().map(|p| p.into_inner().to_string()),
            must_understand,
            attributes,
        };
        Ok(Some(CaptureKind::Header { block, strip }))
    }

    /// `soap.md` "Header processing" step 1. An empty `role`/`actor` is read as absent: erring
    /// toward "targeted" turns an odd mandatory block into a MustUnderstand fault instead of
    /// silently ignoring it.
    fn is_targeted(&self, version: SoapVersion, role: Option<&str>) -> bool {
        let Some(role) = role.map(trim_xml_ws).filter(|r| !r.is_empty()) else {
            return true;
        };
        let standard = match version {
            SoapVersion::V11 => role == SOAP11_ACTOR_NEXT,
            SoapVersion::V12 => role == SOAP12_ROLE_NEXT || role == SOAP12_ROLE_ULTIMATE_RECEIVER,
        };
        standard || self.roles.extra.iter().any(|r| r == role)
    }

    fn begin_capture(
        &mut self,
        e: &BytesStart<'i>,
        pos: usize,
        empty: bool,
        kind: CaptureKind,
    ) -> Result<(), SoapError> {
        // The reader stops right before each `<`, so `pos` is the tag's first byte; checked because
        // the slicing below depends on it.
        if self.input.as_bytes().get(pos) != Some(&b'<') {
            return Err(SoapError::NotWellFormed(format!(
                "internal: element start not found at byte offset {}",
                self.bom + pos
            )));
        }
        self.capture = Some(Capture {
            tag: TagSpan {
                start: pos,
                tag_end: self.reader.buffer_position() as usize,
                qname_len: e.name().into_inner().len(),
                self_closing: empty,
            },
            depth: self.depth,
            kind,
        });
        Ok(())
    }

    fn on_end(&mut self) -> Result<(), SoapError> {
        if self.depth == 0 {
            return Err(SoapError::NotWellFormed("end tag without start tag".into()));
        }
        if self.capture.as_ref().is_some_and(|c| c.depth == self.depth) {
            if let Some(cap) = self.capture.take() {
                self.finish_capture(cap)?;
            }
        }
        match self.depth {
            2 => self.container = Container::Envelope,
            1 => self.container = Container::Envelope,
            _ => {}
        }
        self.depth -= 1;
        Ok(())
    }

    /// Text, CDATA or a reference. `ws`: it is only XML whitespace.
    fn on_chars(&mut self, ws: bool, what: &str) -> Result<(), SoapError> {
        if ws {
            return Ok(());
        }
        match self.depth {
            0 => Err(SoapError::NotWellFormed(format!(
                "{what} {} the document element",
                if self.root_seen { "after" } else { "before" }
            ))),
            1 | 2 => Err(SoapError::InvalidEnvelope(format!(
                "{what} directly inside {}",
                match (self.depth, self.container) {
                    (2, Container::Header) => "the Header",
                    (2, Container::Body) => "the Body",
                    _ => "the Envelope",
                }
            ))),
            _ => {
                if let Some(Capture {
                    kind: CaptureKind::Body { has_content, .. },
                    ..
                }) = &mut self.capture
                {
                    *has_content = true;
                }
                Ok(())
            }
        }
    }

    /// Copy the captured element out, now that its end is known. Called right after its end tag
    /// (or empty-element tag) was read: the resolver still holds exactly the bindings in scope at
    /// the element (quick-xml pops a scope only on the next read).
    fn finish_capture(&mut self, cap: Capture) -> Result<(), SoapError> {
        let end = self.reader.buffer_position() as usize;
        let input = self.input.as_bytes();
        let resolver = self.reader.resolver();
        let own_level = resolver.level();
        let tag = &cap.tag;
        let mut xml = Vec::with_capacity(end - tag.start + 128);
        let name_end = tag.start + 1 + tag.qname_len;
        xml.extend_from_slice(&input[tag.start..name_end]);
        for (prefix, ns) in resolver.bindings() {
            if resolver.bindings_of(own_level).any(|(p, _)| p == prefix) {
                continue; // the element declares it itself
            }
            match prefix {
                PrefixDeclaration::Default => xml.extend_from_slice(b" xmlns=\""),
                PrefixDeclaration::Named(p) => {
                    xml.extend_from_slice(b" xmlns:");
                    xml.extend_from_slice(p.as_bytes());
                    xml.extend_from_slice(b"=\"");
                }
            }
            push_raw_attr_value(ns.into_inner(), &mut xml);
            xml.push(b'"');
        }
        match cap.kind {
            CaptureKind::Body {
                namespace,
                local_name,
                has_content,
            } => {
                xml.extend_from_slice(&input[name_end..end]);
                self.body = Some(BodyElement {
                    namespace,
                    local_name,
                    xml: Bytes::from(xml),
                    is_empty: !has_content,
                });
            }
            CaptureKind::Header { block, strip } => {
                if strip {
                    self.rebuild_start_tag(tag, resolver, &mut xml)?;
                    xml.extend_from_slice(&input[tag.tag_end..end]);
                } else {
                    xml.extend_from_slice(&input[name_end..end]);
                }
                let b = block;
                self.headers.push(HeaderBlock {
                    namespace: b.namespace,
                    local_name: b.local_name,
                    prefix: b.prefix,
                    must_understand: b.must_understand,
                    attributes: b.attributes,
                    xml: Bytes::from(xml),
                });
            }
        }
        Ok(())
    }

    /// Write the attributes of the captured start tag, minus those in the envelope namespace, and
    /// close the tag.
    fn rebuild_start_tag(
        &self,
        cap: &TagSpan,
        resolver: &NamespaceResolver,
        xml: &mut Vec<u8>,
    ) -> Result<(), SoapError> {
        let env_ns = self.env_ns();
        let close = if cap.self_closing { 2 } else { 1 };
        let content = self
            .input
            .get(cap.start + 1..cap.tag_end.saturating_sub(close))
            .unwrap_or("");
        let tag = BytesStart::from_content(content, cap.qname_len);
        for a in tag.attributes() {
            let a = a.map_err(|e| SoapError::NotWellFormed(e.to_string()))?;
            if a.key.as_namespace_binding().is_none() {
                if let (ResolveResult::Bound(n), _) = resolver.resolve_attribute(a.key) {
                    if n.into_inner() == env_ns {
                        continue;
                    }
                }
            }
            xml.push(b' ');
            xml.extend_from_slice(a.key.into_inner().as_bytes());
            xml.extend_from_slice(b"=\"");
            push_raw_attr_value(&a.value, xml);
            xml.push(b'"');
        }
        xml.extend_from_slice(if cap.self_closing { b"/>" } else { b">" });
        Ok(())
    }

    fn env_ns(&self) -> &'static str {
        self.version.unwrap_or(SoapVersion::V11).envelope_ns()
    }
}

fn limit(limit: &'static str, max: usize) -> SoapError {
    SoapError::LimitExceeded { limit, max }
}

fn resolve_element<'r, 'e>(
    resolver: &'r NamespaceResolver,
    e: &'e BytesStart<'_>,
) -> Result<(Option<&'r str>, LocalName<'e>), SoapError> {
    match resolver.resolve_element(e.name()) {
        (ResolveResult::Bound(ns), local) => Ok((Some(ns.into_inner()), local)),
        (ResolveResult::Unbound, local) => Ok((None, local)),
        (ResolveResult::Unknown(p), _) => Err(SoapError::NotWellFormed(format!(
            "undeclared namespace prefix {:?} on element <{}>",
            clip(&p),
            e.name().into_inner()
        ))),
    }
}

/// Validate every attribute of an element whose attributes are not otherwise needed.
fn check_attributes(
    resolver: &NamespaceResolver,
    limits: &Limits,
    e: &BytesStart<'_>,
) -> Result<(), SoapError> {
    let mut count = 0;
    for a in e.attributes() {
        if let Some((_, _, attr)) = check_attribute(resolver, limits, &mut count, a)? {
            // References in values must be to predefined entities; only then is it worth a look.
            if attr.value.contains('&') {
                attribute_value(&attr)?;
            }
        }
    }
    Ok(())
}

/// One attribute: count it against `max_attributes`, bound its name, and resolve its prefix.
/// Returns `None` for namespace declarations (already applied by the reader).
#[allow(clippy::type_complexity)]
fn check_attribute<'r, 'e>(
    resolver: &'r NamespaceResolver,
    limits: &Limits,
    count: &mut usize,
    a: Result<XmlAttr<'e>, AttrError>,
) -> Result<Option<(Option<&'r str>, LocalName<'e>, XmlAttr<'e>)>, SoapError> {
    *count += 1;
    if *count > limits.max_attributes {
        return Err(limit("max_attributes", limits.max_attributes));
    }
    let attr = a.map_err(|e| SoapError::NotWellFormed(format!("bad attribute: {e}")))?;
    let key = attr.key;
    if key.into_inner().len() > limits.max_name_len {
        return Err(limit("max_name_len", limits.max_name_len));
    }
    if key.as_namespace_binding().is_some() {
        return Ok(None);
    }
    match resolver.resolve_attribute(key) {
        (ResolveResult::Bound(ns), local) => Ok(Some((Some(ns.into_inner()), local, attr))),
        (ResolveResult::Unbound, local) => Ok(Some((None, local, attr))),
        (ResolveResult::Unknown(p), _) => Err(SoapError::NotWellFormed(format!(
            "undeclared namespace prefix {:?} on attribute {}",
            clip(&p),
            key.into_inner()
        ))),
    }
}

/// An attribute's value, unescaped and normalized (XML 1.0 §3.3.3); an unknown entity is an error.
fn attribute_value<'e>(attr: &XmlAttr<'e>) -> Result<Cow<'e, str>, SoapError> {
    attr.normalized_value(XmlVersion::Implicit1_0).map_err(|e| {
        SoapError::NotWellFormed(format!(
            "attribute {}: {}",
            attr.key.into_inner(),
            clip(&e.to_string())
        ))
    })
}

/// A reference in text must be a character reference to a legal character or one of the five
/// predefined entities: there is no DTD, so any other name is undeclared (XML 1.0 §4.1, WFC: Entity
/// Declared). Returns whether it stands for whitespace.
fn check_reference(r: &BytesRef<'_>) -> Result<bool, SoapError> {
    if r.is_char_ref() {
        return match r.resolve_char_ref() {
            Ok(Some(c)) if is_xml_char(c) => Ok(matches!(c, ' ' | '\t' | '\n' | '\r')),
            _ => Err(SoapError::NotWellFormed(format!(
                "invalid character reference &{};",
                clip(r)
            ))),
        };
    }
    match &**r {
        "lt" | "gt" | "amp" | "apos" | "quot" => Ok(false),
        name => Err(SoapError::NotWellFormed(format!(
            "reference to undeclared entity &{};",
            clip(name)
        ))),
    }
}

fn trim_xml_ws(s: &str) -> &str {
    s.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r'))
}

/// `{ns}local` (or `local`) for messages, clipped.
fn describe(ns: Option<&str>, qname: &str) -> String {
    let local = qname.rsplit(':').next().unwrap_or(qname);
    match ns {
        Some(ns) => format!("{{{}}}{}", clip(ns), clip(local)),
        None => clip(local).to_string(),
    }
}

/// Copy an attribute value as written (still escaped) into a double-quoted attribute: only a `"`
/// (possible when the original used single quotes) and a stray `<` need escaping.
fn push_raw_attr_value(raw: &str, out: &mut Vec<u8>) {
    let mut last = 0;
    for (i, b) in raw.bytes().enumerate() {
        let rep: &[u8] = match b {
            b'"' => b"&quot;",
            b'<' => b"&lt;",
            _ => continue,
        };
        out.extend_from_slice(&raw.as_bytes()[last..i]);
        out.extend_from_slice(rep);
        last = i + 1;
    }
    out.extend_from_slice(&raw.as_bytes()[last..]);
}
