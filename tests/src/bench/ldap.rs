//! `soapbench ldap`: a one-entry base search inside a DSML session, through the broker to an LDAP
//! directory, against the same search sent straight to the directory by a plain client (ldap3,
//! one connection per virtual client, bound as the same account): the floor. Side by side in one
//! run, the targets alternating round by round, with the same number of virtual clients.
//!
//! Each broker client begins one DSML session (its first batch pins a connection), then sends a
//! `batchRequest` holding one `searchRequest` (baseObject on `uid=ann,ou=people,…`, two attributes)
//! in a closed loop. The directory is `--ldap URL` (default `$BROKER_TEST_LDAP`), with the tree of
//! `scripts/slapd.sh` (`eval "$(bash scripts/slapd.sh start)"`).

use super::hist::Histogram;
use super::procs::{free_port, Launch};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct LdapArgs {
    /// The directory, e.g. ldap://127.0.0.1:389, with scripts/slapd.sh's tree. Default:
    /// $BROKER_TEST_LDAP.
    #[arg(long)]
    pub ldap: Option<String>,
    /// The DN both targets bind as.
    #[arg(long, default_value = "cn=admin,dc=example,dc=com")]
    pub bind_dn: String,
    #[arg(long, default_value = "secret")]
    pub bind_password: String,
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

const ENTRY: &str = "uid=ann,ou=people,dc=example,dc=com";
const AD_NS: &str = "urn:schema-microsoft-com:activedirectory:dsmlv2";
const DSML_NS: &str = "urn:oasis:names:tc:DSML:2:0:core";

struct Figures {
    ops: f64,
    p50: u64,
    p99: u64,
    errors: u64,
}

pub fn run(args: LdapArgs) -> Result<(), String> {
    let url = args
        .ldap
        .clone()
        .or_else(|| std::env::var("BROKER_TEST_LDAP").ok())
        .ok_or("soapbench ldap needs --ldap URL (or BROKER_TEST_LDAP; scripts/slapd.sh start)")?;
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .parent()
            .map(PathBuf::from)
            .ok_or("no directory for this executable")?,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let dir = tempfile::Builder::new()
        .prefix("soapbench-ldap-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let addr = format!("127.0.0.1:{}", free_port()?);
    let config = format!(
        r#"[broker]
listen = "{addr}"
data_dir = {data:?}
workers = {workers}

[log]
level = "warn"

[[endpoint]]
path = "/dsml"
dialect = "dsml"
session_timeout = "10m"
sessions_max = 0
sessions_max_per_ip = 0

[[server_class]]
name = "directory"
adapter = "ldap"
directory = {url:?}
bind_dn = {dn:?}
bind_password = {pw:?}
context = "sensitive"
min_workers = 1
max_workers = {max}
request_timeout = "30s"

[[service]]
name = "batchRequest"
endpoint = "/dsml"
server_class = "directory"
"#,
        data = dir.path().join("data").display().to_string(),
        workers = args.broker_workers,
        dn = args.bind_dn,
        pw = args.bind_password,
        max = args.connections + 2,
    );
    let config_path = dir.path().join("broker.toml");
    std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
    let launch = Launch {
        name: "broker-ldap",
        dir: dir.path(),
        cpus: None,
        marker: None,
    };
    let mut cmd = Command::new(bin_dir.join("broker"));
    cmd.arg("--config").arg(&config_path);
    let broker = super::procs::start_server(&launch, cmd, addr.clone())?;

    println!(
        "ldap: base search of one entry, {} virtual clients, {} rounds of {:?} (+{:?} warm-up)",
        args.connections, args.rounds, args.duration, args.warmup
    );
    let mut results: Vec<(&str, Figures)> = Vec::new();
    for round in 1..=args.rounds {
        let order: [&str; 2] = if round % 2 == 1 {
            ["ldap-direct", "broker-session"]
        } else {
            ["broker-session", "ldap-direct"]
        };
        for target in order {
            let f = match rt.block_on(async {
                match target {
                    "ldap-direct" => direct(&url, &args).await,
                    _ => through_broker(&addr, &args).await,
                }
            }) {
                Ok(f) => f,
                Err(e) => {
                    // Keep the broker's log for the post-mortem.
                    let kept = dir.keep();
                    return Err(format!("{e}\n(broker log kept under {})", kept.display()));
                }
            };
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
    let (bo, lo) = (
        mean("broker-session", &|f| f.ops),
        mean("ldap-direct", &|f| f.ops),
    );
    let (b50, l50) = (
        mean("broker-session", &|f| f.p50 as f64),
        mean("ldap-direct", &|f| f.p50 as f64),
    );
    let (b99, l99) = (
        mean("broker-session", &|f| f.p99 as f64),
        mean("ldap-direct", &|f| f.p99 as f64),
    );
    println!("| target | ops/s | p50 | p99 |\n| --- | --- | --- | --- |");
    println!(
        "| ldap-direct (floor) | {lo:.0} | {:.3} ms | {:.3} ms |",
        l50 / 1e6,
        l99 / 1e6
    );
    println!(
        "| broker-session | {bo:.0} | {:.3} ms | {:.3} ms |",
        b50 / 1e6,
        b99 / 1e6
    );
    println!(
        "ratios broker/floor: throughput {:.2}x, p50 {:.2}x, p99 {:.2}x",
        bo / lo.max(1.0),
        b50 / l50.max(1.0),
        b99 / l99.max(1.0)
    );
    drop(broker);
    Ok(())
}

/// One virtual client's closed loop: `op()` until warm-up plus duration have passed; the
/// operations that start after the warm-up are timed (successes) or counted (failures).
async fn measure<F, Fut>(warmup: Duration, duration: Duration, mut op: F) -> (Histogram, u64)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    let (measure_from, end) = (start + warmup, start + warmup + duration);
    let mut hist = Histogram::new();
    let mut errors = 0;
    loop {
        let t = Instant::now();
        if t >= end {
            return (hist, errors);
        }
        let ok = op().await;
        if t >= measure_from {
            if ok {
                hist.record(t.elapsed().as_nanos() as u64);
            } else {
                errors += 1;
            }
        }
    }
}

async fn closed_loop<F, Fut>(args: &LdapArgs, make: F) -> Result<Figures, String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(Histogram, u64), String>> + 'static,
{
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let tasks: Vec<_> = (0..args.connections)
                .map(|_| tokio::task::spawn_local(make()))
                .collect();
            let mut hist = Histogram::new();
            let mut errors = 0;
            for t in tasks {
                let (h, e) = t.await.map_err(|e| e.to_string())??;
                hist.merge(&h);
                errors += e;
            }
            Ok(Figures {
                ops: hist.total as f64 / args.duration.as_secs_f64(),
                p50: hist.quantile(0.50),
                p99: hist.quantile(0.99),
                errors,
            })
        })
        .await
}

async fn direct(url: &str, args: &LdapArgs) -> Result<Figures, String> {
    let (warmup, duration) = (args.warmup, args.duration);
    closed_loop(args, || {
        let (url, dn, pw) = (
            url.to_string(),
            args.bind_dn.clone(),
            args.bind_password.clone(),
        );
        async move {
            let (conn, mut ldap) = ldap3::LdapConnAsync::new(&url)
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            tokio::task::spawn_local(async move {
                let _ = conn.drive().await;
            });
            ldap.simple_bind(&dn, &pw)
                .await
                .and_then(|r| r.success())
                .map_err(|e| format!("bind: {e}"))?;
            let (hist, errors) = measure(warmup, duration, || {
                let mut ldap = ldap.clone();
                async move {
                    matches!(
                        ldap.search(ENTRY, ldap3::Scope::Base, "(objectClass=*)", vec!["cn", "mail"]).await,
                        Ok(ldap3::SearchResult(entries, r)) if r.rc == 0 && entries.len() == 1
                    )
                }
            })
            .await;
            let _ = ldap.unbind().await;
            Ok((hist, errors))
        }
    })
    .await
}

fn envelope(header: &str, body: &str) -> Bytes {
    Bytes::from(format!(
        "<se:Envelope xmlns:se=\"http://schemas.xmlsoap.org/soap/envelope/\"><se:Header>{header}</se:Header><se:Body>{body}</se:Body></se:Envelope>"
    ))
}

fn search_batch() -> String {
    format!(
        "<batchRequest xmlns=\"{DSML_NS}\"><searchRequest requestID=\"1\" dn=\"{ENTRY}\" scope=\"baseObject\" derefAliases=\"neverDerefAliases\"><filter><present name=\"objectClass\"/></filter><attributes><attribute name=\"cn\"/><attribute name=\"mail\"/></attributes></searchRequest></batchRequest>"
    )
}

async fn through_broker(addr: &str, args: &LdapArgs) -> Result<Figures, String> {
    let (warmup, duration) = (args.warmup, args.duration);
    closed_loop(args, || {
        let addr = addr.to_string();
        async move {
            let stream = tokio::net::TcpStream::connect(&addr)
                .await
                .map_err(|e| format!("{addr}: {e}"))?;
            let _ = stream.set_nodelay(true);
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
            tokio::task::spawn_local(conn);
            let mut post = |body: Bytes| {
                let req = hyper::Request::post("/dsml")
                    .header(hyper::header::HOST, addr.as_str())
                    .header(hyper::header::CONTENT_TYPE, "text/xml; charset=utf-8")
                    .header("SOAPAction", "\"#batchRequest\"")
                    .body(Full::new(body));
                let fut = req.map(|r| sender.send_request(r));
                async move {
                    let resp = fut
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
                    Ok::<_, String>((ok, body))
                }
            };
            let begin = format!("<ad:BeginSession xmlns:ad=\"{AD_NS}\"/>");
            let (ok, body) = post(envelope(&begin, &search_batch())).await?;
            let text = String::from_utf8_lossy(&body);
            let id = text
                .split("SessionID=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .filter(|_| ok)
                .ok_or_else(|| format!("BeginSession failed: {text}"))?
                .to_string();
            let header = format!("<ad:Session xmlns:ad=\"{AD_NS}\" ad:SessionID=\"{id}\"/>");
            let (hist, errors) = measure(warmup, duration, || {
                let reply = post(envelope(&header, &search_batch()));
                async move {
                    matches!(reply.await, Ok((true, body)) if body.windows(14).any(|w| w == b"code=\"0\" descr"))
                }
            })
            .await;
            let end = format!("<ad:EndSession xmlns:ad=\"{AD_NS}\" ad:SessionID=\"{id}\"/>");
            let _ = post(envelope(&end, &format!("<batchRequest xmlns=\"{DSML_NS}\"/>"))).await;
            Ok((hist, errors))
        }
    })
    .await
}
