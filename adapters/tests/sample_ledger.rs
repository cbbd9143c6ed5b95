//! `sample-server ledger` over the wire protocol: durable balances, transactions invisible until
//! commit, two-phase commit with a durable prepare, recovery after `kill -9`, locks shared by
//! several processes on one data directory.

mod sample_wire;

use adapters::protocol::Vote;
use adapters::ReplyStatus;
use sample_wire::{fault, ok, Ctx, Worker};
use std::path::Path;

fn ledger(dir: &Path) -> Worker {
    Worker::start(&["ledger", "--data", dir.to_str().unwrap()])
}

fn txn(t: &str) -> Ctx<'_> {
    Ctx {
        transaction: Some(t),
        ..Ctx::default()
    }
}

/// A short `timeout-ms`, so lock waits end quickly.
fn short(t: Option<&str>) -> Ctx<'_> {
    Ctx {
        transaction: t,
        timeout_ms: Some(300),
        ..Ctx::default()
    }
}

fn body(op: &str, account: &str, amount: Option<i64>, extra: &str) -> String {
    let amount = amount
        .map(|a| format!("<amount>{a}</amount>"))
        .unwrap_or_default();
    format!("<{op}><account>{account}</account>{amount}{extra}</{op}>")
}

fn deposit(w: &mut Worker, account: &str, amount: i64, ctx: &Ctx) -> adapters::protocol::Reply {
    w.request("Deposit", &body("Deposit", account, Some(amount), ""), ctx)
}

/// The balance a `Balance` request reports.
fn balance(w: &mut Worker, account: &str, ctx: &Ctx) -> i64 {
    let out = ok(w.request("Balance", &body("Balance", account, None, ""), ctx));
    let start = out.find("<balance>").expect("a balance") + "<balance>".len();
    let end = out.find("</balance>").expect("a balance");
    out[start..end].parse().expect("a number")
}

#[test]
fn deposit_withdraw_balance_and_durability() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = ledger(dir.path());
    assert_eq!(
        ok(deposit(&mut w, "alice", 10, &Ctx::default())),
        "<DepositResponse><account>alice</account><balance>10</balance></DepositResponse>"
    );
    assert_eq!(
        ok(w.request(
            "Withdraw",
            &body("Withdraw", "alice", Some(3), ""),
            &Ctx::default()
        )),
        "<WithdrawResponse><account>alice</account><balance>7</balance></WithdrawResponse>"
    );
    assert_eq!(
        ok(w.request(
            "Balance",
            "<Balance><account>alice</account></Balance>",
            &Ctx::default()
        )),
        "<BalanceResponse><account>alice</account><balance>7</balance></BalanceResponse>"
    );
    assert_eq!(balance(&mut w, "nobody", &Ctx::default()), 0);

    // The response takes the request element's namespace and prefix; names are escaped.
    assert_eq!(
        ok(w.request(
            "Deposit",
            r#"<l:Deposit xmlns:l="urn:l"><l:account>a&amp;b/../c</l:account><l:amount>5</l:amount></l:Deposit>"#,
            &Ctx::default()
        )),
        r#"<l:DepositResponse xmlns:l="urn:l"><l:account>a&amp;b/../c</l:account><l:balance>5</l:balance></l:DepositResponse>"#
    );
    assert_eq!(
        ok(w.request(
            "Balance",
            r#"<Balance xmlns="urn:d"><account>alice</account></Balance>"#,
            &Ctx::default()
        )),
        r#"<BalanceResponse xmlns="urn:d"><account>alice</account><balance>7</balance></BalanceResponse>"#
    );

    // Committed means on disk: a SIGKILLed process loses nothing, a new one sees it all.
    w.kill();
    let mut w = ledger(dir.path());
    assert_eq!(balance(&mut w, "alice", &Ctx::default()), 7);
    assert_eq!(balance(&mut w, "a&amp;b/../c", &Ctx::default()), 5);
}

#[test]
fn bad_input_and_insufficient_funds_are_client_faults_that_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = ledger(dir.path());
    ok(deposit(&mut w, "a", 5, &Ctx::default()));

    let (code, string) = fault(w.request(
        "Withdraw",
        &body("Withdraw", "a", Some(8), ""),
        &Ctx::default(),
    ));
    assert_eq!(code, "Client");
    assert_eq!(
        string,
        "insufficient funds: account a has 5, withdrawal of 8 refused"
    );

    let cases = [
        (
            "<Deposit><account>a</account><amount>1.5</amount></Deposit>",
            "not an integer",
        ),
        (
            "<Deposit><account>a</account><amount>-1</amount></Deposit>",
            "negative",
        ),
        (
            "<Deposit><account>a</account><amount>99999999999999999999</amount></Deposit>",
            "too large",
        ),
        (
            "<Deposit><account>a</account></Deposit>",
            "needs a <amount>",
        ),
        ("<Deposit><amount>1</amount></Deposit>", "needs a <account>"),
        (
            "<Deposit><account></account><amount>1</amount></Deposit>",
            "not valid",
        ),
        (
            "<Deposit><account>a</account><amount>1</amount><amount>2</amount></Deposit>",
            "more than one",
        ),
        (
            "<Deposit><account>a</account><amount><x/></amount></Deposit>",
            "must hold text",
        ),
        ("<Deposit><account>a</a", "not XML"),
    ];
    for (payload, expected) in cases {
        let (code, string) = fault(w.request("Deposit", payload, &Ctx::default()));
        assert_eq!(code, "Client", "{payload}");
        assert!(string.contains(expected), "{payload}: {string}");
    }
    let long = "x".repeat(101);
    let (_, string) = fault(deposit(&mut w, &long, 1, &Ctx::default()));
    assert!(string.contains("not valid"), "{string}");
    let (_, string) = fault(w.request("Frob", "<Frob/>", &Ctx::default()));
    assert!(string.starts_with("unknown operation Frob"), "{string}");

    // Overflow of the balance itself.
    ok(deposit(&mut w, "big", i64::MAX, &Ctx::default()));
    let (_, string) = fault(deposit(&mut w, "big", 1, &Ctx::default()));
    assert!(string.contains("overflow"), "{string}");

    assert_eq!(balance(&mut w, "a", &Ctx::default()), 5);
    assert_eq!(balance(&mut w, "big", &Ctx::default()), i64::MAX);
}

#[test]
fn uncommitted_work_is_invisible_to_other_processes_until_one_phase_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = ledger(dir.path());
    let mut b = ledger(dir.path());

    ok(deposit(&mut a, "x", 5, &txn("t1")));
    ok(deposit(&mut a, "y", 2, &txn("t1")));
    // Inside the transaction: its own work; outside, in either process: the committed state
    // (and a plain read does not wait for the lock).
    assert_eq!(balance(&mut a, "x", &txn("t1")), 5);
    assert_eq!(balance(&mut a, "x", &Ctx::default()), 0);
    assert_eq!(balance(&mut b, "x", &Ctx::default()), 0);
    // A withdrawal inside the transaction sees the uncommitted deposit.
    ok(a.request("Withdraw", &body("Withdraw", "x", Some(1), ""), &txn("t1")));

    // COMMIT without PREPARE: one-phase commit, applied at once.
    assert!(a.commit("t1"));
    assert_eq!(balance(&mut b, "x", &Ctx::default()), 4);
    assert_eq!(balance(&mut b, "y", &Ctx::default()), 2);
    assert!(b.recover().is_empty());
    // The locks went with the commit.
    ok(deposit(&mut b, "x", 1, &short(None)));
}

#[test]
fn prepare_then_commit_and_idempotence() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = ledger(dir.path());
    ok(deposit(&mut w, "x", 9, &txn("t1")));
    assert_eq!(w.prepare("t1"), Some((Vote::Yes, None)));
    assert_eq!(w.recover(), vec!["t1".to_string()]);
    // Prepared: committed state unchanged, no more work accepted under it.
    assert_eq!(balance(&mut w, "x", &Ctx::default()), 0);
    let (_, string) = fault(deposit(&mut w, "x", 1, &txn("t1")));
    assert!(string.contains("prepared"), "{string}");

    assert!(w.commit("t1"));
    assert_eq!(balance(&mut w, "x", &Ctx::default()), 9);
    assert!(w.recover().is_empty());
    // Idempotent: again, and for transactions never seen.
    assert!(w.commit("t1"));
    assert!(w.commit("never-seen"));
    w.abort("never-seen");
    assert_eq!(balance(&mut w, "x", &Ctx::default()), 9);

    // A read-only transaction votes yes without a record.
    assert_eq!(balance(&mut w, "x", &txn("t2")), 9);
    assert_eq!(w.prepare("t2"), Some((Vote::Yes, None)));
    assert!(w.recover().is_empty());
    assert!(w.commit("t2"));

    // An unknown transaction cannot be prepared: its work, if any, is lost.
    assert_eq!(w.prepare("t3").map(|v| v.0), Some(Vote::No));
}

#[test]
fn abort_leaves_nothing_prepared_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = ledger(dir.path());
    ok(deposit(&mut w, "x", 3, &Ctx::default()));

    ok(deposit(&mut w, "x", 5, &txn("t1")));
    w.abort("t1");
    assert_eq!(balance(&mut w, "x", &Ctx::default()), 3);

    ok(w.request("Withdraw", &body("Withdraw", "x", Some(3), ""), &txn("t2")));
    assert_eq!(w.prepare("t2"), Some((Vote::Yes, None)));
    w.abort("t2");
    w.abort("t2");
    assert!(w.recover().is_empty());
    assert_eq!(balance(&mut w, "x", &Ctx::default()), 3);
    // Nothing is left locked either.
    ok(deposit(&mut w, "x", 1, &short(Some("t3"))));
    assert!(w.commit("t3"));
    assert_eq!(balance(&mut w, "x", &Ctx::default()), 4);
}

#[test]
fn a_prepared_transaction_survives_kill_9_and_another_process_commits_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = ledger(dir.path());
    ok(deposit(&mut a, "x", 50, &txn("t1")));
    ok(deposit(&mut a, "y", 7, &txn("t1")));
    assert_eq!(a.prepare("t1"), Some((Vote::Yes, None)));
    a.kill();

    let mut b = ledger(dir.path());
    assert_eq!(b.recover(), vec!["t1".to_string()]);
    assert_eq!(balance(&mut b, "x", &Ctx::default()), 0);
    // The prepared record still locks its accounts, though no process holds the flock.
    let (code, string) = fault(deposit(&mut b, "x", 1, &short(None)));
    assert_eq!(code, "Server");
    assert_eq!(string, "account x is locked by another transaction");
    let (_, string) = fault(deposit(&mut b, "y", 1, &short(Some("t2"))));
    assert!(string.contains("locked"), "{string}");
    b.abort("t2");

    assert!(b.commit("t1"));
    assert_eq!(balance(&mut b, "x", &Ctx::default()), 50);
    assert_eq!(balance(&mut b, "y", &Ctx::default()), 7);
    assert!(b.recover().is_empty());
    ok(deposit(&mut b, "x", 1, &short(None)));
    assert_eq!(balance(&mut b, "x", &Ctx::default()), 51);
}

#[test]
fn crash_on_prepare_leaves_a_durable_record_that_abort_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = ledger(dir.path());
    ok(deposit(&mut a, "x", 4, &Ctx::default()));
    ok(a.request(
        "Deposit",
        &body("Deposit", "x", Some(10), "<crashOnPrepare/>"),
        &txn("t1"),
    ));
    assert_eq!(a.prepare("t1"), None, "the process exits without voting");
    assert_eq!(a.wait(), Some(4));

    let mut b = ledger(dir.path());
    assert_eq!(b.recover(), vec!["t1".to_string()]);
    b.abort("t1");
    assert!(b.recover().is_empty());
    assert_eq!(balance(&mut b, "x", &Ctx::default()), 4);
    ok(deposit(&mut b, "x", 1, &short(None)));
}

#[test]
fn crash_on_commit_is_completed_from_the_prepared_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = ledger(dir.path());
    ok(a.request(
        "Deposit",
        &body("Deposit", "x", Some(10), "<crashOnCommit/>"),
        &txn("t1"),
    ));
    assert_eq!(a.prepare("t1"), Some((Vote::Yes, None)));
    assert!(!a.commit("t1"), "the process exits before acknowledging");
    assert_eq!(a.wait(), Some(5));

    let mut b = ledger(dir.path());
    assert_eq!(balance(&mut b, "x", &Ctx::default()), 0);
    assert_eq!(b.recover(), vec!["t1".to_string()]);
    assert!(b.commit("t1"));
    assert_eq!(balance(&mut b, "x", &Ctx::default()), 10);
    assert!(b.recover().is_empty());
}

#[test]
fn a_locked_account_makes_others_wait_then_fault() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = ledger(dir.path());
    let mut b = ledger(dir.path());
    ok(deposit(&mut a, "x", 1, &txn("t1")));

    // Another transaction, and a plain write, wait (bounded by timeout-ms) and give up.
    let (code, string) = fault(deposit(&mut b, "x", 1, &short(Some("t2"))));
    assert_eq!(code, "Server");
    assert_eq!(string, "account x is locked by another transaction");
    let (_, string) = fault(deposit(&mut b, "x", 1, &short(None)));
    assert!(string.contains("locked"), "{string}");
    // A second transaction in the same process is refused too.
    let (_, string) = fault(deposit(&mut a, "x", 1, &short(Some("t3"))));
    assert!(string.contains("locked"), "{string}");
    // Plain reads never wait; other accounts are free.
    assert_eq!(balance(&mut b, "x", &Ctx::default()), 0);
    ok(deposit(&mut b, "y", 1, &short(Some("t2"))));

    a.abort("t1");
    ok(deposit(&mut b, "x", 2, &short(Some("t2"))));
    assert!(b.commit("t2"));
    assert_eq!(balance(&mut a, "x", &Ctx::default()), 2);
    assert_eq!(balance(&mut a, "y", &Ctx::default()), 1);
}

#[test]
fn a_locked_account_is_granted_when_the_holder_dies_unprepared() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = ledger(dir.path());
    let mut b = ledger(dir.path());
    ok(deposit(&mut a, "x", 1, &txn("t1")));
    a.kill();
    // Its flock vanished with it, and its unprepared work is lost.
    ok(deposit(&mut b, "x", 2, &short(None)));
    assert_eq!(balance(&mut b, "x", &Ctx::default()), 2);
    assert!(b.recover().is_empty());
}

#[test]
fn vote_no_rolls_back_and_releases() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = ledger(dir.path());
    let mut b = ledger(dir.path());
    ok(a.request(
        "Deposit",
        &body("Deposit", "x", Some(10), "<voteNo/>"),
        &txn("t1"),
    ));
    let (vote, reason) = a.prepare("t1").unwrap();
    assert_eq!(vote, Vote::No);
    assert!(reason.unwrap().contains("voteNo"));
    assert!(a.recover().is_empty());
    // Already rolled back: the ABORT that follows is acknowledged, nothing changed, no lock.
    a.abort("t1");
    ok(deposit(&mut b, "x", 1, &short(None)));
    assert_eq!(balance(&mut b, "x", &Ctx::default()), 1);
}

#[test]
fn savings_is_the_same_program_with_prefixed_operations() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Worker::start(&[
        "ledger",
        "--data",
        dir.path().to_str().unwrap(),
        "--prefix",
        "Savings",
    ]);
    assert_eq!(
        ok(w.request(
            "SavingsDeposit",
            "<SavingsDeposit><account>s</account><amount>4</amount></SavingsDeposit>",
            &Ctx::default()
        )),
        "<SavingsDepositResponse><account>s</account><balance>4</balance></SavingsDepositResponse>"
    );
    assert_eq!(
        ok(w.request(
            "SavingsWithdraw",
            "<SavingsWithdraw><account>s</account><amount>1</amount></SavingsWithdraw>",
            &Ctx::default()
        )),
        "<SavingsWithdrawResponse><account>s</account><balance>3</balance></SavingsWithdrawResponse>"
    );
    assert_eq!(
        ok(w.request(
            "SavingsBalance",
            "<SavingsBalance><account>s</account></SavingsBalance>",
            &Ctx::default()
        )),
        "<SavingsBalanceResponse><account>s</account><balance>3</balance></SavingsBalanceResponse>"
    );
    let reply = w.request(
        "Deposit",
        &body("Deposit", "s", Some(1), ""),
        &Ctx::default(),
    );
    assert!(matches!(reply.status, ReplyStatus::Fault { .. }));
    let (_, string) = fault(reply);
    assert!(string.contains("SavingsDeposit"), "{string}");
}
