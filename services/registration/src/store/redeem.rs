//! The redemption transaction: claim the code, create or restore the user,
//! bind the device and arbitrate activation, all or nothing.
//!
//! Round trips are the cost that matters here, so the statements are
//! pipelined (tokio-postgres sends requests in the order their futures are
//! first polled, without waiting for earlier answers): one round trip reads
//! and locks everything arbitration needs, one writes the outcome, then
//! `COMMIT`. Arbitration itself runs in Rust between the two.

use std::time::SystemTime;

use devicelink_shared::secret::SecretHash;
use devicelink_shared::validate::{AppId, ExternalId};
use futures_util::future::try_join_all;
use tokio_postgres::Statement;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::{STATUS_CHANNEL, StatusRecord, Store, epoch};
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

const CLAIM_CODE: &str = "INSERT INTO redeemed_codes (code_hash, app_id, device_id, token_nonce)
     VALUES ($1, $2, $3, $4)
     ON CONFLICT (code_hash) DO NOTHING";

/// Creates the user or finds the existing one, and locks its row so that
/// redemptions of one user arbitrate one at a time. `xmax = 0` holds for a
/// row this statement inserted.
const UPSERT_USER: &str = "INSERT INTO users (id, app_id, external_id) VALUES ($1, $2, $3)
     ON CONFLICT (app_id, external_id) DO UPDATE SET external_id = EXCLUDED.external_id
     RETURNING id, epoch, (xmax = 0) AS created";

/// The user's active install and the device's live install, locked. The
/// user is found by external id, so this runs in the same round trip as
/// [`UPSERT_USER`], whose row it sees.
const INSTALLS_IN_PLAY: &str =
    "SELECT id, user_id, device_id, form_factor, state, epoch FROM installs
     WHERE (user_id = (SELECT id FROM users WHERE app_id = $1 AND external_id = $2) AND state = 'active')
        OR (app_id = $1 AND device_id = $3 AND state <> 'reset')
     FOR UPDATE";

/// The app's SDK configuration, returned to the device.
pub(super) const SDK_CONFIG: &str = "SELECT sdk_config FROM apps WHERE id = $1";

const SUPERSEDE: &str =
    "UPDATE installs SET state = 'inactive', reason = 'superseded', changed_at = now()
     WHERE id = $1";

const INSERT_INSTALL: &str =
    "INSERT INTO installs (id, app_id, user_id, device_id, platform, form_factor, model,
         os_version, app_version, sdk_version, bundle_id, state, reason, epoch, token_hash)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
     RETURNING changed_at";

/// Re-binds the device's own install; `changed_at` moves only when the
/// status does.
const REBIND_INSTALL: &str = "UPDATE installs SET
         platform = $2, form_factor = $3, model = $4, os_version = $5, app_version = $6,
         sdk_version = $7, bundle_id = $8, token_hash = $9,
         changed_at = CASE WHEN (state, reason, epoch) IS DISTINCT FROM ($10::text, $11::text, $12::bigint)
                           THEN now() ELSE changed_at END,
         state = $10, reason = $11, epoch = $12
     WHERE id = $1
     RETURNING changed_at";

const SET_USER_EPOCH: &str = "UPDATE users SET epoch = $2 WHERE id = $1";

const COMPLETE_REDEMPTION: &str =
    "UPDATE redeemed_codes SET user_id = $2, install_id = $3, restored = $4
     WHERE code_hash = $1";

/// Announces status changes; delivered by Postgres on commit.
const NOTIFY: &str = "SELECT pg_notify($1, id::text) FROM unnest($2::uuid[]) AS id";

/// Every statement of the transaction, prepared together (one round trip on
/// a new connection, none once cached).
const STATEMENTS: [&str; 10] = [
    CLAIM_CODE,
    UPSERT_USER,
    INSTALLS_IN_PLAY,
    SDK_CONFIG,
    SUPERSEDE,
    INSERT_INSTALL,
    REBIND_INSTALL,
    SET_USER_EPOCH,
    COMPLETE_REDEMPTION,
    NOTIFY,
];

/// One locked install of [`INSTALLS_IN_PLAY`].
struct InstallInPlay {
    id: InstallId,
    user_id: UserId,
    device_id: String,
    form_factor: FormFactor,
    active: bool,
    epoch: i64,
}

/// What arbitration decided, ready to be written.
struct Outcome {
    state: InstallState,
    reason: Option<StateReason>,
    install_epoch: i64,
    user_epoch: i64,
    superseded: Option<InstallId>,
    /// The device's existing install of this user, re-bound instead of a
    /// new one inserted.
    existing: Option<InstallId>,
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
        let statements = try_join_all(STATEMENTS.map(|sql| client.prepare_cached(sql)))
            .await
            .map_err(StoreError::from)?;
        let [
            claim,
            upsert,
            in_play,
            sdk_config,
            supersede,
            insert,
            rebind,
            set_epoch,
            complete,
            notify,
        ] = <[Statement; 10]>::try_from(statements)
            .map_err(|_| StoreError::internal("prepared statement count"))?;
        let tx = client.transaction().await.map_err(StoreError::from)?;
        let device = new.device;
        let code_hash = new.code_hash.as_bytes().as_slice();

        // Round trip 1: claim the code, create or lock the user, lock the
        // installs in play, read the SDK configuration.
        let new_user_id = Uuid::now_v7();
        let (claimed, user_row, install_rows, config_row) = futures_util::future::try_join4(
            tx.execute(
                &claim,
                &[
                    &code_hash,
                    &new.app_id.0,
                    &device.device_id,
                    &new.token_nonce.as_slice(),
                ],
            ),
            tx.query_one(
                &upsert,
                &[&new_user_id, &new.app_id.0, &new.external_id.as_str()],
            ),
            tx.query(
                &in_play,
                &[&new.app_id.0, &new.external_id.as_str(), &device.device_id],
            ),
            tx.query_opt(&sdk_config, &[&new.app_id.0]),
        )
        .await
        .map_err(|error| app_missing_or(error, new.app_id))?;
        if claimed == 0 {
            return Ok(RedeemOutcome::AlreadyRedeemed);
        }
        let user_id = UserId(user_row.try_get(0).map_err(StoreError::from)?);
        let user_epoch: i64 = user_row.try_get(1).map_err(StoreError::from)?;
        let restored = !user_row.try_get::<_, bool>(2).map_err(StoreError::from)?;
        let sdk_config: serde_json::Value = config_row
            .ok_or_else(|| {
                RegistrationError::NotFound(format!("app {} does not exist", new.app_id))
            })?
            .try_get(0)
            .map_err(StoreError::from)?;
        let installs = install_rows
            .iter()
            .map(install_in_play)
            .collect::<Result<Vec<_>, _>>()?;
        let outcome = decide(&installs, user_id, user_epoch, device)?;

        // Round trip 2: write the outcome and announce what changed.
        let install_id = outcome
            .existing
            .unwrap_or_else(|| InstallId(Uuid::now_v7()));
        let token_hash = new.token_hash.as_bytes().as_slice();
        let state = outcome.state.as_db();
        let reason = outcome.reason.map(StateReason::as_db);
        let platform = device.platform.as_db();
        let form_factor = device.form_factor.as_db();
        let changed: Vec<Uuid> = outcome
            .superseded
            .iter()
            .chain(outcome.existing.iter())
            .map(|install| install.0)
            .collect();
        let (bind, bind_params): (&Statement, Vec<&(dyn ToSql + Sync)>) = match outcome.existing {
            Some(_) => (
                &rebind,
                vec![
                    &install_id.0,
                    &platform,
                    &form_factor,
                    &device.model,
                    &device.os_version,
                    &new.app.app_version,
                    &new.app.sdk_version,
                    &new.app.bundle_id,
                    &token_hash,
                    &state,
                    &reason,
                    &outcome.install_epoch,
                ],
            ),
            None => (
                &insert,
                vec![
                    &install_id.0,
                    &new.app_id.0,
                    &user_id.0,
                    &device.device_id,
                    &platform,
                    &form_factor,
                    &device.model,
                    &device.os_version,
                    &new.app.app_version,
                    &new.app.sdk_version,
                    &new.app.bundle_id,
                    &state,
                    &reason,
                    &outcome.install_epoch,
                    &token_hash,
                ],
            ),
        };
        let superseded_id = outcome
            .superseded
            .map(|install| install.0)
            .unwrap_or_default();
        let supersede_params: [&(dyn ToSql + Sync); 1] = [&superseded_id];
        let epoch_params: [&(dyn ToSql + Sync); 2] = [&user_id.0, &outcome.user_epoch];
        let complete_params: [&(dyn ToSql + Sync); 4] =
            [&code_hash, &user_id.0, &install_id.0, &restored];
        let notify_params: [&(dyn ToSql + Sync); 2] = [&STATUS_CHANNEL, &changed];
        let mut writes = Vec::new();
        if outcome.superseded.is_some() {
            writes.push(tx.query(&supersede, &supersede_params));
        }
        writes.push(tx.query(bind, &bind_params));
        if outcome.user_epoch != user_epoch {
            writes.push(tx.query(&set_epoch, &epoch_params));
        }
        writes.push(tx.query(&complete, &complete_params));
        if !changed.is_empty() {
            writes.push(tx.query(&notify, &notify_params));
        }
        let writes = try_join_all(writes);
        let results = writes.await.map_err(bind_conflict)?;
        let bound_index = usize::from(outcome.superseded.is_some());
        let changed_at: SystemTime = results
            .get(bound_index)
            .and_then(|rows| rows.first())
            .ok_or_else(|| StoreError::internal("the install was not written"))?
            .try_get(0)
            .map_err(StoreError::from)?;
        tx.commit().await.map_err(StoreError::from)?;

        Ok(RedeemOutcome::Redeemed(Redeemed {
            user_id,
            install_id,
            restored,
            status: StatusRecord {
                install_id,
                state: outcome.state,
                reason: outcome.reason,
                epoch: epoch(outcome.install_epoch),
                current_epoch: epoch(outcome.user_epoch),
                changed_at,
            },
            sdk_config,
            superseded: outcome.superseded,
        }))
    }
}

/// Runs arbitration over the locked installs: refuses a device that holds
/// another user, and says what to write.
fn decide(
    installs: &[InstallInPlay],
    user_id: UserId,
    user_epoch: i64,
    device: &DeviceInfo,
) -> Result<Outcome, RegistrationError> {
    let own = installs
        .iter()
        .find(|install| install.device_id == device.device_id);
    if own.is_some_and(|install| install.user_id != user_id) {
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
    let existing = own.map(|install| install.id);
    Ok(match decision {
        Decision::Activate { supersede } => Outcome {
            state: InstallState::Active,
            reason: None,
            install_epoch: user_epoch + 1,
            user_epoch: user_epoch + 1,
            superseded: supersede,
            existing,
        },
        Decision::KeepPhone => Outcome {
            state: InstallState::Inactive,
            reason: Some(StateReason::PhonePreferred),
            install_epoch: own.map_or(0, |install| install.epoch),
            user_epoch,
            superseded: None,
            existing,
        },
    })
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
