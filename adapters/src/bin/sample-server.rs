//! `sample-server`: the sample application's legacy server classes.
//!
//! ```text
//! sample-server echo                # the `echo` class on stdin/stdout (the process adapter)
//! sample-server echo --http ADDR    # the same work over HTTP (the benchmark backend)
//! ```
//!
//! On stdin/stdout it speaks the backend wire protocol (`adapters/PROTOCOL.md`) and exits when
//! stdin closes. Test aids (see `src/sample/echo.rs`): an `Echo` holding `<sleepMs>N</sleepMs>`
//! answers after N ms; one holding `<crash/>` makes the process exit with status 3 unanswered.

fn main() -> std::process::ExitCode {
    adapters::sample::main_with_args(std::env::args().skip(1).collect())
}
