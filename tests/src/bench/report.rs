//! The table a run prints; the targets it ends with are
//! [`super::targets`]'s.

use std::fmt::Write;

use super::flood::FLOOD_FACTOR;
use super::results::{Call, Client, FloodMeasurement, Measurement, Results, Subject, micros};
use super::targets::{
    CLIENT_HEADROOM_TARGET, Target, Verdict, growth_measurements, growth_pair, ratio, server_cpu,
};

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
