//! How devicelink reaches Postgres and Redis: every connection either
//! service makes is made here, so that TLS or Redis Cluster is one change in
//! this module, not one in each caller.
//!
//! The services receive [`Postgres`] and [`RedisConnection`] and never name
//! a TLS connector or a Redis client type. Both are tuned so that a store
//! that is down turns into UNAVAILABLE within about a second instead of a
//! hang, and so that the services reconnect by themselves when it comes
//! back.

use std::time::Duration;

use redis::RedisError;

use crate::config::DATABASE_URL;

mod cancel_on_drop;
mod postgres;
mod postgres_call;
mod postgres_statement;
mod postgres_tls;
mod postgres_url;
mod redis_connection;
mod redis_settings;

pub use postgres::{Postgres, SessionConnection, connect_once};
pub use postgres_call::{BoundedConnection, CallError};
pub use postgres_statement::{Params, PooledClient, Sql, TypedParams, execute_typed};
pub use postgres_tls::PostgresTlsError;
pub use postgres_url::{PostgresUrl, PostgresUrlError, SslMode};
pub use redis_connection::RedisConnection;
pub use redis_settings::{RedisServers, RedisSettings, RedisSetupError};

/// How long to wait for a new connection to either store.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(800);
/// How long a request may queue for a pooled Postgres connection when every
/// connection is busy. An unreachable Postgres fails connection attempts at
/// once (or after [`CONNECT_TIMEOUT`]), so this only bounds queueing under
/// load.
pub const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a single Redis command may take.
pub const REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest a single store call (a statement, a transaction's round
/// trip, a Redis command) may take before the request fails with
/// UNAVAILABLE, unless `DATABASE_CALL_TIMEOUT_MS` sets another bound for
/// Postgres calls ([`Postgres::with_call_timeout`]). The store clients bound connecting and (for Redis)
/// answering on their own; this bounds what they do not cover, such as a
/// Postgres that accepts a query and never answers, or a Redis command
/// that waits through a reconnection. Every Redis command is bounded by it
/// inside [`RedisConnection`]; every Postgres call, by running on a
/// [`BoundedConnection`].
/// Waiting for a pooled Postgres connection is bounded by the pool's own
/// wait timeout instead.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a health probe waits for a store's answer.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How much longer than the client's deadline Postgres itself lets a
/// statement run (`statement_timeout`) or a transaction sit open and idle
/// (`idle_in_transaction_session_timeout`) on every connection the services
/// make: 5 s with the default 2 s deadline. The client gives up at its
/// deadline and cancels; this is the backstop for when the cancel request
/// cannot get through (a partition), so that work abandoned by the client
/// does not run, or hold locks, for ever once the partition heals, and a
/// transaction whose client vanished mid-way is rolled back. Long enough
/// past the deadline that a call the client still waits for is never ended
/// by the server first.
pub const SERVER_TIMEOUT_MARGIN: Duration = Duration::from_secs(3);

/// The server-side timeouts (see [`SERVER_TIMEOUT_MARGIN`]) of connections
/// whose calls have `call_timeout`.
pub fn server_timeout(call_timeout: Duration) -> Duration {
    call_timeout + SERVER_TIMEOUT_MARGIN
}

/// Whether a Postgres error means the server cannot be reached or is going
/// away (a retry may succeed), rather than a refusal of the statement.
pub fn is_unreachable(error: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    let Some(code) = error.code() else {
        // No SQLSTATE: the connection broke or could not be made, unless
        // the statement and its Rust types disagree, which is a bug that a
        // retry would only repeat.
        return !is_mistake(error);
    };
    code.code().starts_with("08")
        || *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
        || *code == SqlState::TOO_MANY_CONNECTIONS
        || *code == SqlState::QUERY_CANCELED
}

/// Whether a Postgres error without a SQLSTATE is this program's mistake:
/// a parameter that does not serialise, a column that does not
/// deserialise or is missing, a wrong count of parameters, columns or rows.
/// tokio-postgres tells these apart only in its messages.
fn is_mistake(error: &tokio_postgres::Error) -> bool {
    let message = error.to_string();
    [
        "error serializing parameter",
        "error deserializing column",
        "invalid column",
        "query returned an unexpected number of",
    ]
    .iter()
    .any(|prefix| message.starts_with(prefix))
        || (message.starts_with("expected ") && message.contains(" parameters but got "))
}

/// Why a store client could not be set up: a bad URL or setting, never an
/// outage (clients connect lazily and ride out outages). Each message names
/// the variable to fix.
#[derive(Debug, thiserror::Error)]
pub enum StoreSetupError {
    /// A Postgres URL (`DATABASE_URL`, `DATABASE_DIRECT_URL`) does not
    /// parse, or names an unknown `sslmode`.
    #[error("{variable}")]
    PostgresUrl {
        /// The variable holding the URL.
        variable: &'static str,
        /// What is wrong with it.
        #[source]
        problem: PostgresUrlError,
    },
    /// A Postgres URL's TLS settings cannot be used (its `sslrootcert`).
    #[error("{variable}")]
    PostgresTls {
        /// The variable holding the URL.
        variable: &'static str,
        /// What is wrong with it.
        #[source]
        problem: PostgresTlsError,
    },
    /// The pool could not be built.
    #[error("{DATABASE_URL}: cannot build a connection pool")]
    Pool(#[from] deadpool_postgres::BuildError),
    /// The Redis URL does not parse.
    #[error("{variable}: not a usable Redis URL")]
    Redis {
        /// `REDIS_URL` or `REDIS_CLUSTER_URLS`.
        variable: &'static str,
        /// What redis-rs said (it names no password).
        #[source]
        source: RedisError,
    },
    /// A Redis TLS or password file, or the client built from them, is
    /// unusable.
    #[error(transparent)]
    RedisSetup(#[from] RedisSetupError),
}
