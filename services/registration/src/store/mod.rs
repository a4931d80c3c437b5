//! Postgres storage of apps, keys, users and installs.
//!
//! Queries are plain SQL next to the code that uses them, with their
//! parameters' types ([`Sql`]), run on pooled connections as cached
//! prepared statements, or as unnamed ones behind PgBouncer in transaction
//! mode, which keeps no prepared statement between transactions (see
//! `devicelink_shared::stores::Sql`). Admin statements, rare, are always
//! sent unnamed. Every call to Postgres runs under the store deadline
//! (`connection.rs`, over the common crate's `BoundedConnection`), and a
//! call that is abandoned is cancelled and its connection retired.
//!
//! The store reports what happened in domain terms (an outcome such as
//! [`RedeemOutcome::DeviceHeldByAnotherUser`], or `None` for something not
//! found); its errors are only [`StoreError`]s. Which gRPC code and message
//! a client sees is chosen in [`crate::service`].

/// The columns [`status_from_row`] reads, from `installs i` joined
/// with `users u`. A macro so that queries naming them are constants, not
/// strings formatted on every call.
macro_rules! status_columns {
    () => {
        "i.id, i.state, i.reason, i.epoch, i.changed_at, u.epoch"
    };
}

mod admin;
mod app_limits;
mod audit;
mod audit_packs;
mod connection;
mod installs;
mod pipelined_tx;
mod redeem;
pub mod redeem_sql;
mod redemptions;
mod users;

use deadpool_postgres::Pool;
use devicelink_shared::stores::{Postgres, Sql, TypedParams, execute_typed};
use tokio_postgres::types::Type;

pub use admin::{ApiKeyRecord, AppRecord, Attribution, CreateKeyOutcome, NewApiKeyRecord};
pub use app_limits::{AppLimits, LimitOverride};
pub use audit::{AuditFilter, AuditPage, StoredAuditEvent, watch_settle};
pub use redeem::{NewRedemption, RedeemOutcome, Redeemed};
pub use redemptions::PastRedemption;
pub use users::{InstallSummaryRecord, UserRecord};

use self::connection::Connection;
use crate::domain::{InstallId, InstallState, InstallStatus, StateReason};
use crate::error::StoreError;

/// The Postgres channel on which install status changes are announced, with
/// the install id as payload. Sent inside the changing transaction, so it is
/// delivered exactly when the change commits.
pub const STATUS_CHANNEL: &str = "devicelink_install_status";

/// Reads the columns `id, state, reason, epoch, changed_at, user epoch`
/// ([`status_columns!`]).
fn status_from_row(row: &tokio_postgres::Row) -> Result<InstallStatus, StoreError> {
    let state: &str = row.try_get(1)?;
    let reason: Option<&str> = row.try_get(2)?;
    Ok(InstallStatus {
        install_id: InstallId(row.try_get(0)?),
        state: InstallState::from_db(state)
            .ok_or_else(|| StoreError::internal(format!("unknown install state {state:?}")))?,
        reason: reason
            .map(|reason| {
                StateReason::from_db(reason)
                    .ok_or_else(|| StoreError::internal(format!("unknown state reason {reason:?}")))
            })
            .transpose()?,
        epoch: epoch(row.try_get(3)?),
        current_epoch: epoch(row.try_get(5)?),
        changed_at: row.try_get(4)?,
    })
}

/// Epochs are stored as `bigint` with a `CHECK (epoch >= 0)`.
fn epoch(stored: i64) -> u64 {
    u64::try_from(stored).unwrap_or_default()
}

/// The status of the install holding a token, by the token's hash. Public
/// so that the benchmark's floor (d) issues this very query.
pub const STATUS_BY_TOKEN: &str = concat!(
    "SELECT ",
    status_columns!(),
    " FROM installs i JOIN users u ON u.id = i.user_id WHERE i.token_hash = $1"
);

/// [`STATUS_BY_TOKEN`]: `$1` the token's hash.
const STATUS_BY_TOKEN_SQL: Sql = Sql::new(STATUS_BY_TOKEN, &[Type::BYTEA]);

/// The status of an install by id.
const STATUS_BY_ID: Sql = Sql::new(
    concat!(
        "SELECT ",
        status_columns!(),
        " FROM installs i JOIN users u ON u.id = i.user_id WHERE i.id = $1"
    ),
    &[Type::UUID],
);

/// registration's Postgres storage.
#[derive(Clone)]
pub struct Store {
    postgres: Postgres,
}

impl Store {
    /// Storage over `postgres`'s pool.
    pub fn new(postgres: Postgres) -> Self {
        Self { postgres }
    }

    /// The pool, for migrations.
    pub fn pool(&self) -> &Pool {
        self.postgres.pool()
    }

    /// Postgres itself, for the status listener and health checks.
    pub fn postgres(&self) -> &Postgres {
        &self.postgres
    }

    /// A pooled connection whose calls run under the store deadline.
    async fn connection(&self) -> Result<Connection, StoreError> {
        Connection::get(&self.postgres).await
    }

    /// One statement that answers at most one row, on a connection of its
    /// own, under the store deadline.
    async fn query_opt_call(
        &self,
        sql: &str,
        params: &TypedParams<'_>,
    ) -> Result<Option<tokio_postgres::Row>, StoreError> {
        let mut connection = self.connection().await?;
        Ok(connection
            .call(async |client| client.query_typed_opt(sql, params).await)
            .await??)
    }

    /// One statement that writes, on a connection of its own, under the
    /// store deadline; how many rows it changed.
    async fn execute_call(&self, sql: &str, params: &TypedParams<'_>) -> Result<u64, StoreError> {
        let mut connection = self.connection().await?;
        Ok(connection
            .call(async |client| execute_typed(client, sql, params).await)
            .await??)
    }
}

#[cfg(test)]
mod tests {
    use super::epoch;

    #[test]
    fn negative_epochs_read_as_zero() {
        assert_eq!(epoch(-1), 0);
        assert_eq!(epoch(7), 7);
    }
}
