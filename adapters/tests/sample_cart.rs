//! `sample-server cart` over the wire protocol: a cart per dialog, kept in the worker's memory.

mod sample_wire;

use adapters::protocol::Message;
use adapters::ReplyStatus;
use sample_wire::{fault, text, Ctx, Worker};

fn in_dialog<'a>(session: &'a str, dialog: &'a str) -> Ctx<'a> {
    Ctx {
        session: Some(session),
        dialog: Some(dialog),
        ..Ctx::default()
    }
}

fn add(item: &str, qty: &str) -> String {
    format!("<CartAdd><item>{item}</item><qty>{qty}</qty></CartAdd>")
}

/// The payload, asserting the status.
fn expect(reply: adapters::protocol::Reply, status: ReplyStatus) -> String {
    assert_eq!(reply.status, status, "{}", text(&reply));
    text(&reply)
}

#[test]
fn begin_continue_and_checkout() {
    let mut w = Worker::start(&["cart"]);
    assert_eq!(
        expect(
            w.request("CartAdd", &add("apple", "2"), &in_dialog("s1", "begin")),
            ReplyStatus::DialogContinue
        ),
        "<CartAddResponse><item><name>apple</name><qty>2</qty></item><count>1</count></CartAddResponse>"
    );
    w.request("CartAdd", &add("pear", "1"), &in_dialog("s1", "continue"));
    assert_eq!(
        expect(
            w.request("CartAdd", &add("apple", "3"), &in_dialog("s1", "continue")),
            ReplyStatus::DialogContinue
        ),
        "<CartAddResponse><item><name>apple</name><qty>5</qty></item><item><name>pear</name><qty>1</qty></item><count>2</count></CartAddResponse>"
    );
    // The response takes the request element's namespace.
    assert_eq!(
        expect(
            w.request(
                "CartList",
                r#"<c:CartList xmlns:c="urn:cart"/>"#,
                &in_dialog("s1", "continue")
            ),
            ReplyStatus::DialogContinue
        ),
        r#"<c:CartListResponse xmlns:c="urn:cart"><c:item><c:name>apple</c:name><c:qty>5</c:qty></c:item><c:item><c:name>pear</c:name><c:qty>1</c:qty></c:item><c:count>2</c:count></c:CartListResponse>"#
    );
    assert_eq!(
        expect(
            w.request(
                "CartCheckout",
                "<CartCheckout/>",
                &in_dialog("s1", "continue")
            ),
            ReplyStatus::DialogEnd
        ),
        "<CartCheckoutResponse><items>2</items><total>6</total></CartCheckoutResponse>"
    );
    // Checked out: the cart is gone.
    let (code, string) = fault(w.request("CartList", "<CartList/>", &in_dialog("s1", "continue")));
    assert_eq!(code, "Client");
    assert!(string.contains("no cart for session s1"), "{string}");
}

#[test]
fn two_sessions_on_one_worker_are_isolated() {
    let mut w = Worker::start(&["cart"]);
    w.request("CartAdd", &add("apple", "1"), &in_dialog("s1", "begin"));
    w.request("CartAdd", &add("plum", "4"), &in_dialog("s2", "begin"));
    w.request("CartAdd", &add("apple", "1"), &in_dialog("s1", "continue"));
    assert_eq!(
        expect(
            w.request("CartList", "<CartList/>", &in_dialog("s2", "continue")),
            ReplyStatus::DialogContinue
        ),
        "<CartListResponse><item><name>plum</name><qty>4</qty></item><count>1</count></CartListResponse>"
    );
    assert_eq!(
        expect(
            w.request(
                "CartCheckout",
                "<CartCheckout/>",
                &in_dialog("s1", "continue")
            ),
            ReplyStatus::DialogEnd
        ),
        "<CartCheckoutResponse><items>1</items><total>2</total></CartCheckoutResponse>"
    );
    // s2 is untouched by s1's checkout.
    assert!(expect(
        w.request("CartList", "<CartList/>", &in_dialog("s2", "continue")),
        ReplyStatus::DialogContinue
    )
    .contains("<qty>4</qty>"));
}

#[test]
fn dialog_abort_from_the_broker_discards_the_cart() {
    let mut w = Worker::start(&["cart"]);
    w.request("CartAdd", &add("apple", "1"), &in_dialog("s1", "begin"));
    w.request("CartAdd", &add("plum", "1"), &in_dialog("s2", "begin"));
    let answer = w.control(|id| Message::DialogAbort {
        id,
        session: "s1".into(),
    });
    assert!(matches!(answer, Some(Message::Ack { .. })), "{answer:?}");
    // Idempotent: an unknown session is acknowledged too.
    let answer = w.control(|id| Message::DialogAbort {
        id,
        session: "nobody".into(),
    });
    assert!(matches!(answer, Some(Message::Ack { .. })), "{answer:?}");
    let (_, string) = fault(w.request("CartList", "<CartList/>", &in_dialog("s1", "continue")));
    assert!(string.contains("no cart"), "{string}");
    // A new dialog for the session starts empty; s2 kept its cart.
    assert_eq!(
        expect(
            w.request("CartList", "<CartList/>", &in_dialog("s1", "begin")),
            ReplyStatus::DialogContinue
        ),
        "<CartListResponse><count>0</count></CartListResponse>"
    );
    assert!(
        text(&w.request("CartList", "<CartList/>", &in_dialog("s2", "continue"))).contains("plum")
    );
}

#[test]
fn abort_dialog_aid_makes_the_server_abort() {
    let mut w = Worker::start(&["cart"]);
    w.request("CartAdd", &add("apple", "1"), &in_dialog("s1", "begin"));
    let reply = w.request(
        "CartAdd",
        "<CartAdd><abortDialog/></CartAdd>",
        &in_dialog("s1", "continue"),
    );
    assert_eq!(reply.status, ReplyStatus::DialogAbort);
    let (_, string) = fault(w.request("CartList", "<CartList/>", &in_dialog("s1", "continue")));
    assert!(string.contains("no cart"), "{string}");
}

#[test]
fn faults_for_bad_input_and_for_a_call_outside_a_dialog() {
    let mut w = Worker::start(&["cart"]);
    let (code, string) = fault(w.request(
        "CartAdd",
        &add("apple", "1"),
        &Ctx {
            session: Some("s1"),
            ..Ctx::default()
        },
    ));
    assert_eq!(code, "Client");
    assert!(string.contains("the cart needs a session"), "{string}");
    let (_, string) = fault(w.request("CartList", "<CartList/>", &Ctx::default()));
    assert!(string.contains("the cart needs a session"), "{string}");

    w.request("CartList", "<CartList/>", &in_dialog("s1", "begin"));
    for (payload, expected) in [
        (add("apple", "0"), "not an integer from 1"),
        (add("apple", "-2"), "not an integer from 1"),
        (add("apple", "1.5"), "not an integer from 1"),
        (
            add("apple", "99999999999999999999999"),
            "not an integer from 1",
        ),
        (add("", "1"), "not valid"),
        (
            "<CartAdd><qty>1</qty></CartAdd>".to_string(),
            "needs a <item>",
        ),
        (
            "<CartAdd><item>a</item></CartAdd>".to_string(),
            "needs a <qty>",
        ),
        ("<CartAdd><item>a</item".to_string(), "not XML"),
    ] {
        let (code, string) = fault(w.request("CartAdd", &payload, &in_dialog("s1", "continue")));
        assert_eq!(code, "Client", "{payload}");
        assert!(string.contains(expected), "{payload}: {string}");
    }
    let (_, string) = fault(w.request("CartFrob", "<CartFrob/>", &in_dialog("s1", "continue")));
    assert!(string.starts_with("unknown operation CartFrob"), "{string}");
    // A fault leaves the dialog open and the cart as it was.
    assert_eq!(
        expect(
            w.request(
                "CartCheckout",
                "<CartCheckout/>",
                &in_dialog("s1", "continue")
            ),
            ReplyStatus::DialogEnd
        ),
        "<CartCheckoutResponse><items>0</items><total>0</total></CartCheckoutResponse>"
    );
    // Not transactional.
    let answer = w.control(|id| Message::Prepare {
        id,
        transaction: "t1".into(),
    });
    assert!(
        matches!(
            answer,
            Some(Message::Reply(ref r)) if matches!(r.status, ReplyStatus::Error(_))
        ),
        "{answer:?}"
    );
}
