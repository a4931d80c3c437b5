//! What a run measured, gathered for the table, the JSON and the chart.

use std::collections::BTreeMap;
use std::time::Duration;

use super::load::{LoadOutcome, LoadSpec};
use super::procs::MemoryUse;

/// A measured call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `AuthCodeService.MintAuthCode`.
    MintAuthCode,
    /// `RegistrationService.CreateUser` for users that do not exist yet.
    CreateUserNew,
    /// `CreateUser` restoring existing users on a new phone.
    CreateUserRestore,
    /// `RegistrationService.GetInstallStatus`, as SDKs call it: a set of
    /// devices polling, each asking again and again.
    GetInstallStatus,
    /// `GetInstallStatus` with a token never asked about before: what the
    /// first poll after a redemption or a restart costs (no target).
    GetInstallStatusFirstPoll,
    /// `CreateUser` for new users, measured for the data-growth comparison.
    CreateUserGrowth,
}

impl Call {
    /// The name in the table.
    pub fn label(self) -> &'static str {
        match self {
            Self::MintAuthCode => "MintAuthCode",
            Self::CreateUserNew => "CreateUser new",
            Self::CreateUserRestore => "CreateUser restore",
            Self::GetInstallStatus => "GetInstallStatus",
            Self::GetInstallStatusFirstPoll => "GetInstallStatus first",
            Self::CreateUserGrowth => "CreateUser new (growth)",
        }
    }

    /// The name in the JSON.
    pub fn key(self) -> &'static str {
        match self {
            Self::MintAuthCode => "mint_auth_code",
            Self::CreateUserNew => "create_user_new",
            Self::CreateUserRestore => "create_user_restore",
            Self::GetInstallStatus => "get_install_status",
            Self::GetInstallStatusFirstPoll => "get_install_status_first_poll",
            Self::CreateUserGrowth => "create_user_growth",
        }
    }

    /// The floor the call is compared with.
    pub fn floor(self) -> Option<Subject> {
        match self {
            Self::MintAuthCode => Some(Subject::FloorRedisSet),
            Self::CreateUserNew | Self::CreateUserRestore => Some(Subject::FloorSql),
            Self::GetInstallStatus | Self::GetInstallStatusFirstPoll => {
                Some(Subject::FloorPrimaryKey)
            }
            Self::CreateUserGrowth => None,
        }
    }
}

/// What served the calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// The devicelink service.
    Service,
    /// authcode recording no mint as an audit event (`AUDIT_MINT_EVENTS`
    /// false): what the events cost a mint.
    ServiceWithoutMintEvents,
    /// authcode with every rate limit off (`RATE_LIMIT_*=off`): what the
    /// limiter costs a mint.
    ServiceWithoutLimits,
    /// Floor (a): tonic doing nothing.
    FloorEcho,
    /// Floor (b): tonic doing one Redis `SET .. EX`.
    FloorRedisSet,
    /// Floor (c): the redemption's statements one after another.
    FloorSql,
    /// Floor (d): a primary-key lookup.
    FloorPrimaryKey,
}

impl Subject {
    /// Whether this is an authcode run with a feature off, measured only
    /// against the service itself.
    pub fn is_service_variant(self) -> bool {
        matches!(
            self,
            Self::ServiceWithoutMintEvents | Self::ServiceWithoutLimits
        )
    }

    /// The name in the table.
    pub fn label(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::ServiceWithoutMintEvents => "no mint events",
            Self::ServiceWithoutLimits => "no rate limits",
            Self::FloorEcho => "(a) tonic echo",
            Self::FloorRedisSet => "(b) redis SET",
            Self::FloorSql => "(c) SQL sequence",
            Self::FloorPrimaryKey => "(d) PK lookup",
        }
    }

    /// The name in the JSON.
    pub fn key(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::ServiceWithoutMintEvents => "service_without_mint_events",
            Self::ServiceWithoutLimits => "service_without_rate_limits",
            Self::FloorEcho => "floor_a_echo",
            Self::FloorRedisSet => "floor_b_redis_set",
            Self::FloorSql => "floor_c_sql_sequence",
            Self::FloorPrimaryKey => "floor_d_pk_lookup",
        }
    }
}

/// Which load generator sent the calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// The benchmark's own ([`super::grpc_load`], or [`super::load`] for
    /// floors (c) and (d)).
    Bench,
    /// h2load, the reference ([`super::h2load`]).
    H2load,
}

impl Client {
    /// The name in the table and the JSON.
    pub fn key(self) -> &'static str {
        match self {
            Self::Bench => "bench",
            Self::H2load => "h2load",
        }
    }
}

/// One scenario's figures.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// Who sent the calls.
    pub client: Client,
    /// The call.
    pub call: Call,
    /// Who answered it.
    pub subject: Subject,
    /// Tasks calling at once.
    pub concurrency: usize,
    /// Users in the database when it ran (growth scenarios).
    pub users_in_db: Option<i64>,
    /// The timed requests.
    pub requests: usize,
    /// What the load generator saw.
    pub outcome: LoadOutcome,
}

impl Measurement {
    /// Whether any request failed or was never sent.
    pub fn had_errors(&self) -> bool {
        self.outcome.error_count() > 0 || self.outcome.not_sent > 0
    }
}

/// The gRPC code the services refuse a limited caller with, as the load
/// generator tallies it ([`super::load::CallError`]).
pub const REFUSED: &str = "ResourceExhausted";

/// What the flood sent and how it was answered.
#[derive(Debug, Clone, Default)]
pub struct FloodTally {
    /// Calls sent (every answer is in `outcomes`).
    pub sent: u64,
    /// Answers by gRPC code (`ok` for a success, which a flood of made-up
    /// credentials should never get).
    pub outcomes: BTreeMap<String, u64>,
    /// Calls due but not sent because as many were already in flight as
    /// the flood allows.
    pub skipped: u64,
    /// How long it flooded.
    pub elapsed: Duration,
}

impl FloodTally {
    /// Adds another round's tally.
    pub fn add(&mut self, other: &Self) {
        self.sent += other.sent;
        self.skipped += other.skipped;
        self.elapsed += other.elapsed;
        for (kind, count) in &other.outcomes {
            *self.outcomes.entry(kind.clone()).or_default() += count;
        }
    }

    /// Calls refused by a rate limit.
    pub fn refused(&self) -> u64 {
        self.outcomes.get(REFUSED).copied().unwrap_or(0)
    }

    /// Calls sent per second.
    pub fn rate(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.sent as f64 / seconds
        } else {
            0.0
        }
    }
}

/// One call of the flood scenario: legitimate traffic alone and while
/// another address floods bad credentials.
#[derive(Debug, Clone)]
pub struct FloodMeasurement {
    /// The legitimate call.
    pub call: Call,
    /// Its tasks.
    pub concurrency: usize,
    /// Its pace, requests per second.
    pub legit_rate: f64,
    /// The flood's pace, requests per second.
    pub flood_rate: f64,
    /// The timed requests of each legitimate run.
    pub requests: usize,
    /// The legitimate calls without the flood (median run by p99).
    pub alone: LoadOutcome,
    /// The legitimate calls with it (median run by p99).
    pub flooded: LoadOutcome,
    /// The flood, over every round.
    pub flood: FloodTally,
}

impl FloodMeasurement {
    /// Legitimate calls refused by a rate limit, with or without the flood.
    pub fn legit_refused(&self) -> u64 {
        [&self.alone, &self.flooded]
            .iter()
            .filter_map(|outcome| outcome.errors.get(REFUSED))
            .sum()
    }

    /// Whether a legitimate call failed (refusals included) or was never
    /// sent. The flood's own refusals are expected and never count.
    pub fn had_errors(&self) -> bool {
        [&self.alone, &self.flooded]
            .iter()
            .any(|outcome| outcome.error_count() > 0 || outcome.not_sent > 0)
    }
}

/// The memory of one process the run started.
#[derive(Debug, Clone)]
pub struct ProcessMemory {
    /// The process.
    pub name: String,
    /// Its memory after the runs, if it could be read.
    pub memory: Option<MemoryUse>,
}

/// How the run was set up.
#[derive(Debug, Clone)]
pub struct RunMeta {
    /// The tiny CI mode.
    pub smoke: bool,
    /// Load generator threads.
    pub client_threads: usize,
    /// `TOKIO_WORKER_THREADS` of the servers.
    pub service_threads: Option<usize>,
    /// Connections of the SQL floors.
    pub pool_size: usize,
    /// `--requests`.
    pub requests: usize,
    /// Cores of this machine.
    pub cpus: usize,
    /// Where the services came from (or "running").
    pub services: String,
}

/// Everything a run measured.
#[derive(Debug, Clone)]
pub struct Results {
    /// The set-up.
    pub meta: RunMeta,
    /// Each scenario, in the order run.
    pub measurements: Vec<Measurement>,
    /// The flood scenario, one per legitimate call.
    pub floods: Vec<FloodMeasurement>,
    /// Memory of the processes the run started.
    pub memory: Vec<ProcessMemory>,
    /// Bulk loads: users after the load, and how long it took.
    pub bulk_loads: Vec<(u64, Duration)>,
    /// Why the run stopped early, if it did.
    pub aborted: Option<String>,
    /// The benchmark's client's floor (a) req/s over h2load's by
    /// concurrency: the median of each round's ratio, the two runs of a
    /// round taken one right after the other.
    pub client_headroom: BTreeMap<usize, f64>,
}

impl Results {
    /// An empty result set for `meta`.
    pub fn new(meta: RunMeta) -> Self {
        Self {
            meta,
            measurements: Vec::new(),
            floods: Vec::new(),
            memory: Vec::new(),
            bulk_loads: Vec::new(),
            aborted: None,
            client_headroom: BTreeMap::new(),
        }
    }

    /// The measurement of `call` by `subject` at `concurrency`, driven by
    /// the benchmark's own client.
    pub fn find(&self, call: Call, subject: Subject, concurrency: usize) -> Option<&Measurement> {
        self.find_by(Client::Bench, call, subject, concurrency)
    }

    /// The measurement of `call` by `subject` at `concurrency` driven by
    /// `client`.
    pub fn find_by(
        &self,
        client: Client,
        call: Call,
        subject: Subject,
        concurrency: usize,
    ) -> Option<&Measurement> {
        self.measurements.iter().find(|measurement| {
            measurement.client == client
                && measurement.call == call
                && measurement.subject == subject
                && measurement.concurrency == concurrency
        })
    }

    /// Whether the run is in error: stopped early, or a scenario had
    /// failed or unsent requests (the flood's own answers aside).
    pub fn failed(&self) -> bool {
        self.aborted.is_some()
            || self.measurements.iter().any(Measurement::had_errors)
            || self.floods.iter().any(FloodMeasurement::had_errors)
    }

    /// Prints a measurement's figures as it ends and keeps it.
    pub fn record(
        &mut self,
        call: Call,
        subject: Subject,
        spec: LoadSpec,
        users_in_db: Option<i64>,
        outcome: LoadOutcome,
    ) {
        self.record_by(Client::Bench, call, subject, spec, users_in_db, outcome);
    }

    /// [`Self::record`] for a measurement driven by `client`.
    pub fn record_by(
        &mut self,
        client: Client,
        call: Call,
        subject: Subject,
        spec: LoadSpec,
        users_in_db: Option<i64>,
        outcome: LoadOutcome,
    ) {
        let cpu = outcome.cpu.map_or(String::new(), |cpu| {
            format!(
                "  cpu µs/call: server {} redis {} postgres {} client {}",
                micros(cpu.subject),
                micros(cpu.redis),
                micros(cpu.postgres),
                micros(cpu.client)
            )
        });
        eprintln!(
            "devicelink-bench: {:<24} c={:<3} {:<18} {:>8.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {}{}{cpu}",
            call.label(),
            spec.concurrency,
            match client {
                Client::Bench => subject.label().to_owned(),
                Client::H2load => format!("{} h2load", subject.label()),
            },
            outcome.throughput(),
            outcome.latency_ms(0.50),
            outcome.latency_ms(0.99),
            outcome.error_count(),
            if outcome.not_sent > 0 {
                format!(", {} not sent (deadline)", outcome.not_sent)
            } else {
                String::new()
            }
        );
        for (kind, message) in &outcome.error_samples {
            eprintln!("devicelink-bench:   {kind}: {message}");
        }
        self.measurements.push(Measurement {
            client,
            call,
            subject,
            concurrency: spec.concurrency,
            users_in_db,
            requests: spec.requests,
            outcome,
        });
    }
}

/// A CPU figure in µs, or `-` when it was not measured.
pub fn micros(value: Option<f64>) -> String {
    value.map_or("-".into(), |value| format!("{value:.1}"))
}
