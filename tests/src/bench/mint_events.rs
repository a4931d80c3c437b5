//! What recording each mint as an audit event costs: `MintAuthCode`
//! against a second authcode run with `AUDIT_MINT_EVENTS=false`, the two
//! measured in turns in the same run (issue: events on within 10% of
//! events off).

use std::fmt::Write;

use super::report::{Target, figures, ratio};
use super::results::{Call, Client, Measurement, Results, Subject};

/// Mints with their events keep at least this share of the requests/s of
/// mints without.
pub const MINT_EVENTS_TARGET: f64 = 0.9;

/// The two authcodes' measurements at `concurrency`: with mint events,
/// then without.
fn pair(results: &Results, concurrency: usize) -> Option<(&Measurement, &Measurement)> {
    Some((
        results.find(Call::MintAuthCode, Subject::Service, concurrency)?,
        results.find(
            Call::MintAuthCode,
            Subject::ServiceWithoutMintEvents,
            concurrency,
        )?,
    ))
}

/// `MintAuthCode` with events over without, at c=16 and c=64 (not measured
/// when the run did not start the services).
pub fn targets(results: &Results) -> Vec<Target> {
    [16, 64]
        .into_iter()
        .map(|concurrency| {
            let pair = pair(results, concurrency);
            Target::new(
                format!(
                    "MintAuthCode c={concurrency} req/s with mint events >= {MINT_EVENTS_TARGET} x without"
                ),
                pair.and_then(|(on, off)| ratio(on.outcome.throughput(), off.outcome.throughput())),
                MINT_EVENTS_TARGET,
                true,
            )
            .failed_by_errors(&[pair.map(|p| p.0), pair.map(|p| p.1)])
        })
        .collect()
}

/// The authcode without mint events, each row beside the service's
/// requests/s over its own.
pub fn render(out: &mut String, results: &Results, header: &str) {
    let without: Vec<&Measurement> = results
        .measurements
        .iter()
        .filter(|m| m.client == Client::Bench && m.subject == Subject::ServiceWithoutMintEvents)
        .collect();
    if without.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n{:<24} {:>3} {header} | MintAuthCode with events / this",
        "AUDIT_MINT_EVENTS=false", "c"
    );
    for m in without {
        let versus = pair(results, m.concurrency)
            .and_then(|(on, off)| ratio(on.outcome.throughput(), off.outcome.throughput()))
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
