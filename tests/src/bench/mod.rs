//! `devicelink-bench`: how fast the services are, side by side with what the
//! hardware allows.
//!
//! One run starts everything it measures as separate processes on loopback
//! ports — `authcode-service` and `registration-service` from a build
//! directory, and two *floor* servers that are this very binary in
//! `--serve-floor` mode — against a database created for the run and a
//! Redis key prefix of its own. It prepares data through the admin API
//! (an app and an API key) and straight through SQL (bulk-loaded users),
//! then drives each call with the same load generator ([`load`]): N tasks
//! over several HTTP/2 channels, a fixed request count, an HDR histogram of
//! latencies, and a deadline per scenario.
//!
//! Each call is measured beside its floor, the least work that call could
//! possibly do on this machine:
//! - (a) a tonic service whose handler does nothing ([`floor_server`]);
//! - (b) a tonic service whose handler does one Redis `SET .. EX`, the floor
//!   of `MintAuthCode`;
//! - (c) the statements of `CreateUser` issued one after another from
//!   tokio-postgres, with its Redis `GET` and `DEL`, no gRPC ([`sql_floor`]);
//! - (d) the primary-key lookup behind `GetInstallStatus`, straight to
//!   Postgres.
//!
//! The modules, in the order a run uses them: [`cli`] reads the options,
//! [`run`] sets up and tears down, [`procs`] starts and stops the
//! processes, [`stores`] makes and drops the database and loads users,
//! [`prepare`] creates the app and mints codes, [`scenarios`] runs the plan
//! into [`results`], [`report`] prints the table and checks the targets,
//! [`output`] writes the JSON and draws the chart.
//!
//! `--soak` runs something else: a steady mixed flow for half an hour,
//! recording memory, descriptors, pool use and latency every minute
//! ([`soak`]).

pub mod cli;
pub mod cpu;
pub mod flood;
pub mod floor_server;
pub mod grpc_load;
pub mod h2load;
pub mod load;
pub mod mint_events;
pub mod mint_scenario;
pub mod output;
pub mod prepare;
pub mod procs;
pub mod report;
pub mod results;
pub mod run;
pub mod scenarios;
pub mod soak;
pub mod soak_load;
pub mod soak_report;
pub mod soak_sample;
pub mod sql_floor;
pub mod stores;
pub mod targets;

use std::fmt::Display;

use devicelink_shared::status::error_chain;

/// Why a run could not go on: a setup step that failed, with what it was
/// doing. Errors of single requests are not this: they are counted per
/// scenario ([`load::CallError`]).
#[derive(Debug)]
pub struct BenchError(String);

impl BenchError {
    /// An error described by `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BenchError {}

/// The result of a setup step.
pub type BenchResult<T> = Result<T, BenchError>;

/// Says what was being done when an error happened.
pub trait Context<T> {
    /// Wraps the error with `what`, e.g. "creating the database".
    fn context(self, what: impl Display) -> BenchResult<T>;
}

impl<T, E: std::error::Error> Context<T> for Result<T, E> {
    fn context(self, what: impl Display) -> BenchResult<T> {
        // With its causes: tokio-postgres says only "db error" and keeps
        // what Postgres said in the cause.
        self.map_err(|error| BenchError(format!("{what}: {}", error_chain(&error))))
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, what: impl Display) -> BenchResult<T> {
        self.ok_or_else(|| BenchError(what.to_string()))
    }
}
