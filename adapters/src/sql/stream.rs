//! Writing a batch's results as SQL Server's `SqlResultStream`.
//!
//! ```xml
//! <sql:sqlbatchResponse xmlns:sql="http://schemas.microsoft.com/sqlserver/2004/SOAP">
//!   <sql:sqlbatchResult xsi:type="sqlresultstream:SqlResultStream" …namespaces…>
//!     <sqlresultstream:SqlRowSet xsi:type="sqlsoaptypes:SqlRowSet">
//!       <xsd:schema …>…one element per column, typed sqltypes:int, sqltypes:nvarchar…</xsd:schema>
//!       <row xmlns="urn:schemas-microsoft-com:sql:SqlRowSet1"><id>7</id><name xsi:nil="true"/></row>
//!     </sqlresultstream:SqlRowSet>
//!     <sqlresultstream:SqlRowCount xsi:type="sqlrowcount:SqlRowCount">
//!       <sqlrowcount:Count>1</sqlrowcount:Count>
//!     </sqlresultstream:SqlRowCount>
//!     <sqlresultstream:SqlMessage xsi:type="sqlmessage:SqlMessage">
//!       <sqlmessage:Class>16</sqlmessage:Class> … Message, Number, State …
//!     </sqlresultstream:SqlMessage>
//!     <sqlresultstream:SqlResultCode xsi:type="sqlsoaptypes:SqlResultCode">0</sqlresultstream:SqlResultCode>
//!   </sql:sqlbatchResult>
//! </sql:sqlbatchResponse>
//! ```
//!
//! SQL errors are items of the stream, never SOAP faults: a client sees which statement failed
//! and what ran before it. Column names that are not XML names are encoded as SQL Server does
//! (`order total` → `order_x0020_total`).

use super::{Column, Item, SqlType, Value};
use base64::Engine as _;
use std::fmt::Write as _;

const NS_DECLS: &str = concat!(
    " xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"",
    " xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\"",
    " xmlns:sqlsoaptypes=\"http://schemas.microsoft.com/sqlserver/2004/SOAP/types\"",
    " xmlns:sqltypes=\"http://schemas.microsoft.com/sqlserver/2004/sqltypes\"",
    " xmlns:sqlresultstream=\"http://schemas.microsoft.com/sqlserver/2004/SOAP/types/SqlResultStream\"",
    " xmlns:sqlrowcount=\"http://schemas.microsoft.com/sqlserver/2004/SOAP/types/SqlRowCount\"",
    " xmlns:sqlmessage=\"http://schemas.microsoft.com/sqlserver/2004/SOAP/types/SqlMessage\""
);

/// The namespace of each rowset's rows and schema (numbered within the stream, as SQL Server does).
const ROWSET_NS: &str = "urn:schemas-microsoft-com:sql:SqlRowSet";

/// SQL Server's SOAP namespace, of `sqlbatchResponse`.
pub const SQL_NS: &str = "http://schemas.microsoft.com/sqlserver/2004/SOAP";

/// Write `<{method}Response><{method}Result>…</…>` in namespace `ns` (`sqlbatch`: SQL Server's; a
/// named method: its request's) for the items, with the result code. `server` names the source in
/// messages (`sqlite`, `postgres`).
pub fn write_result_stream(method: &str, ns: &str, items: &[Item], server: &str, out: &mut String) {
    let _ = write!(out, "<sql:{method}Response xmlns:sql=\"");
    escape_text(&ns.replace('"', "&quot;"), out);
    let _ = write!(
        out,
        "\"><sql:{method}Result{NS_DECLS} xsi:type=\"sqlresultstream:SqlResultStream\">"
    );
    let mut rowsets = 0;
    let mut failed = false;
    for item in items {
        match item {
            Item::RowSet { columns, rows } => {
                rowsets += 1;
                write_rowset(rowsets, columns, rows, out);
            }
            Item::RowCount(n) => {
                let _ = write!(out, "<sqlresultstream:SqlRowCount xsi:type=\"sqlrowcount:SqlRowCount\"><sqlrowcount:Count>{n}</sqlrowcount:Count></sqlresultstream:SqlRowCount>");
            }
            Item::Message {
                class,
                number,
                state,
                line,
                text,
            } => {
                failed |= *class > 10;
                let _ = write!(out, "<sqlresultstream:SqlMessage xsi:type=\"sqlmessage:SqlMessage\"><sqlmessage:Class>{class}</sqlmessage:Class><sqlmessage:LineNumber>{line}</sqlmessage:LineNumber><sqlmessage:Message>");
                escape_text(text, out);
                let _ = write!(out, "</sqlmessage:Message><sqlmessage:Number>{number}</sqlmessage:Number><sqlmessage:Procedure/><sqlmessage:Server>broker</sqlmessage:Server><sqlmessage:Source>{server}</sqlmessage:Source><sqlmessage:State>{state}</sqlmessage:State></sqlresultstream:SqlMessage>");
            }
        }
    }
    // The batch's return code: 0 when it ran to the end, 1 when an error stopped it.
    let code = u8::from(failed);
    let _ = write!(out, "<sqlresultstream:SqlResultCode xsi:type=\"sqlsoaptypes:SqlResultCode\">{code}</sqlresultstream:SqlResultCode></sql:{method}Result></sql:{method}Response>");
}

fn write_rowset(n: usize, columns: &[Column], rows: &[Vec<Value>], out: &mut String) {
    let names: Vec<String> = columns.iter().map(|c| xml_name(&c.name)).collect();
    let _ = write!(
        out,
        "<sqlresultstream:SqlRowSet xsi:type=\"sqlsoaptypes:SqlRowSet\"><xsd:schema targetNamespace=\"{ROWSET_NS}{n}\" xmlns=\"{ROWSET_NS}{n}\" elementFormDefault=\"qualified\"><xsd:import namespace=\"http://schemas.microsoft.com/sqlserver/2004/sqltypes\" schemaLocation=\"http://schemas.microsoft.com/sqlserver/2004/sqltypes/sqltypes.xsd\"/><xsd:element name=\"row\"><xsd:complexType><xsd:sequence>"
    );
    for (c, name) in columns.iter().zip(&names) {
        let _ = write!(
            out,
            "<xsd:element name=\"{name}\" type=\"sqltypes:{}\" nillable=\"1\"/>",
            c.ty.sql_name()
        );
    }
    out.push_str("</xsd:sequence></xsd:complexType></xsd:element></xsd:schema>");
    for row in rows {
        let _ = write!(out, "<row xmlns=\"{ROWSET_NS}{n}\">");
        for ((value, name), c) in row.iter().zip(&names).zip(columns) {
            write_value(name, c.ty, value, out);
        }
        out.push_str("</row>");
    }
    out.push_str("</sqlresultstream:SqlRowSet>");
}

fn write_value(name: &str, ty: SqlType, value: &Value, out: &mut String) {
    if *value == Value::Null {
        let _ = write!(out, "<{name} xsi:nil=\"true\"/>");
        return;
    }
    let _ = write!(out, "<{name}>");
    match value {
        Value::Null => {}
        Value::Bool(b) => out.push_str(if *b { "1" } else { "0" }),
        Value::Int(i) if ty == SqlType::Bit => out.push_str(if *i != 0 { "1" } else { "0" }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Float(f) if f.is_infinite() => out.push_str(if *f > 0.0 { "INF" } else { "-INF" }),
        Value::Float(f) => {
            let _ = write!(out, "{f:?}");
        }
        Value::Decimal(d) => out.push_str(d),
        Value::Text(t) => escape_text(t, out),
        Value::Bytes(b) => base64::engine::general_purpose::STANDARD.encode_string(b, out),
    }
    let _ = write!(out, "</{name}>");
}

fn escape_text(text: &str, out: &mut String) {
    // XML 1.0 cannot carry most control characters even escaped: they become SQL Server's
    // `_xHHHH_` form rather than an unreadable reply.
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\t' | '\n' => out.push(ch),
            '\r' => out.push_str("&#13;"),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {
                let _ = write!(out, "_x{:04X}_", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// A column name as an XML element name, encoded as SQL Server's FOR XML does: every character
/// not allowed in a name becomes `_xHHHH_`, and so does a `_x` that would read as an escape.
pub fn xml_name(name: &str) -> String {
    if name.is_empty() {
        return "Column1".to_string();
    }
    let mut out = String::with_capacity(name.len());
    let chars: Vec<char> = name.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let allowed = if i == 0 {
            c.is_alphabetic() || c == '_'
        } else {
            c.is_alphanumeric() || matches!(c, '_' | '-' | '.')
        };
        let looks_escaped = c == '_' && chars.get(i + 1) == Some(&'x');
        if allowed && !looks_escaped {
            out.push(c);
        } else {
            let _ = write!(out, "_x{:04X}_", c as u32);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded_as_sql_server_does() {
        assert_eq!(xml_name("id"), "id");
        assert_eq!(xml_name("order total"), "order_x0020_total");
        assert_eq!(xml_name("1st"), "_x0031_st");
        assert_eq!(xml_name("count(*)"), "count_x0028__x002A__x0029_");
    }

    #[test]
    fn a_stream_with_every_kind_of_item_is_well_formed_xml() {
        let items = vec![
            Item::RowSet {
                columns: vec![
                    Column {
                        name: "id".into(),
                        ty: SqlType::Int,
                    },
                    Column {
                        name: "note".into(),
                        ty: SqlType::NVarChar,
                    },
                ],
                rows: vec![
                    vec![Value::Int(1), Value::Text("a<b & \u{1}".into())],
                    vec![Value::Int(2), Value::Null],
                ],
            },
            Item::RowCount(3),
            Item::Message {
                class: 16,
                number: 1,
                state: 1,
                line: 1,
                text: "no such table: x".into(),
            },
        ];
        let mut out = String::new();
        write_result_stream("sqlbatch", SQL_NS, &items, "sqlite", &mut out);
        let doc = xmltree::Element::parse(out.as_bytes()).expect("well-formed");
        assert_eq!(doc.name, "sqlbatchResponse");
        assert!(out.contains("<row xmlns=\"urn:schemas-microsoft-com:sql:SqlRowSet1\"><id>2</id><note xsi:nil=\"true\"/></row>"), "{out}");
        assert!(out.contains("<note>a&lt;b &amp; _x0001_</note>"), "{out}");
        assert!(out.contains("<sqlrowcount:Count>3</sqlrowcount:Count>"));
        assert!(out.contains("<sqlmessage:Class>16</sqlmessage:Class>"));
        assert!(out.contains(">1</sqlresultstream:SqlResultCode>"));
    }
}
