//! The load generator: `concurrency` tasks take request numbers from one
//! counter until a fixed count is reached or the scenario's deadline
//! passes, and time each call into an HDR histogram. Closed-loop by
//! default (each task sends its next call when the last one answers);
//! with a rate, paced: request `i` of a phase is due `i / rate` seconds
//! after the phase starts, and its latency counts from when it was due, so
//! a call that waited for a free task shows that wait.
//!
//! It knows nothing about gRPC or SQL: a scenario hands it a function from
//! (task number, request number) to a future, prepared beforehand so that
//! the timed loop does as little as possible besides the call itself.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::cpu::{CpuPerCall, CpuWatch};
use super::{BenchResult, Context};

/// The slowest latency the histogram tells apart, in microseconds; slower
/// calls are recorded as this.
const MAX_LATENCY_MICROS: u64 = 120_000_000;
/// How long one call may take before it counts as an error.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why one call failed. A failure is counted and reported, never taken for
/// a success.
#[derive(Debug, Clone)]
pub struct CallError {
    /// A short class, e.g. the gRPC code: errors are tallied by it.
    pub kind: String,
    /// What happened, for the first error of each kind.
    pub message: String,
}

impl CallError {
    /// An error of class `kind`.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
        }
    }
}

impl From<tonic::Status> for CallError {
    fn from(status: tonic::Status) -> Self {
        Self::new(format!("{:?}", status.code()), status.message())
    }
}

impl From<tokio_postgres::Error> for CallError {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::new("postgres", devicelink_shared::status::error_chain(&error))
    }
}

impl From<redis::RedisError> for CallError {
    fn from(error: redis::RedisError) -> Self {
        Self::new("redis", error.to_string())
    }
}

/// How a scenario is driven.
#[derive(Debug, Clone, Copy)]
pub struct LoadSpec {
    /// Tasks issuing calls at once.
    pub concurrency: usize,
    /// Untimed calls first (requests `0..warmup`).
    pub warmup: usize,
    /// Timed calls (requests `warmup..warmup + requests`).
    pub requests: usize,
    /// The timed phase stops taking new requests after this long.
    pub deadline: Duration,
    /// Requests per second when paced; `None` is closed-loop.
    pub rate: Option<f64>,
}

impl LoadSpec {
    /// How many prepared requests the scenario consumes.
    pub fn total(&self) -> usize {
        self.warmup + self.requests
    }
}

/// What a timed phase measured.
#[derive(Debug, Clone)]
pub struct LoadOutcome {
    /// Latencies of the successful calls, in microseconds.
    pub latencies: Histogram<u64>,
    /// Successful calls.
    pub ok: u64,
    /// Failed calls, by kind.
    pub errors: BTreeMap<String, u64>,
    /// The first message of each kind of error.
    pub error_samples: BTreeMap<String, String>,
    /// From the first call to the last answer.
    pub elapsed: Duration,
    /// Requests never sent because the deadline passed.
    pub not_sent: u64,
    /// CPU per call of the processes involved, when they were watched.
    pub cpu: Option<CpuPerCall>,
}

/// The median of several runs of one measurement, by throughput: on a
/// small shared machine one run can land on a busy moment, and runs taken in
/// turns with the floor's spread that luck evenly. Errors of every run are
/// kept, so that the median cannot hide a failure.
pub fn median_run(runs: Vec<LoadOutcome>) -> Option<LoadOutcome> {
    median_run_by(runs, LoadOutcome::throughput)
}

/// The median of several runs by `key` (e.g. p99 for paced runs, whose
/// throughput is the pace), keeping every run's errors as
/// [`median_run`] does.
pub fn median_run_by(
    mut runs: Vec<LoadOutcome>,
    key: impl Fn(&LoadOutcome) -> f64,
) -> Option<LoadOutcome> {
    if runs.is_empty() {
        return None;
    }
    runs.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let mut median = runs.remove(runs.len() / 2);
    for other in runs {
        for (kind, count) in other.errors {
            *median.errors.entry(kind.clone()).or_default() += count;
            if let Some(sample) = other.error_samples.get(&kind) {
                median
                    .error_samples
                    .entry(kind)
                    .or_insert_with(|| sample.clone());
            }
        }
        median.not_sent += other.not_sent;
    }
    Some(median)
}

impl LoadOutcome {
    /// Nothing measured yet, with `empty` as its histogram.
    pub fn empty(empty: &Histogram<u64>) -> Self {
        Self {
            latencies: empty.clone(),
            ok: 0,
            errors: BTreeMap::new(),
            error_samples: BTreeMap::new(),
            elapsed: Duration::ZERO,
            not_sent: 0,
            cpu: None,
        }
    }

    /// Calls answered, successfully or not: what CPU is divided by.
    pub fn answered(&self) -> u64 {
        self.ok + self.error_count()
    }

    /// All failed calls.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Successful calls per second.
    pub fn throughput(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.ok as f64 / seconds
        } else {
            0.0
        }
    }

    /// The latency at `quantile` (0..=1) in milliseconds; 0 without
    /// successful calls.
    pub fn latency_ms(&self, quantile: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        self.latencies.value_at_quantile(quantile) as f64 / 1_000.0
    }

    pub(super) fn merge(&mut self, other: TaskTally) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latencies.add(&other.latencies);
        self.ok += other.ok;
        self.not_sent += other.not_sent;
        for (kind, count) in other.errors {
            *self.errors.entry(kind).or_default() += count;
        }
        for (kind, message) in other.error_samples {
            self.error_samples.entry(kind).or_insert(message);
        }
    }
}

/// One task's share, merged at the end so the timed loop shares nothing but
/// the request counter.
pub(super) struct TaskTally {
    latencies: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
    error_samples: BTreeMap<String, String>,
    not_sent: u64,
}

impl TaskTally {
    /// A task that died with `message` instead of tallying.
    pub(super) fn panicked(empty: &Histogram<u64>, message: String) -> Self {
        let mut tally = Self {
            latencies: empty.clone(),
            ok: 0,
            errors: BTreeMap::new(),
            error_samples: BTreeMap::new(),
            not_sent: 0,
        };
        tally.error(CallError::new("panic", message));
        tally
    }

    fn error(&mut self, error: CallError) {
        *self.errors.entry(error.kind.clone()).or_default() += 1;
        self.error_samples
            .entry(error.kind)
            .or_insert(error.message);
    }
}

/// An empty histogram of 1 µs to two minutes at three significant digits.
pub fn new_histogram() -> BenchResult<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 3).context("creating a histogram")
}

/// Runs the warm-up, then the timed phase, of `spec`, calling
/// `call(task, request)` for each request number.
pub async fn run<F, Fut>(spec: LoadSpec, call: F) -> BenchResult<LoadOutcome>
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), CallError>> + Send + 'static,
{
    run_watched(spec, None, call).await
}

/// [`run`], charging the timed phase's CPU to the processes of `watch`
/// ([`LoadOutcome::cpu`]).
pub async fn run_watched<F, Fut>(
    spec: LoadSpec,
    watch: Option<CpuWatch>,
    call: F,
) -> BenchResult<LoadOutcome>
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), CallError>> + Send + 'static,
{
    let empty = new_histogram()?;
    let call = Arc::new(call);
    if spec.warmup > 0 {
        phase(&spec, 0..spec.warmup, None, &empty, Arc::clone(&call)).await;
    }
    let before = watch.map(|watch| watch.sample());
    let mut outcome = phase(
        &spec,
        spec.warmup..spec.total(),
        Some(spec.deadline),
        &empty,
        call,
    )
    .await;
    if let (Some(watch), Some(before)) = (watch, before) {
        outcome.cpu = CpuPerCall::between(&before, &watch.sample(), outcome.answered());
    }
    Ok(outcome)
}

/// Where a phase's tasks take their requests from, and when they stop:
/// shared by every task of a phase (and, in [`super::grpc_load`], by its
/// threads).
pub(super) struct PhaseClock {
    /// The next request number to take.
    pub next: AtomicUsize,
    /// The first request of the phase.
    pub first: usize,
    /// One past the last.
    pub end: usize,
    /// Between two due times when paced.
    pub gap: Option<Duration>,
    /// When the phase started.
    pub started: Instant,
    /// After this, requests are counted as not sent.
    pub stop_at: Option<Instant>,
}

impl PhaseClock {
    /// The clock of requests `requests` of `spec`, starting now.
    pub fn new(
        spec: &LoadSpec,
        requests: std::ops::Range<usize>,
        deadline: Option<Duration>,
    ) -> Self {
        let started = Instant::now();
        Self {
            next: AtomicUsize::new(requests.start),
            first: requests.start,
            end: requests.end,
            gap: spec.rate.map(|rate| Duration::from_secs_f64(1.0 / rate)),
            started,
            stop_at: deadline.map(|deadline| started + deadline),
        }
    }
}

/// One task of a phase: takes request numbers from `clock` until there are
/// none left, calls `call(request)` for each and tallies the answers. The
/// future `call` returns need not be `Send` (the h2 client runs its tasks
/// on current-thread runtimes).
pub(super) async fn task_loop<F, Fut>(
    clock: &PhaseClock,
    latencies: Histogram<u64>,
    mut call: F,
) -> TaskTally
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<(), CallError>>,
{
    let mut tally = TaskTally {
        latencies,
        ok: 0,
        errors: BTreeMap::new(),
        error_samples: BTreeMap::new(),
        not_sent: 0,
    };
    loop {
        let request = clock.next.fetch_add(1, Ordering::Relaxed);
        if request >= clock.end {
            break;
        }
        // When paced, the call is due at its slot and timed from it.
        let due = clock
            .gap
            .map(|gap| clock.started + gap.mul_f64((request - clock.first) as f64));
        // One clock reading when closed-loop: the call is sent now.
        let now = Instant::now();
        let sent = due.unwrap_or(now);
        if clock
            .stop_at
            .is_some_and(|stop_at| sent.max(now) >= stop_at)
        {
            tally.not_sent += 1;
            continue;
        }
        if let Some(due) = due {
            tokio::time::sleep_until(due.into()).await;
        }
        let result = match tokio::time::timeout(CALL_TIMEOUT, call(request)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(CallError::new("timeout", "no answer in 30 s")),
        };
        match result {
            Ok(()) => {
                let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                tally.latencies.saturating_record(micros.max(1));
                tally.ok += 1;
            }
            Err(error) => tally.error(error),
        }
    }
    tally
}

/// Sends requests `start..end` from `spec.concurrency` tasks.
async fn phase<F, Fut>(
    spec: &LoadSpec,
    requests: std::ops::Range<usize>,
    deadline: Option<Duration>,
    empty: &Histogram<u64>,
    call: Arc<F>,
) -> LoadOutcome
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), CallError>> + Send + 'static,
{
    let clock = Arc::new(PhaseClock::new(spec, requests, deadline));
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..spec.concurrency.max(1) {
        let clock = Arc::clone(&clock);
        let call = Arc::clone(&call);
        let latencies = empty.clone();
        tasks.spawn(
            async move { task_loop(&clock, latencies, |request| call(task, request)).await },
        );
    }
    let mut outcome = LoadOutcome::empty(empty);
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(tally) => outcome.merge(tally),
            Err(error) => outcome.merge(TaskTally::panicked(empty, error.to_string())),
        }
    }
    outcome.elapsed = clock.started.elapsed();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_every_request_once_and_errors_apart() {
        let spec = LoadSpec {
            concurrency: 4,
            warmup: 3,
            requests: 100,
            deadline: Duration::from_secs(10),
            rate: None,
        };
        let outcome = run(spec, |_task, request| async move {
            if request % 10 == 0 {
                Err(CallError::new("Unavailable", "down"))
            } else {
                Ok(())
            }
        })
        .await
        .expect("a histogram");
        // Requests 3..103: 10 of them are multiples of ten.
        assert_eq!(outcome.ok, 90);
        assert_eq!(outcome.error_count(), 10);
        assert_eq!(outcome.latencies.len(), 90);
        assert_eq!(outcome.not_sent, 0);
    }

    #[test]
    fn the_median_run_keeps_every_runs_errors() {
        let run_of = |ok: u64, millis: u64, errors: u64| {
            let mut outcome = LoadOutcome {
                latencies: Histogram::new(3).expect("a histogram"),
                ok,
                errors: BTreeMap::new(),
                error_samples: BTreeMap::new(),
                elapsed: Duration::from_millis(millis),
                not_sent: 0,
                cpu: None,
            };
            if errors > 0 {
                outcome.errors.insert("Unavailable".into(), errors);
            }
            outcome
        };
        let median = median_run(vec![
            run_of(300, 1_000, 0),
            run_of(100, 1_000, 2),
            run_of(200, 1_000, 0),
        ])
        .expect("a median");
        assert_eq!(median.ok, 200);
        assert_eq!(median.error_count(), 2);
        assert!(median_run(Vec::new()).is_none());
    }

    #[tokio::test]
    async fn a_rate_paces_the_calls() {
        let spec = LoadSpec {
            concurrency: 4,
            warmup: 0,
            requests: 20,
            deadline: Duration::from_secs(10),
            rate: Some(200.0),
        };
        let started = Instant::now();
        let outcome = run(spec, |_task, _request| async move { Ok(()) })
            .await
            .expect("a histogram");
        // 20 calls at 200/s: the last is due 95 ms after the first.
        assert_eq!(outcome.ok, 20);
        assert!(started.elapsed() >= Duration::from_millis(95));
    }

    #[tokio::test]
    async fn the_deadline_stops_sending() {
        let spec = LoadSpec {
            concurrency: 1,
            warmup: 0,
            requests: 1_000,
            deadline: Duration::from_millis(50),
            rate: None,
        };
        let outcome = run(spec, |_task, _request| async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(())
        })
        .await
        .expect("a histogram");
        assert!(outcome.ok < 20, "{}", outcome.ok);
        assert_eq!(outcome.ok + outcome.not_sent, 1_000);
    }
}
