//! Tests of the envelope layer: every parsing rule in both versions, every limit on both sides of
//! its boundary, the W3C SOAP 1.2 conformance requests, and fault rendering. Every rendered
//! envelope is re-parsed with quick-xml to prove it well-formed with all prefixes declared.

use actix_web::http::StatusCode;
use quick_xml::events::Event;
use quick_xml::name::{QName as XQName, ResolveResult};
use quick_xml::reader::NsReader;

use super::*;

const TS: &str = "http://example.org/ts-tests";

fn parse(s: &str) -> Result<Envelope, SoapError> {
    parse_envelope(s.as_bytes(), &Limits::default(), &Roles::default())
}

fn parse_with(s: &str, limits: &Limits) -> Result<Envelope, SoapError> {
    parse_envelope(s.as_bytes(), limits, &Roles::default())
}

/// An envelope of `v` with prefix `s`, optional header content and body content.
fn env(v: SoapVersion, header: Option<&str>, body: &str) -> String {
    let h = header
        .map(|h| format!("<s:Header>{h}</s:Header>"))
        .unwrap_or_default();
    format!(
        "<s:Envelope xmlns:s=\"{}\">{h}<s:Body>{body}</s:Body></s:Envelope>",
        v.envelope_ns()
    )
}

const BOTH: [SoapVersion; 2] = [SoapVersion::V11, SoapVersion::V12];

fn expect_limit(r: Result<Envelope, SoapError>, name: &str) {
    match r {
        Err(SoapError::LimitExceeded { limit, .. }) => assert_eq!(limit, name),
        other => panic!("expected LimitExceeded({name}), got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// A small namespace-aware reader of our own output.

type Name = (Option<String>, String);

#[derive(Debug, Default)]
struct Node {
    ns: Option<String>,
    local: String,
    depth: usize,
    attrs: Vec<(Option<String>, String, String)>,
    /// The `qname` attribute, resolved in the element's scope.
    qname_attr: Option<Name>,
    text: String,
    /// The text read as a QName (faultcode, Value), resolved in the element's scope.
    text_qname: Option<Name>,
}

fn resolve(r: &ResolveResult<'_>, what: &str, doc: &str) -> Option<String> {
    match r {
        ResolveResult::Bound(ns) => Some(ns.into_inner().to_string()),
        ResolveResult::Unbound => None,
        ResolveResult::Unknown(p) => panic!("undeclared prefix {p:?} in {what}:\n{doc}"),
    }
}

/// Parse `xml` fully, asserting it is one well-formed UTF-8 document whose every prefix (in names
/// and in QName-valued content) is declared and in which no attribute is named `mustUnderstand`.
fn nodes(xml: &[u8]) -> Vec<Node> {
    let doc = std::str::from_utf8(xml).expect("output is UTF-8");
    let mut r = NsReader::from_str(doc);
    r.config_mut().enable_all_checks(true);
    let mut out: Vec<Node> = Vec::new();
    let mut stack: Vec<usize> = Vec::new();
    let mut roots = 0;
    loop {
        let ev = r
            .read_event()
            .unwrap_or_else(|e| panic!("not well-formed: {e}\n{doc}"));
        let (e, empty) = match ev {
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::End(_) => {
                let i = stack.pop().expect("balanced");
                let n = &mut out[i];
                if n.local == "faultcode" || n.local == "Value" {
                    let t = n.text.trim().to_string();
                    let (res, local) = r.resolver().resolve_element(XQName(&t));
                    n.text_qname = Some((resolve(&res, &t, doc), local.as_ref().to_string()));
                }
                continue;
            }
            Event::Text(t) => {
                if let Some(&i) = stack.last() {
                    out[i].text.push_str(&t);
                } else {
                    assert!(t.trim().is_empty(), "text outside the root in\n{doc}");
                }
                continue;
            }
            Event::CData(t) => {
                out[*stack.last().expect("inside root")].text.push_str(&t);
                continue;
            }
            Event::GeneralRef(g) => {
                let c = match &*g {
                    "lt" => '<',
                    "gt" => '>',
                    "amp" => '&',
                    "quot" => '"',
                    "apos" => '\'',
                    _ => g
                        .resolve_char_ref()
                        .ok()
                        .flatten()
                        .expect("known reference"),
                };
                out[*stack.last().expect("inside root")].text.push(c);
                continue;
            }
            Event::Eof => break,
            Event::Comment(_) => continue,
            other => panic!("unexpected {other:?} in output\n{doc}"),
        };
        if stack.is_empty() {
            roots += 1;
        }
        let (res, local) = r.resolver().resolve_element(e.name());
        let mut n = Node {
            ns: resolve(&res, "element", doc),
            local: local.as_ref().to_string(),
            depth: stack.len() + 1,
            ..Node::default()
        };
        for a in e.attributes() {
            let a = a.unwrap_or_else(|e| panic!("bad attribute {e} in\n{doc}"));
            if a.key.as_namespace_binding().is_some() {
                continue;
            }
            let (res, local) = r.resolver().resolve_attribute(a.key);
            let value = a
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .expect("attribute value")
                .into_owned();
            assert_ne!(
                local.as_ref(),
                "mustUnderstand",
                "mustUnderstand in output:\n{doc}"
            );
            if local.as_ref() == "qname" {
                let (qres, qlocal) = r.resolver().resolve_element(XQName(&value));
                n.qname_attr = Some((resolve(&qres, "qname", doc), qlocal.as_ref().to_string()));
            }
            n.attrs.push((
                resolve(&res, "attribute", doc),
                local.as_ref().to_string(),
                value,
            ));
        }
        out.push(n);
        if !empty {
            stack.push(out.len() - 1);
        }
    }
    assert!(stack.is_empty(), "unclosed elements in\n{doc}");
    assert_eq!(roots, 1, "exactly one root in\n{doc}");
    out
}

fn find<'a>(nodes: &'a [Node], ns: &str, local: &str) -> Vec<&'a Node> {
    nodes
        .iter()
        .filter(|n| n.ns.as_deref() == Some(ns) && n.local == local)
        .collect()
}

fn name(ns: &str, local: &str) -> Name {
    (Some(ns.to_string()), local.to_string())
}

/// The fault code of a rendered fault, as an expanded name.
fn fault_code(nodes: &[Node]) -> Name {
    if let Some(fc) = nodes.iter().find(|n| n.local == "faultcode") {
        assert!(fc.ns.is_none(), "SOAP 1.1 fault children are unqualified");
        return fc.text_qname.clone().expect("faultcode QName");
    }
    let code = nodes
        .iter()
        .position(|n| n.ns.as_deref() == Some(SOAP12_ENV_NS) && n.local == "Code")
        .expect("env:Code");
    let value = &nodes[code + 1];
    assert_eq!(value.local, "Value");
    value.text_qname.clone().expect("Value QName")
}

fn render(v: SoapVersion, f: &Fault) -> (Vec<u8>, Vec<Node>) {
    let mut out = Vec::new();
    write_fault(v, f, &mut out);
    let n = nodes(&out);
    (out, n)
}

// ---------------------------------------------------------------------------------------------
// Versions and structure

#[test]
fn both_versions_parse_with_their_namespace() {
    for v in BOTH {
        let e = parse(&env(v, None, "<m:Echo xmlns:m=\"urn:m\">hi</m:Echo>")).unwrap();
        assert_eq!(e.version, v);
        assert!(e.headers.is_empty());
        let b = e.body.unwrap();
        assert_eq!(b.namespace.as_deref(), Some("urn:m"));
        assert_eq!(b.local_name, "Echo");
        assert!(!b.is_empty);
        assert_eq!(
            &b.xml[..],
            format!(
                "<m:Echo xmlns:s=\"{}\" xmlns:m=\"urn:m\">hi</m:Echo>",
                v.envelope_ns()
            )
            .as_bytes()
        );
    }
    assert_eq!(SoapVersion::V11.content_type(), "text/xml; charset=utf-8");
    assert_eq!(
        SoapVersion::V12.content_type(),
        "application/soap+xml; charset=utf-8"
    );
    assert_eq!(SoapVersion::V11.envelope_ns(), SOAP11_ENV_NS);
    assert_eq!(SoapVersion::V12.envelope_ns(), SOAP12_ENV_NS);
}

#[test]
fn envelope_in_other_namespace_is_version_mismatch() {
    let r = parse("<e:Envelope xmlns:e=\"http://wrong-version/\"><e:Body/></e:Envelope>");
    assert!(
        matches!(r, Err(SoapError::VersionMismatch(Some(ref ns))) if ns == "http://wrong-version/")
    );
    let r = parse("<Envelope><Body/></Envelope>");
    assert!(matches!(r, Err(SoapError::VersionMismatch(None))), "{r:?}");
    // SOAP 1.1 namespace without its trailing slash (W3C T30).
    let r = parse(
        "<e:Envelope xmlns:e=\"http://schemas.xmlsoap.org/soap/envelope\"><e:Body/></e:Envelope>",
    );
    assert!(
        matches!(r, Err(SoapError::VersionMismatch(Some(_)))),
        "{r:?}"
    );
}

#[test]
fn other_document_element_is_not_envelope() {
    for v in BOTH {
        let r = parse(&format!("<s:Body xmlns:s=\"{}\"/>", v.envelope_ns()));
        assert!(
            matches!(r, Err(SoapError::NotEnvelope(ref w)) if w.contains("Body")),
            "{r:?}"
        );
    }
    assert!(matches!(
        parse("<html><body/></html>"),
        Err(SoapError::NotEnvelope(_))
    ));
}

#[test]
fn structure_of_envelope_is_enforced() {
    for v in BOTH {
        let ns = v.envelope_ns();
        let no_body = format!("<s:Envelope xmlns:s=\"{ns}\"><s:Header/></s:Envelope>");
        assert!(matches!(parse(&no_body), Err(SoapError::NoBody)));
        let empty_env = format!("<s:Envelope xmlns:s=\"{ns}\"/>");
        assert!(matches!(parse(&empty_env), Err(SoapError::NoBody)));
        let cases = [
            // Header after Body
            format!("<s:Envelope xmlns:s=\"{ns}\"><s:Body/><s:Header/></s:Envelope>"),
            // two Bodies
            format!("<s:Envelope xmlns:s=\"{ns}\"><s:Body/><s:Body/></s:Envelope>"),
            // two Headers
            format!("<s:Envelope xmlns:s=\"{ns}\"><s:Header/><s:Header/><s:Body/></s:Envelope>"),
            // a foreign element in the Envelope, before and after the Body
            format!(
                "<s:Envelope xmlns:s=\"{ns}\"><x:Extra xmlns:x=\"urn:x\"/><s:Body/></s:Envelope>"
            ),
            format!(
                "<s:Envelope xmlns:s=\"{ns}\"><s:Body/><x:Extra xmlns:x=\"urn:x\"/></s:Envelope>"
            ),
            // Body in no namespace
            format!("<s:Envelope xmlns:s=\"{ns}\"><Body/></s:Envelope>"),
            // text in the Envelope / Body
            format!("<s:Envelope xmlns:s=\"{ns}\">junk<s:Body/></s:Envelope>"),
            format!("<s:Envelope xmlns:s=\"{ns}\"><s:Body>junk</s:Body></s:Envelope>"),
            format!("<s:Envelope xmlns:s=\"{ns}\"><s:Header>junk</s:Header><s:Body/></s:Envelope>"),
        ];
        for c in &cases {
            let r = parse(c);
            assert!(
                matches!(r, Err(SoapError::InvalidEnvelope(_))),
                "{c}: {r:?}"
            );
            let f = r.unwrap_err().to_fault(v);
            assert_eq!(f.code, FaultCode::Sender);
        }
        // The message says what was found.
        let r = parse(&cases[3]).unwrap_err().to_string();
        assert!(r.contains("{urn:x}Extra"), "{r}");
    }
}

#[test]
fn prefixes_are_arbitrary() {
    // The envelope namespace under two prefixes (suds), the body in a default namespace (node-soap,
    // JAX-WS), a header block in a default namespace.
    let xml = format!(
        "<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"{n}\" xmlns:ns1=\"{n}\">\
           <ns1:Header><Session xmlns=\"urn:h\" SOAP-ENV:mustUnderstand=\"1\" SessionID=\"a\"/></ns1:Header>\
           <ns1:Body><Echo xmlns=\"urn:m\"><x>1</x></Echo></ns1:Body></SOAP-ENV:Envelope>",
        n = SOAP11_ENV_NS
    );
    let e = parse(&xml).unwrap();
    assert_eq!(e.version, SoapVersion::V11);
    assert_eq!(e.headers.len(), 1);
    let h = &e.headers[0];
    assert_eq!(
        (h.namespace.as_deref(), h.local_name.as_str()),
        (Some("urn:h"), "Session")
    );
    assert_eq!(h.prefix, None);
    assert!(h.must_understand);
    assert_eq!(h.attr(None, "SessionID"), Some("a"));
    let b = e.body.unwrap();
    assert_eq!(
        (b.namespace.as_deref(), b.local_name.as_str()),
        (Some("urn:m"), "Echo")
    );

    // A prefix that names the envelope elsewhere can name something else inside the body.
    let xml = format!(
        "<env:Envelope xmlns:env=\"{n}\"><env:Body><env:Echo xmlns:env=\"urn:other\"/></env:Body></env:Envelope>",
        n = SOAP12_ENV_NS
    );
    let b = parse(&xml).unwrap().body.unwrap();
    assert_eq!(b.namespace.as_deref(), Some("urn:other"));
    assert_eq!(&b.xml[..], b"<env:Echo xmlns:env=\"urn:other\"/>");
}

#[test]
fn encoding_style_and_xsi_type_are_tolerated() {
    for v in BOTH {
        let xml = format!(
            "<soap:Envelope xmlns:soap=\"{ns}\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
               xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" \
               soap:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\">\
             <soap:Body><m:Echo xmlns:m=\"urn:m\"><s xsi:type=\"xsd:string\">x</s></m:Echo></soap:Body></soap:Envelope>",
            ns = v.envelope_ns()
        );
        let b = parse(&xml).unwrap().body.unwrap();
        // xsi:type values are QNames: the xsd prefix travels with the fragment.
        let n = nodes(&b.xml);
        assert_eq!(n[0].local, "Echo");
        let s = std::str::from_utf8(&b.xml).unwrap();
        assert!(
            s.contains("xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\""),
            "{s}"
        );
        assert!(s.contains("xmlns:xsi="), "{s}");
    }
}

#[test]
fn bom_and_declaration_are_accepted() {
    let body = env(SoapVersion::V11, None, "<m:E xmlns:m=\"urn:m\"/>");
    let mut with_bom = b"\xEF\xBB\xBF<?xml version=\"1.0\" encoding=\"utf-8\"?>\n".to_vec();
    with_bom.extend_from_slice(body.as_bytes());
    let e = parse_envelope(&with_bom, &Limits::default(), &Roles::default()).unwrap();
    assert_eq!(e.body.unwrap().local_name, "E");
    let decl = format!("<?xml version='1.0' encoding='UTF-8' standalone='yes'?>{body}");
    assert!(parse(&decl).is_ok());
}

#[test]
fn only_utf8_is_accepted() {
    let body = env(
        SoapVersion::V11,
        None,
        "<m:E xmlns:m=\"urn:m\">caf\u{e9}</m:E>",
    );
    let mut latin1 = body.clone().into_bytes();
    let at = body.find('\u{e9}').unwrap();
    latin1.splice(at..at + 2, [0xE9u8]);
    match parse_envelope(&latin1, &Limits::default(), &Roles::default()) {
        Err(SoapError::NotUtf8 { offset }) => assert_eq!(offset, at),
        other => panic!("{other:?}"),
    }
    // UTF-16 with its BOM.
    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(body.encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    assert!(matches!(
        parse_envelope(&utf16, &Limits::default(), &Roles::default()),
        Err(SoapError::NotUtf8 { offset: 0 })
    ));
    // A declaration naming another encoding.
    let r = parse(&format!(
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>{body}"
    ));
    assert!(
        matches!(r, Err(SoapError::NotWellFormed(ref m)) if m.contains("only UTF-8")),
        "{r:?}"
    );
    // A control character.
    let r = parse(&env(
        SoapVersion::V11,
        None,
        "<m:E xmlns:m=\"urn:m\">\u{1}</m:E>",
    ));
    assert!(
        matches!(r, Err(SoapError::NotWellFormed(ref m)) if m.contains("U+0001")),
        "{r:?}"
    );
}

#[test]
fn dtd_is_refused_and_entities_never_expanded() {
    let laughs = format!(
        "<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n <!ENTITY lol \"lol\">\n \
         <!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n \
         <!ENTITY lol2 \"&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;\">\n \
         <!ENTITY lol9 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">\n]>\n{}",
        env(
            SoapVersion::V11,
            None,
            "<m:E xmlns:m=\"urn:m\">&lol9;</m:E>"
        )
    );
    assert!(matches!(parse(&laughs), Err(SoapError::Dtd)));
    // A DOCTYPE inside the envelope too.
    let inner = env(
        SoapVersion::V12,
        None,
        "<!DOCTYPE x><m:E xmlns:m=\"urn:m\"/>",
    );
    let r = parse(&inner);
    assert!(
        matches!(r, Err(SoapError::Dtd) | Err(SoapError::NotWellFormed(_))),
        "{r:?}"
    );
    // Without a DTD, an entity reference is undeclared, in text and in attribute values.
    for body in [
        "<m:E xmlns:m=\"urn:m\">&lol9;</m:E>",
        "<m:E xmlns:m=\"urn:m\" a=\"&lol9;\"/>",
    ] {
        let r = parse(&env(SoapVersion::V11, None, body));
        assert!(
            matches!(r, Err(SoapError::NotWellFormed(_))),
            "{body}: {r:?}"
        );
    }
    // Predefined entities and character references are fine.
    let b = parse(&env(
        SoapVersion::V11,
        None,
        "<m:E xmlns:m=\"urn:m\" a=\"&lt;&#65;\">&amp;&#x42;</m:E>",
    ))
    .unwrap()
    .body
    .unwrap();
    assert!(!b.is_empty);
    let r = parse(&env(
        SoapVersion::V11,
        None,
        "<m:E xmlns:m=\"urn:m\">&#0;</m:E>",
    ));
    assert!(matches!(r, Err(SoapError::NotWellFormed(_))), "{r:?}");
    assert_eq!(
        SoapError::Dtd.to_fault(SoapVersion::V11).code,
        FaultCode::Sender
    );
}

#[test]
fn processing_instructions_are_refused_but_comments_allowed() {
    for v in BOTH {
        let inside = env(v, None, "<?pi x?><m:E xmlns:m=\"urn:m\"/>");
        assert!(matches!(
            parse(&inside),
            Err(SoapError::ProcessingInstruction)
        ));
        let before = format!(
            "<?xml version=\"1.0\"?><?xml-stylesheet href=\"a\"?>{}",
            env(v, None, "")
        );
        assert!(matches!(
            parse(&before),
            Err(SoapError::ProcessingInstruction)
        ));
        let after = format!("{}<?pi?>", env(v, None, ""));
        assert!(matches!(
            parse(&after),
            Err(SoapError::ProcessingInstruction)
        ));
        let in_header = env(v, Some("<h:H xmlns:h=\"urn:h\"><?x?></h:H>"), "");
        assert!(matches!(
            parse(&in_header),
            Err(SoapError::ProcessingInstruction)
        ));
        let comments = format!(
            "<?xml version=\"1.0\"?><!-- a --><s:Envelope xmlns:s=\"{}\"><!-- b --><s:Header><!-- c --></s:Header>\
             <s:Body><!-- d --><m:E xmlns:m=\"urn:m\"><!-- e --></m:E></s:Body></s:Envelope><!-- f -->",
            v.envelope_ns()
        );
        let b = parse(&comments).unwrap().body.unwrap();
        assert!(b.is_empty, "a comment is not content");
        // An XML declaration anywhere but the start is not well-formed.
        let late = format!(" <?xml version=\"1.0\"?>{}", env(v, None, ""));
        assert!(matches!(parse(&late), Err(SoapError::NotWellFormed(_))));
    }
}

#[test]
fn malformed_xml_is_not_well_formed() {
    let full = env(SoapVersion::V12, None, "<m:E xmlns:m=\"urn:m\">x</m:E>");
    let cases = [
        full[..full.len() - 5].to_string(),                 // truncated
        full[..full.find("<m:E").unwrap() + 3].to_string(), // truncated in a tag
        full.replace("</m:E>", "</m:F>"),                   // mismatched end tag
        format!("{full}garbage"),                           // text after the root
        format!("{full}<again/>"),                          // a second root
        format!("junk{full}"),                              // text before the root
        full.replace("<m:E ", "<q:E "),                     // undeclared prefix
        full.replace("xmlns:m=\"urn:m\"", "xmlns:m=\"urn:m\" a=\"1\" a=\"2\""), // duplicate attribute
        String::new(),                                                          // nothing at all
        "<!-- only a comment -->".to_string(),
        format!("<![CDATA[ ]]>{full}"), // CDATA before the root
        format!("{full}&#32;"),         // a reference after it
        format!("<?xml encoding=\"UTF-8\"?>{full}"), // declaration without version
    ];
    for c in &cases {
        let r = parse(c);
        assert!(
            matches!(r, Err(SoapError::NotWellFormed(_))),
            "{c:?}: {r:?}"
        );
        assert_eq!(
            r.unwrap_err().to_fault(SoapVersion::V12).code,
            FaultCode::Sender
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Body

#[test]
fn body_element_is_self_contained() {
    // The prefix `m` and the default namespace are declared on the Envelope and Body, not on the
    // element; the element redeclares `r` itself.
    let xml = format!(
        "<s:Envelope xmlns:s=\"{n}\" xmlns:m=\"urn:m\" xmlns:r='urn:old'>\
           <s:Body xmlns=\"urn:default\">\n  <m:Echo r:a=\"1\" xmlns:r=\"urn:r\" b='say \"hi\"'><child/><r:x/></m:Echo>\n  <m:Second/>\
         </s:Body></s:Envelope>",
        n = SOAP11_ENV_NS
    );
    let b = parse(&xml).unwrap().body.unwrap();
    let s = std::str::from_utf8(&b.xml).unwrap();
    assert!(s.starts_with("<m:Echo "), "{s}");
    assert!(s.contains("xmlns:m=\"urn:m\""), "{s}");
    assert!(s.contains("xmlns=\"urn:default\""), "{s}");
    assert!(s.contains(&format!("xmlns:s=\"{SOAP11_ENV_NS}\"")), "{s}");
    assert_eq!(
        s.matches("xmlns:r=").count(),
        1,
        "own declaration not duplicated: {s}"
    );
    assert!(!s.contains("urn:old"), "{s}");
    // The element's own bytes are untouched after the injected declarations.
    assert!(
        s.ends_with(" r:a=\"1\" xmlns:r=\"urn:r\" b='say \"hi\"'><child/><r:x/></m:Echo>"),
        "{s}"
    );
    assert!(!s.contains("Second"));

    // Parsed alone, every name resolves to what it meant in the envelope.
    let n = nodes(&b.xml);
    assert_eq!(
        (n[0].ns.as_deref(), n[0].local.as_str()),
        (Some("urn:m"), "Echo")
    );
    assert_eq!(
        (n[1].ns.as_deref(), n[1].local.as_str()),
        (Some("urn:default"), "child")
    );
    assert_eq!(
        (n[2].ns.as_deref(), n[2].local.as_str()),
        (Some("urn:r"), "x")
    );
    assert!(n[0]
        .attrs
        .contains(&(Some("urn:r".into()), "a".into(), "1".into())));
}

#[test]
fn body_undeclared_default_namespace_is_respected() {
    // Body resets the default namespace: nothing may reintroduce the Envelope's.
    let xml = format!(
        "<Envelope xmlns=\"{n}\"><Body><E xmlns=\"\"/></Body></Envelope>",
        n = SOAP12_ENV_NS
    );
    let b = parse(&xml).unwrap().body.unwrap();
    assert_eq!(b.namespace, None);
    assert_eq!(&b.xml[..], b"<E xmlns=\"\"/>");
    // Here the unprefixed body element really is in the envelope namespace (odd, but legal XML).
    let xml = format!(
        "<Envelope xmlns=\"{n}\"><Body><E/></Body></Envelope>",
        n = SOAP12_ENV_NS
    );
    let b = parse(&xml).unwrap().body.unwrap();
    assert_eq!(b.namespace.as_deref(), Some(SOAP12_ENV_NS));
    assert_eq!(nodes(&b.xml)[0].ns.as_deref(), Some(SOAP12_ENV_NS));
}

#[test]
fn empty_body_and_empty_element() {
    for v in BOTH {
        let ns = v.envelope_ns();
        for xml in [
            env(v, None, ""),
            env(v, None, "\n   \t"),
            env(v, None, "<!-- nothing -->"),
            format!("<s:Envelope xmlns:s=\"{ns}\"><s:Body/></s:Envelope>"),
        ] {
            let e = parse(&xml).unwrap();
            assert!(e.body.is_none(), "{xml}");
        }
        for (body, empty) in [
            ("<m:E xmlns:m=\"urn:m\"/>", true),
            ("<m:E xmlns:m=\"urn:m\">  \n\t </m:E>", true),
            ("<m:E xmlns:m=\"urn:m\"><![CDATA[]]></m:E>", true),
            ("<m:E xmlns:m=\"urn:m\">x</m:E>", false),
            ("<m:E xmlns:m=\"urn:m\"> <c/> </m:E>", false),
            ("<m:E xmlns:m=\"urn:m\"><![CDATA[x]]></m:E>", false),
            ("<m:E xmlns:m=\"urn:m\">&amp;</m:E>", false),
            (
                "<m:E xmlns:m=\"urn:m\"/><m:F xmlns:m=\"urn:m\">text</m:F>",
                true,
            ),
        ] {
            let b = parse(&env(v, None, body)).unwrap().body.unwrap();
            assert_eq!(b.is_empty, empty, "{body}");
            assert_eq!(b.local_name, "E");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Headers

const H_NS: &str = "urn:h";

fn header_env(v: SoapVersion, attrs: &str) -> String {
    env(v, Some(&format!("<h:B xmlns:h=\"{H_NS}\" {attrs}/>")), "")
}

#[test]
fn targeting_soap11() {
    let v = SoapVersion::V11;
    let targeted = [
        "",
        "s:actor=\"http://schemas.xmlsoap.org/soap/actor/next\"",
        "s:actor=\" http://schemas.xmlsoap.org/soap/actor/next \"",
        "s:actor=\"\"",
        "actor=\"urn:someone-else\"", // unqualified: not the SOAP attribute
    ];
    for a in targeted {
        let e = parse(&header_env(v, a)).unwrap();
        assert_eq!(e.headers.len(), 1, "{a}");
    }
    for a in [
        "s:actor=\"urn:someone-else\"",
        // SOAP 1.2 roles mean nothing in SOAP 1.1.
        "s:actor=\"http://www.w3.org/2003/05/soap-envelope/role/ultimateReceiver\"",
    ] {
        let e = parse(&header_env(v, &format!("{a} s:mustUnderstand=\"1\""))).unwrap();
        assert!(e.headers.is_empty(), "{a}");
    }
    let roles = Roles {
        extra: vec!["urn:me".into()],
    };
    let e = parse_envelope(
        header_env(v, "s:actor=\"urn:me\"").as_bytes(),
        &Limits::default(),
        &roles,
    )
    .unwrap();
    assert_eq!(e.headers.len(), 1);
}

#[test]
fn targeting_soap12() {
    let v = SoapVersion::V12;
    for a in [
        "",
        "s:role=\"http://www.w3.org/2003/05/soap-envelope/role/next\"",
        "s:role=\"http://www.w3.org/2003/05/soap-envelope/role/ultimateReceiver\"",
    ] {
        let e = parse(&header_env(v, a)).unwrap();
        assert_eq!(e.headers.len(), 1, "{a}");
    }
    for a in [
        "s:role=\"http://www.w3.org/2003/05/soap-envelope/role/none\"",
        "s:role=\"http://example.org/ts-tests/B\"",
        "s:role=\"http://schemas.xmlsoap.org/soap/actor/next\"",
    ] {
        let e = parse(&header_env(v, &format!("{a} s:mustUnderstand=\"true\""))).unwrap();
        assert!(e.headers.is_empty(), "{a}");
    }
    let roles = Roles {
        extra: vec!["http://example.org/ts-tests/B".into()],
    };
    let xml = header_env(v, "s:role=\"http://example.org/ts-tests/B\"");
    assert_eq!(
        parse_envelope(xml.as_bytes(), &Limits::default(), &roles)
            .unwrap()
            .headers
            .len(),
        1
    );
}

#[test]
fn must_understand_values() {
    let ok: [(SoapVersion, &str, bool); 8] = [
        (SoapVersion::V11, "1", true),
        (SoapVersion::V11, "0", false),
        (SoapVersion::V12, "1", true),
        (SoapVersion::V12, "0", false),
        (SoapVersion::V12, "true", true),
        (SoapVersion::V12, "false", false),
        (SoapVersion::V12, " true ", true),
        (SoapVersion::V11, " 1 ", true),
    ];
    for (v, val, mu) in ok {
        let e = parse(&header_env(v, &format!("s:mustUnderstand=\"{val}\""))).unwrap();
        assert_eq!(e.headers[0].must_understand, mu, "{v} {val:?}");
    }
    let e = parse(&header_env(SoapVersion::V12, "")).unwrap();
    assert!(!e.headers[0].must_understand);
    for (v, val) in [
        (SoapVersion::V11, "true"),
        (SoapVersion::V11, "false"),
        (SoapVersion::V11, "yes"),
        (SoapVersion::V12, "wrong"),
        (SoapVersion::V12, "9"),
        (SoapVersion::V12, "TRUE"),
        (SoapVersion::V12, ""),
    ] {
        let r = parse(&header_env(v, &format!("s:mustUnderstand=\"{val}\"")));
        match r {
            Err(ref e @ SoapError::BadMustUnderstand(ref m)) => {
                assert!(m.contains("{urn:h}B"), "{m}");
                assert_eq!(e.to_fault(v).code, FaultCode::Sender);
            }
            other => panic!("{v} {val:?}: {other:?}"),
        }
    }
    // Only targeted blocks are validated.
    let xml = header_env(
        SoapVersion::V12,
        "s:role=\"urn:not-me\" s:mustUnderstand=\"wrong\"",
    );
    assert!(parse(&xml).unwrap().headers.is_empty());
    // An unqualified mustUnderstand is an ordinary attribute.
    let e = parse(&header_env(SoapVersion::V11, "mustUnderstand=\"banana\"")).unwrap();
    assert!(!e.headers[0].must_understand);
    assert_eq!(e.headers[0].attr(None, "mustUnderstand"), Some("banana"));
}

#[test]
fn header_block_fields_and_echoable_xml() {
    let xml = format!(
        "<soap:Envelope xmlns:soap=\"{n}\" xmlns:x=\"urn:x\">\
           <soap:Header>\
             <ns:Session xmlns:ns=\"urn:compaq_nsk_oss_SoapHeader\" soap:mustUnderstand=\"1\" \
                soap:actor=\"http://schemas.xmlsoap.org/soap/actor/next\" SessionID=\"a&amp;b&lt;c\" \
                x:extra='q\"uote' ns:q=\"2\"><ns:Child>t</ns:Child></ns:Session>\
             <x:Other/>\
           </soap:Header><soap:Body/></soap:Envelope>",
        n = SOAP11_ENV_NS
    );
    let e = parse(&xml).unwrap();
    assert!(e.body.is_none());
    assert_eq!(e.headers.len(), 2);
    let h = &e.headers[0];
    assert_eq!(
        h.namespace.as_deref(),
        Some("urn:compaq_nsk_oss_SoapHeader")
    );
    assert_eq!(h.local_name, "Session");
    assert_eq!(h.prefix.as_deref(), Some("ns"));
    assert!(h.must_understand);
    assert_eq!(
        h.attributes,
        vec![
            Attribute {
                namespace: None,
                local_name: "SessionID".into(),
                value: "a&b<c".into()
            },
            Attribute {
                namespace: Some("urn:x".into()),
                local_name: "extra".into(),
                value: "q\"uote".into()
            },
            Attribute {
                namespace: Some("urn:compaq_nsk_oss_SoapHeader".into()),
                local_name: "q".into(),
                value: "2".into()
            },
        ]
    );
    assert_eq!(h.attr(Some("urn:x"), "extra"), Some("q\"uote"));
    assert_eq!(
        h.qname(),
        QName {
            namespace: Some("urn:compaq_nsk_oss_SoapHeader".into()),
            prefix: Some("ns".into()),
            local_name: "Session".into()
        }
    );
    // The block's xml: self-contained, the SOAP attributes gone, the rest as written.
    let s = std::str::from_utf8(&h.xml).unwrap();
    assert!(!s.contains("mustUnderstand") && !s.contains("actor"), "{s}");
    assert!(s.contains("SessionID=\"a&amp;b&lt;c\""), "{s}");
    assert!(s.contains("x:extra=\"q&quot;uote\""), "{s}");
    assert!(s.ends_with("><ns:Child>t</ns:Child></ns:Session>"), "{s}");
    let n = nodes(&h.xml); // also proves no mustUnderstand survives
    assert_eq!(n[0].local, "Session");
    assert!(n[0]
        .attrs
        .contains(&(Some("urn:x".into()), "extra".into(), "q\"uote".into())));
    assert_eq!(
        (n[1].ns.as_deref(), n[1].local.as_str()),
        (Some("urn:compaq_nsk_oss_SoapHeader"), "Child")
    );
    // A block without SOAP attributes keeps its bytes, plus declarations.
    let o = std::str::from_utf8(&e.headers[1].xml).unwrap();
    assert!(
        o.starts_with("<x:Other ") && o.ends_with("/>") && o.contains("xmlns:x=\"urn:x\""),
        "{o}"
    );
    assert_eq!(e.headers_named(Some("urn:x"), "Other").count(), 1);
    // A response can carry it as is.
    let mut out = Vec::new();
    write_response(SoapVersion::V11, &[s], b"", &mut out);
    nodes(&out);
}

#[test]
fn duplicate_soap_attribute_via_two_prefixes() {
    let xml = format!(
        "<a:Envelope xmlns:a=\"{n}\" xmlns:b=\"{n}\"><a:Header>\
           <h:H xmlns:h=\"urn:h\" a:mustUnderstand=\"1\" b:mustUnderstand=\"0\"/></a:Header><a:Body/></a:Envelope>",
        n = SOAP12_ENV_NS
    );
    assert!(matches!(parse(&xml), Err(SoapError::NotWellFormed(_))));
}

#[test]
fn check_must_understand_lists_every_block() {
    let xml = env(
        SoapVersion::V12,
        Some(
            "<a:One xmlns:a=\"urn:a\" s:mustUnderstand=\"1\"/>\
             <a:Known xmlns:a=\"urn:a\" s:mustUnderstand=\"true\"/>\
             <Two xmlns=\"urn:b\" s:mustUnderstand=\"1\"/>\
             <a:Optional xmlns:a=\"urn:a\"/>\
             <a:Elsewhere xmlns:a=\"urn:a\" s:mustUnderstand=\"1\" s:role=\"urn:other\"/>",
        ),
        "",
    );
    let e = parse(&xml).unwrap();
    assert_eq!(e.headers.len(), 4);
    let r = check_must_understand(&e, |ns, local| ns == Some("urn:a") && local == "Known");
    let Err(SoapError::MustUnderstand(list)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(
        list,
        vec![
            QName {
                namespace: Some("urn:a".into()),
                prefix: Some("a".into()),
                local_name: "One".into()
            },
            QName {
                namespace: Some("urn:b".into()),
                prefix: None,
                local_name: "Two".into()
            },
        ]
    );
    assert!(check_must_understand(&e, |_, _| true).is_ok());

    // Rendered in 1.2: one NotUnderstood per block, each qname resolvable; `Two` had a default
    // namespace, so a prefix is invented.
    let err = SoapError::MustUnderstand(list);
    let f = err.to_fault(SoapVersion::V12);
    assert_eq!(
        f.status(SoapVersion::V12),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let (out, n) = render(SoapVersion::V12, &f);
    assert_eq!(fault_code(&n), name(SOAP12_ENV_NS, "MustUnderstand"));
    let nu: Vec<_> = find(&n, SOAP12_ENV_NS, "NotUnderstood")
        .iter()
        .map(|n| n.qname_attr.clone().unwrap())
        .collect();
    assert_eq!(nu, vec![name("urn:a", "One"), name("urn:b", "Two")]);
    let s = String::from_utf8(out).unwrap();
    assert!(s.contains("qname=\"a:One\" xmlns:a=\"urn:a\""), "{s}");
    assert!(s.contains("qname=\"ns1:Two\" xmlns:ns1=\"urn:b\""), "{s}");
    // In 1.1 there is no NotUnderstood header; the faultstring names the blocks.
    let f = err.to_fault(SoapVersion::V11);
    let (out, n) = render(SoapVersion::V11, &f);
    assert_eq!(fault_code(&n), name(SOAP11_ENV_NS, "MustUnderstand"));
    let s = String::from_utf8(out).unwrap();
    assert!(!s.contains("NotUnderstood") && !s.contains("Header"), "{s}");
    assert!(
        s.contains("<faultcode>SOAP-ENV:MustUnderstand</faultcode>"),
        "{s}"
    );
    assert!(s.contains("{urn:a}One") && s.contains("{urn:b}Two"), "{s}");
}

// ---------------------------------------------------------------------------------------------
// Limits

#[test]
fn limit_max_body_bytes() {
    let xml = env(SoapVersion::V11, None, "");
    let limits = Limits {
        max_body_bytes: xml.len(),
        ..Limits::default()
    };
    assert!(parse_with(&xml, &limits).is_ok());
    let limits = Limits {
        max_body_bytes: xml.len() - 1,
        ..Limits::default()
    };
    expect_limit(parse_with(&xml, &limits), "max_body_bytes");
}

fn nested(n: usize) -> String {
    format!("{}{}", "<a>".repeat(n), "</a>".repeat(n))
}

#[test]
fn limit_max_depth() {
    // Envelope 1, Body 2, then the nest.
    let limits = Limits {
        max_depth: 10,
        ..Limits::default()
    };
    for v in BOTH {
        assert!(parse_with(&env(v, None, &nested(8)), &limits).is_ok());
        expect_limit(parse_with(&env(v, None, &nested(9)), &limits), "max_depth");
        // An empty-element tag counts as a level too.
        let e = format!("{}<b/>{}", "<a>".repeat(7), "</a>".repeat(7));
        assert!(parse_with(&env(v, None, &e), &limits).is_ok());
        let e = format!("{}<b/>{}", "<a>".repeat(8), "</a>".repeat(8));
        expect_limit(parse_with(&env(v, None, &e), &limits), "max_depth");
    }
}

#[test]
fn deep_nesting_fails_fast_and_parses_without_stack_when_allowed() {
    let xml = env(SoapVersion::V12, None, &nested(10_000));
    let t = std::time::Instant::now();
    expect_limit(parse(&xml), "max_depth");
    assert!(t.elapsed() < std::time::Duration::from_secs(1));

    // With the limit raised, the same message parses on a 128 KiB stack: nothing recurses.
    let limits = Limits {
        max_depth: 20_000,
        ..Limits::default()
    };
    let e = std::thread::Builder::new()
        .stack_size(128 * 1024)
        .spawn(move || parse_with(&xml, &limits).map(|e| e.body.map(|b| b.xml)))
        .unwrap()
        .join()
        .expect("no stack overflow");
    let body = e.unwrap().unwrap();
    assert!(body.ends_with(&nested(10_000).as_bytes()[2..]));
}

#[test]
fn limit_max_attributes() {
    let attrs = |n: usize| (0..n).map(|i| format!(" a{i}=\"v\"")).collect::<String>();
    let limits = Limits {
        max_attributes: 5,
        ..Limits::default()
    };
    for v in BOTH {
        // Body element (no declarations of its own: the ns comes from the Envelope).
        let ok = env(v, None, &format!("<s:X{}/>", attrs(5)));
        // Bodies in the envelope namespace are odd but fine for counting.
        assert!(parse_with(&ok, &limits).is_ok());
        expect_limit(
            parse_with(&env(v, None, &format!("<s:X{}/>", attrs(6))), &limits),
            "max_attributes",
        );
        // Deep inside, and on a header block; namespace declarations count.
        expect_limit(
            parse_with(
                &env(
                    v,
                    None,
                    &format!("<m:E xmlns:m=\"urn:m\"><i{}/></m:E>", attrs(6)),
                ),
                &limits,
            ),
            "max_attributes",
        );
        expect_limit(
            parse_with(
                &env(
                    v,
                    Some(&format!("<h:H xmlns:h=\"urn:h\"{}/>", attrs(5))),
                    "",
                ),
                &limits,
            ),
            "max_attributes",
        );
        assert!(parse_with(
            &env(
                v,
                Some(&format!("<h:H xmlns:h=\"urn:h\"{}/>", attrs(4))),
                ""
            ),
            &limits
        )
        .is_ok());
    }
}

#[test]
fn hundred_thousand_attributes_on_one_element() {
    let attrs: String = (0..100_000).map(|i| format!(" a{i}=\"v\"")).collect();
    let xml = env(
        SoapVersion::V11,
        None,
        &format!("<m:E xmlns:m=\"urn:m\"{attrs}/>"),
    );
    let limits = Limits {
        max_body_bytes: 4 << 20,
        ..Limits::default()
    };
    let t = std::time::Instant::now();
    expect_limit(parse_with(&xml, &limits), "max_attributes");
    assert!(t.elapsed() < std::time::Duration::from_secs(1));
}

#[test]
fn limit_max_header_blocks() {
    let blocks = |n: usize| "<h:B xmlns:h=\"urn:h\" s:role=\"urn:not-me\"/>".repeat(n);
    let limits = Limits {
        max_header_blocks: 3,
        ..Limits::default()
    };
    // Untargeted blocks count too; SOAP 1.1 has no role, so use V12 for both shapes.
    assert!(parse_with(&env(SoapVersion::V12, Some(&blocks(3)), ""), &limits).is_ok());
    expect_limit(
        parse_with(&env(SoapVersion::V12, Some(&blocks(4)), ""), &limits),
        "max_header_blocks",
    );
    let targeted = |n: usize| "<h:B xmlns:h=\"urn:h\"/>".repeat(n);
    assert_eq!(
        parse_with(&env(SoapVersion::V11, Some(&targeted(3)), ""), &limits)
            .unwrap()
            .headers
            .len(),
        3
    );
    expect_limit(
        parse_with(&env(SoapVersion::V11, Some(&targeted(4)), ""), &limits),
        "max_header_blocks",
    );
    // Children of a block are not blocks.
    let nested_children = format!("<h:B xmlns:h=\"urn:h\">{}</h:B>", "<c/>".repeat(10));
    assert!(parse_with(&env(SoapVersion::V11, Some(&nested_children), ""), &limits).is_ok());
}

#[test]
fn limit_max_name_len() {
    let limits = Limits {
        max_name_len: 20,
        ..Limits::default()
    };
    let n20 = "m:".to_string() + &"x".repeat(18);
    let n21 = "m:".to_string() + &"x".repeat(19);
    for v in BOTH {
        let el = |n: &str| env(v, None, &format!("<{n} xmlns:m=\"urn:m\"/>"));
        assert!(parse_with(&el(&n20), &limits).is_ok());
        expect_limit(parse_with(&el(&n21), &limits), "max_name_len");
        let at = |n: &str| {
            env(
                v,
                None,
                &format!("<m:E xmlns:m=\"urn:m\"><i {n}=\"1\"/></m:E>"),
            )
        };
        assert!(parse_with(&at(&n20), &limits).is_ok());
        expect_limit(parse_with(&at(&n21), &limits), "max_name_len");
    }
}

#[test]
fn limit_max_elements() {
    // Envelope + Body + E = 3, plus n children.
    let limits = Limits {
        max_elements: 10,
        ..Limits::default()
    };
    let body = |n: usize| format!("<m:E xmlns:m=\"urn:m\">{}</m:E>", "<c/>".repeat(n));
    for v in BOTH {
        assert!(parse_with(&env(v, None, &body(7)), &limits).is_ok());
        expect_limit(parse_with(&env(v, None, &body(8)), &limits), "max_elements");
    }
}

#[test]
fn too_many_namespace_bindings() {
    let decls: String = (0..MAX_NAMESPACE_BINDINGS + 1)
        .map(|i| format!(" xmlns:p{i}=\"urn:{i}\""))
        .collect();
    let limits = Limits {
        max_attributes: 1000,
        ..Limits::default()
    };
    let r = parse_with(
        &env(
            SoapVersion::V11,
            None,
            &format!("<m:E xmlns:m=\"urn:m\"{decls}/>"),
        ),
        &limits,
    );
    assert!(
        matches!(r, Err(SoapError::TooManyNamespaces { .. })),
        "{r:?}"
    );
}

#[test]
fn limit_errors_name_the_limit_in_the_fault() {
    let e = SoapError::LimitExceeded {
        limit: "max_depth",
        max: 64,
    };
    assert_eq!(e.limit(), Some("max_depth"));
    let (out, n) = render(SoapVersion::V11, &e.to_fault(SoapVersion::V11));
    assert_eq!(fault_code(&n), name(SOAP11_ENV_NS, "Client"));
    assert!(String::from_utf8(out).unwrap().contains("max_depth = 64"));
}

// ---------------------------------------------------------------------------------------------
// W3C SOAP 1.2 test collection (Axis2 copy), read where it lives.

fn conformance_request(t: &str) -> Vec<u8> {
    let p = format!(
        "{}/../../shared/conformance/soap12/RequestMessages_SOAP12Req{t}.xml",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// Run a conformance request through parse + mustUnderstand (nothing of ts-tests understood) and
/// render the resulting fault as the reply to a SOAP 1.2 request would be.
fn conformance_fault(t: &str, extra_roles: &[&str]) -> (Fault, SoapVersion, Vec<Node>) {
    let roles = Roles {
        extra: extra_roles.iter().map(|s| s.to_string()).collect(),
    };
    let err = match parse_envelope(&conformance_request(t), &Limits::default(), &roles) {
        Ok(env) => {
            assert_eq!(env.version, SoapVersion::V12, "{t}");
            check_must_understand(&env, |ns, _| ns != Some(TS)).expect_err(t)
        }
        Err(e) => e,
    };
    let fault = err.to_fault(SoapVersion::V12);
    let wire = fault.wire_version(SoapVersion::V12);
    let (_, nodes) = render(SoapVersion::V12, &fault);
    (fault, wire, nodes)
}

#[test]
fn w3c_must_understand_cases() {
    let cases: [(&str, &[&str]); 7] = [
        ("T12", &[]),
        ("T13", &[]),
        ("T16", &["http://example.org/ts-tests/C"]),
        ("T17_A", &[]),
        ("T21_A", &["http://example.org/ts-tests/B"]),
        ("T35", &[]),
        ("T36", &[]),
    ];
    for (t, roles) in cases {
        let (f, wire, n) = conformance_fault(t, roles);
        assert_eq!(f.code, FaultCode::MustUnderstand, "{t}");
        assert_eq!(wire, SoapVersion::V12);
        assert_eq!(
            f.status(SoapVersion::V12),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(n[0].ns.as_deref(), Some(SOAP12_ENV_NS));
        assert_eq!(fault_code(&n), name(SOAP12_ENV_NS, "MustUnderstand"), "{t}");
        let nu = find(&n, SOAP12_ENV_NS, "NotUnderstood");
        assert_eq!(nu.len(), 1, "{t}: exactly one NotUnderstood");
        assert_eq!(nu[0].qname_attr, Some(name(TS, "Unknown")), "{t}");
        assert!(nu[0].depth == 3, "NotUnderstood is a header block");
    }
    // Without its role, T16's block is for someone else: no fault at all.
    let env = parse_envelope(
        &conformance_request("T16"),
        &Limits::default(),
        &Roles::default(),
    )
    .unwrap();
    assert!(env.headers.is_empty());
    // T21_A as node C: `Unknown` is B's, `echoOk` is C's and mandatory.
    let roles = Roles {
        extra: vec!["http://example.org/ts-tests/C".into()],
    };
    let env = parse_envelope(&conformance_request("T21_A"), &Limits::default(), &roles).unwrap();
    assert_eq!(env.headers.len(), 1);
    assert_eq!(env.headers[0].local_name, "echoOk");
}

#[test]
fn w3c_sender_cases() {
    // T23, T39: mustUnderstand not a boolean; T25: a DTD; T26: a processing instruction. Our spec
    // makes a PI a Sender fault, although the Axis2 copy's expected reply to T26 is a normal
    // response (SOAP 1.2 Part 1 §5: an envelope MUST NOT contain PIs; WS-I BP R1009).
    for (t, want) in [
        ("T23", "BadMustUnderstand"),
        ("T39", "BadMustUnderstand"),
        ("T25", "Dtd"),
        ("T26", "ProcessingInstruction"),
    ] {
        let err = parse_envelope(
            &conformance_request(t),
            &Limits::default(),
            &Roles::default(),
        )
        .map(|_| ())
        .expect_err(t);
        assert!(format!("{err:?}").starts_with(want), "{t}: {err:?}");
        let (f, wire, n) = conformance_fault(t, &[]);
        assert_eq!(f.code, FaultCode::Sender, "{t}");
        assert_eq!(wire, SoapVersion::V12);
        assert_eq!(f.status(SoapVersion::V12), StatusCode::BAD_REQUEST);
        assert_eq!(fault_code(&n), name(SOAP12_ENV_NS, "Sender"), "{t}");
        assert!(find(&n, SOAP12_ENV_NS, "NotUnderstood").is_empty());
    }
}

#[test]
fn w3c_version_mismatch_cases() {
    for t in ["T24", "T30"] {
        let (f, wire, n) = conformance_fault(t, &[]);
        assert_eq!(f.code, FaultCode::VersionMismatch, "{t}");
        // Written as SOAP 1.1 although the endpoint speaks 1.2 (soap.md).
        assert_eq!(wire, SoapVersion::V11);
        assert_eq!(
            f.status(SoapVersion::V12),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            (n[0].ns.as_deref(), n[0].local.as_str()),
            (Some(SOAP11_ENV_NS), "Envelope")
        );
        assert_eq!(
            fault_code(&n),
            name(SOAP11_ENV_NS, "VersionMismatch"),
            "{t}"
        );
        let up = find(&n, SOAP12_ENV_NS, "Upgrade");
        assert_eq!(up.len(), 1, "{t}: Upgrade header");
        let supported: Vec<_> = find(&n, SOAP12_ENV_NS, "SupportedEnvelope")
            .iter()
            .map(|n| n.qname_attr.clone().unwrap())
            .collect();
        assert_eq!(
            supported,
            vec![
                name(SOAP12_ENV_NS, "Envelope"),
                name(SOAP11_ENV_NS, "Envelope")
            ]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Faults and responses

#[test]
fn soap11_fault_with_subcode_and_detail() {
    let mut f = Fault::new(
        FaultCode::Sender,
        "Error processing the header of XML document",
    );
    f.subcode = Some("Process".into());
    f.detail = Some(
        "<detailCode>-1002</detailCode><detailString ts=\"2024-01-01T00:00:00Z\">x</detailString>"
            .into(),
    );
    f.actor = Some("http://broker/a?x=1&y=2".into());
    let (out, n) = render(SoapVersion::V11, &f);
    let s = String::from_utf8(out).unwrap();
    assert!(
        s.starts_with(&format!(
            "<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"{SOAP11_ENV_NS}\">"
        )),
        "{s}"
    );
    assert!(
        s.contains("<faultcode>SOAP-ENV:Client.Process</faultcode>"),
        "{s}"
    );
    assert!(s.contains("<faultstring>Error processing the header of XML document</faultstring>"));
    assert!(
        s.contains("<faultactor>http://broker/a?x=1&amp;y=2</faultactor>"),
        "{s}"
    );
    assert!(s.contains("<detail><detailCode>-1002</detailCode>"), "{s}");
    assert!(
        !s.contains("Header"),
        "no Header without header content: {s}"
    );
    assert_eq!(fault_code(&n), name(SOAP11_ENV_NS, "Client.Process"));
    for child in ["faultcode", "faultstring", "faultactor", "detail"] {
        assert!(
            n.iter()
                .any(|x| x.local == child && x.ns.is_none() && x.depth == 4),
            "{child}"
        );
    }
    // 1.1 faults are 500 whatever the code.
    for code in [
        FaultCode::Sender,
        FaultCode::Receiver,
        FaultCode::MustUnderstand,
        FaultCode::VersionMismatch,
    ] {
        assert_eq!(
            Fault::new(code, "r").status(SoapVersion::V11),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    // Server maps to Server; DataEncodingUnknown has no 1.1 code and becomes Client.
    let (_, n) = render(SoapVersion::V11, &Fault::new(FaultCode::Receiver, "r"));
    assert_eq!(fault_code(&n), name(SOAP11_ENV_NS, "Server"));
    let (_, n) = render(
        SoapVersion::V11,
        &Fault::new(FaultCode::DataEncodingUnknown, "r"),
    );
    assert_eq!(fault_code(&n), name(SOAP11_ENV_NS, "Client"));
}

#[test]
fn soap12_fault_with_subcode_role_detail() {
    let mut f = Fault::new(FaultCode::Sender, "bad <session> & \"stuff\"");
    f.subcode = Some("ignored in 1.2".into());
    f.subcode_qname = Some(QName {
        namespace: Some("http://schemas.microsoft.com/sqlserver/2004/SOAP".into()),
        prefix: Some("sql".into()),
        local_name: "SessionIdIsInvalid".into(),
    });
    f.actor = Some("urn:broker".into());
    f.detail = Some("<d:Info xmlns:d=\"urn:d\">1</d:Info>".into());
    let (out, n) = render(SoapVersion::V12, &f);
    let s = String::from_utf8(out).unwrap();
    assert_eq!(fault_code(&n), name(SOAP12_ENV_NS, "Sender"));
    let sub = n
        .iter()
        .position(|x| x.local == "Subcode")
        .expect("Subcode");
    assert_eq!(
        n[sub + 1].text_qname,
        Some(name(
            "http://schemas.microsoft.com/sqlserver/2004/SOAP",
            "SessionIdIsInvalid"
        ))
    );
    let text = find(&n, SOAP12_ENV_NS, "Text");
    assert_eq!(text[0].text, "bad <session> & \"stuff\"");
    assert!(text[0].attrs.contains(&(
        Some("http://www.w3.org/XML/1998/namespace".into()),
        "lang".into(),
        "en".into()
    )));
    assert_eq!(find(&n, SOAP12_ENV_NS, "Role")[0].text, "urn:broker");
    assert_eq!(find(&n, "urn:d", "Info").len(), 1);
    assert!(!s.contains("ignored in 1.2"));
    // The order the schema wants.
    let order: Vec<_> = n
        .iter()
        .filter(|x| x.depth == 4)
        .map(|x| x.local.as_str())
        .collect();
    assert_eq!(order, ["Code", "Reason", "Role", "Detail"]);

    // Statuses: Sender 400, the rest 500, the override wins.
    assert_eq!(f.status(SoapVersion::V12), StatusCode::BAD_REQUEST);
    for code in [
        FaultCode::Receiver,
        FaultCode::MustUnderstand,
        FaultCode::DataEncodingUnknown,
    ] {
        assert_eq!(
            Fault::new(code, "r").status(SoapVersion::V12),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    f.http_status = Some(StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        f.status(SoapVersion::V12),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let mut r = Fault::new(FaultCode::Receiver, "r");
    r.http_status = Some(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.status(SoapVersion::V11), StatusCode::SERVICE_UNAVAILABLE);
}

#[test]
fn subcode_and_not_understood_prefixes_never_clash() {
    // A client prefix equal to the envelope prefix, an `xml…` prefix, no namespace at all.
    let mut f = Fault::new(FaultCode::MustUnderstand, "x");
    f.not_understood = vec![
        QName {
            namespace: Some("urn:a".into()),
            prefix: Some("env".into()),
            local_name: "A".into(),
        },
        QName {
            namespace: Some("urn:b".into()),
            prefix: Some("xmlfoo".into()),
            local_name: "B".into(),
        },
        QName {
            namespace: None,
            prefix: None,
            local_name: "C".into(),
        },
        QName {
            namespace: Some(SOAP12_ENV_NS.into()),
            prefix: Some("soap".into()),
            local_name: "D".into(),
        },
    ];
    f.subcode_qname = Some(QName {
        namespace: Some("urn:s".into()),
        prefix: Some("env".into()),
        local_name: "S".into(),
    });
    let (_, n) = render(SoapVersion::V12, &f);
    let nu: Vec<_> = find(&n, SOAP12_ENV_NS, "NotUnderstood")
        .iter()
        .map(|x| x.qname_attr.clone().unwrap())
        .collect();
    assert_eq!(
        nu,
        vec![
            name("urn:a", "A"),
            name("urn:b", "B"),
            (None, "C".into()),
            name(SOAP12_ENV_NS, "D")
        ]
    );
    let sub = n.iter().position(|x| x.local == "Subcode").unwrap();
    assert_eq!(n[sub + 1].text_qname, Some(name("urn:s", "S")));
    assert_eq!(fault_code(&n), name(SOAP12_ENV_NS, "MustUnderstand"));
}

#[test]
fn extra_headers_and_custom_prefix() {
    let mut f = Fault::new(FaultCode::Sender, "SOAP Invalid Request");
    f.detail = Some("Bad Session Request".into());
    f.extra_headers = vec!["<q:sqlSession xmlns:q=\"urn:q\" terminate=\"true\"/>".into()];
    let mut out = Vec::new();
    write_fault_with_prefix(SoapVersion::V11, &f, "SOAP", &mut out);
    let n = nodes(&out);
    let s = String::from_utf8(out).unwrap();
    assert!(s.contains("<faultcode>SOAP:Client</faultcode>"), "{s}");
    assert!(s.contains("<SOAP:Header><q:sqlSession"), "{s}");
    assert_eq!(fault_code(&n), name(SOAP11_ENV_NS, "Client"));
    assert_eq!(find(&n, "urn:q", "sqlSession").len(), 1);
}

#[test]
fn version_mismatch_fault_is_always_soap11() {
    let f = SoapError::VersionMismatch(Some("urn:v3".into())).to_fault(SoapVersion::V12);
    assert!(f.upgrade);
    assert_eq!(f.wire_version(SoapVersion::V12), SoapVersion::V11);
    let (out, n) = render(SoapVersion::V12, &f);
    let s = String::from_utf8(out).unwrap();
    assert!(
        s.starts_with(
            "<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"http://schemas.xmlsoap.org/soap/envelope/\">"
        ),
        "{s}"
    );
    assert!(
        s.contains("<faultcode>SOAP-ENV:VersionMismatch</faultcode>"),
        "{s}"
    );
    assert!(s.contains("urn:v3"), "{s}");
    assert_eq!(find(&n, SOAP12_ENV_NS, "Upgrade").len(), 1);
    // An endpoint that does not speak 1.2 (DSML) clears `upgrade`.
    let mut g = f.clone();
    g.upgrade = false;
    let (out, _) = render(SoapVersion::V11, &g);
    assert!(!String::from_utf8(out).unwrap().contains("Upgrade"));
}

#[test]
fn responses() {
    for v in BOTH {
        let mut out = Vec::new();
        write_response(v, &[], b"<m:R xmlns:m=\"urn:m\">ok</m:R>", &mut out);
        let n = nodes(&out);
        assert_eq!(
            n.iter().map(|x| x.local.as_str()).collect::<Vec<_>>(),
            ["Envelope", "Body", "R"]
        );
        assert_eq!(n[0].ns.as_deref(), Some(v.envelope_ns()));
        let s = std::str::from_utf8(&out).unwrap();
        assert!(
            s.starts_with(&format!("<{p}:Envelope xmlns:{p}=", p = v.default_prefix())),
            "{s}"
        );

        let mut out = Vec::new();
        let h1 = "<ns:Session xmlns:ns=\"urn:compaq_nsk_oss_SoapHeader\" SessionID=\"x\"/>";
        write_response(v, &[h1, "<a:B xmlns:a=\"urn:a\"/>"], b"", &mut out);
        let n = nodes(&out);
        assert_eq!(
            n.iter().map(|x| x.local.as_str()).collect::<Vec<_>>(),
            ["Envelope", "Header", "Session", "B", "Body"]
        );
        let mut out = Vec::new();
        write_response_with_prefix(v, "soap", &[], b"", &mut out);
        assert!(std::str::from_utf8(&out)
            .unwrap()
            .starts_with("<soap:Envelope xmlns:soap="));
        nodes(&out);
    }
}

#[test]
fn escaping() {
    let mut s = String::new();
    escape_text("a<b>&c\"d'e\u{1}\r", &mut s);
    assert_eq!(s, "a&lt;b&gt;&amp;c\"d'e\u{FFFD}&#13;");
    let mut s = String::new();
    escape_attr("a<b>&c\"d'e\t\n", &mut s);
    assert_eq!(s, "a&lt;b&gt;&amp;c&quot;d&apos;e&#9;&#10;");
    let mut s = String::new();
    escape_text("plain ünïcödé", &mut s);
    assert_eq!(s, "plain ünïcödé");
    // Each special character on its own, amid text that needs nothing (the fast path must
    // notice every one of them).
    for (c, text, attr) in [
        ('&', "&amp;", "&amp;"),
        ('<', "&lt;", "&lt;"),
        ('>', "&gt;", "&gt;"),
        ('"', "\"", "&quot;"),
        ('\'', "'", "&apos;"),
        ('\t', "\t", "&#9;"),
        ('\n', "\n", "&#10;"),
        ('\r', "&#13;", "&#13;"),
        ('\u{1}', "\u{FFFD}", "\u{FFFD}"),
        ('\u{FFFE}', "\u{FFFD}", "\u{FFFD}"),
        ('\u{FFFF}', "\u{FFFD}", "\u{FFFD}"),
        ('\u{F000}', "\u{F000}", "\u{F000}"),
    ] {
        let input = format!("0123456789abcdef{c}xyz");
        let (mut t, mut a) = (String::new(), String::new());
        escape_text(&input, &mut t);
        escape_attr(&input, &mut a);
        assert_eq!(t, format!("0123456789abcdef{text}xyz"), "{c:?} in text");
        assert_eq!(
            a,
            format!("0123456789abcdef{attr}xyz"),
            "{c:?} in an attribute"
        );
    }

    // Hostile text in every escaped field still yields a well-formed fault that says it back.
    let nasty = "</faultstring><x a=\"'\">&amp;\u{0}\u{FFFF}]]>";
    for v in BOTH {
        let mut f = Fault::new(FaultCode::Receiver, nasty);
        f.actor = Some(nasty.into());
        f.subcode = Some("Sub".into());
        let (_, n) = render(v, &f);
        let reason = n
            .iter()
            .find(|x| x.local == "faultstring" || x.local == "Text")
            .unwrap();
        assert_eq!(
            reason.text,
            "</faultstring><x a=\"'\">&amp;\u{FFFD}\u{FFFD}]]>"
        );
        // A NotUnderstood qname with odd characters in the local name stays an attribute.
        let mut g = Fault::new(FaultCode::MustUnderstand, "x");
        g.not_understood = vec![QName {
            namespace: Some("urn:\"q\"".into()),
            prefix: None,
            local_name: "L".into(),
        }];
        let (_, n) = render(v, &g);
        if v == SoapVersion::V12 {
            // quick-xml reports namespace names as written (escaped), hence the raw form here.
            assert_eq!(
                find(&n, SOAP12_ENV_NS, "NotUnderstood")[0].qname_attr,
                Some(name("urn:&quot;q&quot;", "L"))
            );
        }
    }
    // Messages echoing input are clipped.
    let long_ns = "urn:".to_string() + &"x".repeat(10_000);
    let r = parse(&format!("<e:Envelope xmlns:e=\"{long_ns}\"/>")).unwrap_err();
    assert!(r.to_string().len() < 400, "{}", r.to_string().len());
}

#[test]
fn errors_map_to_sender_faults() {
    let all = [
        SoapError::NotWellFormed("x".into()),
        SoapError::NotUtf8 { offset: 3 },
        SoapError::NotEnvelope("x".into()),
        SoapError::Dtd,
        SoapError::ProcessingInstruction,
        SoapError::LimitExceeded {
            limit: "max_elements",
            max: 1,
        },
        SoapError::TooManyNamespaces { max: 1 },
        SoapError::BadMustUnderstand("x".into()),
        SoapError::NoBody,
        SoapError::InvalidEnvelope("x".into()),
    ];
    for e in &all {
        for v in BOTH {
            let f = e.to_fault(v);
            assert_eq!(f.code, FaultCode::Sender, "{e:?}");
            assert_eq!(f.reason, e.to_string());
            let (_, n) = render(v, &f);
            let want = match v {
                SoapVersion::V11 => name(SOAP11_ENV_NS, "Client"),
                SoapVersion::V12 => name(SOAP12_ENV_NS, "Sender"),
            };
            assert_eq!(fault_code(&n), want);
        }
    }
    assert!(SoapError::NotUtf8 { offset: 17 }.to_string().contains("17"));
}
