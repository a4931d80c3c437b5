//! What a mint's own features cost it: `MintAuthCode` against authcodes
//! run with one feature off, each measured in turns with the service in
//! the same run.
//!
//! - `AUDIT_MINT_EVENTS=false`: what recording each mint as an audit event
//!   costs (issue: events on within 10% of events off).
//! - `RATE_LIMIT_*=off`: what the rate limiter costs the hot path when it
//!   refuses nothing (the service runs with every limit on, at rates no
//!   scenario reaches). No target of its own: issue 8's is against floor
//!   (b); this row says how much of the distance to it is the limiter's.

use std::fmt::Write;

use super::report::figures;
use super::results::{Call, Client, Measurement, Results, Subject};
use super::targets::{Target, ratio};

/// Mints with their events keep at least this share of the requests/s of
/// mints without.
pub const MINT_EVENTS_TARGET: f64 = 0.9;

/// An authcode with one feature off.
struct Variant {
    subject: Subject,
    /// The table's heading: how the variant runs.
    heading: &'static str,
    /// What the service has that the variant lacks.
    feature: &'static str,
}

const VARIANTS: [Variant; 2] = [
    Variant {
        subject: Subject::ServiceWithoutMintEvents,
        heading: "AUDIT_MINT_EVENTS=false",
        feature: "events",
    },
    Variant {
        subject: Subject::ServiceWithoutLimits,
        heading: "RATE_LIMIT_*=off",
        feature: "limits",
    },
];

/// The service's and `without`'s measurements at `concurrency`.
fn pair(
    results: &Results,
    without: Subject,
    concurrency: usize,
) -> Option<(&Measurement, &Measurement)> {
    Some((
        results.find(Call::MintAuthCode, Subject::Service, concurrency)?,
        results.find(Call::MintAuthCode, without, concurrency)?,
    ))
}

/// The service's requests/s over `without`'s at `concurrency`.
fn service_over(results: &Results, without: Subject, concurrency: usize) -> Option<f64> {
    pair(results, without, concurrency)
        .and_then(|(on, off)| ratio(on.outcome.throughput(), off.outcome.throughput()))
}

/// `MintAuthCode` with events over without, at c=16 and c=64 (not measured
/// when the run did not start the services).
pub fn targets(results: &Results) -> Vec<Target> {
    let without = Subject::ServiceWithoutMintEvents;
    [16, 64]
        .into_iter()
        .map(|concurrency| {
            let pair = pair(results, without, concurrency);
            Target::new(
                format!(
                    "MintAuthCode c={concurrency} req/s with mint events >= {MINT_EVENTS_TARGET} x without"
                ),
                service_over(results, without, concurrency),
                MINT_EVENTS_TARGET,
                true,
            )
            .failed_by_errors(&[pair.map(|p| p.0), pair.map(|p| p.1)])
        })
        .collect()
}

/// Each variant's rows, each beside the service's requests/s over its own.
pub fn render(out: &mut String, results: &Results, header: &str) {
    for variant in &VARIANTS {
        let rows: Vec<&Measurement> = results
            .measurements
            .iter()
            .filter(|m| m.client == Client::Bench && m.subject == variant.subject)
            .collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "\n{:<24} {:>3} {header} | MintAuthCode with {} / this",
            variant.heading, "c", variant.feature
        );
        for m in rows {
            let versus = service_over(results, variant.subject, m.concurrency)
                .map_or(String::new(), |r| format!("{r:.2}"));
            let _ = writeln!(
                out,
                "{:<24} {:>3} {} | {versus}",
                "MintAuthCode",
                m.concurrency,
                figures(m)
            );
        }
    }
}
