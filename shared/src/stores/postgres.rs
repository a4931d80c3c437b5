//! Postgres as devicelink reaches it: one pool for statements, sessions of
//! their own for LISTEN and advisory locks, and cancel requests, all made
//! with the same settings and connector.

use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{CancelToken, Socket};

use super::{
    CONNECT_TIMEOUT, POOL_WAIT_TIMEOUT, PROBE_TIMEOUT, SERVER_IDLE_IN_TRANSACTION_TIMEOUT,
    SERVER_STATEMENT_TIMEOUT, StoreSetupError,
};

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
}
