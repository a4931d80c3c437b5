//! h2load (nghttp2's load generator, `apt-get install nghttp2-client`) as
//! a reference client: when it is installed, floors (a) and (b) and
//! `MintAuthCode` are also driven by it, with the same connections and
//! streams as the benchmark's own client ([`super::grpc_load`]), so that
//! every run shows whether its own client was the limit.
//!
//! h2load sends one fixed body (a mint for one external id, which the
//! limits of the benchmark never refuse) and counts any HTTP 200 as a
//! success, whatever the `grpc-status` in the trailers says. So each h2load
//! measurement is confirmed two ways: the same call, made by the
//! benchmark's client before and after, must answer `grpc-status: 0`; and
//! where a call writes one Redis key (a minted code, floor (b)'s `SET`),
//! the keys under that pattern must have grown by exactly the number of
//! 200s. A call unconfirmed counts as an error of kind `unconfirmed`.
//!
//! Its per-request log (`--log-file`: start, status, duration) gives the
//! same figures as the benchmark's: the first `warmup` requests by start
//! time are left out, the rest are the timed phase, their durations go
//! into an HDR histogram. Its CPU is this process's reaped children's time
//! ([`super::cpu`]), over the whole run, warm-up included.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use redis::aio::ConnectionManager;

use super::cpu::{CpuPerCall, CpuWatch};
use super::grpc_load::{self, GrpcCalls};
use super::load::{LoadOutcome, LoadSpec, new_histogram};
use super::{BenchError, BenchResult, Context};

/// The program.
const H2LOAD: &str = "h2load";

/// Whether h2load can be run here.
pub fn available() -> bool {
    std::process::Command::new(H2LOAD)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Redis keys one successful call writes, to confirm h2load's 200s.
pub struct KeysWritten {
    // Connect with [`redis_for_counting`]: a busy Redis can take longer
    // than the default half second to walk its keys.
    /// Redis.
    pub redis: ConnectionManager,
    /// A `SCAN MATCH` pattern, e.g. `<prefix>authcode:*`.
    pub pattern: String,
}

/// One h2load measurement.
pub struct H2loadRun<'a> {
    /// The server.
    pub addr: SocketAddr,
    /// The call: only request 0 (its body and authorization) is sent.
    pub calls: &'a GrpcCalls,
    /// What a successful call writes, when it writes something.
    pub keys: Option<KeysWritten>,
    /// Where the body and the log go.
    pub scratch_dir: &'a Path,
    /// A name for the files, e.g. `floor_a_echo-c16`.
    pub name: String,
}

impl H2loadRun<'_> {
    /// Runs h2load over `spec` (warm-up and timed requests, in one run)
    /// and confirms its successes.
    pub async fn run(
        mut self,
        spec: LoadSpec,
        watch: Option<CpuWatch>,
    ) -> BenchResult<LoadOutcome> {
        grpc_load::call_once(self.addr, self.calls, 0)
            .await
            .map_err(|error| BenchError::new(format!("h2load's call, before it ran: {error}")))?;
        let keys_before = match &mut self.keys {
            Some(keys) => Some(count_keys(keys).await),
            None => None,
        };
        let log = self.scratch_dir.join(format!("{}.log", self.name));
        let mut command = self.command(spec, &log)?;
        let before = watch.map(|watch| watch.sample());
        let output = command.output().await.context("running h2load")?;
        let after = watch.map(|watch| watch.sample());
        if !output.status.success() {
            return Err(BenchError::new(format!(
                "h2load failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        let rows = read_log(&log)?;
        let _ = std::fs::remove_file(&log);
        let mut outcome = timed_outcome(&rows, spec.warmup)?;
        if let (Some(before), Some(after)) = (before, after) {
            outcome.cpu = CpuPerCall::between(&before, &after, rows.len() as u64);
        }
        grpc_load::call_once(self.addr, self.calls, 0)
            .await
            .map_err(|error| BenchError::new(format!("h2load's call, after it ran: {error}")))?;
        if let (Some(keys), Some(before)) = (&mut self.keys, keys_before) {
            let answered_200 = rows.iter().filter(|row| row.status == 200).count() as u64;
            match (before, count_keys(keys).await) {
                (Ok(before), Ok(after)) => {
                    let written = after.saturating_sub(before);
                    confirm(&mut outcome, answered_200, written, &keys.pattern);
                }
                // Then no 200 is confirmed: the row shows them as errors
                // rather than the whole run stopping.
                (Err(error), _) | (_, Err(error)) => {
                    confirm(&mut outcome, answered_200, 0, &keys.pattern);
                    outcome
                        .error_samples
                        .insert("unconfirmed".into(), error.to_string());
                }
            }
        }
        Ok(outcome)
    }

    /// `h2load -n N -c C -m M --log-file LOG -d BODY -H .. URI`: as many
    /// connections as the benchmark's client would use (fewer when there
    /// are fewer tasks), the tasks' streams spread evenly over them, one
    /// thread.
    fn command(&self, spec: LoadSpec, log: &Path) -> BenchResult<tokio::process::Command> {
        let body = self.scratch_dir.join(format!("{}.body", self.name));
        std::fs::create_dir_all(self.scratch_dir)
            .context(format!("creating {}", self.scratch_dir.display()))?;
        std::fs::write(&body, self.calls.bodies.first().map_or(&[][..], |b| &b[..]))
            .context(format!("writing {}", body.display()))?;
        let concurrency = spec.concurrency.max(1);
        let connections = grpc_load::connection_count(concurrency).min(concurrency);
        let streams = concurrency.div_ceil(connections);
        let mut command = tokio::process::Command::new(H2LOAD);
        command
            .arg("-n")
            .arg(spec.total().max(connections).to_string())
            .arg("-c")
            .arg(connections.to_string())
            .arg("-m")
            .arg(streams.to_string())
            .arg("-t")
            .arg("1")
            .arg("--log-file")
            .arg(log)
            .arg("-d")
            .arg(&body)
            .args(["-H", "content-type: application/grpc", "-H", "te: trailers"]);
        if let Some(authorization) = self.calls.authorizations.first() {
            // The run's own API key, for its own throwaway database: the
            // argument is visible in `ps` for as long as h2load runs.
            let value = authorization
                .to_str()
                .context("an authorization that is not ASCII")?;
            command.arg("-H").arg(format!("authorization: {value}"));
        }
        command
            .arg(format!("http://{}{}", self.addr, self.calls.path))
            .stdin(Stdio::null())
            // An interrupted run does not leave h2load behind.
            .kill_on_drop(true);
        Ok(command)
    }
}

/// One line of h2load's `--log-file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LogRow {
    /// Microseconds since the epoch.
    start_us: u64,
    /// The HTTP status, -1 for a failed stream.
    status: i32,
    /// Microseconds until the end of the answer.
    duration_us: u64,
}

fn read_log(path: &Path) -> BenchResult<Vec<LogRow>> {
    let text = std::fs::read_to_string(path).context(format!("reading {}", path.display()))?;
    parse_log(&text)
}

fn parse_log(text: &str) -> BenchResult<Vec<LogRow>> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let mut fields = line.split('\t').map(str::trim);
            let mut next = || {
                fields
                    .next()
                    .context(format!("a short h2load log line {line:?}"))
            };
            Ok(LogRow {
                start_us: next()?.parse().context("an h2load start time")?,
                status: next()?.parse().context("an h2load status")?,
                duration_us: next()?.parse().context("an h2load duration")?,
            })
        })
        .collect()
}

/// The figures of the rows after the first `warmup` by start time.
fn timed_outcome(rows: &[LogRow], warmup: usize) -> BenchResult<LoadOutcome> {
    let empty = new_histogram()?;
    let mut outcome = LoadOutcome::empty(&empty);
    let mut sorted = rows.to_vec();
    sorted.sort_by_key(|row| row.start_us);
    let timed = sorted.get(warmup..).unwrap_or_default();
    let (Some(first), Some(end)) = (
        timed.iter().map(|row| row.start_us).min(),
        timed.iter().map(|row| row.start_us + row.duration_us).max(),
    ) else {
        return Err(BenchError::new("h2load logged no timed request"));
    };
    outcome.elapsed = Duration::from_micros(end - first);
    for row in timed {
        if row.status == 200 {
            outcome.ok += 1;
            outcome.latencies.saturating_record(row.duration_us.max(1));
        } else {
            let kind = if row.status < 0 {
                "h2load stream failed".to_owned()
            } else {
                format!("http {}", row.status)
            };
            *outcome.errors.entry(kind.clone()).or_default() += 1;
            outcome
                .error_samples
                .entry(kind)
                .or_insert_with(|| "as h2load logged it".into());
        }
    }
    Ok(outcome)
}

/// Counts any 200 that did not write its key as an error of the timed
/// phase (which of them is unknown: all that can be said is how many).
fn confirm(outcome: &mut LoadOutcome, answered_200: u64, written: u64, pattern: &str) {
    let unconfirmed = answered_200.saturating_sub(written).min(outcome.ok);
    if unconfirmed > 0 {
        outcome.ok -= unconfirmed;
        *outcome.errors.entry("unconfirmed".into()).or_default() += unconfirmed;
        outcome.error_samples.entry("unconfirmed".into()).or_insert_with(|| {
            format!("{answered_200} answers were HTTP 200 but only {written} keys {pattern} were written: the rest were gRPC errors")
        });
    }
}

/// Keys `SCAN` looks at per call: each call stays short on a Redis other
/// work shares (`SCAN` walks the whole keyspace, not only the run's keys).
const SCAN_COUNT: u32 = 1_000;

/// Keys matching `keys.pattern`, by `SCAN` (untimed).
async fn count_keys(keys: &mut KeysWritten) -> BenchResult<u64> {
    let mut cursor = 0_u64;
    let mut count = 0_u64;
    loop {
        let (next, found): (u64, Vec<redis::Value>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&keys.pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query_async(&mut keys.redis)
            .await
            .context(format!("counting the keys {}", keys.pattern))?;
        count += found.len() as u64;
        if next == 0 {
            return Ok(count);
        }
        cursor = next;
    }
}

/// A Redis connection whose calls may take up to 10 s, for [`KeysWritten`].
pub async fn redis_for_counting(url: &str) -> BenchResult<ConnectionManager> {
    let client = redis::Client::open(url).context("REDIS_URL")?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(Duration::from_secs(10)));
    ConnectionManager::new_with_config(client, config)
        .await
        .context("connecting to Redis")
}

/// Where h2load's scratch files go under the run's output directory.
pub fn scratch_dir(out_dir: &Path) -> PathBuf {
    out_dir.join("h2load")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_gives_the_timed_figures_after_the_warmup() {
        // Out of order, as h2load may write them; the first two by start
        // time are the warm-up.
        let log = "1000300\t200\t150\n1000000\t200\t900\n1000100\t200\t800\n\
                   1000200\t-1\t50\n1000400\t200\t100\n";
        let rows = parse_log(log).expect("a log");
        let outcome = timed_outcome(&rows, 2).expect("timed rows");
        assert_eq!(outcome.ok, 2);
        assert_eq!(outcome.errors.get("h2load stream failed"), Some(&1));
        // From 1000200 to 1000500.
        assert_eq!(outcome.elapsed, Duration::from_micros(300));
        assert!(outcome.latency_ms(1.0) < 0.2);
        assert!(parse_log("12\t200\n").is_err());
        assert!(timed_outcome(&rows, 5).is_err());
    }

    #[test]
    fn a_200_without_its_key_is_an_error() {
        let rows = parse_log("1\t200\t5\n2\t200\t5\n3\t200\t5\n").expect("a log");
        let mut outcome = timed_outcome(&rows, 0).expect("timed rows");
        confirm(&mut outcome, 3, 3, "p:*");
        assert_eq!((outcome.ok, outcome.error_count()), (3, 0));
        confirm(&mut outcome, 3, 1, "p:*");
        assert_eq!((outcome.ok, outcome.error_count()), (1, 2));
    }
}
