//! One data description entry (`05 BALANCE PIC S9(11)V99 COMP-3.`) read from its tokens.

use super::{err, CopybookError, Tok};
use crate::layout::{Occurs, Sign, Usage, Value};
use crate::number::Decimal;

/// One data description entry, as written.
#[derive(Debug, Default)]
pub(super) struct Entry {
    pub(super) line: usize,
    pub(super) level: u8,
    pub(super) name: Option<String>,
    pub(super) pic: Option<String>,
    pub(super) usage: Option<Usage>,
    pub(super) sign: Option<Sign>,
    pub(super) occurs: Option<Occurs>,
    pub(super) redefines: Option<String>,
    pub(super) value: Option<Value>,
}

pub(super) fn entries(tokens: &[(usize, Tok)]) -> Result<Vec<Entry>, CopybookError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        // One entry: up to its period.
        let start = i;
        while i < tokens.len() && tokens[i].1 != Tok::Period {
            i += 1;
        }
        if i == tokens.len() {
            return err(tokens[start].0, "this entry has no closing period");
        }
        let entry = &tokens[start..i];
        i += 1;
        if let Some(e) = entry_of(entry)? {
            out.push(e);
        }
    }
    Ok(out)
}

fn upper(t: &Tok) -> Option<String> {
    match t {
        Tok::Word(w) => Some(w.to_ascii_uppercase()),
        _ => None,
    }
}

/// One entry from its tokens, or None for what adds no storage (a level-88 condition name).
fn entry_of(tokens: &[(usize, Tok)]) -> Result<Option<Entry>, CopybookError> {
    let line = tokens[0].0;
    let words: Vec<Option<String>> = tokens.iter().map(|(_, t)| upper(t)).collect();
    let Some(Some(first)) = words.first() else {
        return err(line, "an entry must begin with a level number");
    };
    if first == "COPY" || first == "REPLACE" {
        return err(
            line,
            "COPY and REPLACE are not read: paste the copybook it names in",
        );
    }
    let level: u8 = match first.parse() {
        Ok(l) => l,
        Err(_) => return err(line, format!("{first:?} is not a level number")),
    };
    match level {
        88 => return Ok(None),
        66 => {
            return err(
                line,
                "66 RENAMES is not supported: describe the fields it renames",
            )
        }
        1..=49 | 77 => {}
        _ => {
            return err(
                line,
                format!("level {level} is not a data level (01–49, 77, 88)"),
            )
        }
    }
    let mut e = Entry {
        line,
        level,
        ..Entry::default()
    };
    let mut k = 1;
    // The name, unless the entry starts with a clause.
    if let (Some(Some(w)), Some((_, Tok::Word(name)))) = (words.get(1), tokens.get(1)) {
        if !is_clause_word(w) {
            e.name = Some(name.clone());
            k = 2;
        }
    }
    let word_at = |k: usize| words.get(k).cloned().flatten();
    while k < tokens.len() {
        let Some(w) = word_at(k) else {
            return err(line, "a literal here belongs to no clause (VALUE \"…\")");
        };
        k += 1;
        match w.as_str() {
            "PIC" | "PICTURE" => {
                if word_at(k).as_deref() == Some("IS") {
                    k += 1;
                }
                let Some(Tok::Word(p)) = tokens.get(k).map(|t| &t.1) else {
                    return err(line, "PIC needs a picture string");
                };
                e.pic = Some(p.to_ascii_uppercase());
                k += 1;
            }
            "USAGE" => {
                if word_at(k).as_deref() == Some("IS") {
                    k += 1;
                }
                let Some(u) = word_at(k) else {
                    return err(line, "USAGE needs DISPLAY, COMP, COMP-3, BINARY or PACKED-DECIMAL");
                };
                e.usage = Some(usage_of(&u).ok_or(()).or_else(|_| err(line, bad_usage(&u)))?);
                k += 1;
            }
            u if usage_of(u).is_some() => e.usage = usage_of(u),
            "COMP-1" | "COMP-2" | "COMPUTATIONAL-1" | "COMPUTATIONAL-2" => {
                return err(line, "floating-point items (COMP-1, COMP-2) are not supported")
            }
            "SIGN" => {
                if word_at(k).as_deref() == Some("IS") {
                    k += 1;
                }
                let leading = match word_at(k).as_deref() {
                    Some("LEADING") => true,
                    Some("TRAILING") => false,
                    _ => return err(line, "SIGN needs LEADING or TRAILING"),
                };
                k += 1;
                let separate = word_at(k).as_deref() == Some("SEPARATE");
                if separate {
                    k += 1;
                    if word_at(k).as_deref() == Some("CHARACTER") {
                        k += 1;
                    }
                }
                e.sign = Some(match (leading, separate) {
                    (true, true) => Sign::LeadingSeparate,
                    (true, false) => Sign::LeadingOverpunch,
                    (false, true) => Sign::TrailingSeparate,
                    (false, false) => Sign::TrailingOverpunch,
                });
            }
            "LEADING" | "TRAILING" => {
                // SIGN written without the word SIGN.
                let separate = word_at(k).as_deref() == Some("SEPARATE");
                if separate {
                    k += 1;
                    if word_at(k).as_deref() == Some("CHARACTER") {
                        k += 1;
                    }
                }
                e.sign = Some(match (w == "LEADING", separate) {
                    (true, true) => Sign::LeadingSeparate,
                    (true, false) => Sign::LeadingOverpunch,
                    (false, true) => Sign::TrailingSeparate,
                    (false, false) => Sign::TrailingOverpunch,
                });
            }
            "OCCURS" => {
                let n = number_at(&word_at(k), line, "OCCURS needs a count")?;
                k += 1;
                let mut occurs = Occurs::Times(n);
                if word_at(k).as_deref() == Some("TO") {
                    let max = number_at(&word_at(k + 1), line, "OCCURS … TO needs a maximum")?;
                    k += 2;
                    occurs = Occurs::Depending {
                        min: n,
                        max,
                        on: String::new(),
                    };
                }
                if word_at(k).as_deref() == Some("TIMES") {
                    k += 1;
                }
                if word_at(k).as_deref() == Some("DEPENDING") {
                    k += 1;
                    if word_at(k).as_deref() == Some("ON") {
                        k += 1;
                    }
                    let Some(Tok::Word(on)) = tokens.get(k).map(|t| &t.1) else {
                        return err(line, "DEPENDING ON needs the name of the count field");
                    };
                    k += 1;
                    occurs = match occurs {
                        Occurs::Depending { min, max, .. } => Occurs::Depending {
                            min,
                            max,
                            on: on.clone(),
                        },
                        // `OCCURS n DEPENDING ON x` (an IBM short form): 0 to n.
                        _ => Occurs::Depending {
                            min: 0,
                            max: n,
                            on: on.clone(),
                        },
                    };
                }
                if let Occurs::Depending { min, max, on } = &occurs {
                    if on.is_empty() {
                        return err(line, "OCCURS … TO needs DEPENDING ON the count field");
                    }
                    if min > max {
                        return err(line, format!("OCCURS {min} TO {max}: the minimum is above the maximum"));
                    }
                }
                if occurs.max() == 0 {
                    return err(line, "OCCURS needs at least one occurrence");
                }
                e.occurs = Some(occurs);
                // Accepted and ignored: keys and indexes are for the COBOL program.
                while let Some(w) = word_at(k) {
                    match w.as_str() {
                        "ASCENDING" | "DESCENDING" => {
                            k += 1;
                            if word_at(k).as_deref() == Some("KEY") {
                                k += 1;
                            }
                            if word_at(k).as_deref() == Some("IS") {
                                k += 1;
                            }
                            k += 1;
                        }
                        "INDEXED" => {
                            k += 1;
                            if word_at(k).as_deref() == Some("BY") {
                                k += 1;
                            }
                            k += 1;
                        }
                        _ => break,
                    }
                }
            }
            "REDEFINES" => {
                let Some(Tok::Word(r)) = tokens.get(k).map(|t| &t.1) else {
                    return err(line, "REDEFINES needs the name of the item it redefines");
                };
                e.redefines = Some(r.clone());
                k += 1;
            }
            "VALUE" | "VALUES" => {
                if matches!(word_at(k).as_deref(), Some("IS" | "ARE")) {
                    k += 1;
                }
                let Some((_, t)) = tokens.get(k) else {
                    return err(line, "VALUE needs a literal");
                };
                e.value = Some(match t {
                    Tok::Quoted(text) => Value::Text(text.clone()),
                    Tok::Word(w) => match w.to_ascii_uppercase().as_str() {
                        "SPACE" | "SPACES" => Value::Spaces,
                        "ZERO" | "ZEROS" | "ZEROES" => Value::Zeros,
                        "LOW-VALUE" | "LOW-VALUES" => Value::LowValues,
                        "HIGH-VALUE" | "HIGH-VALUES" => Value::HighValues,
                        n => Value::Number(Decimal::parse(n).or_else(|m| err(line, m))?),
                    },
                    Tok::Period => return err(line, "VALUE needs a literal"),
                });
                k += 1;
            }
            "SYNC" | "SYNCHRONIZED" => {
                return err(line, "SYNCHRONIZED is not supported: its slack bytes depend on the compiler; write FILLER items where they are")
            }
            "JUST" | "JUSTIFIED" => {
                return err(line, "JUSTIFIED RIGHT is not supported: text is left-justified")
            }
            "BLANK" => {
                return err(line, "BLANK WHEN ZERO is not supported")
            }
            "EXTERNAL" | "GLOBAL" => {}
            other => return err(line, format!("{other} is not a clause this reader knows")),
        }
    }
    Ok(Some(e))
}

fn is_clause_word(w: &str) -> bool {
    matches!(
        w,
        "PIC"
            | "PICTURE"
            | "USAGE"
            | "OCCURS"
            | "REDEFINES"
            | "VALUE"
            | "VALUES"
            | "SIGN"
            | "LEADING"
            | "TRAILING"
            | "SYNC"
            | "SYNCHRONIZED"
            | "JUST"
            | "JUSTIFIED"
            | "BLANK"
            | "EXTERNAL"
            | "GLOBAL"
    ) || usage_of(w).is_some()
}

fn usage_of(w: &str) -> Option<Usage> {
    Some(match w {
        "DISPLAY" => Usage::Display,
        "COMP" | "COMPUTATIONAL" | "COMP-4" | "COMPUTATIONAL-4" | "COMP-5" | "COMPUTATIONAL-5"
        | "BINARY" => Usage::Binary,
        "COMP-3" | "COMPUTATIONAL-3" | "PACKED-DECIMAL" => Usage::Packed,
        _ => return None,
    })
}

fn bad_usage(u: &str) -> String {
    format!("USAGE {u} is not supported (DISPLAY, COMP, COMP-3, COMP-4, COMP-5, BINARY, PACKED-DECIMAL)")
}

fn number_at(w: &Option<String>, line: usize, what: &str) -> Result<usize, CopybookError> {
    match w.as_deref().map(str::parse::<usize>) {
        Some(Ok(n)) => Ok(n),
        _ => err(line, what),
    }
}
