//! The table a run prints, and the targets checked against it.

use std::fmt::Write;

use super::flood::FLOOD_FACTOR;
use super::results::{Call, Client, FloodMeasurement, Measurement, Results, Subject, micros};

/// Each service's resident memory must stay below this.
pub const RSS_TARGET_MIB: f64 = 64.0;
/// The legitimate calls' p99 under the flood over their p99 without it
/// must stay at or below this.
pub const FLOOD_P99_RATIO_TARGET: f64 = 2.0;
/// The benchmark's client must drive floor (a) at least this fraction of
/// what h2load drives it to, or the client is what is measured.
pub const CLIENT_HEADROOM_TARGET: f64 = 0.9;
/// A service's CPU per call over its floor's must stay at or below this.
pub const CPU_RATIO_TARGET: f64 = 1.3;
/// `MintAuthCode` must reach at least this share of floor (b)'s req/s...
pub const MINT_RPS_TARGET: f64 = 0.9;
/// ...with a p99 at most this multiple of floor (b)'s.
pub const MINT_P99_TARGET: f64 = 1.3;
/// A new user's `CreateUser` must beat floor (c) by at least this (it sends
/// one statement where the floor sends seven)...
pub const CREATE_USER_NEW_TARGET: f64 = 1.3;
/// ...and a restoration at least match it, at every concurrency.
pub const CREATE_USER_RESTORE_TARGET: f64 = 1.0;
/// Postgres CPU per new user's redemption, in µs (all its processes).
pub const CREATE_USER_NEW_POSTGRES_CPU_TARGET_US: f64 = 600.0;

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
    pub(super) fn new(
        description: String,
        measured: Option<f64>,
        limit: f64,
        at_least: bool,
    ) -> Self {
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
    pub(super) fn failed_by_errors(mut self, measurements: &[Option<&Measurement>]) -> Self {
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

pub(super) fn ratio(numerator: f64, denominator: f64) -> Option<f64> {
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
                format!(
                    "MintAuthCode c={concurrency} (limits on) req/s >= {MINT_RPS_TARGET} x floor (b)"
                ),
                mint.and_then(|(s, f)| ratio(s.outcome.throughput(), f.outcome.throughput())),
                MINT_RPS_TARGET,
                true,
            )
            .failed_by_errors(&both),
        );
        targets.push(
            Target::new(
                format!(
                    "MintAuthCode c={concurrency} (limits on) p99 <= {MINT_P99_TARGET} x floor (b)"
                ),
                mint.and_then(|(s, f)| {
                    ratio(s.outcome.latency_ms(0.99), f.outcome.latency_ms(0.99))
                }),
                MINT_P99_TARGET,
                false,
            )
            .failed_by_errors(&both),
        );
    }
    targets.extend(create_user_targets(results));
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
    targets.extend(super::mint_events::targets(results));
    for concurrency in [16, 64] {
        targets.push(cpu_target(
            results,
            Call::MintAuthCode,
            Subject::FloorRedisSet,
            concurrency,
        ));
        targets.push(cpu_target(
            results,
            Call::GetInstallStatus,
            Subject::FloorEcho,
            concurrency,
        ));
    }
    for concurrency in [16, 64] {
        targets.push(Target::new(
            format!(
                "bench client floor (a) c={concurrency} req/s >= {CLIENT_HEADROOM_TARGET} x h2load"
            ),
            client_headroom(results, concurrency),
            CLIENT_HEADROOM_TARGET,
            true,
        ));
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

/// `CreateUser` against floor (c): new users at c=16 (req/s, and Postgres
/// CPU per call), restorations at every concurrency.
fn create_user_targets(results: &Results) -> Vec<Target> {
    let mut targets = Vec::new();
    let rps_target = |call: Call, concurrency: usize, limit: f64| {
        let pair = pair(results, call, concurrency);
        Target::new(
            format!(
                "{} c={concurrency} req/s >= {limit} x floor (c)",
                call.label()
            ),
            pair.and_then(|(s, f)| ratio(s.outcome.throughput(), f.outcome.throughput())),
            limit,
            true,
        )
        .failed_by_errors(&[pair.map(|p| p.0), pair.map(|p| p.1)])
    };
    targets.push(rps_target(Call::CreateUserNew, 16, CREATE_USER_NEW_TARGET));
    let new_user = results.find(Call::CreateUserNew, Subject::Service, 16);
    targets.push(
        Target::new(
            format!(
                "CreateUser new c=16 Postgres CPU/call <= {CREATE_USER_NEW_POSTGRES_CPU_TARGET_US} µs"
            ),
            new_user
                .and_then(|m| m.outcome.cpu)
                .and_then(|cpu| cpu.postgres),
            CREATE_USER_NEW_POSTGRES_CPU_TARGET_US,
            false,
        )
        .failed_by_errors(&[new_user]),
    );
    for concurrency in [1, 16, 64] {
        targets.push(rps_target(
            Call::CreateUserRestore,
            concurrency,
            CREATE_USER_RESTORE_TARGET,
        ));
    }
    targets
}

/// The benchmark's client's req/s on floor (a) over h2load's, at
/// `concurrency`, when both were measured ([`Results::client_headroom`]).
pub fn client_headroom(results: &Results, concurrency: usize) -> Option<f64> {
    results.client_headroom.get(&concurrency).copied()
}

/// The server's CPU per call in `measurement`.
fn server_cpu(measurement: &Measurement) -> Option<f64> {
    measurement.outcome.cpu.and_then(|cpu| cpu.subject)
}

/// `call`'s service CPU per call within [`CPU_RATIO_TARGET`] of `floor`'s
/// at `concurrency` (floor (a)'s figures are those of `MintAuthCode`).
fn cpu_target(results: &Results, call: Call, floor: Subject, concurrency: usize) -> Target {
    let service = results.find(call, Subject::Service, concurrency);
    let floor_call = if floor == Subject::FloorEcho {
        Call::MintAuthCode
    } else {
        call
    };
    let floor_measurement = results.find(floor_call, floor, concurrency);
    Target::new(
        format!(
            "{} c={concurrency} service CPU/call <= {CPU_RATIO_TARGET} x floor {}",
            call.label(),
            &floor.label()[..3]
        ),
        service
            .and_then(server_cpu)
            .zip(floor_measurement.and_then(server_cpu))
            .and_then(|(service, floor)| ratio(service, floor)),
        CPU_RATIO_TARGET,
        false,
    )
    .failed_by_errors(&[service, floor_measurement])
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

pub(super) fn figures(m: &Measurement) -> String {
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
        for service in results.measurements.iter().filter(|m| {
            m.client == Client::Bench && m.call == call && m.subject == Subject::Service
        }) {
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
        .filter(|m| m.client == Client::Bench && m.subject == Subject::FloorEcho)
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
    super::mint_events::render(out, results, &header);
}

/// CPU figures of one measurement: server, Redis, Postgres, client.
fn cpu_figures(m: &Measurement) -> String {
    let cpu = m.outcome.cpu.unwrap_or_default();
    format!(
        "{:>7} {:>7} {:>7} {:>7}",
        micros(cpu.subject),
        micros(cpu.redis),
        micros(cpu.postgres),
        micros(cpu.client)
    )
}

/// CPU per call of each process, each call beside its floor and floor (a).
fn render_cpu(out: &mut String, results: &Results) {
    let _ = writeln!(
        out,
        "\nCPU per call, µs (user + system during the timed part): server is the service or \
         floor server, pg all Postgres processes,\nclient this benchmark (which runs floors (c) \
         and (d) itself) or h2load; the stores' figures include anything else using them"
    );
    let header = format!("{:>7} {:>7} {:>7} {:>7}", "server", "redis", "pg", "client");
    let _ = writeln!(
        out,
        "{:<24} {:>3} {header} | {:<16} {header} | {:>8} {:>8}",
        "call", "c", "floor", "server x", "x (a)"
    );
    for m in results
        .measurements
        .iter()
        .filter(|m| m.client == Client::Bench && m.subject == Subject::Service)
        .filter(|m| m.call != Call::CreateUserGrowth)
    {
        let floor = m
            .call
            .floor()
            .and_then(|floor| results.find(m.call, floor, m.concurrency));
        let echo = results.find(Call::MintAuthCode, Subject::FloorEcho, m.concurrency);
        let versus = |other: Option<&Measurement>| {
            other
                .and_then(server_cpu)
                .zip(server_cpu(m))
                .and_then(|(other, mine)| ratio(mine, other))
                .map_or("-".into(), |r| format!("{r:.2}"))
        };
        let floor_text = floor.map_or(format!("{:<16} {:>31}", "-", ""), |floor| {
            format!("{:<16} {}", floor.subject.label(), cpu_figures(floor))
        });
        let _ = writeln!(
            out,
            "{:<24} {:>3} {} | {floor_text} | {:>8} {:>8}",
            m.call.label(),
            m.concurrency,
            cpu_figures(m),
            versus(floor),
            versus(echo),
        );
    }
    for other in results.measurements.iter().filter(|m| {
        m.client == Client::Bench
            && (m.subject == Subject::FloorEcho || m.subject.is_service_variant())
    }) {
        let _ = writeln!(
            out,
            "{:<24} {:>3} {}",
            other.subject.label(),
            other.concurrency,
            cpu_figures(other)
        );
    }
}

/// h2load's rows beside the benchmark's client's, and the client's
/// headroom.
fn render_reference(out: &mut String, results: &Results) {
    let references: Vec<&Measurement> = results
        .measurements
        .iter()
        .filter(|m| m.client == Client::H2load)
        .collect();
    if references.is_empty() {
        let _ = writeln!(
            out,
            "\nclient headroom: unknown (no h2load reference rows: h2load runs with the \
             MintAuthCode scenarios, when installed: apt-get install nghttp2-client)"
        );
        return;
    }
    let _ = writeln!(
        out,
        "\nreference: h2load, one thread, the same connections and streams, one fixed request; its \
         HTTP 200s confirmed by\nthe same call answering grpc-status 0 before and after and, for \
         MintAuthCode and (b), by the Redis keys written"
    );
    let header = format!(
        "{:>6} {:>4} {:>8} {:>8} {:>8} {:>8}",
        "n", "err", "req/s", "p50 ms", "p99 ms", "p99.9 ms"
    );
    let cpu_header = format!("{:>7} {:>7} {:>7} {:>7}", "server", "redis", "pg", "h2load");
    let _ = writeln!(
        out,
        "{:<24} {:>3} {header} | {cpu_header} | bench client / h2load",
        "h2load", "c"
    );
    for reference in references {
        let label = match reference.subject {
            Subject::Service => reference.call.label(),
            other => other.label(),
        };
        let versus = results
            .find(reference.call, reference.subject, reference.concurrency)
            .and_then(|bench| ratio(bench.outcome.throughput(), reference.outcome.throughput()))
            .map_or(String::new(), |r| format!("{r:.2}"));
        let _ = writeln!(
            out,
            "{:<24} {:>3} {} | {} | {versus}",
            label,
            reference.concurrency,
            figures(reference),
            cpu_figures(reference),
        );
    }
    let headroom: Vec<String> = results
        .client_headroom
        .iter()
        .map(|(concurrency, r)| format!("c={concurrency} {r:.2}"))
        .collect();
    let _ = writeln!(
        out,
        "client headroom (bench client's floor (a) req/s / h2load's, the median of each round's \
         ratio;\n{CLIENT_HEADROOM_TARGET} or more: the client is not the limit): {}",
        headroom.join(", ")
    );
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
        render_cpu(&mut out, results);
        render_reference(&mut out, results);
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
            cpu: None,
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
