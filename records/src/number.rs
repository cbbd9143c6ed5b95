//! # Numbers in a record: zoned, binary and packed decimal
//!
//! A number is an integer of unscaled digits with the picture's scale (`S9(5)V99` holding
//! `-123.45` is -12345 at scale 2). The XML form is plain decimal text (`-123.45`). A value with
//! more digits than its picture allows is refused, never truncated or rounded: a record carries
//! money.
//!
//! - DISPLAY (zoned): one digit a byte in the record's charset. The sign of a signed number is in
//!   the zone of its last (or first) digit. EBCDIC uses zone C for plus and D for minus. ASCII uses
//!   the characters those bytes are in EBCDIC: `{` `A`–`I` for +0…+9 and `}` `J`–`R` for −0…−9,
//!   as IBM's and most ASCII COBOLs do. It can also be a separate `+`/`-` byte.
//! - BINARY (`COMP`, `COMP-4`, `COMP-5`): big-endian two's complement, 2 bytes for up to 4
//!   digits, 4 for up to 9, 8 for up to 18. The value must fit the picture's digits, as COBOL's
//!   standard truncation (TRUNC(STD)) has it.
//! - PACKED (`COMP-3`): two digits a byte, the last nibble the sign (C plus, D minus, F unsigned).

use crate::charset::Charset;
use crate::layout::{NumberPic, Sign, Usage};

/// A decimal number: `unscaled × 10^-scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decimal {
    pub unscaled: i128,
    pub scale: u8,
}

impl Decimal {
    /// Read decimal text (`-123.45`, `+7`, `0.5`, `.5`). At most 38 digits.
    pub fn parse(text: &str) -> Result<Decimal, String> {
        let t = text.trim();
        let (negative, body) = match t.as_bytes().first() {
            Some(b'-') => (true, &t[1..]),
            Some(b'+') => (false, &t[1..]),
            _ => (false, t),
        };
        let (int, frac) = match body.split_once('.') {
            Some((i, f)) => (i, f),
            None => (body, ""),
        };
        if int.is_empty() && frac.is_empty()
            || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
        {
            return Err(format!("{text:?} is not a decimal number"));
        }
        if int.len() + frac.len() > 38 {
            return Err(format!("{text:?} has more than 38 digits"));
        }
        let mut unscaled: i128 = 0;
        for b in int.bytes().chain(frac.bytes()) {
            unscaled = unscaled * 10 + i128::from(b - b'0');
        }
        let scale = u8::try_from(frac.len()).map_err(|_| format!("{text:?} is too long"))?;
        Ok(Decimal {
            unscaled: if negative { -unscaled } else { unscaled },
            scale,
        })
    }

    /// This number at `scale` places, if it has no more places than that.
    pub fn rescale(&self, scale: u8) -> Option<Decimal> {
        if self.scale > scale {
            // Trailing zeros beyond the scale are harmless: 1.50 fits V9.
            let drop = u32::from(self.scale - scale);
            let p = 10i128.pow(drop);
            return (self.unscaled % p == 0).then(|| Decimal {
                unscaled: self.unscaled / p,
                scale,
            });
        }
        let p = 10i128.checked_pow(u32::from(scale - self.scale))?;
        Some(Decimal {
            unscaled: self.unscaled.checked_mul(p)?,
            scale,
        })
    }

    /// The XML text: `-123.45`, `0.05`, `7`.
    pub fn to_text(&self) -> String {
        let digits = self.unscaled.unsigned_abs().to_string();
        let sign = if self.unscaled < 0 { "-" } else { "" };
        let scale = usize::from(self.scale);
        if scale == 0 {
            return format!("{sign}{digits}");
        }
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (i, f) = padded.split_at(padded.len() - scale);
        format!("{sign}{i}.{f}")
    }
}

/// Why a value does not fit its picture (the caller adds the field's path).
pub type Refusal = String;

/// Check `value` against `pic` and bring it to the picture's scale.
pub fn fit(value: Decimal, pic: &NumberPic) -> Result<Decimal, Refusal> {
    let v = value.rescale(pic.scale).ok_or_else(|| {
        format!(
            "{} has more than the {} decimal places of its picture",
            value.to_text(),
            pic.scale
        )
    })?;
    if v.unscaled < 0 && !pic.signed {
        return Err(format!(
            "{} is negative; the picture is unsigned",
            v.to_text()
        ));
    }
    let limit = 10u128.pow(u32::from(pic.digits));
    if v.unscaled.unsigned_abs() >= limit {
        return Err(format!(
            "{} has more digits than the picture's {} ({} before the point)",
            v.to_text(),
            pic.digits,
            pic.digits - pic.scale
        ));
    }
    Ok(v)
}

/// Write `v` (already [`fit`]) into `out` (exactly the picture's size).
pub fn encode(v: Decimal, pic: &NumberPic, charset: Charset, out: &mut [u8]) {
    let negative = v.unscaled < 0;
    let magnitude = v.unscaled.unsigned_abs();
    match pic.usage {
        Usage::Display => {
            let digits = usize::from(pic.digits);
            let body = match (pic.signed, pic.sign) {
                (true, Sign::LeadingSeparate) => 1..digits + 1,
                _ => 0..digits,
            };
            let mut m = magnitude;
            for at in body.clone().rev() {
                out[at] = charset.digit((m % 10) as u8);
                m /= 10;
            }
            if pic.signed {
                match pic.sign {
                    Sign::LeadingSeparate => out[0] = sign_byte(negative, charset),
                    Sign::TrailingSeparate => out[digits] = sign_byte(negative, charset),
                    Sign::TrailingOverpunch => {
                        let at = body.end - 1;
                        out[at] = overpunch(out[at], negative, charset);
                    }
                    Sign::LeadingOverpunch => {
                        let at = body.start;
                        out[at] = overpunch(out[at], negative, charset);
                    }
                }
            }
        }
        Usage::Binary => {
            let n = out.len();
            let bytes = v.unscaled.to_be_bytes();
            out.copy_from_slice(&bytes[16 - n..]);
        }
        Usage::Packed => {
            let sign = match (pic.signed, negative) {
                (false, _) => 0xF,
                (true, false) => 0xC,
                (true, true) => 0xD,
            };
            let mut m = magnitude;
            let n = out.len();
            out[n - 1] = (((m % 10) as u8) << 4) | sign;
            m /= 10;
            for at in (0..n - 1).rev() {
                let lo = (m % 10) as u8;
                m /= 10;
                let hi = (m % 10) as u8;
                m /= 10;
                out[at] = (hi << 4) | lo;
            }
        }
    }
}

/// Read a number of picture `pic` from `bytes` (exactly its size). The error names the offset
/// within `bytes` of the first byte that is not part of such a number.
pub fn decode(bytes: &[u8], pic: &NumberPic, charset: Charset) -> Result<Decimal, (usize, String)> {
    let scale = pic.scale;
    match pic.usage {
        Usage::Display => {
            let digits = usize::from(pic.digits);
            let mut negative = false;
            let range = match (pic.signed, pic.sign) {
                (true, Sign::LeadingSeparate) => {
                    negative = read_sign(bytes[0], charset).ok_or((0, "not a sign".to_string()))?;
                    1..digits + 1
                }
                (true, Sign::TrailingSeparate) => {
                    negative = read_sign(bytes[digits], charset)
                        .ok_or((digits, "not a sign".to_string()))?;
                    0..digits
                }
                _ => 0..digits,
            };
            let punched = match (pic.signed, pic.sign) {
                (true, Sign::TrailingOverpunch) => Some(range.end - 1),
                (true, Sign::LeadingOverpunch) => Some(range.start),
                _ => None,
            };
            let mut unscaled: i128 = 0;
            for at in range {
                let b = bytes[at];
                let d = if Some(at) == punched {
                    let (d, neg) = read_overpunch(b, charset)
                        .ok_or((at, format!("byte 0x{b:02X} is not a signed digit")))?;
                    negative = neg;
                    d
                } else {
                    charset
                        .digit_value(b)
                        .ok_or((at, format!("byte 0x{b:02X} is not a digit")))?
                };
                unscaled = unscaled * 10 + i128::from(d);
            }
            Ok(Decimal {
                unscaled: if negative { -unscaled } else { unscaled },
                scale,
            })
        }
        Usage::Binary => {
            let mut buf = if pic.signed && bytes.first().is_some_and(|b| b & 0x80 != 0) {
                [0xFFu8; 16]
            } else {
                [0u8; 16]
            };
            buf[16 - bytes.len()..].copy_from_slice(bytes);
            let unscaled = i128::from_be_bytes(buf);
            Ok(Decimal { unscaled, scale })
        }
        Usage::Packed => {
            let n = bytes.len();
            let mut unscaled: i128 = 0;
            for (at, &b) in bytes.iter().enumerate() {
                let hi = b >> 4;
                let lo = b & 0xF;
                if hi > 9 {
                    return Err((at, format!("byte 0x{b:02X} is not packed digits")));
                }
                unscaled = unscaled * 10 + i128::from(hi);
                if at + 1 < n {
                    if lo > 9 {
                        return Err((at, format!("byte 0x{b:02X} is not packed digits")));
                    }
                    unscaled = unscaled * 10 + i128::from(lo);
                } else {
                    let negative = match lo {
                        0xC | 0xA | 0xE | 0xF => false,
                        0xD | 0xB => true,
                        _ => return Err((at, format!("nibble 0x{lo:X} is not a packed sign"))),
                    };
                    if negative {
                        unscaled = -unscaled;
                    }
                }
            }
            Ok(Decimal { unscaled, scale })
        }
    }
}

fn sign_byte(negative: bool, charset: Charset) -> u8 {
    match (negative, charset.is_ebcdic()) {
        (false, false) => b'+',
        (true, false) => b'-',
        (false, true) => 0x4E,
        (true, true) => 0x60,
    }
}

fn read_sign(b: u8, charset: Charset) -> Option<bool> {
    match (b, charset.is_ebcdic()) {
        (b'+', false) | (0x4E, true) => Some(false),
        (b'-', false) | (0x60, true) => Some(true),
        _ => None,
    }
}

/// The byte of `digit_byte`'s digit with the sign in its zone.
fn overpunch(digit_byte: u8, negative: bool, charset: Charset) -> u8 {
    let d = charset.digit_value(digit_byte).unwrap_or(0);
    if charset.is_ebcdic() {
        (if negative { 0xD0 } else { 0xC0 }) | d
    } else {
        // The ASCII characters of EBCDIC's C0–C9 and D0–D9.
        const PLUS: &[u8; 10] = b"{ABCDEFGHI";
        const MINUS: &[u8; 10] = b"}JKLMNOPQR";
        if negative {
            MINUS[usize::from(d)]
        } else {
            PLUS[usize::from(d)]
        }
    }
}

/// The digit and sign of an overpunched byte (a plain digit is positive).
fn read_overpunch(b: u8, charset: Charset) -> Option<(u8, bool)> {
    if let Some(d) = charset.digit_value(b) {
        return Some((d, false));
    }
    if charset.is_ebcdic() {
        let (zone, d) = (b >> 4, b & 0xF);
        if d > 9 {
            return None;
        }
        return match zone {
            0xC | 0xA | 0xE => Some((d, false)),
            0xD | 0xB => Some((d, true)),
            _ => None,
        };
    }
    match b {
        b'{' => Some((0, false)),
        b'A'..=b'I' => Some((b - b'A' + 1, false)),
        b'}' => Some((0, true)),
        b'J'..=b'R' => Some((b - b'J' + 1, true)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pic(digits: u8, scale: u8, signed: bool, usage: Usage, sign: Sign) -> NumberPic {
        NumberPic {
            digits,
            scale,
            signed,
            usage,
            sign,
        }
    }

    fn roundtrip(text: &str, p: &NumberPic, charset: Charset) -> Vec<u8> {
        let v = fit(Decimal::parse(text).expect("parse"), p).expect("fits");
        let mut out = vec![0u8; p.size().expect("size")];
        encode(v, p, charset, &mut out);
        let back = decode(&out, p, charset).expect("decodes");
        assert_eq!(back, v, "{text}");
        out
    }

    #[test]
    fn decimal_text_both_ways() {
        let d = Decimal::parse("-123.45").expect("ok");
        assert_eq!((d.unscaled, d.scale), (-12345, 2));
        assert_eq!(d.to_text(), "-123.45");
        assert_eq!(Decimal::parse(".5").expect("ok").to_text(), "0.5");
        assert_eq!(
            Decimal {
                unscaled: 5,
                scale: 3
            }
            .to_text(),
            "0.005"
        );
        for bad in ["", "-", "1.2.3", "1e5", "abc", " 1 2 ", "."] {
            assert!(Decimal::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn fit_refuses_what_the_picture_cannot_hold() {
        let p = pic(5, 2, true, Usage::Display, Sign::TrailingOverpunch);
        assert_eq!(
            fit(Decimal::parse("123.45").unwrap(), &p).map(|d| d.unscaled),
            Ok(12345)
        );
        assert_eq!(
            fit(Decimal::parse("1.50").unwrap(), &p).map(|d| d.unscaled),
            Ok(150)
        );
        assert_eq!(
            fit(Decimal::parse("7").unwrap(), &p).map(|d| d.unscaled),
            Ok(700)
        );
        assert!(
            fit(Decimal::parse("1234.5").unwrap(), &p).is_err(),
            "too many digits"
        );
        assert!(
            fit(Decimal::parse("1.234").unwrap(), &p).is_err(),
            "too many places"
        );
        let unsigned = pic(3, 0, false, Usage::Packed, Sign::TrailingOverpunch);
        assert!(fit(Decimal::parse("-1").unwrap(), &unsigned).is_err());
    }

    #[test]
    fn zoned_decimal_in_ascii_and_ebcdic() {
        let p = pic(5, 2, true, Usage::Display, Sign::TrailingOverpunch);
        assert_eq!(roundtrip("-123.45", &p, Charset::Ascii), b"1234N");
        assert_eq!(roundtrip("123.40", &p, Charset::Ascii), b"1234{");
        assert_eq!(
            roundtrip("-123.45", &p, Charset::Ibm037),
            vec![0xF1, 0xF2, 0xF3, 0xF4, 0xD5]
        );
        assert_eq!(
            roundtrip("0.01", &p, Charset::Ibm037),
            vec![0xF0, 0xF0, 0xF0, 0xF0, 0xC1]
        );
        let unsigned = pic(4, 0, false, Usage::Display, Sign::TrailingOverpunch);
        assert_eq!(roundtrip("42", &unsigned, Charset::Ascii), b"0042");
        let sep = pic(3, 0, true, Usage::Display, Sign::LeadingSeparate);
        assert_eq!(roundtrip("-7", &sep, Charset::Ascii), b"-007");
        let trail = pic(3, 1, true, Usage::Display, Sign::TrailingSeparate);
        assert_eq!(
            roundtrip("12.5", &trail, Charset::Ibm037),
            vec![0xF1, 0xF2, 0xF5, 0x4E]
        );
        // A plain digit where the sign goes reads as positive; a letter is not a digit.
        assert_eq!(
            decode(b"00123", &p, Charset::Ascii).map(|d| d.unscaled),
            Ok(123)
        );
        assert_eq!(
            decode(b"0X123", &p, Charset::Ascii).map_err(|e| e.0),
            Err(1)
        );
    }

    #[test]
    fn binary_is_big_endian_twos_complement() {
        let p = pic(4, 0, true, Usage::Binary, Sign::TrailingOverpunch);
        assert_eq!(roundtrip("-2", &p, Charset::Ascii), vec![0xFF, 0xFE]);
        assert_eq!(roundtrip("9999", &p, Charset::Ascii), vec![0x27, 0x0F]);
        let p9 = pic(9, 2, true, Usage::Binary, Sign::TrailingOverpunch);
        assert_eq!(
            roundtrip("-1.00", &p9, Charset::Ascii),
            vec![0xFF, 0xFF, 0xFF, 0x9C]
        );
        let p18 = pic(18, 0, false, Usage::Binary, Sign::TrailingOverpunch);
        assert_eq!(
            roundtrip("999999999999999999", &p18, Charset::Ascii).len(),
            8
        );
        assert!(pic(19, 0, false, Usage::Binary, Sign::TrailingOverpunch)
            .size()
            .is_err());
    }

    #[test]
    fn packed_decimal_nibbles_and_sign() {
        let p = pic(5, 2, true, Usage::Packed, Sign::TrailingOverpunch);
        assert_eq!(
            roundtrip("-123.45", &p, Charset::Ascii),
            vec![0x12, 0x34, 0x5D]
        );
        assert_eq!(
            roundtrip("1.00", &p, Charset::Ascii),
            vec![0x00, 0x10, 0x0C]
        );
        let even = pic(4, 0, false, Usage::Packed, Sign::TrailingOverpunch);
        assert_eq!(
            roundtrip("1234", &even, Charset::Ascii),
            vec![0x01, 0x23, 0x4F]
        );
        assert_eq!(
            decode(&[0x12, 0x3A, 0x5C], &p, Charset::Ascii).map_err(|e| e.0),
            Err(1)
        );
        assert_eq!(
            decode(&[0x12, 0x34, 0x57], &p, Charset::Ascii).map_err(|e| e.0),
            Err(2)
        );
    }
}
