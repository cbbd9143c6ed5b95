//! The transactional sample (`sample-server ledger` as the `ledger` and `savings` classes) as tests
//! reach it through the broker: configuration, request bodies, and readers for balances.

use crate::soap::{call11, expect_header_fault, session, FaultInfo, SoapReply};

/// The `ledger` and `savings` classes and their six services on `/soap`, as TOML to append to a
/// [`crate::TestConfig`]. `request_timeout` also bounds how long a request waits for an account
/// another transaction holds; `extra_service_lines` go into every ledger service table
/// (`abort_transaction_on_fault = true`…).
pub fn classes(request_timeout: &str, max_workers: usize, extra_service_lines: &str) -> String {
    classes_in(
        "{data_dir}",
        request_timeout,
        max_workers,
        extra_service_lines,
    )
}

/// [`classes`] keeping the accounts under `data_root` (`<data_root>/ledger`, `<data_root>/savings`)
/// instead of the broker's own data directory: brokers given the same root share their accounts,
/// as the workers of one class share durable state.
pub fn classes_in(
    data_root: &str,
    request_timeout: &str,
    max_workers: usize,
    extra_service_lines: &str,
) -> String {
    let mut toml = String::new();
    for (class, prefix) in [("ledger", ""), ("savings", "Savings")] {
        let prefix_args = if prefix.is_empty() {
            String::new()
        } else {
            format!("\"--prefix\", \"{prefix}\", ")
        };
        toml.push_str(&format!(
            r#"
[[server_class]]
name = "{class}"
adapter = "process"
command = ["{{broker_exe}}", "sample-server", "ledger", {prefix_args}"--data", "{data_root}/{class}"]
context = "free"
transactional = true
min_workers = 1
max_workers = {max_workers}
request_timeout = "{request_timeout}"
"#
        ));
        for op in ["Deposit", "Withdraw", "Balance"] {
            toml.push_str(&format!(
                "\n[[service]]\nname = \"{prefix}{op}\"\nendpoint = \"/soap\"\nserver_class = \"{class}\"\n{extra_service_lines}\n"
            ));
        }
    }
    toml
}

/// `<Deposit><account>A</account><amount>N</amount>EXTRA</Deposit>` (with the class prefix, e.g.
/// `Savings`, in front of the element name).
pub fn op(prefix: &str, name: &str, account: &str, amount: i64, extra: &str) -> String {
    format!("<{prefix}{name}><account>{account}</account><amount>{amount}</amount>{extra}</{prefix}{name}>")
}

pub fn deposit(account: &str, amount: i64) -> String {
    op("", "Deposit", account, amount, "")
}

pub fn withdraw(account: &str, amount: i64) -> String {
    op("", "Withdraw", account, amount, "")
}

pub fn savings_deposit(account: &str, amount: i64) -> String {
    op("Savings", "Deposit", account, amount, "")
}

pub fn savings_withdraw(account: &str, amount: i64) -> String {
    op("Savings", "Withdraw", account, amount, "")
}

pub fn balance_body(prefix: &str, account: &str) -> String {
    format!("<{prefix}Balance><account>{account}</account></{prefix}Balance>")
}

/// A `Session` header continuing `id` with more attributes (`BeginNewTransaction="yes"`…).
pub fn cont_with(id: &str, attrs: &str) -> String {
    session(&format!("SessionID=\"{id}\" {attrs}"))
}

/// The `<balance>` of a successful Deposit/Withdraw/Balance reply (any prefix).
pub fn balance_of(r: &SoapReply) -> i64 {
    let response = r
        .expect_ok()
        .unwrap_or_else(|| panic!("a response element was expected: {}", r.describe()));
    let text = response
        .child_local("balance")
        .map(|b| b.text())
        .unwrap_or_else(|| panic!("no <balance> in the reply: {}", r.describe()));
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("<balance> {text:?} is not an integer: {}", r.describe()))
}

/// The committed balance of `account` on the class with `prefix` ("" for ledger, "Savings"),
/// read outside any session (so outside any transaction).
pub fn committed_balance(url: &str, prefix: &str, account: &str) -> i64 {
    balance_of(&call11(url, "", &balance_body(prefix, account)))
}

/// Send `CurrentTransactionCommand="End"` (or `"Abort"`) with an empty body to session `id` and
/// expect the "no transaction" fault (-1013 / -1014): the session has no transaction open.
pub fn expect_no_transaction(url: &str, id: &str, command: &str) -> FaultInfo {
    let code = if command == "End" { -1013 } else { -1014 };
    let r = call11(
        url,
        &cont_with(id, &format!("CurrentTransactionCommand=\"{command}\"")),
        "",
    );
    expect_header_fault(&r, code)
}
