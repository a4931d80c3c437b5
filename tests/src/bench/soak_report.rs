//! The soak's results: a markdown table with a row per interval, the same
//! figures as CSV and JSON, and whether the goal held.
//!
//! The goal (issue 9): from minute 5 to the end, resident memory and each
//! call's p99 stay flat within 10%, and no service's file descriptors
//! grow. "Flat" is judged on the steady window (the samples from the fifth
//! interval on, minute 5 at the default one-minute interval) split in two
//! halves. Memory: the median of the second half's samples must be within
//! 10% of the first's. Latency: the p99 of all the second half's calls of a
//! kind must be within 10% of the p99 of all the first half's. Pooled, not
//! per minute: at 5 mints a second one minute's p99 is its third-slowest
//! call, so a median of per-minute p99s moves with a handful of calls,
//! while a half's p99 rests on thousands; a leak or a slowdown still moves
//! the whole second half. Descriptors must not grow at all: the most seen
//! in the second half is at most the most seen in the first.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::cpu::CpuPerCall;
use super::soak_load::{CallKind, KindStats};
use super::soak_sample::{Sample, ServiceSample};
use super::{BenchResult, Context};

/// The sample the steady window starts at: the fifth interval.
pub const STEADY_FROM_SAMPLE: usize = 5;
/// How far the second half's median may move from the first's.
pub const FLAT_WITHIN: f64 = 0.10;

/// One check of the goal.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was checked, e.g. `registration RSS`.
    pub what: String,
    /// Whether it held.
    pub held: bool,
    /// The figures behind it.
    pub detail: String,
}

/// Whether the goal held, check by check.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// Every check held (and the run was long enough to tell).
    pub held: bool,
    /// Why not, when the run was too short to judge.
    pub too_short: Option<String>,
    /// The checks.
    pub checks: Vec<Check>,
    /// Figures beside the checks, not judged: the CPU each process spent
    /// per call in each half. The load generator's work per call is fixed,
    /// so a change in its figure is the machine's own speed changing, which
    /// moves every latency with it.
    pub context: Vec<String>,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Judges `series` (one value per steady sample) flat: the check and the
/// relative change of the halves' medians.
fn flat_check(what: String, series: &[f64], unit: &str) -> Check {
    let (first, second) = series.split_at(series.len() / 2);
    halves_check(
        what,
        "median",
        median(first.to_vec()),
        median(second.to_vec()),
        unit,
    )
}

/// The 99th percentile, in milliseconds, of every call in `intervals`
/// together; `None` when they hold no call.
fn pooled_p99(intervals: &[&KindStats]) -> Option<f64> {
    let mut pooled: Histogram<u64> = intervals.first()?.latencies.clone();
    for interval in &intervals[1..] {
        pooled.add(&interval.latencies).ok()?;
    }
    (!pooled.is_empty()).then(|| pooled.value_at_quantile(0.99) as f64 / 1000.0)
}

/// Judges one kind's latency flat: the p99 of the second half's calls
/// against the first half's.
fn p99_check(kind: CallKind, intervals: &[&KindStats]) -> Option<Check> {
    let (first, second) = intervals.split_at(intervals.len() / 2);
    Some(halves_check(
        format!("{} p99", kind.name()),
        "all calls",
        pooled_p99(first)?,
        pooled_p99(second)?,
        "ms",
    ))
}

/// Whether `after` is within [`FLAT_WITHIN`] of `before`, with both figures.
/// `how` says what the figures are: a median of samples, or all calls'.
fn halves_check(what: String, how: &str, before: f64, after: f64, unit: &str) -> Check {
    let change = if before > 0.0 {
        after / before - 1.0
    } else {
        0.0
    };
    Check {
        what,
        held: change.abs() <= FLAT_WITHIN,
        detail: format!(
            "{how} {before:.1} {unit} then {after:.1} {unit} ({:+.1}%)",
            change * 100.0
        ),
    }
}

/// Judges the run against the goal.
pub fn verdict(samples: &[Sample]) -> Verdict {
    let steady = samples
        .get(STEADY_FROM_SAMPLE.saturating_sub(1)..)
        .unwrap_or(&[]);
    if steady.len() < 4 {
        return Verdict {
            held: false,
            too_short: Some(format!(
                "{} samples: the goal is judged from sample {STEADY_FROM_SAMPLE} on and needs \
                 at least {} (run longer, or sample more often with --soak-interval)",
                samples.len(),
                STEADY_FROM_SAMPLE + 3
            )),
            checks: Vec::new(),
            context: Vec::new(),
        };
    }
    let mut checks = Vec::new();
    let names: Vec<&str> = steady[0].services.iter().map(|s| s.name).collect();
    for (index, name) in names.iter().enumerate() {
        let service = |sample: &Sample| sample.services.get(index).cloned();
        let rss: Vec<f64> = steady
            .iter()
            .filter_map(|s| service(s)?.rss_kib)
            .map(|kib| kib as f64 / 1024.0)
            .collect();
        checks.push(flat_check(format!("{name} RSS"), &rss, "MiB"));
        let fds: Vec<u64> = steady.iter().filter_map(|s| service(s)?.fds).collect();
        let (first, second) = fds.split_at(fds.len() / 2);
        let (before, after) = (
            first.iter().max().copied().unwrap_or(0),
            second.iter().max().copied().unwrap_or(0),
        );
        checks.push(Check {
            what: format!("{name} file descriptors"),
            held: !fds.is_empty() && after <= before,
            detail: format!("at most {before} then at most {after}"),
        });
    }
    for kind in CallKind::ALL {
        let intervals: Vec<&KindStats> = steady
            .iter()
            .filter_map(|s| s.calls.iter().find(|c| c.kind == kind))
            .collect();
        if intervals.len() == steady.len() {
            checks.extend(p99_check(kind, &intervals));
        }
    }
    let errors: u64 = samples
        .iter()
        .flat_map(|s| &s.calls)
        .map(|c| c.errors)
        .sum();
    let skipped: u64 = samples.iter().map(|s| s.skipped).sum();
    checks.push(Check {
        what: "no failed or skipped calls".into(),
        held: errors == 0 && skipped == 0,
        detail: format!("{errors} failed, {skipped} skipped"),
    });
    Verdict {
        held: checks.iter().all(|check| check.held),
        too_short: None,
        checks,
        context: cpu_context(steady),
    }
}

/// The median CPU per call of each process in each half of `steady`.
fn cpu_context(steady: &[Sample]) -> Vec<String> {
    let mut figures: Vec<(String, Vec<f64>)> = Vec::new();
    for (index, service) in steady[0].services.iter().enumerate() {
        let per_call = steady
            .iter()
            .filter_map(|s| s.services.get(index)?.cpu_us_per_call)
            .collect();
        figures.push((service.name.to_owned(), per_call));
    }
    for (name, figure) in [
        (
            "Postgres",
            (|cpu: &CpuPerCall| cpu.postgres) as fn(&CpuPerCall) -> Option<f64>,
        ),
        ("Redis", |cpu| cpu.redis),
        ("the load generator", |cpu| cpu.client),
    ] {
        figures.push((
            name.to_owned(),
            steady.iter().filter_map(|s| figure(&s.cpu)).collect(),
        ));
    }
    figures
        .into_iter()
        .filter(|(_, per_call)| per_call.len() >= 2)
        .map(|(name, per_call)| {
            let check = flat_check(format!("{name} CPU per call"), &per_call, "µs");
            format!("{}: {}", check.what, check.detail)
        })
        .collect()
}

fn mib(service: &ServiceSample) -> String {
    service
        .rss_kib
        .map_or("?".into(), |kib| format!("{:.1}", kib as f64 / 1024.0))
}

/// Postgres's, Redis's and the load generator's CPU per call in `sample`,
/// in that order: the order of the table's and the CSV's columns.
fn shared_cpu(sample: &Sample) -> [String; 3] {
    [sample.cpu.postgres, sample.cpu.redis, sample.cpu.client].map(micros)
}

fn micros(value: Option<f64>) -> String {
    value.map_or("?".into(), |micros| format!("{micros:.0}"))
}

fn optional<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or("?".into(), |value| value.to_string())
}

/// The markdown table: a row per interval, then the verdict.
pub fn render(samples: &[Sample], verdict: &Verdict) -> String {
    let mut text = String::new();
    let Some(first) = samples.first() else {
        return "no samples: the soak stopped before its first interval ended\n".into();
    };
    let mut header = String::from("| min |");
    let mut rule = String::from("|---:|");
    for service in &first.services {
        let _ = write!(
            header,
            " {0} RSS MiB | {0} fds | {0} pool max in use / waiting | {0} CPU µs/call |",
            service.name
        );
        rule.push_str("---:|---:|---:|---:|");
    }
    header.push_str(" Postgres / Redis / load generator CPU µs/call |");
    rule.push_str("---:|");
    for kind in CallKind::ALL {
        let _ = write!(header, " {} p50 / p99 ms |", kind.name());
        rule.push_str("---:|");
    }
    header.push_str(" calls | errors |");
    rule.push_str("---:|---:|");
    let _ = writeln!(text, "{header}\n{rule}");
    for sample in samples {
        let _ = write!(text, "| {:.1} |", sample.elapsed_s as f64 / 60.0);
        for service in &sample.services {
            let _ = write!(
                text,
                " {} | {} | {} / {} | {} |",
                mib(service),
                optional(service.fds),
                optional(service.pool_in_use),
                optional(service.pool_waiting),
                micros(service.cpu_us_per_call),
            );
        }
        let _ = write!(text, " {} |", shared_cpu(sample).join(" / "));
        for stats in &sample.calls {
            if stats.count == 0 {
                text.push_str(" - |");
            } else {
                let _ = write!(text, " {:.1} / {:.1} |", stats.p50_ms, stats.p99_ms);
            }
        }
        let calls: u64 = sample.calls.iter().map(|c| c.count).sum();
        let errors: u64 = sample.calls.iter().map(|c| c.errors).sum();
        let _ = writeln!(text, " {calls} | {errors} |");
    }
    text.push('\n');
    match &verdict.too_short {
        Some(why) => {
            let _ = writeln!(text, "Goal: not judged ({why}).");
        }
        None => {
            let _ = writeln!(
                text,
                "Goal (from sample {STEADY_FROM_SAMPLE} on: RSS and p99 flat within {:.0}%, no \
                 descriptor growth): {}",
                FLAT_WITHIN * 100.0,
                if verdict.held { "HELD" } else { "NOT HELD" }
            );
            for check in &verdict.checks {
                let mark = if check.held { "ok  " } else { "FAIL" };
                let _ = writeln!(text, "- {mark} {}: {}", check.what, check.detail);
            }
            for figure in &verdict.context {
                let _ = writeln!(text, "- info {figure} (not judged)");
            }
        }
    }
    text
}

/// The samples as CSV, one row per interval, one column per figure.
pub fn to_csv(samples: &[Sample]) -> String {
    let mut text = String::from("elapsed_s");
    if let Some(first) = samples.first() {
        for service in &first.services {
            for column in [
                "rss_kib",
                "rss_anon_kib",
                "rss_file_kib",
                "fds",
                "pool_in_use",
                "pool_idle",
                "pool_waiting",
                "cpu_us_per_call",
            ] {
                let _ = write!(text, ",{}_{column}", service.name);
            }
        }
    }
    text.push_str(",postgres_cpu_us_per_call,redis_cpu_us_per_call,client_cpu_us_per_call");
    for kind in CallKind::ALL {
        for column in ["count", "errors", "p50_ms", "p99_ms"] {
            let _ = write!(text, ",{}_{column}", kind.name());
        }
    }
    text.push_str(",skipped,open_watches\n");
    for sample in samples {
        let _ = write!(text, "{}", sample.elapsed_s);
        for service in &sample.services {
            let _ = write!(
                text,
                ",{},{},{},{},{},{},{},{}",
                optional(service.rss_kib),
                optional(service.rss_anon_kib),
                optional(service.rss_file_kib),
                optional(service.fds),
                optional(service.pool_in_use),
                optional(service.pool_idle),
                optional(service.pool_waiting),
                micros(service.cpu_us_per_call),
            );
        }
        let _ = write!(text, ",{}", shared_cpu(sample).join(","));
        for stats in &sample.calls {
            let _ = write!(
                text,
                ",{},{},{:.3},{:.3}",
                stats.count, stats.errors, stats.p50_ms, stats.p99_ms
            );
        }
        let _ = writeln!(text, ",{},{}", sample.skipped, sample.open_watches);
    }
    text
}

/// The samples, the run's settings and the verdict as JSON.
pub fn to_json(samples: &[Sample], verdict: &Verdict, settings: Value) -> Value {
    let samples: Vec<Value> = samples
        .iter()
        .map(|sample| {
            json!({
                "elapsed_s": sample.elapsed_s,
                "skipped": sample.skipped,
                "open_watches": sample.open_watches,
                "services": sample.services.iter().map(|s| json!({
                    "name": s.name,
                    "rss_kib": s.rss_kib,
                    "rss_anon_kib": s.rss_anon_kib,
                    "rss_file_kib": s.rss_file_kib,
                    "fds": s.fds,
                    "pool_in_use": s.pool_in_use,
                    "pool_idle": s.pool_idle,
                    "pool_waiting": s.pool_waiting,
                    "cpu_us_per_call": s.cpu_us_per_call,
                })).collect::<Vec<_>>(),
                "cpu_us_per_call": {
                    "postgres": sample.cpu.postgres,
                    "redis": sample.cpu.redis,
                    "client": sample.cpu.client,
                },
                "calls": sample.calls.iter().map(|c| json!({
                    "kind": c.kind.name(),
                    "count": c.count,
                    "errors": c.errors,
                    "p50_ms": c.p50_ms,
                    "p99_ms": c.p99_ms,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "settings": settings,
        "steady_from_sample": STEADY_FROM_SAMPLE,
        "samples": samples,
        "goal": {
            "held": verdict.held,
            "too_short": verdict.too_short,
            "checks": verdict.checks.iter().map(|c| json!({
                "what": c.what, "held": c.held, "detail": c.detail,
            })).collect::<Vec<_>>(),
            "context": verdict.context,
        },
    })
}

/// Writes `soak.csv` and `soak.json` into `out_dir`; returns the JSON's
/// path, for the chart.
pub fn write(
    out_dir: &Path,
    samples: &[Sample],
    verdict: &Verdict,
    settings: Value,
) -> BenchResult<PathBuf> {
    std::fs::create_dir_all(out_dir).context(format!("creating {}", out_dir.display()))?;
    let csv = out_dir.join("soak.csv");
    std::fs::write(&csv, to_csv(samples)).context(format!("writing {}", csv.display()))?;
    let path = out_dir.join("soak.json");
    let text = serde_json::to_string_pretty(&to_json(samples, verdict, settings))
        .context("encoding the soak's results")?;
    std::fs::write(&path, text + "\n").context(format!("writing {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An interval's latencies: `fast` calls of 1 ms and `slow` of `slow_ms`.
    fn latencies(fast: u64, slow: u64, slow_ms: f64) -> Histogram<u64> {
        let mut histogram = Histogram::new_with_bounds(1, 120_000_000, 3).unwrap();
        histogram.record_n(1000, fast).unwrap();
        histogram.record_n((slow_ms * 1000.0) as u64, slow).unwrap();
        histogram
    }

    fn interval(latencies: Histogram<u64>) -> KindStats {
        KindStats {
            kind: CallKind::Status,
            count: latencies.len(),
            errors: 0,
            p50_ms: 1.0,
            p99_ms: latencies.value_at_quantile(0.99) as f64 / 1000.0,
            latencies,
            last_error: None,
        }
    }

    /// One minute of 100 calls whose p99 is `p99_ms`.
    fn sample(minute: u64, rss_mib: u64, fds: u64, p99_ms: f64) -> Sample {
        Sample {
            elapsed_s: minute * 60,
            services: vec![ServiceSample {
                name: "registration",
                rss_kib: Some(rss_mib * 1024),
                rss_anon_kib: None,
                rss_file_kib: None,
                fds: Some(fds),
                pool_in_use: Some(1.0),
                pool_idle: Some(3.0),
                pool_waiting: Some(0.0),
                cpu_us_per_call: Some(50.0),
            }],
            calls: vec![interval(latencies(98, 2, p99_ms))],
            skipped: 0,
            open_watches: 10,
            cpu: CpuPerCall::default(),
        }
    }

    #[test]
    fn a_flat_run_holds_and_a_leaking_one_does_not() {
        let flat: Vec<Sample> = (1..=12).map(|m| sample(m, 40, 30, 5.0)).collect();
        let verdict = verdict(&flat);
        assert!(verdict.held, "{verdict:?}");

        let leaking: Vec<Sample> = (1..=12).map(|m| sample(m, 40 + 2 * m, 30, 5.0)).collect();
        let verdict = super::verdict(&leaking);
        assert!(!verdict.held);
        assert!(
            verdict
                .checks
                .iter()
                .any(|c| c.what == "registration RSS" && !c.held)
        );

        let fd_growth: Vec<Sample> = (1..=12).map(|m| sample(m, 40, 30 + m, 5.0)).collect();
        assert!(!super::verdict(&fd_growth).held);

        let slowing: Vec<Sample> = (1..=12)
            .map(|m| sample(m, 40, 30, 5.0 + m as f64))
            .collect();
        assert!(!super::verdict(&slowing).held);
    }

    #[test]
    fn a_half_is_judged_on_all_its_calls_not_on_each_minutes_p99() {
        // Every minute of the first half has two 9 ms calls in 100, so each
        // minute's p99 is 9 ms; in the second half they come four in one
        // minute and none in the next. The median of the second half's
        // per-minute p99s is 5 ms against 9 ms (-44%), but each half has 2%
        // slow calls and, pooled, the same p99.
        let minutes: Vec<Sample> = (1..=24)
            .map(|m| {
                let slow = if m <= 14 {
                    2
                } else if m % 2 == 0 {
                    4
                } else {
                    0
                };
                let mut sample = sample(m, 40, 30, 9.0);
                sample.calls = vec![interval(latencies(100 - slow, slow, 9.0))];
                sample
            })
            .collect();
        let verdict = verdict(&minutes);
        assert!(verdict.held, "{verdict:?}");

        let intervals = [
            interval(latencies(100, 0, 9.0)),
            interval(latencies(98, 2, 9.0)),
        ];
        let both: Vec<&KindStats> = intervals.iter().collect();
        // 2 slow calls in 200: the 99th percentile is the 198th call, fast.
        let ms = |p99: Option<f64>| p99.map(|ms| ms.round());
        assert_eq!(ms(pooled_p99(&both)), Some(1.0));
        assert_eq!(ms(pooled_p99(&both[1..])), Some(9.0));
        assert_eq!(pooled_p99(&[]), None);
    }

    #[test]
    fn cpu_per_call_is_shown_beside_the_checks_and_not_judged() {
        let slower_machine: Vec<Sample> = (1..=12)
            .map(|minute| Sample {
                cpu: CpuPerCall {
                    client: Some(if minute <= 8 { 10.0 } else { 12.0 }),
                    ..CpuPerCall::default()
                },
                ..sample(minute, 40, 30, 5.0)
            })
            .collect();
        let verdict = verdict(&slower_machine);
        assert!(verdict.held, "{:?}", verdict.checks);
        assert!(
            verdict.context.iter().any(|figure| figure
                == "the load generator CPU per call: median 10.0 µs then 12.0 µs (+20.0%)"),
            "{:?}",
            verdict.context
        );
        assert!(
            verdict
                .context
                .iter()
                .any(|figure| figure.starts_with("registration CPU per call: median 50.0 µs")),
            "{:?}",
            verdict.context
        );
    }

    #[test]
    fn a_short_run_is_not_judged() {
        let short: Vec<Sample> = (1..=4).map(|m| sample(m, 40, 30, 5.0)).collect();
        let verdict = verdict(&short);
        assert!(!verdict.held);
        assert!(verdict.too_short.is_some());
        assert!(render(&short, &verdict).contains("not judged"));
    }
}
