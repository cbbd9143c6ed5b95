//! # A record layout: the items of a fixed-layout record and where they lie
//!
//! A layout is what a COBOL copybook's `01` record (or a field list) says: a tree of groups and
//! elementary items, each with its size, its offset within its parent, how often it occurs, and
//! how it is encoded. Every offset is known once the layout is built, except past a table whose
//! count another field gives (`OCCURS … DEPENDING ON`). Such a table may only end its record, as
//! standard COBOL requires, so the items before it keep fixed offsets and the record's length is
//! its fixed part plus the table's occurrences.

use crate::number::Decimal;

/// One record layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The record's name (the `01` item's).
    pub name: String,
    /// The record itself: a group (or, rarely, one elementary item).
    pub root: Item,
    /// Its `OCCURS … DEPENDING ON` table, which ends the record, if it has one.
    pub depending: Option<Depending>,
}

/// The table whose count a field of the record gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Depending {
    /// Where its first occurrence starts in the record.
    pub offset: usize,
    /// The size of one occurrence.
    pub size: usize,
    pub min: usize,
    pub max: usize,
    /// The path of the table (`["STATEMENT", "LINE"]`, below the record).
    pub table: Vec<String>,
    /// The path of the field holding the count, and where it is.
    pub counter: Vec<String>,
    pub counter_offset: usize,
    pub counter_pic: NumberPic,
}

/// An item of a layout: a group or an elementary field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The name as written (`ACCOUNT-NO`); `FILLER` for a filler.
    pub name: String,
    /// A `FILLER` (or unnamed) item: in the record, not in the XML.
    pub filler: bool,
    /// The offset of its first occurrence within its parent's occurrence.
    pub offset: usize,
    /// The size in bytes of one occurrence.
    pub size: usize,
    pub occurs: Occurs,
    /// It lies over an earlier sibling (`REDEFINES`): the index of that sibling.
    pub redefines: Option<usize>,
    pub kind: Kind,
    /// Its `VALUE`: what an absent field is filled with.
    pub value: Option<Value>,
}

/// How many times an item occurs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Occurs {
    Once,
    /// `OCCURS n`.
    Times(usize),
    /// `OCCURS min TO max DEPENDING ON name`: `name` is an earlier numeric field of the record.
    Depending {
        min: usize,
        max: usize,
        on: String,
    },
}

impl Occurs {
    /// The most occurrences.
    pub fn max(&self) -> usize {
        match self {
            Occurs::Once => 1,
            Occurs::Times(n) => *n,
            Occurs::Depending { max, .. } => *max,
        }
    }

    /// Whether the item is a table (its XML element may repeat).
    pub fn is_table(&self) -> bool {
        !matches!(self, Occurs::Once)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Group(Vec<Item>),
    /// `PIC X(n)`: text in the record's charset.
    Text,
    Number(NumberPic),
}

/// A numeric picture: `S9(7)V99 COMP-3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumberPic {
    /// All digits, integer and fraction.
    pub digits: u8,
    /// Digits after the implied decimal point (`V`).
    pub scale: u8,
    pub signed: bool,
    pub usage: Usage,
    /// Where a DISPLAY number's sign is (others have none or a sign nibble).
    pub sign: Sign,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// Zoned decimal: one digit a byte, in the record's charset.
    Display,
    /// `COMP`, `BINARY`, `COMP-4`, `COMP-5`: big-endian two's complement in 2, 4 or 8 bytes.
    Binary,
    /// `COMP-3`, `PACKED-DECIMAL`: two digits a byte, the sign in the last nibble.
    Packed,
}

/// Where a signed DISPLAY number keeps its sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sign {
    /// In the zone of the last digit (COBOL's default).
    TrailingOverpunch,
    LeadingOverpunch,
    /// A `+` or `-` byte after the digits.
    TrailingSeparate,
    LeadingSeparate,
}

/// A `VALUE` clause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Spaces,
    Zeros,
    /// Every byte 0x00.
    LowValues,
    /// Every byte 0xFF.
    HighValues,
    Text(String),
    Number(Decimal),
}

impl NumberPic {
    /// The size in bytes, or why the picture cannot be stored.
    pub fn size(&self) -> Result<usize, String> {
        let d = usize::from(self.digits);
        Ok(match self.usage {
            Usage::Display => match (self.signed, self.sign) {
                (true, Sign::TrailingSeparate | Sign::LeadingSeparate) => d + 1,
                _ => d,
            },
            Usage::Packed => d / 2 + 1,
            Usage::Binary => match d {
                1..=4 => 2,
                5..=9 => 4,
                10..=18 => 8,
                _ => return Err(format!("a binary item holds at most 18 digits, not {d}")),
            },
        })
    }
}

impl Item {
    /// The items of a group (none for a field).
    pub fn children(&self) -> &[Item] {
        match &self.kind {
            Kind::Group(items) => items,
            _ => &[],
        }
    }

    /// The item at `path` below this one (`["BALANCE", "AMOUNT"]`).
    pub fn find(&self, path: &[&str]) -> Option<&Item> {
        let Some((first, rest)) = path.split_first() else {
            return Some(self);
        };
        self.children()
            .iter()
            .find(|c| !c.filler && c.name.eq_ignore_ascii_case(first))
            .and_then(|c| c.find(rest))
    }
}

impl Layout {
    /// The record's length with its `DEPENDING ON` table (if any) at its most occurrences.
    pub fn max_len(&self) -> usize {
        match &self.depending {
            Some(d) => d.offset + d.max * d.size,
            None => self.root.size,
        }
    }

    /// The shortest record the layout allows (its `DEPENDING ON` table at its fewest).
    pub fn min_len(&self) -> usize {
        match &self.depending {
            Some(d) => d.offset + d.min * d.size,
            None => self.root.size,
        }
    }
}

/// Whether an item is, or ends with, an `OCCURS … DEPENDING ON` table.
pub fn has_depending(item: &Item) -> bool {
    matches!(item.occurs, Occurs::Depending { .. })
        || item.children().last().is_some_and(has_depending)
}
