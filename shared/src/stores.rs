//! Connections to Postgres and Redis, tuned so that a store that is down
//! turns into UNAVAILABLE within about a second instead of a hang, and so
//! that the services reconnect by themselves when it comes back.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

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
/// UNAVAILABLE. The store clients bound connecting and (for Redis)
/// answering on their own; this bounds what they do not cover, such as a
/// Postgres that accepts a query and never answers. Waiting for a pooled
/// Postgres connection is bounded by the pool's own wait timeout instead.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether a Postgres error means the server cannot be reached or is going
/// away (a retry may succeed), rather than a refusal of the statement.
pub fn is_unreachable(error: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    let Some(code) = error.code() else {
        // No SQLSTATE: the connection broke or could not be made.
        return true;
    };
    code.code().starts_with("08")
        || *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
        || *code == SqlState::TOO_MANY_CONNECTIONS
        || *code == SqlState::QUERY_CANCELED
}

/// Why a store client could not be set up (bad URL, not an outage: clients
/// connect lazily and ride out outages).
#[derive(Debug, thiserror::Error)]
pub enum StoreSetupError {
    /// The Postgres URL does not parse.
    #[error("invalid Postgres configuration")]
    Postgres(#[from] tokio_postgres::Error),
    /// The pool could not be built.
    #[error("invalid Postgres pool configuration")]
    Pool(#[from] deadpool_postgres::BuildError),
    /// The Redis URL does not parse.
    #[error("invalid Redis configuration")]
    Redis(#[from] redis::RedisError),
}

/// The Postgres settings of `database_url` with devicelink's timeouts.
pub fn postgres_config(database_url: &str) -> Result<tokio_postgres::Config, StoreSetupError> {
    let mut config: tokio_postgres::Config = database_url.parse()?;
    config.connect_timeout(CONNECT_TIMEOUT);
    config.application_name("devicelink");
    Ok(config)
}

/// A pool of up to `max_size` Postgres connections, opened on demand.
pub fn postgres_pool(database_url: &str, max_size: usize) -> Result<Pool, StoreSetupError> {
    let manager = Manager::from_config(
        postgres_config(database_url)?,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(manager)
        .max_size(max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()?)
}

/// A multiplexed Redis connection that connects on first use and reconnects
/// by itself. Cheap to clone; no pool is needed.
pub fn redis_connection(redis_url: &str) -> Result<ConnectionManager, StoreSetupError> {
    let client = redis::Client::open(redis_url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(REDIS_RESPONSE_TIMEOUT))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(200));
    Ok(ConnectionManager::new_lazy_with_config(client, config)?)
}

/// Whether Postgres answers a trivial query within a second.
pub async fn postgres_reachable(pool: &Pool) -> bool {
    let probe = async {
        let client = pool.get().await.ok()?;
        client.simple_query("SELECT 1").await.ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), probe).await,
        Ok(Some(_))
    )
}

/// Whether Redis answers `PING` within a second.
pub async fn redis_reachable(redis: &ConnectionManager) -> bool {
    let mut redis = redis.clone();
    let command = redis::cmd("PING");
    let ping = command.query_async::<String>(&mut redis);
    matches!(
        tokio::time::timeout(Duration::from_secs(1), ping).await,
        Ok(Ok(_))
    )
}

/// Publishes the pool's size and use as gauges
/// (`devicelink_db_pool_connections{state="in_use"|"idle"}`,
/// `devicelink_db_pool_waiting`), called with each health probe.
pub fn record_pool_usage(pool: &Pool) {
    let status = pool.status();
    let idle = status.available;
    let in_use = status.size.saturating_sub(idle);
    metrics::gauge!("devicelink_db_pool_connections", "state" => "in_use").set(in_use as f64);
    metrics::gauge!("devicelink_db_pool_connections", "state" => "idle").set(idle as f64);
    metrics::gauge!("devicelink_db_pool_waiting").set(status.waiting as f64);
}
