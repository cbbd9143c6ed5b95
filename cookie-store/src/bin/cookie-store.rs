//! `cookie-store serve --data DIR --listen ADDR`: the daemon that owns one sled database and serves
//! it to the broker processes of its host (`cookie-store://HOST:PORT`). See
//! [`cookie_store::remote`] for what it does and `PROTOCOL.md` for the wire format.
//!
//! Once it listens it prints one line to stdout, `cookie-store: serving DIR on cookie-store://ADDR`
//! (with the real port when `--listen` asked for port 0). SIGTERM or SIGINT: stop accepting, finish
//! the requests in progress, flush, exit 0. A data directory that another process holds, or an
//! address it cannot listen on, ends it at once with exit status 1 and one line on stderr.

use clap::{Parser, Subcommand, ValueEnum};
use cookie_store::remote::{Server, ServerLimits};
use cookie_store::{SledOptions, SledStore, Store};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "cookie-store",
    version,
    about = "The session store daemon shared by the broker processes of one host"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Own the sled database in DIR and serve it on ADDR to brokers (store URL cookie-store://ADDR).
    Serve(Serve),
}

#[derive(Parser)]
struct Serve {
    /// The sled database directory (created if missing). One daemon per directory.
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Where to listen, HOST:PORT. Keep it on loopback: the protocol has no authentication.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7070")]
    listen: String,
    /// Connections served at once (each broker opens its URL's `connections`, 4 by default).
    #[arg(long, value_name = "N", default_value_t = ServerLimits::default().max_connections)]
    max_connections: usize,
    /// Largest request or response frame, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = ServerLimits::default().max_frame_bytes)]
    max_frame_bytes: usize,
    /// Requests in progress on one connection at once (mostly take_turns waiting for a turn).
    #[arg(long, value_name = "N", default_value_t = ServerLimits::default().max_in_flight)]
    max_in_flight: usize,
    /// On SIGTERM/SIGINT, how long to wait for requests in progress.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    shutdown_grace: Duration,
    /// How often sled flushes lazy writes (last-access times) in the background; 0 turns it off.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    flush_every_ms: u64,
    /// sled's page cache, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = SledOptions::default().cache_capacity_bytes)]
    cache_capacity_bytes: u64,
    /// Log format on stderr; the level comes from RUST_LOG (default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let Command::Serve(serve) = Cli::parse().command;
    init_logging(serve.log_format);
    match run(serve) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            tracing::error!("{why}");
            eprintln!("cookie-store: {why}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run(args: Serve) -> Result<(), String> {
    if args.max_connections == 0 || args.max_in_flight == 0 || args.max_frame_bytes < 1024 {
        return Err("--max-connections and --max-in-flight must be at least 1, \
                    --max-frame-bytes at least 1024"
            .into());
    }
    if args.cache_capacity_bytes < 1024 * 1024 {
        return Err("--cache-capacity-bytes must be at least 1048576 (1 MiB)".into());
    }
    let options = SledOptions {
        flush_every_ms: (args.flush_every_ms > 0).then_some(args.flush_every_ms),
        cache_capacity_bytes: args.cache_capacity_bytes,
    };
    let store = SledStore::open_with(&args.data, &options).map_err(|e| {
        format!(
            "cannot open the data directory {}: {e}",
            args.data.display()
        )
    })?;
    let store: Arc<dyn Store> = Arc::new(store);
    let limits = ServerLimits {
        max_connections: args.max_connections,
        max_frame_bytes: args.max_frame_bytes,
        max_in_flight: args.max_in_flight,
        shutdown_grace: args.shutdown_grace,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("cookie-store")
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let served = runtime.block_on(async {
        let server = Server::bind(&args.listen, store.clone(), limits)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        let addr = server
            .local_addr()
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        let stop = stop_signal().map_err(|e| format!("cannot handle signals: {e}"))?;
        tracing::info!(data = %args.data.display(), %addr, "serving");
        println!(
            "cookie-store: serving {} on cookie-store://{addr}",
            args.data.display()
        );
        server
            .run(stop)
            .await
            .map_err(|e| format!("flushing the store at shutdown: {e}"))
    });
    drop(runtime);
    // The last reference: dropping it stops sled's flusher after serving anything pending.
    drop(store);
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// Completes at the first SIGTERM or SIGINT.
fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "stopping");
    })
}
