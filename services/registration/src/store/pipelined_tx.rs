//! A transaction whose `BEGIN` and `COMMIT` may travel with its statements.
//!
//! tokio-postgres' own [`tokio_postgres::Transaction`] waits a round trip
//! for `BEGIN` and another for `COMMIT`. Here `BEGIN` can be sent in front of
//! the first statements and `COMMIT` behind the last ones, so a transaction
//! of two pipelined rounds costs two round trips, not four. Postgres keeps
//! the outcome all or nothing on its own: once a statement fails, the rest of
//! the pipeline fails too and the `COMMIT` behind it rolls back. Each round
//! trip is one [`Connection::call`], under the store deadline.
//!
//! What tokio-postgres' guard did on drop must still hold: a connection never
//! goes back to the pool inside a transaction. A handled error rolls back
//! explicitly ([`PipelinedTransaction::rollback`]); a round trip abandoned
//! half-way (the call was cancelled, or ran out of time) is cancelled and its
//! connection retired by [`Connection::call`]; a transaction dropped between
//! round trips closes its connection, which makes Postgres roll back.

use devicelink_shared::stores::PooledClient;

use super::connection::Connection;
use crate::error::StoreError;

/// A pooled connection inside a transaction that is not yet finished.
pub struct PipelinedTransaction {
    connection: Option<Connection>,
}

impl PipelinedTransaction {
    /// Takes `connection` for one transaction. Send [`Self::BEGIN`] first.
    pub fn new(connection: Connection) -> Self {
        Self {
            connection: Some(connection),
        }
    }

    /// Opens the transaction; pipeline it in front of the first statements.
    pub const BEGIN: &'static str = "BEGIN";
    /// Opens a transaction that only reads.
    pub const BEGIN_READ_ONLY: &'static str = "BEGIN READ ONLY";
    /// Ends it; pipeline it behind the last statements. After a failed
    /// statement Postgres answers it with a rollback.
    pub const COMMIT: &'static str = "COMMIT";

    /// Opens a transaction with `begin` ([`Self::BEGIN`] or
    /// [`Self::BEGIN_READ_ONLY`]) in a round trip of its own, for a
    /// transaction whose first statement decides what follows.
    pub async fn begin(connection: Connection, begin: &'static str) -> Result<Self, StoreError> {
        let mut tx = Self::new(connection);
        tx.call(async |client| client.batch_execute(begin).await)
            .await??;
        Ok(tx)
    }

    /// Commits in a round trip of its own; the connection goes back to the
    /// pool. If the commit fails, the connection is closed, which rolls
    /// back.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        self.call(async |client| client.batch_execute(Self::COMMIT).await)
            .await??;
        self.finish();
        Ok(())
    }

    /// Runs one round trip of the transaction (see [`Connection::call`]).
    pub async fn call<T>(
        &mut self,
        work: impl AsyncFnOnce(&PooledClient<'_>) -> T,
    ) -> Result<T, StoreError> {
        // Only `finish` and `rollback` take the connection, and both consume
        // `self`.
        let connection = self
            .connection
            .as_mut()
            .expect("the connection is held until the transaction ends");
        connection.call(work).await
    }

    /// The `COMMIT` went through: the connection goes back to the pool.
    pub fn finish(mut self) {
        self.connection.take();
    }

    /// Rolls back what was written and returns the connection to the pool;
    /// a connection that cannot even roll back is closed instead.
    pub async fn rollback(mut self) {
        let Some(mut connection) = self.connection.take() else {
            return;
        };
        if connection.is_retired() {
            // An abandoned round trip closed it: Postgres rolls back.
            return;
        }
        let rolled_back = connection
            .call(async |client| client.batch_execute("ROLLBACK").await)
            .await
            .and_then(|answer| answer.map_err(StoreError::from));
        if let Err(error) = rolled_back {
            tracing::warn!(error = %error, "rollback failed; closing the connection");
            connection.close();
        }
    }
}

impl Drop for PipelinedTransaction {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            // Closing the connection is the one rollback that needs no
            // round trip; the pool opens a new one when it needs it.
            connection.close();
        }
    }
}
