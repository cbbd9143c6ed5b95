//! Each endpoint's WSDL at `GET <path>?wsdl` (issue 16 item 4), from a real broker over HTTP:
//! served as XML, at the advertised address, behind the endpoint's own authentication, and only
//! for that query (any other GET is still the 405 of a SOAP endpoint). What generated clients do
//! with it is the interop suite's (`interop.rs`).

use base64::Engine as _;
use broker_tests::http::{self, request};
use broker_tests::{xml, BrokerProcess};

const EMBEDDED_DEFAULT: &str = include_str!("../../broker/src/default_config.toml");
const WSDL_NS: &str = "http://schemas.xmlsoap.org/wsdl/";
const SOAP_BINDING: &str = "http://schemas.xmlsoap.org/wsdl/soap/";

fn locations(wsdl: &xml::Element) -> Vec<String> {
    wsdl.descendants()
        .into_iter()
        .filter(|e| e.local == "address")
        .filter_map(|e| e.attr("location").map(str::to_string))
        .collect()
}

/// Protects the WSDL's serving: 200 `text/xml`, a `wsdl:definitions` in the endpoint's namespace
/// whose ports are at the broker's address, for `?wsdl` in any case; a GET without it is 405.
#[test]
fn the_wsdl_is_served_at_the_endpoint_and_names_its_address() {
    let b = BrokerProcess::start(EMBEDDED_DEFAULT);
    for query in ["?wsdl", "?WSDL"] {
        let r = http::get(&b.url(&format!("/soap{query}")));
        assert_eq!(r.status, 200, "{}", r.describe());
        assert_eq!(r.media_type().as_deref(), Some("text/xml"));
        let doc = xml::parse(&r.text()).expect("the WSDL is well-formed XML");
        assert!(doc.is(Some(WSDL_NS), "definitions"), "{}", r.text());
        assert_eq!(doc.attr("targetNamespace"), Some("urn:soap-broker:soap"));
        let at = locations(&doc);
        assert_eq!(
            at,
            vec![b.url("/soap"), b.url("/soap")],
            "SOAP 1.1 and 1.2 ports"
        );
        let soap11 = doc
            .descendants()
            .into_iter()
            .filter(|e| e.is(Some(SOAP_BINDING), "header"))
            .count();
        assert!(soap11 > 0, "the Session header is declared");
    }
    for target in ["/soap", "/soap?xsd", "/soap?wsdl=1"] {
        let r = http::get(&b.url(target));
        assert_eq!(r.status, 405, "{target}: {}", r.describe());
        assert_eq!(r.header("allow"), Some("POST"));
    }
    let dsml = http::get(&b.url("/dsml?wsdl"));
    assert_eq!(dsml.status, 200);
    assert_eq!(
        locations(&xml::parse(&dsml.text()).expect("XML")),
        vec![b.url("/dsml")]
    );
}

/// Protects the advertised address: a broker reached through another name (`--advertise`)
/// writes that name in its ports, so clients built from the WSDL call the right place.
#[test]
fn the_ports_carry_the_advertised_address() {
    let b = BrokerProcess::start_with_args(
        EMBEDDED_DEFAULT,
        &["--advertise", "http://broker-7.example:9443"],
    );
    let r = http::get(&b.url("/soap?wsdl"));
    let doc = xml::parse(&r.text()).expect("XML");
    assert_eq!(
        locations(&doc),
        vec![
            "http://broker-7.example:9443/soap".to_string(),
            "http://broker-7.example:9443/soap".to_string()
        ]
    );
}

/// Protects the endpoint's authentication on its WSDL: `/sql` requires a login, and so does its
/// WSDL (401 with a Basic challenge, then 200 with the sample user).
#[test]
fn an_endpoint_that_requires_a_login_requires_it_for_its_wsdl() {
    let b = BrokerProcess::start(EMBEDDED_DEFAULT);
    let r = http::get(&b.url("/sql?wsdl"));
    assert_eq!(r.status, 401, "{}", r.describe());
    assert!(r
        .header("www-authenticate")
        .is_some_and(|v| v.starts_with("Basic ")));
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("sample:sample")
    );
    let r = request(
        "GET",
        &b.url("/sql?wsdl"),
        &[("Authorization", auth.as_str())],
        Vec::new(),
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    let text = r.text();
    assert!(text.contains("name=\"sqlbatch\""), "{text}");
    assert!(text.contains("<soap:header message=\"tns:sqlSessionHeader\""));
}
