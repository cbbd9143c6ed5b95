//! # WSDL: each endpoint describes itself at `GET <path>?wsdl`
//!
//! NonStop SOAP generated a WSDL and schemas from every service definition, and toolkits built
//! clients from them (JAX-WS's `wsimport`, gSOAP's `wsdl2h`, zeep, suds, node-soap, PHP's
//! SoapClient). This module writes the same from the configuration: one WSDL 1.1 document per
//! endpoint, document/literal, with
//!
//! - `wsdl:types`: one schema per namespace the endpoint's elements live in. A record service's
//!   request and response elements are typed from its layouts (`schema.rs`: text as bounded
//!   strings, numbers with their digits and scale, tables with their bounds, redefinitions as
//!   choices); an XML-only service's are open (`xsd:any`), since the broker passes their content
//!   through. The dialect's header blocks and its fault detail have schemas of their own.
//! - a message and a portType operation per service, a `wsdl:fault` for the dialect's fault
//!   detail (NonStop's `detailCode`/`detailString`) and one per fault layout of a record service;
//! - the dialect's header blocks as `soap:header` on every operation (NonStop's `Session` and
//!   `Encoding` in, `Session` out; DSML's `BeginSession`/`Session`/`EndSession`; sqlSession's
//!   `sqlSession`), so that generated clients send and read them;
//! - a SOAP 1.1 binding and, where the dialect speaks it, a SOAP 1.2 binding, each with its port at
//!   the broker's advertised address.
//!
//! What a dialect contributes is a [`Headers`] value from its own room
//! (`dialect/<name>/wsdl.rs`). The document is written once when the broker starts.

mod schema;

use crate::config::{EndpointConfig, ServiceConfig};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// What a dialect puts into its endpoints' WSDL.
pub struct Headers {
    /// The header blocks' namespace, and the prefix the document uses for it.
    pub prefix: &'static str,
    pub namespace: &'static str,
    /// The declarations of the header schema (inside its `xsd:schema`).
    pub schema: &'static str,
    /// Whether the header schema's attributes are namespace-qualified (DSML's `ad:SessionID`).
    pub qualified_attributes: bool,
    /// The header blocks, by element name, and whether requests and replies carry them.
    pub blocks: &'static [HeaderBlock],
    /// The dialect's own fault detail, when it has a fixed one.
    pub fault: Option<DialectFault>,
    /// Whether the dialect speaks SOAP 1.2 (a second binding).
    pub soap12: bool,
    /// The namespace of an XML-only service's elements (`None`: the endpoint's).
    pub body_namespace: fn(&str) -> Option<&'static str>,
    /// The response element's name for a service.
    pub response_name: fn(&str) -> String,
}

/// One header block.
pub struct HeaderBlock {
    pub element: &'static str,
    pub input: bool,
    pub output: bool,
}

/// A dialect's fault detail: the element the detail starts with, declared in a schema without a
/// target namespace (`schema` holds its declarations).
pub struct DialectFault {
    pub name: &'static str,
    pub element: &'static str,
    pub schema: &'static str,
}

const WSDL_NS: &str = "http://schemas.xmlsoap.org/wsdl/";
const SOAP11_BINDING_NS: &str = "http://schemas.xmlsoap.org/wsdl/soap/";
const SOAP12_BINDING_NS: &str = "http://schemas.xmlsoap.org/wsdl/soap12/";
const XSD_NS: &str = "http://www.w3.org/2001/XMLSchema";
const HTTP_TRANSPORT: &str = "http://schemas.xmlsoap.org/soap/http";

/// One operation as the document needs it.
struct Operation<'a> {
    service: &'a ServiceConfig,
    /// The prefix of the namespace its elements are in.
    prefix: String,
    response: String,
    /// Fault layouts of a record service: (element name, type name).
    faults: Vec<String>,
}

/// The WSDL of `endpoint`, whose services are `services`, reached at `address` (the broker's
/// advertised base URL).
pub fn document(
    endpoint: &EndpointConfig,
    services: &[&ServiceConfig],
    headers: &Headers,
    address: &str,
) -> String {
    let base = base_name(&endpoint.path);
    let tns = endpoint.namespace.as_str();
    // Namespaces of body elements, each with its prefix and its schema's declarations.
    let mut schemas: BTreeMap<String, (String, String)> = BTreeMap::new();
    schemas.insert(tns.to_string(), ("tns".into(), String::new()));
    let mut types = schema::TypeNames::default();
    let mut operations = Vec::new();
    for s in services {
        let ns = match &s.record {
            Some(_) => tns.to_string(),
            None => (headers.body_namespace)(&s.name).unwrap_or(tns).to_string(),
        };
        let next = schemas.len();
        let (prefix, decls) = schemas
            .entry(ns)
            .or_insert_with(|| (format!("b{next}"), String::new()));
        let response = match &s.record {
            Some(_) => format!("{}Response", s.name),
            None => (headers.response_name)(&s.name),
        };
        let faults = match &s.record {
            Some(record) => schema::record_elements(decls, &mut types, record, &response),
            None => {
                schema::open_element(decls, &s.name);
                schema::open_element(decls, &response);
                Vec::new()
            }
        };
        operations.push(Operation {
            service: s,
            prefix: prefix.clone(),
            response,
            faults,
        });
    }

    let mut w = String::with_capacity(8192);
    w.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = write!(
        w,
        "<wsdl:definitions name=\"{base}\" targetNamespace=\"{tns}\" xmlns:wsdl=\"{WSDL_NS}\" xmlns:soap=\"{SOAP11_BINDING_NS}\" xmlns:soap12=\"{SOAP12_BINDING_NS}\" xmlns:xsd=\"{XSD_NS}\" xmlns:{hp}=\"{hns}\"",
        base = attr(&base),
        tns = attr(tns),
        hp = headers.prefix,
        hns = headers.namespace,
    );
    for (ns, (prefix, _)) in &schemas {
        let _ = write!(w, " xmlns:{prefix}=\"{}\"", attr(ns));
    }
    w.push_str(">\n");
    let _ = writeln!(
        w,
        "  <wsdl:documentation>The {} endpoint {} of a soap-broker ({} dialect).</wsdl:documentation>",
        base,
        attr(&endpoint.path),
        endpoint.dialect.name()
    );

    // Types.
    w.push_str("  <wsdl:types>\n");
    for (ns, (_, decls)) in &schemas {
        if decls.is_empty() {
            continue;
        }
        let _ = writeln!(
            w,
            "    <xsd:schema targetNamespace=\"{}\" elementFormDefault=\"qualified\">\n{decls}    </xsd:schema>",
            attr(ns)
        );
    }
    let _ = writeln!(
        w,
        "    <xsd:schema targetNamespace=\"{}\" elementFormDefault=\"qualified\" attributeFormDefault=\"{}\">\n{}    </xsd:schema>",
        headers.namespace,
        if headers.qualified_attributes { "qualified" } else { "unqualified" },
        headers.schema
    );
    if let Some(f) = &headers.fault {
        let _ = writeln!(w, "    <xsd:schema>\n{}    </xsd:schema>", f.schema);
    }
    w.push_str("  </wsdl:types>\n");

    // Messages.
    for op in &operations {
        let name = attr(&op.service.name);
        let _ = writeln!(
            w,
            "  <wsdl:message name=\"{name}Request\"><wsdl:part name=\"parameters\" element=\"{p}:{name}\"/></wsdl:message>\n  <wsdl:message name=\"{name}Response\"><wsdl:part name=\"parameters\" element=\"{p}:{r}\"/></wsdl:message>",
            p = op.prefix,
            r = attr(&op.response),
        );
    }
    let mut fault_messages: Vec<&str> = Vec::new();
    for op in &operations {
        for f in &op.faults {
            if !fault_messages.contains(&f.as_str()) {
                fault_messages.push(f);
                let _ = writeln!(
                    w,
                    "  <wsdl:message name=\"{f}Fault\"><wsdl:part name=\"fault\" element=\"tns:{f}\"/></wsdl:message>",
                    f = attr(f)
                );
            }
        }
    }
    for b in headers.blocks {
        let _ = writeln!(
            w,
            "  <wsdl:message name=\"{e}Header\"><wsdl:part name=\"{e}\" element=\"{p}:{e}\"/></wsdl:message>",
            e = b.element,
            p = headers.prefix
        );
    }
    if let Some(f) = &headers.fault {
        // A schema without a target namespace: its elements are referred to without a prefix
        // (the document declares no default namespace).
        let _ = writeln!(
            w,
            "  <wsdl:message name=\"{n}\"><wsdl:part name=\"fault\" element=\"{e}\"/></wsdl:message>",
            n = f.name,
            e = f.element
        );
    }

    // The port type.
    let _ = writeln!(w, "  <wsdl:portType name=\"{base}PortType\">");
    for op in &operations {
        let name = attr(&op.service.name);
        let _ = write!(
            w,
            "    <wsdl:operation name=\"{name}\">\n      <wsdl:input message=\"tns:{name}Request\"/>\n      <wsdl:output message=\"tns:{name}Response\"/>\n"
        );
        for f in operation_faults(op, headers) {
            let _ = writeln!(
                w,
                "      <wsdl:fault name=\"{f}\" message=\"tns:{f}\"/>",
                f = attr(&f)
            );
        }
        w.push_str("    </wsdl:operation>\n");
    }
    w.push_str("  </wsdl:portType>\n");

    // The bindings and the ports.
    let mut versions = vec![("Soap11", "soap")];
    if headers.soap12 {
        versions.push(("Soap12", "soap12"));
    }
    for (version, b) in &versions {
        let _ = writeln!(
            w,
            "  <wsdl:binding name=\"{base}{version}Binding\" type=\"tns:{base}PortType\">\n    <{b}:binding style=\"document\" transport=\"{HTTP_TRANSPORT}\"/>"
        );
        for op in &operations {
            let name = attr(&op.service.name);
            let _ = writeln!(w, "    <wsdl:operation name=\"{name}\">");
            let required = if *b == "soap12" {
                " soapActionRequired=\"false\""
            } else {
                ""
            };
            let _ = writeln!(
                w,
                "      <{b}:operation soapAction=\"\"{required} style=\"document\"/>"
            );
            for (direction, wanted) in [("input", true), ("output", false)] {
                let _ = writeln!(
                    w,
                    "      <wsdl:{direction}>\n        <{b}:body use=\"literal\" parts=\"parameters\"/>"
                );
                for h in headers.blocks {
                    if (wanted && h.input) || (!wanted && h.output) {
                        let _ = writeln!(
                            w,
                            "        <{b}:header message=\"tns:{e}Header\" part=\"{e}\" use=\"literal\"/>",
                            e = h.element
                        );
                    }
                }
                let _ = writeln!(w, "      </wsdl:{direction}>");
            }
            for f in operation_faults(op, headers) {
                let _ = writeln!(
                    w,
                    "      <wsdl:fault name=\"{f}\"><{b}:fault name=\"{f}\" use=\"literal\"/></wsdl:fault>",
                    f = attr(&f)
                );
            }
            w.push_str("    </wsdl:operation>\n");
        }
        w.push_str("  </wsdl:binding>\n");
    }
    let location = format!("{}{}", address.trim_end_matches('/'), endpoint.path);
    let _ = writeln!(w, "  <wsdl:service name=\"{base}Service\">");
    for (version, b) in &versions {
        let _ = writeln!(
            w,
            "    <wsdl:port name=\"{base}{version}Port\" binding=\"tns:{base}{version}Binding\"><{b}:address location=\"{}\"/></wsdl:port>",
            attr(&location)
        );
    }
    w.push_str("  </wsdl:service>\n</wsdl:definitions>\n");
    w
}

/// The faults an operation declares: the dialect's, then its record service's fault layouts.
fn operation_faults(op: &Operation<'_>, headers: &Headers) -> Vec<String> {
    headers
        .fault
        .iter()
        .map(|f| f.name.to_string())
        .chain(op.faults.iter().map(|f| format!("{f}Fault")))
        .collect()
}

/// `/soap` → `Soap`, `/v1/accounts` → `V1Accounts`: the stem of the document's names.
fn base_name(path: &str) -> String {
    let mut out = String::new();
    for part in path.split(|c: char| !c.is_ascii_alphanumeric()) {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.push(first.to_ascii_uppercase());
            out.extend(chars);
        }
    }
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "Broker");
    }
    out
}

/// Text for an attribute value.
fn attr(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    crate::soap::escape_attr(text, &mut out);
    out
}

#[cfg(test)]
mod tests;
