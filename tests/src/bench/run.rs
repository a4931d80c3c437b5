//! A whole run: set the world up, run the scenarios, sample memory, tear
//! everything down whatever happened, then print and write the results.

use std::path::Path;
use std::process::ExitCode;

use devicelink_authcode::config::{AUDIT_MINT_EVENTS, AUTH_CODE_TTL_SECS};
use devicelink_registration::config::{
    ADMIN_LISTEN_ADDR, DEFAULT_ADMIN_LISTEN_ADDR, DEVICELINK_ADMIN_TOKEN,
};
use devicelink_shared::config::{
    DATABASE_URL, RATE_LIMIT_FAILED_AUTH_PER_ADDRESS, RATE_LIMIT_MINT_PER_EXTERNAL_ID,
    RATE_LIMIT_MINT_PER_KEY, REDIS_KEY_PREFIX, REDIS_URL, SHUTDOWN_GRACE_SECS,
};
use uuid::Uuid;

use super::cli::{FloorKind, Options};
use super::procs::{ChildProcess, free_port, start_floor, start_service};
use super::results::{ProcessMemory, Results, RunMeta};
use super::scenarios::{Setup, SubjectPids, run_all};
use super::stores::{self, BulkIds};
use super::{BenchError, BenchResult, Context, output, prepare, report};

/// The exit code of a run whose scenarios had errors or that stopped early.
const EXIT_ERRORS: u8 = 1;
/// The exit code of a full run that could not draw its chart.
const EXIT_NO_CHART: u8 = 3;

/// The processes a run started, stopped at the end.
#[derive(Default)]
struct Fleet {
    processes: Vec<ChildProcess>,
}

impl Fleet {
    fn memory(&self) -> Vec<ProcessMemory> {
        self.processes
            .iter()
            .map(|process| ProcessMemory {
                name: process.name.clone(),
                memory: process.memory().ok(),
            })
            .collect()
    }

    async fn stop(self) {
        for process in self.processes {
            process.stop().await;
        }
    }
}

/// What to remove at the end.
#[derive(Default)]
struct Leftovers {
    /// The database the run created: the admin URL and its name.
    database: Option<(String, String)>,
    /// The run's app in a database it did not create.
    app_in: Option<(String, Uuid)>,
    /// Redis and the run's key prefix.
    redis: Option<(String, String)>,
}

impl Leftovers {
    async fn remove(self) {
        if let Some((redis_url, prefix)) = self.redis {
            let deleted = match stores::redis(&redis_url).await {
                Ok(mut redis) => stores::delete_keys(&mut redis, &prefix).await,
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
        if let Some((database_url, app_id)) = self.app_in {
            let deleted = match stores::connect(&database_url).await {
                Ok(client) => client
                    .execute("DELETE FROM apps WHERE id = $1", &[&app_id])
                    .await
                    .context("deleting the run's app"),
                Err(error) => Err(error),
            };
            if let Err(error) = deleted {
                eprintln!("devicelink-bench: could not delete app {app_id}: {error}");
            }
        }
    }
}

/// Runs the benchmark, prints the table, writes the JSON and the chart.
pub async fn main(options: Options) -> ExitCode {
    let results = bench(&options).await;
    let targets = super::targets::targets(&results);
    println!("{}", report::render(&results, &targets));
    let mut code = if results.failed() { EXIT_ERRORS } else { 0 };
    match output::write_json(&options.out_dir, &results, &targets) {
        Ok(path) => {
            eprintln!("devicelink-bench: wrote {}", path.display());
            if !options.smoke {
                match output::draw_chart(&options.python, &path) {
                    Ok(png) => eprintln!("devicelink-bench: wrote {}", png.display()),
                    Err(error) => {
                        eprintln!("devicelink-bench: WARNING: no chart: {error}");
                        code = code.max(EXIT_NO_CHART);
                    }
                }
            }
        }
        Err(error) => {
            eprintln!("devicelink-bench: {error}");
            code = code.max(EXIT_ERRORS);
        }
    }
    ExitCode::from(code)
}

/// Sets up, runs and tears down; what failed is in `aborted`.
async fn bench(options: &Options) -> Results {
    let mut results = Results::new(RunMeta {
        smoke: options.smoke,
        client_threads: options.client_threads,
        service_threads: options.service_threads,
        pool_size: options.pool_size,
        requests: options.requests,
        cpus: std::thread::available_parallelism().map_or(0, usize::from),
        services: match options.running {
            Some(_) => "running (given addresses)".into(),
            None => options.bin_dir.display().to_string(),
        },
    });
    let mut fleet = Fleet::default();
    let mut leftovers = Leftovers::default();
    let run = set_up_and_run(options, &mut fleet, &mut leftovers, &mut results);
    let outcome = tokio::select! {
        outcome = run => outcome,
        () = interrupted() => Err(BenchError::new("interrupted")),
    };
    if let Err(error) = outcome {
        eprintln!("devicelink-bench: {error}");
        results.aborted = Some(error.to_string());
    }
    results.memory = fleet.memory();
    fleet.stop().await;
    leftovers.remove().await;
    results
}

async fn set_up_and_run(
    options: &Options,
    fleet: &mut Fleet,
    leftovers: &mut Leftovers,
    results: &mut Results,
) -> BenchResult<()> {
    let database_url = std::env::var(DATABASE_URL)
        .context("DATABASE_URL must be set (tests/bench/run.sh sets it)")?;
    let redis_url =
        std::env::var(REDIS_URL).context("REDIS_URL must be set (tests/bench/run.sh sets it)")?;
    let log_dir = options.out_dir.join("logs");
    std::fs::create_dir_all(&log_dir).context(format!("creating {}", log_dir.display()))?;
    let pid = std::process::id();
    let key_prefix = format!("devicelink-bench-{pid}:");
    leftovers.redis = Some((redis_url.clone(), key_prefix.clone()));

    let admin_database_url = database_url.clone();
    let mut authcode_without_mint_events = None;
    let mut authcode_without_limits = None;
    let (authcode, registration, admin, database_url, admin_token) = match options.running {
        Some(running) => {
            let token = std::env::var(DEVICELINK_ADMIN_TOKEN)
                .context("DEVICELINK_ADMIN_TOKEN must be set to the running services' token")?;
            // The running registration's admin listener: devicelinkctl's
            // variable, else the default address.
            let admin = match std::env::var("DEVICELINK_ADMIN_ADDR") {
                Ok(addr) => addr
                    .trim_start_matches("http://")
                    .parse()
                    .context("DEVICELINK_ADMIN_ADDR must be host:port")?,
                Err(_) => DEFAULT_ADMIN_LISTEN_ADDR,
            };
            (
                running.authcode,
                running.registration,
                admin,
                database_url,
                token,
            )
        }
        None => {
            let name = format!("bench_{pid}");
            eprintln!("devicelink-bench: creating database {name}");
            // The floors reach Postgres in plaintext on loopback, so the
            // services do too (a URL without `sslmode` would negotiate TLS,
            // as libpq does), unless the URL says otherwise.
            let bench_url =
                stores::plaintext_unless_set(&stores::create_database(&database_url, &name).await?);
            leftovers.database = Some((database_url, name));
            let token = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
            let started = start_services(
                options,
                fleet,
                &bench_url,
                &redis_url,
                &key_prefix,
                &token,
                &log_dir,
            )
            .await?;
            authcode_without_mint_events = Some(started.authcode_without_mint_events);
            authcode_without_limits = Some(started.authcode_without_limits);
            (
                started.authcode,
                started.registration,
                started.admin,
                bench_url,
                token,
            )
        }
    };
    let floor_vars = [
        (REDIS_URL, redis_url.clone()),
        (REDIS_KEY_PREFIX, key_prefix.clone()),
    ];
    let mut floor_addrs = Vec::new();
    for kind in [FloorKind::Echo, FloorKind::RedisSet] {
        let floor = start_floor(kind, &floor_vars, options.service_threads, &log_dir).await?;
        floor_addrs.push(floor.addr);
        fleet.processes.push(floor);
    }
    let [echo, redis_set] = floor_addrs[..] else {
        return Err(BenchError::new("two floors were started"));
    };
    let watch = super::cpu::stores_watch(&database_url, &redis_url).await;
    let pid_of = |name: &str| {
        fleet
            .processes
            .iter()
            .find(|process| process.name == name)
            .and_then(ChildProcess::pid)
    };
    let pids = SubjectPids {
        authcode: pid_of("authcode-service"),
        authcode_without_mint_events: pid_of(AUTHCODE_WITHOUT_MINT_EVENTS),
        authcode_without_limits: pid_of(AUTHCODE_WITHOUT_LIMITS),
        registration: pid_of("registration-service"),
        echo: pid_of(&format!("floor-{}", FloorKind::Echo.as_arg())),
        redis_set: pid_of(&format!("floor-{}", FloorKind::RedisSet.as_arg())),
    };
    let app = prepare::create_app(admin, &admin_token).await?;
    if options.running.is_some() {
        leftovers.app_in = Some((database_url.clone(), app.app_id));
    }
    let setup = Setup {
        options: options.clone(),
        authcode,
        authcode_without_mint_events,
        authcode_without_limits,
        registration,
        echo,
        redis_set,
        database_url,
        admin_database_url,
        redis_url,
        key_prefix,
        app,
        bulk_ids: BulkIds::new(),
        watch,
        pids,
    };
    run_all(&setup, results).await
}

/// A service process a run starts.
struct ServiceProcess {
    /// The binary.
    binary: &'static str,
    /// The name it runs as (its log's name).
    name: &'static str,
    /// The variables it adds to the shared ones.
    vars: &'static [(&'static str, &'static str)],
}

/// The service processes a run starts, in order. The second authcode
/// records no mint as an audit event and the third runs without rate
/// limits, for the benchmark to weigh what each costs a mint.
const SERVICES: [ServiceProcess; 4] = [
    ServiceProcess {
        binary: "registration-service",
        name: "registration-service",
        vars: &[],
    },
    ServiceProcess {
        binary: "authcode-service",
        name: "authcode-service",
        vars: &[],
    },
    ServiceProcess {
        binary: "authcode-service",
        name: AUTHCODE_WITHOUT_MINT_EVENTS,
        vars: &[(AUDIT_MINT_EVENTS, "false")],
    },
    ServiceProcess {
        binary: "authcode-service",
        name: AUTHCODE_WITHOUT_LIMITS,
        vars: &[
            (RATE_LIMIT_MINT_PER_KEY, "off"),
            (RATE_LIMIT_MINT_PER_EXTERNAL_ID, "off"),
            (RATE_LIMIT_FAILED_AUTH_PER_ADDRESS, "off"),
        ],
    },
];

/// How long the benchmark's codes (and floor (b)'s keys) live: the
/// longest a code may. h2load's answers are confirmed by counting the
/// run's keys before and after it, and keys of earlier rounds that expired
/// meanwhile made a run longer than the default 600 s fall short (a
/// 9-round run's last rows showed every 200 unconfirmed). The cost of a
/// write does not depend on its expiry.
pub(super) const BENCH_CODE_TTL_SECS: u64 = devicelink_authcode::config::MAX_CODE_TTL_SECS;

/// The process name of the authcode that records no mint events.
pub(super) const AUTHCODE_WITHOUT_MINT_EVENTS: &str = "authcode-service-no-mint-events";
/// The process name of the authcode without rate limits.
pub(super) const AUTHCODE_WITHOUT_LIMITS: &str = "authcode-service-no-limits";

/// The addresses of the services a run started.
pub(super) struct ServiceAddrs {
    pub registration: std::net::SocketAddr,
    pub admin: std::net::SocketAddr,
    pub authcode: std::net::SocketAddr,
    pub authcode_without_mint_events: std::net::SocketAddr,
    pub authcode_without_limits: std::net::SocketAddr,
}

/// Starts registration (which migrates the fresh database), then the three
/// authcodes ([`SERVICES`]).
async fn start_services(
    options: &Options,
    fleet: &mut Fleet,
    database_url: &str,
    redis_url: &str,
    key_prefix: &str,
    admin_token: &str,
    log_dir: &Path,
) -> BenchResult<ServiceAddrs> {
    let admin = free_port()?;
    let shared = [
        (ADMIN_LISTEN_ADDR, admin.to_string()),
        (DATABASE_URL, database_url.to_owned()),
        (REDIS_URL, redis_url.to_owned()),
        (REDIS_KEY_PREFIX, key_prefix.to_owned()),
        (DEVICELINK_ADMIN_TOKEN, admin_token.to_owned()),
        (
            devicelink_shared::code_record_seal::AUTH_CODE_RECORD_KEY,
            devicelink_shared::secret::base32(&devicelink_shared::secret::random_bytes::<32>()),
        ),
        (AUTH_CODE_TTL_SECS, BENCH_CODE_TTL_SECS.to_string()),
        (SHUTDOWN_GRACE_SECS, "2".to_owned()),
    ];
    let mut addrs = Vec::new();
    for service in SERVICES {
        eprintln!("devicelink-bench: starting {}", service.name);
        let vars: Vec<(&str, String)> = shared
            .iter()
            .cloned()
            .chain(
                service
                    .vars
                    .iter()
                    .map(|(var, value)| (*var, (*value).to_owned())),
            )
            .collect();
        let process = start_service(
            &options.bin_dir,
            (service.binary, service.name),
            &vars,
            options.service_threads,
            log_dir,
        )
        .await?;
        addrs.push(process.addr);
        fleet.processes.push(process);
    }
    match addrs[..] {
        [
            registration,
            authcode,
            authcode_without_mint_events,
            authcode_without_limits,
        ] => Ok(ServiceAddrs {
            registration,
            admin,
            authcode,
            authcode_without_mint_events,
            authcode_without_limits,
        }),
        _ => Err(BenchError::new("four services were started")),
    }
}

/// SIGINT or SIGTERM: either way the services and the database the run
/// made are cleaned up before the benchmark (or the soak) exits.
pub(super) async fn interrupted() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
