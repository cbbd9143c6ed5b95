//! `sample-server directory` over the wire protocol: the DSML stand-in echoes `requestID`s and
//! refuses every operation (it has no directory behind it).

mod sample_wire;

use adapters::protocol::Message;
use adapters::sample::directory::{DSML_NS, STAND_IN_MESSAGE};
use adapters::ReplyStatus;
use sample_wire::{fault, ok, Ctx, Worker};

fn unwilling(name: &str, id: &str) -> String {
    format!(
        r#"<{name} requestID="{id}"><resultCode code="53" descr="unwillingToPerform"/><errorMessage>{STAND_IN_MESSAGE}</errorMessage></{name}>"#
    )
}

#[test]
fn every_operation_is_answered_with_its_request_id_and_refused() {
    let mut w = Worker::start(&["directory"]);
    let request = format!(
        r#"<batchRequest xmlns="{DSML_NS}" requestID="batch-1">
  <searchRequest requestID="1" dn="dc=example,dc=com" scope="baseObject" derefAliases="neverDerefAliases"><filter><present name="objectClass"/></filter></searchRequest>
  <addRequest requestID="2" dn="cn=x"/>
  <modifyRequest requestID="3" dn="cn=x"/>
  <delRequest requestID="4" dn="cn=x"/>
  <modDNRequest requestID="5" dn="cn=x" newrdn="cn=y"/>
  <compareRequest requestID="6" dn="cn=x"/>
  <extendedRequest requestID="7"><requestName>1.3.6.1.4.1.4203.1.11.3</requestName></extendedRequest>
  <authRequest requestID="8" principal="dn:cn=admin"/>
  <abandonRequest requestID="9" abandonID="1"/>
  <delRequest dn="cn=no-id"/>
  <frobRequest requestID="10"/>
</batchRequest>"#
    );
    let out = ok(w.request("batchRequest", &request, &Ctx::default()));
    let expected = [
        format!(r#"<batchResponse xmlns="{DSML_NS}" requestID="batch-1">"#),
        format!(
            r#"<searchResponse requestID="1">{}</searchResponse>"#,
            unwilling("searchResultDone", "1")
        ),
        unwilling("addResponse", "2"),
        unwilling("modifyResponse", "3"),
        unwilling("delResponse", "4"),
        unwilling("modDNResponse", "5"),
        unwilling("compareResponse", "6"),
        unwilling("extendedResponse", "7"),
        unwilling("authResponse", "8"),
        // abandonRequest: no response at all.
        format!(
            r#"<delResponse><resultCode code="53" descr="unwillingToPerform"/><errorMessage>{STAND_IN_MESSAGE}</errorMessage></delResponse>"#
        ),
        r#"<errorResponse requestID="10" type="malformedRequest"><message>&lt;frobRequest&gt; is not a DSML v2 operation</message></errorResponse>"#.to_string(),
        "</batchResponse>".to_string(),
    ]
    .concat();
    assert_eq!(out, expected);
    assert!(STAND_IN_MESSAGE.contains("no directory"));
}

#[test]
fn an_empty_batch_gets_an_empty_response_in_the_same_namespace() {
    let mut w = Worker::start(&["directory"]);
    assert_eq!(
        ok(w.request(
            "batchRequest",
            &format!(r#"<batchRequest xmlns="{DSML_NS}"/>"#),
            &Ctx::default()
        )),
        format!(r#"<batchResponse xmlns="{DSML_NS}"/>"#)
    );
    assert_eq!(
        ok(w.request(
            "batchRequest",
            &format!(
                r#"<dsml:batchRequest xmlns:dsml="{DSML_NS}" requestID="r1"></dsml:batchRequest>"#
            ),
            &Ctx::default()
        )),
        format!(r#"<dsml:batchResponse xmlns:dsml="{DSML_NS}" requestID="r1"/>"#)
    );
}

#[test]
fn what_is_not_a_batch_request_is_a_client_fault() {
    let mut w = Worker::start(&["directory"]);
    for payload in [
        "<searchRequest/>",
        r#"<batchRequest xmlns="urn:not-dsml"/>"#,
        "<batchRequest",
    ] {
        let (code, _) = fault(w.request("batchRequest", payload, &Ctx::default()));
        assert_eq!(code, "Client", "{payload}");
    }
    // Context-free and non-transactional: DIALOG-ABORT is acknowledged, COMMIT is an error.
    let answer = w.control(|id| Message::DialogAbort {
        id,
        session: "s".into(),
    });
    assert!(matches!(answer, Some(Message::Ack { .. })), "{answer:?}");
    let answer = w.control(|id| Message::Commit {
        id,
        transaction: "t".into(),
    });
    assert!(
        matches!(answer, Some(Message::Reply(ref r)) if matches!(r.status, ReplyStatus::Error(_))),
        "{answer:?}"
    );
}
