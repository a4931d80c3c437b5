//! Redemption: claim the code, create or restore the user, bind the device
//! and arbitrate activation, all or nothing.
//!
//! Round trips are the cost that matters here. Most codes link a user that
//! does not exist yet, and a new user needs no arbitration, so that is
//! tried first as one statement that is its own transaction
//! ([`super::redeem_sql::CREATE_USER`]): one round trip. When the user
//! exists, a transaction arbitrates in two round trips, its statements
//! pipelined (tokio-postgres sends requests in the order their futures are
//! first polled, without waiting for earlier answers): one opens the
//! transaction and reads and locks everything arbitration needs, one writes
//! the outcome and commits (see [`PipelinedTransaction`]). Arbitration
//! itself runs in Rust between the two. The statements are in
//! [`super::redeem_sql`].
//!
//! Postgres time is the other cost, so there are fewer statements than
//! steps and nothing is written twice: a new user is inserted with the
//! epoch its first activation gives it, and the code is claimed by the
//! statement that binds the install. That claim is what makes a code
//! single-use: two redemptions of one code are of one user, so the second
//! waits on the first's insert or lock of the user row until the first
//! commits, and its claim then violates the code's primary key, which
//! rolls the whole attempt back.

use std::time::SystemTime;

use deadpool_postgres::Object;
use devicelink_shared::secret::SecretHash;
use devicelink_shared::validate::{AppId, ExternalId};
use futures_util::future::try_join_all;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};
use uuid::Uuid;

use super::cancel_on_drop::CancelOnDrop;
use super::pipelined_tx::PipelinedTransaction;
use super::redeem_sql::{self as sql, CODE_ALREADY_CLAIMED, NEW_USER_EPOCH};
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

/// One locked install of [`super::redeem_sql::INSTALLS_IN_PLAY`].
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

/// The statements of the transaction that arbitrates, prepared on one
/// connection.
struct Statements {
    upsert: Statement,
    in_play: Statement,
    supersede: Statement,
    insert: Statement,
    rebind: Statement,
    notify: Statement,
}

impl Statements {
    /// Prepares them all at once: one round trip on a new connection, none
    /// once they are in its cache.
    async fn prepare(connection: &Object) -> Result<Self, StoreError> {
        let (upsert, in_play, supersede, insert, rebind, notify) = futures_util::try_join!(
            connection.prepare_cached(sql::UPSERT_USER),
            connection.prepare_cached(sql::INSTALLS_IN_PLAY),
            connection.prepare_cached(sql::SUPERSEDE),
            connection.prepare_cached(sql::INSERT_INSTALL),
            connection.prepare_cached(sql::REBIND_INSTALL),
            connection.prepare_cached(sql::NOTIFY),
        )?;
        Ok(Self {
            upsert,
            in_play,
            supersede,
            insert,
            rebind,
            notify,
        })
    }
}

impl Store {
    /// Redeems a code, retried when it collides with a concurrent
    /// redemption. Either everything is written or nothing is.
    #[tracing::instrument(target = "devicelink::span", level = "debug", name = "postgres.redeem", skip_all, fields(db.system = "postgresql"))]
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

    /// One attempt: as a new user in one statement, else in a transaction
    /// that arbitrates.
    async fn try_redeem(
        &self,
        new: &NewRedemption<'_>,
    ) -> Result<RedeemOutcome, RegistrationError> {
        let connection = self.pool.get().await.map_err(StoreError::from)?;
        let create_user = connection
            .prepare_cached(sql::CREATE_USER)
            .await
            .map_err(StoreError::from)?;
        let guard = CancelOnDrop::new(connection, &self.postgres);
        let as_new_user = redeem_for_new_user(guard.client(), &create_user, new).await;
        let connection = guard.disarm();
        if let Some(outcome) = as_new_user? {
            return Ok(outcome);
        }
        // Only a user that exists needs the transaction's statements.
        let statements = Statements::prepare(&connection).await?;
        let tx = PipelinedTransaction::new(connection);
        match redeem_in(&tx, &statements, new).await {
            Ok(RedeemOutcome::Redeemed(redeemed)) => {
                tx.finish();
                Ok(RedeemOutcome::Redeemed(redeemed))
            }
            other => {
                tx.rollback().await;
                other
            }
        }
    }
}

/// The one round trip of a code whose user does not exist yet
/// ([`super::redeem_sql::CREATE_USER`]); `None` when the user exists, and
/// nothing was written.
async fn redeem_for_new_user(
    client: &Client,
    create_user: &Statement,
    new: &NewRedemption<'_>,
) -> Result<Option<RedeemOutcome>, RegistrationError> {
    let user_id = UserId(Uuid::now_v7());
    // A new user has no installs: arbitration activates this one.
    let outcome = decide(&[], user_id, 0, new.device)?;
    let binding = Binding::new(new, &outcome, InstallId(Uuid::now_v7()), user_id, false);
    let bound = binding.params();
    let external_id = new.external_id.as_str();
    // The binding's nineteen parameters, then the external id as `$20`.
    let params: [&(dyn ToSql + Sync); 20] =
        std::array::from_fn(|index| bound.get(index).copied().unwrap_or(&external_id));
    let row = match client.query_opt(create_user, &params).await {
        Ok(Some(row)) => row,
        Ok(None) => return Ok(None),
        Err(error) => return failed_write(error, new.app_id).map(Some),
    };
    let changed_at: SystemTime = row.try_get(0).map_err(StoreError::from)?;
    let sdk_config = sdk_config(row.try_get(1).map_err(StoreError::from)?, new.app_id)?;
    Ok(Some(RedeemOutcome::Redeemed(
        binding.redeemed(changed_at, sdk_config),
    )))
}

/// What binding an install writes: the parameters `$1`–`$19` shared by the
/// statements that bind one (see [`super::redeem_sql::INSERT_INSTALL`]),
/// and what the redemption answers once they are written.
struct Binding<'a> {
    new: &'a NewRedemption<'a>,
    outcome: &'a Outcome,
    install_id: InstallId,
    user_id: UserId,
    restored: bool,
    platform: &'static str,
    form_factor: &'static str,
    state: &'static str,
    reason: Option<&'static str>,
    token_hash: &'a [u8],
    code_hash: &'a [u8],
    token_nonce: &'a [u8],
}

impl<'a> Binding<'a> {
    fn new(
        new: &'a NewRedemption<'a>,
        outcome: &'a Outcome,
        install_id: InstallId,
        user_id: UserId,
        restored: bool,
    ) -> Self {
        Self {
            new,
            outcome,
            install_id,
            user_id,
            restored,
            platform: new.device.platform.as_db(),
            form_factor: new.device.form_factor.as_db(),
            state: outcome.state.as_db(),
            reason: outcome.reason.map(StateReason::as_db),
            token_hash: new.token_hash.as_bytes().as_slice(),
            code_hash: new.code_hash.as_bytes().as_slice(),
            token_nonce: new.token_nonce.as_slice(),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 19] {
        [
            &self.install_id.0,
            &self.new.app_id.0,
            &self.user_id.0,
            &self.new.device.device_id,
            &self.platform,
            &self.form_factor,
            &self.new.device.model,
            &self.new.device.os_version,
            &self.new.app.app_version,
            &self.new.app.sdk_version,
            &self.new.app.bundle_id,
            &self.token_hash,
            &self.state,
            &self.reason,
            &self.outcome.install_epoch,
            &self.code_hash,
            &self.token_nonce,
            &self.restored,
            &self.outcome.user_epoch,
        ]
    }

    /// The redemption, once written.
    fn redeemed(&self, changed_at: SystemTime, sdk_config: serde_json::Value) -> Redeemed {
        Redeemed {
            user_id: self.user_id,
            install_id: self.install_id,
            restored: self.restored,
            status: StatusRecord {
                install_id: self.install_id,
                state: self.outcome.state,
                reason: self.outcome.reason,
                epoch: epoch(self.outcome.install_epoch),
                current_epoch: epoch(self.outcome.user_epoch),
                changed_at,
            },
            sdk_config,
            superseded: self.outcome.superseded,
        }
    }
}

/// The two round trips of the transaction that arbitrates: `BEGIN` and the
/// reads, then the writes and `COMMIT`. Anything but
/// [`RedeemOutcome::Redeemed`] leaves the transaction for the caller to
/// roll back.
async fn redeem_in(
    tx: &PipelinedTransaction,
    statements: &Statements,
    new: &NewRedemption<'_>,
) -> Result<RedeemOutcome, RegistrationError> {
    let client = tx.client();
    let device = new.device;

    // Round trip 1: open the transaction, create or lock the user and read
    // the SDK configuration, lock the installs in play.
    let new_user_id = Uuid::now_v7();
    let ((), user_row, install_rows) = futures_util::future::try_join3(
        client.batch_execute(PipelinedTransaction::BEGIN),
        client.query_one(
            &statements.upsert,
            &[
                &new_user_id,
                &new.app_id.0,
                &new.external_id.as_str(),
                &NEW_USER_EPOCH,
            ],
        ),
        client.query(
            &statements.in_play,
            &[&new.app_id.0, &new.external_id.as_str(), &device.device_id],
        ),
    )
    .await
    .map_err(|error| app_missing_or(error, new.app_id))?;
    let user_id = UserId(user_row.try_get(0).map_err(StoreError::from)?);
    let stored_user_epoch: i64 = user_row.try_get(1).map_err(StoreError::from)?;
    let restored = !user_row.try_get::<_, bool>(2).map_err(StoreError::from)?;
    let sdk_config = sdk_config(user_row.try_get(3).map_err(StoreError::from)?, new.app_id)?;
    // Arbitration sees a new user as it was before this activation.
    let user_epoch = if restored { stored_user_epoch } else { 0 };
    let installs = install_rows
        .iter()
        .map(install_in_play)
        .collect::<Result<Vec<_>, _>>()?;
    let outcome = decide(&installs, user_id, user_epoch, device)?;

    // Round trip 2: supersede, announce what changed, bind the install with
    // the code's claim and the user's epoch, commit.
    let install_id = outcome
        .existing
        .unwrap_or_else(|| InstallId(Uuid::now_v7()));
    let binding = Binding::new(new, &outcome, install_id, user_id, restored);
    let bind_params = binding.params();
    let bind = if outcome.existing.is_some() {
        &statements.rebind
    } else {
        &statements.insert
    };
    let changed: Vec<Uuid> = outcome
        .superseded
        .iter()
        .chain(outcome.existing.iter())
        .map(|install| install.0)
        .collect();
    let superseded_id = outcome
        .superseded
        .map(|install| install.0)
        .unwrap_or_default();
    let supersede_params: [&(dyn ToSql + Sync); 1] = [&superseded_id];
    let notify_params: [&(dyn ToSql + Sync); 2] = [&STATUS_CHANNEL, &changed];
    let mut before_bind = Vec::new();
    if outcome.superseded.is_some() {
        before_bind.push(client.query(&statements.supersede, &supersede_params));
    }
    if !changed.is_empty() {
        before_bind.push(client.query(&statements.notify, &notify_params));
    }
    // Responses arrive in order, so the first statement to fail is the
    // error seen, not the failures that follow it.
    let written = futures_util::future::try_join3(
        try_join_all(before_bind),
        client.query_opt(bind, &bind_params),
        client.batch_execute(PipelinedTransaction::COMMIT),
    )
    .await;
    let bound = match written {
        Ok((_, bound, ())) => bound,
        Err(error) => return failed_write(error, new.app_id),
    };
    let changed_at: SystemTime = bound
        .ok_or_else(|| StoreError::internal("the install was not written"))?
        .try_get(0)
        .map_err(StoreError::from)?;
    Ok(RedeemOutcome::Redeemed(
        binding.redeemed(changed_at, sdk_config),
    ))
}

/// The app's SDK configuration as read with the user; missing only if the
/// app is gone.
fn sdk_config(
    config: Option<serde_json::Value>,
    app_id: AppId,
) -> Result<serde_json::Value, RegistrationError> {
    config.ok_or_else(|| RegistrationError::NotFound(format!("app {app_id} does not exist")))
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

/// Why writing a redemption failed: the code was claimed already (by a
/// concurrent redemption, or this device's own earlier one), the app is
/// gone, or the install collided with a concurrent one.
fn failed_write(
    error: tokio_postgres::Error,
    app_id: AppId,
) -> Result<RedeemOutcome, RegistrationError> {
    if violates(&error, CODE_ALREADY_CLAIMED) {
        return Ok(RedeemOutcome::AlreadyRedeemed);
    }
    if error.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) {
        return Err(app_missing_or(error, app_id));
    }
    Err(bind_conflict(error))
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

/// Whether `error` is a violation of `constraint`.
fn violates(error: &tokio_postgres::Error, constraint: &str) -> bool {
    error
        .as_db_error()
        .and_then(|db_error| db_error.constraint())
        == Some(constraint)
}

/// The code's app no longer exists (erased between minting and redeeming).
fn app_missing_or(error: tokio_postgres::Error, app_id: AppId) -> RegistrationError {
    if error.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) {
        return RegistrationError::NotFound(format!("app {app_id} does not exist"));
    }
    StoreError::from(error).into()
}
