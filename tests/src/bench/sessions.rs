//! `soapbench sessions`: the million-session measurement of issue 7.
//!
//! 1. Preload `--count` idle sessions (24 h idle timeout) into one store, directly through
//!    `cookie_store` while no broker runs ([`super::preload`]).
//! 2. Start two brokers with the http adapter to the same echo backend: one on an empty store, one
//!    on the preloaded store. Run `continue` against them alternately (`--rounds`), and read each
//!    broker's VmRSS and VmHWM from `/proc/PID/status`.
//! 3. Preload `--sweep-count` sessions into a third store with an idle timeout chosen so that they
//!    all expire about `--sweep-at` into the measured window of one long `continue` run
//!    (`--sweep-duration`), and compare p99 while the broker's sweeper deletes them with p99 before.

use std::time::Duration;

use super::compare::{machine_summary, run_line, run_one, Common, Env, Series};
use super::hist::Histogram;
use super::load::{self, RawPayload, Scenario};
use super::preload::{dir_size, preload};
use super::procs::{self, Memory, Server};
use super::report::us;

#[derive(clap::Args, Debug, Clone)]
pub struct SessionsArgs {
    #[command(flatten)]
    pub common: Common,
    /// Idle sessions in the full store.
    #[arg(long, default_value_t = 1_000_000)]
    pub count: u64,
    /// Sessions that expire during the sweep run (0: skip the sweep part).
    #[arg(long, default_value_t = 100_000)]
    pub sweep_count: u64,
    /// Measured duration of the sweep run.
    #[arg(long, default_value = "70s", value_parser = humantime::parse_duration)]
    pub sweep_duration: Duration,
    /// How far into the sweep run's measured window the sessions should expire.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub sweep_at: Duration,
    /// `store.sweep_rate` of the sweep run's broker (default: the broker's own default).
    #[arg(long)]
    pub sweep_rate: Option<usize>,
    /// Skip the empty-versus-full part (run only the sweep).
    #[arg(long)]
    pub skip_scale: bool,
}

const SWEEP_MARK: &str = "expired sessions swept";

fn mem(s: &Server) -> String {
    let m = s.memory();
    format!(
        "VmRSS {:.1} MiB, VmHWM {:.1} MiB",
        Memory::mib(m.rss_kib),
        Memory::mib(m.hwm_kib)
    )
}

pub fn sessions(args: SessionsArgs) -> Result<(), String> {
    let common = &args.common;
    let env = Env::new(common, "soapbench-sessions-")?;
    for line in machine_summary(None) {
        println!("{line}");
    }
    println!(
        "settings: {} connections, {} load thread(s), warm-up {}, measured {}, {} round(s); broker: \
         echo class on the http adapter, HTTP workers {}",
        common.connections,
        common.threads,
        humantime::format_duration(common.warmup),
        humantime::format_duration(common.duration),
        common.rounds,
        common
            .workers()
            .map_or("one per CPU".to_string(), |n| n.to_string()),
    );
    let backend = procs::start_backend(&env.broker, &env.launch("echo-backend", None))?;
    let rt = load::runtime(common.threads, env.client_cpus.clone())?;
    let mut preload_rate = 30_000.0;

    if !args.skip_scale {
        let full_dir = env.dir.path().join("broker-full");
        let empty_dir = env.dir.path().join("broker-empty");
        let done = preload(
            &full_dir.join("cookies"),
            args.count,
            "/soap",
            cookie_store::now_ms(),
            24 * 3600 * 1000,
            2,
        )?;
        preload_rate = done.rate();
        println!(
            "preloaded {} idle sessions in {:.1}s ({:.0}/s); store on disk {:.1} MiB",
            done.count,
            done.elapsed.as_secs_f64(),
            done.rate(),
            dir_size(&full_dir) as f64 / 1048576.0
        );
        let t0 = std::time::Instant::now();
        let full = procs::start_broker_http(
            &env.broker,
            &env.launch("broker-full", None),
            &backend.addr,
            &full_dir,
            common.workers(),
        )?;
        println!(
            "broker on the full store listening after {:.2}s; {}",
            t0.elapsed().as_secs_f64(),
            mem(&full)
        );
        let empty = procs::start_broker_http(
            &env.broker,
            &env.launch("broker-empty", None),
            &backend.addr,
            &empty_dir,
            common.workers(),
        )?;
        println!("broker on the empty store: {}", mem(&empty));
        let mut s_empty = Series::default();
        let mut s_full = Series::default();
        for round in 0..common.rounds.max(1) {
            let order: [(&Server, bool); 2] = if round % 2 == 0 {
                [(&empty, false), (&full, true)]
            } else {
                [(&full, true), (&empty, false)]
            };
            for (server, is_full) in order {
                std::thread::sleep(common.pause);
                let r = run_one(
                    &rt,
                    common,
                    server.url("/soap"),
                    Scenario::Continue,
                    RawPayload::Envelope,
                    false,
                )?;
                let label = if is_full {
                    format!("continue, {} sessions stored", args.count)
                } else {
                    "continue, empty store".to_string()
                };
                println!("{}", run_line(&label, round + 1, &r));
                if is_full { &mut s_full } else { &mut s_empty }
                    .runs
                    .push(r);
            }
        }
        println!();
        println!("| store | req/s | p50 | p99 | p99.9 | errors | broker VmRSS | broker VmHWM |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        for (name, s, b) in [
            ("empty".to_string(), &s_empty, &empty),
            (format!("{} idle sessions", args.count), &s_full, &full),
        ] {
            let m = b.memory();
            println!(
                "| {name} | {:.0} | {} | {} | {} | {} | {:.1} MiB | {:.1} MiB |",
                s.rps(),
                us(s.q(0.5)),
                us(s.q(0.99)),
                us(s.q(0.999)),
                s.errors(),
                Memory::mib(m.rss_kib),
                Memory::mib(m.hwm_kib)
            );
        }
        if s_empty.rps() > 0.0 {
            println!(
                "full / empty throughput {:.3}× (bar: within 10%, i.e. ≥ 0.90×); p99 {:.2}×; full-store \
                 broker VmHWM {:.1} MiB (bar: < 300 MiB)",
                s_full.rps() / s_empty.rps(),
                s_full.q(0.99) as f64 / s_empty.q(0.99).max(1) as f64,
                Memory::mib(full.memory().hwm_kib)
            );
        }
        drop((full, empty));
    }

    if args.sweep_count > 0 {
        println!();
        let dir = env.dir.path().join("broker-sweep");
        // Aim the expiry `sweep_at` into the measured window: preload time (at the rate just seen),
        // broker start and client setup (a generous 3 s), then the warm-up.
        let start_ms = cookie_store::now_ms();
        let preload_ms = (args.sweep_count as f64 / preload_rate.max(1000.0) * 1000.0) as u64;
        let expire_at = start_ms
            + preload_ms
            + 3000
            + common.warmup.as_millis() as u64
            + args.sweep_at.as_millis() as u64;
        let done = preload(
            &dir.join("cookies"),
            args.sweep_count,
            "/soap",
            start_ms,
            expire_at - start_ms,
            2,
        )?;
        println!(
            "preloaded {} sessions expiring at +{:.1}s in {:.1}s",
            done.count,
            (expire_at - start_ms) as f64 / 1000.0,
            done.elapsed.as_secs_f64()
        );
        let store_extra = args
            .sweep_rate
            .map_or(String::new(), |r| format!("sweep_rate = {r}"));
        let broker = procs::start_broker_http_with(
            &env.broker,
            &env.launch("broker-sweep", Some(SWEEP_MARK)),
            &backend.addr,
            &dir,
            common.workers(),
            &store_extra,
        )?;
        let sweep_common = Common {
            duration: args.sweep_duration,
            ..common.clone()
        };
        let r = run_one(
            &rt,
            &sweep_common,
            broker.url("/soap"),
            Scenario::Continue,
            RawPayload::Envelope,
            true,
        )?;
        println!("{}", run_line("continue during an expiry sweep", 1, &r));
        println!(
            "sweeper: store.sweep_rate = {}",
            args.sweep_rate
                .map_or("the broker's default".to_string(), |r| r.to_string())
        );
        let marks = broker.marks.lock().map(|m| m.clone()).unwrap_or_default();
        let swept: u64 = marks
            .iter()
            .filter_map(|(_, line)| {
                let rest = &line[line.find("expired=")? + "expired=".len()..];
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse::<u64>().ok()
            })
            .sum();
        let m0 = r.measure_start_unix_ms;
        let sec = |ms: u64| (ms.saturating_sub(m0) / 1000) as usize;
        let expiry_sec = sec(expire_at);
        println!(
            "sessions expire at second {} of the measured window ({} ms after its start)",
            expiry_sec,
            expire_at as i64 - m0 as i64
        );
        println!(
            "sweeper log lines: {}, sessions reported swept: {swept}",
            marks.len()
        );
        let (first, last) = match (marks.first(), marks.last()) {
            (Some(a), Some(b)) => (sec(a.0.saturating_sub(1000)), sec(b.0)),
            _ => (expiry_sec, expiry_sec),
        };
        if let (Some(a), Some(b)) = (marks.first(), marks.last()) {
            println!(
                "sweep seen from {:+.1}s to {:+.1}s of the measured window",
                (a.0 as i64 - m0 as i64) as f64 / 1000.0,
                (b.0 as i64 - m0 as i64) as f64 / 1000.0
            );
        }
        for (i, h) in r.stats.timeline.iter().enumerate() {
            let tag = if (first..=last).contains(&i) {
                "  sweep"
            } else {
                ""
            };
            println!(
                "  second {i:>3}: {:>7} req  p50 {:>9}  p99 {:>9}  max {:>9}{tag}",
                h.total,
                us(h.quantile(0.5)),
                us(h.quantile(0.99)),
                us(h.max)
            );
        }
        let merge = |range: std::ops::Range<usize>| {
            let mut h = Histogram::new();
            for s in r.stats.timeline.iter().take(range.end).skip(range.start) {
                h.merge(s);
            }
            h
        };
        let before = merge(0..first.min(expiry_sec));
        let during = merge(first..last + 1);
        let after = merge(last + 1..r.stats.timeline.len());
        let worst_second = r
            .stats
            .timeline
            .iter()
            .take(last + 1)
            .skip(first)
            .map(|h| h.quantile(0.99))
            .max()
            .unwrap_or(0);
        let secs = |n: usize| n.max(1) as f64;
        println!(
            "before the sweep: {:.0} req/s, p99 {}; during: {:.0} req/s, p99 {} (worst second {}); after: {:.0} req/s, p99 {}",
            before.total as f64 / secs(first.min(expiry_sec)),
            us(before.quantile(0.99)),
            during.total as f64 / secs(last + 1 - first),
            us(during.quantile(0.99)),
            us(worst_second),
            after.total as f64 / secs(r.stats.timeline.len().saturating_sub(last + 1)),
            us(after.quantile(0.99)),
        );
        if before.quantile(0.99) > 0 {
            println!(
                "sweep p99 / baseline p99: {:.2}× (worst second {:.2}×) (bar: ≤ 2×)",
                during.quantile(0.99) as f64 / before.quantile(0.99) as f64,
                worst_second as f64 / before.quantile(0.99) as f64
            );
        }
        println!("sweep broker: {}", mem(&broker));
        drop(broker);
    }
    drop(backend);
    env.finish(common.keep);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::procs::Launch;
    use std::time::Instant;

    /// Sessions the sweeper reported swept so far.
    fn swept(marks: &procs::Marks) -> u64 {
        marks
            .lock()
            .map(|m| {
                m.iter()
                    .filter_map(|(_, line)| {
                        let rest = &line[line.find("expired=")? + "expired=".len()..];
                        let digits: String =
                            rest.chars().take_while(char::is_ascii_digit).collect();
                        digits.parse::<u64>().ok()
                    })
                    .sum()
            })
            .unwrap_or(0)
    }

    /// `store.sweep_rate` bounds the sweeper: 300 sessions already expired at start, at 100 per
    /// second, are all deleted, and not in less than about three seconds (a lower bound only: a
    /// slow machine takes longer, never shorter).
    #[test]
    fn the_sweeper_keeps_to_its_rate() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("broker");
        let now = cookie_store::now_ms();
        preload(&data.join("cookies"), 300, "/soap", now - 60_000, 1_000, 2).unwrap();
        let launch = Launch {
            name: "broker",
            dir: dir.path(),
            cpus: None,
            marker: Some(SWEEP_MARK),
        };
        let started = Instant::now();
        // The backend is never called: the test sends no request.
        let broker = procs::start_broker_http_with(
            &broker_tests::broker::broker_exe(),
            &launch,
            "127.0.0.1:9",
            &data,
            None,
            "sweep_rate = 100\nsweep_interval = \"100ms\"",
        )
        .unwrap();
        let all_swept = broker_tests::wait::poll(Duration::from_secs(60), || {
            (swept(&broker.marks) >= 300).then_some(())
        });
        assert!(
            all_swept.is_some(),
            "only {} of 300 expired sessions swept after 60 s (log: {})",
            swept(&broker.marks),
            broker.log_hint()
        );
        let took = started.elapsed();
        assert_eq!(swept(&broker.marks), 300);
        assert!(
            took >= Duration::from_millis(2500),
            "300 sessions at 100/s were swept in {took:?}"
        );
    }
}
