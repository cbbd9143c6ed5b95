//! # `ledger` (and `savings`): the durable, transactional sample class
//!
//! ```text
//! sample-server ledger --data DIR                     # Deposit, Withdraw, Balance
//! sample-server ledger --data DIR --prefix Savings    # SavingsDeposit, SavingsWithdraw, SavingsBalance
//! ```
//!
//! A context-free class of integer account balances kept in files, written the way a careful legacy
//! team would write a resource manager: every committed change is on disk (fsynced) before the
//! reply, work under a transaction is invisible to others until commit, and a `yes` vote is a
//! durable promise. Several processes of the class share one data directory (the broker runs up to
//! `max_workers` of them), so everything that must be shared lives in files and file locks, never
//! in one process's memory.
//!
//! ## Services (the operation comes from the `REQUEST`'s `operation` header)
//!
//! ```xml
//! <Deposit><account>A</account><amount>10</amount></Deposit>
//!   → <DepositResponse><account>A</account><balance>N</balance></DepositResponse>
//! <Withdraw><account>A</account><amount>10</amount></Withdraw>
//!   → <WithdrawResponse><account>A</account><balance>N</balance></WithdrawResponse>
//! <Balance><account>A</account></Balance>
//!   → <BalanceResponse><account>A</account><balance>N</balance></BalanceResponse>
//! ```
//!
//! Element names are matched by local name in any namespace; the response takes the request
//! element's namespace (and prefix). With `--prefix Savings` the operations are `SavingsDeposit`,
//! `SavingsWithdraw` and `SavingsBalance`, answered with `SavingsDepositResponse` and so on.
//!
//! An account never seen has balance 0. Account names are 1 to 100 bytes of text without control
//! characters. Amounts are non-negative decimal integers that fit an `i64`. A bad account or
//! amount, and a withdrawal that would take a balance below zero ("insufficient funds"), are
//! `Client` faults that change nothing.
//!
//! ## Files under `DIR`
//!
//! | path | what |
//! | --- | --- |
//! | `accounts/<hex>` | the committed balance of one account (decimal text); `<hex>` is the account name's UTF-8 bytes in hex, so an untrusted name can never become a path |
//! | `locks/<hex>` | an empty file per account, `flock`ed by the process whose transaction holds the account |
//! | `prepared/<hex>` | one record per prepared transaction (`<hex>` is the transaction id): its id and the *absolute* new balance of every account it changed |
//!
//! Every write is atomic and durable: write a temporary file, fsync it, rename it over the old one,
//! fsync the directory. Absolute balances (not deltas) make re-applying a record after a crash in
//! the middle of a commit harmless.
//!
//! ## Transactions
//!
//! - **Without a `transaction` header** `Deposit`/`Withdraw` commits at once, durably, before the
//!   reply. `Balance` reads the committed value and never waits.
//! - **With one**, the change is kept in this process's memory for that transaction; requests under
//!   the same transaction see it, nobody else does. Every account a transaction touches (reads
//!   included: strict two-phase locking, so what it read cannot change under it) is locked until it
//!   commits or aborts.
//! - **Locks** are `flock`s on `locks/<hex>`, held by the process for the transaction's life, so
//!   they vanish with a process that dies (its unprepared work is lost with them, which is right:
//!   the broker aborts that transaction). A writer that finds an account locked polls every few
//!   milliseconds for up to 80 % of the request's `timeout-ms` header (the time the broker will
//!   wait for the reply; 5 s when absent) minus 50 ms, then answers a `Server` fault "account A is
//!   locked by another transaction". A **prepared record is a lock too**: after a crash nothing
//!   holds the `flock`, but the in-doubt transaction's accounts must stay untouched until it is
//!   resolved, so whoever takes a lock then checks that no other transaction's prepared record
//!   names the account. The check happens while holding the `flock`, and a record is only written
//!   by the holder of its accounts' locks and only removed after it has been applied, so it cannot
//!   race.
//! - **PREPARE** writes `prepared/<hex>` durably, then votes `yes`, keeping the locks. A
//!   transaction that changed nothing votes `yes` without a record and is forgotten (read-only
//!   optimisation). An unknown transaction gets `no`: its work, if any, died with another process.
//! - **COMMIT** applies the new balances (from memory, or from the prepared record when another
//!   worker of the class prepared it and died), deletes the record and releases the locks.
//!   Without a PREPARE (one-phase commit) the balances are applied directly; when more than one
//!   account changed, a record marked `committing` is written first, so a crash half-way leaves a
//!   record that says how to finish (an `ABORT` that later arrives for a `committing` record
//!   completes the commit instead: a `COMMIT` was received, the decision was commit). Unknown
//!   transactions are acknowledged (idempotent).
//! - **ABORT** drops the in-memory work and any prepared record and releases the locks;
//!   idempotent.
//! - **RECOVER** lists every transaction with a record in `prepared/` (any process's: the
//!   directory is the class's).
//!
//! One process holds at most one open transaction at a time in practice (the broker pins a worker
//! to its transaction), but nothing here assumes it: the work is kept per transaction id.
//!
//! ## Test aids
//!
//! Children of a `Deposit`/`Withdraw` under a transaction mark that transaction (outside a
//! transaction they are ignored), so tests can play a participant that refuses or dies with the
//! real binary:
//!
//! - `<voteNo/>`: its `PREPARE` rolls it back and votes `no`.
//! - `<crashOnPrepare/>`: its `PREPARE` writes the prepared record durably, then the process exits
//!   with status 4 without answering (a participant dying prepared, in doubt).
//! - `<crashOnCommit/>`: when `COMMIT` arrives the process exits with status 5 before applying
//!   anything (the commit must then be completed from the prepared record by another process).

use super::xml::{self, Writer};
use super::{Action, SampleClass};
use crate::protocol::{Message, Reply, Request, Vote};
use crate::ReplyStatus;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The longest account name, in bytes (its hex form, 200 characters, must fit a file name).
const MAX_ACCOUNT: usize = 100;
/// The longest transaction id we accept, in bytes (same reason).
const MAX_TXID: usize = 100;
/// What the broker is assumed to wait for a reply when the request does not say.
const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// The longest `timeout-ms` honoured (a day).
const MAX_TIMEOUT_MS: u64 = 86_400_000;
/// How often a waiting writer retries a lock.
const LOCK_POLL: Duration = Duration::from_millis(5);
/// The first line of a prepared record (a format version, so a future change is detectable).
const RECORD_MAGIC: &str = "ledger-prepared 1";

/// The three operations, before the prefix.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Deposit,
    Withdraw,
    Balance,
}

/// One transaction's work in this process.
#[derive(Default)]
struct Txn {
    /// The new absolute balance of every account it changed.
    balances: BTreeMap<String, i64>,
    /// Voted yes: the record is on disk and no more work is accepted.
    prepared: bool,
    vote_no: bool,
    crash_on_prepare: bool,
    crash_on_commit: bool,
}

/// A lock this process holds for a transaction: the `flock`ed file (closing it releases the lock).
struct Held {
    _file: File,
    txid: String,
}

pub struct Ledger {
    prefix: String,
    store: Store,
    txns: HashMap<String, Txn>,
    /// account → the lock held for one of our transactions.
    held: HashMap<String, Held>,
}

impl Ledger {
    /// Open (creating if needed) the data directory.
    pub fn open(dir: &Path, prefix: &str) -> io::Result<Ledger> {
        Ok(Ledger {
            prefix: prefix.to_string(),
            store: Store::open(dir)?,
            txns: HashMap::new(),
            held: HashMap::new(),
        })
    }

    fn operation(&self, name: &str) -> Option<Op> {
        match name.strip_prefix(self.prefix.as_str())? {
            "Deposit" => Some(Op::Deposit),
            "Withdraw" => Some(Op::Withdraw),
            "Balance" => Some(Op::Balance),
            _ => None,
        }
    }

    fn serve(&mut self, request: &Request) -> Result<Action, Action> {
        let Some(op) = self.operation(&request.operation) else {
            return Err(Action::fault(
                "Client",
                format!(
                    "unknown operation {} (this class offers {p}Deposit, {p}Withdraw and {p}Balance)",
                    xml::one_line(&request.operation),
                    p = self.prefix
                ),
            ));
        };
        let root = xml::parse(&request.payload)?;
        let account = parse_account(&root)?;
        let amount = match op {
            Op::Balance => 0,
            Op::Deposit | Op::Withdraw => parse_amount(&root)?,
        };
        let deadline = Instant::now() + lock_budget(request_timeout_ms(request));

        let balance = match &request.transaction {
            None if op == Op::Balance => self.store.balance(&account)?,
            None => {
                // Commit at once, but wait like anyone else for a transaction holding the account.
                let _lock = self.lock(&account, None, deadline)?;
                let current = self.store.balance(&account)?;
                let new = apply(op, &account, current, amount)?;
                self.store
                    .set_balance(&account, new)
                    .map_err(|e| xml::error(format!("cannot write account {account}: {e}")))?;
                new
            }
            Some(txid) => {
                self.begin(txid)?;
                self.lock(&account, Some(txid), deadline)?;
                let current = match self.txns.get(txid).and_then(|t| t.balances.get(&account)) {
                    Some(pending) => *pending,
                    None => self.store.balance(&account)?,
                };
                let new = apply(op, &account, current, amount)?;
                let txn = self.txns.entry(txid.clone()).or_default();
                if op != Op::Balance {
                    txn.balances.insert(account.clone(), new);
                    txn.vote_no |= xml::has_child(&root, "voteNo");
                    txn.crash_on_prepare |= xml::has_child(&root, "crashOnPrepare");
                    txn.crash_on_commit |= xml::has_child(&root, "crashOnCommit");
                }
                new
            }
        };

        let name = format!("{}Response", request.operation);
        let mut w = Writer::like(&root);
        w.open(&name, &[])
            .leaf("account", &account)
            .leaf("balance", &balance.to_string())
            .close(&name);
        Ok(xml::reply(ReplyStatus::Ok, w.finish()))
    }

    /// Make sure `txid` has an entry that still accepts work.
    fn begin(&mut self, txid: &str) -> Result<(), Action> {
        check_txid(txid)?;
        match self.txns.get(txid) {
            Some(txn) if txn.prepared => Err(Action::fault(
                "Client",
                format!("transaction {txid} is prepared: it accepts no more work"),
            )),
            Some(_) => Ok(()),
            None => {
                // A prepared record without the work in memory: the worker that prepared it died;
                // the transaction is in doubt and must only be committed or aborted.
                if self.store.record_path(txid).exists() {
                    return Err(Action::fault(
                        "Client",
                        format!("transaction {txid} is prepared: it accepts no more work"),
                    ));
                }
                self.txns.insert(txid.to_string(), Txn::default());
                Ok(())
            }
        }
    }

    /// Lock `account` for `owner` (a transaction, kept until it ends) or for one immediate write
    /// (`None`: the returned file is the lock; dropping it releases it).
    fn lock(
        &mut self,
        account: &str,
        owner: Option<&str>,
        deadline: Instant,
    ) -> Result<Option<File>, Action> {
        if let Some(held) = self.held.get(account) {
            if Some(held.txid.as_str()) == owner {
                return Ok(None);
            }
            // Held by another transaction *of this process*: nothing can release it while we
            // wait (we serve one message at a time), so say so at once.
            return Err(locked(account));
        }
        loop {
            if let Some(file) = self
                .store
                .try_lock(account)
                .map_err(|e| xml::error(format!("cannot lock account {account}: {e}")))?
            {
                // Holding the flock, make sure no in-doubt (prepared) transaction of a dead
                // process claims the account.
                let claimed = self
                    .store
                    .records()
                    .map_err(|e| xml::error(format!("cannot read the prepared records: {e}")))?
                    .into_iter()
                    .any(|r| Some(r.txid.as_str()) != owner && r.balances.contains_key(account));
                if !claimed {
                    return Ok(match owner {
                        Some(txid) => {
                            self.held.insert(
                                account.to_string(),
                                Held {
                                    _file: file,
                                    txid: txid.to_string(),
                                },
                            );
                            None
                        }
                        None => Some(file),
                    });
                }
                drop(file);
            }
            if Instant::now() >= deadline {
                return Err(locked(account));
            }
            std::thread::sleep(LOCK_POLL);
        }
    }

    /// Release every lock `txid` holds.
    fn release(&mut self, txid: &str) {
        self.held.retain(|_, held| held.txid != txid);
    }

    fn prepare(&mut self, txid: &str) -> (Vote, Option<String>) {
        let Some(txn) = self.txns.get(txid) else {
            if self.store.record_path(txid).exists() {
                return (Vote::Yes, None); // prepared before (a repeated PREPARE)
            }
            return (
                Vote::No,
                Some(format!(
                    "unknown transaction {txid}: this worker holds no work for it"
                )),
            );
        };
        if txn.prepared {
            return (Vote::Yes, None);
        }
        if txn.vote_no {
            self.rollback(txid);
            return (
                Vote::No,
                Some("the transaction asked for a no vote (voteNo test aid)".to_string()),
            );
        }
        if txn.balances.is_empty() {
            // Read-only: nothing to make durable, nothing to commit; forget it now.
            self.rollback(txid);
            return (Vote::Yes, None);
        }
        let record = Record {
            txid: txid.to_string(),
            committing: false,
            balances: txn.balances.clone(),
        };
        let crash = txn.crash_on_prepare;
        if let Err(e) = self.store.write_record(&record) {
            self.rollback(txid);
            return (
                Vote::No,
                Some(format!("cannot write the prepared record: {e}")),
            );
        }
        if crash {
            eprintln!("ledger: prepared {txid} durably; exiting with status 4 as asked (crashOnPrepare test aid)");
            std::process::exit(4);
        }
        if let Some(txn) = self.txns.get_mut(txid) {
            txn.prepared = true;
        }
        (Vote::Yes, None)
    }

    fn rollback(&mut self, txid: &str) {
        self.txns.remove(txid);
        self.release(txid);
    }

    fn commit(&mut self, txid: &str) -> Result<(), String> {
        if let Some(txn) = self.txns.get(txid) {
            if txn.crash_on_commit {
                eprintln!(
                    "ledger: COMMIT {txid}: exiting with status 5 as asked (crashOnCommit test aid)"
                );
                std::process::exit(5);
            }
            let record = Record {
                txid: txid.to_string(),
                committing: !txn.prepared,
                balances: txn.balances.clone(),
            };
            // One-phase commit of several accounts: write the intent first, so a crash half-way
            // leaves a record that finishes the job.
            let logged = txn.prepared || record.balances.len() > 1;
            if !txn.prepared && logged {
                self.store
                    .write_record(&record)
                    .map_err(|e| format!("cannot write the commit record: {e}"))?;
            }
            self.store.apply(&record)?;
            if logged {
                self.store
                    .remove_record(txid)
                    .map_err(|e| format!("cannot remove the prepared record: {e}"))?;
            }
            self.rollback(txid);
            return Ok(());
        }
        // Not ours in memory: a transaction another worker prepared before it died.
        match self.store.read_record(txid) {
            Ok(Some(record)) => {
                self.store.apply(&record)?;
                self.store
                    .remove_record(txid)
                    .map_err(|e| format!("cannot remove the prepared record: {e}"))
            }
            Ok(None) => Ok(()), // already committed (or never prepared here): idempotent
            Err(e) => Err(format!("cannot read the prepared record: {e}")),
        }
    }

    fn abort(&mut self, txid: &str) -> Result<(), String> {
        match self.store.read_record(txid) {
            Ok(Some(record)) if record.committing => {
                // A COMMIT was received for it and failed or died half-way: the decision was
                // commit, so finish it rather than leave some accounts applied.
                eprintln!("ledger: ABORT {txid}: its one-phase commit was under way; completing the commit");
                self.store.apply(&record)?;
            }
            Ok(_) => {}
            Err(e) => return Err(format!("cannot read the prepared record: {e}")),
        }
        self.store
            .remove_record(txid)
            .map_err(|e| format!("cannot remove the prepared record: {e}"))?;
        self.rollback(txid);
        Ok(())
    }
}

impl SampleClass for Ledger {
    fn server_name(&self) -> String {
        let class = if self.prefix.is_empty() {
            "ledger".to_string()
        } else {
            format!("ledger --prefix {}", self.prefix)
        };
        format!("sample-server {class} {}", env!("CARGO_PKG_VERSION"))
    }

    fn request(&mut self, request: &Request) -> Action {
        self.serve(request).unwrap_or_else(|action| action)
    }

    fn control(&mut self, message: &Message) -> Message {
        let ack = |id: u64, txid: &str| Message::Ack {
            id,
            transaction: Some(txid.to_string()),
        };
        let failed = |id: u64, reason: String| {
            eprintln!("ledger: {reason}");
            Message::Reply(Reply {
                open_transaction: None,
                id,
                status: ReplyStatus::Error(xml::one_line(&reason)),
                payload: Bytes::new(),
            })
        };
        match message {
            Message::Prepare { id, transaction } => {
                let (vote, reason) = if check_txid(transaction).is_err() {
                    (Vote::No, Some("transaction id too long".to_string()))
                } else {
                    self.prepare(transaction)
                };
                Message::Vote {
                    id: *id,
                    transaction: transaction.clone(),
                    vote,
                    reason: reason.map(|r| xml::one_line(&r)),
                }
            }
            Message::Commit { id, transaction } => {
                if check_txid(transaction).is_err() {
                    return ack(*id, transaction); // we never accepted work under it
                }
                match self.commit(transaction) {
                    Ok(()) => ack(*id, transaction),
                    Err(reason) => failed(*id, format!("COMMIT {transaction}: {reason}")),
                }
            }
            Message::Abort { id, transaction } => {
                if check_txid(transaction).is_err() {
                    return ack(*id, transaction);
                }
                match self.abort(transaction) {
                    Ok(()) => ack(*id, transaction),
                    Err(reason) => failed(*id, format!("ABORT {transaction}: {reason}")),
                }
            }
            Message::Recover { id } => match self.store.records() {
                Ok(records) => Message::Recovered {
                    id: *id,
                    transactions: records.into_iter().map(|r| r.txid).collect(),
                },
                Err(e) => failed(
                    *id,
                    format!("RECOVER: cannot read the prepared records: {e}"),
                ),
            },
            Message::DialogAbort { id, .. } => Message::Ack {
                id: *id,
                transaction: None,
            },
            other => failed(
                other.id(),
                format!("unexpected {} for a ledger", other.kind()),
            ),
        }
    }
}

// ---- request parsing --------------------------------------------------------------------------

fn parse_account(root: &xmltree::Element) -> Result<String, Action> {
    let account = xml::required_text(root, "account")?;
    if account.is_empty() || account.len() > MAX_ACCOUNT || account.chars().any(char::is_control) {
        return Err(Action::fault(
            "Client",
            format!(
                "account name {:?} is not valid: 1 to {MAX_ACCOUNT} bytes, no control characters",
                xml::one_line(&account)
            ),
        ));
    }
    Ok(account)
}

fn parse_amount(root: &xmltree::Element) -> Result<i64, Action> {
    let text = xml::required_text(root, "amount")?;
    let bad =
        |why: &str| Action::fault("Client", format!("amount {:?} {why}", xml::one_line(&text)));
    match text.parse::<i64>() {
        Ok(n) if n < 0 => Err(bad("is negative")),
        Ok(n) => Ok(n),
        Err(e) => match e.kind() {
            std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => {
                Err(bad("is too large"))
            }
            std::num::IntErrorKind::Empty => Err(bad("is empty")),
            _ => Err(bad("is not an integer")),
        },
    }
}

/// The new balance, or the fault that refuses the change.
fn apply(op: Op, account: &str, current: i64, amount: i64) -> Result<i64, Action> {
    match op {
        Op::Balance => Ok(current),
        Op::Deposit => current.checked_add(amount).ok_or_else(|| {
            Action::fault(
                "Client",
                format!("deposit of {amount} would overflow the balance of account {account}"),
            )
        }),
        Op::Withdraw => match current.checked_sub(amount) {
            Some(new) if new >= 0 => Ok(new),
            _ => Err(Action::fault(
                "Client",
                format!(
                    "insufficient funds: account {account} has {current}, withdrawal of {amount} refused"
                ),
            )),
        },
    }
}

fn check_txid(txid: &str) -> Result<(), Action> {
    if txid.is_empty() || txid.len() > MAX_TXID {
        return Err(xml::error(format!(
            "transaction id of {} bytes: this ledger accepts 1 to {MAX_TXID}",
            txid.len()
        )));
    }
    Ok(())
}

fn locked(account: &str) -> Action {
    Action::fault(
        "Server",
        format!("account {account} is locked by another transaction"),
    )
}

/// The broker's wait for this reply, in milliseconds (the `timeout-ms` request header).
fn request_timeout_ms(request: &Request) -> u64 {
    request.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS)
}

/// How long a writer may wait for a lock: 80 % of the broker's wait minus 50 ms, so that the
/// fault reaches the broker before it gives up on us (and kills us for being late).
fn lock_budget(timeout_ms: u64) -> Duration {
    // Bounded to a day so that adding it to `Instant::now()` cannot overflow.
    let timeout_ms = timeout_ms.min(MAX_TIMEOUT_MS);
    Duration::from_millis((timeout_ms * 4 / 5).saturating_sub(50))
}

// ---- the files --------------------------------------------------------------------------------

/// A prepared (or one-phase committing) transaction as recorded on disk.
#[derive(Debug, PartialEq, Eq)]
struct Record {
    txid: String,
    /// Written by a one-phase COMMIT: the decision is already commit.
    committing: bool,
    balances: BTreeMap<String, i64>,
}

impl Record {
    /// ```text
    /// ledger-prepared 1
    /// transaction <txid>
    /// state prepared|committing
    /// account <hex name> <balance>
    /// ...
    /// ```
    fn encode(&self) -> String {
        let mut out = format!(
            "{RECORD_MAGIC}\ntransaction {}\nstate {}\n",
            self.txid,
            if self.committing {
                "committing"
            } else {
                "prepared"
            }
        );
        for (account, balance) in &self.balances {
            out.push_str(&format!("account {} {balance}\n", hex(account.as_bytes())));
        }
        out
    }

    fn decode(text: &str) -> Result<Record, String> {
        let mut lines = text.lines();
        if lines.next() != Some(RECORD_MAGIC) {
            return Err("not a ledger prepared record".to_string());
        }
        let txid = lines
            .next()
            .and_then(|l| l.strip_prefix("transaction "))
            .ok_or("no transaction line")?
            .to_string();
        let committing = match lines.next() {
            Some("state prepared") => false,
            Some("state committing") => true,
            _ => return Err("no state line".to_string()),
        };
        let mut balances = BTreeMap::new();
        for line in lines {
            let mut parts = line.split(' ');
            let (Some("account"), Some(name), Some(balance), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(format!("bad line {line:?}"));
            };
            let name = unhex(name)
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| format!("bad account name {name:?}"))?;
            let balance: i64 = balance
                .parse()
                .map_err(|_| format!("bad balance {balance:?}"))?;
            balances.insert(name, balance);
        }
        Ok(Record {
            txid,
            committing,
            balances,
        })
    }
}

struct Store {
    root: PathBuf,
    accounts: PathBuf,
    locks: PathBuf,
    prepared: PathBuf,
}

impl Store {
    fn open(dir: &Path) -> io::Result<Store> {
        let store = Store {
            root: dir.to_path_buf(),
            accounts: dir.join("accounts"),
            locks: dir.join("locks"),
            prepared: dir.join("prepared"),
        };
        for sub in [&store.accounts, &store.locks, &store.prepared] {
            std::fs::create_dir_all(sub)?;
        }
        // The subdirectories' own entries must survive a crash too.
        sync_dir(&store.root)?;
        Ok(store)
    }

    fn account_path(&self, account: &str) -> PathBuf {
        self.accounts.join(hex(account.as_bytes()))
    }

    fn record_path(&self, txid: &str) -> PathBuf {
        self.prepared.join(hex(txid.as_bytes()))
    }

    /// The committed balance (0 for an account never written).
    fn balance(&self, account: &str) -> Result<i64, Action> {
        match std::fs::read_to_string(self.account_path(account)) {
            Ok(text) => text.trim().parse().map_err(|_| {
                xml::error(format!(
                    "the balance file of account {account} is corrupt: {:?}",
                    xml::one_line(&text)
                ))
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(xml::error(format!("cannot read account {account}: {e}"))),
        }
    }

    fn set_balance(&self, account: &str, balance: i64) -> io::Result<()> {
        write_atomic(
            &self.account_path(account),
            format!("{balance}\n").as_bytes(),
        )
    }

    /// Apply a record's absolute balances (safe to repeat).
    fn apply(&self, record: &Record) -> Result<(), String> {
        for (account, balance) in &record.balances {
            self.set_balance(account, *balance)
                .map_err(|e| format!("cannot write account {account}: {e}"))?;
        }
        Ok(())
    }

    fn write_record(&self, record: &Record) -> io::Result<()> {
        write_atomic(&self.record_path(&record.txid), record.encode().as_bytes())
    }

    fn read_record(&self, txid: &str) -> io::Result<Option<Record>> {
        match std::fs::read_to_string(self.record_path(txid)) {
            Ok(text) => Record::decode(&text)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn remove_record(&self, txid: &str) -> io::Result<()> {
        match std::fs::remove_file(self.record_path(txid)) {
            Ok(()) => sync_dir(&self.prepared),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every prepared record (the directory is normally empty, so reading it is cheap).
    fn records(&self) -> io::Result<Vec<Record>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.prepared)? {
            let entry = entry?;
            let name = entry.file_name();
            // Temporary files of a write in progress (or interrupted by a crash) start with '.'.
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let text = match std::fs::read_to_string(entry.path()) {
                Ok(text) => text,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // just resolved
                Err(e) => return Err(e),
            };
            // A record we cannot read is still a transaction in doubt: refuse to guess.
            let record = Record::decode(&text).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", entry.path().display()),
                )
            })?;
            out.push(record);
        }
        out.sort_by(|a, b| a.txid.cmp(&b.txid));
        Ok(out)
    }

    /// Try to take the account's lock without waiting: `None` when someone else holds it.
    fn try_lock(&self, account: &str) -> io::Result<Option<File>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.locks.join(hex(account.as_bytes())))?;
        // flock (not fcntl) locks belong to the open file description: two opens in one process
        // conflict like two processes, and the lock goes when this File is dropped or the
        // process dies.
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(Some(file));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EWOULDBLOCK) | Some(libc::EINTR) => Ok(None),
            _ => Err(err),
        }
    }
}

/// Write `bytes` to `path` atomically and durably: temporary file, fsync, rename, fsync the
/// directory. A crash leaves either the old content or the new one, never a mix.
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("a file path without a directory"))?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("a file path without a name"))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).ok().filter(|p| p.len() == 2)?;
            u8::from_str_radix(pair, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_roundtrip() {
        let record = Record {
            txid: "t-1".into(),
            committing: true,
            balances: BTreeMap::from([("a b/../c".to_string(), 5), ("é".to_string(), -1)]),
        };
        assert_eq!(Record::decode(&record.encode()).unwrap(), record);
        assert!(Record::decode("garbage").is_err());
        assert!(Record::decode(&format!(
            "{RECORD_MAGIC}\ntransaction t\nstate prepared\naccount zz 1\n"
        ))
        .is_err());
    }

    #[test]
    fn hex_roundtrips_and_refuses_garbage() {
        assert_eq!(hex(b"/a"), "2f61");
        assert_eq!(unhex("2f61").unwrap(), b"/a");
        assert!(unhex("2f6").is_none());
        assert!(unhex("zz").is_none());
        assert!(unhex("é1").is_none());
    }

    #[test]
    fn lock_budget_leaves_a_margin() {
        assert_eq!(lock_budget(5_000), Duration::from_millis(3_950));
        assert_eq!(lock_budget(10), Duration::ZERO);
        assert_eq!(
            lock_budget(u64::MAX),
            Duration::from_millis(MAX_TIMEOUT_MS / 5 * 4 - 50)
        );
    }

    #[test]
    fn amounts() {
        let parse =
            |xml: &str| parse_amount(&xmltree::Element::parse(xml.as_bytes()).unwrap()).ok();
        assert_eq!(parse("<D><amount> 10 </amount></D>"), Some(10));
        for bad in ["-1", "1.5", "", "9223372036854775808", "ten"] {
            assert_eq!(
                parse(&format!("<D><amount>{bad}</amount></D>")),
                None,
                "{bad}"
            );
        }
        assert_eq!(parse("<D/>"), None);
    }
}
