//! # Small XML helpers shared by the sample classes
//!
//! Requests are read with xmltree (see `echo.rs` for why that is acceptable behind the broker's
//! limits). Responses are *written* by hand with [`Writer`]: the output is a handful of elements,
//! and writing them directly keeps attribute order stable (xmltree keeps attributes in a
//! `HashMap`) and the namespace handling obvious:
//!
//! - the response element takes the request element's prefix and namespace, and declares that one
//!   namespace on itself, so the payload is self-contained;
//! - every child takes the same prefix (so `<l:Deposit xmlns:l="urn:l"><l:account>…` is answered
//!   with `<l:DepositResponse xmlns:l="urn:l"><l:account>…`, and a default namespace simply
//!   carries over to the unprefixed children);
//! - attributes are unqualified.

use super::Action;
use crate::ReplyStatus;
use bytes::Bytes;
use std::time::Duration;
use xmltree::{Element, XMLNode};

/// Parse a request payload; a parse error is a `Client` fault naming the problem.
pub fn parse(payload: &[u8]) -> Result<Element, Action> {
    Element::parse(payload).map_err(|e| {
        Action::fault(
            "Client",
            format!("the payload is not XML: {}", one_line(&e.to_string())),
        )
    })
}

/// The child elements of `parent` with this local name (any namespace).
pub fn children<'a>(parent: &'a Element, name: &'a str) -> impl Iterator<Item = &'a Element> {
    parent
        .children
        .iter()
        .filter_map(XMLNode::as_element)
        .filter(move |e| e.name == name)
}

/// Whether `parent` has a child element with this local name.
pub fn has_child(parent: &Element, name: &str) -> bool {
    children(parent, name).next().is_some()
}

/// The trimmed text of the single child element `name`: a `Client` fault when it is missing,
/// repeated, or holds elements instead of text.
pub fn required_text(parent: &Element, name: &str) -> Result<String, Action> {
    let mut found = children(parent, name);
    let Some(element) = found.next() else {
        return Err(Action::fault(
            "Client",
            format!("<{}> needs a <{name}> element", parent.name),
        ));
    };
    if found.next().is_some() {
        return Err(Action::fault(
            "Client",
            format!("<{}> has more than one <{name}> element", parent.name),
        ));
    }
    if element.children.iter().any(|n| n.as_element().is_some()) {
        return Err(Action::fault(
            "Client",
            format!("<{name}> must hold text, not elements"),
        ));
    }
    Ok(element
        .get_text()
        .map(|t| t.trim().to_string())
        .unwrap_or_default())
}

/// A value fit for a fault string or a log line: one line (header values cannot hold line breaks)
/// and bounded, so a hostile payload cannot make the answer unencodable or huge.
pub fn one_line(text: &str) -> String {
    const MAX: usize = 200;
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX)
        .collect();
    if text.chars().count() > MAX {
        out.push('…');
    }
    out
}

/// A successful reply carrying `payload`.
pub fn reply(status: ReplyStatus, payload: Bytes) -> Action {
    Action::Reply {
        status,
        payload,
        delay: Duration::ZERO,
    }
}

/// A server failure (not the client's fault): `REPLY` with `status: error`.
pub fn error(reason: impl Into<String>) -> Action {
    Action::Reply {
        status: ReplyStatus::Error(one_line(&reason.into())),
        payload: Bytes::new(),
        delay: Duration::ZERO,
    }
}

/// Writes a response element and its children in the request element's namespace.
pub struct Writer {
    out: String,
    prefix: Option<String>,
    /// `xmlns` or `xmlns:p` with its value, written on the first element only.
    declaration: Option<(String, String)>,
}

impl Writer {
    /// A writer whose elements take `like`'s prefix and namespace.
    pub fn like(like: &Element) -> Writer {
        let prefix = like.prefix.clone().filter(|p| !p.is_empty());
        let declaration = like
            .namespace
            .as_ref()
            .filter(|ns| !ns.is_empty())
            .map(|ns| {
                let attr = match &prefix {
                    Some(p) => format!("xmlns:{p}"),
                    None => "xmlns".to_string(),
                };
                (attr, ns.clone())
            });
        // A prefixed element without a namespace cannot happen in well-formed input; drop the
        // prefix rather than emit an undeclared one.
        let prefix = if declaration.is_some() { prefix } else { None };
        Writer {
            out: String::with_capacity(256),
            prefix,
            declaration,
        }
    }

    fn start(&mut self, name: &str, attributes: &[(&str, &str)]) {
        self.out.push('<');
        self.qname(name);
        if let Some((attr, ns)) = self.declaration.take() {
            self.attribute(&attr, &ns);
        }
        for (key, value) in attributes {
            self.attribute(key, value);
        }
    }

    fn qname(&mut self, name: &str) {
        if let Some(p) = &self.prefix {
            self.out.push_str(p);
            self.out.push(':');
        }
        self.out.push_str(name);
    }

    fn attribute(&mut self, key: &str, value: &str) {
        self.out.push(' ');
        self.out.push_str(key);
        self.out.push_str("=\"");
        escape_into(&mut self.out, value);
        self.out.push('"');
    }

    /// `<name attr="…">`
    pub fn open(&mut self, name: &str, attributes: &[(&str, &str)]) -> &mut Self {
        self.start(name, attributes);
        self.out.push('>');
        self
    }

    /// `</name>`
    pub fn close(&mut self, name: &str) -> &mut Self {
        self.out.push_str("</");
        self.qname(name);
        self.out.push('>');
        self
    }

    /// `<name attr="…"/>`
    pub fn empty(&mut self, name: &str, attributes: &[(&str, &str)]) -> &mut Self {
        self.start(name, attributes);
        self.out.push_str("/>");
        self
    }

    /// `<name>text</name>`
    pub fn leaf(&mut self, name: &str, text: &str) -> &mut Self {
        self.open(name, &[]);
        escape_into(&mut self.out, text);
        self.close(name)
    }

    pub fn finish(self) -> Bytes {
        Bytes::from(self.out)
    }
}

/// Escape text for element content and double-quoted attribute values alike.
fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            // Kept literally these would be normalised away by the reader (attribute values) or
            // turned into LF (CR): write them as character references.
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn element(xml: &str) -> Element {
        Element::parse(xml.as_bytes()).unwrap()
    }

    #[test]
    fn writes_in_the_request_namespace() {
        let mut w = Writer::like(&element(r#"<l:Deposit xmlns:l="urn:l"/>"#));
        w.open("DepositResponse", &[])
            .leaf("account", "a<&>\"b")
            .close("DepositResponse");
        assert_eq!(
            String::from_utf8(w.finish().to_vec()).unwrap(),
            r#"<l:DepositResponse xmlns:l="urn:l"><l:account>a&lt;&amp;&gt;&quot;b</l:account></l:DepositResponse>"#
        );
        let mut w = Writer::like(&element(r#"<Deposit xmlns="urn:d"/>"#));
        w.empty("X", &[("code", "53")]);
        assert_eq!(
            String::from_utf8(w.finish().to_vec()).unwrap(),
            r#"<X xmlns="urn:d" code="53"/>"#
        );
        let mut w = Writer::like(&element("<Deposit/>"));
        w.empty("X", &[]);
        assert_eq!(String::from_utf8(w.finish().to_vec()).unwrap(), "<X/>");
    }

    #[test]
    fn required_text_faults() {
        let root = element("<D><a> 1 </a><b>1</b><b>2</b><c><x/></c></D>");
        assert_eq!(required_text(&root, "a").ok(), Some("1".to_string()));
        for name in ["b", "c", "missing"] {
            assert!(matches!(
                required_text(&root, name),
                Err(Action::Reply {
                    status: ReplyStatus::Fault { .. },
                    ..
                })
            ));
        }
    }

    #[test]
    fn one_line_strips_breaks_and_bounds() {
        assert_eq!(one_line("a\nb"), "a b");
        assert_eq!(one_line(&"x".repeat(500)).chars().count(), 201);
    }
}
