//! How devicelink reaches Postgres and Redis: every connection either
//! service makes is made here, so that TLS or Redis Cluster is one change in
//! this file, not one in each caller.
//!
//! The services receive [`Postgres`] and [`RedisConnection`] and never name
//! a TLS connector or a Redis client type. Both are tuned so that a store
//! that is down turns into UNAVAILABLE within about a second instead of a
//! hang, and so that the services reconnect by themselves when it comes
//! back.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{CancelToken, Socket};

use crate::config::{DATABASE_URL, REDIS_URL};

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
/// Postgres that accepts a query and never answers, or a Redis command
/// that waits through a reconnection. Every Redis command is bounded by it
/// inside [`RedisConnection`]; Postgres calls are bounded by their callers.
/// Waiting for a pooled Postgres connection is bounded by the pool's own
/// wait timeout instead.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a health probe waits for a store's answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Postgres's own bound on one statement (`statement_timeout`) on every
/// connection the services make. The client gives up at [`STORE_TIMEOUT`]
/// and cancels; this is the backstop for when the cancel request cannot
/// get through (a partition), so that work abandoned by the client does
/// not run, or hold locks, for ever once the partition heals.
pub const SERVER_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Postgres's bound on a transaction left open and idle
/// (`idle_in_transaction_session_timeout`): a transaction whose client
/// vanished mid-way is rolled back, and its locks released, after this.
pub const SERVER_IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Why a store client could not be set up: a bad URL or setting, never an
/// outage (clients connect lazily and ride out outages). Each message names
/// the variable to fix.
#[derive(Debug, thiserror::Error)]
pub enum StoreSetupError {
    /// The Postgres URL does not parse.
    #[error("{DATABASE_URL}: not a usable Postgres URL")]
    Postgres(#[from] tokio_postgres::Error),
    /// The pool could not be built.
    #[error("{DATABASE_URL}: cannot build a connection pool")]
    Pool(#[from] deadpool_postgres::BuildError),
    /// The Redis URL does not parse.
    #[error("{REDIS_URL}: not a usable Redis URL")]
    Redis(#[from] RedisError),
}

/// How every Postgres connection is secured: plaintext today. Serving
/// Postgres over TLS is this type and the value [`Postgres::new`] builds.
type Connector = tokio_postgres::NoTls;

/// The driving half of a connection from [`Postgres::connect_session`]: it
/// must be polled for the client to make progress.
pub type SessionConnection =
    tokio_postgres::Connection<Socket, <Connector as MakeTlsConnect<Socket>>::Stream>;

/// Postgres as devicelink reaches it: the settings parsed once from the
/// URL, the connector, and the pool made with them. Cheap to clone.
#[derive(Clone)]
pub struct Postgres {
    config: Arc<tokio_postgres::Config>,
    connector: Connector,
    pool: Pool,
}

impl Postgres {
    /// Postgres at `database_url`, with a pool of up to `pool_size`
    /// connections opened on demand: nothing connects yet.
    pub fn new(database_url: &str, pool_size: usize) -> Result<Self, StoreSetupError> {
        let mut config: tokio_postgres::Config = database_url.parse()?;
        config.connect_timeout(CONNECT_TIMEOUT);
        config.application_name("devicelink");
        config.options(with_server_timeouts(config.get_options()));
        let connector = tokio_postgres::NoTls;
        let manager = Manager::from_config(
            config.clone(),
            connector,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()?;
        Ok(Self {
            config: Arc::new(config),
            connector,
            pool,
        })
    }

    /// The pool every statement runs through.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A connection of its own, outside the pool, for what a pooled one
    /// cannot do (`LISTEN`, session advisory locks). The caller polls the
    /// returned connection, and the session ends when both halves drop.
    pub async fn connect_session(
        &self,
    ) -> Result<(tokio_postgres::Client, SessionConnection), tokio_postgres::Error> {
        self.config.connect(self.connector).await
    }

    /// Asks Postgres to cancel the statement running on the connection
    /// `token` came from. A cancel request is a connection of its own, so it
    /// needs the connector the connection was made with.
    pub async fn cancel(&self, token: CancelToken) -> Result<(), tokio_postgres::Error> {
        token.cancel_query(self.connector).await
    }

    /// Whether Postgres answers a trivial query within a second (and a
    /// pooled connection came within another). A connection whose probe
    /// went unanswered is closed, not returned to the pool with the probe
    /// still outstanding, where the next request would queue behind it.
    pub async fn reachable(&self) -> bool {
        let Ok(Ok(client)) = tokio::time::timeout(PROBE_TIMEOUT, self.pool.get()).await else {
            return false;
        };
        match tokio::time::timeout(PROBE_TIMEOUT, client.simple_query("SELECT 1")).await {
            Ok(answer) => answer.is_ok(),
            Err(_elapsed) => {
                drop(deadpool_postgres::Object::take(client));
                false
            }
        }
    }

    /// Publishes the pool's size and use as gauges
    /// (`devicelink_db_pool_connections{state="in_use"|"idle"}`,
    /// `devicelink_db_pool_waiting`), called with each health probe.
    pub fn record_pool_usage(&self) {
        let status = self.pool.status();
        let idle = status.available;
        let in_use = status.size.saturating_sub(idle);
        metrics::gauge!("devicelink_db_pool_connections", "state" => "in_use").set(in_use as f64);
        metrics::gauge!("devicelink_db_pool_connections", "state" => "idle").set(idle as f64);
        metrics::gauge!("devicelink_db_pool_waiting").set(status.waiting as f64);
    }
}

/// The connection's startup `options` with the server-side timeouts added,
/// so that they hold on every connection (pooled or session) from its
/// first statement, whatever a `SET` or `RESET ALL` would do later.
fn with_server_timeouts(options: Option<&str>) -> String {
    let timeouts = format!(
        "-c statement_timeout={} -c idle_in_transaction_session_timeout={}",
        SERVER_STATEMENT_TIMEOUT.as_millis(),
        SERVER_IDLE_IN_TRANSACTION_TIMEOUT.as_millis(),
    );
    match options {
        Some(options) if !options.trim().is_empty() => format!("{options} {timeouts}"),
        _ => timeouts,
    }
}

/// The one multiplexed connection to Redis that every request shares:
/// connects on first use, reconnects by itself, and is cheap to clone (no
/// pool is needed). Commands and scripts run on it as on any redis-rs
/// connection, each bounded by [`STORE_TIMEOUT`]; which kind of Redis is
/// behind it is this module's business alone.
#[derive(Clone)]
pub struct RedisConnection(ConnectionManager);

impl RedisConnection {
    /// Redis at `redis_url`; nothing connects yet.
    pub fn new(redis_url: &str) -> Result<Self, StoreSetupError> {
        let client = redis::Client::open(redis_url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(REDIS_RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(200));
        Ok(Self(ConnectionManager::new_lazy_with_config(
            client, config,
        )?))
    }

    /// Whether Redis answers `PING` within a second.
    pub async fn reachable(&self) -> bool {
        let mut redis = self.clone();
        let command = redis::cmd("PING");
        let ping = command.query_async::<String>(&mut redis);
        matches!(tokio::time::timeout(PROBE_TIMEOUT, ping).await, Ok(Ok(_)))
    }
}

/// The error of a Redis call that ran out of [`STORE_TIMEOUT`]: a timeout,
/// as redis-rs reports its own.
fn redis_timed_out() -> RedisError {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("Redis did not answer within {STORE_TIMEOUT:?}"),
    )
    .into()
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            tokio::time::timeout(STORE_TIMEOUT, self.0.req_packed_command(cmd))
                .await
                .unwrap_or_else(|_elapsed| Err(redis_timed_out()))
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            tokio::time::timeout(
                STORE_TIMEOUT,
                self.0.req_packed_commands(pipeline, offset, count),
            )
            .await
            .unwrap_or_else(|_elapsed| Err(redis_timed_out()))
        })
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[tokio::test]
    async fn every_postgres_connection_carries_the_server_side_timeouts() {
        let url = std::env::var("DEVICELINK_TEST_DATABASE_URL").unwrap_or_else(|_| {
            "postgres://devicelink:devicelink@127.0.0.1:5432/devicelink".to_owned()
        });
        let postgres = Postgres::new(&url, 1).expect("a pool");
        let show = "SELECT current_setting('statement_timeout'),
                           current_setting('idle_in_transaction_session_timeout')";
        let expected = ("5s".to_owned(), "5s".to_owned());

        let pooled = postgres.pool().get().await.expect("a pooled connection");
        // Even a session that resets its settings keeps them.
        pooled.batch_execute("RESET ALL").await.expect("reset");
        let row = pooled.query_one(show, &[]).await.expect("pooled settings");
        assert_eq!((row.get::<_, String>(0), row.get::<_, String>(1)), expected);

        let (session, connection) = postgres.connect_session().await.expect("a session");
        tokio::spawn(connection);
        let row = session
            .query_one(show, &[])
            .await
            .expect("session settings");
        assert_eq!((row.get::<_, String>(0), row.get::<_, String>(1)), expected);
    }

    #[tokio::test]
    async fn a_redis_that_never_answers_fails_the_command_within_the_store_timeout() {
        // Accepts connections and holds them open, answering nothing: a
        // Redis that hangs, which refusing connections would not show.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let mut redis = RedisConnection::new(&format!("redis://{addr}/0")).unwrap();
        let started = Instant::now();
        let mut command = redis::cmd("GET");
        let get = command
            .arg("some-key")
            .query_async::<Option<String>>(&mut redis);
        let reply = tokio::time::timeout(STORE_TIMEOUT * 5, get)
            .await
            .expect("the command gave up by itself");
        assert!(reply.is_err(), "{reply:?}");
        assert!(
            started.elapsed() < STORE_TIMEOUT + Duration::from_millis(500),
            "took {:?}",
            started.elapsed()
        );
    }
}
