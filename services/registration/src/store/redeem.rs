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
//! itself ([`crate::arbitration::resolve`]) runs in Rust between the two.
//! The statements are in [`super::redeem_sql`]. Each round trip is a call
//! under the store deadline ([`super::connection`]).
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

use devicelink_shared::code_challenge::CodeChallenge;
use devicelink_shared::secret::SecretHash;
use devicelink_shared::stores::{PooledClient, Sql};
use devicelink_shared::validate::{AppId, ExternalId};
use futures_util::future::try_join_all;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

use super::pipelined_tx::PipelinedTransaction;
use super::redeem_sql::{self as sql, CODE_ALREADY_CLAIMED, NEW_USER_EPOCH};
use super::{STATUS_CHANNEL, Store, epoch};
use crate::arbitration::{DeviceHeldByAnotherUser, InstallInPlay, Resolution, resolve};
use crate::audit::{self, AuditRows, CallContext, ChangePack};
use crate::domain::{
    AppInfo, DeviceInfo, FormFactor, InstallId, InstallState, InstallStatus, StateReason, UserId,
};
use crate::error::StoreError;
use crate::install_token::TokenNonce;
use devicelink_shared::pb;
use devicelink_shared::pb::audit_event::Payload;

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
    /// When the code stops being redeemable: a retry from this device is
    /// answered until then.
    pub code_expires_at: SystemTime,
    /// The challenge the code was minted with, if it is device-bound: kept
    /// with the claim, so that a retry must prove possession too.
    pub code_challenge: Option<CodeChallenge>,
    /// The external id's keyed hash, the only form of it events hold.
    pub external_id_hash: [u8; 32],
    /// The call, as its events record it.
    pub context: &'a CallContext,
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
    pub status: InstallStatus,
    /// The app's SDK configuration.
    pub sdk_config: serde_json::Value,
    /// The install of another device this redemption deactivated, if any.
    pub superseded: Option<InstallId>,
}

/// What a redemption attempt came to. Only [`RedeemOutcome::Redeemed`]
/// wrote anything.
#[derive(Debug)]
pub enum RedeemOutcome {
    /// The code was redeemed by this request.
    Redeemed(Redeemed),
    /// Another request redeemed the code first (it may be this device's
    /// own earlier attempt whose response was lost).
    AlreadyRedeemed,
    /// The device holds a live install of another user.
    DeviceHeldByAnotherUser,
    /// The code's app no longer exists (erased between minting and
    /// redeeming).
    AppNotFound,
}

impl From<DeviceHeldByAnotherUser> for RedeemOutcome {
    fn from(_: DeviceHeldByAnotherUser) -> Self {
        Self::DeviceHeldByAnotherUser
    }
}

/// The types of [`Binding::params`], `$1`–`$21` (the parameters of
/// [`sql::INSERT_INSTALL`] and [`sql::REBIND_INSTALL`]), then any `extra`.
macro_rules! binding_types {
    ($($extra:expr),*) => {
        [
            Type::UUID,
            Type::UUID,
            Type::UUID,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::BYTEA,
            Type::TEXT,
            Type::TEXT,
            Type::INT8,
            Type::BYTEA,
            Type::BYTEA,
            Type::BOOL,
            Type::INT8,
            Type::TIMESTAMPTZ,
            Type::BYTEA,
            $($extra),*
        ]
    };
}

/// [`sql::CREATE_USER`]: the binding's parameters, then the external id.
/// The parameters that follow the binding's in the statements that write
/// a redemption's events: the external id's keyed hash, then the events.
macro_rules! audit_types {
    () => {
        binding_types!(Type::BYTEA, Type::TEXT_ARRAY, Type::INT4, Type::BYTEA)
    };
    ($first:expr) => {
        binding_types!(
            $first,
            Type::BYTEA,
            Type::TEXT_ARRAY,
            Type::INT4,
            Type::BYTEA
        )
    };
}

/// [`sql::CREATE_USER`]: the binding's parameters, the external id, then
/// its hash and the events' pack.
const CREATE_USER: Sql = Sql::new(sql::CREATE_USER, &audit_types!(Type::TEXT));
/// The statements of the transaction that arbitrates.
const UPSERT_USER: Sql = Sql::new(
    sql::UPSERT_USER,
    &[Type::UUID, Type::UUID, Type::TEXT, Type::INT8],
);
const INSTALLS_IN_PLAY: Sql =
    Sql::new(sql::INSTALLS_IN_PLAY, &[Type::UUID, Type::TEXT, Type::TEXT]);
const SUPERSEDE: Sql = Sql::new(
    sql::SUPERSEDE_AUDITED,
    &[Type::UUID, Type::TEXT_ARRAY, Type::INT4, Type::BYTEA],
);
const INSERT_INSTALL: Sql = Sql::new(sql::INSERT_INSTALL, &audit_types!());
const REBIND_INSTALL: Sql = Sql::new(sql::REBIND_INSTALL, &audit_types!());
const NOTIFY: Sql = Sql::new(sql::NOTIFY, &[Type::TEXT, Type::UUID_ARRAY]);
/// Every statement of the transaction that arbitrates.
const TRANSACTION_STATEMENTS: [Sql; 6] = [
    UPSERT_USER,
    INSTALLS_IN_PLAY,
    SUPERSEDE,
    INSERT_INSTALL,
    REBIND_INSTALL,
    NOTIFY,
];

impl Store {
    /// Redeems a code, retried when it collides with a concurrent
    /// redemption. Either everything is written or nothing is.
    #[tracing::instrument(target = "devicelink::span", level = "debug", name = "postgres.redeem", skip_all, fields(db.system = "postgresql"))]
    pub async fn redeem(
        &self,
        redemption: &NewRedemption<'_>,
    ) -> Result<RedeemOutcome, StoreError> {
        let mut attempt = 1;
        loop {
            match self.try_redeem(redemption).await {
                Err(StoreError::Conflict(error)) if attempt < ATTEMPTS => {
                    tracing::debug!(attempt, error = %error, "redemption collided; retrying");
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    /// One attempt: as a new user in one statement, else in a transaction
    /// that arbitrates.
    async fn try_redeem(&self, new: &NewRedemption<'_>) -> Result<RedeemOutcome, StoreError> {
        let mut connection = self.connection().await?;
        let as_new_user = connection
            .call(async |client| redeem_for_new_user(client, new).await)
            .await??;
        if let Some(outcome) = as_new_user {
            return Ok(outcome);
        }
        // Only a user that exists needs the transaction's statements,
        // pipelined: prepared beforehand (unless sent unnamed), so that
        // none waits for its own preparation while a later one, or the
        // `COMMIT`, goes ahead of it.
        connection
            .call(async |client| client.prepare(&TRANSACTION_STATEMENTS).await)
            .await??;
        let mut tx = PipelinedTransaction::new(connection);
        match redeem_in(&mut tx, new).await {
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
    client: &PooledClient<'_>,
    new: &NewRedemption<'_>,
) -> Result<Option<RedeemOutcome>, StoreError> {
    let user_id = UserId(Uuid::now_v7());
    // A new user has no installs: arbitration activates this one.
    let resolution = Resolution::first_install();
    let binding = Binding::new(
        new,
        &resolution,
        InstallId(Uuid::now_v7()),
        user_id,
        false,
        false,
    );
    let bound = binding.params();
    let external_id = new.external_id.as_str();
    let audited = binding.audit_params();
    // The binding's twenty-one parameters, the external id as `$22`, then
    // its hash and the events.
    let params: [&(dyn ToSql + Sync); 26] = std::array::from_fn(|index| match index {
        0..21 => bound[index],
        21 => &external_id,
        _ => audited[index - 22],
    });
    let row = match CREATE_USER.query_opt(client, &params).await {
        Ok(Some(row)) => row,
        Ok(None) => return Ok(None),
        Err(error) => return failed_write(error).map(Some),
    };
    let changed_at: SystemTime = row.try_get(0)?;
    let Some(sdk_config) = row.try_get(1)? else {
        return Ok(Some(RedeemOutcome::AppNotFound));
    };
    Ok(Some(RedeemOutcome::Redeemed(
        binding.redeemed(changed_at, sdk_config),
    )))
}

/// What binding an install writes: the parameters `$1`–`$21` shared by the
/// statements that bind one (see [`super::redeem_sql::INSERT_INSTALL`]),
/// and what the redemption answers once they are written.
struct Binding<'a> {
    new: &'a NewRedemption<'a>,
    resolution: &'a Resolution,
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
    code_challenge: Option<&'a [u8]>,
    external_id_hash: &'a [u8],
    /// The events of the redemption, written by the statement that binds.
    events: ChangePack,
}

impl<'a> Binding<'a> {
    fn new(
        new: &'a NewRedemption<'a>,
        resolution: &'a Resolution,
        install_id: InstallId,
        user_id: UserId,
        restored: bool,
        was_active: bool,
    ) -> Self {
        Self {
            events: redemption_events(new, resolution, install_id, restored, was_active).pack(),
            external_id_hash: new.external_id_hash.as_slice(),
            new,
            resolution,
            install_id,
            user_id,
            restored,
            platform: new.device.platform.as_db(),
            form_factor: new.device.form_factor.as_db(),
            state: resolution.state.as_db(),
            reason: resolution.reason.map(StateReason::as_db),
            token_hash: new.token_hash.as_bytes().as_slice(),
            code_hash: new.code_hash.as_bytes().as_slice(),
            token_nonce: new.token_nonce.as_slice(),
            code_challenge: new
                .code_challenge
                .as_ref()
                .map(|challenge| challenge.as_bytes().as_slice()),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 21] {
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
            &self.resolution.install_epoch,
            &self.code_hash,
            &self.token_nonce,
            &self.restored,
            &self.resolution.user_epoch,
            &self.new.code_expires_at,
            &self.code_challenge,
        ]
    }

    /// `$22`–`$25` of the statements that bind: the external id's hash and
    /// the events' pack.
    fn audit_params(&self) -> [&(dyn ToSql + Sync); 4] {
        [
            &self.external_id_hash,
            &self.events.types,
            &self.events.count,
            &self.events.pack,
        ]
    }

    /// The redemption, once written.
    fn redeemed(&self, changed_at: SystemTime, sdk_config: serde_json::Value) -> Redeemed {
        Redeemed {
            user_id: self.user_id,
            install_id: self.install_id,
            restored: self.restored,
            status: InstallStatus {
                install_id: self.install_id,
                state: self.resolution.state,
                reason: self.resolution.reason,
                epoch: epoch(self.resolution.install_epoch),
                current_epoch: epoch(self.resolution.user_epoch),
                changed_at,
            },
            sdk_config,
            superseded: self.resolution.superseded,
        }
    }
}

/// The two round trips of the transaction that arbitrates: `BEGIN` and the
/// reads, then the writes and `COMMIT`. Anything but
/// [`RedeemOutcome::Redeemed`] leaves the transaction for the caller to
/// roll back.
async fn redeem_in(
    tx: &mut PipelinedTransaction,
    new: &NewRedemption<'_>,
) -> Result<RedeemOutcome, StoreError> {
    // Round trip 1: open the transaction, create or lock the user and read
    // the SDK configuration, lock the installs in play.
    let read = tx
        .call(async |client| read_in_play(client, new).await)
        .await?;
    let (user_row, install_rows) = match read {
        Ok(rows) => rows,
        Err(error) => return app_missing_or(error),
    };
    let user_id = UserId(user_row.try_get(0)?);
    let stored_user_epoch: i64 = user_row.try_get(1)?;
    let restored = !user_row.try_get::<_, bool>(2)?;
    let Some(sdk_config) = user_row.try_get(3)? else {
        return Ok(RedeemOutcome::AppNotFound);
    };
    // Arbitration sees a new user as it was before this activation.
    let user_epoch = if restored { stored_user_epoch } else { 0 };
    let installs = install_rows
        .iter()
        .map(install_in_play)
        .collect::<Result<Vec<_>, _>>()?;
    let resolution = match resolve(&installs, user_id, user_epoch, new.device) {
        Ok(resolution) => resolution,
        Err(held) => return Ok(held.into()),
    };

    // Round trip 2: supersede, announce what changed, bind the install with
    // the code's claim and the user's epoch, commit.
    let install_id = resolution
        .existing
        .unwrap_or_else(|| InstallId(Uuid::now_v7()));
    let was_active = installs
        .iter()
        .any(|install| Some(install.id) == resolution.existing && install.active);
    let binding = Binding::new(new, &resolution, install_id, user_id, restored, was_active);
    let written = tx
        .call(async |client| write_resolution(client, &binding).await)
        .await?;
    let bound = match written {
        Ok(bound) => bound,
        Err(error) => return failed_write(error),
    };
    let changed_at: SystemTime = bound
        .ok_or_else(|| StoreError::internal("the install was not written"))?
        .try_get(0)?;
    Ok(RedeemOutcome::Redeemed(
        binding.redeemed(changed_at, sdk_config),
    ))
}

/// Round trip 1, pipelined: `BEGIN`, the user upserted (and locked) with
/// the app's SDK configuration, the installs in play locked.
async fn read_in_play(
    client: &PooledClient<'_>,
    new: &NewRedemption<'_>,
) -> Result<(tokio_postgres::Row, Vec<tokio_postgres::Row>), tokio_postgres::Error> {
    let new_user_id = Uuid::now_v7();
    let ((), user_row, install_rows) = futures_util::future::try_join3(
        client.batch_execute(PipelinedTransaction::BEGIN),
        UPSERT_USER.query_one(
            client,
            &[
                &new_user_id,
                &new.app_id.0,
                &new.external_id.as_str(),
                &NEW_USER_EPOCH,
            ],
        ),
        INSTALLS_IN_PLAY.query(
            client,
            &[
                &new.app_id.0,
                &new.external_id.as_str(),
                &new.device.device_id,
            ],
        ),
    )
    .await?;
    Ok((user_row, install_rows))
}

/// Round trip 2, pipelined: supersede, announce, bind (answering the bound
/// install's row), `COMMIT`.
async fn write_resolution(
    client: &PooledClient<'_>,
    binding: &Binding<'_>,
) -> Result<Option<tokio_postgres::Row>, tokio_postgres::Error> {
    let resolution = binding.resolution;
    let bound = binding.params();
    let audited = binding.audit_params();
    let bind_params: [&(dyn ToSql + Sync); 25] = std::array::from_fn(|index| match index {
        0..21 => bound[index],
        _ => audited[index - 21],
    });
    let bind = if resolution.existing.is_some() {
        REBIND_INSTALL
    } else {
        INSERT_INSTALL
    };
    let changed: Vec<Uuid> = resolution
        .superseded
        .iter()
        .chain(resolution.existing.iter())
        .map(|install| install.0)
        .collect();
    let superseded_id = resolution
        .superseded
        .map(|install| install.0)
        .unwrap_or_default();
    let superseded_events = std::iter::once(audit::deactivation(
        binding.new.context,
        &audit::install_actor(binding.install_id),
        StateReason::Superseded,
        Some(binding.install_id),
    ))
    .collect::<AuditRows>()
    .pack();
    let supersede_params: [&(dyn ToSql + Sync); 4] = [
        &superseded_id,
        &superseded_events.types,
        &superseded_events.count,
        &superseded_events.pack,
    ];
    let notify_params: [&(dyn ToSql + Sync); 2] = [&STATUS_CHANNEL, &changed];
    let mut before_bind = Vec::new();
    if resolution.superseded.is_some() {
        before_bind.push(SUPERSEDE.query(client, &supersede_params));
    }
    if !changed.is_empty() {
        before_bind.push(NOTIFY.query(client, &notify_params));
    }
    // Responses arrive in order, so the first statement to fail is the
    // error seen, not the failures that follow it.
    let (_, bound, ()) = futures_util::future::try_join3(
        try_join_all(before_bind),
        bind.query_opt(client, &bind_params),
        client.batch_execute(PipelinedTransaction::COMMIT),
    )
    .await?;
    Ok(bound)
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

/// Why writing a redemption failed: the code was claimed already (by a
/// concurrent redemption, or this device's own earlier one), the app is
/// gone, or the install collided with a concurrent one: bound to another
/// user on the same device, the device is held; for the same user,
/// arbitration must run again on the new state.
fn failed_write(error: tokio_postgres::Error) -> Result<RedeemOutcome, StoreError> {
    match violated_constraint(&error) {
        Some(CODE_ALREADY_CLAIMED) => Ok(RedeemOutcome::AlreadyRedeemed),
        Some("installs_one_live_per_device") => Ok(RedeemOutcome::DeviceHeldByAnotherUser),
        Some("installs_one_active_per_user") => Err(StoreError::Conflict(error)),
        _ => app_missing_or(error),
    }
}

/// The constraint `error` violated, if any.
fn violated_constraint(error: &tokio_postgres::Error) -> Option<&str> {
    error
        .as_db_error()
        .and_then(|db_error| db_error.constraint())
}

/// The code's app no longer exists (erased between minting and redeeming),
/// or the error as it is.
fn app_missing_or(error: tokio_postgres::Error) -> Result<RedeemOutcome, StoreError> {
    if error.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) {
        return Ok(RedeemOutcome::AppNotFound);
    }
    Err(error.into())
}

/// The events a redemption writes with the install it binds: the code's
/// redemption, and the install's activation or deactivation when its state
/// changes (an install active before and after is not activated again).
fn redemption_events(
    new: &NewRedemption<'_>,
    resolution: &Resolution,
    install_id: InstallId,
    restored: bool,
    was_active: bool,
) -> AuditRows {
    let actor = audit::install_actor(install_id);
    let redeemed = Payload::CodeRedeemed(pb::CodeRedeemed {
        restored,
        code_id: audit::code_id(&new.code_hash),
    });
    let mut events: AuditRows =
        std::iter::once(audit::change(new.context, &actor, redeemed)).collect();
    let active = resolution.state == InstallState::Active;
    if active && !was_active {
        let activated = Payload::InstallActivated(pb::InstallActivated {
            epoch: epoch(resolution.install_epoch),
        });
        events.push(audit::change(new.context, &actor, activated));
    }
    if let (false, true, Some(reason)) = (active, was_active, resolution.reason) {
        events.push(audit::deactivation(new.context, &actor, reason, None));
    }
    events
}
