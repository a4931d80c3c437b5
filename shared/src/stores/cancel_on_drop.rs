//! A call in flight, cancelled when its caller gives up.
//!
//! A statement sent outside `BEGIN` commits by itself as soon as it
//! completes, whether or not anyone still waits for its answer; a
//! transaction's pipelined `COMMIT` may already be on its way. A call that
//! is abandoned (its client went away, or it ran out of the store deadline)
//! while such work runs, say waiting on a lock, must not go on to write
//! what the caller gave up: dropped before the answer arrives,
//! [`CancelOnDrop`] asks Postgres to cancel the statement and closes the
//! connection, so that neither the cancel nor the abandoned work can ever
//! reach a later call on that connection. Once Postgres has committed, the
//! cancel does nothing; that is the lost response a retry from the same
//! client is answered for. Every [`super::BoundedConnection`] call runs
//! under this guard.

use deadpool_postgres::{ClientWrapper, Object};

use super::Postgres;
use crate::status::error_chain;

/// A pooled connection while a call runs on it.
pub(super) struct CancelOnDrop {
    connection: Option<Object>,
    /// Where the cancel request goes, made as the connection was.
    postgres: Postgres,
}

impl CancelOnDrop {
    /// Guards `connection`, a connection of `postgres`, until
    /// [`Self::disarm`].
    pub(super) fn new(connection: Object, postgres: Postgres) -> Self {
        Self {
            connection: Some(connection),
            postgres,
        }
    }

    /// The connection, to send the call on (with its statement cache).
    pub(super) fn client(&self) -> &ClientWrapper {
        // Only `disarm` takes the connection, and it consumes `self`.
        self.connection
            .as_deref()
            .expect("the connection is held until disarmed")
    }

    /// The answer arrived: the connection is free for other statements.
    pub(super) fn disarm(mut self) -> Object {
        self.connection
            .take()
            .expect("the connection is held until disarmed")
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(connection) = self.connection.take() else {
            return;
        };
        // Out of the pool for good: the connection is closed once the
        // cancel is sent.
        let client = Object::take(connection);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to send the cancel from: closing is all there is.
            return;
        };
        let cancel = client.cancel_token();
        let postgres = self.postgres.clone();
        // Bounded: in a partition the cancel request is as stuck as the
        // statement, and would hold this task and the connection until it
        // heals. Postgres's own statement_timeout ends the work then.
        let deadline = postgres.call_timeout();
        runtime.spawn(async move {
            match tokio::time::timeout(deadline, postgres.cancel(cancel)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::warn!(error = %error_chain(&error), "could not cancel an abandoned statement");
                }
                Err(_elapsed) => {
                    tracing::warn!("could not cancel an abandoned statement: no answer within {deadline:?}");
                }
            }
            drop(client);
        });
    }
}
