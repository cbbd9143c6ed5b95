//! # Records: the fixed layouts legacy server classes speak
//!
//! A NonStop server class written in COBOL or C reads a request record and writes a reply record:
//! bytes at fixed offsets, text in the server's character set, numbers zoned, binary or packed.
//! NonStop SOAP described them in a DDL dictionary and mapped each service's XML to them. This
//! crate is that mapping's floor:
//!
//! - [`copybook`] reads a COBOL copybook (the subset such records use) into [`Layout`]s;
//! - [`fields`] reads the second syntax, a TOML field list with TAL-like types, into the same;
//! - [`layout`] is the model: items, offsets, sizes, tables, redefinitions, defaults;
//! - [`number`] writes and reads zoned, binary and packed decimal numbers;
//! - [`record`] turns a service's XML into its record, checking every value, and a reply record
//!   back into XML, checking every byte;
//! - [`select`] chooses a reply record's layout by a slice of its bytes (`ResponseSelection`);
//! - [`charset`] writes and reads text in ASCII, ISO-8859-1, EBCDIC (IBM-037, IBM-1140) and
//!   Shift_JIS.
//!
//! It knows nothing of SOAP, sessions or adapters: the broker gives it a layout and values, and it
//! gives back bytes, or the reverse.

pub mod charset;
pub mod copybook;
pub mod fields;
pub mod layout;
pub mod number;
pub mod record;
pub mod select;
pub mod xml;

pub use charset::Charset;
pub use layout::{Item, Kind, Layout, NumberPic, Occurs, Sign, Usage, Value};
pub use number::Decimal;
pub use record::{to_record, to_xml, Encoding, Misfit, RefusalKind, Refused, Termination};
