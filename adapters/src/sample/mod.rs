//! # The sample legacy servers
//!
//! `sample-server <class>` plays one of the sample application's server classes (see
//! `shared/spec/product.md`, "The sample application"). Each class is one file here implementing
//! [`SampleClass`]; the wire-protocol plumbing ([`stdio`]) and the HTTP mode ([`http`]) are shared,
//! so adding a class means one new file and one new subcommand:
//!
//! | subcommand | class | file |
//! | --- | --- | --- |
//! | `echo [--http ADDR]` | context-free `Echo` | [`echo`] |
//! | `ledger --data DIR [--prefix P]` | durable, transactional accounts (`savings` is `--prefix Savings`) | [`ledger`] |
//! | `cart` | context-sensitive: a cart per dialog, in memory | [`cart`] |
//! | `directory` | a stand-in for the DSML endpoint's LDAP backend (no directory behind it) | [`directory`] |
//! | `acctinq [--http ADDR \| --tcp ADDR]` | a record class: account inquiry in EBCDIC fixed-layout records | [`acctinq`] |
//!
//! [`xml`] holds the request-reading and response-writing helpers they share.
//!
//! A sample class is deliberately written the way a legacy team would write a conforming server:
//! a blocking loop on stdin/stdout, one request at a time, exit when stdin closes.

pub mod acctinq;
pub mod cart;
pub mod directory;
pub mod echo;
pub mod http;
pub mod ledger;
pub mod stdio;
pub mod xml;

use crate::protocol::{Message, Reply, Request};
use crate::ReplyStatus;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What a class does with a request.
pub enum Action {
    /// Answer (after `delay`, a test aid for slow servers).
    Reply {
        status: ReplyStatus,
        payload: Bytes,
        delay: Duration,
    },
    /// Exit at once with this code, without answering (a test aid for crashing servers).
    Exit(i32),
}

impl Action {
    /// An application fault (passed to the SOAP client as a fault).
    pub fn fault(code: &str, string: impl Into<String>) -> Action {
        Action::Reply {
            status: ReplyStatus::Fault {
                code: code.to_string(),
                string: string.into(),
            },
            payload: Bytes::new(),
            delay: Duration::ZERO,
        }
    }
}

/// One sample server class.
pub trait SampleClass {
    /// How the server names itself in `HELLO` (for the broker's log).
    fn server_name(&self) -> String;

    /// Serve one request.
    fn request(&mut self, request: &Request) -> Action;

    /// Transaction and dialog control (`PREPARE`, `COMMIT`, `ABORT`, `RECOVER`, `DIALOG-ABORT`).
    /// The default suits a context-free, non-transactional class: acknowledge a dialog abort (there
    /// is nothing to abort) and answer the transaction messages with an error reply.
    fn control(&mut self, message: &Message) -> Message {
        not_transactional(&self.server_name(), message)
    }
}

/// The default [`SampleClass::control`], also for classes that override it for dialogs only.
pub fn not_transactional(server_name: &str, message: &Message) -> Message {
    match message {
        Message::DialogAbort { id, .. } => Message::Ack {
            id: *id,
            transaction: None,
        },
        other => Message::Reply(Reply {
            open_transaction: None,
            id: other.id(),
            status: ReplyStatus::Error(format!(
                "{server_name} is not transactional (got {})",
                other.kind()
            )),
            payload: Bytes::new(),
        }),
    }
}

// ---- the command line -------------------------------------------------------------------------

#[derive(Parser)]
#[command(
    name = "sample-server",
    version,
    about = "Plays the sample application's legacy server classes (wire protocol on stdin/stdout)"
)]
struct Cli {
    #[command(subcommand)]
    class: Class,
}

/// One subcommand per sample class.
#[derive(Subcommand)]
enum Class {
    /// The context-free `echo` class: Echo → EchoResponse.
    Echo {
        /// Serve over HTTP on this address (e.g. 127.0.0.1:9000) instead of stdin/stdout.
        #[arg(long, value_name = "ADDR")]
        http: Option<String>,
    },
    /// The durable, transactional `ledger` class: Deposit, Withdraw, Balance (with `--prefix
    /// Savings`: SavingsDeposit, … — the `savings` class).
    Ledger {
        /// The data directory (created if missing), shared by every process of the class.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Prefix of the operation names (`Savings` for the `savings` class).
        #[arg(long, value_name = "P", default_value = "", value_parser = parse_prefix)]
        prefix: String,
    },
    /// The context-sensitive `cart` class: CartAdd, CartList, CartCheckout in a dialog.
    Cart,
    /// A stand-in for the DSML endpoint's LDAP backend: answers a batchRequest with a
    /// batchResponse (every operation: unwillingToPerform; there is no directory behind it).
    Directory,
    /// The record class `acctinq`: an account inquiry in IBM-037 fixed-layout records
    /// (`records/samples/acctinq.cpy`), bytes in and out.
    Acctinq {
        /// Serve over HTTP on this address instead of stdin/stdout (the body is the record).
        #[arg(long, value_name = "ADDR", conflicts_with = "tcp")]
        http: Option<String>,
        /// Serve the wire protocol over TCP on this address (the tcp adapter), one connection
        /// per worker slot, instead of stdin/stdout.
        #[arg(long, value_name = "ADDR")]
        tcp: Option<String>,
    },
}

fn parse_prefix(prefix: &str) -> Result<String, String> {
    if prefix.len() <= 32 && prefix.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(prefix.to_string())
    } else {
        Err("a prefix is up to 32 ASCII letters and digits".to_string())
    }
}

/// Run `sample-server` with these arguments (without the program name). The `broker` binary calls
/// this for `broker sample-server …`, so the embedded default needs no second executable.
pub fn main_with_args(args: Vec<String>) -> std::process::ExitCode {
    let cli = match Cli::try_parse_from(std::iter::once("sample-server".to_string()).chain(args)) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return std::process::ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let code = match cli.class {
        Class::Echo { http: None } => stdio::serve(&mut echo::Echo),
        Class::Echo { http: Some(addr) } => serve_http(&addr, Arc::new(echo::respond)),
        Class::Ledger { data, prefix } => match ledger::Ledger::open(&data, &prefix) {
            Ok(mut ledger) => stdio::serve(&mut ledger),
            Err(e) => {
                eprintln!(
                    "sample-server ledger: cannot open the data directory {}: {e}",
                    data.display()
                );
                1
            }
        },
        Class::Cart => stdio::serve(&mut cart::Cart::default()),
        Class::Directory => stdio::serve(&mut directory::Directory),
        Class::Acctinq {
            http: Some(addr), ..
        } => serve_http(&addr, Arc::new(acctinq::respond)),
        Class::Acctinq {
            tcp: Some(addr), ..
        } => serve_tcp(&addr, || Box::new(acctinq::AccountInquiry)),
        Class::Acctinq { .. } => stdio::serve(&mut acctinq::AccountInquiry),
    };
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// The wire protocol over TCP: announce the address, then serve each connection on its own
/// thread with a class of its own (a worker per connection, as the tcp adapter expects).
fn serve_tcp(addr: &str, class: fn() -> Box<dyn SampleClass + Send>) -> i32 {
    let listener = match std::net::TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sample-server: cannot listen on {addr}: {e}");
            return 1;
        }
    };
    match listener.local_addr() {
        Ok(local) => println!("listening on {local}"),
        Err(e) => {
            eprintln!("sample-server: {e}");
            return 1;
        }
    }
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let Ok(reader) = stream.try_clone() else {
            continue;
        };
        std::thread::spawn(move || {
            let mut worker = class();
            let code = stdio::serve_on(worker.as_mut(), std::io::BufReader::new(reader), stream);
            if code != 0 {
                eprintln!("sample-server: a connection ended with status {code}");
            }
        });
    }
    0
}

fn serve_http(addr: &str, work: Arc<http::Work>) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("sample-server: cannot start the runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(http::serve(addr, work)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("sample-server: cannot serve HTTP on {addr}: {e}");
            1
        }
    }
}
