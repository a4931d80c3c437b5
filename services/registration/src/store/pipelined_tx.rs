//! A transaction whose `BEGIN` and `COMMIT` travel with its statements.
//!
//! tokio-postgres' own [`tokio_postgres::Transaction`] waits a round trip
//! for `BEGIN` and another for `COMMIT`. Here `BEGIN` is sent in front of the
//! first statements and `COMMIT` behind the last ones, so a transaction of
//! two pipelined rounds costs two round trips, not four. Postgres keeps the
//! outcome all or nothing on its own: once a statement fails, the rest of the
//! pipeline fails too and the `COMMIT` behind it rolls back.
//!
//! What tokio-postgres' guard did on drop must still hold: a connection never
//! goes back to the pool inside a transaction. A handled error rolls back
//! explicitly ([`PipelinedTransaction::rollback`]); a transaction dropped
//! half-way (the call was cancelled) takes its connection out of the pool
//! and closes it, which makes Postgres roll back.

use deadpool_postgres::Object;
use tokio_postgres::Client;

use crate::error::StoreError;

/// A pooled connection inside a transaction that is not yet finished.
pub struct PipelinedTransaction {
    connection: Option<Object>,
}

impl PipelinedTransaction {
    /// Takes `connection` for one transaction. Send [`Self::BEGIN`] first.
    pub fn new(connection: Object) -> Self {
        Self {
            connection: Some(connection),
        }
    }

    /// Opens the transaction; pipeline it in front of the first statements.
    pub const BEGIN: &'static str = "BEGIN";
    /// Ends it; pipeline it behind the last statements. After a failed
    /// statement Postgres answers it with a rollback.
    pub const COMMIT: &'static str = "COMMIT";

    /// The connection, to send statements on.
    pub fn client(&self) -> &Client {
        // Only `finish` and `rollback` take the connection, and both consume
        // `self`.
        self.connection
            .as_deref()
            .map(|wrapper| &**wrapper)
            .expect("the connection is held until the transaction ends")
    }

    /// The `COMMIT` went through: the connection goes back to the pool.
    pub fn finish(mut self) {
        self.connection.take();
    }

    /// Rolls back what was written and returns the connection to the pool;
    /// a connection that cannot even roll back is closed instead.
    pub async fn rollback(mut self) {
        let Some(connection) = self.connection.take() else {
            return;
        };
        if let Err(error) = connection.batch_execute("ROLLBACK").await {
            tracing::warn!(error = %StoreError::from(error), "rollback failed; closing the connection");
            drop(Object::take(connection));
        }
    }
}

impl Drop for PipelinedTransaction {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            // Closing the connection is the one rollback that needs no
            // round trip; the pool opens a new one when it needs it.
            drop(Object::take(connection));
        }
    }
}
