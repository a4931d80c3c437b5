//! The results as JSON (`results.json`), and the chart drawn from it by
//! `tests/bench/chart.py` (`chart.png`).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use super::results::{FloodMeasurement, Measurement, Results};
use super::targets::{Target, client_headroom, growth_pair};
use super::{BenchError, BenchResult, Context};

/// The chart script, next to this crate's sources.
const CHART_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/chart.py");
/// The exit code `chart.py` uses when matplotlib is missing.
const NO_MATPLOTLIB: i32 = 3;

fn measurement(m: &Measurement) -> Value {
    let o = &m.outcome;
    let cpu = o.cpu.unwrap_or_default();
    json!({
        "client": m.client.key(),
        "call": m.call.key(),
        "subject": m.subject.key(),
        "concurrency": m.concurrency,
        "users_in_db": m.users_in_db,
        "requests": m.requests,
        "ok": o.ok,
        "errors": o.errors,
        "error_samples": o.error_samples,
        "not_sent": o.not_sent,
        "elapsed_s": o.elapsed.as_secs_f64(),
        "requests_per_s": o.throughput(),
        "p50_ms": o.latency_ms(0.50),
        "p90_ms": o.latency_ms(0.90),
        "p99_ms": o.latency_ms(0.99),
        "p999_ms": o.latency_ms(0.999),
        "max_ms": o.latency_ms(1.0),
        "mean_ms": o.latencies.mean() / 1_000.0,
        "cpu_us_per_call": {
            "server": cpu.subject,
            "redis": cpu.redis,
            "postgres": cpu.postgres,
            "client": cpu.client,
        },
    })
}

fn legit_figures(o: &super::load::LoadOutcome) -> Value {
    json!({
        "ok": o.ok,
        "errors": o.errors,
        "not_sent": o.not_sent,
        "requests_per_s": o.throughput(),
        "p50_ms": o.latency_ms(0.50),
        "p99_ms": o.latency_ms(0.99),
        "p999_ms": o.latency_ms(0.999),
    })
}

fn flood(f: &FloodMeasurement) -> Value {
    json!({
        "call": f.call.key(),
        "concurrency": f.concurrency,
        "legit_rate_per_s": f.legit_rate,
        "flood_rate_per_s": f.flood_rate,
        "requests": f.requests,
        "alone": legit_figures(&f.alone),
        "flooded": legit_figures(&f.flooded),
        "legit_refused": f.legit_refused(),
        "flood": {
            "sent": f.flood.sent,
            "sent_per_s": f.flood.rate(),
            "skipped": f.flood.skipped,
            "answers": f.flood.outcomes,
        },
    })
}

/// The whole run as one JSON document.
pub fn to_json(results: &Results, targets: &[Target]) -> Value {
    let meta = &results.meta;
    let (small, large) = growth_pair(results);
    let headroom: Vec<Value> = [16, 64]
        .into_iter()
        .map(|concurrency| {
            json!({
                "concurrency": concurrency,
                "bench_over_h2load": client_headroom(results, concurrency),
            })
        })
        .collect();
    json!({
        "mode": if meta.smoke { "smoke" } else { "full" },
        "cpus": meta.cpus,
        "client_threads": meta.client_threads,
        "service_threads": meta.service_threads,
        "floor_pool_size": meta.pool_size,
        "requests": meta.requests,
        "services": meta.services,
        "measurements": results.measurements.iter().map(measurement).collect::<Vec<_>>(),
        "client_headroom": headroom,
        "floods": results.floods.iter().map(flood).collect::<Vec<_>>(),
        "growth": {
            "small_users": small.and_then(|m| m.users_in_db),
            "large_users": large.and_then(|m| m.users_in_db),
            "p50_ratio": small.zip(large).and_then(|(s, l)| {
                let base = s.outcome.latency_ms(0.5);
                (base > 0.0).then(|| l.outcome.latency_ms(0.5) / base)
            }),
        },
        "bulk_loads": results.bulk_loads.iter().map(|(users, took)| json!({
            "users": users,
            "seconds": took.as_secs_f64(),
        })).collect::<Vec<_>>(),
        "memory": results.memory.iter().map(|process| json!({
            "process": process.name,
            "peak_rss_kib": process.memory.map(|m| m.peak_rss_kib),
            "rss_kib": process.memory.map(|m| m.rss_kib),
        })).collect::<Vec<_>>(),
        "targets": targets.iter().map(|target| json!({
            "target": target.description,
            "measured": target.measured,
            "limit": target.limit,
            "at_least": target.at_least,
            "verdict": target.verdict.label(),
            "note": target.note,
        })).collect::<Vec<_>>(),
        "aborted": results.aborted,
        "failed": results.failed(),
    })
}

/// Writes `results.json` into `out_dir` and returns its path.
pub fn write_json(out_dir: &Path, results: &Results, targets: &[Target]) -> BenchResult<PathBuf> {
    std::fs::create_dir_all(out_dir).context(format!("creating {}", out_dir.display()))?;
    let path = out_dir.join("results.json");
    let text =
        serde_json::to_string_pretty(&to_json(results, targets)).context("encoding the results")?;
    std::fs::write(&path, text + "\n").context(format!("writing {}", path.display()))?;
    Ok(path)
}

/// Draws `chart.png` beside `json` with `python`; fails with what to do
/// when Python or matplotlib is missing.
pub fn draw_chart(python: &str, json: &Path) -> BenchResult<PathBuf> {
    let png = json.with_file_name("chart.png");
    let status = Command::new(python)
        .arg(CHART_SCRIPT)
        .arg(json)
        .arg(&png)
        .status()
        .context(format!("running {python} {CHART_SCRIPT}"))?;
    match status.code() {
        Some(0) => Ok(png),
        Some(NO_MATPLOTLIB) => Err(BenchError::new(format!(
            "{python} has no matplotlib: pip install -r tests/bench/requirements.txt, \
             or run tests/bench/run.sh, which does, or give --python"
        ))),
        _ => Err(BenchError::new(format!("{CHART_SCRIPT} failed ({status})"))),
    }
}
