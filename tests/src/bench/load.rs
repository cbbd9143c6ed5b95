//! The load itself: virtual clients on keep-alive HTTP/1.1 connections running one scenario,
//! closed loop (fixed concurrency) or open loop (fixed rate, latency from the scheduled send time).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::ValueEnum;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::Uri;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::hist::Histogram;

const NSK_NS: &str = "urn:compaq_nsk_oss_SoapHeader";
const SOAP11_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Each client begins its own session during setup, then calls Echo in a loop.
    Continue,
    /// Begin, one Echo, End per iteration (3 requests).
    Churn,
    /// The same Echo envelope with no session header (for proxies and the bare echo).
    Raw,
    /// One transaction per iteration on the client's session: Withdraw 1 from ledger account
    /// `A<client>` beginning the transaction, SavingsDeposit 1 on savings, commit (3 requests).
    Transfer,
    /// One dialog per iteration on the client's session: CartAdd ×3, CartList, CartCheckout.
    Cart,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Continue => "continue",
            Scenario::Churn => "churn",
            Scenario::Raw => "raw",
            Scenario::Transfer => "transfer",
            Scenario::Cart => "cart",
        }
    }

    /// Why this scenario cannot run in this build, if it cannot (every scenario runs today; kept
    /// so that a scenario added before the broker supports it can say so and exit with status 2).
    pub fn unavailable(self) -> Option<&'static str> {
        None
    }

    /// Whether the scenario counts iterations (several requests each), and what it calls one.
    pub fn iteration_name(self) -> Option<&'static str> {
        match self {
            Scenario::Churn => Some("iterations"),
            Scenario::Transfer => Some("transfers"),
            Scenario::Cart => Some("dialogs"),
            Scenario::Continue | Scenario::Raw => None,
        }
    }

    /// The steps of one iteration whose latencies are also reported one by one.
    pub fn steps(self) -> &'static [&'static str] {
        match self {
            Scenario::Transfer => &TRANSFER_STEPS,
            Scenario::Cart => &CART_STEPS,
            _ => &[],
        }
    }

    /// Whether each client begins its own session during setup.
    fn needs_session(self) -> bool {
        matches!(
            self,
            Scenario::Continue | Scenario::Transfer | Scenario::Cart
        )
    }
}

const TRANSFER_STEPS: [&str; 3] = ["Withdraw + begin", "SavingsDeposit", "commit"];
const CART_STEPS: [&str; 3] = ["CartAdd", "CartList", "CartCheckout"];
/// What setup deposits (outside any transaction, not measured) on each client's ledger account, so
/// that withdrawing 1 per transfer never goes below zero.
pub const TRANSFER_FUNDING: u64 = 1_000_000_000_000;

/// What the `raw` scenario sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RawPayload {
    /// The whole SOAP envelope (for the bare echo, or a proxy in front of a SOAP service).
    Envelope,
    /// Only the body element, with `X-Service: Echo`: exactly what the broker's http adapter posts
    /// to its backend (for nginx in front of `sample-server echo --http`).
    Element,
}

/// One load run.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub url: String,
    pub scenario: Scenario,
    pub connections: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// Open loop: operations per second in total. `None`: closed loop.
    pub rate: Option<f64>,
    pub body_bytes: usize,
    pub raw_payload: RawPayload,
    /// Keep one histogram per second of the measured window.
    pub timeline: bool,
}

#[derive(Clone, Debug)]
pub struct Stats {
    pub hist: Histogram,
    pub requests: u64,
    pub ok: u64,
    pub iterations: u64,
    pub errors: BTreeMap<String, u64>,
    /// One histogram per second of the measured window (empty unless asked for).
    pub timeline: Vec<Histogram>,
    /// One histogram per step of the scenario ([`Scenario::steps`]; empty for the others).
    pub steps: Vec<Histogram>,
}

impl Stats {
    fn new() -> Self {
        Stats {
            hist: Histogram::new(),
            requests: 0,
            ok: 0,
            iterations: 0,
            errors: BTreeMap::new(),
            timeline: Vec::new(),
            steps: Vec::new(),
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
        if self.timeline.len() < o.timeline.len() {
            self.timeline.resize_with(o.timeline.len(), Histogram::new);
        }
        for (a, b) in self.timeline.iter_mut().zip(&o.timeline) {
            a.merge(b);
        }
        if self.steps.len() < o.steps.len() {
            self.steps.resize_with(o.steps.len(), Histogram::new);
        }
        for (a, b) in self.steps.iter_mut().zip(&o.steps) {
            a.merge(b);
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct LoadResult {
    pub stats: Stats,
    /// Wall-clock start of the measured window (after warm-up), ms since the Unix epoch.
    pub measure_start_unix_ms: u64,
    pub duration: Duration,
}

impl LoadResult {
    pub fn req_per_s(&self) -> f64 {
        self.stats.requests as f64 / self.duration.as_secs_f64()
    }

    pub fn iter_per_s(&self) -> f64 {
        self.stats.iterations as f64 / self.duration.as_secs_f64()
    }
}

/// Shared, read-only description of the run.
struct Plan {
    authority: String,
    addr: String,
    path: String,
    scenario: Scenario,
    text: String,
    raw_payload: RawPayload,
    measure_start: Instant,
    end: Instant,
    timeline: bool,
    /// Per-client interval between operations (open loop), if any.
    interval: Option<Duration>,
}

enum Outcome {
    Ok(Bytes),
    /// Error kind, e.g. `http_503`, `fault_-1001`, `transport`.
    Err(String),
}

pub fn find_detail_code(body: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(body).ok()?;
    let start = s.find("<detailCode>")? + "<detailCode>".len();
    let len = s[start..].find('<')?;
    Some(s[start..start + len].trim())
}

pub fn find_session_id(body: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(body).ok()?;
    let start = s.find("SessionID=\"")? + "SessionID=\"".len();
    let len = s[start..].find('"')?;
    Some(s[start..start + len].to_string())
}

/// A SOAP 1.1 envelope around `body` (the Body's content, possibly empty).
fn soap(header: Option<String>, body: &str) -> Bytes {
    let mut s = String::with_capacity(body.len() + 400);
    let _ = write!(s, r#"<soapenv:Envelope xmlns:soapenv="{SOAP11_NS}">"#);
    if let Some(h) = header {
        let _ = write!(s, "<soapenv:Header>{h}</soapenv:Header>");
    }
    let _ = write!(s, "<soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>");
    Bytes::from(s)
}

fn envelope(header: Option<String>, text: &str) -> Bytes {
    soap(header, &format!("<Echo><text>{text}</text></Echo>"))
}

/// The body element as the broker hands it to a server class (inherited declarations copied on).
fn body_element(text: &str) -> Bytes {
    Bytes::from(format!(
        r#"<Echo xmlns:soapenv="{SOAP11_NS}"><text>{text}</text></Echo>"#
    ))
}

fn begin_header() -> String {
    format!(r#"<nsk:Session xmlns:nsk="{NSK_NS}" SessionCommand="Begin"/>"#)
}

fn continue_header(id: &str) -> String {
    format!(r#"<nsk:Session xmlns:nsk="{NSK_NS}" SessionID="{id}"/>"#)
}

fn end_header(id: &str) -> String {
    session_header(id, r#"SessionCommand="End""#)
}

/// A continue header with more attributes (`BeginNewTransaction="yes"`, ...).
fn session_header(id: &str, attributes: &str) -> String {
    format!(r#"<nsk:Session xmlns:nsk="{NSK_NS}" SessionID="{id}" {attributes}/>"#)
}

/// One virtual client: a keep-alive connection, re-opened after a transport error.
struct Client {
    plan: Arc<Plan>,
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
        let sender = match self.sender.as_mut() {
            Some(s) if !s.is_closed() => s,
            _ => {
                if let Err(e) = self.connect().await {
                    eprintln!("connect: {e}");
                    return Outcome::Err("connect".into());
                }
                match self.sender.as_mut() {
                    Some(s) => s,
                    None => return Outcome::Err("connect".into()),
                }
            }
        };
        if sender.ready().await.is_err() {
            self.sender = None;
            return Outcome::Err("transport".into());
        }
        let mut req = hyper::Request::post(&self.plan.path)
            .header(hyper::header::HOST, &self.plan.authority)
            .header(hyper::header::CONTENT_TYPE, "text/xml; charset=utf-8");
        req = if self.plan.scenario == Scenario::Raw && self.plan.raw_payload == RawPayload::Element
        {
            req.header("X-Service", "Echo")
        } else {
            req.header("SOAPAction", "\"\"")
        };
        let req = match req.body(Full::new(body)) {
            Ok(r) => r,
            Err(_) => return Outcome::Err("bad_request".into()),
        };
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
        self.timed_step(body, from, stats, None).await
    }

    /// [`Client::timed`], also recording the latency as step `step` of the scenario.
    async fn timed_step(
        &mut self,
        body: Bytes,
        from: Instant,
        stats: &mut Stats,
        step: Option<usize>,
    ) -> Option<Bytes> {
        let outcome = self.send(body).await;
        let done = Instant::now();
        let counted = self.in_window(done);
        if counted {
            let latency = done.duration_since(from).as_nanos() as u64;
            stats.requests += 1;
            stats.hist.record(latency);
            if let Some(step) = step {
                if stats.steps.len() <= step {
                    stats.steps.resize_with(step + 1, Histogram::new);
                }
                stats.steps[step].record(latency);
            }
            if self.plan.timeline {
                let second = done.duration_since(self.plan.measure_start).as_secs() as usize;
                if stats.timeline.len() <= second {
                    stats.timeline.resize_with(second + 1, Histogram::new);
                }
                stats.timeline[second].record(latency);
            }
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

    fn in_window(&self, t: Instant) -> bool {
        t >= self.plan.measure_start && t <= self.plan.end
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

/// The ledger (and savings) account of client `index`: one per client, so that transactions never
/// wait for one another's locks.
fn transfer_account(index: usize) -> String {
    format!("A{index}")
}

/// Setup of `transfer` (not measured): fund the client's ledger account outside any transaction.
async fn fund(client: &mut Client, index: usize) -> Result<(), String> {
    let account = transfer_account(index);
    let body = soap(
        None,
        &format!(
            "<Deposit><account>{account}</account><amount>{TRANSFER_FUNDING}</amount></Deposit>"
        ),
    );
    match client.send(body).await {
        Outcome::Ok(_) => Ok(()),
        Outcome::Err(k) => Err(format!("funding ledger account {account}: {k}")),
    }
}

/// After a failed step (not measured): abort whatever transaction the session still has, and begin
/// a new session when the old one is gone (a backend failing under a transaction ends it).
async fn recover_transfer(client: &mut Client, session: &mut String) {
    let abort = soap(
        Some(session_header(
            session,
            r#"CurrentTransactionCommand="Abort""#,
        )),
        "",
    );
    if let Outcome::Err(kind) = client.send(abort).await {
        if kind == "fault_-1001" {
            if let Ok(id) = client.begin().await {
                *session = id;
            }
        }
    }
}

/// Scenario `transfer`: per iteration, on the client's session, Withdraw 1 from ledger account
/// `A<index>` beginning a transaction, SavingsDeposit 1 to savings account `A<index>` in it, and
/// commit it with `CurrentTransactionCommand="End"` and an empty body (a two-phase commit: two
/// participants).
async fn run_transfer(client: &mut Client, mut session: String, index: usize) -> Stats {
    let account = transfer_account(index);
    let withdraw = format!("<Withdraw><account>{account}</account><amount>1</amount></Withdraw>");
    let deposit =
        format!("<SavingsDeposit><account>{account}</account><amount>1</amount></SavingsDeposit>");
    let mut stats = Stats::new();
    let mut ticker = Ticker::new(&client.plan);
    while let Some(from) = ticker.next().await {
        let steps = [
            (r#"BeginNewTransaction="yes""#, withdraw.as_str()),
            ("", deposit.as_str()),
            (r#"CurrentTransactionCommand="End""#, ""),
        ];
        let mut ok = true;
        for (step, (attributes, body)) in steps.into_iter().enumerate() {
            let request = soap(Some(session_header(&session, attributes)), body);
            let sent = if step == 0 { from } else { Instant::now() };
            if client
                .timed_step(request, sent, &mut stats, Some(step))
                .await
                .is_none()
            {
                ok = false;
                break;
            }
        }
        if !ok {
            recover_transfer(client, &mut session).await;
        } else if client.in_window(Instant::now()) {
            stats.iterations += 1;
        }
    }
    // Clean up, not measured (End would commit a transaction left open; none is).
    let _ = client
        .send(envelope(Some(end_header(&session)), "end"))
        .await;
    stats
}

/// Scenario `cart`: per iteration one dialog on the client's session: CartAdd of items i1, i2, i3
/// (qty 1; the first opens the dialog), CartList, CartCheckout (the worker ends the dialog).
async fn run_cart(client: &mut Client, session: String) -> Stats {
    let header = continue_header(&session);
    let calls: Vec<(usize, Bytes)> = (1..=3)
        .map(|i| {
            let add = format!("<CartAdd><item>i{i}</item><qty>1</qty></CartAdd>");
            (0, soap(Some(header.clone()), &add))
        })
        .chain([
            (1, soap(Some(header.clone()), "<CartList/>")),
            (2, soap(Some(header.clone()), "<CartCheckout/>")),
        ])
        .collect();
    let abort = soap(
        Some(session_header(
            &session,
            r#"SessionCommand="AbortSubsession""#,
        )),
        "",
    );
    let mut stats = Stats::new();
    let mut ticker = Ticker::new(&client.plan);
    while let Some(from) = ticker.next().await {
        let mut ok = true;
        for (i, (step, request)) in calls.iter().enumerate() {
            let sent = if i == 0 { from } else { Instant::now() };
            if client
                .timed_step(request.clone(), sent, &mut stats, Some(*step))
                .await
                .is_none()
            {
                ok = false;
                break;
            }
        }
        if !ok {
            // Not measured: close a dialog the failure may have left open (-1015 when none is).
            let _ = client.send(abort.clone()).await;
        } else if client.in_window(Instant::now()) {
            stats.iterations += 1;
        }
    }
    let _ = client
        .send(envelope(Some(end_header(&session)), "end"))
        .await;
    stats
}

/// Scenario `raw`: the Echo envelope (or body element) without a session header.
async fn run_raw(client: &mut Client) -> Stats {
    let body = match client.plan.raw_payload {
        RawPayload::Envelope => envelope(None, &client.plan.text),
        RawPayload::Element => body_element(&client.plan.text),
    };
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

/// Run `config` on the current tokio runtime.
pub async fn run(config: &LoadConfig) -> Result<LoadResult, String> {
    if let Some(why) = config.scenario.unavailable() {
        return Err(why.to_string());
    }
    let uri: Uri = config.url.parse().map_err(|e| format!("bad --url: {e}"))?;
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
    let connections = config.connections.max(1);
    let interval = match config.rate {
        Some(r) if r > 0.0 && r.is_finite() => {
            Some(Duration::from_secs_f64(connections as f64 / r))
        }
        Some(_) => return Err("--rate must be positive".into()),
        None => None,
    };

    let placeholder = Instant::now();
    let setup_plan = Arc::new(Plan {
        authority: authority.clone(),
        addr: format!("{host}:{port}"),
        path: path.clone(),
        scenario: config.scenario,
        text: String::new(),
        raw_payload: config.raw_payload,
        measure_start: placeholder,
        end: placeholder,
        timeline: false,
        interval,
    });
    // Setup: connect every client (and begin its session for `continue`) before the clock starts.
    let mut setups = Vec::with_capacity(connections);
    for index in 0..connections {
        let p = setup_plan.clone();
        setups.push(tokio::spawn(async move {
            let mut c = Client {
                plan: p,
                sender: None,
            };
            c.connect().await?;
            if c.plan.scenario == Scenario::Transfer {
                fund(&mut c, index).await?;
            }
            let session = if c.plan.scenario.needs_session() {
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
    let measure_start = start + config.warmup;
    let measure_start_unix_ms = (SystemTime::now() + config.warmup)
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let plan = Arc::new(Plan {
        authority,
        addr: setup_plan.addr.clone(),
        path,
        scenario: config.scenario,
        text: "x".repeat(config.body_bytes),
        raw_payload: config.raw_payload,
        measure_start,
        end: measure_start + config.duration,
        timeline: config.timeline,
        interval,
    });
    let mut tasks = Vec::with_capacity(connections);
    for (i, (sender, session)) in ready.into_iter().enumerate() {
        let plan = plan.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = Client { plan, sender };
            if let Some(iv) = client.plan.interval {
                // Spread the clients' tickers over one interval.
                tokio::time::sleep(iv.mul_f64(i as f64 / connections as f64)).await;
            }
            match (client.plan.scenario, session) {
                (Scenario::Continue, Some(session)) => run_continue(&mut client, session).await,
                (Scenario::Churn, _) => run_churn(&mut client).await,
                (Scenario::Raw, _) => run_raw(&mut client).await,
                (Scenario::Transfer, Some(session)) => run_transfer(&mut client, session, i).await,
                (Scenario::Cart, Some(session)) => run_cart(&mut client, session).await,
                _ => Stats::new(),
            }
        }));
    }
    let mut total = Stats::new();
    for t in tasks {
        total.merge(&t.await.map_err(|e| e.to_string())?);
    }
    Ok(LoadResult {
        stats: total,
        measure_start_unix_ms,
        duration: config.duration,
    })
}

/// Parse a CPU list as taskset takes it: `1`, `0-1`, `0,2-3`.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("bad CPU list {s:?} (expected e.g. 1, 0-1 or 0,2)");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().map_err(|_| bad())?),
        }
    }
    if cpus.is_empty() {
        return Err(format!("empty CPU list {s:?}"));
    }
    Ok(cpus)
}

/// Pin the calling thread to `cpus` (no privileges needed for one's own threads).
pub fn pin_current_thread(cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity(0, ...) act on
    // that local set and on the calling thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            if c < libc::CPU_SETSIZE as usize {
                libc::CPU_SET(c, &mut set);
            }
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A tokio runtime for the load generator: `threads` workers, pinned to `cpus` if given.
pub fn runtime(
    threads: usize,
    cpus: Option<Vec<usize>>,
) -> Result<tokio::runtime::Runtime, String> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(threads.max(1)).enable_all();
    if let Some(cpus) = cpus {
        builder.on_thread_start(move || {
            if let Err(e) = pin_current_thread(&cpus) {
                eprintln!("soapbench: cannot pin a load thread to CPUs {cpus:?}: {e}");
            }
        });
    }
    builder.build().map_err(|e| format!("runtime: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_detail_code_and_session_id() {
        let f = b"<detail><detailCode>-1001</detailCode><detailString>x</detailString>";
        assert_eq!(find_detail_code(f), Some("-1001"));
        let r = br#"<nsk:Session xmlns:nsk="urn:compaq_nsk_oss_SoapHeader" SessionID="abc123"/>"#;
        assert_eq!(find_session_id(r).as_deref(), Some("abc123"));
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("1"), Ok(vec![1]));
        assert_eq!(parse_cpu_list("0-1"), Ok(vec![0, 1]));
        assert_eq!(parse_cpu_list("0,2-3"), Ok(vec![0, 2, 3]));
        assert!(parse_cpu_list("x").is_err());
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("").is_err());
    }

    #[test]
    fn payloads() {
        let e = body_element("ab");
        assert_eq!(
            &e[..],
            br#"<Echo xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><text>ab</text></Echo>"#
        );
        let env = envelope(Some(continue_header("S1")), "ab");
        let s = std::str::from_utf8(&env).unwrap_or_default();
        assert!(s.contains(r#"SessionID="S1""#) && s.contains("<text>ab</text>"));
        let commit = soap(
            Some(session_header("S1", r#"CurrentTransactionCommand="End""#)),
            "",
        );
        assert_eq!(
            &commit[..],
            br#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Header><nsk:Session xmlns:nsk="urn:compaq_nsk_oss_SoapHeader" SessionID="S1" CurrentTransactionCommand="End"/></soapenv:Header><soapenv:Body></soapenv:Body></soapenv:Envelope>"#
        );
    }

    #[test]
    fn every_scenario_is_available() {
        for s in Scenario::value_variants() {
            assert_eq!(s.unavailable(), None, "{}", s.name());
        }
        assert_eq!(Scenario::Transfer.steps().len(), 3);
        assert_eq!(Scenario::Cart.iteration_name(), Some("dialogs"));
        assert_eq!(transfer_account(7), "A7");
    }
}
