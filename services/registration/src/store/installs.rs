//! What a device asks about its own install: status and reset.

use devicelink_shared::secret::SecretHash;
use devicelink_shared::stores::Sql;
use tokio_postgres::types::Type;

use super::{STATUS_BY_ID, STATUS_BY_TOKEN_SQL, STATUS_CHANNEL, Store, status_from_row};
use crate::audit::{self, Actor, CallContext};
use crate::domain::{InstallId, InstallStatus, StateReason};
use crate::error::StoreError;
use devicelink_shared::pb;
use devicelink_shared::pb::audit_event::Payload;

/// Ends the install holding a token: the token hash is cleared so the token
/// stops working, and watchers are told in the same transaction, which
/// also writes its events: `$3`/`$4` the reset's, `$5`/`$6` the
/// deactivation's, written only when the install was active.
const RESET: Sql = Sql::new(
    "WITH before AS (
         SELECT id, state FROM installs WHERE token_hash = $1 FOR UPDATE
     ),
     ended AS (
         UPDATE installs i SET state = 'reset', reason = 'reset', token_hash = NULL, changed_at = now()
         FROM before WHERE i.id = before.id
         RETURNING i.id, i.app_id, i.user_id, before.state = 'active' AS was_active
     ),
     reset_events AS (INSERT INTO audit_events (app_id, type, user_id, install_id, event)
         SELECT ended.app_id, $3, ended.user_id, ended.id, $4 FROM ended),
     deactivation_events AS (INSERT INTO audit_events (app_id, type, user_id, install_id, event)
         SELECT ended.app_id, $5, ended.user_id, ended.id, $6 FROM ended WHERE was_active)
     SELECT id, pg_notify($2, id::text) FROM ended",
    &[
        Type::BYTEA,
        Type::TEXT,
        Type::TEXT,
        Type::BYTEA,
        Type::TEXT,
        Type::BYTEA,
    ],
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
        context: &CallContext,
    ) -> Result<Option<InstallId>, StoreError> {
        let reset = audit::change(
            context,
            &Actor::EventInstall,
            Payload::InstallReset(pb::InstallReset {}),
        );
        let deactivated =
            audit::deactivation(context, &Actor::EventInstall, StateReason::Reset, None);
        let row = self
            .connection()
            .await?
            .call(async |client| {
                RESET
                    .query_opt(
                        client,
                        &[
                            &token_hash.as_bytes().as_slice(),
                            &STATUS_CHANNEL,
                            &reset.type_name,
                            &reset.event,
                            &deactivated.type_name,
                            &deactivated.event,
                        ],
                    )
                    .await
            })
            .await??;
        row.map(|row| row.try_get(0).map(InstallId))
            .transpose()
            .map_err(StoreError::from)
    }
}
