//! The command line: what to measure, how hard, and where the pieces are.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::results::Call;
use super::{BenchError, BenchResult, Context};

/// The help text, printed by `--help` and after a bad option.
pub const USAGE: &str = "\
devicelink-bench: MintAuthCode, CreateUser and GetInstallStatus under load,
each beside its floor, in one run on this machine (loopback only).

usage: devicelink-bench [options]

  --smoke                    a few requests per scenario at concurrency 1 and 4,
                             1,000 users only, no chart: checks the tool works
  --bin-dir DIR              where authcode-service and registration-service are
                             (default: the directory of this binary)
  --authcode-addr ADDR       use a running authcode-service (with
  --registration-addr ADDR   --registration-addr); DATABASE_URL must then be its
                             database, DEVICELINK_ADMIN_TOKEN its admin token and
                             DEVICELINK_ADMIN_ADDR its admin listener (default
                             127.0.0.1:50053)
  --requests N               requests per scenario at concurrency 16 and more
                             (default 10000; CreateUser runs half as many,
                             concurrency 1 a tenth to a fifth)
  --users N                  users in the database for the second data-growth
                             measurement (default 1000000; 1000 for the first,
                             so 1000 or less skips the second)
  --rounds N                 runs of each call and its floor, taken in turns;
                             the table keeps each one's median by req/s
                             (default 3, smoke 1; data growth takes the
                             median of as many runs)
  --only create-user         measure only CreateUser (new users and restorations)
                             and floor (c), e.g. while profiling
  --only mint                measure only MintAuthCode and floors (a) and (b),
                             with their h2load rows: the client's headroom
  --only flood               measure only the flood scenario: MintAuthCode and
                             CreateUser paced at c=16, alone and while another
                             address floods bad credentials at 10x their rate
  --scenario-timeout SECS    deadline of each scenario (default 60, smoke 15)
  --client-threads N         threads of the gRPC load generator, each with its
                             own runtime and connections (default 1); the
                             runtime driving floors (c), (d) and the flood has
                             as many worker threads
  --service-threads N        TOKIO_WORKER_THREADS of the services and the floor
                             servers (default: unset, one per core)
  --pool-size N              Postgres connections of floors (c) and (d)
                             (default: DATABASE_POOL_SIZE, else 16, as the service)
  --out-dir DIR              where results.json and chart.png go
                             (default target/bench)
  --python PATH              Python with matplotlib for the chart
                             (default: $BENCH_PYTHON, else python3)

  --soak                     the soak instead (see below)

environment: DATABASE_URL (a role that may CREATE DATABASE), REDIS_URL;
tests/bench/run.sh provides both and builds the release binaries.
";

/// Threads of the load generator when `--client-threads` is not given.
/// One, as h2load's default: on the 2-core machine this benchmark was
/// written on, one client thread costs no more CPU per call than h2load
/// and drives floor (a) as hard; two spent more per call (more wake-ups,
/// each carrying fewer requests) and competed with the server for the two
/// cores. More cores may want more.
pub const DEFAULT_CLIENT_THREADS: usize = 1;

/// Which floor server `--serve-floor` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloorKind {
    /// (a): `MintAuthCode` answers a constant.
    Echo,
    /// (b): `MintAuthCode` does one Redis `SET key value EX 3600`.
    RedisSet,
}

impl FloorKind {
    /// The name on the command line.
    pub fn as_arg(self) -> &'static str {
        match self {
            Self::Echo => "echo",
            Self::RedisSet => "redis-set",
        }
    }

    fn parse(text: &str) -> BenchResult<Self> {
        match text {
            "echo" => Ok(Self::Echo),
            "redis-set" => Ok(Self::RedisSet),
            other => Err(BenchError::new(format!(
                "--serve-floor: unknown floor {other:?} (echo or redis-set)"
            ))),
        }
    }
}

/// What the binary was asked to do.
#[derive(Debug)]
pub enum Command {
    /// Run the benchmark.
    Bench(Options),
    /// Serve a floor on `listen` (a child process of a benchmark run).
    ServeFloor {
        /// Which floor.
        kind: FloorKind,
        /// Where to listen; port 0 picks a free one, printed on stdout.
        listen: SocketAddr,
    },
    /// Run the soak ([`super::soak`]).
    Soak(super::soak::SoakOptions),
    /// Print [`USAGE`].
    Help,
}

/// The part of the plan `--only` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Only {
    /// `CreateUser` (new users and restorations) beside floor (c).
    CreateUser,
    /// The flood scenario ([`super::flood`]).
    Flood,
    /// `MintAuthCode` and floors (a) and (b), with h2load's rows.
    Mint,
}

/// Services already running, to measure instead of starting our own.
#[derive(Debug, Clone, Copy)]
pub struct RunningServices {
    /// authcode's address.
    pub authcode: SocketAddr,
    /// registration's address.
    pub registration: SocketAddr,
}

/// The benchmark's options.
#[derive(Debug, Clone)]
pub struct Options {
    /// The tiny CI mode.
    pub smoke: bool,
    /// Where the service binaries are.
    pub bin_dir: PathBuf,
    /// Running services, when given.
    pub running: Option<RunningServices>,
    /// Requests per scenario at concurrency 16 and more.
    pub requests: usize,
    /// Runs of each call and of its floor, alternating; the median counts.
    pub rounds: usize,
    /// Users in the database for the large data-growth measurement; `None`
    /// skips it (smoke).
    pub large_user_count: Option<u64>,
    /// Measure only part of the plan (`--only`); `None` runs all of it.
    pub only: Option<Only>,
    /// The deadline of each scenario.
    pub scenario_timeout: Duration,
    /// Threads of the gRPC load generator ([`super::grpc_load`]), and
    /// worker threads of the runtime that drives the SQL floors.
    pub client_threads: usize,
    /// `TOKIO_WORKER_THREADS` for the servers; `None` leaves it unset.
    pub service_threads: Option<usize>,
    /// Connections of the SQL floors.
    pub pool_size: usize,
    /// Where the results go.
    pub out_dir: PathBuf,
    /// The Python interpreter that draws the chart.
    pub python: String,
}

impl Options {
    /// The concurrencies of `MintAuthCode` (and floors (a), (b)).
    pub fn mint_concurrencies(&self) -> Vec<usize> {
        if self.smoke {
            vec![1, 4]
        } else {
            vec![1, 16, 64, 256]
        }
    }

    /// The concurrencies of `CreateUser` (new users and restorations).
    pub fn create_concurrencies(&self) -> Vec<usize> {
        if self.smoke {
            vec![1, 4]
        } else {
            vec![1, 16, 64]
        }
    }

    /// The concurrencies of `GetInstallStatus`.
    pub fn status_concurrencies(&self) -> Vec<usize> {
        if self.smoke { vec![1, 4] } else { vec![16, 64] }
    }

    /// The concurrency of the data-growth comparison.
    pub fn growth_concurrency(&self) -> usize {
        if self.smoke { 4 } else { 16 }
    }

    /// How many requests a `MintAuthCode`-like scenario sends at
    /// `concurrency`: one at a time is slow, so a fifth.
    pub fn mint_requests(&self, concurrency: usize) -> usize {
        if concurrency == 1 && !self.smoke {
            (self.requests / 5).max(1)
        } else {
            self.requests
        }
    }

    /// How many requests a `CreateUser` scenario sends: half of
    /// `--requests`, a tenth at concurrency 1.
    pub fn create_requests(&self, concurrency: usize) -> usize {
        if self.smoke {
            self.requests
        } else if concurrency == 1 {
            (self.requests / 10).max(1)
        } else {
            (self.requests / 2).max(1)
        }
    }

    /// The legitimate tasks of the flood scenario.
    pub fn flood_concurrency(&self) -> usize {
        if self.smoke { 4 } else { 16 }
    }

    /// The pace of the flood scenario's legitimate `call`s, in requests
    /// per second: well below what the call can do here (about 11,000/s
    /// for `MintAuthCode`, 1,700/s for `CreateUser` at c=16), so that ten
    /// times it, the flood, is a rate this 2-core machine can still send.
    pub fn flood_legit_rate(&self, call: Call) -> f64 {
        match (call, self.smoke) {
            (Call::MintAuthCode, false) => 500.0,
            (_, false) => 100.0,
            (Call::MintAuthCode, true) => 100.0,
            (_, true) => 50.0,
        }
    }

    /// How long each paced run of the flood scenario lasts.
    pub fn flood_run_time(&self) -> Duration {
        Duration::from_secs(if self.smoke { 2 } else { 10 })
    }

    /// Untimed requests sent before a scenario's timed ones, to open
    /// connections and fill caches.
    pub fn warmup_requests(&self, requests: usize, concurrency: usize) -> usize {
        (requests / 10).max(concurrency).min(1_000)
    }
}

/// Reads the command line (without the program name).
pub fn parse(args: impl IntoIterator<Item = String>) -> BenchResult<Command> {
    let args: Vec<String> = args.into_iter().collect();
    if args.iter().any(|arg| arg == "--soak") {
        return super::soak::parse(args).map(Command::Soak);
    }
    let mut args = args.into_iter();
    let mut smoke = false;
    let mut bin_dir = None;
    let mut authcode_addr = None;
    let mut registration_addr = None;
    let mut requests = None;
    let mut users = 1_000_000_u64;
    let mut timeout_secs = None;
    let mut rounds = None;
    let mut only = None;
    let mut client_threads = DEFAULT_CLIENT_THREADS;
    let mut service_threads = None;
    let mut pool_size = None;
    let mut out_dir = PathBuf::from("target/bench");
    let mut python = None;
    let mut serve_floor = None;
    let mut listen = None;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().context(format!("{name} needs a value"));
        match arg.as_str() {
            "--help" | "-h" => return Ok(Command::Help),
            "--smoke" => smoke = true,
            "--bin-dir" => bin_dir = Some(PathBuf::from(value(&arg)?)),
            "--authcode-addr" => authcode_addr = Some(number(&arg, &value(&arg)?)?),
            "--registration-addr" => registration_addr = Some(number(&arg, &value(&arg)?)?),
            "--requests" => requests = Some(positive(&arg, &value(&arg)?)?),
            "--users" => users = number(&arg, &value(&arg)?)?,
            "--rounds" => rounds = Some(positive(&arg, &value(&arg)?)?),
            "--only" => {
                only = Some(match value(&arg)?.as_str() {
                    "create-user" => Only::CreateUser,
                    "flood" => Only::Flood,
                    "mint" => Only::Mint,
                    other => {
                        return Err(BenchError::new(format!(
                            "--only: unknown part {other:?} (create-user, flood or mint)"
                        )));
                    }
                });
            }
            "--scenario-timeout" => timeout_secs = Some(positive(&arg, &value(&arg)?)?),
            "--client-threads" => client_threads = positive(&arg, &value(&arg)?)?,
            "--service-threads" => service_threads = Some(positive(&arg, &value(&arg)?)?),
            "--pool-size" => pool_size = Some(positive(&arg, &value(&arg)?)?),
            "--out-dir" => out_dir = PathBuf::from(value(&arg)?),
            "--python" => python = Some(value(&arg)?),
            "--serve-floor" => serve_floor = Some(FloorKind::parse(&value(&arg)?)?),
            "--listen" => listen = Some(number(&arg, &value(&arg)?)?),
            other => return Err(BenchError::new(format!("unknown option {other:?}"))),
        }
    }
    if let Some(kind) = serve_floor {
        let listen = listen.context("--serve-floor needs --listen ADDR")?;
        return Ok(Command::ServeFloor { kind, listen });
    }
    let running = match (authcode_addr, registration_addr) {
        (Some(authcode), Some(registration)) => Some(RunningServices {
            authcode,
            registration,
        }),
        (None, None) => None,
        _ => {
            return Err(BenchError::new(
                "--authcode-addr and --registration-addr go together",
            ));
        }
    };
    for addr in running.iter().flat_map(|r| [r.authcode, r.registration]) {
        if !addr.ip().is_loopback() {
            return Err(BenchError::new(format!(
                "{addr} is not a loopback address: the benchmark sends traffic to this machine only"
            )));
        }
    }
    let bin_dir = match bin_dir {
        Some(dir) => dir,
        None => std::env::current_exe()
            .context("finding this binary's directory (give --bin-dir)")?
            .parent()
            .context("this binary has no directory (give --bin-dir)")?
            .to_path_buf(),
    };
    let pool_size = match pool_size {
        Some(size) => size,
        None => devicelink_shared::config::parsed_or(
            devicelink_shared::config::DATABASE_POOL_SIZE,
            16_usize,
        )
        .context("reading the pool size")?,
    };
    let python = python
        .or_else(|| std::env::var("BENCH_PYTHON").ok())
        .unwrap_or_else(|| "python3".into());
    Ok(Command::Bench(Options {
        smoke,
        bin_dir,
        running,
        requests: requests.unwrap_or(if smoke { 20 } else { 10_000 }),
        large_user_count: (!smoke && users > 1_000).then_some(users),
        rounds: rounds.unwrap_or(if smoke { 1 } else { 3 }),
        only,
        scenario_timeout: Duration::from_secs(timeout_secs.unwrap_or(if smoke { 15 } else { 60 })),
        client_threads,
        service_threads,
        pool_size,
        out_dir,
        python,
    }))
}

fn number<T>(name: &str, text: &str) -> BenchResult<T>
where
    T: std::str::FromStr,
    T::Err: std::error::Error,
{
    text.parse()
        .context(format!("{name}: {text:?} does not parse"))
}

fn positive<T>(name: &str, text: &str) -> BenchResult<T>
where
    T: std::str::FromStr + Default + PartialOrd,
    T::Err: std::error::Error,
{
    let value: T = number(name, text)?;
    if value <= T::default() {
        return Err(BenchError::new(format!("{name} must be at least 1")));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(args: &[&str]) -> BenchResult<Command> {
        parse(args.iter().map(|arg| (*arg).to_owned()))
    }

    #[test]
    fn smoke_is_small() {
        let Ok(Command::Bench(options)) = parsed(&["--smoke", "--bin-dir", "target/debug"]) else {
            panic!("smoke parses");
        };
        assert_eq!(options.requests, 20);
        assert_eq!(options.large_user_count, None);
        assert_eq!(options.mint_concurrencies(), vec![1, 4]);
        assert_eq!(options.only, None);
    }

    #[test]
    fn only_names_a_part() {
        let Ok(Command::Bench(options)) = parsed(&["--only", "flood", "--bin-dir", "x"]) else {
            panic!("--only flood parses");
        };
        assert_eq!(options.only, Some(Only::Flood));
        assert!(parsed(&["--only", "everything"]).is_err());
    }

    #[test]
    fn floors_need_an_address_and_services_go_in_pairs() {
        assert!(parsed(&["--serve-floor", "echo"]).is_err());
        assert!(matches!(
            parsed(&["--serve-floor", "redis-set", "--listen", "127.0.0.1:0"]),
            Ok(Command::ServeFloor {
                kind: FloorKind::RedisSet,
                ..
            })
        ));
        assert!(parsed(&["--authcode-addr", "127.0.0.1:50051"]).is_err());
        assert!(
            parsed(&[
                "--authcode-addr",
                "10.0.0.1:50051",
                "--registration-addr",
                "127.0.0.1:50052"
            ])
            .is_err()
        );
        assert!(parsed(&["--requests", "0"]).is_err());
    }
}
