//! `sample-server`: the sample application's legacy server classes.
//!
//! ```text
//! sample-server echo                # the `echo` class on stdin/stdout (the process adapter)
//! sample-server echo --http ADDR    # the same work over HTTP (the benchmark backend)
//! sample-server ledger --data DIR [--prefix Savings]   # durable, transactional accounts
//! sample-server cart                # context-sensitive: a shopping cart per dialog
//! sample-server directory           # stand-in for the DSML endpoint's LDAP backend
//! sample-server acctinq [--http ADDR | --tcp ADDR]   # a record class: account inquiry, EBCDIC records
//! ```
//!
//! On stdin/stdout it speaks the backend wire protocol (`adapters/PROTOCOL.md`) and exits when
//! stdin closes. Each class's test aids are documented in its module under `src/sample/` (for
//! example `<sleepMs>`/`<crash/>` for echo, `<voteNo/>`/`<crashOnPrepare/>` for the ledger).

fn main() -> std::process::ExitCode {
    adapters::sample::main_with_args(std::env::args().skip(1).collect())
}
