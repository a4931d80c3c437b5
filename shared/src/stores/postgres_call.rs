//! A pooled Postgres connection whose every call is bounded by the store
//! deadline, for both services.
//!
//! tokio-postgres waits for an answer as long as the socket stays open, so a
//! Postgres that accepts a statement and never answers (a stalled server or
//! network, a lock held for ever) would hold the request, and its pooled
//! connection, indefinitely. Each call on a [`BoundedConnection`] (one
//! statement, or one round trip of pipelined statements) therefore has
//! the deadline of [`Postgres::call_timeout`] to complete; past it the call fails with
//! [`CallError::TimedOut`], which each service reports as UNAVAILABLE.
//!
//! The abandoned work is still outstanding in Postgres then, and it may be a
//! write that commits on its own. So a call that runs out of time is handled
//! exactly as one whose client went away: it runs under a guard
//! (`cancel_on_drop.rs`) that cancels the statement and takes the
//! connection out of the pool for good. The connection is then
//! retired; the pool opens a new one when it needs it. A timeout alone would
//! put the connection back with the statement still queued on it, and the
//! next request to draw it would wait behind that statement. Waiting for a
//! pooled connection is bounded by the pool's own timeouts, not by this
//! deadline.

use std::time::Duration;

use deadpool_postgres::{Object, PoolError};

use super::cancel_on_drop::CancelOnDrop;
use super::{PooledClient, Postgres};

/// Why a call on a [`BoundedConnection`] returned no answer. The
/// statement's own error, when Postgres answered with one, is the call's
/// answer instead, for the caller to read.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No answer within the deadline: the statement was cancelled and the
    /// connection retired. Worth a retry (UNAVAILABLE).
    #[error("no answer from Postgres within {0:?}")]
    TimedOut(Duration),
    /// The connection was retired by an earlier abandoned call: a bug in
    /// the caller, which should have stopped using it.
    #[error("a call on a connection retired after an abandoned call")]
    Retired,
}

/// A pooled connection, or none once a call on it was abandoned.
pub struct BoundedConnection {
    connection: Option<Object>,
    /// Where a cancel request for an abandoned call goes.
    postgres: Postgres,
}

impl BoundedConnection {
    /// A connection from `postgres`'s pool.
    pub async fn get(postgres: &Postgres) -> Result<Self, PoolError> {
        Ok(Self {
            connection: Some(postgres.pool().get().await?),
            postgres: postgres.clone(),
        })
    }

    /// Runs one call (a statement, or one round trip of pipelined ones)
    /// within [`Postgres::call_timeout`], on the client as [`PooledClient`] (which
    /// knows whether statements may be prepared). What `work` returns is passed through, so
    /// a caller can read a failed statement's error itself; the outer
    /// error is the deadline's.
    pub async fn call<T>(
        &mut self,
        work: impl AsyncFnOnce(&PooledClient<'_>) -> T,
    ) -> Result<T, CallError> {
        let deadline = self.postgres.call_timeout();
        self.call_within(deadline, work).await
    }

    /// [`Self::call`] with another deadline.
    pub async fn call_within<T>(
        &mut self,
        deadline: Duration,
        work: impl AsyncFnOnce(&PooledClient<'_>) -> T,
    ) -> Result<T, CallError> {
        let connection = self.connection.take().ok_or(CallError::Retired)?;
        // Dropped with the call, when the caller gives up or the deadline
        // passes, the guard cancels the work and retires the connection.
        let in_flight = CancelOnDrop::new(connection, self.postgres.clone());
        // Statements go out prepared, or unnamed behind a transaction
        // pooler (see `PooledClient`).
        let client = self.postgres.pooled_client(in_flight.client());
        let answered = tokio::time::timeout(deadline, work(&client)).await;
        let Ok(answer) = answered else {
            drop(in_flight);
            return Err(CallError::TimedOut(deadline));
        };
        self.connection = Some(in_flight.disarm());
        Ok(answer)
    }

    /// Whether a call was abandoned and the connection retired with it.
    pub fn is_retired(&self) -> bool {
        self.connection.is_none()
    }

    /// Closes the connection instead of returning it to the pool: the one
    /// way out for a connection whose state is unknown (inside a
    /// transaction that was not finished).
    pub fn close(mut self) {
        if let Some(connection) = self.connection.take() {
            drop(Object::take(connection));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// The database the end-to-end tests use; these tests only run
    /// statements that touch no table.
    fn postgres() -> Postgres {
        let url = std::env::var("DEVICELINK_TEST_DATABASE_URL").unwrap_or_else(|_| {
            "postgres://devicelink:devicelink@127.0.0.1:5432/devicelink".to_owned()
        });
        Postgres::new(&url, 1).expect("a pool")
    }

    /// How many statements containing `marker` Postgres is running.
    async fn running(postgres: &Postgres, marker: &str) -> i64 {
        let mut observer = BoundedConnection::get(postgres)
            .await
            .expect("a connection");
        observer
            .call(async |client| {
                client
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity
                         WHERE state = 'active' AND pid <> pg_backend_pid() AND query LIKE $1",
                        &[&format!("%{marker}%")],
                    )
                    .await
            })
            .await
            .expect("in time")
            .expect("pg_stat_activity")
            .get(0)
    }

    #[tokio::test]
    async fn an_answered_call_returns_the_connection_to_the_pool() {
        let postgres = postgres();
        let pool = postgres.pool();
        let mut connection = BoundedConnection::get(&postgres)
            .await
            .expect("a connection");
        let one: i32 = connection
            .call(async |client| client.query_one("SELECT 1", &[]).await)
            .await
            .expect("in time")
            .expect("answered")
            .get(0);
        assert_eq!(one, 1);
        drop(connection);
        assert_eq!(pool.status().size, 1, "the connection went back");
        assert_eq!(pool.status().available, 1);
    }

    #[tokio::test]
    async fn a_call_past_the_deadline_is_cancelled_and_its_connection_retired() {
        let postgres = postgres();
        let pool = postgres.pool();
        let marker = format!("deadline-{}", uuid::Uuid::new_v4().simple());
        let mut connection = BoundedConnection::get(&postgres)
            .await
            .expect("a connection");
        let sleep = format!("SELECT pg_sleep(30) /* {marker} */");
        let started = Instant::now();
        let outcome = connection
            .call_within(Duration::from_millis(200), async |client| {
                client.simple_query(&sleep).await
            })
            .await;
        assert!(
            matches!(outcome, Err(CallError::TimedOut(_))),
            "{outcome:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(pool.status().size, 0, "the connection left the pool");
        assert!(
            matches!(connection.call(async |_| ()).await, Err(CallError::Retired)),
            "a retired connection takes no further calls"
        );

        // The abandoned statement was cancelled in Postgres, not left to
        // sleep out its thirty seconds.
        let deadline = Instant::now() + Duration::from_secs(5);
        while running(&postgres, &marker).await > 0 {
            assert!(Instant::now() < deadline, "the statement still runs");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
