//! What a run measured, gathered for the table, the JSON and the chart.

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
    /// The name in the table.
    pub fn label(self) -> &'static str {
        match self {
            Self::Service => "service",
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
            Self::FloorEcho => "floor_a_echo",
            Self::FloorRedisSet => "floor_b_redis_set",
            Self::FloorSql => "floor_c_sql_sequence",
            Self::FloorPrimaryKey => "floor_d_pk_lookup",
        }
    }
}

/// One scenario's figures.
#[derive(Debug, Clone)]
pub struct Measurement {
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
    /// Memory of the processes the run started.
    pub memory: Vec<ProcessMemory>,
    /// Bulk loads: users after the load, and how long it took.
    pub bulk_loads: Vec<(u64, Duration)>,
    /// Why the run stopped early, if it did.
    pub aborted: Option<String>,
}

impl Results {
    /// An empty result set for `meta`.
    pub fn new(meta: RunMeta) -> Self {
        Self {
            meta,
            measurements: Vec::new(),
            memory: Vec::new(),
            bulk_loads: Vec::new(),
            aborted: None,
        }
    }

    /// The measurement of `call` by `subject` at `concurrency`.
    pub fn find(&self, call: Call, subject: Subject, concurrency: usize) -> Option<&Measurement> {
        self.measurements.iter().find(|measurement| {
            measurement.call == call
                && measurement.subject == subject
                && measurement.concurrency == concurrency
        })
    }

    /// Whether the run is in error: stopped early, or a scenario had
    /// failed or unsent requests.
    pub fn failed(&self) -> bool {
        self.aborted.is_some() || self.measurements.iter().any(Measurement::had_errors)
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
        eprintln!(
            "devicelink-bench: {:<24} c={:<3} {:<18} {:>8.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {}{}",
            call.label(),
            spec.concurrency,
            subject.label(),
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
            call,
            subject,
            concurrency: spec.concurrency,
            users_in_db,
            requests: spec.requests,
            outcome,
        });
    }
}
