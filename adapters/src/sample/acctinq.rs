//! # `acctinq`: a record server class, as a COBOL team would have written it
//!
//! The account inquiry reads one fixed-layout request record and writes one reply record, in
//! EBCDIC (IBM-037), with the layouts of `records/samples/acctinq.cpy`:
//!
//! ```text
//! ACCTINQ-REQUEST (22 bytes)   REQUEST-CODE X(4) "INQ1" | ACCOUNT-NO 9(10) | BRANCH X(6) | MAX-TXNS S9(4) COMP
//! ACCTINQ-REPLY (61 + n × 18)  REPLY-STATUS XX "00" | ACCOUNT-NO 9(10) | HOLDER-NAME X(30)
//!                              | BALANCE S9(11)V99 COMP-3 | OPENED 9(8) | FILLER XX | TXN-COUNT S9(4) COMP
//!                              | TXN (TXN-DATE 9(8), TXN-AMOUNT S9(7)V99 SIGN LEADING SEPARATE) × n
//! ACCTINQ-ERROR (62 bytes)     ERROR-STATUS XX (not "00") | ERROR-TEXT X(60)
//! ```
//!
//! It works on bytes at offsets, like the program it stands for; it does not use the broker's
//! `records` crate to read or write them (only its EBCDIC table for the text), so the broker's
//! layout work is checked against an independent writer. The accounts are fixed:
//! `1000000001` (three transactions), `1000000002` (one, a negative balance) and `1000000003`
//! (none). MAX-TXNS limits the transactions returned (at most 10, the table's size).
//!
//! Error statuses: `10` account not found, `90` unknown request code, `91` a request record of the
//! wrong length. Test aid: account `9999999999` is answered with a reply cut short after its
//! status, a reply that fits no layout (the broker answers it with a Server fault and logs the
//! offset).

use super::{Action, SampleClass};
use crate::protocol::Request;
use crate::ReplyStatus;
use bytes::Bytes;
use records::Charset;
use std::time::Duration;

const CHARSET: Charset = Charset::Ibm037;
const REQUEST_LEN: usize = 22;
const MAX_TABLE: usize = 10;

struct Account {
    number: u64,
    holder: &'static str,
    /// In cents.
    balance: i64,
    opened: u32,
    /// (yyyymmdd, cents)
    txns: &'static [(u32, i64)],
}

const ACCOUNTS: &[Account] = &[
    Account {
        number: 1_000_000_001,
        holder: "ADA LOVELACE",
        balance: 120000,
        opened: 20190314,
        txns: &[(20261201, 25000), (20261203, -7525), (20261205, 102525)],
    },
    Account {
        number: 1_000_000_002,
        holder: "CHARLES BABBAGE",
        balance: -31050,
        opened: 20200102,
        txns: &[(20261130, -31050)],
    },
    Account {
        number: 1_000_000_003,
        holder: "GRACE HOPPER",
        balance: 0,
        opened: 20211209,
        txns: &[],
    },
];

/// The test aid's account: answered with a reply that fits no layout.
const SHORT_REPLY_ACCOUNT: u64 = 9_999_999_999;

pub struct AccountInquiry;

impl SampleClass for AccountInquiry {
    fn server_name(&self) -> String {
        format!("sample-server acctinq {}", env!("CARGO_PKG_VERSION"))
    }

    fn request(&mut self, request: &Request) -> Action {
        respond(Some(&request.operation), &request.payload)
    }
}

/// The inquiry, shared by the wire-protocol and the HTTP modes.
pub fn respond(_operation: Option<&str>, record: &[u8]) -> Action {
    reply(inquire(record))
}

fn reply(record: Vec<u8>) -> Action {
    Action::Reply {
        status: ReplyStatus::Ok,
        payload: Bytes::from(record),
        delay: Duration::ZERO,
    }
}

fn inquire(record: &[u8]) -> Vec<u8> {
    if record.len() != REQUEST_LEN {
        return error("91", &format!("BAD REQUEST LENGTH {}", record.len()));
    }
    let code = CHARSET.decode(&record[0..4]).unwrap_or_default();
    if code != "INQ1" {
        return error("90", &format!("UNKNOWN REQUEST CODE {code}"));
    }
    let Some(number) = zoned(&record[4..14]) else {
        return error("91", "ACCOUNT-NO IS NOT NUMERIC");
    };
    let max_txns = i16::from_be_bytes([record[20], record[21]]).clamp(0, MAX_TABLE as i16) as usize;
    if number == SHORT_REPLY_ACCOUNT {
        return text("00");
    }
    let Some(account) = ACCOUNTS.iter().find(|a| a.number == number) else {
        return error("10", &format!("ACCOUNT {number:010} NOT FOUND"));
    };
    let txns = &account.txns[..account.txns.len().min(max_txns)];
    let mut out = Vec::with_capacity(61 + txns.len() * 18);
    out.extend(text("00"));
    out.extend(text(&format!("{number:010}")));
    out.extend(text(&format!("{:<30}", account.holder)));
    out.extend(packed(account.balance, 13));
    out.extend(text(&format!("{:08}", account.opened)));
    out.extend(text("  "));
    out.extend((txns.len() as i16).to_be_bytes());
    for (date, cents) in txns {
        out.extend(text(&format!("{date:08}")));
        out.extend(text(if *cents < 0 { "-" } else { "+" }));
        out.extend(text(&format!("{:09}", cents.unsigned_abs())));
    }
    out
}

fn error(status: &str, message: &str) -> Vec<u8> {
    let mut out = text(status);
    out.extend(text(&format!("{message:<60.60}")));
    out
}

fn text(s: &str) -> Vec<u8> {
    // The sample's texts are all in IBM-037's repertoire.
    CHARSET
        .encode(s)
        .unwrap_or_else(|_| vec![CHARSET.space(); s.len()])
}

fn zoned(bytes: &[u8]) -> Option<u64> {
    bytes.iter().try_fold(0u64, |n, b| {
        CHARSET.digit_value(*b).map(|d| n * 10 + u64::from(d))
    })
}

/// COMP-3: `digits` digits and a sign nibble (C positive, D negative), in (digits + 1) / 2 bytes.
fn packed(value: i64, digits: usize) -> Vec<u8> {
    let text = format!("{:0width$}", value.unsigned_abs(), width = digits);
    let mut nibbles: Vec<u8> = text.bytes().map(|b| b - b'0').collect();
    nibbles.push(if value < 0 { 0xD } else { 0xC });
    if nibbles.len() % 2 == 1 {
        nibbles.insert(0, 0);
    }
    nibbles.chunks(2).map(|p| (p[0] << 4) | p[1]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(code: &str, account: &str, max: i16) -> Vec<u8> {
        let mut r = text(code);
        r.extend(text(account));
        r.extend(text("      "));
        r.extend(max.to_be_bytes());
        r
    }

    #[test]
    fn an_account_is_answered_in_the_reply_layout() {
        let out = inquire(&request("INQ1", "1000000001", 2));
        assert_eq!(out.len(), 61 + 2 * 18);
        assert_eq!(CHARSET.decode(&out[0..2]).unwrap(), "00");
        assert_eq!(CHARSET.decode(&out[12..24]).unwrap(), "ADA LOVELACE");
        assert_eq!(&out[42..49], &[0x00, 0x00, 0x00, 0x01, 0x20, 0x00, 0x0C]);
        assert_eq!(&out[59..61], &[0, 2]);
        assert_eq!(CHARSET.decode(&out[79..97]).unwrap(), "20261203-000007525");
    }

    #[test]
    fn errors_have_their_own_layout() {
        let out = inquire(&request("INQ1", "0000000042", 10));
        assert_eq!(out.len(), 62);
        assert_eq!(
            CHARSET.decode(&out).unwrap().trim_end(),
            "10ACCOUNT 0000000042 NOT FOUND"
        );
        assert_eq!(
            &CHARSET
                .decode(&inquire(&request("INQ2", "0000000001", 1)))
                .unwrap()[..2],
            "90"
        );
        assert_eq!(&CHARSET.decode(&inquire(b"short")).unwrap()[..2], "91");
    }

    #[test]
    fn packed_decimal_has_its_sign_in_the_last_nibble() {
        assert_eq!(packed(-31050, 13), vec![0, 0, 0, 0, 0x31, 0x05, 0x0D]);
        assert_eq!(packed(7, 3), vec![0x00, 0x7C]);
    }
}
