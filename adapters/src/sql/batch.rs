//! Reading a `sqlbatch` request into a [`Batch`].
//!
//! The payload is the SOAP Body's element, as SQL Server's endpoints take it:
//!
//! ```xml
//! <sql:sqlbatch xmlns:sql="http://schemas.microsoft.com/sqlserver/2004/SOAP">
//!   <sql:BatchCommands>SELECT name FROM account WHERE id = @id</sql:BatchCommands>
//!   <sql:Parameters>
//!     <sqlparameter:SqlParameter name="id" sqlDbType="Int"
//!         xmlns:sqlparameter="http://schemas.microsoft.com/sqlserver/2004/SOAP/types/SqlParameter">
//!       <sqlparameter:Value>7</sqlparameter:Value>
//!     </sqlparameter:SqlParameter>
//!   </sql:Parameters>
//! </sql:sqlbatch>
//! ```
//!
//! Element names are matched by local name and are case-sensitive; a NULL is a `Value` with
//! `xsi:nil="true"` (or no `Value` at all). Every value is checked against its declared type here,
//! before anything runs: a batch with one bad parameter runs nothing.

use super::{SqlType, Value};
use base64::Engine as _;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

/// SQL Server's SOAP namespace, of `sqlbatch` and its children.
pub const SQL_NS: &str = "http://schemas.microsoft.com/sqlserver/2004/SOAP";
const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// The most parameters one batch may carry.
pub const MAX_PARAMETERS: usize = 2100; // SQL Server's own limit per request

/// A parameter: its name with the `@` the statements use, its type and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: String,
    pub ty: SqlType,
    pub value: Value,
}

/// What a connection runs: SQL text and its parameters.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Batch {
    pub sql: String,
    pub params: Vec<Param>,
}

/// Why a request payload is not a batch. Each becomes a SOAP fault (Client) and nothing runs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BatchError {
    #[error("unknown method {0:?}; this endpoint offers sqlbatch")]
    UnknownMethod(String),
    #[error("the request is not well-formed XML: {0}")]
    Unreadable(String),
    #[error("sqlbatch has no BatchCommands")]
    NoCommands,
    #[error("BatchCommands holds {len} bytes, more than the limit of {max}")]
    TooLong { len: usize, max: usize },
    #[error("more than {max} parameters")]
    TooManyParameters { max: usize },
    #[error("a SqlParameter has no name")]
    UnnamedParameter,
    #[error("parameter {0:?} is given twice")]
    DuplicateParameter(String),
    #[error("parameter {name:?}: unknown sqlDbType {ty:?}")]
    UnknownType { name: String, ty: String },
    #[error("parameter {name:?}: {value:?} is not a valid {ty}")]
    BadValue {
        name: String,
        ty: &'static str,
        value: String,
    },
    #[error("unexpected element {0:?} in sqlbatch")]
    UnexpectedElement(String),
    #[error("method {method} has no parameter {name:?}")]
    UndeclaredParameter { method: String, name: String },
    #[error("parameter {0:?} is missing")]
    MissingParameter(String),
}

/// Read a `sqlbatch` element. `max_sql_bytes` bounds `BatchCommands`.
pub fn read(payload: &[u8], max_sql_bytes: usize) -> Result<Batch, BatchError> {
    let text = std::str::from_utf8(payload).map_err(|e| BatchError::Unreadable(e.to_string()))?;
    let mut reader = NsReader::from_str(text);
    let unreadable = |e: &dyn std::fmt::Display| BatchError::Unreadable(e.to_string());

    // The root: sqlbatch in SQL Server's namespace.
    let root_empty = loop {
        match reader.read_resolved_event().map_err(|e| unreadable(&e))? {
            (ns, Event::Start(e)) => {
                check_root(&ns, &e)?;
                break false;
            }
            (ns, Event::Empty(e)) => {
                check_root(&ns, &e)?;
                break true;
            }
            (_, Event::Eof) => return Err(BatchError::NoCommands),
            _ => {}
        }
    };
    if root_empty {
        return Err(BatchError::NoCommands);
    }

    let mut batch = Batch::default();
    let mut commands = None;
    loop {
        match reader.read_event().map_err(|e| unreadable(&e))? {
            Event::Start(e) => match e.local_name().into_inner() {
                "BatchCommands" => {
                    let sql = reader.read_text(e.name()).map_err(|e| unreadable(&e))?;
                    let sql = quick_xml::escape::unescape(&sql)
                        .map_err(|e| unreadable(&e))?
                        .into_owned();
                    if sql.len() > max_sql_bytes {
                        return Err(BatchError::TooLong {
                            len: sql.len(),
                            max: max_sql_bytes,
                        });
                    }
                    commands = Some(sql);
                }
                "Parameters" => read_parameters(&mut reader, &mut batch.params)?,
                other => return Err(BatchError::UnexpectedElement(other.to_string())),
            },
            Event::Empty(e) => match e.local_name().into_inner() {
                "BatchCommands" => commands = Some(String::new()),
                "Parameters" => {}
                other => return Err(BatchError::UnexpectedElement(other.to_string())),
            },
            Event::End(_) | Event::Eof => break,
            _ => {}
        }
    }
    batch.sql = commands.ok_or(BatchError::NoCommands)?;
    if batch.sql.trim().is_empty() {
        return Err(BatchError::NoCommands);
    }
    Ok(batch)
}

fn check_root(ns: &ResolveResult<'_>, e: &BytesStart<'_>) -> Result<(), BatchError> {
    let local = e.local_name().into_inner().to_string();
    let ours = matches!(ns, ResolveResult::Bound(n) if n.into_inner() == SQL_NS);
    if local == "sqlbatch" && ours {
        Ok(())
    } else {
        Err(BatchError::UnknownMethod(local))
    }
}

fn read_parameters(
    reader: &mut NsReader<&[u8]>,
    params: &mut Vec<Param>,
) -> Result<(), BatchError> {
    let unreadable = |e: &dyn std::fmt::Display| BatchError::Unreadable(e.to_string());
    loop {
        match reader.read_event().map_err(|e| unreadable(&e))? {
            Event::Start(e) if e.local_name().into_inner() == "SqlParameter" => {
                let (name, ty) = parameter_head(&e)?;
                let mut value = Value::Null;
                loop {
                    match reader.read_event().map_err(|e| unreadable(&e))? {
                        Event::Start(v) if v.local_name().into_inner() == "Value" => {
                            let nil = is_nil(&v);
                            let raw = reader.read_text(v.name()).map_err(|e| unreadable(&e))?;
                            let text =
                                quick_xml::escape::unescape(&raw).map_err(|e| unreadable(&e))?;
                            if !nil {
                                value = parse_value(&name, ty, &text)?;
                            }
                        }
                        // An empty Value is the empty string, unless nil.
                        Event::Empty(v)
                            if v.local_name().into_inner() == "Value" && !is_nil(&v) =>
                        {
                            value = parse_value(&name, ty, "")?;
                        }
                        Event::Empty(v) if v.local_name().into_inner() == "Value" => {}
                        Event::End(_) => break,
                        Event::Eof => return Err(unreadable(&"unexpected end")),
                        Event::Start(other) | Event::Empty(other) => {
                            return Err(BatchError::UnexpectedElement(
                                other.local_name().into_inner().to_string(),
                            ))
                        }
                        _ => {}
                    }
                }
                push(params, Param { name, ty, value })?;
            }
            Event::Empty(e) if e.local_name().into_inner() == "SqlParameter" => {
                let (name, ty) = parameter_head(&e)?;
                push(
                    params,
                    Param {
                        name,
                        ty,
                        value: Value::Null,
                    },
                )?;
            }
            Event::Start(e) | Event::Empty(e) => {
                return Err(BatchError::UnexpectedElement(
                    e.local_name().into_inner().to_string(),
                ))
            }
            Event::End(_) => return Ok(()),
            Event::Eof => return Err(unreadable(&"unexpected end")),
            _ => {}
        }
    }
}

fn push(params: &mut Vec<Param>, p: Param) -> Result<(), BatchError> {
    if params.iter().any(|q| q.name == p.name) {
        return Err(BatchError::DuplicateParameter(p.name));
    }
    if params.len() >= MAX_PARAMETERS {
        return Err(BatchError::TooManyParameters {
            max: MAX_PARAMETERS,
        });
    }
    params.push(p);
    Ok(())
}

fn attr(e: &BytesStart<'_>, local: &str) -> Option<String> {
    e.attributes().flatten().find_map(|a| {
        (a.key.local_name().into_inner() == local)
            .then(|| {
                a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                    .ok()
                    .map(|v| v.into_owned())
            })
            .flatten()
    })
}

fn is_nil(e: &BytesStart<'_>) -> bool {
    // xsi:nil, whichever prefix the client bound to the XSI namespace (matched by local name:
    // no other attribute of Value is called nil).
    let _ = XSI_NS;
    matches!(attr(e, "nil").as_deref().map(str::trim), Some("true" | "1"))
}

fn parameter_head(e: &BytesStart<'_>) -> Result<(String, SqlType), BatchError> {
    let name = attr(e, "name")
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty() && n != "@")
        .ok_or(BatchError::UnnamedParameter)?;
    let name = if name.starts_with('@') {
        name
    } else {
        format!("@{name}")
    };
    let ty_name = attr(e, "sqlDbType").unwrap_or_else(|| "NVarChar".to_string());
    let ty = SqlType::from_db_type(ty_name.trim()).ok_or_else(|| BatchError::UnknownType {
        name: name.clone(),
        ty: ty_name,
    })?;
    Ok((name, ty))
}

/// Check and convert one value's text for its declared type.
pub fn parse_value(name: &str, ty: SqlType, text: &str) -> Result<Value, BatchError> {
    let bad = || BatchError::BadValue {
        name: name.to_string(),
        ty: ty.sql_name(),
        value: text.chars().take(64).collect(),
    };
    let t = text.trim();
    Ok(match ty {
        SqlType::Bit => match t {
            "true" | "1" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            _ => return Err(bad()),
        },
        SqlType::Int => {
            let v: i32 = t.parse().map_err(|_| bad())?;
            Value::Int(v.into())
        }
        SqlType::BigInt => Value::Int(t.parse().map_err(|_| bad())?),
        SqlType::Float => {
            let v: f64 = match t {
                "INF" => f64::INFINITY,
                "-INF" => f64::NEG_INFINITY,
                _ => t.parse().map_err(|_| bad())?,
            };
            if v.is_nan() {
                return Err(bad());
            }
            Value::Float(v)
        }
        SqlType::Decimal => {
            let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
            let mut parts = digits.splitn(2, '.');
            let int = parts.next().unwrap_or("");
            let frac = parts.next().unwrap_or("");
            let ok = !(int.is_empty() && frac.is_empty())
                && int.bytes().all(|b| b.is_ascii_digit())
                && frac.bytes().all(|b| b.is_ascii_digit())
                && int.len() + frac.len() <= 38;
            if !ok {
                return Err(bad());
            }
            Value::Decimal(t.to_string())
        }
        SqlType::NVarChar => Value::Text(text.to_string()),
        SqlType::VarBinary => Value::Bytes(
            base64::engine::general_purpose::STANDARD
                .decode(t)
                .map_err(|_| bad())?,
        ),
        SqlType::DateTime => {
            // xsd:dateTime (a time zone optional, as SQL Server's datetime has none).
            let ok = humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).is_ok()
                || humantime::parse_rfc3339(t).is_ok();
            if !ok {
                return Err(bad());
            }
            Value::Text(t.to_string())
        }
    })
}

/// Read a named web method's request: the element `<{method.name}>` (in any namespace, returned
/// for the reply) with one child element per declared parameter, by local name, each checked
/// against its type; `xsi:nil="true"` is NULL. A missing or undeclared child is refused.
pub fn read_method(
    payload: &[u8],
    method: &crate::SqlMethod,
) -> Result<(Batch, Option<String>), BatchError> {
    let text = std::str::from_utf8(payload).map_err(|e| BatchError::Unreadable(e.to_string()))?;
    let mut reader = NsReader::from_str(text);
    let unreadable = |e: &dyn std::fmt::Display| BatchError::Unreadable(e.to_string());
    let (namespace, empty) = loop {
        match reader.read_resolved_event().map_err(|e| unreadable(&e))? {
            (ns, Event::Start(e)) => {
                if e.local_name().into_inner() != method.name {
                    return Err(BatchError::UnknownMethod(
                        e.local_name().into_inner().to_string(),
                    ));
                }
                break (bound(&ns), false);
            }
            (ns, Event::Empty(e)) => {
                if e.local_name().into_inner() != method.name {
                    return Err(BatchError::UnknownMethod(
                        e.local_name().into_inner().to_string(),
                    ));
                }
                break (bound(&ns), true);
            }
            (_, Event::Eof) => return Err(BatchError::UnknownMethod(String::new())),
            _ => {}
        }
    };
    let mut given: Vec<Param> = Vec::new();
    if !empty {
        loop {
            match reader.read_event().map_err(|e| unreadable(&e))? {
                Event::Start(e) => {
                    let local = e.local_name().into_inner().to_string();
                    let ty = declared(method, &local)?;
                    let nil = is_nil(&e);
                    let raw = reader.read_text(e.name()).map_err(|e| unreadable(&e))?;
                    let text = quick_xml::escape::unescape(&raw).map_err(|e| unreadable(&e))?;
                    let name = format!("@{local}");
                    let value = if nil {
                        Value::Null
                    } else {
                        parse_value(&name, ty, &text)?
                    };
                    push(&mut given, Param { name, ty, value })?;
                }
                Event::Empty(e) => {
                    let local = e.local_name().into_inner().to_string();
                    let ty = declared(method, &local)?;
                    let name = format!("@{local}");
                    let value = if is_nil(&e) {
                        Value::Null
                    } else {
                        parse_value(&name, ty, "")?
                    };
                    push(&mut given, Param { name, ty, value })?;
                }
                Event::End(_) | Event::Eof => break,
                _ => {}
            }
        }
    }
    if let Some((missing, _)) = method
        .parameters
        .iter()
        .find(|(p, _)| !given.iter().any(|g| g.name[1..] == *p))
    {
        return Err(BatchError::MissingParameter(format!("@{missing}")));
    }
    Ok((
        Batch {
            sql: method.sql.clone(),
            params: given,
        },
        namespace,
    ))
}

fn bound(ns: &ResolveResult<'_>) -> Option<String> {
    match ns {
        ResolveResult::Bound(n) => Some(n.into_inner().to_string()),
        _ => None,
    }
}

fn declared(method: &crate::SqlMethod, local: &str) -> Result<SqlType, BatchError> {
    method
        .parameters
        .iter()
        .find(|(p, _)| p == local)
        .map(|(_, t)| *t)
        .ok_or_else(|| BatchError::UndeclaredParameter {
            method: method.name.clone(),
            name: local.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrap(inner: &str) -> String {
        format!("<sql:sqlbatch xmlns:sql=\"{SQL_NS}\" xmlns:p=\"{SQL_NS}/types/SqlParameter\" xmlns:xsi=\"{XSI_NS}\">{inner}</sql:sqlbatch>")
    }

    #[test]
    fn a_batch_with_typed_parameters() {
        let b = read(
            wrap("<sql:BatchCommands>SELECT @a, @b &lt; 3</sql:BatchCommands><sql:Parameters><p:SqlParameter name=\"a\" sqlDbType=\"Int\"><p:Value>7</p:Value></p:SqlParameter><p:SqlParameter name=\"@b\" sqlDbType=\"NVarChar\"><p:Value xsi:nil=\"true\"/></p:SqlParameter><p:SqlParameter name=\"c\" sqlDbType=\"VarBinary\"><p:Value>AAEC</p:Value></p:SqlParameter></sql:Parameters>").as_bytes(),
            1000,
        )
        .expect("batch");
        assert_eq!(b.sql, "SELECT @a, @b < 3");
        assert_eq!(
            b.params,
            vec![
                Param {
                    name: "@a".into(),
                    ty: SqlType::Int,
                    value: Value::Int(7)
                },
                Param {
                    name: "@b".into(),
                    ty: SqlType::NVarChar,
                    value: Value::Null
                },
                Param {
                    name: "@c".into(),
                    ty: SqlType::VarBinary,
                    value: Value::Bytes(vec![0, 1, 2])
                },
            ]
        );
    }

    #[test]
    fn bad_requests_are_refused_before_anything_runs() {
        let r = |inner: &str| read(wrap(inner).as_bytes(), 20);
        assert_eq!(r(""), Err(BatchError::NoCommands));
        assert_eq!(
            r("<sql:BatchCommands>  </sql:BatchCommands>"),
            Err(BatchError::NoCommands)
        );
        assert!(matches!(
            r("<sql:BatchCommands>SELECT 1 FROM a_long_table_name</sql:BatchCommands>"),
            Err(BatchError::TooLong { max: 20, .. })
        ));
        assert!(matches!(
            r("<sql:BatchCommands>SELECT @a</sql:BatchCommands><sql:Parameters><p:SqlParameter name=\"a\" sqlDbType=\"Int\"><p:Value>x7</p:Value></p:SqlParameter></sql:Parameters>"),
            Err(BatchError::BadValue { ty: "int", .. })
        ));
        assert!(matches!(
            r("<sql:BatchCommands>SELECT @a</sql:BatchCommands><sql:Parameters><p:SqlParameter name=\"a\" sqlDbType=\"Int\"><p:Value>3000000000</p:Value></p:SqlParameter></sql:Parameters>"),
            Err(BatchError::BadValue { .. })
        ));
        assert!(matches!(
            r("<sql:BatchCommands>SELECT @a</sql:BatchCommands><sql:Parameters><p:SqlParameter name=\"a\" sqlDbType=\"Integer\"/></sql:Parameters>"),
            Err(BatchError::UnknownType { .. })
        ));
        assert!(matches!(
            r("<sql:BatchCommands>SELECT @a</sql:BatchCommands><sql:Parameters><p:SqlParameter name=\"a\"/><p:SqlParameter name=\"@a\"/></sql:Parameters>"),
            Err(BatchError::DuplicateParameter(_))
        ));
        assert!(matches!(
            r("<sql:BatchCommands>SELECT 1</sql:BatchCommands><sql:Parameters><p:SqlParameter sqlDbType=\"Int\"/></sql:Parameters>"),
            Err(BatchError::UnnamedParameter)
        ));
        assert_eq!(
            read(
                b"<sql:sqlBatch xmlns:sql=\"http://schemas.microsoft.com/sqlserver/2004/SOAP\"/>",
                9
            ),
            Err(BatchError::UnknownMethod("sqlBatch".into()))
        );
        assert_eq!(
            read(
                b"<sqlbatch><BatchCommands>SELECT 1</BatchCommands></sqlbatch>",
                99
            ),
            Err(BatchError::UnknownMethod("sqlbatch".into())),
            "sqlbatch outside SQL Server's namespace is not the method"
        );
    }

    #[test]
    fn a_named_method_reads_its_declared_parameters_only() {
        let m = crate::SqlMethod {
            name: "GetAccount".into(),
            sql: "SELECT owner FROM account WHERE id = @id".into(),
            parameters: vec![("id".into(), SqlType::Int)],
        };
        let (b, ns) = read_method(
            b"<t:GetAccount xmlns:t=\"urn:bank\"><t:id>7</t:id></t:GetAccount>",
            &m,
        )
        .expect("method");
        assert_eq!(ns.as_deref(), Some("urn:bank"));
        assert_eq!(
            b.params,
            vec![Param {
                name: "@id".into(),
                ty: SqlType::Int,
                value: Value::Int(7)
            }]
        );
        assert!(matches!(
            read_method(b"<GetAccount><id>x</id></GetAccount>", &m),
            Err(BatchError::BadValue { .. })
        ));
        assert!(matches!(
            read_method(b"<GetAccount/>", &m),
            Err(BatchError::MissingParameter(_))
        ));
        assert!(matches!(
            read_method(b"<GetAccount><id>1</id><drop>1</drop></GetAccount>", &m),
            Err(BatchError::UndeclaredParameter { .. })
        ));
    }

    #[test]
    fn values_are_checked_against_their_type() {
        assert_eq!(parse_value("@x", SqlType::Bit, "1"), Ok(Value::Bool(true)));
        assert_eq!(
            parse_value("@x", SqlType::Decimal, "-12.50"),
            Ok(Value::Decimal("-12.50".into()))
        );
        assert!(parse_value("@x", SqlType::Decimal, "1e5").is_err());
        assert!(parse_value("@x", SqlType::Decimal, ".").is_err());
        assert!(parse_value("@x", SqlType::Float, "NaN").is_err());
        assert_eq!(
            parse_value("@x", SqlType::Float, "2.5"),
            Ok(Value::Float(2.5))
        );
        assert!(parse_value("@x", SqlType::DateTime, "2026-12-07T10:00:00").is_ok());
        assert!(parse_value("@x", SqlType::DateTime, "yesterday").is_err());
        assert!(parse_value("@x", SqlType::VarBinary, "***").is_err());
    }
}
