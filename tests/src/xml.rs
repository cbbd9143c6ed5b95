//! A tiny namespace-aware DOM for reading replies in tests.
//!
//! Replies are small, so the whole document is read into [`Element`]s with quick-xml's namespace
//! reader; every element and attribute knows its namespace URI, local name and the prefix it was
//! written with, and every element knows the namespace bindings in scope (to resolve QNames that
//! appear in content, such as `faultcode` or `env:Value`).

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;
use quick_xml::XmlVersion;

/// One attribute (namespace declarations are not attributes here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub namespace: Option<String>,
    pub local: String,
    /// The name as written (`p:local`).
    pub qname: String,
    /// Unescaped, normalized value.
    pub value: String,
}

/// A child of an element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
}

/// An element with its namespace, attributes, children and the bindings in scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub namespace: Option<String>,
    pub prefix: Option<String>,
    pub local: String,
    pub attrs: Vec<Attr>,
    pub children: Vec<Node>,
    /// (prefix, URI) bindings in scope at this element, innermost last; `""` is the default namespace.
    pub in_scope: Vec<(String, String)>,
}

impl Element {
    /// Whether this element is `{namespace}local`.
    pub fn is(&self, namespace: Option<&str>, local: &str) -> bool {
        self.namespace.as_deref() == namespace && self.local == local
    }

    /// Child elements.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The first child element `{namespace}local`.
    pub fn child(&self, namespace: Option<&str>, local: &str) -> Option<&Element> {
        self.elements().find(|e| e.is(namespace, local))
    }

    /// Every child element `{namespace}local`.
    pub fn children_named<'a>(
        &'a self,
        namespace: Option<&'a str>,
        local: &'a str,
    ) -> impl Iterator<Item = &'a Element> + 'a {
        self.elements().filter(move |e| e.is(namespace, local))
    }

    /// The first child element with this local name, whatever its namespace.
    pub fn child_local(&self, local: &str) -> Option<&Element> {
        self.elements().find(|e| e.local == local)
    }

    /// Every descendant element (depth first, self excluded).
    pub fn descendants(&self) -> Vec<&Element> {
        let mut out = Vec::new();
        let mut stack: Vec<&Element> = self.elements().collect::<Vec<_>>();
        stack.reverse();
        while let Some(e) = stack.pop() {
            out.push(e);
            let mut kids: Vec<&Element> = e.elements().collect();
            kids.reverse();
            stack.extend(kids);
        }
        out
    }

    /// The value of the unqualified attribute `local`.
    pub fn attr(&self, local: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.namespace.is_none() && a.local == local)
            .map(|a| a.value.as_str())
    }

    /// The value of the attribute `{namespace}local`.
    pub fn attr_ns(&self, namespace: &str, local: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.namespace.as_deref() == Some(namespace) && a.local == local)
            .map(|a| a.value.as_str())
    }

    /// All text content, concatenated (descendants included).
    pub fn text(&self) -> String {
        let mut s = String::new();
        fn walk(e: &Element, s: &mut String) {
            for n in &e.children {
                match n {
                    Node::Text(t) => s.push_str(t),
                    Node::Element(c) => walk(c, s),
                }
            }
        }
        walk(self, &mut s);
        s
    }

    /// The namespace URI bound to `prefix` here (`""` for the default namespace).
    pub fn lookup_prefix(&self, prefix: &str) -> Option<&str> {
        self.in_scope
            .iter()
            .rev()
            .find(|(p, _)| p == prefix)
            .map(|(_, u)| u.as_str())
    }

    /// Resolve a QName found in this element's content or attributes (`p:local`, or `local` in the
    /// default namespace). Returns (namespace, local), or None when the prefix is not declared.
    pub fn resolve_qname(&self, qname: &str) -> Option<(Option<String>, String)> {
        let qname = qname.trim();
        match qname.split_once(':') {
            Some((p, l)) => self
                .lookup_prefix(p)
                .map(|u| (Some(u.to_string()), l.to_string())),
            None => Some((
                self.lookup_prefix("")
                    .filter(|u| !u.is_empty())
                    .map(str::to_string),
                qname.to_string(),
            )),
        }
    }

    /// A structural view without namespace-binding bookkeeping or prefixes, and with whitespace-only
    /// text dropped: two elements with equal shapes have the same names, attributes (by namespace and
    /// local name) and text, in the same order.
    pub fn shape(&self) -> Shape {
        Shape {
            namespace: self.namespace.clone(),
            local: self.local.clone(),
            attrs: {
                let mut a: Vec<(Option<String>, String, String)> = self
                    .attrs
                    .iter()
                    .map(|a| (a.namespace.clone(), a.local.clone(), a.value.clone()))
                    .collect();
                a.sort();
                a
            },
            children: self
                .children
                .iter()
                .filter_map(|n| match n {
                    Node::Element(e) => Some(ShapeNode::Element(e.shape())),
                    Node::Text(t) if t.trim().is_empty() => None,
                    Node::Text(t) => Some(ShapeNode::Text(t.clone())),
                })
                .collect(),
        }
    }
}

/// See [`Element::shape`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    pub namespace: Option<String>,
    pub local: String,
    pub attrs: Vec<(Option<String>, String, String)>,
    pub children: Vec<ShapeNode>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShapeNode {
    Element(Shape),
    Text(String),
}

/// Parse a whole document; returns its document element.
pub fn parse(text: &str) -> Result<Element, String> {
    let mut reader = NsReader::from_str(text);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut scope: Vec<(String, String)> =
        vec![("xml".into(), "http://www.w3.org/XML/1998/namespace".into())];
    let mut scope_marks: Vec<usize> = Vec::new();
    loop {
        let event = reader.read_event().map_err(|e| {
            format!(
                "not well-formed: {e} (near byte {})",
                reader.error_position()
            )
        })?;
        match event {
            Event::Start(e) => {
                scope_marks.push(scope.len());
                let el = element(&reader, &e, &mut scope)?;
                stack.push(el);
            }
            Event::Empty(e) => {
                let mark = scope.len();
                let el = element(&reader, &e, &mut scope)?;
                scope.truncate(mark);
                attach(&mut stack, &mut root, el)?;
            }
            Event::End(_) => {
                let el = stack.pop().ok_or("an end tag without a start tag")?;
                scope.truncate(scope_marks.pop().unwrap_or(0));
                attach(&mut stack, &mut root, el)?;
            }
            Event::Text(t) => push_text(&mut stack, &t.xml10_content()),
            Event::CData(c) => push_text(&mut stack, &c.xml10_content()),
            Event::GeneralRef(r) => {
                let s = match r
                    .resolve_char_ref()
                    .map_err(|e| format!("bad character reference: {e}"))?
                {
                    Some(c) => c.to_string(),
                    None => match r.xml10_content().as_ref() {
                        "amp" => "&".into(),
                        "lt" => "<".into(),
                        "gt" => ">".into(),
                        "quot" => "\"".into(),
                        "apos" => "'".into(),
                        other => return Err(format!("undeclared entity &{other};")),
                    },
                };
                push_text(&mut stack, &s);
            }
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(format!(
            "{} element(s) left open at the end of the document",
            stack.len()
        ));
    }
    root.ok_or_else(|| "no document element".to_string())
}

fn element(
    reader: &NsReader<&[u8]>,
    e: &BytesStart<'_>,
    scope: &mut Vec<(String, String)>,
) -> Result<Element, String> {
    // Bindings declared on this element.
    for a in e.attributes() {
        let a = a.map_err(|err| format!("bad attribute: {err}"))?;
        let key = a.key.into_inner();
        let value = a
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|err| format!("bad attribute value: {err}"))?;
        if key == "xmlns" {
            scope.push((String::new(), value.into_owned()));
        } else if let Some(p) = key.strip_prefix("xmlns:") {
            scope.push((p.to_string(), value.into_owned()));
        }
    }
    let resolver = reader.resolver();
    let (namespace, local) = match resolver.resolve_element(e.name()) {
        (ResolveResult::Bound(ns), l) => (
            Some(ns.into_inner().to_string()),
            l.into_inner().to_string(),
        ),
        (ResolveResult::Unbound, l) => (None, l.into_inner().to_string()),
        (ResolveResult::Unknown(p), _) => return Err(format!("undeclared prefix {p:?}")),
    };
    let mut attrs = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|err| format!("bad attribute: {err}"))?;
        if a.key.as_namespace_binding().is_some() {
            continue;
        }
        let value = a
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|err| format!("bad attribute value: {err}"))?;
        let (ns, l) = match resolver.resolve_attribute(a.key) {
            (ResolveResult::Bound(ns), l) => (
                Some(ns.into_inner().to_string()),
                l.into_inner().to_string(),
            ),
            (ResolveResult::Unbound, l) => (None, l.into_inner().to_string()),
            (ResolveResult::Unknown(p), _) => return Err(format!("undeclared prefix {p:?}")),
        };
        attrs.push(Attr {
            namespace: ns,
            local: l,
            qname: a.key.into_inner().to_string(),
            value: value.into_owned(),
        });
    }
    Ok(Element {
        namespace,
        prefix: e.name().prefix().map(|p| p.into_inner().to_string()),
        local,
        attrs,
        children: Vec::new(),
        in_scope: scope.clone(),
    })
}

fn attach(stack: &mut [Element], root: &mut Option<Element>, el: Element) -> Result<(), String> {
    match stack.last_mut() {
        Some(parent) => {
            parent.children.push(Node::Element(el));
            Ok(())
        }
        None if root.is_none() => {
            *root = Some(el);
            Ok(())
        }
        None => Err("a second document element".into()),
    }
}

fn push_text(stack: &mut [Element], s: &str) {
    if let Some(parent) = stack.last_mut() {
        if let Some(Node::Text(t)) = parent.children.last_mut() {
            t.push_str(s);
        } else {
            parent.children.push(Node::Text(s.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_namespaces_prefixes_and_references() {
        let doc = parse(
            r#"<?xml version="1.0"?><a:Root xmlns:a="urn:a" xmlns="urn:d"><b x="1" a:y="&lt;2&gt;">t&amp;u&#x41;</b><a:c/></a:Root>"#,
        )
        .expect("parses");
        assert!(doc.is(Some("urn:a"), "Root"));
        let b = doc
            .child(Some("urn:d"), "b")
            .expect("b in the default namespace");
        assert_eq!(b.attr("x"), Some("1"));
        assert_eq!(b.attr_ns("urn:a", "y"), Some("<2>"));
        assert_eq!(b.text(), "t&uA");
        assert!(doc.child(Some("urn:a"), "c").is_some());
        assert_eq!(
            b.resolve_qname("a:Q"),
            Some((Some("urn:a".into()), "Q".into()))
        );
        assert_eq!(b.resolve_qname("nope:Q"), None);
    }

    #[test]
    fn refuses_broken_documents() {
        assert!(parse("<a><b></a>").is_err());
        assert!(parse("<a>").is_err());
        assert!(parse("").is_err());
    }
}
