//! Postgres as devicelink reaches it: one pool for statements, sessions of
//! their own for LISTEN and advisory locks, and cancel requests, all made
//! with the same settings and connector.
//!
//! Statements may go through PgBouncer in transaction pooling mode
//! (`DATABASE_URL`); what needs a session of its own (LISTEN, the
//! migrations' advisory lock) then goes straight to Postgres
//! (`DATABASE_DIRECT_URL`). Both URLs carry libpq's TLS settings
//! ([`super::postgres_url`], [`super::postgres_tls`]).

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{ClientWrapper, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{CancelToken, Socket};

use super::postgres_statement::PooledClient;
use super::postgres_tls::connector;
use super::postgres_url::PostgresUrl;
use super::{
    CONNECT_TIMEOUT, POOL_WAIT_TIMEOUT, PROBE_TIMEOUT, STORE_TIMEOUT, StoreSetupError,
    server_timeout,
};
use crate::config::{DATABASE_DIRECT_URL, DATABASE_URL};

/// How every Postgres connection is secured: rustls, verifying as far as
/// the URL's `sslmode` asks (plaintext with `sslmode=disable`). Named here
/// alone: the services never name a TLS type.
type Connector = tokio_postgres_rustls::MakeRustlsConnect;

/// The driving half of a connection from [`Postgres::connect_session`]: it
/// must be polled for the client to make progress.
pub type SessionConnection =
    tokio_postgres::Connection<Socket, <Connector as MakeTlsConnect<Socket>>::Stream>;

/// Where connections go and how they are made: the settings parsed once
/// from a URL, and the connector for its TLS settings.
struct Endpoint {
    config: tokio_postgres::Config,
    connector: Connector,
}

impl Endpoint {
    /// The endpoint `url` (the value of `variable`) describes, with the
    /// settings every devicelink connection carries; the server-side
    /// timeouts are those of calls bounded by `call_timeout`.
    fn parse(
        variable: &'static str,
        url: &str,
        call_timeout: Duration,
    ) -> Result<Self, StoreSetupError> {
        let parsed = PostgresUrl::parse(url)
            .map_err(|problem| StoreSetupError::PostgresUrl { variable, problem })?;
        let connector = connector(&parsed)
            .map_err(|problem| StoreSetupError::PostgresTls { variable, problem })?;
        let mut config = parsed.config;
        config.connect_timeout(CONNECT_TIMEOUT);
        config.application_name("devicelink");
        config.options(with_server_timeouts(config.get_options(), call_timeout));
        Ok(Self { config, connector })
    }
}

/// Postgres as devicelink reaches it: the settings parsed once from the
/// URLs, the connectors, and the pool made with them. Cheap to clone.
#[derive(Clone)]
pub struct Postgres {
    /// Where pooled connections, and their cancel requests, go.
    pooled: Arc<Endpoint>,
    /// Where sessions go: `DATABASE_DIRECT_URL`, else the pooled endpoint.
    session: Arc<Endpoint>,
    pool: Pool,
    /// The pooled endpoint pools transactions (PgBouncer in transaction
    /// mode): statements are sent unnamed (see [`PooledClient`]).
    transaction_pooling: bool,
    /// The client-side deadline of one call (`DATABASE_CALL_TIMEOUT_MS`).
    call_timeout: Duration,
}

impl Postgres {
    /// Postgres at `database_url`, with a pool of up to `pool_size`
    /// connections opened on demand: nothing connects yet. Sessions go to
    /// the same place until [`Self::with_direct_url`] says otherwise.
    pub fn new(database_url: &str, pool_size: usize) -> Result<Self, StoreSetupError> {
        Self::with_call_timeout(database_url, pool_size, STORE_TIMEOUT)
    }

    /// [`Self::new`] whose calls are bounded by `call_timeout`
    /// (`DATABASE_CALL_TIMEOUT_MS`) on the client, and a little more on
    /// the server ([`super::server_timeout`]).
    pub fn with_call_timeout(
        database_url: &str,
        pool_size: usize,
        call_timeout: Duration,
    ) -> Result<Self, StoreSetupError> {
        let pooled = Arc::new(Endpoint::parse(DATABASE_URL, database_url, call_timeout)?);
        let manager = Manager::from_config(
            pooled.config.clone(),
            pooled.connector.clone(),
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
            session: pooled.clone(),
            pooled,
            pool,
            transaction_pooling: false,
            call_timeout,
        })
    }

    /// Sessions ([`Self::connect_session`]) go to `direct_url`
    /// (`DATABASE_DIRECT_URL`) when it is given: straight to Postgres when
    /// statements go through PgBouncer in transaction mode, which keeps no
    /// session for LISTEN or an advisory lock. It must name the same
    /// database, or notifications sent through the pool are never heard.
    pub fn with_direct_url(mut self, direct_url: Option<&str>) -> Result<Self, StoreSetupError> {
        if let Some(url) = direct_url {
            self.session = Arc::new(Endpoint::parse(
                DATABASE_DIRECT_URL,
                url,
                self.call_timeout,
            )?);
        }
        Ok(self)
    }

    /// Says whether `DATABASE_URL` pools transactions
    /// (`DATABASE_TRANSACTION_POOLING`): if so, the request path's
    /// statements are sent unnamed, since the pooler keeps no prepared
    /// statement between transactions.
    pub fn with_transaction_pooling(mut self, transaction_pooling: bool) -> Self {
        self.transaction_pooling = transaction_pooling;
        self
    }

    /// `client`, a connection of the pool, sending statements as this
    /// deployment needs them sent.
    pub fn pooled_client<'a>(&self, client: &'a ClientWrapper) -> PooledClient<'a> {
        PooledClient::new(client, self.transaction_pooling)
    }

    /// How long one call may take before it is abandoned (see
    /// [`super::BoundedConnection`]).
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// The pool every statement runs through.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A connection of its own, outside the pool, for what a pooled one
    /// cannot do (`LISTEN`, session advisory locks), made to
    /// `DATABASE_DIRECT_URL` when it is set. The caller polls the returned
    /// connection, and the session ends when both halves drop.
    pub async fn connect_session(
        &self,
    ) -> Result<(tokio_postgres::Client, SessionConnection), tokio_postgres::Error> {
        let session = &*self.session;
        session.config.connect(session.connector.clone()).await
    }

    /// Asks Postgres to cancel the statement running on the connection
    /// `token` came from (a pooled one). A cancel request is a connection
    /// of its own, so it needs the connector the connection was made with.
    pub async fn cancel(&self, token: CancelToken) -> Result<(), tokio_postgres::Error> {
        token.cancel_query(self.pooled.connector.clone()).await
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

    /// Publishes the pool's size, bound and use as gauges (see
    /// [`crate::metrics_catalog`]), called with each health probe.
    pub fn record_pool_usage(&self) {
        use crate::metrics_catalog::{
            DB_POOL_CONNECTIONS, DB_POOL_MAX_CONNECTIONS, DB_POOL_WAITING,
        };
        let status = self.pool.status();
        let idle = status.available;
        let in_use = status.size.saturating_sub(idle);
        metrics::gauge!(DB_POOL_CONNECTIONS, "state" => "in_use").set(in_use as f64);
        metrics::gauge!(DB_POOL_CONNECTIONS, "state" => "idle").set(idle as f64);
        metrics::gauge!(DB_POOL_WAITING).set(status.waiting as f64);
        metrics::gauge!(DB_POOL_MAX_CONNECTIONS).set(status.max_size as f64);
    }
}

/// One connection to `url`, parsed and secured as the services' connections
/// are (libpq's `sslmode` and `sslrootcert`) but without their settings
/// (timeouts, application name): for tests and tools that connect as an
/// operator would. The caller polls the returned connection.
pub async fn connect_once(
    url: &str,
) -> Result<(tokio_postgres::Client, SessionConnection), Box<dyn std::error::Error + Send + Sync>> {
    let parsed = PostgresUrl::parse(url)?;
    let connector = connector(&parsed)?;
    Ok(parsed.config.connect(connector).await?)
}

/// The connection's startup `options` with the server-side timeouts added,
/// so that they hold on every connection (pooled or session) from its
/// first statement, whatever a `SET` or `RESET ALL` would do later.
fn with_server_timeouts(options: Option<&str>, call_timeout: Duration) -> String {
    let server_timeout = server_timeout(call_timeout).as_millis();
    let timeouts = format!(
        "-c statement_timeout={server_timeout} -c idle_in_transaction_session_timeout={server_timeout}",
    );
    match options {
        Some(options) if !options.trim().is_empty() => format!("{options} {timeouts}"),
        _ => timeouts,
    }
}

#[cfg(test)]
mod tests {
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
    async fn a_configured_call_timeout_bounds_calls_and_sets_the_server_backstop() {
        let url = std::env::var("DEVICELINK_TEST_DATABASE_URL").unwrap_or_else(|_| {
            "postgres://devicelink:devicelink@127.0.0.1:5432/devicelink".to_owned()
        });
        let call_timeout = Duration::from_millis(300);
        let postgres = Postgres::with_call_timeout(&url, 1, call_timeout).expect("a pool");

        let pooled = postgres.pool().get().await.expect("a pooled connection");
        let row = pooled
            .query_one("SELECT current_setting('statement_timeout')", &[])
            .await
            .expect("pooled settings");
        assert_eq!(row.get::<_, String>(0), "3300ms");
        drop(pooled);

        let mut connection = super::super::BoundedConnection::get(&postgres)
            .await
            .expect("a connection");
        let started = std::time::Instant::now();
        let answer = connection
            .call(async |client| client.simple_query("SELECT pg_sleep(3)").await.map(drop))
            .await;
        let took = started.elapsed();
        assert!(
            matches!(answer, Err(super::super::CallError::TimedOut(deadline)) if deadline == call_timeout),
            "{answer:?}"
        );
        assert!(
            took >= call_timeout && took < call_timeout + Duration::from_millis(700),
            "the call took {took:?}"
        );
    }
}
