//! # The second syntax: a field list in TOML, with TAL-like types
//!
//! For a server class written in C or TAL there is no copybook. Its records can be described as
//! field lists instead:
//!
//! ```toml
//! [[layout]]
//! name = "ACCTINQ-REQUEST"
//! fields = [
//!   { name = "REQUEST-CODE", type = "string", length = 4, value = "INQ1" },
//!   { name = "ACCOUNT-NO", type = "zoned", digits = 10 },
//!   { name = "MAX-TXNS", type = "int16", value = 10 },
//!   { name = "BALANCE", type = "packed", digits = 13, scale = 2, signed = true },
//!   { name = "OPENED", fields = [
//!       { name = "YEAR", type = "zoned", digits = 4 },
//!   ] },
//!   { name = "TXN-COUNT", type = "int16" },
//!   { name = "TXN", occurs = 10, depending_on = "TXN-COUNT", fields = [
//!       { name = "TXN-DATE", type = "zoned", digits = 8 },
//!   ] },
//! ]
//! ```
//!
//! The types: `string` (`length` bytes of text; `filler = true` for bytes the XML does not show);
//! `zoned` and `packed` (`digits`, `scale`, `signed`); `int16`, `int32`, `int64` (TAL's `INT`,
//! `INT(32)`, `INT(64)`: signed binary of 4, 9 and 18 digits, `scale` for TAL's `FIXED(s)`), and
//! `uint16`, `uint32`, `uint64`. A field with `fields` is a group. `occurs` makes a table,
//! `depending_on` makes its count another field's (`min_occurs`, default 0), and `redefines`
//! names an earlier sibling.
//!
//! A field list is turned into the copybook it stands for and read by the same reader, so both
//! syntaxes make the same layouts with the same checks. Its errors name the field, not a line.

use crate::copybook;
use crate::layout::Layout;
use serde::Deserialize;

/// A field list file: its layouts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldFile {
    layout: Vec<LayoutDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LayoutDef {
    name: String,
    fields: Vec<FieldDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldDef {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, rename = "type")]
    ty: Option<String>,
    #[serde(default)]
    length: Option<usize>,
    #[serde(default)]
    digits: Option<u8>,
    #[serde(default)]
    scale: Option<u8>,
    #[serde(default)]
    signed: Option<bool>,
    #[serde(default)]
    filler: bool,
    #[serde(default)]
    occurs: Option<usize>,
    #[serde(default)]
    min_occurs: Option<usize>,
    #[serde(default)]
    depending_on: Option<String>,
    #[serde(default)]
    redefines: Option<String>,
    #[serde(default)]
    value: Option<toml::Value>,
    #[serde(default)]
    fields: Option<Vec<FieldDef>>,
}

/// Read a field list file into its layouts. The error names the layout and field.
pub fn parse(text: &str) -> Result<Vec<Layout>, String> {
    let file: FieldFile = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut copy = String::new();
    // What each line of the generated copybook describes, for its errors.
    let mut lines: Vec<String> = Vec::new();
    for l in &file.layout {
        lines.push(l.name.clone());
        copy.push_str(&format!("01 {}.\n", name_word(&l.name, &l.name)?));
        for f in &l.fields {
            field(f, 5, &l.name, &mut copy, &mut lines)?;
        }
    }
    copybook::parse(&copy).map_err(|e| {
        let at = lines
            .get(e.line.saturating_sub(1))
            .cloned()
            .unwrap_or_default();
        format!("{at}: {}", e.message)
    })
}

/// A name as a copybook word: letters, digits and hyphens.
fn name_word(name: &str, path: &str) -> Result<String, String> {
    if name.is_empty()
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        || name.starts_with('-')
    {
        return Err(format!(
            "{path}: a name is letters, digits and hyphens ({name:?})"
        ));
    }
    Ok(name.to_string())
}

fn field(
    f: &FieldDef,
    level: u8,
    parent: &str,
    copy: &mut String,
    lines: &mut Vec<String>,
) -> Result<(), String> {
    let shown = f.name.clone().unwrap_or_else(|| "FILLER".to_string());
    let path = format!("{parent}/{shown}");
    if level > 49 {
        return Err(format!("{path}: nested deeper than 49 levels"));
    }
    let name = if f.filler || f.name.is_none() {
        "FILLER".to_string()
    } else {
        name_word(&shown, &path)?
    };
    let mut line = format!("{level:02} {name}");
    if let Some(r) = &f.redefines {
        line.push_str(&format!(" REDEFINES {}", name_word(r, &path)?));
    }
    match (&f.fields, &f.ty) {
        (Some(_), Some(_)) => {
            return Err(format!("{path}: a field has a type or fields, not both"))
        }
        (None, None) => {
            return Err(format!(
                "{path}: needs a type (string, zoned, packed, int16…) or fields"
            ))
        }
        (Some(_), None) => {}
        (None, Some(ty)) => line.push_str(&picture(f, ty, &path)?),
    }
    match (f.occurs, &f.depending_on) {
        (Some(n), Some(on)) => line.push_str(&format!(
            " OCCURS {} TO {n} TIMES DEPENDING ON {}",
            f.min_occurs.unwrap_or(0),
            name_word(on, &path)?
        )),
        (Some(n), None) => line.push_str(&format!(" OCCURS {n} TIMES")),
        (None, Some(_)) => {
            return Err(format!(
                "{path}: depending_on needs occurs (the most occurrences)"
            ))
        }
        (None, None) => {}
    }
    if let Some(v) = &f.value {
        line.push_str(" VALUE ");
        match v {
            toml::Value::String(s) => line.push_str(&format!("\"{}\"", s.replace('"', "\"\""))),
            toml::Value::Integer(i) => line.push_str(&i.to_string()),
            toml::Value::Float(x) => line.push_str(&x.to_string()),
            _ => return Err(format!("{path}: value is a string or a number")),
        }
    }
    line.push_str(".\n");
    copy.push_str(&line);
    lines.push(path.clone());
    for child in f.fields.iter().flatten() {
        field(child, level + 5, &path, copy, lines)?;
    }
    Ok(())
}

/// The PIC and USAGE of a typed field.
fn picture(f: &FieldDef, ty: &str, path: &str) -> Result<String, String> {
    let number = |digits: u8, signed: bool, usage: &str| -> Result<String, String> {
        let scale = f.scale.unwrap_or(0);
        if digits == 0 || scale > digits {
            return Err(format!(
                "{path}: digits must be at least 1 and at least scale"
            ));
        }
        let int = digits - scale;
        let mut pic = String::from(if signed { " PIC S" } else { " PIC " });
        if int > 0 {
            pic.push_str(&format!("9({int})"));
        }
        if scale > 0 {
            pic.push_str(&format!("V9({scale})"));
        }
        pic.push_str(usage);
        Ok(pic)
    };
    let digits = || f.digits.ok_or_else(|| format!("{path}: {ty} needs digits"));
    match ty {
        "string" | "char" => {
            let n = f.length.ok_or_else(|| format!("{path}: string needs length"))?;
            Ok(format!(" PIC X({n})"))
        }
        "zoned" => number(digits()?, f.signed.unwrap_or(false), ""),
        "packed" => number(digits()?, f.signed.unwrap_or(false), " COMP-3"),
        "int16" => number(4, true, " COMP"),
        "int32" => number(9, true, " COMP"),
        "int64" => number(18, true, " COMP"),
        "uint16" => number(4, false, " COMP"),
        "uint32" => number(9, false, " COMP"),
        "uint64" => number(18, false, " COMP"),
        other => Err(format!(
            "{path}: type {other:?} is not one of string, zoned, packed, int16, int32, int64, uint16, uint32, uint64"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{Kind, NumberPic, Usage};

    #[test]
    fn a_field_list_makes_the_layout_its_copybook_would() {
        let toml = r#"
            [[layout]]
            name = "ACCTINQ-REQUEST"
            fields = [
              { name = "REQUEST-CODE", type = "string", length = 4, value = "INQ1" },
              { name = "ACCOUNT-NO", type = "zoned", digits = 10 },
              { name = "BRANCH", type = "string", length = 6 },
              { name = "MAX-TXNS", type = "int16", value = 10 },
            ]
        "#;
        let from_fields = parse(toml).expect("parsed");
        let from_copybook =
            copybook::parse(include_str!("../samples/acctinq.cpy")).expect("parsed");
        // The same offsets, sizes, kinds and defaults (BRANCH's VALUE SPACES is the default
        // anyway, so it is the one difference).
        let a = &from_fields[0].root;
        let b = &from_copybook[0].root;
        for (x, y) in a.children().iter().zip(b.children()) {
            assert_eq!(
                (&x.name, x.offset, x.size, &x.kind),
                (&y.name, y.offset, y.size, &y.kind)
            );
        }
        assert_eq!(from_fields[0].max_len(), from_copybook[0].max_len());
    }

    #[test]
    fn groups_tables_and_tal_types() {
        let toml = r#"
            [[layout]]
            name = "R"
            fields = [
              { name = "AMOUNT", type = "int64", scale = 2 },
              { name = "N", type = "uint16" },
              { filler = true, type = "string", length = 2 },
              { name = "T", occurs = 5, depending_on = "N", min_occurs = 1, fields = [
                  { name = "P", type = "packed", digits = 5, scale = 2, signed = true },
              ] },
            ]
        "#;
        let l = &parse(toml).expect("parsed")[0];
        let amount = l.root.find(&["AMOUNT"]).expect("AMOUNT");
        assert!(matches!(
            amount.kind,
            Kind::Number(NumberPic {
                usage: Usage::Binary,
                digits: 18,
                scale: 2,
                signed: true,
                ..
            })
        ));
        assert_eq!(amount.size, 8);
        let d = l.depending.as_ref().expect("table");
        assert_eq!((d.offset, d.size, d.min, d.max), (12, 3, 1, 5));
    }

    #[test]
    fn errors_name_the_field() {
        for (fields, says) in [
            (
                r#"{ name = "A", type = "zoned" }"#,
                "R/A: zoned needs digits",
            ),
            (r#"{ name = "A", type = "float" }"#, "R/A: type \"float\""),
            (
                r#"{ name = "A", type = "string", length = 2, value = "TOO LONG" }"#,
                "R/A: A: VALUE",
            ),
            (
                r#"{ name = "A B", type = "string", length = 2 }"#,
                "R/A B: a name is",
            ),
            (r#"{ name = "A" }"#, "R/A: needs a type"),
        ] {
            let toml = format!("[[layout]]\nname = \"R\"\nfields = [{fields}]\n");
            let e = parse(&toml).expect_err(fields);
            assert!(e.contains(says), "{fields}: {e}");
        }
        assert!(parse("[[layout]]\nname = \"R\"\nfields = [{ name = \"A\", type = \"zoned\", digits = 2, colour = 1 }]\n").is_err());
    }
}
