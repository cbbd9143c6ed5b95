//! The `broker` command: run the broker (embedded default or a configuration file), print the default
//! configuration, or act as the sample server (`broker sample-server …`, so that the embedded default
//! needs no second binary on the path).

use broker::config::{LogFormat, Overrides, DEFAULT_CONFIG};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// The broker binary allocates with mimalloc: a continue request makes about a hundred short-lived
/// allocations across hyper, actix, quick-xml and sled, and mimalloc's per-thread free lists cost
/// fewer instructions and no lock contention against glibc's arenas (figures in `BENCHMARKS.md`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "broker",
    version,
    about = "A multi-protocol SOAP session broker"
)]
struct Cli {
    /// Run from this TOML configuration file instead of the embedded default.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the embedded default configuration (a commented TOML file) and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Listen on this address (overrides broker.listen).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Use this store (overrides store.url): sled:DIR, cookie-store://HOST:PORT or postgres://...
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// This broker's ID (overrides broker.id).
    #[arg(long, value_name = "NAME")]
    id: Option<String>,
    /// Data directory (overrides broker.data_dir).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// How other brokers reach this one (overrides broker.advertise): http://HOST:PORT.
    #[arg(long, value_name = "URL")]
    advertise: Option<String>,
    /// Serve the admin API and /metrics on this address (overrides admin.listen; needs a token).
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Hash a password for the credentials file (reads it from standard input; prints `$argon2id$…`).
    HashPassword {
        /// Print a whole `USER:HASH` line for this user.
        #[arg(long)]
        user: Option<String>,
    },
    /// Call a broker's admin API: sessions, brokers, metrics (see the README).
    Admin(Box<broker::admin::cli::AdminArgs>),
    /// Play one of the sample legacy server classes (the same program as `sample-server`).
    SampleServer {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::SampleServer { args }) => return adapters::sample::main_with_args(args),
        Some(Command::HashPassword { user }) => return hash_password(user),
        Some(Command::Admin(args)) => return broker::admin::cli::run(*args),
        None => {}
    }
    if cli.print_default_config {
        print!("{DEFAULT_CONFIG}");
        return ExitCode::SUCCESS;
    }
    let overrides = Overrides {
        listen: cli.listen,
        store: cli.store,
        id: cli.id,
        data_dir: cli.data_dir,
        advertise: cli.advertise,
        admin_listen: cli.admin_listen,
    };
    let source = broker::reload::ConfigSource {
        path: cli.config.clone(),
        overrides,
    };
    let config = source.load();
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("broker: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    // Kept to the end of main: dropping it flushes the spans still to be exported.
    let _log = broker::logging::init(&config.log, &config.broker.id);
    let config_log_format = config.log.format;
    match broker::app::run(config, source) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once, on stderr: as a JSON log line when the logs are JSON (so a log shipper
            // parses it), else as one plain line (the human log would print it a second time).
            match config_log_format {
                LogFormat::Json => tracing::error!(error = %e, "broker stopped"),
                LogFormat::Human => eprintln!("broker: {e}"),
            }
            ExitCode::from(1)
        }
    }
}

/// `broker hash-password`: one password line from stdin → a PHC string (or `user:hash`) on stdout.
fn hash_password(user: Option<String>) -> ExitCode {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        eprintln!("broker hash-password: cannot read the password from standard input: {e}");
        return ExitCode::from(2);
    }
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("broker hash-password: the password (one line on standard input) is empty");
        return ExitCode::from(2);
    }
    match broker::auth::hash_password(password) {
        Ok(hash) => {
            match user {
                Some(u) => println!("{u}:{hash}"),
                None => println!("{hash}"),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("broker hash-password: {e}");
            ExitCode::from(1)
        }
    }
}
