//! A pooled connection whose every call is bounded by the store deadline:
//! the common [`BoundedConnection`] (which cancels an abandoned statement
//! and retires its connection), with its failures told as [`StoreError`]s.

use devicelink_shared::stores::{BoundedConnection, CallError, PooledClient, Postgres};

use crate::error::StoreError;

/// A pooled connection, or none once a call on it was abandoned.
pub struct Connection(BoundedConnection);

impl Connection {
    /// A connection from `postgres`'s pool.
    pub async fn get(postgres: &Postgres) -> Result<Self, StoreError> {
        Ok(Self(BoundedConnection::get(postgres).await?))
    }

    /// Runs one call (a statement, or one round trip of pipelined ones)
    /// within the store deadline (see [`BoundedConnection::call`]). What
    /// `work` returns is passed through, so a caller can read a failed
    /// statement's error itself; the outer error is the deadline's.
    pub async fn call<T>(
        &mut self,
        work: impl AsyncFnOnce(&PooledClient<'_>) -> T,
    ) -> Result<T, StoreError> {
        self.0.call(work).await.map_err(|error| match error {
            CallError::TimedOut(deadline) => StoreError::timed_out(deadline),
            CallError::Retired => StoreError::internal(error.to_string()),
        })
    }

    /// Whether a call was abandoned and the connection retired with it.
    pub fn is_retired(&self) -> bool {
        self.0.is_retired()
    }

    /// Closes the connection instead of returning it to the pool (see
    /// [`BoundedConnection::close`]).
    pub fn close(self) {
        self.0.close();
    }
}
