//! # The little XML a record needs: an element tree in, escaped text out
//!
//! A request's service element, read with quick-xml into names (local, without prefixes: the
//! broker has checked the service's namespace), text and children. Comments and processing
//! instructions are skipped. CDATA is text. Entity and character references are resolved.

use quick_xml::events::Event;

/// An element: its local name, its text (the concatenation of its text nodes) and its children.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub text: String,
    pub children: Vec<Element>,
}

/// The most nesting a record's XML may have: deeper than any layout's 49 levels is not a record.
const MAX_DEPTH: usize = 64;

impl Element {
    /// Read one element (the first in `xml`).
    pub fn parse(xml: &[u8]) -> Result<Element, String> {
        let mut reader = quick_xml::Reader::from_reader(xml);
        let mut stack: Vec<Element> = Vec::new();
        loop {
            match reader.read_event() {
                Ok(Event::Start(e)) => {
                    if stack.len() >= MAX_DEPTH {
                        return Err(format!("nested deeper than {MAX_DEPTH} elements"));
                    }
                    stack.push(Element {
                        name: e.local_name().into_inner().to_string(),
                        ..Element::default()
                    });
                }
                Ok(Event::Empty(e)) => {
                    let el = Element {
                        name: e.local_name().into_inner().to_string(),
                        ..Element::default()
                    };
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(el),
                        None => return Ok(el),
                    }
                }
                Ok(Event::End(_)) => {
                    let Some(done) = stack.pop() else {
                        return Err("an end tag without its start".to_string());
                    };
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(done),
                        None => return Ok(done),
                    }
                }
                Ok(Event::Text(t)) => {
                    if let Some(top) = stack.last_mut() {
                        top.text.push_str(&t);
                    }
                }
                Ok(Event::CData(c)) => {
                    if let Some(top) = stack.last_mut() {
                        top.text.push_str(&c);
                    }
                }
                Ok(Event::GeneralRef(r)) => {
                    let name: &str = &r;
                    let c = match name {
                        "lt" => '<',
                        "gt" => '>',
                        "amp" => '&',
                        "quot" => '"',
                        "apos" => '\'',
                        _ => match r.resolve_char_ref() {
                            Ok(Some(c)) => c,
                            _ => return Err(format!("&{name}; is not a reference XML defines")),
                        },
                    };
                    if let Some(top) = stack.last_mut() {
                        top.text.push(c);
                    }
                }
                Ok(Event::Eof) => return Err("no element".to_string()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

/// Append `text` escaped for element content.
pub fn escape_into(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_text_and_references() {
        let e = Element::parse(b"<a:Req xmlns:a=\"urn:x\"><A>x &amp; y</A><!-- c --><B/><C><![CDATA[<raw>]]></C></a:Req>")
            .expect("parsed");
        assert_eq!(e.name, "Req");
        let names: Vec<&str> = e.children.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["A", "B", "C"]);
        assert_eq!(e.children[0].text, "x & y");
        assert_eq!(e.children[2].text, "<raw>");
        let mut out = String::new();
        escape_into("a<b&c", &mut out);
        assert_eq!(out, "a&lt;b&amp;c");
        assert!(Element::parse(b"").is_err());
        assert!(Element::parse(&b"<a>".repeat(100)).is_err());
    }
}
