//! The WSDL of the embedded default's endpoints, read back with an XML reader: what generated
//! clients rely on is there and consistent (every reference resolves to a declaration).

use super::*;
use crate::config::{Config, Overrides};
use quick_xml::events::Event;
use std::collections::BTreeSet;

fn wsdl_of(path: &str) -> String {
    let config = Config::embedded(&Overrides::default()).unwrap();
    let endpoint = config.endpoints.iter().find(|e| e.path == path).unwrap();
    let services: Vec<&ServiceConfig> = config
        .services
        .iter()
        .filter(|s| s.endpoint == path)
        .collect();
    let headers = match endpoint.dialect {
        crate::config::DialectKind::NonStop => &crate::dialect::nonstop::wsdl::HEADERS,
        crate::config::DialectKind::Dsml => &crate::dialect::dsml::wsdl::HEADERS,
        crate::config::DialectKind::SqlSession => &crate::dialect::sqlsession::wsdl::HEADERS,
    };
    document(endpoint, &services, headers, "http://127.0.0.1:8080")
}

/// Every start tag's (name, attributes), in order; panics if the document is not well formed.
fn tags(xml: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut reader = quick_xml::Reader::from_str(xml);
    reader.config_mut().check_end_names = true;
    let mut out = Vec::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => {
                let name = e.name().as_ref().to_string();
                let attrs = e
                    .attributes()
                    .map(|a| {
                        let a = a.unwrap();
                        (
                            a.key.as_ref().to_string(),
                            a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                                .unwrap()
                                .to_string(),
                        )
                    })
                    .collect();
                out.push((name, attrs));
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("not well formed: {e}\n{xml}"),
        }
    }
    out
}

fn attr_of<'a>(tag: &'a (String, Vec<(String, String)>), name: &str) -> Option<&'a str> {
    tag.1
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn every_nonstop_service_is_an_operation_with_the_session_header_and_the_fault() {
    let wsdl = wsdl_of("/soap");
    let tags = tags(&wsdl);
    let operations: BTreeSet<&str> = tags
        .iter()
        .filter(|t| t.0 == "wsdl:operation")
        .filter_map(|t| attr_of(t, "name"))
        .collect();
    for s in ["Echo", "Deposit", "CartAdd", "AccountInquiry"] {
        assert!(operations.contains(s), "{s} in {operations:?}");
    }
    // Both bindings, each operation with the Session header in and out, Encoding in.
    assert!(wsdl.contains("<soap:binding style=\"document\""));
    assert!(wsdl.contains("<soap12:binding style=\"document\""));
    let headers = tags.iter().filter(|t| t.0.ends_with(":header")).count();
    assert_eq!(
        headers,
        operations.len() * 2 * 3,
        "three soap:header per operation and binding"
    );
    assert!(wsdl.contains("<soap:address location=\"http://127.0.0.1:8080/soap\"/>"));
    assert!(wsdl.contains("<soap12:address location=\"http://127.0.0.1:8080/soap\"/>"));
    // The NonStop fault on every operation of both bindings; the record's fault layout on its own.
    let faults = tags
        .iter()
        .filter(|t| t.0 == "soap:fault" && attr_of(t, "name") == Some("NonStopFault"))
        .count();
    assert_eq!(faults, operations.len());
    assert!(wsdl
        .contains("<wsdl:fault name=\"ACCTINQ-ERRORFault\" message=\"tns:ACCTINQ-ERRORFault\"/>"));
}

#[test]
fn every_reference_resolves() {
    for path in ["/soap", "/dsml", "/sql"] {
        let wsdl = wsdl_of(path);
        let tags = tags(&wsdl);
        let declared = |kind: &str| -> BTreeSet<String> {
            tags.iter()
                .filter(|t| t.0 == kind)
                .filter_map(|t| attr_of(t, "name").map(str::to_string))
                .collect()
        };
        let messages = declared("wsdl:message");
        let elements = declared("xsd:element");
        let types = declared("xsd:complexType");
        for t in &tags {
            for (key, value) in &t.1 {
                let local = value.rsplit(':').next().unwrap_or(value).to_string();
                let ok = match (t.0.as_str(), key.as_str()) {
                    ("wsdl:input" | "wsdl:output" | "wsdl:fault", "message") | (_, "message") => {
                        messages.contains(&local)
                    }
                    ("wsdl:part", "element") => elements.contains(&local),
                    ("xsd:element", "type") if value.starts_with("tns:") => types.contains(&local),
                    _ => true,
                };
                assert!(ok, "{path}: {} {key}={value} refers to nothing", t.0);
            }
        }
    }
}

#[test]
fn a_record_service_is_typed_from_its_layouts() {
    let wsdl = wsdl_of("/soap");
    // The request: every field optional (defaults), text bounded, numbers with their digits.
    assert!(wsdl.contains("<xsd:element name=\"AccountInquiry\" type=\"tns:ACCTINQ-REQUEST\"/>"));
    assert!(wsdl.contains("<xsd:element name=\"ACCOUNT-NO\" minOccurs=\"0\"><xsd:simpleType><xsd:restriction base=\"xsd:long\"><xsd:totalDigits value=\"10\"/><xsd:minInclusive value=\"0\"/>"), "{wsdl}");
    assert!(wsdl.contains("<xsd:element name=\"BRANCH\" minOccurs=\"0\"><xsd:simpleType><xsd:restriction base=\"xsd:string\"><xsd:maxLength value=\"6\"/>"));
    // The reply: fields present, the table bounded, the packed balance with its scale.
    assert!(
        wsdl.contains("<xsd:element name=\"AccountInquiryResponse\" type=\"tns:ACCTINQ-REPLY\"/>")
    );
    assert!(wsdl.contains("<xsd:element name=\"TXN\" minOccurs=\"0\" maxOccurs=\"10\">"));
    assert!(wsdl.contains("<xsd:element name=\"BALANCE\"><xsd:simpleType><xsd:restriction base=\"xsd:decimal\"><xsd:totalDigits value=\"13\"/><xsd:fractionDigits value=\"2\"/></xsd:restriction>"));
    assert!(!wsdl.contains("FILLER"));
    // The error layout is a global element (the fault's detail).
    assert!(wsdl.contains("<xsd:element name=\"ACCTINQ-ERROR\" type=\"tns:ACCTINQ-ERROR\"/>"));
    // XML-only services are open.
    assert!(wsdl.contains("<xsd:element name=\"Echo\"><xsd:complexType><xsd:sequence><xsd:any"));
}

#[test]
fn dsml_is_soap_11_only_with_its_session_headers() {
    let wsdl = wsdl_of("/dsml");
    assert!(!wsdl.contains("soap12:binding"));
    assert!(wsdl.contains("targetNamespace=\"urn:oasis:names:tc:DSML:2:0:core\""));
    assert!(wsdl.contains("element=\"b1:batchResponse\""), "{wsdl}");
    for h in ["BeginSession", "Session", "EndSession"] {
        assert!(
            wsdl.contains(&format!("<soap:header message=\"tns:{h}Header\"")),
            "{h}"
        );
    }
    assert!(wsdl.contains("attributeFormDefault=\"qualified\""));
}

#[test]
fn base_names_are_identifiers() {
    assert_eq!(base_name("/soap"), "Soap");
    assert_eq!(base_name("/v1/accounts"), "V1Accounts");
    assert_eq!(base_name("/"), "Broker");
    assert_eq!(base_name("/2x"), "Broker2x");
}
