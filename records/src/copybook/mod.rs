//! # Reading a COBOL copybook into layouts
//!
//! The subset legacy server classes' records use:
//!
//! - level numbers 01–49 (each `01` a record; 77 as a record of one item), and `FILLER` or
//!   unnamed items;
//! - `PIC`/`PICTURE` `X(n)` (or `XXX`) for text, `9(n)`, `S9(n)V9(m)`, `9(3)V99` for numbers;
//! - `USAGE` `DISPLAY` (zoned decimal), `COMP`/`BINARY`/`COMP-4`/`COMP-5` (big-endian 2, 4 or 8
//!   bytes), `COMP-3`/`PACKED-DECIMAL`, with or without the word `USAGE`, on the item or on its
//!   group (it applies to every item below);
//! - `SIGN IS LEADING|TRAILING [SEPARATE [CHARACTER]]`;
//! - `OCCURS n [TIMES]` and `OCCURS m TO n [TIMES] DEPENDING ON name` (the table must end the
//!   record, as standard COBOL requires), with `INDEXED BY` and `ASCENDING/DESCENDING KEY`
//!   accepted and ignored;
//! - `REDEFINES name` (a sibling before it);
//! - `VALUE [IS]` a quoted literal, a number, `SPACE(S)`, `ZERO(S)`/`ZEROES`, `LOW-VALUE(S)`,
//!   `HIGH-VALUE(S)`;
//! - level-88 condition names (read and dropped: they add no storage);
//! - fixed format (sequence numbers in columns 1–6, `*` or `/` in column 7 for a comment, the
//!   text in 8–72) or free format (`*>` comments), told apart by the lines themselves.
//!
//! Refused with the line and what to do instead: edited pictures (`Z`, `,`, `.`, `-`, `+`, `$`,
//! `CR`, `DB`, `B`, `/`, `*`), `P` scaling, `A` and `N` (national) pictures, `COMP-1`/`COMP-2`
//! floating point, `SYNCHRONIZED` (slack bytes depend on the compiler), `66 RENAMES`, `COPY` and
//! `REPLACING`, and a `DEPENDING ON` table that does not end its record.

mod entry;
mod picture;
#[cfg(test)]
mod tests;
mod tree;

use crate::layout::Layout;
use entry::entries;
use tree::build;

/// A copybook that cannot be read: the line (1-based) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopybookError {
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for CopybookError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for CopybookError {}

pub(crate) fn err<T>(line: usize, message: impl Into<String>) -> Result<T, CopybookError> {
    Err(CopybookError {
        line,
        message: message.into(),
    })
}

/// Every record (`01` or `77` item) of a copybook, in order.
pub fn parse(text: &str) -> Result<Vec<Layout>, CopybookError> {
    let tokens = tokenize(&source_text(text))?;
    let entries = entries(&tokens)?;
    build(entries)
}

// ---- source format -----------------------------------------------------------------------------

/// The copybook's text with comments removed and, in fixed format, only columns 8–72 kept; one
/// output line per input line, so that line numbers stay right.
fn source_text(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    // Fixed format: every line that holds code has it from column 8 on (what is before is
    // sequence numbers or blanks), or a comment mark in column 7.
    let fixed = lines.iter().filter(|l| !l.trim().is_empty()).all(|l| {
        let b = l.as_bytes();
        let area = &b[..b.len().min(6)];
        let indicator = b.get(6).copied().unwrap_or(b' ');
        area.iter().all(|c| c.is_ascii_digit() || *c == b' ')
            && matches!(indicator, b' ' | b'*' | b'/' | b'-')
            && (b.len() > 7 || indicator != b' ' || l.trim().is_empty())
    }) && lines.iter().any(|l| l.len() > 7);
    lines
        .iter()
        .map(|l| {
            if fixed {
                let b = l.as_bytes();
                if matches!(b.get(6), Some(b'*' | b'/')) {
                    return String::new();
                }
                let end = b.len().min(72);
                l.get(7..end).unwrap_or("").to_string()
            } else {
                match l.find("*>") {
                    Some(at) => l[..at].to_string(),
                    None if l.trim_start().starts_with('*') => String::new(),
                    None => l.to_string(),
                }
            }
        })
        .collect()
}

// ---- tokens ------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Word(String),
    /// A quoted literal's text.
    Quoted(String),
    /// The period that ends an entry.
    Period,
}

/// Words, quoted literals and entry-ending periods, each with its line. A period ends an entry
/// when a space, the end of a line or the end of the text follows it; inside a word (`9(3)V99`
/// needs none, but `1.5` does) it is part of the word.
fn tokenize(lines: &[String]) -> Result<Vec<(usize, Tok)>, CopybookError> {
    let mut out = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let line_no = n + 1;
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c.is_whitespace() || c == ',' || c == ';' {
                i += 1;
                continue;
            }
            if c == '"' || c == '\'' {
                let mut j = i + 1;
                let mut text = String::new();
                loop {
                    if j >= chars.len() {
                        return err(
                            line_no,
                            "a literal is not closed on its line (continuation lines are not read)",
                        );
                    }
                    if chars[j] == c {
                        // A doubled quote is one quote character.
                        if chars.get(j + 1) == Some(&c) {
                            text.push(c);
                            j += 2;
                            continue;
                        }
                        break;
                    }
                    text.push(chars[j]);
                    j += 1;
                }
                out.push((line_no, Tok::Quoted(text)));
                i = j + 1;
                continue;
            }
            let start = i;
            while i < chars.len() && !chars[i].is_whitespace() && chars[i] != ';' {
                // A comma followed by a space separates; inside a word (rare) it stays.
                if chars[i] == ',' && chars.get(i + 1).is_none_or(|n| n.is_whitespace()) {
                    break;
                }
                i += 1;
            }
            let mut word: String = chars[start..i].iter().collect();
            let ends_entry = word.ends_with('.');
            if ends_entry {
                word.pop();
            }
            if !word.is_empty() {
                out.push((line_no, Tok::Word(word)));
            }
            if ends_entry {
                out.push((line_no, Tok::Period));
            }
        }
    }
    Ok(out)
}
