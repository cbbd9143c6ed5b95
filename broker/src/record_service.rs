//! # Record services: the Body's XML to a server class's record, and its reply record back
//!
//! A legacy server class written in COBOL or C reads one fixed-layout record and writes one back.
//! NonStop SOAP's service definitions said which record a service's request becomes
//! (`RequestInfo`), which layouts a reply can have, and how a slice of the reply chooses among them
//! (`ResponseInfo` and its `ResponseSelection`s, some of them faults). A service with a
//! `[service.record]` table is such a service, on a class with `payload = "record"`; the `records`
//! crate does the byte work, this module is the broker's side of it:
//!
//! 1. [`RecordService::request_record`]: the service element → its request record. Every value is
//!    checked first; a refusal ([`records::Refused`]) names the field's path and becomes the
//!    dialect's Client fault, and nothing reaches the server class.
//! 2. The adapter carries the bytes as they are (the process and tcp wire protocol's payload, the
//!    http adapter's `application/octet-stream` body).
//! 3. [`RecordService::reply`]: the reply record → the first reply layout whose rule holds (else
//!    the default) → XML. A layout marked `fault` is answered as a SOAP fault whose detail is that
//!    record's XML; every other as `<{service}Response>` in the endpoint's namespace (holding the
//!    layout's element when the service has several non-fault layouts, so a client can tell them
//!    apart). A reply that no rule chooses, or that does not fit the chosen layout, is the server's
//!    error: logged with the offset, answered with a Server fault.
//!
//! The same definitions describe the service's types in the endpoint's WSDL (`wsdl.rs`).

use bytes::Bytes;
use records::select::Rule;
use records::{Encoding, Layout, Misfit, Refused};

/// A service whose class speaks records: its layouts and how replies are told apart.
#[derive(Debug)]
pub struct RecordService {
    /// The service's name: its reply element is `{service}Response`.
    pub service: String,
    /// The namespace replies are written in (the endpoint's).
    pub namespace: String,
    pub request: Layout,
    /// The reply layouts, each with the rule that chooses it, in the configured order.
    pub replies: Vec<ReplyLayout>,
    pub encoding: Encoding,
}

/// One reply layout and its `ResponseSelection`.
#[derive(Debug)]
pub struct ReplyLayout {
    pub layout: Layout,
    pub rule: Rule,
    /// The faultstring when the rule marks the layout as a fault.
    pub fault_string: String,
}

/// What a reply record became.
#[derive(Debug, PartialEq, Eq)]
pub enum RecordReply {
    /// The response element.
    Body(Bytes),
    /// A fault layout: the faultstring, and the record as the fault's detail.
    Fault { string: String, detail: Bytes },
}

/// A reply record the service's layouts cannot read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyMisfit {
    /// No rule holds and there is no default.
    NoLayout { len: usize },
    /// The chosen layout does not fit the bytes.
    Misfit { layout: String, misfit: Misfit },
}

impl std::fmt::Display for ReplyMisfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplyMisfit::NoLayout { len } => write!(
                f,
                "no reply layout's selection holds for the {len}-byte reply and none is the default"
            ),
            ReplyMisfit::Misfit { layout, misfit } => {
                write!(f, "the reply does not fit layout {layout}: {misfit}")
            }
        }
    }
}

impl ReplyMisfit {
    /// Where the reply went wrong, in words the client may hear (no byte of the reply).
    pub fn brief(&self) -> String {
        match self {
            ReplyMisfit::NoLayout { len } => {
                format!("no reply layout is chosen for its {len} bytes")
            }
            ReplyMisfit::Misfit { layout, misfit } => {
                format!("layout {layout} at offset {}", misfit.offset)
            }
        }
    }
}

impl RecordService {
    /// The request record for the service element `xml` (as the dialect handed it on).
    pub fn request_record(&self, xml: &[u8]) -> Result<Bytes, Refused> {
        let element = records::xml::Element::parse(xml).map_err(|message| Refused {
            path: self.service.clone(),
            message,
            kind: records::RefusalKind::Value,
        })?;
        records::to_record(&self.request, &element, self.encoding).map(Bytes::from)
    }

    /// The reply record `bytes` as a response element or a fault.
    pub fn reply(&self, bytes: &[u8]) -> Result<RecordReply, ReplyMisfit> {
        // `records::select::choose`'s order (the first rule that holds, else the default), over
        // the layouts themselves: nothing is copied per reply.
        let charset = self.encoding.charset;
        let chosen = self
            .replies
            .iter()
            .find(|r| !r.rule.default && r.rule.holds(bytes, charset))
            .or_else(|| self.replies.iter().find(|r| r.rule.default))
            .ok_or(ReplyMisfit::NoLayout { len: bytes.len() })?;
        let layout = &chosen.layout;
        let misfit = |misfit| ReplyMisfit::Misfit {
            layout: layout.name.clone(),
            misfit,
        };
        let mut xmlns = String::from("xmlns=\"");
        crate::soap::escape_attr(&self.namespace, &mut xmlns);
        xmlns.push('"');
        if chosen.rule.fault {
            let detail = records::to_xml(layout, bytes, self.encoding, &layout.name, &xmlns)
                .map_err(misfit)?;
            return Ok(RecordReply::Fault {
                string: chosen.fault_string.clone(),
                detail: Bytes::from(detail),
            });
        }
        let response = format!("{}Response", self.service);
        let xml = if self.answers_in_one_layout() {
            records::to_xml(layout, bytes, self.encoding, &response, &xmlns).map_err(misfit)?
        } else {
            let inner =
                records::to_xml(layout, bytes, self.encoding, &layout.name, "").map_err(misfit)?;
            format!("<{response} {xmlns}>{inner}</{response}>")
        };
        Ok(RecordReply::Body(Bytes::from(xml)))
    }

    /// Whether one layout answers every reply that is not a fault (its items are then the response
    /// element's own).
    pub fn answers_in_one_layout(&self) -> bool {
        self.replies.iter().filter(|r| !r.rule.fault).count() <= 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use records::select::{Comparison, Conversion};
    use records::{Charset, Termination};

    const COPYBOOK: &str = include_str!("../../records/samples/acctinq.cpy");

    fn layout(name: &str) -> Layout {
        records::copybook::parse(COPYBOOK)
            .unwrap()
            .into_iter()
            .find(|l| l.name == name)
            .unwrap()
    }

    fn rule(layout: &str, default: bool, fault: bool) -> Rule {
        Rule {
            start: 0,
            end: 2,
            value: "00".into(),
            comparison: Comparison::Eq,
            conversion: Conversion::String,
            default,
            fault,
            layout: layout.into(),
        }
    }

    fn service(charset: Charset) -> RecordService {
        RecordService {
            service: "AccountInquiry".into(),
            namespace: "urn:test".into(),
            request: layout("ACCTINQ-REQUEST"),
            replies: vec![
                ReplyLayout {
                    layout: layout("ACCTINQ-REPLY"),
                    rule: rule("ACCTINQ-REPLY", false, false),
                    fault_string: String::new(),
                },
                ReplyLayout {
                    layout: layout("ACCTINQ-ERROR"),
                    rule: rule("ACCTINQ-ERROR", true, true),
                    fault_string: "Account inquiry failed".into(),
                },
            ],
            encoding: Encoding {
                charset,
                termination: Termination::SpacePadded,
            },
        }
    }

    #[test]
    fn the_request_element_becomes_its_record_with_defaults() {
        let s = service(Charset::Ascii);
        let record = s
            .request_record(
                b"<AccountInquiry xmlns=\"urn:test\"><ACCOUNT-NO>42</ACCOUNT-NO></AccountInquiry>",
            )
            .unwrap();
        assert_eq!(&record[..], b"INQ10000000042      \x00\x0a");
    }

    #[test]
    fn a_refused_value_names_its_field_and_kind() {
        let s = service(Charset::Ascii);
        let e = s
            .request_record(b"<AccountInquiry><ACCOUNT-NO>x1</ACCOUNT-NO></AccountInquiry>")
            .unwrap_err();
        assert_eq!(e.path, "ACCOUNT-NO");
        assert_eq!(e.kind, records::RefusalKind::Value);
        let e = s
            .request_record(b"<AccountInquiry><PIN>1</PIN></AccountInquiry>")
            .unwrap_err();
        assert_eq!(e.kind, records::RefusalKind::UnknownField);
        assert_eq!(e.path, "PIN");
    }

    #[test]
    fn the_status_chooses_the_reply_or_the_fault() {
        let s = service(Charset::Ibm037);
        let enc = s.encoding;
        let mut error = Charset::Ibm037.encode("99").unwrap();
        error.extend(
            Charset::Ibm037
                .encode(&format!("{:<60}", "NO SUCH ACCOUNT"))
                .unwrap(),
        );
        match s.reply(&error).unwrap() {
            RecordReply::Fault { string, detail } => {
                assert_eq!(string, "Account inquiry failed");
                let detail = String::from_utf8(detail.to_vec()).unwrap();
                assert!(detail.starts_with("<ACCTINQ-ERROR xmlns=\"urn:test\"><ERROR-STATUS>99</ERROR-STATUS><ERROR-TEXT>NO SUCH ACCOUNT</ERROR-TEXT>"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        // A reply of the account layout, built by the request side's writer for the test.
        let reply = layout("ACCTINQ-REPLY");
        let xml = b"<r><REPLY-STATUS>00</REPLY-STATUS><ACCOUNT-NO>42</ACCOUNT-NO><HOLDER-NAME>ADA</HOLDER-NAME><BALANCE>-12.50</BALANCE><TXN><TXN-DATE>20261207</TXN-DATE><TXN-AMOUNT>1.00</TXN-AMOUNT></TXN></r>";
        let bytes =
            records::to_record(&reply, &records::xml::Element::parse(xml).unwrap(), enc).unwrap();
        match s.reply(&bytes).unwrap() {
            RecordReply::Body(body) => {
                let body = String::from_utf8(body.to_vec()).unwrap();
                assert!(body.starts_with("<AccountInquiryResponse xmlns=\"urn:test\"><REPLY-STATUS>00</REPLY-STATUS><ACCOUNT-NO>42</ACCOUNT-NO><HOLDER-NAME>ADA</HOLDER-NAME><BALANCE>-12.50</BALANCE>"), "{body}");
                assert!(
                    body.contains("<TXN-COUNT>1</TXN-COUNT><TXN><TXN-DATE>20261207</TXN-DATE>"),
                    "{body}"
                );
            }
            other => panic!("{other:?}"),
        }
        // Cut short: the layout it chose does not fit.
        assert!(matches!(
            s.reply(&bytes[..20]),
            Err(ReplyMisfit::Misfit { .. })
        ));
    }

    #[test]
    fn no_rule_and_no_default_is_a_misfit() {
        let mut s = service(Charset::Ascii);
        s.replies[1].rule.default = false;
        s.replies[1].rule.value = "99".into();
        assert_eq!(
            s.reply(b"77").unwrap_err(),
            ReplyMisfit::NoLayout { len: 2 }
        );
    }
}
