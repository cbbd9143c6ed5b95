//! The schema of a service's elements: open content for XML-only services, and for a record
//! service the types its layouts imply.
//!
//! A layout becomes a named complex type (its name), each item an element of its own name:
//!
//! - a group: a sequence of its items;
//! - text: `xsd:string` with `maxLength` the field's size (bytes, so an upper bound for multi-byte
//!   encodings);
//! - a number: `xsd:long` (or `xsd:integer` past 18 digits) without a scale, `xsd:decimal` with
//!   `fractionDigits` with one; `totalDigits` the picture's digits, `minInclusive 0` when unsigned;
//! - a table: `maxOccurs` its size;
//! - fillers: absent (they are not in the XML).
//!
//! A request's fields are all optional (an absent one takes its `VALUE`), a table's lower bound is
//! its `DEPENDING ON` minimum, and an item with redefinitions is a choice of them. A reply's fields
//! are all present, as the broker writes them: a redefined item by its first description only.

use crate::record_service::RecordService;
use records::{Item, Kind, Layout, Occurs};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The global names given so far in the endpoint's namespace (types and elements are separate
/// symbol spaces), so that a layout shared by two services is declared once.
#[derive(Default)]
pub struct TypeNames {
    types: BTreeMap<String, (Layout, &'static str)>,
    elements: BTreeMap<String, ()>,
}

impl TypeNames {
    /// The type name for `layout` used as `role` (request or reply): its own name, unless another
    /// layout (or the same in the other role) has it already. Returns the name and whether it is
    /// new.
    fn name_for(&mut self, layout: &Layout, role: &'static str) -> (String, bool) {
        let mut name = layout.name.clone();
        let mut n = 1;
        loop {
            match self.types.get(&name) {
                Some((known, r)) if known == layout && *r == role => return (name, false),
                Some(_) => {
                    n += 1;
                    name = format!(
                        "{}-{role}{}",
                        layout.name,
                        if n > 2 { n.to_string() } else { String::new() }
                    );
                }
                None => {
                    self.types.insert(name.clone(), (layout.clone(), role));
                    return (name, true);
                }
            }
        }
    }

    fn new_element(&mut self, name: &str) -> bool {
        self.elements.insert(name.to_string(), ()).is_none()
    }
}

/// An element whose content the broker passes through as it is.
pub fn open_element(out: &mut String, name: &str) {
    let _ = writeln!(
        out,
        "      <xsd:element name=\"{}\"><xsd:complexType><xsd:sequence><xsd:any namespace=\"##any\" processContents=\"lax\" minOccurs=\"0\" maxOccurs=\"unbounded\"/></xsd:sequence><xsd:anyAttribute namespace=\"##any\" processContents=\"lax\"/></xsd:complexType></xsd:element>",
        super::attr(name)
    );
}

/// The request, response and fault elements of a record service, and the types they use. Returns
/// the fault elements' names.
pub fn record_elements(
    out: &mut String,
    names: &mut TypeNames,
    record: &RecordService,
    response: &str,
) -> Vec<String> {
    let request_type = layout_type(out, names, &record.request, Role::Request);
    if names.new_element(&record.service) {
        let _ = writeln!(
            out,
            "      <xsd:element name=\"{}\" type=\"tns:{}\"/>",
            super::attr(&record.service),
            super::attr(&request_type)
        );
    }
    let answers: Vec<&crate::record_service::ReplyLayout> =
        record.replies.iter().filter(|r| !r.rule.fault).collect();
    let mut faults = Vec::new();
    for reply in record.replies.iter().filter(|r| r.rule.fault) {
        let ty = layout_type(out, names, &reply.layout, Role::Reply);
        if names.new_element(&reply.layout.name) {
            let _ = writeln!(
                out,
                "      <xsd:element name=\"{}\" type=\"tns:{}\"/>",
                super::attr(&reply.layout.name),
                super::attr(&ty)
            );
        }
        if !faults.contains(&reply.layout.name) {
            faults.push(reply.layout.name.clone());
        }
    }
    if !names.new_element(response) {
        return faults;
    }
    if record.answers_in_one_layout() {
        match answers.first() {
            Some(reply) => {
                let ty = layout_type(out, names, &reply.layout, Role::Reply);
                let _ = writeln!(
                    out,
                    "      <xsd:element name=\"{}\" type=\"tns:{}\"/>",
                    super::attr(response),
                    super::attr(&ty)
                );
            }
            // Every reply is a fault: the response element never comes, but the operation has one.
            None => {
                let _ = writeln!(
                    out,
                    "      <xsd:element name=\"{}\"><xsd:complexType><xsd:sequence/></xsd:complexType></xsd:element>",
                    super::attr(response)
                );
            }
        }
    } else {
        // Several answer layouts: the response holds the chosen one's element.
        let mut choice = String::new();
        for reply in &answers {
            let ty = layout_type(out, names, &reply.layout, Role::Reply);
            let _ = write!(
                choice,
                "<xsd:element name=\"{}\" type=\"tns:{}\"/>",
                super::attr(&reply.layout.name),
                super::attr(&ty)
            );
        }
        let _ = writeln!(
            out,
            "      <xsd:element name=\"{}\"><xsd:complexType><xsd:choice>{choice}</xsd:choice></xsd:complexType></xsd:element>",
            super::attr(response)
        );
    }
    faults
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Request,
    Reply,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Request => "request",
            Role::Reply => "reply",
        }
    }
}

/// Declare `layout`'s complex type (once) and return its name.
fn layout_type(out: &mut String, names: &mut TypeNames, layout: &Layout, role: Role) -> String {
    let (name, new) = names.name_for(layout, role.name());
    if new {
        let mut body = String::new();
        match &layout.root.kind {
            Kind::Group(items) => sequence(&mut body, items, role),
            // A record of one elementary item: the item is the record's only element.
            _ => sequence(&mut body, std::slice::from_ref(&layout.root), role),
        }
        let _ = writeln!(
            out,
            "      <xsd:complexType name=\"{}\">{body}</xsd:complexType>",
            super::attr(&name)
        );
    }
    name
}

fn sequence(out: &mut String, items: &[Item], role: Role) {
    out.push_str("<xsd:sequence>");
    for (index, item) in items.iter().enumerate() {
        if item.filler || item.redefines.is_some() {
            continue;
        }
        let family: Vec<&Item> = std::iter::once(item)
            .chain(
                items
                    .iter()
                    .filter(|i| i.redefines == Some(index) && !i.filler),
            )
            .collect();
        if role == Role::Request && family.len() > 1 {
            out.push_str("<xsd:choice minOccurs=\"0\">");
            for i in family {
                element(out, i, role);
            }
            out.push_str("</xsd:choice>");
        } else {
            element(out, item, role);
        }
    }
    out.push_str("</xsd:sequence>");
}

fn element(out: &mut String, item: &Item, role: Role) {
    let min = match (&item.occurs, role) {
        (Occurs::Depending { min, .. }, _) => *min,
        (_, Role::Request) => 0,
        (Occurs::Times(n), Role::Reply) => *n,
        (Occurs::Once, Role::Reply) => 1,
    };
    let max = item.occurs.max();
    let _ = write!(out, "<xsd:element name=\"{}\"", super::attr(&item.name));
    if min != 1 {
        let _ = write!(out, " minOccurs=\"{min}\"");
    }
    if max != 1 {
        let _ = write!(out, " maxOccurs=\"{max}\"");
    }
    out.push('>');
    match &item.kind {
        Kind::Group(children) => {
            out.push_str("<xsd:complexType>");
            sequence(out, children, role);
            out.push_str("</xsd:complexType>");
        }
        Kind::Text => {
            let _ = write!(
                out,
                "<xsd:simpleType><xsd:restriction base=\"xsd:string\"><xsd:maxLength value=\"{}\"/></xsd:restriction></xsd:simpleType>",
                item.size
            );
        }
        Kind::Number(pic) => {
            let base = match (pic.scale, pic.digits) {
                (0, 0..=18) => "xsd:long",
                (0, _) => "xsd:integer",
                _ => "xsd:decimal",
            };
            let _ = write!(
                out,
                "<xsd:simpleType><xsd:restriction base=\"{base}\"><xsd:totalDigits value=\"{}\"/>",
                pic.digits
            );
            if pic.scale > 0 {
                let _ = write!(out, "<xsd:fractionDigits value=\"{}\"/>", pic.scale);
            }
            if !pic.signed {
                out.push_str("<xsd:minInclusive value=\"0\"/>");
            }
            out.push_str("</xsd:restriction></xsd:simpleType>");
        }
    }
    out.push_str("</xsd:element>");
}
