//! The redemption transaction: claim the code, create or restore the user,
//! bind the device and arbitrate activation, all or nothing.

use devicelink_shared::secret::SecretHash;
use devicelink_shared::validate::{AppId, ExternalId};
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use super::{STATUS_CHANNEL, STATUS_COLUMNS, StatusRecord, Store};
use crate::arbitration::{ActiveInstall, Decision, arbitrate};
use crate::domain::{
    AppInfo, DeviceInfo, FormFactor, InstallId, InstallState, StateReason, UserId,
};
use crate::error::{RegistrationError, StoreError};
use crate::install_token::TokenNonce;

/// How often a redemption is tried when it collides with a concurrent one
/// (a deadlock, or a device bound concurrently by the same user).
const ATTEMPTS: usize = 3;

/// A code to redeem, all checked.
#[derive(Debug)]
pub struct NewRedemption<'a> {
    /// The hash of the code.
    pub code_hash: SecretHash,
    /// The app the code was minted for.
    pub app_id: AppId,
    /// The user the code was minted for.
    pub external_id: &'a ExternalId,
    /// The app on the device.
    pub app: &'a AppInfo,
    /// The device.
    pub device: &'a DeviceInfo,
    /// The nonce the install token is derived with.
    pub token_nonce: TokenNonce,
    /// The hash of that install token.
    pub token_hash: SecretHash,
}

/// The result of a redemption.
#[derive(Debug)]
pub struct Redeemed {
    /// The user.
    pub user_id: UserId,
    /// The device's install.
    pub install_id: InstallId,
    /// Whether the user existed before.
    pub restored: bool,
    /// The install's status after arbitration.
    pub status: StatusRecord,
    /// The app's SDK configuration.
    pub sdk_config: serde_json::Value,
    /// The install of another device this redemption deactivated, if any.
    pub superseded: Option<InstallId>,
}

/// What a redemption attempt came to.
#[derive(Debug)]
pub enum RedeemOutcome {
    /// The code was redeemed by this request.
    Redeemed(Redeemed),
    /// Another request redeemed the code first (it may be this device's
    /// own earlier attempt whose response was lost).
    AlreadyRedeemed,
}

/// A redemption already made, to answer a retry or refuse a replay.
#[derive(Debug)]
pub struct PastRedemption {
    /// The app it was made with.
    pub app_id: AppId,
    /// The device that made it.
    pub device_id: String,
    /// Its user.
    pub user_id: UserId,
    /// Its install.
    pub install_id: InstallId,
    /// Whether the user was restored.
    pub restored: bool,
    /// The nonce its install token was derived with.
    pub token_nonce: TokenNonce,
}

const CLAIM_CODE: &str = "INSERT INTO redeemed_codes (code_hash, app_id, device_id, token_nonce)
     VALUES ($1, $2, $3, $4)
     ON CONFLICT (code_hash) DO NOTHING";

/// Creates the user or finds the existing one, and locks its row so that
/// redemptions of one user arbitrate one at a time. `xmax = 0` holds for a
/// row this statement inserted.
const UPSERT_USER: &str = "INSERT INTO users (id, app_id, external_id) VALUES ($1, $2, $3)
     ON CONFLICT (app_id, external_id) DO UPDATE SET external_id = EXCLUDED.external_id
     RETURNING id, epoch, (xmax = 0) AS created";

/// The user's active install and the device's live install, locked.
const INSTALLS_IN_PLAY: &str =
    "SELECT id, user_id, device_id, form_factor, state, epoch FROM installs
     WHERE (user_id = $1 AND state = 'active')
        OR (app_id = $2 AND device_id = $3 AND state <> 'reset')
     FOR UPDATE";

const SUPERSEDE: &str =
    "UPDATE installs SET state = 'inactive', reason = 'superseded', changed_at = now()
     WHERE id = $1";

const INSERT_INSTALL: &str =
    "INSERT INTO installs (id, app_id, user_id, device_id, platform, form_factor, model,
         os_version, app_version, sdk_version, bundle_id, state, reason, epoch, token_hash)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)";

/// Re-binds the device's own install; `changed_at` moves only when the
/// status does.
const REBIND_INSTALL: &str = "UPDATE installs SET
         platform = $2, form_factor = $3, model = $4, os_version = $5, app_version = $6,
         sdk_version = $7, bundle_id = $8, token_hash = $9,
         changed_at = CASE WHEN (state, reason, epoch) IS DISTINCT FROM ($10::text, $11::text, $12::bigint)
                           THEN now() ELSE changed_at END,
         state = $10, reason = $11, epoch = $12
     WHERE id = $1";

const SET_USER_EPOCH: &str = "UPDATE users SET epoch = $2 WHERE id = $1";

const COMPLETE_REDEMPTION: &str =
    "UPDATE redeemed_codes SET user_id = $2, install_id = $3, restored = $4
     WHERE code_hash = $1";

const NOTIFY: &str = "SELECT pg_notify($1, id::text) FROM unnest($2::uuid[]) AS id";

const SDK_CONFIG: &str = "SELECT sdk_config FROM apps WHERE id = $1";

const FIND_REDEMPTION: &str = "SELECT app_id, device_id, user_id, install_id, restored, token_nonce
     FROM redeemed_codes WHERE code_hash = $1 AND user_id IS NOT NULL";

const RECORD_REPLAY: &str =
    "INSERT INTO code_replays (code_hash, app_id, device_id) VALUES ($1, $2, $3)";

/// One locked install of [`INSTALLS_IN_PLAY`].
struct InstallInPlay {
    id: InstallId,
    user_id: UserId,
    device_id: String,
    form_factor: FormFactor,
    active: bool,
    epoch: i64,
}

impl Store {
    /// Redeems a code in one transaction, retried when it collides with a
    /// concurrent one. Either everything is written or nothing is.
    #[tracing::instrument(name = "postgres.redeem", skip_all, fields(db.system = "postgresql"))]
    pub async fn redeem(
        &self,
        redemption: &NewRedemption<'_>,
    ) -> Result<RedeemOutcome, RegistrationError> {
        let mut attempt = 1;
        loop {
            match self.try_redeem(redemption).await {
                Err(RegistrationError::Store(StoreError::Conflict(error)))
                    if attempt < ATTEMPTS =>
                {
                    tracing::debug!(attempt, error = %error, "redemption collided; retrying");
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    async fn try_redeem(
        &self,
        new: &NewRedemption<'_>,
    ) -> Result<RedeemOutcome, RegistrationError> {
        let mut client = self.pool.get().await.map_err(StoreError::from)?;
        let tx = client.transaction().await.map_err(StoreError::from)?;
        let device = new.device;

        let claim = tx
            .prepare_cached(CLAIM_CODE)
            .await
            .map_err(StoreError::from)?;
        let claimed = tx
            .execute(
                &claim,
                &[
                    &new.code_hash.as_bytes().as_slice(),
                    &new.app_id.0,
                    &device.device_id,
                    &new.token_nonce.as_slice(),
                ],
            )
            .await
            .map_err(StoreError::from)?;
        if claimed == 0 {
            return Ok(RedeemOutcome::AlreadyRedeemed);
        }

        let upsert = tx
            .prepare_cached(UPSERT_USER)
            .await
            .map_err(StoreError::from)?;
        let user_row = tx
            .query_one(
                &upsert,
                &[&Uuid::now_v7(), &new.app_id.0, &new.external_id.as_str()],
            )
            .await
            .map_err(|error| app_missing_or(error, new.app_id))?;
        let user_id = UserId(user_row.try_get(0).map_err(StoreError::from)?);
        let user_epoch: i64 = user_row.try_get(1).map_err(StoreError::from)?;
        let restored = !user_row.try_get::<_, bool>(2).map_err(StoreError::from)?;

        let in_play = tx
            .prepare_cached(INSTALLS_IN_PLAY)
            .await
            .map_err(StoreError::from)?;
        let rows = tx
            .query(&in_play, &[&user_id.0, &new.app_id.0, &device.device_id])
            .await
            .map_err(StoreError::from)?;
        let installs = rows
            .iter()
            .map(install_in_play)
            .collect::<Result<Vec<_>, _>>()?;

        let own = installs
            .iter()
            .find(|install| install.device_id == device.device_id);
        if let Some(own) = own
            && own.user_id != user_id
        {
            return Err(device_taken());
        }
        let active = installs
            .iter()
            .find(|install| install.active && install.user_id == user_id);
        let decision = arbitrate(
            active.map(|install| ActiveInstall {
                install_id: install.id,
                form_factor: install.form_factor,
            }),
            own.map(|install| install.id),
            device.form_factor,
        );

        let (state, reason, install_epoch, new_user_epoch) = match decision {
            Decision::Activate { .. } => {
                (InstallState::Active, None, user_epoch + 1, user_epoch + 1)
            }
            Decision::KeepPhone => (
                InstallState::Inactive,
                Some(StateReason::PhonePreferred),
                own.map_or(0, |install| install.epoch),
                user_epoch,
            ),
        };
        let mut changed = Vec::new();
        let mut superseded = None;
        if let Decision::Activate {
            supersede: Some(previous),
        } = decision
        {
            let supersede = tx
                .prepare_cached(SUPERSEDE)
                .await
                .map_err(StoreError::from)?;
            tx.execute(&supersede, &[&previous.0])
                .await
                .map_err(StoreError::from)?;
            changed.push(previous.0);
            superseded = Some(previous);
        }

        let install_id = own.map_or_else(|| InstallId(Uuid::now_v7()), |install| install.id);
        let token_hash = new.token_hash.as_bytes().as_slice();
        let reason_text = reason.map(StateReason::as_db);
        let bound = if own.is_some() {
            changed.push(install_id.0);
            let rebind = tx
                .prepare_cached(REBIND_INSTALL)
                .await
                .map_err(StoreError::from)?;
            tx.execute(
                &rebind,
                &[
                    &install_id.0,
                    &device.platform.as_db(),
                    &device.form_factor.as_db(),
                    &device.model,
                    &device.os_version,
                    &new.app.app_version,
                    &new.app.sdk_version,
                    &new.app.bundle_id,
                    &token_hash,
                    &state.as_db(),
                    &reason_text,
                    &install_epoch,
                ],
            )
            .await
        } else {
            let insert = tx
                .prepare_cached(INSERT_INSTALL)
                .await
                .map_err(StoreError::from)?;
            tx.execute(
                &insert,
                &[
                    &install_id.0,
                    &new.app_id.0,
                    &user_id.0,
                    &device.device_id,
                    &device.platform.as_db(),
                    &device.form_factor.as_db(),
                    &device.model,
                    &device.os_version,
                    &new.app.app_version,
                    &new.app.sdk_version,
                    &new.app.bundle_id,
                    &state.as_db(),
                    &reason_text,
                    &install_epoch,
                    &token_hash,
                ],
            )
            .await
        };
        bound.map_err(bind_conflict)?;

        if new_user_epoch != user_epoch {
            let set_epoch = tx
                .prepare_cached(SET_USER_EPOCH)
                .await
                .map_err(StoreError::from)?;
            tx.execute(&set_epoch, &[&user_id.0, &new_user_epoch])
                .await
                .map_err(StoreError::from)?;
        }
        let complete = tx
            .prepare_cached(COMPLETE_REDEMPTION)
            .await
            .map_err(StoreError::from)?;
        tx.execute(
            &complete,
            &[
                &new.code_hash.as_bytes().as_slice(),
                &user_id.0,
                &install_id.0,
                &restored,
            ],
        )
        .await
        .map_err(StoreError::from)?;
        if !changed.is_empty() {
            let notify = tx.prepare_cached(NOTIFY).await.map_err(StoreError::from)?;
            tx.execute(&notify, &[&STATUS_CHANNEL, &changed])
                .await
                .map_err(StoreError::from)?;
        }
        let status = read_status(&tx, install_id).await?;
        let sdk_config = read_sdk_config(&tx, new.app_id).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(RedeemOutcome::Redeemed(Redeemed {
            user_id,
            install_id,
            restored,
            status,
            sdk_config,
            superseded,
        }))
    }

    /// The completed redemption of a code, if there is one.
    #[tracing::instrument(name = "postgres.find_redemption", skip_all, fields(db.system = "postgresql"))]
    pub async fn find_redemption(
        &self,
        code_hash: &SecretHash,
    ) -> Result<Option<PastRedemption>, StoreError> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(FIND_REDEMPTION).await?;
        let Some(row) = client
            .query_opt(&statement, &[&code_hash.as_bytes().as_slice()])
            .await?
        else {
            return Ok(None);
        };
        let nonce: Vec<u8> = row.try_get(5)?;
        Ok(Some(PastRedemption {
            app_id: AppId(row.try_get(0)?),
            device_id: row.try_get(1)?,
            user_id: UserId(row.try_get(2)?),
            install_id: InstallId(row.try_get(3)?),
            restored: row.try_get(4)?,
            token_nonce: nonce
                .try_into()
                .map_err(|_| StoreError::internal("stored token nonce has the wrong length"))?,
        }))
    }

    /// Records a used code presented again by another device.
    #[tracing::instrument(name = "postgres.record_replay", skip_all, fields(db.system = "postgresql"))]
    pub async fn record_replay(
        &self,
        code_hash: &SecretHash,
        app_id: AppId,
        device_id: &str,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(RECORD_REPLAY).await?;
        client
            .execute(
                &statement,
                &[&code_hash.as_bytes().as_slice(), &app_id.0, &device_id],
            )
            .await?;
        Ok(())
    }

    /// The install status and SDK configuration a retried redemption is
    /// answered with.
    #[tracing::instrument(name = "postgres.redemption_result", skip_all, fields(db.system = "postgresql"))]
    pub async fn redemption_result(
        &self,
        past: &PastRedemption,
    ) -> Result<Option<Redeemed>, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.build_transaction().read_only(true).start().await?;
        let status = match read_status_opt(&tx, past.install_id).await? {
            Some(status) => status,
            None => return Ok(None),
        };
        let sdk_config = read_sdk_config(&tx, past.app_id).await?;
        tx.commit().await?;
        Ok(Some(Redeemed {
            user_id: past.user_id,
            install_id: past.install_id,
            restored: past.restored,
            status,
            sdk_config,
            superseded: None,
        }))
    }
}

fn install_in_play(row: &tokio_postgres::Row) -> Result<InstallInPlay, StoreError> {
    let form_factor: &str = row.try_get(3)?;
    let state: &str = row.try_get(4)?;
    Ok(InstallInPlay {
        id: InstallId(row.try_get(0)?),
        user_id: UserId(row.try_get(1)?),
        device_id: row.try_get(2)?,
        form_factor: FormFactor::from_db(form_factor)
            .ok_or_else(|| StoreError::internal(format!("unknown form factor {form_factor:?}")))?,
        active: state == InstallState::Active.as_db(),
        epoch: row.try_get(5)?,
    })
}

async fn read_status(
    tx: &deadpool_postgres::Transaction<'_>,
    install_id: InstallId,
) -> Result<StatusRecord, StoreError> {
    read_status_opt(tx, install_id)
        .await?
        .ok_or_else(|| StoreError::internal("install vanished inside its own transaction"))
}

async fn read_status_opt(
    tx: &deadpool_postgres::Transaction<'_>,
    install_id: InstallId,
) -> Result<Option<StatusRecord>, StoreError> {
    let query = format!(
        "SELECT {STATUS_COLUMNS} FROM installs i JOIN users u ON u.id = i.user_id WHERE i.id = $1"
    );
    let statement = tx.prepare_cached(&query).await?;
    tx.query_opt(&statement, &[&install_id.0])
        .await?
        .map(|row| StatusRecord::from_row(&row))
        .transpose()
}

async fn read_sdk_config(
    tx: &deadpool_postgres::Transaction<'_>,
    app_id: AppId,
) -> Result<serde_json::Value, StoreError> {
    let statement = tx.prepare_cached(SDK_CONFIG).await?;
    let row = tx.query_opt(&statement, &[&app_id.0]).await?;
    row.map(|row| row.try_get(0))
        .transpose()?
        .ok_or_else(|| StoreError::internal("the app vanished during a redemption"))
}

fn device_taken() -> RegistrationError {
    RegistrationError::FailedPrecondition(
        "this device holds an install of another user; reset that install (ResetInstall) before linking a new user"
            .into(),
    )
}

/// A concurrent redemption bound the same device first: to another user it
/// is the device-taken precondition; for the same user, arbitration must
/// run again on the new state.
fn bind_conflict(error: tokio_postgres::Error) -> RegistrationError {
    let constraint = error
        .as_db_error()
        .and_then(|db_error| db_error.constraint());
    match constraint {
        Some("installs_one_live_per_device") => device_taken(),
        Some("installs_one_active_per_user") => StoreError::Conflict(error).into(),
        _ => StoreError::from(error).into(),
    }
}

/// The code's app no longer exists (erased between minting and redeeming).
fn app_missing_or(error: tokio_postgres::Error, app_id: AppId) -> RegistrationError {
    if error.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) {
        return RegistrationError::NotFound(format!("app {app_id} does not exist"));
    }
    StoreError::from(error).into()
}

/// Deletes up to 1,000 redemption records older than the retention at a
/// time.
const PURGE_REDEMPTIONS: &str = "DELETE FROM redeemed_codes WHERE code_hash IN (
         SELECT code_hash FROM redeemed_codes WHERE redeemed_at < now() - make_interval(secs => $1)
         LIMIT 1000
     )";

impl Store {
    /// Deletes redemption records older than `retention`; returns how many.
    #[tracing::instrument(name = "postgres.purge_redemptions", skip_all, fields(db.system = "postgresql"))]
    pub async fn purge_redemptions(
        &self,
        retention: std::time::Duration,
    ) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(PURGE_REDEMPTIONS).await?;
        let mut purged = 0;
        loop {
            let deleted = client
                .execute(&statement, &[&retention.as_secs_f64()])
                .await?;
            purged += deleted;
            if deleted < 1000 {
                return Ok(purged);
            }
        }
    }
}
