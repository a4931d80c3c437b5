//! The targets, checked against a run's results.

use super::results::{Call, FloodMeasurement, Measurement, Results, Subject};

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
pub(super) fn server_cpu(measurement: &Measurement) -> Option<f64> {
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

/// The data-growth measurements, fewest users first.
pub(super) fn growth_measurements(results: &Results) -> Vec<&Measurement> {
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
