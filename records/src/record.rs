//! # A service's XML to its record, and a record back to XML
//!
//! The request element's children name the record's items, in the layout's order (groups as
//! nested elements, a table's occurrences as repeated elements, fillers never). [`to_record`]
//! checks every value before any byte is written. A value can be refused because it is too long,
//! not numeric, outside its picture, or past its table's limit; an element the layout does not
//! know is refused too. The refusal names the field by its path (`TXN[3]/TXN-AMOUNT`), and
//! nothing reaches the server class.
//!
//! - An absent field takes its `VALUE`, or else spaces (text) or zeros (numbers), as NonStop
//!   SOAP's `UseDDLDefaultValue` did. An absent group takes its items'.
//! - Of an item and the items that `REDEFINES` it, at most one may be given; none means the first.
//! - A `DEPENDING ON` table occurs as often as it is given (within its limits), and its count field
//!   is set to that number. A count given in the XML must agree.
//! - Text is written in the record's charset, padded with spaces, or with NUL bytes for a C server
//!   (`stringTermination="NullTerminated"`: the text, then NULs to the field's end, so that a text
//!   as long as its field has none).
//!
//! [`to_xml`] reads a reply record into XML. It checks the record's length, that every digit is a
//! digit and every text is text in the charset. A record that does not fit its layout is refused
//! with the offset and the field, for the broker to log and answer with a Server fault. Text is
//! written without its trailing padding. Of a redefined item only the first description is read: a
//! reply's alternatives are told apart by the layout chosen for it (`select.rs`).

use crate::charset::Charset;
use crate::layout::{Item, Kind, Layout, Occurs, Value};
use crate::number::{self, Decimal};
use crate::xml::Element;

/// How a server class ends its text fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Termination {
    /// Padded with spaces (COBOL).
    #[default]
    SpacePadded,
    /// Padded with NUL bytes (C).
    NullTerminated,
}

/// How a class's records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    pub charset: Charset,
    pub termination: Termination,
}

/// A request value the record cannot take: the field's path and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub path: String,
    pub message: String,
    pub kind: RefusalKind,
}

/// What kind of refusal (NonStop SOAP gave each its own unmarshal error code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// An element the layout does not have.
    UnknownField,
    /// An item and one that redefines it, both given.
    Redefined,
    /// A value (or a count) the field cannot take.
    Value,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A reply record that does not fit its layout: where, in which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Misfit {
    pub offset: usize,
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Misfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "at offset {}: {}", self.offset, self.message)
        } else {
            write!(
                f,
                "at offset {} ({}): {}",
                self.offset, self.path, self.message
            )
        }
    }
}

// ---- XML to record -----------------------------------------------------------------------------

/// The record for the request element `request` (its children are the record's items).
pub fn to_record(layout: &Layout, request: &Element, enc: Encoding) -> Result<Vec<u8>, Refused> {
    let mut out = vec![0u8; layout.max_len()];
    let mut w = Writer {
        enc,
        out: &mut out,
        depending_count: None,
        counter_at: layout.depending.as_ref().map(|d| d.counter_offset),
        counter_given: None,
    };
    w.group(&layout.root, Some(request), 0, "")?;
    let len = match &layout.depending {
        Some(d) => {
            let n = w.depending_count.unwrap_or(d.min);
            // The count field says how many occurrences follow: set from them, or checked.
            let count = Decimal {
                unscaled: i128::try_from(n).unwrap_or(i128::MAX),
                scale: 0,
            };
            if let Some((v, path)) = &w.counter_given {
                if v.rescale(0) != Some(count) {
                    return refused(
                        path,
                        format!(
                            "says {} but {} is given {n} times",
                            v.to_text(),
                            d.table.join("/")
                        ),
                    );
                }
            }
            let count =
                number::fit(count, &d.counter_pic).or_else(|m| refused(&d.counter.join("/"), m))?;
            let size = d.counter_pic.size().unwrap_or(0);
            number::encode(
                count,
                &d.counter_pic,
                enc.charset,
                &mut out[d.counter_offset..d.counter_offset + size],
            );
            d.offset + n * d.size
        }
        None => layout.root.size,
    };
    out.truncate(len);
    Ok(out)
}

struct Writer<'a> {
    enc: Encoding,
    out: &'a mut [u8],
    /// How many occurrences the DEPENDING ON table was given.
    depending_count: Option<usize>,
    /// Where the table's count field is, and the value and path the XML gave it.
    counter_at: Option<usize>,
    counter_given: Option<(Decimal, String)>,
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

fn refused<T>(path: &str, message: impl Into<String>) -> Result<T, Refused> {
    refused_as(RefusalKind::Value, path, message)
}

fn refused_as<T>(kind: RefusalKind, path: &str, message: impl Into<String>) -> Result<T, Refused> {
    Err(Refused {
        path: path.to_string(),
        message: message.into(),
        kind,
    })
}

impl Writer<'_> {
    /// Write `group`'s items at `at` from `given` (None: every item takes its default).
    fn group(
        &mut self,
        group: &Item,
        given: Option<&Element>,
        at: usize,
        path: &str,
    ) -> Result<(), Refused> {
        let items = group.children();
        if let Some(e) = given {
            // Every element names an item; text directly in a group is not a value of anything.
            for child in &e.children {
                if !items.iter().any(|i| !i.filler && i.name == child.name) {
                    return refused_as(
                        RefusalKind::UnknownField,
                        &join(path, &child.name),
                        "no such field in the record",
                    );
                }
            }
            if !e.text.trim().is_empty() {
                return refused(
                    if path.is_empty() { &group.name } else { path },
                    "a group holds fields, not text",
                );
            }
        }
        // Fillers and absent items first take their defaults; the given ones overwrite them.
        for (index, item) in items.iter().enumerate() {
            let occurrences: Vec<&Element> = given
                .map(|e| {
                    e.children
                        .iter()
                        .filter(|c| !item.filler && c.name == item.name)
                        .collect()
                })
                .unwrap_or_default();
            // Of an item and its redefinitions at most one is given. The first writes its values
            // (or defaults); a redefinition is written only when given, over them.
            if item.redefines.is_some() && occurrences.is_empty() {
                continue;
            }
            if item.redefines.is_none() {
                let given_names =
                    |i: &Item| given.is_some_and(|e| e.children.iter().any(|c| c.name == i.name));
                let family: Vec<&str> = items
                    .iter()
                    .enumerate()
                    .filter(|(k, i)| {
                        (*k == index || i.redefines == Some(index)) && !i.filler && given_names(i)
                    })
                    .map(|(_, i)| i.name.as_str())
                    .collect();
                if family.len() > 1 {
                    return refused_as(
                        RefusalKind::Redefined,
                        &join(path, family[1]),
                        format!("{} describe the same bytes: give one", family.join(" and ")),
                    );
                }
            }
            self.item(
                item,
                &occurrences,
                at + item.offset,
                &join(path, &item.name),
            )?;
        }
        Ok(())
    }

    fn item(
        &mut self,
        item: &Item,
        given: &[&Element],
        at: usize,
        path: &str,
    ) -> Result<(), Refused> {
        let max = item.occurs.max();
        if given.len() > max {
            return refused(
                path,
                format!("occurs at most {max} times, given {}", given.len()),
            );
        }
        if let Occurs::Depending { min, .. } = &item.occurs {
            if given.len() < *min {
                return refused(
                    path,
                    format!("occurs at least {min} times, given {}", given.len()),
                );
            }
            self.depending_count = Some(given.len());
        }
        let written = match item.occurs {
            // Only the given occurrences of a DEPENDING ON table are in the record.
            Occurs::Depending { .. } => given.len(),
            _ => max,
        };
        for n in 0..written {
            let here = at + n * item.size;
            let path = if item.occurs.is_table() {
                format!("{path}[{}]", n + 1)
            } else {
                path.to_string()
            };
            let e = given.get(n).copied();
            match &item.kind {
                Kind::Group(_) => self.group(item, e, here, &path)?,
                _ => self.field(item, e, here, &path)?,
            }
        }
        Ok(())
    }

    fn field(
        &mut self,
        item: &Item,
        given: Option<&Element>,
        at: usize,
        path: &str,
    ) -> Result<(), Refused> {
        let enc = self.enc;
        let counter_here = self.counter_at == Some(at);
        let mut counter = None;
        let out = &mut self.out[at..at + item.size];
        if let Some(e) = given {
            if let Some(child) = e.children.first() {
                return refused(
                    &join(path, &child.name),
                    "a field holds a value, not elements",
                );
            }
        }
        // An empty element is an absent value, as for NonStop's UseDDLDefaultValue.
        let text = given.map(|e| e.text.as_str()).filter(|t| !t.is_empty());
        match (&item.kind, text) {
            (Kind::Text, Some(t)) => {
                let bytes = enc.charset.encode(t).or_else(|c| {
                    refused(
                        path,
                        format!("{c:?} cannot be written in {}", enc.charset.name()),
                    )
                })?;
                if bytes.len() > item.size {
                    return refused(
                        path,
                        format!(
                            "{} bytes in {}; the field holds {}",
                            bytes.len(),
                            enc.charset.name(),
                            item.size
                        ),
                    );
                }
                text_into(enc, out, &bytes);
            }
            (Kind::Number(pic), Some(t)) => {
                let v = Decimal::parse(t)
                    .and_then(|d| number::fit(d, pic))
                    .or_else(|m| refused(path, m))?;
                if counter_here {
                    counter = Some((v, path.to_string()));
                }
                number::encode(v, pic, enc.charset, out);
            }
            (kind, None) => default_into(enc, item, kind, out),
            (Kind::Group(_), Some(_)) => {}
        }
        if counter.is_some() {
            self.counter_given = counter;
        }
        Ok(())
    }
}

/// Text bytes into their field, padded as the class pads.
fn text_into(enc: Encoding, out: &mut [u8], bytes: &[u8]) {
    out[..bytes.len()].copy_from_slice(bytes);
    let pad = match enc.termination {
        Termination::SpacePadded => enc.charset.space(),
        Termination::NullTerminated => 0,
    };
    out[bytes.len()..].fill(pad);
}

/// An absent field's bytes: its VALUE, or spaces or zeros.
fn default_into(enc: Encoding, item: &Item, kind: &Kind, out: &mut [u8]) {
    let charset = enc.charset;
    match (&item.value, kind) {
        (Some(Value::LowValues), _) => out.fill(0x00),
        (Some(Value::HighValues), _) => out.fill(0xFF),
        (Some(Value::Text(t)), Kind::Text) => {
            // Checked against the size when the copybook was read; a character the charset
            // lacks becomes a space rather than failing a request that did not give it.
            let bytes = charset.encode(t).unwrap_or_default();
            let bytes = &bytes[..bytes.len().min(out.len())];
            text_into(enc, out, bytes);
        }
        (Some(Value::Number(n)), Kind::Number(pic)) => {
            if let Ok(v) = number::fit(*n, pic) {
                number::encode(v, pic, charset, out);
            }
        }
        (_, Kind::Number(pic)) => number::encode(
            Decimal {
                unscaled: 0,
                scale: pic.scale,
            },
            pic,
            charset,
            out,
        ),
        // Text (and fillers) without a VALUE, or VALUE SPACES.
        _ => text_into(enc, out, &[]),
    }
}

// ---- record to XML -----------------------------------------------------------------------------

/// The reply record `bytes` as XML: `<{root}>` (with `attributes` written as given, such as a
/// namespace declaration) holding the record's items.
pub fn to_xml(
    layout: &Layout,
    bytes: &[u8],
    enc: Encoding,
    root: &str,
    attributes: &str,
) -> Result<String, Misfit> {
    let len = match &layout.depending {
        Some(d) => {
            let counter = d.counter_offset..d.counter_offset + d.counter_pic.size().unwrap_or(0);
            let Some(raw) = bytes.get(counter.clone()) else {
                return Err(Misfit {
                    offset: bytes.len(),
                    path: d.counter.join("/"),
                    message: format!(
                        "the record ends before its count field ({} bytes)",
                        bytes.len()
                    ),
                });
            };
            let n = number::decode(raw, &d.counter_pic, enc.charset).map_err(|(at, m)| Misfit {
                offset: counter.start + at,
                path: d.counter.join("/"),
                message: m,
            })?;
            let n = usize::try_from(n.unscaled)
                .ok()
                .filter(|n| (d.min..=d.max).contains(n))
                .ok_or_else(|| Misfit {
                    offset: counter.start,
                    path: d.counter.join("/"),
                    message: format!(
                        "a count of {} is outside {}..={}",
                        n.to_text(),
                        d.min,
                        d.max
                    ),
                })?;
            d.offset + n * d.size
        }
        None => layout.root.size,
    };
    if bytes.len() != len {
        return Err(Misfit {
            offset: bytes.len().min(len),
            path: String::new(),
            message: format!(
                "the record is {} bytes; layout {} makes it {len}",
                bytes.len(),
                layout.name
            ),
        });
    }
    let mut out = String::with_capacity(bytes.len() * 2 + 64);
    out.push('<');
    out.push_str(root);
    if !attributes.is_empty() {
        out.push(' ');
        out.push_str(attributes);
    }
    out.push('>');
    let r = Reader { enc, bytes, len };
    r.group(&layout.root, 0, "", &mut out)?;
    out.push_str("</");
    out.push_str(root);
    out.push('>');
    Ok(out)
}

struct Reader<'a> {
    enc: Encoding,
    bytes: &'a [u8],
    len: usize,
}

impl Reader<'_> {
    fn group(&self, group: &Item, at: usize, path: &str, out: &mut String) -> Result<(), Misfit> {
        for item in group.children() {
            if item.filler || item.redefines.is_some() {
                continue;
            }
            let item_path = join(path, &item.name);
            let n = match &item.occurs {
                // The occurrences the record holds (its length was checked by the count).
                Occurs::Depending { .. } => (self.len - (at + item.offset)) / item.size.max(1),
                o => o.max(),
            };
            for k in 0..n {
                let here = at + item.offset + k * item.size;
                let p = if item.occurs.is_table() {
                    format!("{item_path}[{}]", k + 1)
                } else {
                    item_path.clone()
                };
                out.push('<');
                out.push_str(&item.name);
                out.push('>');
                match &item.kind {
                    Kind::Group(_) => self.group(item, here, &p, out)?,
                    kind => self.field(item, kind, here, &p, out)?,
                }
                out.push_str("</");
                out.push_str(&item.name);
                out.push('>');
            }
        }
        Ok(())
    }

    fn field(
        &self,
        item: &Item,
        kind: &Kind,
        at: usize,
        path: &str,
        out: &mut String,
    ) -> Result<(), Misfit> {
        let raw = &self.bytes[at..at + item.size];
        match kind {
            Kind::Text => {
                let end = match self.enc.termination {
                    Termination::NullTerminated => {
                        raw.iter().position(|&b| b == 0).unwrap_or(raw.len())
                    }
                    Termination::SpacePadded => raw.len(),
                };
                let text = self.enc.charset.decode(&raw[..end]).map_err(|k| Misfit {
                    offset: at + k,
                    path: path.to_string(),
                    message: format!(
                        "byte 0x{:02X} is not {} text",
                        raw[k],
                        self.enc.charset.name()
                    ),
                })?;
                let text = text.trim_end_matches(' ');
                if let Some(bad) = text.chars().find(|&c| !xml_char(c)) {
                    return Err(Misfit {
                        offset: at,
                        path: path.to_string(),
                        message: format!("U+{:04X} cannot be written in XML", u32::from(bad)),
                    });
                }
                crate::xml::escape_into(text, out);
            }
            Kind::Number(pic) => {
                let v = number::decode(raw, pic, self.enc.charset).map_err(|(k, m)| Misfit {
                    offset: at + k,
                    path: path.to_string(),
                    message: m,
                })?;
                out.push_str(&v.to_text());
            }
            Kind::Group(_) => {}
        }
        Ok(())
    }
}

/// Whether XML 1.0 can carry `c` in text.
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::copybook;

    const SAMPLE: &str = include_str!("../samples/acctinq.cpy");

    fn layouts() -> Vec<Layout> {
        copybook::parse(SAMPLE).unwrap_or_else(|e| panic!("{e}"))
    }

    const ASCII: Encoding = Encoding {
        charset: Charset::Ascii,
        termination: Termination::SpacePadded,
    };

    fn xml(text: &str) -> Element {
        Element::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_request_becomes_its_record_with_defaults() {
        let req = &layouts()[0];
        let rec = to_record(
            req,
            &xml("<Inquiry><ACCOUNT-NO>4711</ACCOUNT-NO></Inquiry>"),
            ASCII,
        )
        .expect("record");
        // REQUEST-CODE's VALUE, the account zero-filled, BRANCH spaces, MAX-TXNS VALUE 10 (COMP).
        assert_eq!(rec, b"INQ10000004711      \x00\x0A".to_vec());
        let ebcdic = Encoding {
            charset: Charset::Ibm037,
            termination: Termination::SpacePadded,
        };
        let rec = to_record(
            req,
            &xml("<Inquiry><ACCOUNT-NO>1</ACCOUNT-NO><BRANCH>NY</BRANCH></Inquiry>"),
            ebcdic,
        )
        .expect("record");
        assert_eq!(&rec[..4], &[0xC9, 0xD5, 0xD8, 0xF1], "INQ1 in EBCDIC");
        assert_eq!(&rec[14..20], &[0xD5, 0xE8, 0x40, 0x40, 0x40, 0x40]);
        let c = Encoding {
            charset: Charset::Ascii,
            termination: Termination::NullTerminated,
        };
        let rec =
            to_record(req, &xml("<Inquiry><BRANCH>NY</BRANCH></Inquiry>"), c).expect("record");
        assert_eq!(&rec[14..20], b"NY\0\0\0\0");
    }

    #[test]
    fn every_bad_value_is_refused_with_its_path() {
        let req = &layouts()[0];
        for (body, path, says) in [
            (
                "<ACCOUNT-NO>12345678901</ACCOUNT-NO>",
                "ACCOUNT-NO",
                "more digits",
            ),
            (
                "<ACCOUNT-NO>12a</ACCOUNT-NO>",
                "ACCOUNT-NO",
                "not a decimal",
            ),
            ("<ACCOUNT-NO>-1</ACCOUNT-NO>", "ACCOUNT-NO", "unsigned"),
            (
                "<ACCOUNT-NO>1.5</ACCOUNT-NO>",
                "ACCOUNT-NO",
                "decimal places",
            ),
            ("<BRANCH>TOOLONGX</BRANCH>", "BRANCH", "holds 6"),
            (
                "<BRANCH>café</BRANCH>",
                "BRANCH",
                "cannot be written in US-ASCII",
            ),
            ("<NOPE>1</NOPE>", "NOPE", "no such field"),
            ("<BRANCH><X/></BRANCH>", "BRANCH/X", "not elements"),
            ("<MAX-TXNS>10000</MAX-TXNS>", "MAX-TXNS", "more digits"),
            (
                "<BRANCH>A</BRANCH><BRANCH>B</BRANCH>",
                "BRANCH",
                "at most 1",
            ),
        ] {
            let e =
                to_record(req, &xml(&format!("<Inquiry>{body}</Inquiry>")), ASCII).expect_err(body);
            assert_eq!(e.path, path, "{body}: {e}");
            assert!(e.message.contains(says), "{body}: {e}");
        }
    }

    #[test]
    fn a_depending_table_sets_its_count_and_the_record_length() {
        let reply = &layouts()[1];
        let body = "<R><REPLY-STATUS>00</REPLY-STATUS><ACCOUNT-NO>4711</ACCOUNT-NO><HOLDER-NAME>Ann Archer</HOLDER-NAME><BALANCE>-1234.50</BALANCE>\
                    <OPENED><OPENED-YEAR>2001</OPENED-YEAR><OPENED-MONTH>2</OPENED-MONTH><OPENED-DAY>3</OPENED-DAY></OPENED>\
                    <TXN><TXN-DATE>20261201</TXN-DATE><TXN-AMOUNT>-12.50</TXN-AMOUNT></TXN><TXN><TXN-DATE>20261202</TXN-DATE><TXN-AMOUNT>100</TXN-AMOUNT></TXN></R>";
        let rec = to_record(reply, &xml(body), ASCII).expect("record");
        assert_eq!(rec.len(), 61 + 2 * 18);
        assert_eq!(&rec[59..61], &[0, 2], "TXN-COUNT set from the occurrences");
        assert_eq!(
            &rec[42..49],
            &[0x00, 0x00, 0x00, 0x01, 0x23, 0x45, 0x0D],
            "BALANCE packed"
        );
        assert_eq!(&rec[69..79], b"-000001250");
        // Back to XML: the same values, text without its padding, the filler not shown.
        let back = to_xml(reply, &rec, ASCII, "R", "").expect("fits");
        assert_eq!(
            back,
            "<R><REPLY-STATUS>00</REPLY-STATUS><ACCOUNT-NO>4711</ACCOUNT-NO><HOLDER-NAME>Ann Archer</HOLDER-NAME><BALANCE>-1234.50</BALANCE>\
             <OPENED><OPENED-YEAR>2001</OPENED-YEAR><OPENED-MONTH>2</OPENED-MONTH><OPENED-DAY>3</OPENED-DAY></OPENED>\
             <TXN-COUNT>2</TXN-COUNT><TXN><TXN-DATE>20261201</TXN-DATE><TXN-AMOUNT>-12.50</TXN-AMOUNT></TXN><TXN><TXN-DATE>20261202</TXN-DATE><TXN-AMOUNT>100.00</TXN-AMOUNT></TXN></R>"
        );
        // A count given in the XML must agree with the occurrences; 11 are too many.
        let wrong = body
            .replace("<TXN>", "<TXN-COUNT>3</TXN-COUNT><TXN>")
            .replacen("<TXN-COUNT>3</TXN-COUNT>", "", 1);
        let e = to_record(reply, &xml(&wrong), ASCII).expect_err("disagrees");
        assert_eq!(e.path, "TXN-COUNT", "{e}");
        let many = format!("<R>{}</R>", "<TXN><TXN-DATE>1</TXN-DATE></TXN>".repeat(11));
        let e = to_record(reply, &xml(&many), ASCII).expect_err("too many");
        assert!(e.message.contains("at most 10"), "{e}");
    }

    #[test]
    fn a_reply_that_does_not_fit_is_refused_with_its_offset() {
        let reply = &layouts()[1];
        let good =
            to_record(reply, &xml("<R><ACCOUNT-NO>1</ACCOUNT-NO></R>"), ASCII).expect("record");
        assert_eq!(good.len(), 61);
        let mut short = good.clone();
        short.pop();
        let e = to_xml(reply, &short, ASCII, "R", "").expect_err("short");
        assert!(e.message.contains("60 bytes"), "{e}");
        let mut bad = good.clone();
        bad[5] = b'x';
        let e = to_xml(reply, &bad, ASCII, "R", "").expect_err("not a digit");
        assert_eq!((e.offset, e.path.as_str()), (5, "ACCOUNT-NO"), "{e}");
        let mut count = good.clone();
        count[60] = 11;
        let e = to_xml(reply, &count, ASCII, "R", "").expect_err("count");
        assert_eq!(e.offset, 59, "{e}");
        let mut packed = good;
        packed[48] = 0x17;
        let e = to_xml(reply, &packed, ASCII, "R", "").expect_err("packed sign");
        assert_eq!((e.offset, e.path.as_str()), (48, "BALANCE"), "{e}");
    }

    #[test]
    fn redefinitions_take_one_of_them() {
        let l = &copybook::parse("01 R.\n 05 BODY PIC X(4).\n 05 NUM REDEFINES BODY PIC 9(4).\n")
            .expect("ok")[0];
        assert_eq!(
            to_record(l, &xml("<R><NUM>12</NUM></R>"), ASCII).expect("ok"),
            b"0012"
        );
        assert_eq!(
            to_record(l, &xml("<R><BODY>ab</BODY></R>"), ASCII).expect("ok"),
            b"ab  "
        );
        assert_eq!(to_record(l, &xml("<R/>"), ASCII).expect("ok"), b"    ");
        let e = to_record(l, &xml("<R><BODY>a</BODY><NUM>1</NUM></R>"), ASCII).expect_err("both");
        assert!(e.message.contains("same bytes"), "{e}");
    }
}
