//! soapbench: a load generator that speaks the NonStop SOAP dialect (issue 7).
//!
//! `soapbench --url http://127.0.0.1:18383/soap --scenario continue --connections 32 --duration 10s`
//!
//! One hyper HTTP/1.1 keep-alive connection per virtual client. Closed loop (fixed concurrency) by
//! default; with `--rate N` open loop: each client sends on its own ticker (N / connections per
//! second) and latency is measured from the scheduled send time, so a stalled server is not hidden
//! (no coordinated omission). Requests completing during the warm-up are not counted.
//!
//! Subcommands run whole measurements: `soapbench compare` (nginx, the broker's http and process
//! adapters and the bare actix echo, side by side), `soapbench sessions` (1 000 000 stored sessions
//! and an expiry sweep), `soapbench preload` (fill a stopped broker's store). See BENCHMARKS.md.

#[path = "../bench/mod.rs"]
mod bench;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use bench::load::{LoadConfig, RawPayload, Scenario};

#[derive(Parser, Debug)]
#[command(
    name = "soapbench",
    about = "Load generator for the SOAP session broker (NonStop dialect)",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Side by side: nginx → HTTP echo (raw), the broker with its http adapter to the same backend
    /// and with its process adapter (continue, churn), and the bare actix-web echo (raw).
    Compare(bench::compare::CompareArgs),
    /// Continue with 1 000 000 stored idle sessions vs an empty store, broker memory, and p99
    /// during an expiry sweep of 100 000 sessions.
    Sessions(bench::sessions::SessionsArgs),
    /// Add idle sessions to the sled store of a stopped broker.
    Preload(bench::preload::PreloadArgs),
    /// A SELECT of one row in a sqlSession through the broker to PostgreSQL, against the same
    /// statement sent straight to PostgreSQL over one connection per client (the floor).
    Sql(bench::sql::SqlArgs),
    /// A one-entry base search in a DSML session through the broker to an LDAP directory, against
    /// the same search sent straight to the directory over one connection per client (the floor).
    Ldap(bench::ldap::LdapArgs),
}

#[derive(clap::Args, Debug)]
struct LoadArgs {
    /// Endpoint URL (http only), e.g. http://127.0.0.1:18383/soap
    #[arg(long, default_value = "http://127.0.0.1:18383/soap")]
    url: String,
    #[arg(long, value_enum, default_value = "continue")]
    scenario: Scenario,
    /// Virtual clients, one keep-alive connection each.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Measured duration (after warm-up), e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Warm-up, excluded from the statistics.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Open loop: total operations per second (requests; iterations for churn, transfer and cart),
    /// spread evenly over the connections. Without it: closed loop at fixed concurrency.
    #[arg(long)]
    rate: Option<f64>,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// CPUs the load threads may run on (taskset syntax: 1, 0-1, 0,2). Default: not pinned.
    #[arg(long)]
    cpus: Option<String>,
    /// Size of the Echo text.
    #[arg(long, default_value_t = 1000)]
    body_bytes: usize,
    /// What `raw` sends: the whole envelope, or only the body element with `X-Service: Echo`
    /// (what the broker's http adapter posts; for nginx in front of `sample-server echo --http`).
    #[arg(long, value_enum, default_value = "envelope")]
    raw_payload: RawPayload,
    /// Also print p50/p99/max for every second of the measured window.
    #[arg(long)]
    timeline: bool,
    /// Also print one JSON object line.
    #[arg(long)]
    json: bool,
}

fn load(args: LoadArgs) -> ExitCode {
    if let Some(why) = args.scenario.unavailable() {
        eprintln!("soapbench: {why}");
        return ExitCode::from(2);
    }
    let cpus = match args
        .cpus
        .as_deref()
        .map(bench::load::parse_cpu_list)
        .transpose()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("soapbench: --cpus: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match bench::load::runtime(args.threads, cpus) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("soapbench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = LoadConfig {
        url: args.url,
        scenario: args.scenario,
        connections: args.connections.max(1),
        duration: args.duration,
        warmup: args.warmup,
        rate: args.rate,
        body_bytes: args.body_bytes,
        raw_payload: args.raw_payload,
        timeline: args.timeline,
    };
    let result = match rt.block_on(bench::load::run(&config)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("soapbench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let threads = args.threads.max(1);
    bench::report::print_human(&config, threads, &result);
    if args.json {
        println!("{}", bench::report::json_line(&config, threads, &result));
    }
    if result.stats.requests == 0 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        None => return load(cli.load),
        Some(Command::Compare(a)) => bench::compare::compare(a),
        Some(Command::Sessions(a)) => bench::sessions::sessions(a),
        Some(Command::Preload(a)) => bench::preload::main(a),
        Some(Command::Sql(a)) => bench::sql::run(a),
        Some(Command::Ldap(a)) => bench::ldap::run(a),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("soapbench: {e}");
            ExitCode::FAILURE
        }
    }
}
