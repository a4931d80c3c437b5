//! `devicelink-bench --soak`: the services under a steady mixed flow for a
//! long time (30 minutes by default), watched for what a short benchmark
//! cannot show: memory that creeps up, descriptors that leak, a pool that
//! fills, latency that drifts.
//!
//! It starts both services as processes with their metrics endpoint on,
//! against a database and Redis key prefix of its own, runs the flow of
//! [`super::soak_load`] at fixed rates, and at the end of every interval
//! (a minute by default) records each service's RSS, open descriptors and
//! pool use ([`super::soak_sample`]) with p50/p99 per call kind over that
//! interval. At the end it prints the table, writes `soak.csv`,
//! `soak.json` and `soak.png` into the output directory, and says whether
//! the goal held ([`super::soak_report`]). Ctrl-C stops early and still
//! reports what was recorded.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use devicelink_registration::config::{ADMIN_LISTEN_ADDR, DEVICELINK_ADMIN_TOKEN};
use devicelink_shared::config::{DATABASE_URL, REDIS_KEY_PREFIX, REDIS_URL, SHUTDOWN_GRACE_SECS};
use devicelink_shared::telemetry::METRICS_ADDR;
use serde_json::json;
use tokio::sync::watch;
use uuid::Uuid;

use super::cpu::{self, CpuPerCall, CpuSample, CpuWatch};
use super::procs::{ChildProcess, free_port, start_service};
use super::run::interrupted;
use super::soak_load::{Flow, FlowShape};
use super::soak_report;
use super::soak_sample::{PoolUse, Sample, Watched, pool_use, sample_service};
use super::{BenchError, BenchResult, Context, prepare, stores};

/// The help text of the soak's options (part of `--help`).
pub const USAGE: &str = "\
soak mode: devicelink-bench --soak [options]
  --duration D               how long the flow runs (default 30m; e.g. 4m, 90s, 1h)
  --soak-interval D          how often figures are recorded (default 1m)
  --soak-users N             users, each with one current install (default 3000)
  --soak-link-rate R         link cycles per second: mint, redeem on a new
                             phone, reset the install superseded (default 50)
  --soak-poll-rate R         GetInstallStatus calls per second (default 500)
  --soak-watchers N          watch streams held open (default 1000)
  --bin-dir, --out-dir, --python, --service-threads as above; writes
  soak.csv, soak.json and soak.png
";

/// The exit code of a soak whose goal did not hold or that stopped early.
const EXIT_NOT_HELD: u8 = 1;
/// How often the pool's gauges are read within an interval.
const POOL_READ_INTERVAL: Duration = Duration::from_secs(1);
/// The chart script, relative to the repository.
const CHART_SCRIPT: &str = "tests/bench/soak_chart.py";

/// The soak's options.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// How long the flow runs.
    pub duration: Duration,
    /// How often figures are recorded.
    pub interval: Duration,
    /// The flow's rates and sizes.
    pub shape: FlowShape,
    /// Where the service binaries are.
    pub bin_dir: PathBuf,
    /// Where the results go.
    pub out_dir: PathBuf,
    /// The Python that draws the chart.
    pub python: String,
    /// `TOKIO_WORKER_THREADS` for the services.
    pub service_threads: Option<usize>,
}

/// Reads the soak's command line (`--soak` included, program name not).
pub fn parse(args: impl IntoIterator<Item = String>) -> BenchResult<SoakOptions> {
    let mut options = SoakOptions {
        duration: Duration::from_secs(30 * 60),
        interval: Duration::from_secs(60),
        // Rates at which each half of the judged window holds tens of
        // thousands of calls of every kind, so that its p99 rests on
        // hundreds of them: at a tenth of these a half's mint p99 rested
        // on about 40 calls, and moved by 10-20% from run to run.
        shape: FlowShape {
            users: 3000,
            link_rate: 50.0,
            poll_rate: 500.0,
            watchers: 1000,
        },
        bin_dir: PathBuf::new(),
        out_dir: PathBuf::from("target/bench"),
        python: std::env::var("BENCH_PYTHON").unwrap_or_else(|_| "python3".into()),
        service_threads: None,
    };
    let mut bin_dir = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--soak" {
            continue;
        }
        let value = args.next().context(format!("{arg} needs a value"))?;
        let count = || -> BenchResult<usize> {
            value
                .parse()
                .ok()
                .filter(|count| *count > 0)
                .context(format!("{arg}: {value:?} is not a positive number"))
        };
        let rate = || -> BenchResult<f64> {
            value
                .parse()
                .ok()
                .filter(|rate: &f64| rate.is_finite() && *rate >= 0.0)
                .context(format!("{arg}: {value:?} is not a rate"))
        };
        match arg.as_str() {
            "--duration" => options.duration = duration(&arg, &value)?,
            "--soak-interval" => options.interval = duration(&arg, &value)?,
            "--soak-users" => options.shape.users = count()?,
            "--soak-link-rate" => options.shape.link_rate = rate()?,
            "--soak-poll-rate" => options.shape.poll_rate = rate()?,
            "--soak-watchers" => options.shape.watchers = value.parse().context(arg.clone())?,
            "--bin-dir" => bin_dir = Some(PathBuf::from(value)),
            "--out-dir" => options.out_dir = PathBuf::from(value),
            "--python" => options.python = value,
            "--service-threads" => options.service_threads = Some(count()?),
            other => {
                return Err(BenchError::new(format!(
                    "unknown option {other:?} in soak mode"
                )));
            }
        }
    }
    if options.shape.watchers > options.shape.users {
        return Err(BenchError::new(
            "--soak-watchers: at most one watcher per user (--soak-users)",
        ));
    }
    options.bin_dir = match bin_dir {
        Some(dir) => dir,
        None => std::env::current_exe()
            .context("finding this binary's directory (give --bin-dir)")?
            .parent()
            .context("this binary has no directory (give --bin-dir)")?
            .to_path_buf(),
    };
    Ok(options)
}

/// `90s`, `4m`, `1h`, or a number of seconds.
fn duration(name: &str, text: &str) -> BenchResult<Duration> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let number: u64 = number
        .parse()
        .context(format!("{name}: {text:?} is not a duration (e.g. 30m)"))?;
    let seconds = match unit {
        "s" => number,
        "m" => number * 60,
        "h" => number * 3600,
        _ => {
            return Err(BenchError::new(format!(
                "{name}: unit of {text:?} is s, m or h"
            )));
        }
    };
    if seconds == 0 {
        return Err(BenchError::new(format!("{name} must be longer than 0")));
    }
    Ok(Duration::from_secs(seconds))
}

/// What the soak started and made, removed at the end.
#[derive(Default)]
struct World {
    processes: Vec<ChildProcess>,
    /// The admin URL and the name of the database the soak created.
    database: Option<(String, String)>,
    /// Redis and the soak's key prefix.
    redis: Option<(String, String)>,
}

impl World {
    async fn tear_down(self) {
        for process in self.processes {
            process.stop().await;
        }
        if let Some((url, prefix)) = self.redis {
            let deleted = match stores::redis(&url).await {
                Ok(mut redis) => stores::delete_keys(&mut redis, &prefix).await.map(|_| ()),
                Err(error) => Err(error),
            };
            if let Err(error) = deleted {
                eprintln!("devicelink-bench: could not delete the Redis keys {prefix}*: {error}");
            }
        }
        if let Some((admin_url, name)) = self.database
            && let Err(error) = stores::drop_database(&admin_url, &name).await
        {
            eprintln!("devicelink-bench: could not drop database {name}: {error}");
        }
    }
}

/// Runs the soak, prints the table, writes the files and draws the chart.
pub async fn main(options: SoakOptions) -> ExitCode {
    let mut world = World::default();
    let mut samples = Vec::new();
    let outcome = soak(&options, &mut world, &mut samples).await;
    world.tear_down().await;
    if let Err(error) = &outcome {
        eprintln!("devicelink-bench: soak stopped: {error}");
    }
    let verdict = soak_report::verdict(&samples);
    println!("{}", soak_report::render(&samples, &verdict));
    let settings = json!({
        "duration_s": options.duration.as_secs(),
        "interval_s": options.interval.as_secs(),
        "users": options.shape.users,
        "link_rate": options.shape.link_rate,
        "poll_rate": options.shape.poll_rate,
        "watchers": options.shape.watchers,
        "service_threads": options.service_threads,
        "cpus": std::thread::available_parallelism().map_or(0, usize::from),
        "services": options.bin_dir.display().to_string(),
        "stopped_early": outcome.as_ref().err().map(ToString::to_string),
    });
    match soak_report::write(&options.out_dir, &samples, &verdict, settings) {
        Ok(json) => {
            eprintln!("devicelink-bench: wrote {} and soak.csv", json.display());
            match draw_chart(&options.python, &json) {
                Ok(png) => eprintln!("devicelink-bench: wrote {}", png.display()),
                Err(error) => eprintln!("devicelink-bench: WARNING: no chart: {error}"),
            }
        }
        Err(error) => eprintln!("devicelink-bench: {error}"),
    }
    if outcome.is_ok() && verdict.held {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_NOT_HELD)
    }
}

async fn soak(
    options: &SoakOptions,
    world: &mut World,
    samples: &mut Vec<Sample>,
) -> BenchResult<()> {
    let database_url = std::env::var(DATABASE_URL)
        .context("DATABASE_URL must be set (tests/bench/run.sh sets it)")?;
    let redis_url =
        std::env::var(REDIS_URL).context("REDIS_URL must be set (tests/bench/run.sh sets it)")?;
    let log_dir = options.out_dir.join("logs");
    std::fs::create_dir_all(&log_dir).context(format!("creating {}", log_dir.display()))?;
    let pid = std::process::id();
    let name = format!("soak_{pid}");
    eprintln!("devicelink-bench: creating database {name}");
    let soak_url = stores::create_database(&database_url, &name).await?;
    world.database = Some((database_url, name));
    let key_prefix = format!("devicelink-soak-{pid}:");
    world.redis = Some((redis_url.clone(), key_prefix.clone()));
    let token = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    let record_key = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    let admin = free_port()?;
    let mut watched = Vec::new();
    for (service, binary) in [
        ("registration", "registration-service"),
        ("authcode", "authcode-service"),
    ] {
        let metrics = free_port()?;
        let vars = [
            (ADMIN_LISTEN_ADDR, admin.to_string()),
            (DATABASE_URL, soak_url.clone()),
            (REDIS_URL, redis_url.clone()),
            (REDIS_KEY_PREFIX, key_prefix.clone()),
            (DEVICELINK_ADMIN_TOKEN, token.clone()),
            (
                devicelink_shared::code_record_seal::AUTH_CODE_RECORD_KEY,
                record_key.clone(),
            ),
            (SHUTDOWN_GRACE_SECS, "2".to_owned()),
            (METRICS_ADDR, metrics.to_string()),
        ];
        eprintln!("devicelink-bench: starting {binary}");
        let process = start_service(
            &options.bin_dir,
            (binary, binary),
            &vars,
            options.service_threads,
            &log_dir,
        )
        .await?;
        watched.push(Watched {
            name: service,
            pid: process.pid().context(format!("{binary} is not running"))?,
            metrics,
        });
        world.processes.push(process);
    }
    let [registration, authcode] = [&world.processes[0], &world.processes[1]].map(|p| p.addr);
    let app = prepare::create_app(admin, &token).await?;
    eprintln!(
        "devicelink-bench: linking {} users, then soaking for {:?}",
        options.shape.users, options.duration
    );
    // A connection takes at most `hardening::MAX_CONCURRENT_STREAMS` (100)
    // streams at once and a watch holds its stream for good: registration's
    // connections are counted for the watches too, so that watches never fill
    // a connection and leave the calls queued behind them.
    let flow = Flow::prepare(
        prepare::channels(authcode, 32).await?,
        prepare::channels(registration, 64 + options.shape.watchers).await?,
        app,
        options.shape,
    )
    .await?;
    let (stop, stopped) = watch::channel(false);
    let running = tokio::spawn(flow.clone().run(options.shape, stopped));
    let stores_cpu = cpu::stores_watch(&soak_url, &redis_url).await;
    let sampled = sample_every_interval(options, &flow, &watched, stores_cpu, samples).await;
    stop.send_replace(true);
    let _ = running.await;
    sampled
}

/// Records a [`Sample`] at the end of every interval until the duration has
/// passed or the soak is interrupted.
async fn sample_every_interval(
    options: &SoakOptions,
    flow: &Arc<Flow>,
    watched: &[Watched],
    stores: CpuWatch,
    samples: &mut Vec<Sample>,
) -> BenchResult<()> {
    let started = Instant::now();
    let cpu_watches: Vec<CpuWatch> = watched
        .iter()
        .map(|service| stores.with_subject(Some(service.pid)))
        .collect();
    let mut cpu_before: Vec<CpuSample> = cpu_watches.iter().map(CpuWatch::sample).collect();
    let mut next = tokio::time::Instant::now() + options.interval;
    let end = tokio::time::Instant::now() + options.duration;
    let mut interrupted = std::pin::pin!(interrupted());
    while next <= end {
        let mut pools = vec![PoolUse::default(); watched.len()];
        while tokio::time::Instant::now() < next {
            let read_again = (tokio::time::Instant::now() + POOL_READ_INTERVAL).min(next);
            tokio::select! {
                () = tokio::time::sleep_until(read_again) => {}
                () = &mut interrupted => return Err(BenchError::new("interrupted")),
            }
            for (pool, service) in pools.iter_mut().zip(watched) {
                *pool = pool.busiest(pool_use(service).await);
            }
        }
        next += options.interval;
        let calls = flow.recorder.take();
        let count: u64 = calls.iter().map(|stats| stats.count).sum();
        let now: Vec<CpuSample> = cpu_watches.iter().map(CpuWatch::sample).collect();
        let cpu: Vec<CpuPerCall> = cpu_before
            .iter()
            .zip(&now)
            .map(|(before, after)| CpuPerCall::between(before, after, count).unwrap_or_default())
            .collect();
        cpu_before = now;
        let mut services = Vec::with_capacity(watched.len());
        for ((service, pool), cpu) in watched.iter().zip(pools).zip(&cpu) {
            services.push(sample_service(service, pool, cpu.subject).await);
        }
        let sample = Sample {
            elapsed_s: started.elapsed().as_secs(),
            services,
            calls,
            skipped: flow.take_skipped(),
            open_watches: flow.open_watches(),
            cpu: CpuPerCall {
                subject: None,
                ..cpu.first().copied().unwrap_or_default()
            },
        };
        for stats in &sample.calls {
            if let Some(error) = &stats.last_error {
                eprintln!(
                    "devicelink-bench: {} {} failed; the last: {error}",
                    stats.errors,
                    stats.kind.name()
                );
            }
        }
        eprintln!("devicelink-bench: {}", progress(&sample));
        samples.push(sample);
    }
    Ok(())
}

/// One line per sample on stderr, to follow a long run.
fn progress(sample: &Sample) -> String {
    let services: Vec<String> = sample
        .services
        .iter()
        .map(|s| {
            format!(
                "{} rss {} KiB fds {}",
                s.name,
                s.rss_kib.map_or("?".into(), |v| v.to_string()),
                s.fds.map_or("?".into(), |v| v.to_string())
            )
        })
        .collect();
    let calls: u64 = sample.calls.iter().map(|c| c.count).sum();
    format!(
        "{:.1} min: {}; {calls} calls, {} watches open",
        sample.elapsed_s as f64 / 60.0,
        services.join(", "),
        sample.open_watches
    )
}

/// Draws `soak.png` beside `json`.
fn draw_chart(python: &str, json: &Path) -> BenchResult<PathBuf> {
    let png = json.with_file_name("soak.png");
    let status = Command::new(python)
        .arg(CHART_SCRIPT)
        .arg(json)
        .arg(&png)
        .status()
        .context(format!("running {python} {CHART_SCRIPT}"))?;
    if status.success() {
        Ok(png)
    } else {
        Err(BenchError::new(format!(
            "{CHART_SCRIPT} failed ({status}); it needs matplotlib \
             (pip install -r tests/bench/requirements.txt, or run tests/bench/run.sh)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(args: &[&str]) -> BenchResult<SoakOptions> {
        parse(args.iter().map(|arg| (*arg).to_owned()))
    }

    #[test]
    fn defaults_are_half_an_hour_sampled_every_minute() {
        let options = parsed(&["--soak", "--bin-dir", "x"]).expect("parses");
        assert_eq!(options.duration, Duration::from_secs(1800));
        assert_eq!(options.interval, Duration::from_secs(60));
    }

    #[test]
    fn durations_take_a_unit() {
        let options =
            parsed(&["--soak", "--duration", "4m", "--soak-interval", "20s"]).expect("parses");
        assert_eq!(options.duration, Duration::from_secs(240));
        assert_eq!(options.interval, Duration::from_secs(20));
        assert_eq!(duration("x", "1h").ok(), Some(Duration::from_secs(3600)));
        assert!(parsed(&["--soak", "--duration", "4d"]).is_err());
        assert!(parsed(&["--soak", "--duration", "0m"]).is_err());
        assert!(parsed(&["--soak", "--soak-users", "300", "--soak-watchers", "400"]).is_err());
        assert!(parsed(&["--soak", "--requests", "5"]).is_err());
    }
}
