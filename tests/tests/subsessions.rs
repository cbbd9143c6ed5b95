//! Subsessions (NonStop dialogs with context-sensitive server classes), end to end with the real
//! `sample-server cart` (a cart kept in one worker's memory) and, for transactions, the `ledger`.
//!
//! Protects: the implicit open on the first call and `Subsession="on"` while open; every later call
//! reaching the same worker; the worker ending (CartCheckout) and aborting (-353/-354/-355) the
//! dialog; `AbortSubsession` (-1015, and a body that opens a new dialog); -1016, -1017, -1018,
//! -1019, -210; context-free calls meanwhile; carts of concurrent sessions never mixing; a dialog
//! surviving the reaper; `kill -9` of the cart worker → -356 and a new cart in the same session;
//! one-transaction-per-dialog: the worker's end commits, the client's abort leaves nothing.

use broker_tests::ledger::{
    self, balance_body, balance_of, committed_balance, cont_with, deposit, expect_no_transaction,
};
use broker_tests::soap::{
    begin, call11, cont, echo, end, expect_header_fault, expect_nonstop_fault, session, SoapReply,
};
use broker_tests::{proc, wait};
use broker_tests::{BrokerProcess, TestConfig};
use std::time::Duration;

/// A cart class `name` (context-sensitive) with its services prefixed by nothing for `cart` and by
/// the class name otherwise (`Cart2Add`…), plus `class_lines`.
fn cart_class(name: &str, class_lines: &str) -> String {
    let services = if name == "cart" {
        ["CartAdd", "CartList", "CartCheckout"].map(String::from)
    } else {
        // A second class runs the same program under other service names: the operation tells the
        // program what to do.
        ["Add", "List", "Checkout"].map(|op| format!("{name}{op}"))
    };
    let mut toml = format!(
        r#"
[[server_class]]
name = "{name}"
adapter = "process"
command = ["{{broker_exe}}", "sample-server", "cart"]
context = "sensitive"
request_timeout = "10s"
{class_lines}
"#
    );
    for (service, op) in services.iter().zip(["CartAdd", "CartList", "CartCheckout"]) {
        toml.push_str(&format!(
            "\n[[service]]\nname = \"{service}\"\nendpoint = \"/soap\"\nserver_class = \"{name}\"\noperation = \"{op}\"\n"
        ));
    }
    toml
}

fn start_with(cart_lines: &str) -> BrokerProcess {
    let extra = format!(
        "{}{}{}",
        cart_class("cart", cart_lines),
        cart_class("Other", "min_workers = 1\nmax_workers = 1"),
        ledger::classes("10s", 3, "")
    );
    BrokerProcess::start(&TestConfig::new().extra(&extra).render())
}

fn start() -> BrokerProcess {
    start_with("min_workers = 1\nmax_workers = 2\nmax_dialogs_per_worker = 4")
}

fn add(item: &str, qty: u32) -> String {
    format!("<CartAdd><item>{item}</item><qty>{qty}</qty></CartAdd>")
}

fn subsession_on(r: &SoapReply) -> bool {
    r.session_headers()
        .first()
        .and_then(|h| h.attr("Subsession"))
        .is_some_and(|v| v == "on")
}

/// The (name, qty) items of a CartAdd/CartList response.
fn items(r: &SoapReply) -> Vec<(String, u32)> {
    let body = r
        .expect_ok()
        .unwrap_or_else(|| panic!("a response expected: {}", r.describe()));
    body.children_named(None, "item")
        .map(|i| {
            let name = i.child_local("name").map(|n| n.text()).unwrap_or_default();
            let qty = i
                .child_local("qty")
                .and_then(|q| q.text().trim().parse().ok())
                .unwrap_or(0);
            (name, qty)
        })
        .collect()
}

#[test]
fn a_dialog_opens_implicitly_stays_on_its_worker_and_the_worker_ends_it() {
    let b = start();
    let url = b.url("/soap");
    let r = call11(&url, &begin(), &add("apple", 2));
    assert!(
        subsession_on(&r),
        "Subsession=\"on\" once open: {}",
        r.describe()
    );
    let id = r.expect_session_id();
    let r = call11(&url, &cont(&id), &add("pear", 1));
    assert!(subsession_on(&r));
    assert_eq!(
        items(&r),
        vec![("apple".into(), 2), ("pear".into(), 1)],
        "same worker, same cart"
    );
    // A context-free call meanwhile is fine, and the dialog stays open.
    let r = call11(&url, &cont(&id), &echo("meanwhile"));
    r.expect_echo("meanwhile");
    assert!(subsession_on(&r), "{}", r.describe());
    // -1016: End while the dialog is open; the session and the cart live on.
    let r = call11(&url, &end(&id), "");
    expect_header_fault(&r, -1016);
    assert!(subsession_on(&r));
    // CartCheckout ends the dialog: no Subsession attribute any more.
    let r = call11(&url, &cont(&id), "<CartCheckout/>");
    let body = r.expect_ok().expect("a checkout response");
    assert_eq!(
        body.child_local("total").map(|t| t.text()),
        Some("3".into())
    );
    assert!(!subsession_on(&r), "{}", r.describe());
    assert_eq!(r.session_id().as_deref(), Some(id.as_str()));
    // The next cart call opens a new, empty cart; then End works once it is checked out.
    let r = call11(&url, &cont(&id), "<CartList/>");
    assert!(subsession_on(&r));
    assert!(items(&r).is_empty(), "{}", r.describe());
    call11(&url, &cont(&id), "<CartCheckout/>").expect_ok();
    let r = call11(&url, &end(&id), "");
    r.expect_ok();
    r.expect_no_session();
}

#[test]
fn abort_subsession_rules() {
    let b = start();
    let url = b.url("/soap");
    let id = broker_tests::soap::begin_session(&url);
    let abort = |id: &str| {
        session(&format!(
            "SessionID=\"{id}\" SessionCommand=\"AbortSubsession\""
        ))
    };
    // -1015 with no dialog.
    let r = call11(&url, &abort(&id), &echo("x"));
    let f = expect_header_fault(&r, -1015);
    assert!(f
        .detail_string
        .unwrap_or_default()
        .contains("has not started"));
    call11(&url, &cont(&id), &add("plum", 5)).expect_ok();
    // Abort it, with a context-free body: the reply lacks Subsession.
    let r = call11(&url, &abort(&id), &echo("after abort"));
    r.expect_echo("after abort");
    assert!(!subsession_on(&r), "{}", r.describe());
    // Abort with a body calling the cart again: a new dialog, a new empty cart.
    call11(&url, &cont(&id), &add("fig", 1)).expect_ok();
    let r = call11(&url, &abort(&id), "<CartList/>");
    assert!(
        subsession_on(&r),
        "the same request opened a new dialog: {}",
        r.describe()
    );
    assert!(
        items(&r).is_empty(),
        "the old cart is gone: {}",
        r.describe()
    );
}

#[test]
fn another_context_sensitive_class_while_a_dialog_is_open_is_1019_and_no_session_is_210() {
    let b = start();
    let url = b.url("/soap");
    let r = call11(&url, &begin(), &add("kiwi", 1));
    let id = r.expect_session_id();
    let r = call11(
        &url,
        &cont(&id),
        "<OtherAdd><item>x</item><qty>1</qty></OtherAdd>",
    );
    let f = expect_header_fault(&r, -1019);
    assert_eq!(
        f.detail_string.as_deref(),
        Some("A subsession with server class cart is in progress; abort it before calling Other.")
    );
    assert!(subsession_on(&r));
    // Without a session a context-sensitive service is -210.
    let r = call11(&url, "", &add("kiwi", 1));
    expect_nonstop_fault(&r, "SOAP-ENV:Client.Process", -210);
}

#[test]
fn the_worker_aborting_the_dialog_without_a_transaction_is_355() {
    let b = start();
    let url = b.url("/soap");
    let id = broker_tests::soap::begin_session(&url);
    call11(&url, &cont(&id), &add("lime", 1)).expect_ok();
    let r = call11(
        &url,
        &cont(&id),
        "<CartAdd><item>lime</item><qty>1</qty><abortDialog/></CartAdd>",
    );
    expect_nonstop_fault(&r, "SOAP-ENV:Server", -355);
    assert_eq!(
        r.session_id().as_deref(),
        Some(id.as_str()),
        "the session lives on"
    );
    assert!(!subsession_on(&r));
}

#[test]
fn the_worker_aborting_the_dialog_leaves_a_many_transaction_dialogs_transaction_to_the_client() {
    let b = start();
    let url = b.url("/soap");
    let id = broker_tests::soap::begin_session(&url);
    call11(
        &url,
        &cont_with(&id, "BeginNewTransaction=\"yes\""),
        &deposit("tom", 9),
    )
    .expect_ok();
    call11(&url, &cont(&id), &add("nut", 1)).expect_ok();
    let r = call11(
        &url,
        &cont(&id),
        "<CartAdd><item>nut</item><qty>1</qty><abortDialog/></CartAdd>",
    );
    expect_nonstop_fault(&r, "SOAP-ENV:Server", -354);
    // The transaction is still the client's to commit.
    call11(
        &url,
        &cont_with(&id, "CurrentTransactionCommand=\"End\""),
        "",
    )
    .expect_ok();
    assert_eq!(committed_balance(&url, "", "tom"), 9);
}

#[test]
fn concurrent_carts_never_see_each_others_items() {
    // One worker holding several dialogs: isolation is per session, not per process.
    let b = start_with("min_workers = 1\nmax_workers = 1\nmax_dialogs_per_worker = 8");
    let url = b.url("/soap");
    std::thread::scope(|s| {
        for t in 0..4 {
            let url = url.clone();
            s.spawn(move || {
                let item = format!("item{t}");
                let r = call11(&url, &begin(), &add(&item, 1));
                let id = r.expect_session_id();
                for n in 2..=6 {
                    let r = call11(&url, &cont(&id), &add(&item, 1));
                    assert_eq!(items(&r), vec![(item.clone(), n)], "{}", r.describe());
                }
            });
        }
    });
}

#[test]
fn a_dialog_survives_the_reapers_idle_timeout() {
    // One dialog per worker: two sessions hold two workers, above min_workers = 1.
    let b = start_with(
        "min_workers = 1\nmax_workers = 3\nmax_dialogs_per_worker = 1\nidle_timeout = \"300ms\"",
    );
    let url = b.url("/soap");
    let a = call11(&url, &begin(), &add("a", 1)).expect_session_id();
    let c = call11(&url, &begin(), &add("c", 1)).expect_session_id();
    // A third dialog takes a third worker; its checkout leaves that worker idle and unpinned.
    let x = call11(&url, &begin(), &add("x", 1)).expect_session_id();
    call11(&url, &cont(&x), "<CartCheckout/>").expect_ok();
    // The reaper stopping that worker shows that it ran after the idle timeout, when the two
    // pinned workers had been idle longer still.
    let workers = cart_workers(&b).len();
    wait::until_true(
        Duration::from_secs(10),
        "the reaper to stop the idle, unpinned cart worker",
        || cart_workers(&b).len() < workers,
    );
    assert_eq!(
        items(&call11(&url, &cont(&a), "<CartList/>")),
        vec![("a".into(), 1)]
    );
    assert_eq!(
        items(&call11(&url, &cont(&c), "<CartList/>")),
        vec![("c".into(), 1)]
    );
}

/// The broker's cart workers.
fn cart_workers(b: &BrokerProcess) -> Vec<u32> {
    b.worker_pids_where(|cmd| cmd.contains(" cart"))
}

#[test]
fn killing_the_cart_worker_loses_the_dialog_but_not_the_session() {
    let b = start();
    let url = b.url("/soap");
    let r = call11(&url, &begin(), &add("egg", 3));
    let id = r.expect_session_id();
    for pid in cart_workers(&b) {
        proc::kill9(pid);
    }
    let r = call11(&url, &cont(&id), &add("egg", 1));
    let f = expect_nonstop_fault(&r, "SOAP-ENV:Server", -356);
    assert!(f
        .detail_string
        .unwrap_or_default()
        .contains("process holding it stopped"));
    assert_eq!(
        r.session_id().as_deref(),
        Some(id.as_str()),
        "the session lives on"
    );
    assert!(!subsession_on(&r));
    // A new cart in the same session, once the class has a worker again.
    let r = wait::poll(Duration::from_secs(10), || {
        let r = call11(&url, &cont(&id), &add("egg", 1));
        (r.status() == 200).then_some(r)
    })
    .expect("a new cart within 10 s");
    assert_eq!(items(&r), vec![("egg".into(), 1)]);
    assert!(subsession_on(&r));
}

/// A new session with a transaction holding a ledger deposit of `amount` on `account`, and a cart
/// dialog opened after it; returns the session ID.
fn transaction_and_cart(url: &str, account: &str, amount: i64) -> String {
    let id = broker_tests::soap::begin_session(url);
    call11(
        url,
        &cont_with(&id, "BeginNewTransaction=\"yes\""),
        &deposit(account, amount),
    )
    .expect_ok();
    call11(url, &cont(&id), &add("cup", 1)).expect_ok();
    id
}

fn start_one_transaction_dialogs() -> BrokerProcess {
    start_with("min_workers = 1\nmax_workers = 2\none_txn_per_dialog = true")
}

#[test]
fn one_transaction_per_dialog_the_workers_end_commits() {
    let b = start_one_transaction_dialogs();
    let url = b.url("/soap");
    let id = transaction_and_cart(&url, "una", 12);
    // -1017 / -1018: the transaction belongs to the dialog now.
    expect_header_fault(
        &call11(
            &url,
            &cont_with(&id, "CurrentTransactionCommand=\"End\""),
            "",
        ),
        -1017,
    );
    expect_header_fault(
        &call11(
            &url,
            &cont_with(&id, "CurrentTransactionCommand=\"Abort\""),
            "",
        ),
        -1018,
    );
    assert_eq!(committed_balance(&url, "", "una"), 0);
    // The worker ends the dialog: that commits the transaction, and the session stays.
    let r = call11(&url, &cont(&id), "<CartCheckout/>");
    r.expect_ok();
    assert!(!subsession_on(&r));
    assert_eq!(r.session_id().as_deref(), Some(id.as_str()));
    assert_eq!(committed_balance(&url, "", "una"), 12);
    expect_no_transaction(&url, &id, "End");
}

#[test]
fn one_transaction_per_dialog_the_clients_abort_leaves_nothing() {
    let b = start_one_transaction_dialogs();
    let url = b.url("/soap");
    let id = transaction_and_cart(&url, "vic", 12);
    let r = call11(
        &url,
        &session(&format!(
            "SessionID=\"{id}\" SessionCommand=\"AbortSubsession\""
        )),
        &balance_body("", "vic"),
    );
    assert_eq!(balance_of(&r), 0, "the transaction went with the dialog");
    assert_eq!(committed_balance(&url, "", "vic"), 0);
    expect_no_transaction(&url, &id, "Abort");
}

#[test]
fn one_transaction_per_dialog_the_workers_abort_aborts_the_transaction_353() {
    let b = start_one_transaction_dialogs();
    let url = b.url("/soap");
    let id = transaction_and_cart(&url, "wes", 12);
    let r = call11(
        &url,
        &cont(&id),
        "<CartAdd><item>cup</item><qty>1</qty><abortDialog/></CartAdd>",
    );
    expect_nonstop_fault(&r, "SOAP-ENV:Server", -353);
    assert_eq!(committed_balance(&url, "", "wes"), 0);
}

#[test]
fn session_expiry_aborts_the_dialog_and_frees_its_worker() {
    // One worker with room for one dialog: a second session can only get a cart once the expired
    // session's dialog was aborted (DIALOG-ABORT) and its pin released.
    let extra = cart_class(
        "cart",
        "min_workers = 1\nmax_workers = 1\nmax_dialogs_per_worker = 1\nqueue_limit = 0",
    );
    let b = BrokerProcess::start(
        &TestConfig::new()
            .session_timeout("1s")
            .sweep_interval("200ms")
            .extra(&extra)
            .render(),
    );
    let url = b.url("/soap");
    let first = call11(&url, &begin(), &add("old", 1)).expect_session_id();
    // While it holds the only dialog slot, a second dialog cannot open.
    let r = call11(&url, &begin(), &add("new", 1));
    assert!(
        r.fault().is_some(),
        "no room for a second dialog: {}",
        r.describe()
    );
    // No request names the first session from here on: only the sweeper can end it (idle 1 s, a
    // sweep every 200 ms), and until it has aborted the dialog a new one finds no room.
    let r = wait::until(
        Duration::from_secs(20),
        "the sweeper to abort the expired session's dialog (room for a new one)",
        || {
            let r = call11(&url, &begin(), &add("new", 1));
            r.fault().is_none().then_some(r)
        },
    );
    assert_eq!(items(&r), vec![("new".into(), 1)], "{}", r.describe());
    expect_header_fault(&call11(&url, &cont(&first), "<CartList/>"), -1001);
}

/// Protects a client that sends the reply's Session back as it came (a JAX-WS INOUT holder):
/// `Subsession="on"` on a request is ignored, and the dialog goes on.
#[test]
fn a_request_may_carry_the_subsession_attribute_a_reply_gave() {
    let b = start();
    let url = b.url("/soap");
    let id = broker_tests::soap::begin_session(&url);
    let r = call11(&url, &cont(&id), &add("apple", 1));
    assert!(subsession_on(&r), "{}", r.describe());
    let echoed = session(&format!("SessionID=\"{id}\" Subsession=\"on\""));
    let r = call11(&url, &echoed, &add("pear", 2));
    assert!(subsession_on(&r), "{}", r.describe());
    assert_eq!(items(&r).len(), 2, "{}", r.describe());
}
