//! A statement that is its own transaction, cancelled when its caller
//! gives up.
//!
//! A statement sent outside `BEGIN` commits by itself as soon as it
//! completes, whether or not anyone still waits for its answer. A call that
//! is cancelled (its client went away) while such a statement runs, say
//! waiting on a lock, must not go on to write what the caller gave up:
//! dropped before the answer arrives, [`CancelOnDrop`] asks Postgres to
//! cancel the statement and closes the connection, so that the cancel can
//! never reach a later statement of another call on that connection.
//! Once Postgres has committed, the cancel does nothing; that is the lost
//! response a retry from the same device is answered for.

use deadpool_postgres::Object;
use devicelink_shared::stores::Postgres;
use tokio_postgres::Client;

use crate::error::StoreError;

/// A pooled connection while a statement that commits on its own runs.
pub struct CancelOnDrop<'a> {
    connection: Option<Object>,
    /// Where the cancel request goes, made as the connection was.
    postgres: &'a Postgres,
}

impl<'a> CancelOnDrop<'a> {
    /// Guards `connection`, a connection of `postgres`, until
    /// [`Self::disarm`].
    pub fn new(connection: Object, postgres: &'a Postgres) -> Self {
        Self {
            connection: Some(connection),
            postgres,
        }
    }

    /// The connection, to send the statement on.
    pub fn client(&self) -> &Client {
        // Only `disarm` takes the connection, and it consumes `self`.
        self.connection
            .as_deref()
            .map(|wrapper| &**wrapper)
            .expect("the connection is held until disarmed")
    }

    /// The answer arrived: the connection is free for other statements.
    pub fn disarm(mut self) -> Object {
        self.connection
            .take()
            .expect("the connection is held until disarmed")
    }
}

impl Drop for CancelOnDrop<'_> {
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
        runtime.spawn(async move {
            if let Err(error) = postgres.cancel(cancel).await {
                tracing::warn!(error = %StoreError::from(error), "could not cancel an abandoned statement");
            }
            drop(client);
        });
    }
}
