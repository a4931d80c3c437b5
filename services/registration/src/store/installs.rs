//! What a device asks about its own install: status and reset.

use devicelink_shared::secret::SecretHash;
use devicelink_shared::stores::Sql;
use tokio_postgres::types::Type;

use super::{STATUS_BY_ID, STATUS_BY_TOKEN_SQL, STATUS_CHANNEL, Store, status_from_row};
use crate::domain::{InstallId, InstallStatus};
use crate::error::StoreError;

/// Ends the install holding a token: the token hash is cleared so the token
/// stops working, and watchers are told in the same transaction.
const RESET: Sql = Sql::new(
    "WITH ended AS (
         UPDATE installs SET state = 'reset', reason = 'reset', token_hash = NULL, changed_at = now()
         WHERE token_hash = $1
         RETURNING id
     )
     SELECT id, pg_notify($2, id::text) FROM ended",
    &[Type::BYTEA, Type::TEXT],
);

impl Store {
    /// The status of the live install holding a token, `None` when no live
    /// install holds it (unknown, or reset).
    #[tracing::instrument(target = "devicelink::span", level = "debug", name = "postgres.status_by_token", skip_all, fields(db.system = "postgresql"))]
    pub async fn status_by_token(
        &self,
        token_hash: &SecretHash,
    ) -> Result<Option<InstallStatus>, StoreError> {
        let row = self
            .connection()
            .await?
            .call(async |client| {
                STATUS_BY_TOKEN_SQL
                    .query_opt(client, &[&token_hash.as_bytes().as_slice()])
                    .await
            })
            .await??;
        row.map(|row| status_from_row(&row)).transpose()
    }

    /// The status of an install by id, `None` when it is gone (erased).
    #[tracing::instrument(target = "devicelink::span", level = "debug", name = "postgres.status_by_id", skip_all, fields(db.system = "postgresql"))]
    pub async fn status_by_id(
        &self,
        install_id: InstallId,
    ) -> Result<Option<InstallStatus>, StoreError> {
        let row = self
            .connection()
            .await?
            .call(async |client| STATUS_BY_ID.query_opt(client, &[&install_id.0]).await)
            .await??;
        row.map(|row| status_from_row(&row)).transpose()
    }

    /// Resets the install holding a token; `None` when no live install holds
    /// it.
    #[tracing::instrument(target = "devicelink::span", level = "debug", name = "postgres.reset_by_token", skip_all, fields(db.system = "postgresql"))]
    pub async fn reset_by_token(
        &self,
        token_hash: &SecretHash,
    ) -> Result<Option<InstallId>, StoreError> {
        let row = self
            .connection()
            .await?
            .call(async |client| {
                RESET
                    .query_opt(
                        client,
                        &[&token_hash.as_bytes().as_slice(), &STATUS_CHANNEL],
                    )
                    .await
            })
            .await??;
        row.map(|row| row.try_get(0).map(InstallId))
            .transpose()
            .map_err(StoreError::from)
    }
}
