//! The table a run prints, and the targets checked against it.

use std::fmt::Write;

use super::flood::FLOOD_FACTOR;
use super::results::{Call, FloodMeasurement, Measurement, Results, Subject};

/// Each service's resident memory must stay below this.
pub const RSS_TARGET_MIB: f64 = 64.0;
/// The legitimate calls' p99 under the flood over their p99 without it
/// must stay at or below this.
pub const FLOOD_P99_RATIO_TARGET: f64 = 2.0;

/// Whether a target was met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Met.
    Pass,
    /// Missed, or measured with errors.
    Fail,
    /// Not measured in this run (e.g. smoke mode).
    NotMeasured,
}

impl Verdict {
    /// `PASS`, `FAIL` or `n/a`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Fail => "FAIL",
            Self::NotMeasured => "n/a",
        }
    }
}

/// One of the targets.
#[derive(Debug, Clone)]
pub struct Target {
    /// What is promised, e.g. "MintAuthCode c=16 req/s ≥ 0.85 × floor (b)".
    pub description: String,
    /// The measured figure (a ratio or MiB).
    pub measured: Option<f64>,
    /// The bound.
    pub limit: f64,
    /// `measured >= limit` when true, `measured <= limit` (or `<` for
    /// memory) when false.
    pub at_least: bool,
    /// Met or not.
    pub verdict: Verdict,
    /// Why the verdict is what it is, when the figure does not say.
    pub note: Option<String>,
}

impl Target {
    fn new(description: String, measured: Option<f64>, limit: f64, at_least: bool) -> Self {
        let verdict = match measured {
            None => Verdict::NotMeasured,
            Some(value) if (at_least && value >= limit) || (!at_least && value <= limit) => {
                Verdict::Pass
            }
            Some(_) => Verdict::Fail,
        };
        Self {
            description,
            measured,
            limit,
            at_least,
            verdict,
            note: None,
        }
    }

    /// A measurement with errors fails its target whatever its figure.
    fn failed_by_errors(mut self, measurements: &[Option<&Measurement>]) -> Self {
        if measurements.iter().flatten().any(|m| m.had_errors()) {
            self.verdict = Verdict::Fail;
            self.note = Some("requests failed".into());
        }
        self
    }
}

/// The service's and its floor's figures at one concurrency.
fn pair(results: &Results, call: Call, concurrency: usize) -> Option<(&Measurement, &Measurement)> {
    let floor = call.floor()?;
    Some((
        results.find(call, Subject::Service, concurrency)?,
        results.find(call, floor, concurrency)?,
    ))
}

fn ratio(numerator: f64, denominator: f64) -> Option<f64> {
    (denominator > 0.0).then(|| numerator / denominator)
}

/// The targets, each checked against the run.
pub fn targets(results: &Results) -> Vec<Target> {
    let mut targets = Vec::new();
    for concurrency in [16, 64] {
        let mint = pair(results, Call::MintAuthCode, concurrency);
        let both = [mint.map(|m| m.0), mint.map(|m| m.1)];
        targets.push(
            Target::new(
                format!("MintAuthCode c={concurrency} (limits on) req/s >= 0.85 x floor (b)"),
                mint.and_then(|(s, f)| ratio(s.outcome.throughput(), f.outcome.throughput())),
                0.85,
                true,
            )
            .failed_by_errors(&both),
        );
        targets.push(
            Target::new(
                format!("MintAuthCode c={concurrency} (limits on) p99 <= 1.5 x floor (b)"),
                mint.and_then(|(s, f)| {
                    ratio(s.outcome.latency_ms(0.99), f.outcome.latency_ms(0.99))
                }),
                1.5,
                false,
            )
            .failed_by_errors(&both),
        );
    }
    let create = pair(results, Call::CreateUserNew, 16);
    targets.push(
        Target::new(
            "CreateUser new c=16 req/s >= 1.0 x floor (c)".into(),
            create.and_then(|(s, f)| ratio(s.outcome.throughput(), f.outcome.throughput())),
            1.0,
            true,
        )
        .failed_by_errors(&[create.map(|c| c.0), create.map(|c| c.1)]),
    );
    for concurrency in [16, 64] {
        let status = pair(results, Call::GetInstallStatus, concurrency);
        targets.push(
            Target::new(
                format!("GetInstallStatus c={concurrency} req/s >= 0.8 x floor (d)"),
                status.and_then(|(s, f)| ratio(s.outcome.throughput(), f.outcome.throughput())),
                0.8,
                true,
            )
            .failed_by_errors(&[status.map(|s| s.0), status.map(|s| s.1)]),
        );
    }
    let (small, large) = growth_pair(results);
    targets.push(
        Target::new(
            "CreateUser p50 at the most users <= 1.25 x p50 at 1,000".into(),
            small
                .zip(large)
                .and_then(|(s, l)| ratio(l.outcome.latency_ms(0.5), s.outcome.latency_ms(0.5))),
            1.25,
            false,
        )
        .failed_by_errors(&[small, large]),
    );
    for flood in &results.floods {
        targets.extend(flood_targets(flood));
    }
    for process in ["authcode-service", "registration-service"] {
        let mib = results
            .memory
            .iter()
            .find(|memory| memory.name == process)
            .and_then(|memory| memory.memory)
            .map(|memory| memory.peak_rss_kib as f64 / 1024.0);
        let mut target = Target::new(
            format!("{process} peak RSS < {RSS_TARGET_MIB} MiB"),
            mib,
            RSS_TARGET_MIB,
            false,
        );
        if mib.is_some_and(|mib| mib >= RSS_TARGET_MIB) {
            target.verdict = Verdict::Fail;
        }
        targets.push(target);
    }
    targets
}

/// The flood scenario's two targets for one call: its p99 under the flood
/// within [`FLOOD_P99_RATIO_TARGET`] of its p99 alone, and no legitimate
/// call refused.
fn flood_targets(flood: &FloodMeasurement) -> [Target; 2] {
    let label = flood.call.label();
    let mut p99 = Target::new(
        format!("{label} p99 flooded <= {FLOOD_P99_RATIO_TARGET} x alone"),
        ratio(flood.flooded.latency_ms(0.99), flood.alone.latency_ms(0.99)),
        FLOOD_P99_RATIO_TARGET,
        false,
    );
    if flood.had_errors() {
        p99.verdict = Verdict::Fail;
        p99.note = Some("legitimate requests failed".into());
    } else if flood.flood.refused() == 0 {
        // Then the limiter never engaged and the figure says nothing
        // about it.
        p99.note = Some("the flood was never refused".into());
    }
    let refused = Target::new(
        format!("{label} legitimate calls refused under flood = 0"),
        Some(flood.legit_refused() as f64),
        0.0,
        false,
    );
    [p99, refused]
}

/// The flood scenario's table.
fn render_floods(out: &mut String, floods: &[FloodMeasurement]) {
    if floods.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\nflood: legitimate calls paced from 127.0.0.1 at a fixed rate, alone and while {}\n\
         sends {FLOOD_FACTOR}x that rate of made-up API keys, codes and install tokens",
        super::flood::FLOOD_SOURCE
    );
    let _ = writeln!(
        out,
        "{:<18} {:>3} {:>6} {:>6} {:>8} {:>8} {:>8} {:>8} {:>6} {:>7} | {:>7} {:>8} {:>8} {:>8} {:>7}",
        "call",
        "c",
        "rate/s",
        "n",
        "p50 ms",
        "p99 ms",
        "p50 fl",
        "p99 fl",
        "p99 x",
        "refused",
        "flood/s",
        "sent",
        "refused",
        "other",
        "skipped"
    );
    for flood in floods {
        let other: u64 = flood
            .flood
            .outcomes
            .iter()
            .filter(|(kind, _)| kind.as_str() != super::results::REFUSED)
            .map(|(_, count)| count)
            .sum();
        let _ = writeln!(
            out,
            "{:<18} {:>3} {:>6.0} {:>6} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>6.2} {:>7} | {:>7.0} {:>8} {:>8} {:>8} {:>7}",
            flood.call.label(),
            flood.concurrency,
            flood.legit_rate,
            flood.requests,
            flood.alone.latency_ms(0.50),
            flood.alone.latency_ms(0.99),
            flood.flooded.latency_ms(0.50),
            flood.flooded.latency_ms(0.99),
            ratio(flood.flooded.latency_ms(0.99), flood.alone.latency_ms(0.99)).unwrap_or(0.0),
            flood.legit_refused(),
            flood.flood.rate(),
            flood.flood.sent,
            flood.flood.refused(),
            other,
            flood.flood.skipped,
        );
    }
    let answers: Vec<String> = floods
        .iter()
        .map(|flood| format!("{}: {:?}", flood.call.label(), flood.flood.outcomes))
        .collect();
    let _ = writeln!(out, "flood answers by code: {}", answers.join("; "));
}

/// The data-growth measurements, fewest users first.
fn growth_measurements(results: &Results) -> Vec<&Measurement> {
    let mut growth: Vec<&Measurement> = results
        .measurements
        .iter()
        .filter(|m| m.call == Call::CreateUserGrowth)
        .collect();
    growth.sort_by_key(|m| m.users_in_db);
    growth
}

/// The growth measurements with the fewest and the most users, when there
/// are two.
pub fn growth_pair(results: &Results) -> (Option<&Measurement>, Option<&Measurement>) {
    match growth_measurements(results).as_slice() {
        [small, .., large] => (Some(small), Some(large)),
        _ => (None, None),
    }
}

fn figures(m: &Measurement) -> String {
    let o = &m.outcome;
    format!(
        "{:>6} {:>4} {:>8.0} {:>8.2} {:>8.2} {:>8.2}",
        m.requests,
        o.error_count() + o.not_sent,
        o.throughput(),
        o.latency_ms(0.50),
        o.latency_ms(0.99),
        o.latency_ms(0.999),
    )
}

/// Each call beside its floor, then the floors (a) beside `MintAuthCode`.
fn render_calls(out: &mut String, results: &Results) {
    let _ = writeln!(
        out,
        "limits on, not exceeded: the services run with every rate limit on, per-subject ones at \
         1000000/s, failed credentials per address at their default"
    );
    let header = format!(
        "{:>6} {:>4} {:>8} {:>8} {:>8} {:>8}",
        "n", "err", "req/s", "p50 ms", "p99 ms", "p99.9 ms"
    );
    let _ = writeln!(
        out,
        "\n{:<24} {:>3} {header} | {:<16} {header} | {:>6} {:>6}",
        "call", "c", "floor", "rps x", "p99 x"
    );
    for call in [
        Call::MintAuthCode,
        Call::CreateUserNew,
        Call::CreateUserRestore,
        Call::GetInstallStatus,
        Call::GetInstallStatusFirstPoll,
    ] {
        for service in results
            .measurements
            .iter()
            .filter(|m| m.call == call && m.subject == Subject::Service)
        {
            let floor = call
                .floor()
                .and_then(|floor| results.find(call, floor, service.concurrency));
            let (floor_text, ratios) = match floor {
                Some(floor) => (
                    format!("{:<16} {}", floor.subject.label(), figures(floor)),
                    format!(
                        "{:>6.2} {:>6.2}",
                        ratio(service.outcome.throughput(), floor.outcome.throughput())
                            .unwrap_or(0.0),
                        ratio(
                            service.outcome.latency_ms(0.99),
                            floor.outcome.latency_ms(0.99)
                        )
                        .unwrap_or(0.0)
                    ),
                ),
                None => (format!("{:<16} {:>47}", "-", ""), String::new()),
            };
            let _ = writeln!(
                out,
                "{:<24} {:>3} {} | {floor_text} | {ratios}",
                call.label(),
                service.concurrency,
                figures(service),
            );
        }
    }
    let _ = writeln!(
        out,
        "\n{:<24} {:>3} {header} | MintAuthCode / echo",
        "floor", "c"
    );
    for echo in results
        .measurements
        .iter()
        .filter(|m| m.subject == Subject::FloorEcho)
    {
        let versus = results
            .find(Call::MintAuthCode, Subject::Service, echo.concurrency)
            .and_then(|s| ratio(s.outcome.throughput(), echo.outcome.throughput()))
            .map_or(String::new(), |r| format!("{r:.2} of its req/s"));
        let _ = writeln!(
            out,
            "{:<24} {:>3} {} | {versus}",
            echo.subject.label(),
            echo.concurrency,
            figures(echo)
        );
    }
}

/// The table, as printed on stdout.
pub fn render(results: &Results, targets: &[Target]) -> String {
    let mut out = String::new();
    let meta = &results.meta;
    let _ = writeln!(
        out,
        "devicelink-bench: {} run, {} cpus, client threads {}, service threads {}, floor pool {}, services {}",
        if meta.smoke { "smoke" } else { "full" },
        meta.cpus,
        meta.client_threads,
        meta.service_threads
            .map_or("default".into(), |t| t.to_string()),
        meta.pool_size,
        meta.services,
    );
    if !results.measurements.is_empty() {
        render_calls(&mut out, results);
    }
    render_floods(&mut out, &results.floods);
    out.push('\n');
    for growth in growth_measurements(results) {
        let _ = writeln!(
            out,
            "data growth: CreateUser new c={} with {:>9} users: {}",
            growth.concurrency,
            growth.users_in_db.unwrap_or(0),
            figures(growth)
        );
    }
    if let (Some(small), Some(large)) = growth_pair(results) {
        let _ = writeln!(
            out,
            "data growth: p50 at {} users / p50 at {} users = {:.2}",
            large.users_in_db.unwrap_or(0),
            small.users_in_db.unwrap_or(0),
            ratio(large.outcome.latency_ms(0.5), small.outcome.latency_ms(0.5)).unwrap_or(0.0)
        );
    }
    for (users, took) in &results.bulk_loads {
        let _ = writeln!(
            out,
            "bulk load: up to user {users} in {:.1} s",
            took.as_secs_f64()
        );
    }
    for process in &results.memory {
        let figure = process.memory.map_or("unknown".into(), |m| {
            format!(
                "peak {:.1} MiB, now {:.1} MiB",
                m.peak_rss_kib as f64 / 1024.0,
                m.rss_kib as f64 / 1024.0
            )
        });
        let _ = writeln!(out, "memory: {:<22} {figure}", process.name);
    }
    let _ = writeln!(out, "\ntargets:");
    for target in targets {
        let measured = target
            .measured
            .map_or("not measured".into(), |value| format!("{value:.2}"));
        let note = target
            .note
            .as_deref()
            .map_or(String::new(), |note| format!(" ({note})"));
        let _ = writeln!(
            out,
            "  {:<4}  {:<58} {measured}{note}",
            target.verdict.label(),
            target.description
        );
    }
    let passed = targets
        .iter()
        .filter(|t| t.verdict == Verdict::Pass)
        .count();
    let _ = writeln!(out, "  {passed} of {} targets met", targets.len());
    if let Some(reason) = &results.aborted {
        let _ = writeln!(out, "\nthe run stopped early: {reason}");
    }
    let failed: Vec<String> = results
        .measurements
        .iter()
        .filter(|m| m.had_errors())
        .map(|m| {
            format!(
                "{} c={} {}",
                m.call.label(),
                m.concurrency,
                m.subject.label()
            )
        })
        .chain(
            results
                .floods
                .iter()
                .filter(|flood| flood.had_errors())
                .map(|flood| format!("flood {} (legitimate calls)", flood.call.label())),
        )
        .collect();
    if !failed.is_empty() {
        let _ = writeln!(out, "scenarios with errors: {}", failed.join("; "));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::bench::load::{LoadOutcome, new_histogram};
    use crate::bench::results::{FloodTally, REFUSED};

    fn paced(p99_micros: u64, refused: u64) -> LoadOutcome {
        let mut latencies = new_histogram().expect("a histogram");
        latencies.record(p99_micros).expect("in bounds");
        let mut errors = BTreeMap::new();
        if refused > 0 {
            errors.insert(REFUSED.to_owned(), refused);
        }
        LoadOutcome {
            latencies,
            ok: 1,
            errors,
            error_samples: BTreeMap::new(),
            elapsed: Duration::from_secs(1),
            not_sent: 0,
        }
    }

    fn flood(alone: LoadOutcome, flooded: LoadOutcome) -> FloodMeasurement {
        FloodMeasurement {
            call: Call::MintAuthCode,
            concurrency: 16,
            legit_rate: 500.0,
            flood_rate: 5_000.0,
            requests: 1,
            alone,
            flooded,
            flood: FloodTally {
                sent: 10,
                outcomes: BTreeMap::from([(REFUSED.to_owned(), 10)]),
                ..FloodTally::default()
            },
        }
    }

    #[test]
    fn a_refused_legitimate_call_fails_both_flood_targets() {
        let [p99, refused] = flood_targets(&flood(paced(1_000, 0), paced(1_500, 2)));
        assert_eq!(p99.verdict, Verdict::Fail);
        assert_eq!(refused.measured, Some(2.0));
        assert_eq!(refused.verdict, Verdict::Fail);
    }

    #[test]
    fn the_flood_targets_compare_p99_with_and_without() {
        let [within, none_refused] = flood_targets(&flood(paced(1_000, 0), paced(1_900, 0)));
        assert_eq!(within.verdict, Verdict::Pass);
        assert_eq!(none_refused.verdict, Verdict::Pass);
        let [beyond, _] = flood_targets(&flood(paced(1_000, 0), paced(2_500, 0)));
        assert_eq!(beyond.verdict, Verdict::Fail);
    }
}
