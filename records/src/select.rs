//! # Which layout a reply record has: `ResponseSelection`
//!
//! A server class can answer with records of several layouts: an account, or an error. NonStop
//! SOAP told them apart by a slice of the reply buffer. `Start` and `End` (exclusive) give the
//! slice, `BufVal` the value to compare it with, `ComparisonOp` the comparison (eq, ne, gt, lt)
//! and `ConversionOp` how to compare (as a string, or as a decimal number). The first rule that
//! holds chooses its layout. When none holds, the rule marked `defaultResp` does, and a reply no
//! rule chooses is the server's error. A rule may mark its layout as a fault (`Fault="yes"`).
//!
//! As a string, the slice is read in the record's charset with trailing spaces and NULs removed
//! and compared with the value, by Unicode code points (so `gt`/`lt` order EBCDIC text as its
//! characters, not its bytes). As a decimal, both are read as numbers (`0042` equals `42`); a slice
//! that is not a number satisfies only `ne`. A slice beyond the record's end satisfies nothing.

use crate::charset::Charset;
use crate::number::Decimal;
use std::cmp::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Eq,
    Ne,
    Gt,
    Lt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversion {
    String,
    Decimal,
}

/// One `ResponseSelection`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub start: usize,
    /// Exclusive.
    pub end: usize,
    pub value: String,
    pub comparison: Comparison,
    pub conversion: Conversion,
    /// Chosen when no rule holds.
    pub default: bool,
    /// Its layout is answered as a SOAP fault.
    pub fault: bool,
    /// The layout it chooses.
    pub layout: String,
}

impl Rule {
    /// Whether the rule holds for `record`.
    pub fn holds(&self, record: &[u8], charset: Charset) -> bool {
        let Some(slice) = record.get(self.start..self.end) else {
            return false;
        };
        let ordering = match self.conversion {
            Conversion::String => {
                let Ok(text) = charset.decode(slice) else {
                    return self.comparison == Comparison::Ne;
                };
                let text = text.trim_end_matches([' ', '\0']);
                Some(text.cmp(self.value.trim_end_matches([' ', '\0'])))
            }
            Conversion::Decimal => {
                let digits: Option<String> = slice
                    .iter()
                    .map(|&b| match charset.digit_value(b) {
                        Some(d) => Some(char::from(b'0' + d)),
                        None => charset
                            .decode(&[b])
                            .ok()
                            .and_then(|t| t.chars().next())
                            .filter(|c| matches!(c, '+' | '-' | '.' | ' ')),
                    })
                    .collect();
                match (
                    digits.and_then(|d| Decimal::parse(&d).ok()),
                    Decimal::parse(&self.value),
                ) {
                    (Some(a), Ok(b)) => Some(compare(a, b)),
                    _ => None,
                }
            }
        };
        match (ordering, self.comparison) {
            (None, c) => c == Comparison::Ne,
            (Some(o), Comparison::Eq) => o == Ordering::Equal,
            (Some(o), Comparison::Ne) => o != Ordering::Equal,
            (Some(o), Comparison::Gt) => o == Ordering::Greater,
            (Some(o), Comparison::Lt) => o == Ordering::Less,
        }
    }
}

fn compare(a: Decimal, b: Decimal) -> Ordering {
    let scale = a.scale.max(b.scale);
    match (a.rescale(scale), b.rescale(scale)) {
        (Some(x), Some(y)) => x.unscaled.cmp(&y.unscaled),
        // Past i128 at a common scale: compare the integer parts, then give up on a tie.
        _ => (a.unscaled / 10i128.pow(u32::from(a.scale)))
            .cmp(&(b.unscaled / 10i128.pow(u32::from(b.scale)))),
    }
}

/// The rule that chooses the layout of `record`: the first that holds, else the default.
pub fn choose<'a>(rules: &'a [Rule], record: &[u8], charset: Charset) -> Option<&'a Rule> {
    rules
        .iter()
        .find(|r| !r.default && r.holds(record, charset))
        .or_else(|| rules.iter().find(|r| r.default))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        start: usize,
        end: usize,
        value: &str,
        comparison: Comparison,
        conversion: Conversion,
        layout: &str,
    ) -> Rule {
        Rule {
            start,
            end,
            value: value.into(),
            comparison,
            conversion,
            default: false,
            fault: false,
            layout: layout.into(),
        }
    }

    #[test]
    fn the_first_rule_that_holds_chooses_else_the_default() {
        let ok = rule(
            0,
            2,
            "00",
            Comparison::Eq,
            Conversion::String,
            "ACCTINQ-REPLY",
        );
        let mut error = rule(
            0,
            2,
            "00",
            Comparison::Ne,
            Conversion::String,
            "ACCTINQ-ERROR",
        );
        error.fault = true;
        let rules = vec![ok, error];
        assert_eq!(
            choose(&rules, b"00rest", Charset::Ascii).map(|r| r.layout.as_str()),
            Some("ACCTINQ-REPLY")
        );
        let e = choose(&rules, b"17rest", Charset::Ascii).expect("a rule");
        assert!(e.fault);
        // EBCDIC "00".
        assert_eq!(
            choose(&rules, &[0xF0, 0xF0], Charset::Ibm037).map(|r| r.layout.as_str()),
            Some("ACCTINQ-REPLY")
        );
        // Too short for any slice: only a default could choose, and there is none.
        assert!(choose(&rules, b"0", Charset::Ascii).is_none());
        let mut with_default = rules.clone();
        with_default.push(Rule {
            default: true,
            ..rule(0, 0, "", Comparison::Eq, Conversion::String, "RAW")
        });
        assert_eq!(
            choose(&with_default, b"0", Charset::Ascii).map(|r| r.layout.as_str()),
            Some("RAW")
        );
    }

    #[test]
    fn decimals_compare_as_numbers() {
        let gt = rule(2, 6, "100", Comparison::Gt, Conversion::Decimal, "BIG");
        assert!(gt.holds(b"xx0101", Charset::Ascii));
        assert!(!gt.holds(b"xx0100", Charset::Ascii));
        assert!(!gt.holds(b"xx00ab", Charset::Ascii), "not a number");
        let eq = rule(0, 4, "42", Comparison::Eq, Conversion::Decimal, "X");
        assert!(eq.holds(b"0042", Charset::Ascii));
        assert!(eq.holds(&[0xF0, 0xF0, 0xF4, 0xF2], Charset::Ibm037));
        let lt = rule(0, 3, "b", Comparison::Lt, Conversion::String, "X");
        assert!(lt.holds(b"a  ", Charset::Ascii));
        assert!(!lt.holds(b"c  ", Charset::Ascii));
    }
}
