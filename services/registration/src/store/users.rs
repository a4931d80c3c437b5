//! Users as operators see and erase them (`GetUser`, `DeleteUser`).

use std::time::SystemTime;

use devicelink_shared::pb;
use devicelink_shared::pb::audit_event::Payload;
use devicelink_shared::stores::execute_typed;
use devicelink_shared::validate::{AppId, ExternalId};
use tokio_postgres::types::Type;
use uuid::Uuid;

use super::admin::Attribution;
use super::pipelined_tx::PipelinedTransaction;
use super::{STATUS_CHANNEL, Store, epoch, status_from_row};
use crate::audit;
use crate::domain::{FormFactor, InstallStatus, Platform, StateReason};
use crate::error::StoreError;

/// One install of a user, as an operator sees it.
#[derive(Debug, Clone)]
pub struct InstallSummaryRecord {
    /// Its status.
    pub status: InstallStatus,
    /// The device's identifier.
    pub device_id: String,
    /// The device's platform.
    pub platform: Option<Platform>,
    /// The device's form factor.
    pub form_factor: Option<FormFactor>,
    /// The device model.
    pub model: String,
    /// The OS version.
    pub os_version: String,
    /// The app version at the last redemption.
    pub app_version: String,
    /// The SDK version at the last redemption.
    pub sdk_version: String,
    /// When the install was created.
    pub created_at: SystemTime,
}

/// A user and its installs.
#[derive(Debug, Clone)]
pub struct UserRecord {
    /// The user's id.
    pub user_id: Uuid,
    /// Its app.
    pub app_id: AppId,
    /// The customer's identifier.
    pub external_id: String,
    /// The current activation epoch.
    pub epoch: u64,
    /// When it was created.
    pub created_at: SystemTime,
    /// Its installs, newest first.
    pub installs: Vec<InstallSummaryRecord>,
}

impl Store {
    /// A user with its installs.
    #[tracing::instrument(target = "devicelink::span", level = "debug", name = "postgres.get_user", skip_all, fields(db.system = "postgresql"))]
    pub async fn get_user(
        &self,
        app_id: AppId,
        external_id: &ExternalId,
    ) -> Result<Option<UserRecord>, StoreError> {
        let mut connection = self.connection().await?;
        let user = connection
            .call(async |client| {
                client
                    .query_typed_opt(
                        "SELECT id, epoch, created_at FROM users WHERE app_id = $1 AND external_id = $2",
                        &[(&app_id.0, Type::UUID), (&external_id.as_str(), Type::TEXT)],
                    )
                    .await
            })
            .await??;
        let Some(user) = user else {
            return Ok(None);
        };
        let user_id: Uuid = user.try_get(0)?;
        let rows = connection
            .call(async |client| {
                client
                    .query_typed(
                        concat!(
                            "SELECT ",
                            status_columns!(),
                            ", i.device_id, i.platform, i.form_factor, i.model, i.os_version,
                                    i.app_version, i.sdk_version, i.created_at
                             FROM installs i JOIN users u ON u.id = i.user_id
                             WHERE i.user_id = $1 ORDER BY i.created_at DESC, i.id"
                        ),
                        &[(&user_id, Type::UUID)],
                    )
                    .await
            })
            .await??;
        let installs = rows
            .iter()
            .map(|row| {
                Ok(InstallSummaryRecord {
                    status: status_from_row(row)?,
                    device_id: row.try_get(6)?,
                    platform: Platform::from_db(row.try_get(7)?),
                    form_factor: FormFactor::from_db(row.try_get(8)?),
                    model: row.try_get(9)?,
                    os_version: row.try_get(10)?,
                    app_version: row.try_get(11)?,
                    sdk_version: row.try_get(12)?,
                    created_at: row.try_get(13)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(Some(UserRecord {
            user_id,
            app_id,
            external_id: external_id.as_str().to_owned(),
            epoch: epoch(user.try_get(1)?),
            created_at: user.try_get(2)?,
            installs,
        }))
    }

    /// Erases a user: its row, installs and redemptions go (by cascade), and
    /// devices watching those installs are told in the same transaction.
    /// False when there is no such user.
    #[tracing::instrument(target = "devicelink::span", level = "debug", name = "postgres.delete_user", skip_all, fields(db.system = "postgresql"))]
    pub async fn delete_user(
        &self,
        app_id: AppId,
        external_id: &ExternalId,
        by: &Attribution,
    ) -> Result<bool, StoreError> {
        let mut tx =
            PipelinedTransaction::begin(self.connection().await?, PipelinedTransaction::BEGIN)
                .await?;
        match erase_user(&mut tx, app_id, external_id, by).await {
            Ok(true) => {
                tx.commit().await?;
                Ok(true)
            }
            other => {
                tx.rollback().await;
                other
            }
        }
    }
}

/// Deletes a user (its installs and redemptions go by cascade) with its
/// events: `$3`/`$4` the erasure's, `$5`/`$6` the deactivation of its
/// active install, if it had one. The events the user left behind stay,
/// as the record of what happened, but no longer name the person: the
/// external id's hash is cleared from every event that holds it (the
/// user's redemptions, stored in packs with the user's id, and the rows of
/// refused redemptions that name the same person). The last
/// statement before `COMMIT`, so its events commit within the bound the
/// audit watch relies on.
const ERASE_USER: &str = "WITH erased AS (DELETE FROM users WHERE id = $1 RETURNING id, app_id),
     active AS (SELECT i.id, i.app_id, i.user_id FROM installs i
         WHERE i.user_id = $1 AND i.state = 'active'),
     person AS (SELECT external_id_hash FROM audit_event_packs
             WHERE user_id = $1 AND external_id_hash IS NOT NULL
         UNION SELECT external_id_hash FROM audit_events
             WHERE user_id = $1 AND external_id_hash IS NOT NULL),
     unlinked AS (UPDATE audit_events SET external_id_hash = NULL
         WHERE app_id = $2 AND external_id_hash IN (SELECT external_id_hash FROM person)),
     unlinked_packs AS (UPDATE audit_event_packs SET external_id_hash = NULL
         WHERE user_id = $1 AND external_id_hash IS NOT NULL),
     erased_event AS (INSERT INTO audit_events (app_id, type, user_id, event)
         SELECT app_id, $3, id, $4 FROM erased),
     deactivated_event AS (INSERT INTO audit_events (app_id, type, user_id, install_id, event)
         SELECT active.app_id, $5, active.user_id, active.id, $6 FROM active, erased)
     SELECT 1 FROM erased";

/// The statements of [`Store::delete_user`] inside its transaction, a
/// round trip each; false (and nothing to commit) when there is no such
/// user. Deleting the user deletes, by `ON DELETE CASCADE` and in the same
/// transaction, its installs, its redemption records and their replays
/// (whose device ids are personal data too).
async fn erase_user(
    tx: &mut PipelinedTransaction,
    app_id: AppId,
    external_id: &ExternalId,
    by: &Attribution,
) -> Result<bool, StoreError> {
    let user = tx
        .call(async |client| {
            client
                .query_typed_opt(
                    "SELECT id, (SELECT count(*) FROM installs WHERE user_id = users.id)
                     FROM users WHERE app_id = $1 AND external_id = $2 FOR UPDATE",
                    &[(&app_id.0, Type::UUID), (&external_id.as_str(), Type::TEXT)],
                )
                .await
        })
        .await??;
    let Some(user) = user else {
        return Ok(false);
    };
    let user_id: Uuid = user.try_get(0)?;
    let installs_erased: i64 = user.try_get(1)?;
    let erased = by.change(Payload::UserErased(pb::UserErased {
        installs_erased: u64::try_from(installs_erased).unwrap_or_default(),
    }));
    let deactivated = audit::deactivation(&by.context, &by.actor, StateReason::Erased, None);
    tx.call(async |client| {
        execute_typed(
            client,
            "SELECT pg_notify($2, id::text) FROM installs WHERE user_id = $1",
            &[(&user_id, Type::UUID), (&STATUS_CHANNEL, Type::TEXT)],
        )
        .await
    })
    .await??;
    tx.call(async |client| {
        execute_typed(
            client,
            ERASE_USER,
            &[
                (&user_id, Type::UUID),
                (&app_id.0, Type::UUID),
                (&erased.type_name, Type::TEXT),
                (&erased.event, Type::BYTEA),
                (&deactivated.type_name, Type::TEXT),
                (&deactivated.event, Type::BYTEA),
            ],
        )
        .await
    })
    .await??;
    Ok(true)
}
