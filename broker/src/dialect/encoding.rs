//! # The encoding a reply is written in
//!
//! A NonStop client names its reply's encoding (`Encoding OutputEncoding="…"`, or a service's
//! `response_encoding`). encoding_rs writes most of them. But it follows the WHATWG Encoding
//! Standard, whose labels stand for what browsers decode rather than for the name: `ISO-8859-1`,
//! `latin1` and `US-ASCII` mean windows-1252, `ISO-8859-9` means windows-1254, `ISO-8859-11` and
//! `TIS-620` mean windows-874. Written so, a reply would declare one encoding and hold another,
//! and differ from the one asked for at bytes 0x80–0x9F (`€` as 0x80 where ISO-8859-1 has a
//! control character). Those encodings are written here, byte for byte as their standards define
//! them, and declared by their own names.
//!
//! A character the encoding lacks becomes a numeric character reference (`&#x20AC;`), which any
//! XML reader turns back into the character, so every reply can be written exactly. References
//! are not allowed in names or comments, but the broker writes neither with such characters:
//! its own markup is ASCII, and a backend's element names pass through untouched only in UTF-8.

use crate::soap::SoapVersion;
use encoding_rs::Encoding;

/// How a reply is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputEncoding {
    /// An encoding encoding_rs writes as its name says (UTF-8, Shift_JIS, windows-1252, …).
    Whatwg(&'static Encoding),
    /// US-ASCII: 7 bits.
    Ascii,
    /// ISO-8859-1 (Latin-1): U+0000–U+00FF as one byte each.
    Latin1,
    /// ISO-8859-9 (Latin-5, Turkish): Latin-1 with six letters replaced.
    Latin5,
    /// ISO-8859-11 (Thai).
    Thai,
    /// TIS-620: ISO-8859-11 without the no-break space at 0xA0.
    Tis620,
}

/// ISO-8859-9's six letters in place of Latin-1's (byte, character).
const LATIN5: [(u8, char); 6] = [
    (0xD0, 'Ğ'),
    (0xDD, 'İ'),
    (0xDE, 'Ş'),
    (0xF0, 'ğ'),
    (0xFD, 'ı'),
    (0xFE, 'ş'),
];

impl OutputEncoding {
    pub const UTF_8: OutputEncoding = OutputEncoding::Whatwg(encoding_rs::UTF_8);

    /// The encoding a label names, or None for a label nobody knows or an encoding nothing can
    /// write (UTF-16, whose replies encoding_rs cannot produce; the "replacement" encoding).
    pub fn for_label(label: &str) -> Option<OutputEncoding> {
        let label = label.trim();
        let normal = label.to_ascii_lowercase().replace('_', "-");
        // The labels the WHATWG maps to a Windows code page although they name an ISO one.
        let own = match normal.as_str() {
            "us-ascii" | "ascii" | "ansi-x3.4-1968" | "iso646-us" | "us" | "cp367" | "ibm367"
            | "iso-ir-6" | "csascii" => Some(OutputEncoding::Ascii),
            "iso-8859-1" | "iso8859-1" | "iso88591" | "latin1" | "l1" | "iso-ir-100" | "cp819"
            | "ibm819" | "csisolatin1" | "iso-8859-1:1987" | "iso-ir-100:1987" => {
                Some(OutputEncoding::Latin1)
            }
            "iso-8859-9" | "iso8859-9" | "iso88599" | "latin5" | "l5" | "iso-ir-148"
            | "csisolatin5" | "iso-8859-9:1989" => Some(OutputEncoding::Latin5),
            "iso-8859-11" | "iso8859-11" | "iso885911" => Some(OutputEncoding::Thai),
            "tis-620" | "tis620" => Some(OutputEncoding::Tis620),
            _ => None,
        };
        if own.is_some() {
            return own;
        }
        match Encoding::for_label(label.as_bytes()) {
            Some(enc) if enc.output_encoding() == enc => Some(OutputEncoding::Whatwg(enc)),
            _ => None,
        }
    }

    /// The name the reply declares (`charset=`, the XML declaration).
    pub fn name(&self) -> &'static str {
        match self {
            OutputEncoding::Whatwg(e) => e.name(),
            OutputEncoding::Ascii => "US-ASCII",
            OutputEncoding::Latin1 => "ISO-8859-1",
            OutputEncoding::Latin5 => "ISO-8859-9",
            OutputEncoding::Thai => "ISO-8859-11",
            OutputEncoding::Tis620 => "TIS-620",
        }
    }

    pub fn is_utf8(&self) -> bool {
        *self == OutputEncoding::UTF_8
    }

    /// `text` in this encoding; characters it lacks as numeric character references.
    pub fn encode(&self, text: &str) -> Vec<u8> {
        let byte_of: fn(char) -> Option<u8> = match self {
            OutputEncoding::Whatwg(e) => return e.encode(text).0.into_owned(),
            OutputEncoding::Ascii => |c| u8::try_from(u32::from(c)).ok().filter(u8::is_ascii),
            OutputEncoding::Latin1 => |c| u8::try_from(u32::from(c)).ok(),
            OutputEncoding::Latin5 => |c| {
                if let Some((b, _)) = LATIN5.iter().find(|(_, l)| *l == c) {
                    return Some(*b);
                }
                let b = u8::try_from(u32::from(c)).ok()?;
                // Latin-1's letters at those six places are not in ISO-8859-9.
                (!LATIN5.iter().any(|(at, _)| *at == b)).then_some(b)
            },
            OutputEncoding::Thai => |c| match u32::from(c) {
                0xA0 => Some(0xA0),
                n => thai(n),
            },
            OutputEncoding::Tis620 => |c| thai(u32::from(c)),
        };
        let mut out = Vec::with_capacity(text.len());
        for c in text.chars() {
            match byte_of(c) {
                Some(b) => out.push(b),
                None => out.extend_from_slice(format!("&#x{:X};", u32::from(c)).as_bytes()),
            }
        }
        out
    }
}

/// TIS-620's byte for a code point: ASCII and the C1 controls as themselves, U+0E01–U+0E3A and
/// U+0E3F–U+0E5B at 0xA1–0xDA and 0xDF–0xFB.
fn thai(n: u32) -> Option<u8> {
    match n {
        0..=0x9F => u8::try_from(n).ok(),
        0x0E01..=0x0E3A | 0x0E3F..=0x0E5B => u8::try_from(n - 0x0E01 + 0xA1).ok(),
        _ => None,
    }
}

/// Re-encode a UTF-8 envelope in `encoding`, adding the XML declaration that names it and returning
/// the matching media type. UTF-8 passes through untouched.
pub fn encode_output(
    version: SoapVersion,
    utf8: Vec<u8>,
    encoding: OutputEncoding,
) -> (String, Vec<u8>) {
    if encoding.is_utf8() {
        return (version.content_type().to_string(), utf8);
    }
    let name = encoding.name();
    let media = match version {
        SoapVersion::V11 => "text/xml",
        SoapVersion::V12 => "application/soap+xml",
    };
    let mut text = String::with_capacity(utf8.len() + 64);
    text.push_str("<?xml version=\"1.0\" encoding=\"");
    text.push_str(name);
    text.push_str("\"?>");
    text.push_str(&String::from_utf8_lossy(&utf8));
    (format!("{media}; charset={name}"), encoding.encode(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_encoding_declares_itself() {
        let sjis = OutputEncoding::for_label("Shift_JIS").expect("known");
        let (ct, bytes) = encode_output(SoapVersion::V11, "<a>日本</a>".as_bytes().to_vec(), sjis);
        assert_eq!(ct, "text/xml; charset=Shift_JIS");
        let (text, _, bad) = encoding_rs::SHIFT_JIS.decode(&bytes);
        assert!(!bad);
        assert_eq!(
            text,
            "<?xml version=\"1.0\" encoding=\"Shift_JIS\"?><a>日本</a>"
        );
    }

    /// Protects "the encoding the client named": ISO-8859-1 is not windows-1252. U+0080–U+00FF
    /// are their own bytes (0x80 is a control character, not `€`), `€` and anything past U+00FF
    /// become references, and the reply declares ISO-8859-1.
    #[test]
    fn latin1_is_written_as_latin1_not_windows_1252() {
        for label in ["ISO-8859-1", "iso-8859-1", "latin1", "ISO_8859-1", " l1 "] {
            assert_eq!(
                OutputEncoding::for_label(label),
                Some(OutputEncoding::Latin1)
            );
        }
        let enc = OutputEncoding::Latin1;
        assert_eq!(enc.encode("é\u{80}\u{9f}ÿ"), vec![0xE9, 0x80, 0x9F, 0xFF]);
        assert_eq!(enc.encode("€ 日"), b"&#x20AC; &#x65E5;".to_vec());
        let (ct, bytes) = encode_output(SoapVersion::V12, "<a>é€</a>".as_bytes().to_vec(), enc);
        assert_eq!(ct, "application/soap+xml; charset=ISO-8859-1");
        assert_eq!(
            bytes,
            b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><a>\xE9&#x20AC;</a>".to_vec()
        );
        // windows-1252, asked for by its own name, still writes € as 0x80.
        let cp1252 = OutputEncoding::for_label("windows-1252").expect("known");
        assert_eq!(cp1252.name(), "windows-1252");
        assert_eq!(cp1252.encode("€"), vec![0x80]);
    }

    #[test]
    fn ascii_latin5_and_thai_are_their_own_standards() {
        assert_eq!(
            OutputEncoding::for_label("US-ASCII"),
            Some(OutputEncoding::Ascii)
        );
        assert_eq!(OutputEncoding::Ascii.encode("aé"), b"a&#xE9;".to_vec());
        assert_eq!(OutputEncoding::Ascii.name(), "US-ASCII");

        let latin5 = OutputEncoding::for_label("ISO-8859-9").expect("known");
        assert_eq!(latin5, OutputEncoding::Latin5);
        assert_eq!(latin5.encode("ĞışÇ"), vec![0xD0, 0xFD, 0xFE, 0xC7]);
        // Latin-1's Ð is not in ISO-8859-9; € is in neither.
        assert_eq!(latin5.encode("Ð€"), b"&#xD0;&#x20AC;".to_vec());

        let thai = OutputEncoding::for_label("ISO-8859-11").expect("known");
        assert_eq!(thai.name(), "ISO-8859-11");
        assert_eq!(thai.encode("กฮ\u{a0}๛"), vec![0xA1, 0xCE, 0xA0, 0xFB]);
        assert_eq!(
            thai.encode("\u{e3b}"),
            b"&#xE3B;".to_vec(),
            "unassigned in the standard"
        );
        let tis = OutputEncoding::for_label("TIS-620").expect("known");
        assert_eq!(tis.name(), "TIS-620");
        assert_eq!(tis.encode("ก\u{a0}"), b"\xA1&#xA0;".to_vec());
    }

    #[test]
    fn unknown_and_unwritable_labels_are_refused() {
        assert_eq!(OutputEncoding::for_label("klingon"), None);
        assert_eq!(OutputEncoding::for_label("UTF-16"), None);
        assert_eq!(OutputEncoding::for_label("replacement"), None);
        assert!(OutputEncoding::for_label("utf8").is_some_and(|e| e.is_utf8()));
    }
}
