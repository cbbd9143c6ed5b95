//! # Text in a record: the server's character set (`SrvrEncoding`)
//!
//! A legacy server class reads its records in its own character set: ASCII on most, EBCDIC on a
//! mainframe's (IBM-037, or IBM-1140, which is 037 with `€` at 0x9F in place of `¤`), Shift_JIS
//! in Japan. Text fields and DISPLAY numbers are written in it; binary and packed numbers are not
//! text and do not depend on it.
//!
//! IBM-037 maps its 256 bytes one to one onto U+0000–U+00FF. The table below was generated from
//! Python's `cp037` codec (`bytes(range(256)).decode("cp037")`), the Unicode consortium's mapping
//! of the IBM code page; the tests check it against characters known on both sides.

/// The character set of a record's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// 7-bit ASCII; a character past U+007F cannot be written.
    Ascii,
    /// ISO-8859-1: U+0000–U+00FF, one byte each.
    Latin1,
    /// EBCDIC, US/Canada.
    Ibm037,
    /// EBCDIC, US/Canada with the euro sign.
    Ibm1140,
    /// Shift_JIS: one or two bytes a character.
    ShiftJis,
}

/// IBM-037: the character of each byte.
const IBM037: [char; 256] = [
    '\u{0}', '\u{1}', '\u{2}', '\u{3}', '\u{9C}', '\u{9}', '\u{86}', '\u{7F}', '\u{97}', '\u{8D}',
    '\u{8E}', '\u{B}', '\u{C}', '\u{D}', '\u{E}', '\u{F}', '\u{10}', '\u{11}', '\u{12}', '\u{13}',
    '\u{9D}', '\u{85}', '\u{8}', '\u{87}', '\u{18}', '\u{19}', '\u{92}', '\u{8F}', '\u{1C}',
    '\u{1D}', '\u{1E}', '\u{1F}', '\u{80}', '\u{81}', '\u{82}', '\u{83}', '\u{84}', '\u{A}',
    '\u{17}', '\u{1B}', '\u{88}', '\u{89}', '\u{8A}', '\u{8B}', '\u{8C}', '\u{5}', '\u{6}',
    '\u{7}', '\u{90}', '\u{91}', '\u{16}', '\u{93}', '\u{94}', '\u{95}', '\u{96}', '\u{4}',
    '\u{98}', '\u{99}', '\u{9A}', '\u{9B}', '\u{14}', '\u{15}', '\u{9E}', '\u{1A}', '\u{20}',
    '\u{A0}', '\u{E2}', '\u{E4}', '\u{E0}', '\u{E1}', '\u{E3}', '\u{E5}', '\u{E7}', '\u{F1}',
    '\u{A2}', '\u{2E}', '\u{3C}', '\u{28}', '\u{2B}', '\u{7C}', '\u{26}', '\u{E9}', '\u{EA}',
    '\u{EB}', '\u{E8}', '\u{ED}', '\u{EE}', '\u{EF}', '\u{EC}', '\u{DF}', '\u{21}', '\u{24}',
    '\u{2A}', '\u{29}', '\u{3B}', '\u{AC}', '\u{2D}', '\u{2F}', '\u{C2}', '\u{C4}', '\u{C0}',
    '\u{C1}', '\u{C3}', '\u{C5}', '\u{C7}', '\u{D1}', '\u{A6}', '\u{2C}', '\u{25}', '\u{5F}',
    '\u{3E}', '\u{3F}', '\u{F8}', '\u{C9}', '\u{CA}', '\u{CB}', '\u{C8}', '\u{CD}', '\u{CE}',
    '\u{CF}', '\u{CC}', '\u{60}', '\u{3A}', '\u{23}', '\u{40}', '\u{27}', '\u{3D}', '\u{22}',
    '\u{D8}', '\u{61}', '\u{62}', '\u{63}', '\u{64}', '\u{65}', '\u{66}', '\u{67}', '\u{68}',
    '\u{69}', '\u{AB}', '\u{BB}', '\u{F0}', '\u{FD}', '\u{FE}', '\u{B1}', '\u{B0}', '\u{6A}',
    '\u{6B}', '\u{6C}', '\u{6D}', '\u{6E}', '\u{6F}', '\u{70}', '\u{71}', '\u{72}', '\u{AA}',
    '\u{BA}', '\u{E6}', '\u{B8}', '\u{C6}', '\u{A4}', '\u{B5}', '\u{7E}', '\u{73}', '\u{74}',
    '\u{75}', '\u{76}', '\u{77}', '\u{78}', '\u{79}', '\u{7A}', '\u{A1}', '\u{BF}', '\u{D0}',
    '\u{DD}', '\u{DE}', '\u{AE}', '\u{5E}', '\u{A3}', '\u{A5}', '\u{B7}', '\u{A9}', '\u{A7}',
    '\u{B6}', '\u{BC}', '\u{BD}', '\u{BE}', '\u{5B}', '\u{5D}', '\u{AF}', '\u{A8}', '\u{B4}',
    '\u{D7}', '\u{7B}', '\u{41}', '\u{42}', '\u{43}', '\u{44}', '\u{45}', '\u{46}', '\u{47}',
    '\u{48}', '\u{49}', '\u{AD}', '\u{F4}', '\u{F6}', '\u{F2}', '\u{F3}', '\u{F5}', '\u{7D}',
    '\u{4A}', '\u{4B}', '\u{4C}', '\u{4D}', '\u{4E}', '\u{4F}', '\u{50}', '\u{51}', '\u{52}',
    '\u{B9}', '\u{FB}', '\u{FC}', '\u{F9}', '\u{FA}', '\u{FF}', '\u{5C}', '\u{F7}', '\u{53}',
    '\u{54}', '\u{55}', '\u{56}', '\u{57}', '\u{58}', '\u{59}', '\u{5A}', '\u{B2}', '\u{D4}',
    '\u{D6}', '\u{D2}', '\u{D3}', '\u{D5}', '\u{30}', '\u{31}', '\u{32}', '\u{33}', '\u{34}',
    '\u{35}', '\u{36}', '\u{37}', '\u{38}', '\u{39}', '\u{B3}', '\u{DB}', '\u{DC}', '\u{D9}',
    '\u{DA}', '\u{9F}',
];

impl Charset {
    /// The charset a configuration names (`ascii`, `iso-8859-1`, `ibm-037`, `ibm-1140`,
    /// `shift_jis`, in any case, with or without the dash).
    pub fn for_name(name: &str) -> Option<Charset> {
        let n = name.trim().to_ascii_lowercase().replace(['_', ' '], "-");
        Some(match n.as_str() {
            "ascii" | "us-ascii" => Charset::Ascii,
            "iso-8859-1" | "latin1" | "latin-1" => Charset::Latin1,
            "ibm-037" | "ibm037" | "cp037" | "ebcdic" | "ebcdic-cp-us" => Charset::Ibm037,
            "ibm-1140" | "ibm1140" | "cp1140" => Charset::Ibm1140,
            "shift-jis" | "sjis" | "shiftjis" | "ms-kanji" => Charset::ShiftJis,
            _ => return None,
        })
    }

    /// The name used in messages and generated schemas.
    pub fn name(&self) -> &'static str {
        match self {
            Charset::Ascii => "US-ASCII",
            Charset::Latin1 => "ISO-8859-1",
            Charset::Ibm037 => "IBM-037",
            Charset::Ibm1140 => "IBM-1140",
            Charset::ShiftJis => "Shift_JIS",
        }
    }

    pub fn is_ebcdic(&self) -> bool {
        matches!(self, Charset::Ibm037 | Charset::Ibm1140)
    }

    /// The byte of a space (padding of text fields).
    pub fn space(&self) -> u8 {
        if self.is_ebcdic() {
            0x40
        } else {
            b' '
        }
    }

    /// The byte of a decimal digit (0–9).
    pub fn digit(&self, d: u8) -> u8 {
        if self.is_ebcdic() {
            0xF0 + d
        } else {
            b'0' + d
        }
    }

    /// The digit a byte stands for, if any.
    pub fn digit_value(&self, b: u8) -> Option<u8> {
        let d = if self.is_ebcdic() {
            b.wrapping_sub(0xF0)
        } else {
            b.wrapping_sub(b'0')
        };
        (d <= 9).then_some(d)
    }

    /// `text` in this charset, or the first character it cannot write.
    pub fn encode(&self, text: &str) -> Result<Vec<u8>, char> {
        match self {
            Charset::Ascii => text
                .chars()
                .map(|c| {
                    u8::try_from(u32::from(c))
                        .ok()
                        .filter(u8::is_ascii)
                        .ok_or(c)
                })
                .collect(),
            Charset::Latin1 => text
                .chars()
                .map(|c| u8::try_from(u32::from(c)).map_err(|_| c))
                .collect(),
            Charset::Ibm037 | Charset::Ibm1140 => {
                text.chars().map(|c| self.ebcdic_byte(c).ok_or(c)).collect()
            }
            Charset::ShiftJis => {
                // encoding_rs writes what it lacks as a character reference; find the character.
                let (bytes, _, unmappable) = encoding_rs::SHIFT_JIS.encode(text);
                if unmappable {
                    let bad = text
                        .chars()
                        .find(|c| encoding_rs::SHIFT_JIS.encode(&c.to_string()).2)
                        .unwrap_or('\u{FFFD}');
                    return Err(bad);
                }
                Ok(bytes.into_owned())
            }
        }
    }

    /// The text of `bytes`, or the offset of the first byte that is not text in this charset.
    pub fn decode(&self, bytes: &[u8]) -> Result<String, usize> {
        match self {
            Charset::Ascii => match bytes.iter().position(|b| !b.is_ascii()) {
                Some(at) => Err(at),
                None => Ok(bytes.iter().map(|&b| char::from(b)).collect()),
            },
            Charset::Latin1 => Ok(bytes.iter().map(|&b| char::from(b)).collect()),
            Charset::Ibm037 => Ok(bytes.iter().map(|&b| IBM037[usize::from(b)]).collect()),
            Charset::Ibm1140 => Ok(bytes
                .iter()
                .map(|&b| {
                    if b == 0x9F {
                        '€'
                    } else {
                        IBM037[usize::from(b)]
                    }
                })
                .collect()),
            Charset::ShiftJis => encoding_rs::SHIFT_JIS
                .decode_without_bom_handling_and_without_replacement(bytes)
                .map(|t| t.into_owned())
                .ok_or_else(|| first_bad_sjis(bytes)),
        }
    }

    fn ebcdic_byte(&self, c: char) -> Option<u8> {
        if *self == Charset::Ibm1140 {
            match c {
                '€' => return Some(0x9F),
                '¤' => return None,
                _ => {}
            }
        }
        IBM037
            .iter()
            .position(|&e| e == c)
            .and_then(|p| u8::try_from(p).ok())
    }
}

/// Where a Shift_JIS byte string stops being valid (the start of the first bad character).
fn first_bad_sjis(bytes: &[u8]) -> usize {
    let valid = |end: usize| {
        encoding_rs::SHIFT_JIS
            .decode_without_bom_handling_and_without_replacement(&bytes[..end])
            .is_some()
    };
    let mut good = 0;
    while good < bytes.len() {
        // A character is one byte or two.
        if valid(good + 1) {
            good += 1;
        } else if good + 2 <= bytes.len() && valid(good + 2) {
            good += 2;
        } else {
            break;
        }
    }
    good
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ebcdic_knows_its_letters_digits_and_signs() {
        let e = Charset::Ibm037;
        assert_eq!(
            e.encode("AZaz09 "),
            Ok(vec![0xC1, 0xE9, 0x81, 0xA9, 0xF0, 0xF9, 0x40])
        );
        assert_eq!(e.encode("{{}}"), Ok(vec![0xC0, 0xC0, 0xD0, 0xD0]));
        assert_eq!(
            e.decode(&[0xC8, 0x85, 0x93, 0x93, 0x96, 0x4B]),
            Ok("Hello.".to_string())
        );
        assert_eq!(e.encode("¤"), Ok(vec![0x9F]));
        assert_eq!(e.encode("€"), Err('€'));
        // Every byte decodes, and encodes back to itself.
        let all: Vec<u8> = (0..=255).collect();
        let text = e.decode(&all).expect("total");
        assert_eq!(e.encode(&text), Ok(all));
    }

    #[test]
    fn ibm_1140_is_037_with_the_euro() {
        let e = Charset::Ibm1140;
        assert_eq!(e.encode("€1"), Ok(vec![0x9F, 0xF1]));
        assert_eq!(e.decode(&[0x9F]), Ok("€".to_string()));
        assert_eq!(e.encode("¤"), Err('¤'));
    }

    #[test]
    fn ascii_latin1_and_shift_jis() {
        assert_eq!(Charset::Ascii.encode("é"), Err('é'));
        assert_eq!(Charset::Ascii.decode(b"ab\x80"), Err(2));
        assert_eq!(Charset::Latin1.encode("é"), Ok(vec![0xE9]));
        assert_eq!(
            Charset::ShiftJis.encode("日本"),
            Ok(vec![0x93, 0xFA, 0x96, 0x7B])
        );
        assert_eq!(
            Charset::ShiftJis.decode(&[0x93, 0xFA]),
            Ok("日".to_string())
        );
        assert_eq!(Charset::ShiftJis.encode("€"), Err('€'));
        assert_eq!(Charset::ShiftJis.decode(&[0x41, 0x93]), Err(1));
    }

    #[test]
    fn names() {
        assert_eq!(Charset::for_name("IBM-1140"), Some(Charset::Ibm1140));
        assert_eq!(Charset::for_name("ibm037"), Some(Charset::Ibm037));
        assert_eq!(Charset::for_name("Shift_JIS"), Some(Charset::ShiftJis));
        assert_eq!(Charset::for_name("klingon"), None);
    }
}
