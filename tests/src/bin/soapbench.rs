//! soapbench: a load generator that speaks the NonStop SOAP dialect (issue 7, first cut).
//!
//! `soapbench --url http://127.0.0.1:18383/soap --scenario continue --connections 32 --duration 10s`
//!
//! One hyper HTTP/1.1 keep-alive connection per virtual client. Closed loop (fixed concurrency) by
//! default; with `--rate N` open loop: each client sends on its own ticker (N / connections per
//! second) and latency is measured from the scheduled send time, so a stalled server is not hidden
//! (no coordinated omission). Requests completing during the warm-up are not counted. See
//! BENCHMARKS.md at the repository root.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::Uri;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

const NSK_NS: &str = "urn:compaq_nsk_oss_SoapHeader";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Each client begins its own session during setup, then calls Echo in a loop.
    Continue,
    /// Begin, one Echo, End per iteration (3 requests).
    Churn,
    /// The same Echo envelope with no session header (for proxies and the bare echo).
    Raw,
    /// Not yet: arrives with transactions.
    Transfer,
    /// Not yet: needs a cart server class.
    Cart,
}

#[derive(Parser, Debug)]
#[command(
    name = "soapbench",
    about = "Load generator for the SOAP session broker (NonStop dialect)"
)]
struct Args {
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
    /// Open loop: total operations per second (requests; iterations for churn), spread evenly over
    /// the connections. Without it: closed loop at fixed concurrency.
    #[arg(long)]
    rate: Option<f64>,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Size of the Echo text.
    #[arg(long, default_value_t = 1000)]
    body_bytes: usize,
    /// Also print one JSON object line.
    #[arg(long)]
    json: bool,
}

// ---------------------------------------------------------------------------------------------
// Histogram: log-linear buckets over nanoseconds, 32 sub-buckets per power of two (≤ 3.2 % error).

const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) * SUB as usize;

#[derive(Clone)]
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < 2 * SUB {
            return v as usize;
        }
        let msb = 63 - v.leading_zeros();
        let shift = msb - SUB_BITS;
        (shift as usize) * SUB as usize + (v >> shift) as usize
    }

    /// Highest value that falls in bucket `i`.
    fn upper(i: usize) -> u64 {
        if (i as u64) < 2 * SUB {
            return i as u64;
        }
        let shift = (i as u64 / SUB) - 1;
        let q = (i as u64 % SUB) + SUB;
        ((q + 1) << shift) - 1
    }

    fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let target = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return Self::upper(i).min(self.max);
            }
        }
        self.max
    }
}

// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
struct Stats {
    hist: Histogram,
    requests: u64,
    ok: u64,
    iterations: u64,
    errors: BTreeMap<String, u64>,
}

impl Stats {
    fn new() -> Self {
        Stats {
            hist: Histogram::new(),
            requests: 0,
            ok: 0,
            iterations: 0,
            errors: BTreeMap::new(),
        }
    }

    fn merge(&mut self, o: &Stats) {
        self.hist.merge(&o.hist);
        self.requests += o.requests;
        self.ok += o.ok;
        self.iterations += o.iterations;
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
    }
}

/// Shared, read-only description of the run.
struct Plan {
    authority: String,
    addr: String,
    path: String,
    scenario: Scenario,
    text: String,
    measure_start: Instant,
    end: Instant,
    /// Per-client interval between operations (open loop), if any.
    interval: Option<Duration>,
}

enum Outcome {
    Ok(Bytes),
    /// Error kind, e.g. `http_503`, `fault_-1001`, `transport`.
    Err(String),
}

fn find_detail_code(body: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(body).ok()?;
    let start = s.find("<detailCode>")? + "<detailCode>".len();
    let len = s[start..].find('<')?;
    Some(s[start..start + len].trim())
}

fn find_session_id(body: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(body).ok()?;
    let start = s.find("SessionID=\"")? + "SessionID=\"".len();
    let len = s[start..].find('"')?;
    Some(s[start..start + len].to_string())
}

fn envelope(header: Option<String>, text: &str) -> Bytes {
    let mut s = String::with_capacity(text.len() + 400);
    s.push_str(r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">"#);
    if let Some(h) = header {
        let _ = write!(s, "<soapenv:Header>{h}</soapenv:Header>");
    }
    let _ = write!(
        s,
        "<soapenv:Body><Echo><text>{text}</text></Echo></soapenv:Body></soapenv:Envelope>"
    );
    Bytes::from(s)
}

fn begin_header() -> String {
    format!(r#"<nsk:Session xmlns:nsk="{NSK_NS}" SessionCommand="Begin"/>"#)
}

fn continue_header(id: &str) -> String {
    format!(r#"<nsk:Session xmlns:nsk="{NSK_NS}" SessionID="{id}"/>"#)
}

fn end_header(id: &str) -> String {
    format!(r#"<nsk:Session xmlns:nsk="{NSK_NS}" SessionID="{id}" SessionCommand="End"/>"#)
}

/// One virtual client: a keep-alive connection, re-opened after a transport error.
struct Client {
    plan: std::sync::Arc<Plan>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Client {
    async fn connect(&mut self) -> Result<(), String> {
        let stream = TcpStream::connect(&self.plan.addr)
            .await
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.sender = Some(sender);
        Ok(())
    }

    async fn send(&mut self, body: Bytes) -> Outcome {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            if let Err(e) = self.connect().await {
                eprintln!("connect: {e}");
                return Outcome::Err("connect".into());
            }
        }
        let sender = self.sender.as_mut().expect("connected");
        if sender.ready().await.is_err() {
            self.sender = None;
            return Outcome::Err("transport".into());
        }
        let req = hyper::Request::post(&self.plan.path)
            .header(hyper::header::HOST, &self.plan.authority)
            .header(hyper::header::CONTENT_TYPE, "text/xml; charset=utf-8")
            .header("SOAPAction", "\"\"")
            .body(Full::new(body))
            .expect("request");
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(_) => {
                self.sender = None;
                return Outcome::Err("transport".into());
            }
        };
        let status = resp.status();
        let bytes = match resp.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                self.sender = None;
                return Outcome::Err("transport".into());
            }
        };
        if let Some(code) = find_detail_code(&bytes) {
            return Outcome::Err(format!("fault_{code}"));
        }
        if !status.is_success() {
            return Outcome::Err(format!("http_{}", status.as_u16()));
        }
        Outcome::Ok(bytes)
    }

    /// Sends one request, records it if it completes inside the measured window; latency from `from`.
    async fn timed(&mut self, body: Bytes, from: Instant, stats: &mut Stats) -> Option<Bytes> {
        let outcome = self.send(body).await;
        let done = Instant::now();
        let counted = done >= self.plan.measure_start && done <= self.plan.end;
        if counted {
            stats.requests += 1;
            stats
                .hist
                .record(done.duration_since(from).as_nanos() as u64);
        }
        match outcome {
            Outcome::Ok(b) => {
                if counted {
                    stats.ok += 1;
                }
                Some(b)
            }
            Outcome::Err(kind) => {
                if counted {
                    *stats.errors.entry(kind).or_default() += 1;
                }
                None
            }
        }
    }

    async fn begin(&mut self) -> Result<String, String> {
        match self.send(envelope(Some(begin_header()), "begin")).await {
            Outcome::Ok(b) => {
                find_session_id(&b).ok_or_else(|| "no SessionID in the Begin reply".into())
            }
            Outcome::Err(k) => Err(k),
        }
    }
}

/// Scenario `continue`: one session per client, Echo in a loop.
async fn run_continue(client: &mut Client, session: String) -> Stats {
    let body = envelope(Some(continue_header(&session)), &client.plan.text);
    let mut stats = Stats::new();
    let mut ticker = Ticker::new(&client.plan);
    while let Some(from) = ticker.next().await {
        client.timed(body.clone(), from, &mut stats).await;
    }
    // Clean up, not measured.
    let _ = client
        .send(envelope(Some(end_header(&session)), "end"))
        .await;
    stats
}

/// Scenario `churn`: Begin, one Echo, End per iteration.
async fn run_churn(client: &mut Client) -> Stats {
    let mut stats = Stats::new();
    let mut ticker = Ticker::new(&client.plan);
    let begin = envelope(Some(begin_header()), "begin");
    while let Some(from) = ticker.next().await {
        let Some(reply) = client.timed(begin.clone(), from, &mut stats).await else {
            continue;
        };
        let Some(id) = find_session_id(&reply) else {
            *stats.errors.entry("no_session_id".into()).or_default() += 1;
            continue;
        };
        let echo = envelope(Some(continue_header(&id)), &client.plan.text);
        let ok_echo = client
            .timed(echo, Instant::now(), &mut stats)
            .await
            .is_some();
        let end = envelope(Some(end_header(&id)), "end");
        let ok_end = client
            .timed(end, Instant::now(), &mut stats)
            .await
            .is_some();
        let done = Instant::now();
        if ok_echo && ok_end && done >= client.plan.measure_start && done <= client.plan.end {
            stats.iterations += 1;
        }
    }
    stats
}

/// Scenario `raw`: the Echo envelope without a session header.
async fn run_raw(client: &mut Client) -> Stats {
    let body = envelope(None, &client.plan.text);
    let mut stats = Stats::new();
    let mut ticker = Ticker::new(&client.plan);
    while let Some(from) = ticker.next().await {
        client.timed(body.clone(), from, &mut stats).await;
    }
    stats
}

const TIMER_SLACK: Duration = Duration::from_millis(1);

/// Yields the time each operation is due: now (closed loop) or the next tick (open loop). None at the end.
struct Ticker {
    next: Instant,
    interval: Option<Duration>,
    end: Instant,
}

impl Ticker {
    fn new(plan: &Plan) -> Self {
        Ticker {
            next: Instant::now(),
            interval: plan.interval,
            end: plan.end,
        }
    }

    async fn next(&mut self) -> Option<Instant> {
        match self.interval {
            None => {
                let now = Instant::now();
                (now < self.end).then_some(now)
            }
            Some(iv) => {
                let due = self.next;
                if due >= self.end {
                    return None;
                }
                self.next += iv;
                // Tokio's timer rounds a deadline up to the next millisecond: aim 1 ms early, and if
                // woken before `due`, send at once and measure from the actual send instead.
                tokio::time::sleep_until(due.checked_sub(TIMER_SLACK).unwrap_or(due)).await;
                Some(due.min(Instant::now()))
            }
        }
    }
}

fn fmt_ns(ns: u64) -> String {
    if ns >= 1_000_000_000 {
        format!("{:.2}s", ns as f64 / 1e9)
    } else if ns >= 1_000_000 {
        format!("{:.2}ms", ns as f64 / 1e6)
    } else {
        format!("{:.1}us", ns as f64 / 1e3)
    }
}

fn json_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

async fn run(args: Args) -> Result<Stats, String> {
    let uri: Uri = args.url.parse().map_err(|e| format!("bad --url: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err("only http:// URLs are supported".into());
    }
    let host = uri.host().ok_or("no host in --url")?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let authority = uri
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_else(|| host.clone());
    let path = uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_else(|| "/".into());
    let interval = match args.rate {
        Some(r) if r > 0.0 => Some(Duration::from_secs_f64(args.connections as f64 / r)),
        Some(_) => return Err("--rate must be positive".into()),
        None => None,
    };
    let connections = args.connections.max(1);

    // Setup: connect every client (and begin its session for `continue`) before the clock starts.
    let placeholder = Instant::now();
    let mut plan = Plan {
        authority,
        addr: format!("{host}:{port}"),
        path,
        scenario: args.scenario,
        text: "x".repeat(args.body_bytes),
        measure_start: placeholder,
        end: placeholder,
        interval,
    };
    let setup_plan = std::sync::Arc::new(Plan {
        text: String::new(),
        ..clone_plan(&plan)
    });
    let mut setups = Vec::with_capacity(connections);
    for _ in 0..connections {
        let p = setup_plan.clone();
        setups.push(tokio::spawn(async move {
            let mut c = Client {
                plan: p,
                sender: None,
            };
            c.connect().await?;
            let session = if c.plan.scenario == Scenario::Continue {
                Some(c.begin().await?)
            } else {
                None
            };
            Ok::<_, String>((c.sender, session))
        }));
    }
    let mut ready = Vec::with_capacity(connections);
    for s in setups {
        ready.push(
            s.await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("setup: {e}"))?,
        );
    }

    let start = Instant::now();
    plan.measure_start = start + args.warmup;
    plan.end = plan.measure_start + args.duration;
    let plan = std::sync::Arc::new(plan);
    let mut tasks = Vec::with_capacity(connections);
    for (i, (sender, session)) in ready.into_iter().enumerate() {
        let plan = plan.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = Client { plan, sender };
            if let Some(iv) = client.plan.interval {
                // Spread the clients' tickers over one interval.
                tokio::time::sleep(iv.mul_f64(i as f64 / connections as f64)).await;
            }
            match client.plan.scenario {
                Scenario::Continue => run_continue(&mut client, session.expect("session")).await,
                Scenario::Churn => run_churn(&mut client).await,
                Scenario::Raw => run_raw(&mut client).await,
                Scenario::Transfer | Scenario::Cart => unreachable!("rejected in main"),
            }
        }));
    }
    let mut total = Stats::new();
    for t in tasks {
        total.merge(&t.await.map_err(|e| e.to_string())?);
    }
    Ok(total)
}

fn clone_plan(p: &Plan) -> Plan {
    Plan {
        authority: p.authority.clone(),
        addr: p.addr.clone(),
        path: p.path.clone(),
        scenario: p.scenario,
        text: p.text.clone(),
        measure_start: p.measure_start,
        end: p.end,
        interval: p.interval,
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.scenario {
        Scenario::Transfer => {
            eprintln!(
                "soapbench: scenario `transfer` arrives with transactions; not in this build"
            );
            return ExitCode::from(2);
        }
        Scenario::Cart => {
            eprintln!(
                "soapbench: scenario `cart` arrives with its server class; not in this build"
            );
            return ExitCode::from(2);
        }
        _ => {}
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("soapbench: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (scenario, connections, duration, warmup, rate, json, url, body_bytes, threads) = (
        args.scenario,
        args.connections,
        args.duration,
        args.warmup,
        args.rate,
        args.json,
        args.url.clone(),
        args.body_bytes,
        args.threads,
    );
    let stats = match rt.block_on(run(args)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("soapbench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let secs = duration.as_secs_f64();
    let scen = format!("{scenario:?}").to_lowercase();
    let errors: u64 = stats.errors.values().sum();
    let h = &stats.hist;
    let mode = rate.map_or("closed loop".to_string(), |r| format!("open loop at {r}/s"));
    println!(
        "soapbench {scen} {url}: {connections} connections, {threads} thread(s), {mode}, body {body_bytes} B, \
         warm-up {}, measured {}",
        humantime::format_duration(warmup),
        humantime::format_duration(duration)
    );
    println!(
        "requests     {} ({:.0} req/s), ok {}, errors {}",
        stats.requests,
        stats.requests as f64 / secs,
        stats.ok,
        errors
    );
    if scenario == Scenario::Churn {
        println!(
            "iterations   {} ({:.0} it/s)",
            stats.iterations,
            stats.iterations as f64 / secs
        );
    }
    for (k, v) in &stats.errors {
        println!("error        {k}: {v}");
    }
    println!(
        "latency      p50 {}  p99 {}  p99.9 {}  max {}",
        fmt_ns(h.quantile(0.5)),
        fmt_ns(h.quantile(0.99)),
        fmt_ns(h.quantile(0.999)),
        fmt_ns(h.max)
    );
    if json {
        let errs: Vec<String> = stats
            .errors
            .iter()
            .map(|(k, v)| format!("\"{}\":{v}", json_escape(k)))
            .collect();
        println!(
            "{{\"scenario\":\"{scen}\",\"url\":\"{}\",\"connections\":{connections},\"threads\":{threads},\
             \"rate\":{},\"body_bytes\":{body_bytes},\"warmup_s\":{},\"duration_s\":{secs},\"requests\":{},\
             \"ok\":{},\"req_per_s\":{:.1},\"iterations\":{},\"iter_per_s\":{:.1},\"errors\":{{{}}},\
             \"latency_us\":{{\"p50\":{:.1},\"p99\":{:.1},\"p99_9\":{:.1},\"max\":{:.1}}}}}",
            json_escape(&url),
            rate.map_or("null".into(), |r| r.to_string()),
            warmup.as_secs_f64(),
            stats.requests,
            stats.ok,
            stats.requests as f64 / secs,
            stats.iterations,
            stats.iterations as f64 / secs,
            errs.join(","),
            h.quantile(0.5) as f64 / 1e3,
            h.quantile(0.99) as f64 / 1e3,
            h.quantile(0.999) as f64 / 1e3,
            h.max as f64 / 1e3,
        );
    }
    if stats.requests == 0 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_contiguous_and_tight() {
        for v in [
            0u64,
            1,
            63,
            64,
            65,
            100,
            1000,
            123_456,
            9_999_999,
            u64::MAX / 2,
        ] {
            let i = Histogram::index(v);
            assert!(Histogram::upper(i) >= v, "{v}");
            if i > 0 {
                assert!(Histogram::upper(i - 1) < v, "{v}");
            }
            assert!(Histogram::upper(i) - v <= v / 32 + 1, "{v}");
        }
        let mut h = Histogram::new();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5);
        assert!((500_000..=516_000).contains(&p50), "{p50}");
        assert_eq!(h.quantile(1.0), 1_000_000);
    }

    #[test]
    fn parses_detail_code_and_session_id() {
        let f = b"<detail><detailCode>-1001</detailCode><detailString>x</detailString>";
        assert_eq!(find_detail_code(f), Some("-1001"));
        let r = br#"<nsk:Session xmlns:nsk="urn:compaq_nsk_oss_SoapHeader" SessionID="abc123"/>"#;
        assert_eq!(find_session_id(r).as_deref(), Some("abc123"));
    }
}
