use super::*;
use crate::layout::{Kind, NumberPic, Usage, Value};
use crate::number::Decimal;

const SAMPLE: &str = include_str!("../../samples/acctinq.cpy");

fn one(text: &str) -> Layout {
    let mut all = parse(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(all.len(), 1, "one record");
    all.remove(0)
}

fn failure(text: &str) -> CopybookError {
    match parse(text) {
        Ok(l) => panic!("accepted: {l:?}"),
        Err(e) => e,
    }
}

#[test]
fn the_sample_copybook_has_its_offsets_and_sizes() {
    let all = parse(SAMPLE).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = all.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["ACCTINQ-REQUEST", "ACCTINQ-REPLY", "ACCTINQ-ERROR"]);
    let req = &all[0];
    assert_eq!(req.max_len(), 4 + 10 + 6 + 2);
    let code = req.root.find(&["REQUEST-CODE"]).expect("field");
    assert_eq!((code.offset, code.size), (0, 4));
    assert_eq!(code.value, Some(Value::Text("INQ1".into())));
    let max = req.root.find(&["MAX-TXNS"]).expect("field");
    assert_eq!((max.offset, max.size), (20, 2));
    assert!(matches!(
        max.kind,
        Kind::Number(NumberPic {
            usage: Usage::Binary,
            signed: true,
            digits: 4,
            ..
        })
    ));

    let reply = &all[1];
    let balance = reply.root.find(&["BALANCE"]).expect("field");
    assert_eq!((balance.offset, balance.size), (42, 7), "13 digits packed");
    let day = reply.root.find(&["OPENED", "OPENED-DAY"]).expect("field");
    assert_eq!((day.offset, day.size), (6, 2), "offset within OPENED");
    let opened = reply.root.find(&["OPENED"]).expect("group");
    assert_eq!((opened.offset, opened.size), (49, 8));
    // The table ends the record: 2 + 10 + 30 + 7 + 8 + 2 + 2 = 61, then 0 to 10 × 18.
    let d = reply.depending.as_ref().expect("a DEPENDING ON table");
    assert_eq!((d.offset, d.size, d.min, d.max), (61, 18, 0, 10));
    assert_eq!(d.counter, vec!["TXN-COUNT".to_string()]);
    assert_eq!(d.counter_offset, 59);
    assert_eq!((reply.min_len(), reply.max_len()), (61, 61 + 180));
    let amount = reply.root.find(&["TXN", "TXN-AMOUNT"]).expect("field");
    assert_eq!(
        (amount.offset, amount.size),
        (8, 10),
        "9 digits and a separate sign"
    );
    // The level-88 condition added nothing; the FILLER is in the record, not named.
    assert!(reply
        .root
        .children()
        .iter()
        .any(|c| c.filler && c.size == 2));

    let error = &all[2];
    assert_eq!(error.max_len(), 62);
}

#[test]
fn free_format_and_group_usage() {
    let l = one(
        "01 REC. *> a record\n  05 A PIC X(3).\n  05 NUMS COMP-3.\n    10 N1 PIC S9(5).\n    10 N2 PIC 9(2)V9.\n  05 T PIC X OCCURS 3 TIMES.\n",
    );
    let n1 = l.root.find(&["NUMS", "N1"]).expect("N1");
    assert!(
        matches!(
            n1.kind,
            Kind::Number(NumberPic {
                usage: Usage::Packed,
                ..
            })
        ),
        "the group's usage"
    );
    assert_eq!((n1.offset, n1.size), (0, 3));
    let t = l.root.find(&["T"]).expect("T");
    assert_eq!((t.offset, t.size, t.occurs.max()), (3 + 3 + 2, 1, 3));
    assert_eq!(l.max_len(), 11);
}

#[test]
fn redefines_lies_over_its_sibling() {
    let l = one("01 R.\n 05 KIND PIC X.\n 05 BODY PIC X(8).\n 05 NUM REDEFINES BODY PIC 9(8).\n 05 SHORT REDEFINES BODY PIC X(4).\n 05 TAIL PIC X(2).\n");
    let num = l.root.find(&["NUM"]).expect("NUM");
    assert_eq!((num.offset, num.redefines), (1, Some(1)));
    let tail = l.root.find(&["TAIL"]).expect("TAIL");
    assert_eq!(
        tail.offset, 9,
        "after the redefined item, not after its redefinitions"
    );
    assert_eq!(l.max_len(), 11);
}

#[test]
fn fixed_format_reads_columns_8_to_72_only() {
    let pad = |text: &str| format!("{text:<72}");
    let text = [
        "000100 01  R.".to_string(),
        "000200*    a comment: PIC 9 OCCURS nothing".to_string(),
        format!("{}SEQ00003", pad("000300     05  A    PIC X(2).")),
        format!("{}99999999", pad("000400     05  B    PIC S9(3)V9")),
        "000500          COMP-3.".to_string(),
    ]
    .join("\n");
    let l = one(&text);
    let b = l.root.find(&["B"]).expect("B");
    assert!(matches!(
        b.kind,
        Kind::Number(NumberPic {
            usage: Usage::Packed,
            digits: 4,
            scale: 1,
            ..
        })
    ));
    assert_eq!((b.offset, b.size), (2, 3));
}

#[test]
fn what_is_not_supported_is_refused_with_its_line() {
    for (text, line, says) in [
        ("01 R.\n 05 A PIC ZZ9.\n", 2, "edited pictures"),
        ("01 R.\n 05 A PIC 9 COMP-1.\n", 2, "floating-point"),
        ("01 R.\n 05 A PIC 9(4) COMP SYNC.\n", 2, "SYNCHRONIZED"),
        ("01 R.\n 66 B RENAMES A.\n", 2, "RENAMES"),
        ("COPY OTHER.\n", 1, "COPY"),
        ("01 R.\n 05 A PIC X(3)\n", 2, "closing period"),
        ("01 R.\n 05 A.\n", 2, "no PIC"),
        ("01 R.\n 05 A PIC X(2) VALUE \"TOO LONG\".\n", 2, "longer"),
        ("01 R.\n 05 A PIC 9(2) VALUE 123.\n", 2, "more digits"),
        ("01 R.\n 05 A PIC 9(19) COMP.\n", 2, "18 digits"),
        (
            "01 R.\n 05 B REDEFINES NOPE PIC X.\n",
            2,
            "not an earlier item",
        ),
        ("05 A PIC X.\n", 1, "before any 01"),
        ("01 R.\n 05 A PIC X FROBNICATE.\n", 2, "FROBNICATE"),
        ("01 R.\n 05 A PIC 9P9.\n", 2, "P scaling"),
    ] {
        let e = failure(text);
        assert_eq!(e.line, line, "{text:?}: {e}");
        assert!(e.message.contains(says), "{text:?}: {e}");
    }
}

#[test]
fn a_depending_table_must_end_the_record_and_count_from_a_number() {
    let e = failure(
        "01 R.\n 05 N PIC 9.\n 05 T PIC X OCCURS 1 TO 5 DEPENDING ON N.\n 05 AFTER PIC X.\n",
    );
    assert!(e.message.contains("must end the record"), "{e}");
    let e = failure("01 R.\n 05 T PIC X OCCURS 1 TO 5 DEPENDING ON N.\n 05 N PIC 9.\n");
    assert!(
        e.message.contains("must end the record") || e.message.contains("before the table"),
        "{e}"
    );
    let e = failure("01 R.\n 05 N PIC X.\n 05 T PIC X OCCURS 1 TO 5 DEPENDING ON N.\n");
    assert!(e.message.contains("no numeric item N"), "{e}");
}

#[test]
fn values_of_every_kind() {
    let l = one("01 R.\n 05 A PIC X(3) VALUE SPACES.\n 05 B PIC 9(3) VALUE ZEROS.\n 05 C PIC S9(3)V9 VALUE -12.5.\n 05 D PIC X(4) VALUE 'it''s'.\n 05 E PIC X VALUE LOW-VALUES.\n");
    let v = |n: &str| l.root.find(&[n]).and_then(|i| i.value.clone());
    assert_eq!(v("A"), Some(Value::Spaces));
    assert_eq!(v("B"), Some(Value::Zeros));
    assert_eq!(
        v("C"),
        Some(Value::Number(Decimal {
            unscaled: -125,
            scale: 1
        }))
    );
    assert_eq!(v("D"), Some(Value::Text("it's".into())));
    assert_eq!(v("E"), Some(Value::LowValues));
    // 'it''s' is four characters: too long for X(2).
    let e = failure("01 R.\n 05 D PIC X(2) VALUE 'it''s'.\n");
    assert!(e.message.contains("longer"), "{e}");
}
