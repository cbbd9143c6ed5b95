//! Printing a run: human lines and one JSON object line.

use super::load::{LoadConfig, LoadResult};

pub fn fmt_ns(ns: u64) -> String {
    if ns >= 1_000_000_000 {
        format!("{:.2}s", ns as f64 / 1e9)
    } else if ns >= 1_000_000 {
        format!("{:.2}ms", ns as f64 / 1e6)
    } else {
        format!("{:.1}us", ns as f64 / 1e3)
    }
}

pub fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// The human report of one run.
pub fn print_human(config: &LoadConfig, threads: usize, result: &LoadResult) {
    let stats = &result.stats;
    let h = &stats.hist;
    let mode = config
        .rate
        .map_or("closed loop".to_string(), |r| format!("open loop at {r}/s"));
    println!(
        "soapbench {} {}: {} connections, {threads} thread(s), {mode}, body {} B, warm-up {}, measured {}",
        config.scenario.name(),
        config.url,
        config.connections,
        config.body_bytes,
        humantime::format_duration(config.warmup),
        humantime::format_duration(config.duration)
    );
    println!(
        "requests     {} ({:.0} req/s), ok {}, errors {}",
        stats.requests,
        result.req_per_s(),
        stats.ok,
        stats.error_count()
    );
    if let Some(name) = config.scenario.iteration_name() {
        println!(
            "iterations   {} ({:.0} {name}/s)",
            stats.iterations,
            result.iter_per_s()
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
    for (name, h) in config.scenario.steps().iter().zip(&stats.steps) {
        println!(
            "step         {name:<17} {:>8} req  p50 {:>9}  p99 {:>9}  p99.9 {:>9}  max {:>9}",
            h.total,
            fmt_ns(h.quantile(0.5)),
            fmt_ns(h.quantile(0.99)),
            fmt_ns(h.quantile(0.999)),
            fmt_ns(h.max)
        );
    }
    if config.timeline {
        for (second, h) in stats.timeline.iter().enumerate() {
            println!(
                "second {second:>4}  {:>7} req  p50 {:>9}  p99 {:>9}  max {:>9}",
                h.total,
                fmt_ns(h.quantile(0.5)),
                fmt_ns(h.quantile(0.99)),
                fmt_ns(h.max)
            );
        }
    }
}

/// One JSON object line describing the run.
pub fn json_line(config: &LoadConfig, threads: usize, result: &LoadResult) -> String {
    let stats = &result.stats;
    let h = &stats.hist;
    let errs: Vec<String> = stats
        .errors
        .iter()
        .map(|(k, v)| format!("\"{}\":{v}", json_escape(k)))
        .collect();
    let steps: Vec<String> = config
        .scenario
        .steps()
        .iter()
        .zip(&stats.steps)
        .map(|(name, h)| {
            format!(
                "{{\"step\":\"{}\",\"requests\":{},\"p50_us\":{:.1},\"p99_us\":{:.1},\"max_us\":{:.1}}}",
                json_escape(name),
                h.total,
                h.quantile(0.5) as f64 / 1e3,
                h.quantile(0.99) as f64 / 1e3,
                h.max as f64 / 1e3
            )
        })
        .collect();
    format!(
        "{{\"scenario\":\"{}\",\"url\":\"{}\",\"connections\":{},\"threads\":{threads},\
         \"rate\":{},\"body_bytes\":{},\"warmup_s\":{},\"duration_s\":{},\"requests\":{},\
         \"ok\":{},\"req_per_s\":{:.1},\"iterations\":{},\"iter_per_s\":{:.1},\"errors\":{{{}}},\
         \"latency_us\":{{\"p50\":{:.1},\"p99\":{:.1},\"p99_9\":{:.1},\"max\":{:.1}}},\"steps\":[{}]}}",
        config.scenario.name(),
        json_escape(&config.url),
        config.connections,
        config.rate.map_or("null".into(), |r| r.to_string()),
        config.body_bytes,
        config.warmup.as_secs_f64(),
        config.duration.as_secs_f64(),
        stats.requests,
        stats.ok,
        result.req_per_s(),
        stats.iterations,
        result.iter_per_s(),
        errs.join(","),
        h.quantile(0.5) as f64 / 1e3,
        h.quantile(0.99) as f64 / 1e3,
        h.quantile(0.999) as f64 / 1e3,
        h.max as f64 / 1e3,
        steps.join(","),
    )
}

/// Microseconds with one decimal, for tables.
pub fn us(ns: u64) -> String {
    if ns >= 10_000_000 {
        format!("{:.1} ms", ns as f64 / 1e6)
    } else if ns >= 1_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else {
        format!("{} µs", (ns as f64 / 1e3).round())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_json() {
        assert_eq!(json_escape("a\"b\\c\n"), "a\\\"b\\\\c\\u000a");
        assert_eq!(fmt_ns(1_500), "1.5us");
        assert_eq!(fmt_ns(2_500_000), "2.50ms");
        assert_eq!(us(672_400), "672 µs");
    }
}
