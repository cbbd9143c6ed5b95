//! What `soapbench sql` and `soapbench ldap` share: the broker in a session against its backend
//! reached straight by a plain client (the floor), the same number of virtual clients in closed
//! loops, side by side in one run, the order alternating round by round, then the means and the
//! broker/floor ratios.

use super::hist::Histogram;
use super::procs::{free_port, Launch, Server};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The loop settings both scenarios take.
#[derive(clap::Args, Debug, Clone)]
pub struct LoopArgs {
    /// Virtual clients: sessions through the broker, connections for the floor.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Where `broker` is (default: the directory of this executable).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// HTTP worker threads of the broker (`broker.workers`).
    #[arg(long, default_value_t = 1)]
    pub broker_workers: usize,
}

/// One target's figures in one round.
pub struct Figures {
    pub ops: f64,
    pub p50: u64,
    pub p99: u64,
    pub errors: u64,
}

impl Figures {
    pub fn of(hist: &Histogram, errors: u64, duration: Duration) -> Figures {
        Figures {
            ops: hist.total as f64 / duration.as_secs_f64(),
            p50: hist.quantile(0.50),
            p99: hist.quantile(0.99),
            errors,
        }
    }
}

/// Where `broker` is.
pub fn bin_dir(args: &LoopArgs) -> Result<PathBuf, String> {
    match &args.bin_dir {
        Some(d) => Ok(d.clone()),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .parent()
            .map(PathBuf::from)
            .ok_or_else(|| "no directory for this executable".to_string()),
    }
}

/// Start a broker on a free port with the configuration `config(addr)` in `dir`; its address and
/// the running server.
pub fn start_broker(
    name: &'static str,
    dir: &Path,
    bin_dir: &Path,
    config: impl FnOnce(&str) -> String,
) -> Result<(String, Server), String> {
    let addr = format!("127.0.0.1:{}", free_port()?);
    let config_path = dir.join("broker.toml");
    std::fs::write(&config_path, config(&addr)).map_err(|e| e.to_string())?;
    let launch = Launch {
        name,
        dir,
        cpus: None,
        marker: None,
    };
    let mut cmd = Command::new(bin_dir.join("broker"));
    cmd.arg("--config").arg(&config_path);
    let server = super::procs::start_server(&launch, cmd, addr.clone())?;
    Ok((addr, server))
}

/// One virtual client's closed loop: `op(n)` (n cycling through 1..=`cycle`, from `first`) until
/// warm-up plus duration have passed; the operations that start after the warm-up are timed
/// (successes) or counted (failures).
pub async fn measure<F, Fut>(
    args: &LoopArgs,
    first: usize,
    cycle: i32,
    mut op: F,
) -> (Histogram, u64)
where
    F: FnMut(i32) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    let (measure_from, end) = (start + args.warmup, start + args.warmup + args.duration);
    let mut hist = Histogram::new();
    let mut errors = 0;
    let mut n = first as i32;
    loop {
        let t = Instant::now();
        if t >= end {
            return (hist, errors);
        }
        n = n % cycle.max(1) + 1;
        let ok = op(n).await;
        if t >= measure_from {
            if ok {
                hist.record(t.elapsed().as_nanos() as u64);
            } else {
                errors += 1;
            }
        }
    }
}

/// `args.connections` closed loops made by `make(i)`, on this thread; their merged figures.
pub async fn closed_loop<F, Fut>(args: &LoopArgs, make: F) -> Result<Figures, String>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(Histogram, u64), String>> + 'static,
{
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let tasks: Vec<_> = (0..args.connections)
                .map(|i| tokio::task::spawn_local(make(i)))
                .collect();
            let mut hist = Histogram::new();
            let mut errors = 0;
            for t in tasks {
                let (h, e) = t.await.map_err(|e| e.to_string())??;
                hist.merge(&h);
                errors += e;
            }
            Ok(Figures::of(&hist, errors, args.duration))
        })
        .await
}

/// The rounds: `run(floor)` and `run(BROKER)` in alternating order, each line printed as it
/// comes, then the means and the ratios.
pub fn rounds(
    args: &LoopArgs,
    floor: &'static str,
    mut run: impl FnMut(&'static str) -> Result<Figures, String>,
) -> Result<(), String> {
    let mut results: Vec<(&str, Figures)> = Vec::new();
    for round in 1..=args.rounds {
        let order = if round % 2 == 1 {
            [floor, BROKER]
        } else {
            [BROKER, floor]
        };
        for target in order {
            let f = run(target)?;
            println!(
                "round {round}  {target:<16} {:>8.0} ops/s  p50 {:>7.3} ms  p99 {:>7.3} ms  errors {}",
                f.ops,
                f.p50 as f64 / 1e6,
                f.p99 as f64 / 1e6,
                f.errors
            );
            results.push((target, f));
        }
    }
    let mean = |t: &str, get: &dyn Fn(&Figures) -> f64| {
        let v: Vec<f64> = results
            .iter()
            .filter(|(n, _)| *n == t)
            .map(|(_, f)| get(f))
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let ops = |f: &Figures| f.ops;
    let p50 = |f: &Figures| f.p50 as f64;
    let p99 = |f: &Figures| f.p99 as f64;
    let (bo, fo) = (mean(BROKER, &ops), mean(floor, &ops));
    let (b50, f50) = (mean(BROKER, &p50), mean(floor, &p50));
    let (b99, f99) = (mean(BROKER, &p99), mean(floor, &p99));
    println!("| target | ops/s | p50 | p99 |\n| --- | --- | --- | --- |");
    println!(
        "| {floor} (floor) | {fo:.0} | {:.3} ms | {:.3} ms |",
        f50 / 1e6,
        f99 / 1e6
    );
    println!(
        "| {BROKER} | {bo:.0} | {:.3} ms | {:.3} ms |",
        b50 / 1e6,
        b99 / 1e6
    );
    println!(
        "ratios broker/floor: throughput {:.2}x, p50 {:.2}x, p99 {:.2}x",
        bo / fo.max(1.0),
        b50 / f50.max(1.0),
        b99 / f99.max(1.0)
    );
    Ok(())
}

/// The broker target's name.
pub const BROKER: &str = "broker-session";

/// One HTTP/1.1 keep-alive connection to the broker posting SOAP 1.1 envelopes to one path.
pub struct SoapConnection {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    host: String,
    path: &'static str,
    soap_action: &'static str,
    authorization: Option<String>,
}

impl SoapConnection {
    /// Connect (on this thread's LocalSet); `authorization` is the header's value, if any.
    pub async fn open(
        addr: &str,
        path: &'static str,
        soap_action: &'static str,
        authorization: Option<String>,
    ) -> Result<SoapConnection, String> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::task::spawn_local(conn);
        Ok(SoapConnection {
            sender,
            host: addr.to_string(),
            path,
            soap_action,
            authorization,
        })
    }

    /// Post `header` and `body` in an envelope; the future (which holds no borrow, so that a
    /// closed loop can make one per operation) gives whether the status was 2xx and the body.
    pub fn post(
        &mut self,
        header: &str,
        body: &str,
    ) -> impl std::future::Future<Output = Result<(bool, bytes::Bytes), String>> + 'static {
        use http_body_util::BodyExt as _;
        let envelope = bytes::Bytes::from(format!(
            "<se:Envelope xmlns:se=\"http://schemas.xmlsoap.org/soap/envelope/\"><se:Header>{header}</se:Header><se:Body>{body}</se:Body></se:Envelope>"
        ));
        let mut req = hyper::Request::post(self.path)
            .header(hyper::header::HOST, self.host.as_str())
            .header(hyper::header::CONTENT_TYPE, "text/xml; charset=utf-8")
            .header("SOAPAction", self.soap_action);
        if let Some(a) = &self.authorization {
            req = req.header(hyper::header::AUTHORIZATION, a.as_str());
        }
        let sent = req
            .body(http_body_util::Full::new(envelope))
            .map(|r| self.sender.send_request(r));
        async move {
            let resp = sent
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
            let ok = resp.status().is_success();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((ok, body))
        }
    }
}

/// The value of `attribute="…"` in a reply's text (a session ID), when the reply was a success.
pub fn attribute_of(ok: bool, body: &[u8], attribute: &str) -> Result<String, String> {
    let text = String::from_utf8_lossy(body);
    text.split(&format!("{attribute}=\""))
        .nth(1)
        .and_then(|s| s.split('"').next())
        .filter(|_| ok)
        .map(str::to_string)
        .ok_or_else(|| format!("no {attribute} in the reply: {text}"))
}
