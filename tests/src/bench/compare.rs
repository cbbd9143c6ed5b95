//! `soapbench compare`: the side-by-side comparison of issue 7.
//!
//! Starts, under one temporary directory, the HTTP echo backend (`broker sample-server echo --http`),
//! nginx (one worker, upstream keepalive, no access log) proxying to it, a broker whose `Echo` class
//! uses the http adapter to that same backend, a broker on its embedded default (the process
//! adapter), and the bare actix-web echo. Then it runs the targets one after the other, rotating
//! their order every round, with the same client settings, and prints every figure, the medians
//! and the ratios the bars are stated in.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ValueEnum;

use super::load::{self, LoadConfig, LoadResult, RawPayload, Scenario};
use super::procs::{self, Launch, Memory, Server};
use super::report::{json_escape, us};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Target {
    /// `raw` (the body element) through nginx to the HTTP echo backend.
    NginxRaw,
    /// `continue` through the broker, http adapter to the same backend.
    HttpContinue,
    /// `continue` through the broker, process adapter (embedded default).
    ProcessContinue,
    /// `raw` (the envelope) against the bare actix-web echo: the ceiling.
    BareRaw,
    /// `churn` through the broker, http adapter.
    HttpChurn,
    /// `churn` through the broker, process adapter.
    ProcessChurn,
}

impl Target {
    pub fn label(self) -> &'static str {
        match self {
            Target::NginxRaw => "nginx → HTTP echo, raw",
            Target::HttpContinue => "broker (http adapter), continue",
            Target::ProcessContinue => "broker (process adapter), continue",
            Target::BareRaw => "bare actix-web echo, raw",
            Target::HttpChurn => "broker (http adapter), churn",
            Target::ProcessChurn => "broker (process adapter), churn",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Target::NginxRaw => "nginx-raw",
            Target::HttpContinue => "http-continue",
            Target::ProcessContinue => "process-continue",
            Target::BareRaw => "bare-raw",
            Target::HttpChurn => "http-churn",
            Target::ProcessChurn => "process-churn",
        }
    }
}

/// Settings shared by `compare` and `sessions`.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// Virtual clients (keep-alive connections), the same for every target.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Measured duration of each run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Warm-up of each run, excluded from the figures.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Rounds; the order of the targets rotates every round.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Tokio worker threads of the load generator.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Size of the Echo text.
    #[arg(long, default_value_t = 1000)]
    pub body_bytes: usize,
    /// Pause between runs.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub pause: Duration,
    /// Where `broker` and `examples/bare_echo` are (default: the directory of this executable).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// CPUs for the load generator's threads (taskset syntax: 1, 0-1, 0,2). Default: not pinned.
    #[arg(long)]
    pub client_cpus: Option<String>,
    /// CPUs for the servers (and their children). Default: not pinned.
    #[arg(long)]
    pub server_cpus: Option<String>,
    /// Keep the temporary directory (configurations, logs, stores) and print where it is.
    #[arg(long)]
    pub keep: bool,
    /// HTTP worker threads of every broker started (`broker.workers`); 0: the broker's default
    /// (one per CPU). One by default, as nginx runs one worker process here.
    #[arg(long, default_value_t = 1)]
    pub broker_workers: usize,
}

impl Common {
    /// `broker.workers` for the brokers started, `None` for the broker's own default.
    pub fn workers(&self) -> Option<usize> {
        (self.broker_workers > 0).then_some(self.broker_workers)
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    #[command(flatten)]
    pub common: Common,
    /// The nginx executable.
    #[arg(long, default_value = "nginx")]
    pub nginx: PathBuf,
    /// Targets to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "nginx-raw,http-continue,process-continue,bare-raw,http-churn,process-churn"
    )]
    pub targets: Vec<Target>,
    /// Also print one JSON line per run.
    #[arg(long)]
    pub json: bool,
}

/// Paths and pinning resolved from [`Common`].
pub struct Env {
    pub broker: PathBuf,
    pub bare_echo: PathBuf,
    pub client_cpus: Option<Vec<usize>>,
    pub server_cpus: Option<Vec<usize>>,
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new(common: &Common, prefix: &str) -> Result<Env, String> {
        let bin_dir = match &common.bin_dir {
            Some(d) => d.clone(),
            None => std::env::current_exe()
                .map_err(|e| format!("locating soapbench: {e}"))?
                .parent()
                .map(Path::to_path_buf)
                .ok_or("soapbench has no parent directory")?,
        };
        let broker = bin_dir.join("broker");
        let bare_echo = bin_dir.join("examples").join("bare_echo");
        for p in [&broker, &bare_echo] {
            if !p.is_file() {
                return Err(format!(
                    "{} not found: build with `cargo build --release -p broker --bins --examples` \
                     or pass --bin-dir (scripts/bench-compare.sh does both)",
                    p.display()
                ));
            }
        }
        let cpus = |s: &Option<String>| s.as_deref().map(load::parse_cpu_list).transpose();
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        Ok(Env {
            broker,
            bare_echo,
            client_cpus: cpus(&common.client_cpus)?,
            server_cpus: cpus(&common.server_cpus)?,
            dir,
        })
    }

    pub fn launch<'a>(&'a self, name: &'a str, marker: Option<&'static str>) -> Launch<'a> {
        Launch {
            name,
            dir: self.dir.path(),
            cpus: self.server_cpus.as_deref(),
            marker,
        }
    }

    /// Keep the directory if asked; say where it is.
    pub fn finish(self, keep: bool) {
        if keep {
            let path = self.dir.keep();
            println!("kept {}", path.display());
        }
    }
}

/// Find `name` on PATH, then in /usr/sbin and /sbin (Debian puts nginx there).
pub fn find_program(name: &Path) -> Result<PathBuf, String> {
    if name.components().count() > 1 {
        return Ok(name.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin".into(), "/sbin".into()]);
    for d in dirs {
        let p = d.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(format!(
        "{} not found (install it: apt-get install nginx-light, or pass --nginx PATH)",
        name.display()
    ))
}

/// One run with the shared settings.
pub fn run_one(
    rt: &tokio::runtime::Runtime,
    common: &Common,
    url: String,
    scenario: Scenario,
    raw_payload: RawPayload,
    timeline: bool,
) -> Result<LoadResult, String> {
    let config = LoadConfig {
        url,
        scenario,
        connections: common.connections,
        duration: common.duration,
        warmup: common.warmup,
        rate: None,
        body_bytes: common.body_bytes,
        raw_payload,
        timeline,
    };
    rt.block_on(load::run(&config))
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The per-round figures of one target.
#[derive(Default)]
pub struct Series {
    pub runs: Vec<LoadResult>,
}

impl Series {
    pub fn rps(&self) -> f64 {
        median(self.runs.iter().map(LoadResult::req_per_s).collect())
    }
    pub fn ips(&self) -> f64 {
        median(self.runs.iter().map(LoadResult::iter_per_s).collect())
    }
    pub fn q(&self, q: f64) -> u64 {
        median(
            self.runs
                .iter()
                .map(|r| r.stats.hist.quantile(q) as f64)
                .collect(),
        ) as u64
    }
    pub fn errors(&self) -> u64 {
        self.runs.iter().map(|r| r.stats.error_count()).sum()
    }
    pub fn error_kinds(&self) -> String {
        let mut all = std::collections::BTreeMap::<String, u64>::new();
        for r in &self.runs {
            for (k, v) in &r.stats.errors {
                *all.entry(k.clone()).or_default() += v;
            }
        }
        all.iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub fn run_line(label: &str, round: usize, r: &LoadResult) -> String {
    let h = &r.stats.hist;
    format!(
        "round {round}  {label:<36} {:>9.0} req/s  p50 {:>9}  p99 {:>9}  p99.9 {:>9}  errors {}",
        r.req_per_s(),
        us(h.quantile(0.5)),
        us(h.quantile(0.99)),
        us(h.quantile(0.999)),
        r.stats.error_count()
    )
}

/// The CPU model as `lscpu` names it (`model name` in `/proc/cpuinfo`): every figure printed
/// names the machine it was measured on, since a ratio on one CPU says nothing of another.
pub fn cpu_model() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into())
}

pub fn machine_summary(nginx: Option<&Path>) -> Vec<String> {
    let mut lines = Vec::new();
    let model = cpu_model();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or("?".into(), |kib| {
            format!("{:.1} GiB", kib as f64 / 1048576.0)
        });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    lines.push(format!(
        "machine: {cpus} CPUs ({model}), {mem} RAM, Linux {}",
        kernel.trim()
    ));
    if let Ok(l) = std::fs::read_to_string("/proc/loadavg") {
        lines.push(format!("load average before: {}", l.trim()));
    }
    if let Some(n) = nginx {
        lines.push(format!("nginx: {}", procs::version_of(n, "-v")));
    }
    lines
}

fn mem_line(s: &Server) -> String {
    let m = s.memory();
    let c = s.children_memory();
    let mut line = format!(
        "{:<16} VmRSS {:>7.1} MiB  VmHWM {:>7.1} MiB",
        s.name,
        Memory::mib(m.rss_kib),
        Memory::mib(m.hwm_kib)
    );
    if c.rss_kib > 0 {
        line.push_str(&format!(
            "  (+ children VmRSS {:.1} MiB)",
            Memory::mib(c.rss_kib)
        ));
    }
    line
}

pub fn compare(args: CompareArgs) -> Result<(), String> {
    let common = &args.common;
    let env = Env::new(common, "soapbench-compare-")?;
    let needs = |t: Target| args.targets.contains(&t);
    let nginx_path = if needs(Target::NginxRaw) {
        Some(find_program(&args.nginx)?)
    } else {
        None
    };
    for line in machine_summary(nginx_path.as_deref()) {
        println!("{line}");
    }
    let cpu = cpu_model();
    println!(
        "settings: {} connections, {} load thread(s), warm-up {}, measured {}, {} round(s), body {} B, \
         client CPUs {}, server CPUs {}, broker HTTP workers {}",
        common.connections,
        common.threads,
        humantime::format_duration(common.warmup),
        humantime::format_duration(common.duration),
        common.rounds,
        common.body_bytes,
        common.client_cpus.as_deref().unwrap_or("any"),
        common.server_cpus.as_deref().unwrap_or("any"),
        common
            .workers()
            .map_or("one per CPU".to_string(), |n| n.to_string()),
    );

    let backend = procs::start_backend(&env.broker, &env.launch("echo-backend", None))?;
    let nginx = match &nginx_path {
        Some(n) => Some(procs::start_nginx(
            n,
            &env.launch("nginx", None),
            &backend.addr,
        )?),
        None => None,
    };
    let http_broker = if needs(Target::HttpContinue) || needs(Target::HttpChurn) {
        Some(procs::start_broker_http(
            &env.broker,
            &env.launch("broker-http", None),
            &backend.addr,
            &env.dir.path().join("broker-http"),
            common.workers(),
        )?)
    } else {
        None
    };
    let process_broker = if needs(Target::ProcessContinue) || needs(Target::ProcessChurn) {
        Some(procs::start_broker_default(
            &env.broker,
            &env.launch("broker-process", None),
            &env.dir.path().join("broker-process"),
            common.workers(),
        )?)
    } else {
        None
    };
    let bare = if needs(Target::BareRaw) {
        Some(procs::start_bare_echo(
            &env.bare_echo,
            &env.launch("bare-echo", None),
        )?)
    } else {
        None
    };
    let url = |s: &Option<Server>, path: &str| s.as_ref().map(|s| s.url(path));

    let rt = load::runtime(common.threads, env.client_cpus.clone())?;
    let mut targets = args.targets.clone();
    targets.dedup();
    let mut series: Vec<(Target, Series)> =
        targets.iter().map(|t| (*t, Series::default())).collect();
    for round in 0..common.rounds.max(1) {
        let n = series.len();
        for k in 0..n {
            let idx = (k + round) % n;
            let target = series[idx].0;
            let (url, scenario, payload) = match target {
                Target::NginxRaw => (url(&nginx, "/echo"), Scenario::Raw, RawPayload::Element),
                Target::HttpContinue => (
                    url(&http_broker, "/soap"),
                    Scenario::Continue,
                    RawPayload::Envelope,
                ),
                Target::HttpChurn => (
                    url(&http_broker, "/soap"),
                    Scenario::Churn,
                    RawPayload::Envelope,
                ),
                Target::ProcessContinue => (
                    url(&process_broker, "/soap"),
                    Scenario::Continue,
                    RawPayload::Envelope,
                ),
                Target::ProcessChurn => (
                    url(&process_broker, "/soap"),
                    Scenario::Churn,
                    RawPayload::Envelope,
                ),
                Target::BareRaw => (url(&bare, "/echo"), Scenario::Raw, RawPayload::Envelope),
            };
            let url = url.ok_or("internal: a target's server was not started")?;
            std::thread::sleep(common.pause);
            let result =
                run_one(&rt, common, url.clone(), scenario, payload, false).map_err(|e| {
                    let logs: Vec<String> = [&backend]
                        .into_iter()
                        .chain(nginx.as_ref())
                        .chain(http_broker.as_ref())
                        .chain(process_broker.as_ref())
                        .chain(bare.as_ref())
                        .map(Server::log_hint)
                        .collect();
                    format!(
                        "{}: {e} (run with --keep to keep the {})",
                        target.label(),
                        logs.join(", ")
                    )
                })?;
            println!("{}", run_line(target.label(), round + 1, &result));
            if args.json {
                println!(
                    "{{\"target\":\"{}\",\"cpu\":\"{}\",\"round\":{},\"url\":\"{}\",\"req_per_s\":{:.1},\"iter_per_s\":{:.1},\
                     \"errors\":{},\"latency_us\":{{\"p50\":{:.1},\"p99\":{:.1},\"p99_9\":{:.1},\"max\":{:.1}}}}}",
                    target.key(),
                    json_escape(&cpu),
                    round + 1,
                    json_escape(&url),
                    result.req_per_s(),
                    result.iter_per_s(),
                    result.stats.error_count(),
                    result.stats.hist.quantile(0.5) as f64 / 1e3,
                    result.stats.hist.quantile(0.99) as f64 / 1e3,
                    result.stats.hist.quantile(0.999) as f64 / 1e3,
                    result.stats.hist.max as f64 / 1e3,
                );
            }
            series[idx].1.runs.push(result);
        }
    }

    println!();
    println!("Medians over {} round(s):", common.rounds.max(1));
    println!();
    println!("| target | req/s | iterations/s | p50 | p99 | p99.9 | errors |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (t, s) in &series {
        let its = if matches!(t, Target::HttpChurn | Target::ProcessChurn) {
            format!("{:.0}", s.ips())
        } else {
            "–".into()
        };
        let errs = if s.errors() == 0 {
            "0".to_string()
        } else {
            format!("{} ({})", s.errors(), s.error_kinds())
        };
        println!(
            "| {} | {:.0} | {its} | {} | {} | {} | {errs} |",
            t.label(),
            s.rps(),
            us(s.q(0.5)),
            us(s.q(0.99)),
            us(s.q(0.999)),
        );
    }
    let get = |t: Target| series.iter().find(|(x, _)| *x == t).map(|(_, s)| s);
    println!();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("Ratios (of the medians), measured on {cpu} ({cpus} CPUs):");
    let ratio = |label: &str, a: Option<f64>, b: Option<f64>, bar: &str| {
        if let (Some(a), Some(b)) = (a, b) {
            if b > 0.0 {
                println!("  {label:<58} {:>6.2}×   (bar: {bar})", a / b);
            }
        }
    };
    let rps = |t| get(t).map(Series::rps);
    let p99 = |t| get(t).map(|s| s.q(0.99) as f64);
    ratio(
        "continue-http / nginx-raw throughput",
        rps(Target::HttpContinue),
        rps(Target::NginxRaw),
        "≥ 1.2",
    );
    ratio(
        "continue-http / nginx-raw p99",
        p99(Target::HttpContinue),
        p99(Target::NginxRaw),
        "≤ 1.2",
    );
    ratio(
        "continue-process / nginx-raw throughput",
        rps(Target::ProcessContinue),
        rps(Target::NginxRaw),
        "≥ 1.0",
    );
    ratio(
        "continue-process / nginx-raw p99",
        p99(Target::ProcessContinue),
        p99(Target::NginxRaw),
        "report",
    );
    ratio(
        "churn-http / continue-http (requests/s)",
        rps(Target::HttpChurn),
        rps(Target::HttpContinue),
        "≥ 0.5",
    );
    ratio(
        "churn-http / continue-http (iterations/s, 3 requests each)",
        get(Target::HttpChurn).map(Series::ips),
        rps(Target::HttpContinue),
        "report",
    );
    ratio(
        "churn-process / continue-process (requests/s)",
        rps(Target::ProcessChurn),
        rps(Target::ProcessContinue),
        "≥ 0.5",
    );
    ratio(
        "nginx-raw / bare-raw throughput",
        rps(Target::NginxRaw),
        rps(Target::BareRaw),
        "report",
    );
    ratio(
        "continue-http / bare-raw throughput (the ceiling)",
        rps(Target::HttpContinue),
        rps(Target::BareRaw),
        "report",
    );

    println!();
    println!("Memory after the runs:");
    for s in [&backend]
        .into_iter()
        .chain(nginx.as_ref())
        .chain(http_broker.as_ref())
        .chain(process_broker.as_ref())
        .chain(bare.as_ref())
    {
        println!("  {}", mem_line(s));
    }
    if let Ok(l) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average after: {}", l.trim());
    }
    drop((bare, process_broker, http_broker, nginx, backend));
    env.finish(common.keep);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), 0.0);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
