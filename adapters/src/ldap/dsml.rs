//! Reading a DSMLv2 `batchRequest` (OASIS DSMLv2, `urn:oasis:names:tc:DSML:2:0:core`) into the
//! operations [`super::run`] sends to the directory.
//!
//! The broker's dialect has checked the envelope, the session header and the number of operations;
//! what is read here is the batch itself. A batch that is not a `batchRequest` is refused whole
//! (the class answers a `Client` fault, the dialect's malformed request); one operation that is
//! wrong (an unknown element, a missing `dn`, a value that is not base64) becomes that operation's
//! `errorResponse type="malformedRequest"` and, like any error, stops or not by `onError`.
//!
//! Filters are turned into their RFC 4515 string form, which the LDAP client encodes: every value
//! is escaped byte by byte (`\2a`), so a `*` or `(` in a DSML value is a character, never syntax.

use base64::Engine as _;
use ldap3::controls::RawControl;
use xmltree::{Element, XMLNode};

/// The DSMLv2 core namespace.
pub const DSML_NS: &str = "urn:oasis:names:tc:DSML:2:0:core";

/// A `batchRequest`.
#[derive(Debug)]
pub struct BatchRequest {
    pub request_id: Option<String>,
    /// `processing="parallel"`: the operations may run concurrently.
    pub parallel: bool,
    /// `responseOrder="unordered"` (only with parallel processing): answers as they finish.
    pub unordered: bool,
    /// `onError="resume"`: go on after an operation that failed.
    pub resume: bool,
    /// The prefix the request used for the DSML namespace (`None`: the default namespace).
    pub prefix: Option<String>,
    pub operations: Vec<Operation>,
}

/// One operation of the batch, or why it cannot be run.
#[derive(Debug)]
pub struct Operation {
    pub request_id: Option<String>,
    pub controls: Vec<RawControl>,
    pub kind: Result<Kind, String>,
}

#[derive(Debug)]
pub enum Kind {
    Search(Search),
    Add {
        dn: String,
        attributes: Vec<(String, Vec<Vec<u8>>)>,
    },
    Modify {
        dn: String,
        modifications: Vec<Modification>,
    },
    Delete {
        dn: String,
    },
    ModDn {
        dn: String,
        new_rdn: String,
        delete_old_rdn: bool,
        new_superior: Option<String>,
    },
    Compare {
        dn: String,
        attribute: String,
        value: Vec<u8>,
    },
    Extended {
        name: String,
        value: Option<Vec<u8>>,
    },
    Abandon {
        request_id: String,
    },
    /// DSML's `authRequest` (an authorization identity for the batch): not offered, the
    /// session's bind is the endpoint's configuration.
    Auth,
}

#[derive(Debug)]
pub struct Search {
    pub base: String,
    pub scope: ldap3::Scope,
    pub deref: ldap3::DerefAliases,
    pub size_limit: i32,
    pub time_limit: i32,
    pub types_only: bool,
    pub filter: String,
    pub attributes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModOp {
    Add,
    Delete,
    Replace,
}

#[derive(Debug)]
pub struct Modification {
    pub op: ModOp,
    pub attribute: String,
    pub values: Vec<Vec<u8>>,
}

/// Read the batch. `Err`: the payload is not a DSMLv2 batchRequest (the reason, one line).
pub fn read(payload: &[u8]) -> Result<BatchRequest, String> {
    let root = Element::parse(payload).map_err(|e| format!("the payload is not XML: {e}"))?;
    let namespace_ok = match root.namespace.as_deref() {
        None | Some("") => true,
        Some(ns) => ns == DSML_NS,
    };
    if root.name != "batchRequest" || !namespace_ok {
        return Err(format!(
            "expected a DSMLv2 batchRequest (namespace {DSML_NS}), got <{}>",
            root.name
        ));
    }
    let attr = |name: &str| root.attributes.get(name).map(|v| v.trim().to_string());
    let parallel = match attr("processing").as_deref() {
        None | Some("sequential") => false,
        Some("parallel") => true,
        Some(other) => return Err(format!("processing={other:?}: sequential or parallel")),
    };
    let unordered = match attr("responseOrder").as_deref() {
        None | Some("sequential") => false,
        Some("unordered") => true,
        Some(other) => return Err(format!("responseOrder={other:?}: sequential or unordered")),
    };
    let resume = match attr("onError").as_deref() {
        None | Some("exit") => false,
        Some("resume") => true,
        Some(other) => return Err(format!("onError={other:?}: exit or resume")),
    };
    if unordered && !parallel {
        return Err("responseOrder=\"unordered\" needs processing=\"parallel\"".to_string());
    }
    let operations = elements(&root)
        .map(|e| {
            let kind = if e.namespace != root.namespace {
                Err(format!("<{}> is not in the batch's namespace", e.name))
            } else {
                operation(e)
            };
            Operation {
                request_id: e.attributes.get("requestID").cloned(),
                controls: controls(e).unwrap_or_default(),
                kind: controls(e).and(kind),
            }
        })
        .collect();
    Ok(BatchRequest {
        request_id: attr("requestID"),
        parallel,
        unordered,
        resume,
        prefix: root.prefix.clone().filter(|p| !p.is_empty()),
        operations,
    })
}

fn elements(parent: &Element) -> impl Iterator<Item = &Element> {
    parent.children.iter().filter_map(XMLNode::as_element)
}

fn children<'a>(parent: &'a Element, name: &'a str) -> impl Iterator<Item = &'a Element> {
    elements(parent).filter(move |e| e.name == name)
}

fn required_attr(e: &Element, name: &str) -> Result<String, String> {
    e.attributes
        .get(name)
        .cloned()
        .ok_or_else(|| format!("<{}> needs a {name} attribute", e.name))
}

fn boolean(e: &Element, name: &str) -> Result<bool, String> {
    match e.attributes.get(name).map(|v| v.trim()) {
        None | Some("false" | "0") => Ok(false),
        Some("true" | "1") => Ok(true),
        Some(other) => Err(format!("<{}> {name}={other:?} is not a boolean", e.name)),
    }
}

fn text(e: &Element) -> String {
    e.get_text().map(|t| t.into_owned()).unwrap_or_default()
}

/// A `value` (or `controlValue`, `requestValue`) element: its text, or the bytes of its base64
/// text when typed `xsd:base64Binary`.
fn value(e: &Element) -> Result<Vec<u8>, String> {
    let t = text(e);
    let binary = e
        .attributes
        .get("type")
        .is_some_and(|t| t.ends_with("base64Binary"));
    if binary {
        let compact: String = t.split_ascii_whitespace().collect();
        base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|_| format!("<{}> is typed base64Binary but is not base64", e.name))
    } else {
        Ok(t.into_bytes())
    }
}

fn values(e: &Element) -> Result<Vec<Vec<u8>>, String> {
    children(e, "value").map(value).collect()
}

fn controls(e: &Element) -> Result<Vec<RawControl>, String> {
    children(e, "control")
        .map(|c| {
            Ok(RawControl {
                ctype: required_attr(c, "type")?,
                crit: boolean(c, "criticality")?,
                val: children(c, "controlValue").next().map(value).transpose()?,
            })
        })
        .collect()
}

fn operation(e: &Element) -> Result<Kind, String> {
    let dn = || required_attr(e, "dn");
    Ok(match e.name.as_str() {
        "searchRequest" => Kind::Search(search(e)?),
        "addRequest" => Kind::Add {
            dn: dn()?,
            attributes: children(e, "attr")
                .map(|a| Ok((required_attr(a, "name")?, values(a)?)))
                .collect::<Result<_, String>>()?,
        },
        "modifyRequest" => Kind::Modify {
            dn: dn()?,
            modifications: children(e, "modification")
                .map(|m| {
                    let op = match required_attr(m, "operation")?.as_str() {
                        "add" => ModOp::Add,
                        "delete" => ModOp::Delete,
                        "replace" => ModOp::Replace,
                        other => {
                            return Err(format!(
                                "modification operation={other:?}: add, delete or replace"
                            ))
                        }
                    };
                    Ok(Modification {
                        op,
                        attribute: required_attr(m, "name")?,
                        values: values(m)?,
                    })
                })
                .collect::<Result<_, String>>()?,
        },
        "delRequest" => Kind::Delete { dn: dn()? },
        "modDNRequest" => Kind::ModDn {
            dn: dn()?,
            new_rdn: required_attr(e, "newrdn")?,
            // DSMLv2's default is true.
            delete_old_rdn: match e.attributes.get("deleteoldrdn") {
                None => true,
                Some(_) => boolean(e, "deleteoldrdn")?,
            },
            new_superior: e.attributes.get("newSuperior").cloned(),
        },
        "compareRequest" => {
            let assertion = children(e, "assertion")
                .next()
                .ok_or("<compareRequest> needs an <assertion>")?;
            Kind::Compare {
                dn: dn()?,
                attribute: required_attr(assertion, "name")?,
                value: children(assertion, "value")
                    .next()
                    .map(value)
                    .transpose()?
                    .ok_or("<assertion> needs a <value>")?,
            }
        }
        "extendedRequest" => Kind::Extended {
            name: children(e, "requestName")
                .next()
                .map(|n| text(n).trim().to_string())
                .filter(|n| !n.is_empty())
                .ok_or("<extendedRequest> needs a <requestName>")?,
            value: children(e, "requestValue").next().map(value).transpose()?,
        },
        "abandonRequest" => Kind::Abandon {
            request_id: required_attr(e, "abandonID")?,
        },
        "authRequest" => Kind::Auth,
        other => return Err(format!("<{other}> is not a DSMLv2 operation")),
    })
}

fn search(e: &Element) -> Result<Search, String> {
    let scope = match required_attr(e, "scope")?.as_str() {
        "baseObject" => ldap3::Scope::Base,
        "singleLevel" => ldap3::Scope::OneLevel,
        "wholeSubtree" => ldap3::Scope::Subtree,
        other => {
            return Err(format!(
                "scope={other:?}: baseObject, singleLevel or wholeSubtree"
            ))
        }
    };
    let deref = match required_attr(e, "derefAliases")?.as_str() {
        "neverDerefAliases" => ldap3::DerefAliases::Never,
        "derefInSearching" => ldap3::DerefAliases::Searching,
        "derefFindingBaseObj" => ldap3::DerefAliases::Finding,
        "derefAlways" => ldap3::DerefAliases::Always,
        other => return Err(format!("derefAliases={other:?} is not a DSMLv2 value")),
    };
    let limit = |name: &str| -> Result<i32, String> {
        match e.attributes.get(name) {
            None => Ok(0),
            Some(v) => v
                .trim()
                .parse::<u32>()
                .ok()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| format!("{name}={v:?} is not a count")),
        }
    };
    let filter = children(e, "filter")
        .next()
        .ok_or("<searchRequest> needs a <filter>")?;
    let inner = elements(filter)
        .next()
        .ok_or("<filter> needs one filter element")?;
    let mut out = String::new();
    write_filter(inner, &mut out, 0)?;
    let attributes = children(e, "attributes")
        .flat_map(|a| children(a, "attribute"))
        .map(|a| required_attr(a, "name"))
        .collect::<Result<_, _>>()?;
    Ok(Search {
        base: required_attr(e, "dn")?,
        scope,
        deref,
        size_limit: limit("sizeLimit")?,
        time_limit: limit("timeLimit")?,
        types_only: boolean(e, "typesOnly")?,
        filter: out,
        attributes,
    })
}

/// Deeper than this a filter is refused (the broker's depth limit comes first in practice).
const MAX_FILTER_DEPTH: usize = 64;

fn write_filter(e: &Element, out: &mut String, depth: usize) -> Result<(), String> {
    if depth > MAX_FILTER_DEPTH {
        return Err("the filter is nested too deeply".to_string());
    }
    let name = || required_attr(e, "name");
    let first_value = || {
        children(e, "value")
            .next()
            .map(value)
            .transpose()?
            .ok_or_else(|| format!("<{}> needs a <value>", e.name))
    };
    out.push('(');
    match e.name.as_str() {
        "and" | "or" => {
            out.push(if e.name == "and" { '&' } else { '|' });
            for child in elements(e) {
                write_filter(child, out, depth + 1)?;
            }
        }
        "not" => {
            out.push('!');
            let mut inner = elements(e);
            let child = inner.next().ok_or("<not> needs one filter element")?;
            if inner.next().is_some() {
                return Err("<not> holds exactly one filter element".to_string());
            }
            write_filter(child, out, depth + 1)?;
        }
        "equalityMatch" | "greaterOrEqual" | "lessOrEqual" | "approxMatch" => {
            out.push_str(&name()?);
            out.push_str(match e.name.as_str() {
                "equalityMatch" => "=",
                "greaterOrEqual" => ">=",
                "lessOrEqual" => "<=",
                _ => "~=",
            });
            escape(&first_value()?, out);
        }
        "present" => {
            out.push_str(&name()?);
            out.push_str("=*");
        }
        "substrings" => {
            out.push_str(&name()?);
            out.push('=');
            let initial = children(e, "initial").next().map(value).transpose()?;
            let finals = children(e, "final").next().map(value).transpose()?;
            if let Some(i) = initial {
                escape(&i, out);
            }
            out.push('*');
            for any in children(e, "any") {
                escape(&value(any)?, out);
                out.push('*');
            }
            if let Some(f) = finals {
                escape(&f, out);
            }
        }
        "extensibleMatch" => {
            if let Some(n) = e.attributes.get("name") {
                out.push_str(n);
            }
            if boolean(e, "dnAttributes")? {
                out.push_str(":dn");
            }
            if let Some(rule) = e.attributes.get("matchingRule") {
                out.push(':');
                out.push_str(rule);
            }
            out.push_str(":=");
            escape(&first_value()?, out);
        }
        other => return Err(format!("<{other}> is not a DSMLv2 filter")),
    }
    out.push(')');
    Ok(())
}

/// RFC 4515 value escaping, every byte outside plain printable ASCII as `\xx`.
pub(crate) fn escape(value: &[u8], out: &mut String) {
    for &b in value {
        match b {
            b'*' | b'(' | b')' | b'\\' | 0 => out.push_str(&format!("\\{b:02x}")),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\{b:02x}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(op: &str) -> Operation {
        let batch =
            read(format!("<batchRequest xmlns=\"{DSML_NS}\">{op}</batchRequest>").as_bytes())
                .expect("batch");
        batch.operations.into_iter().next().expect("one operation")
    }

    #[test]
    fn filters_become_rfc4515_with_every_value_escaped() {
        let op = one(
            r#"<searchRequest dn="dc=x" scope="wholeSubtree" derefAliases="neverDerefAliases"><filter><and><equalityMatch name="cn"><value>a*(b)</value></equalityMatch><not><present name="mail"/></not><substrings name="sn"><initial>Ar</initial><any>c</any><final>er</final></substrings><or><greaterOrEqual name="n"><value>3</value></greaterOrEqual><lessOrEqual name="n"><value>1</value></lessOrEqual><approxMatch name="cn"><value>an</value></approxMatch></or><extensibleMatch name="ou" dnAttributes="true" matchingRule="caseExactMatch"><value>é</value></extensibleMatch><equalityMatch name="jpegPhoto"><value xsi:type="xsd:base64Binary" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">/9j/</value></equalityMatch></and></filter></searchRequest>"#,
        );
        let Ok(Kind::Search(s)) = op.kind else {
            panic!("{op:?}")
        };
        assert_eq!(
            s.filter,
            r"(&(cn=a\2a\28b\29)(!(mail=*))(sn=Ar*c*er)(|(n>=3)(n<=1)(cn~=an))(ou:dn:caseExactMatch:=\c3\a9)(jpegPhoto=\ff\d8\ff))"
        );
    }

    #[test]
    fn a_bad_operation_is_that_operation_s_error_only() {
        let batch = read(
            format!("<batchRequest xmlns=\"{DSML_NS}\" onError=\"resume\"><delRequest/><frobRequest/><delRequest dn=\"cn=a\"/></batchRequest>")
                .as_bytes(),
        )
        .expect("batch");
        assert!(batch.resume);
        let kinds: Vec<bool> = batch.operations.iter().map(|o| o.kind.is_ok()).collect();
        assert_eq!(kinds, vec![false, false, true]);
        assert!(read(b"<searchRequest/>").is_err());
    }
}
