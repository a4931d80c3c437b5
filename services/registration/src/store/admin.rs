//! What operators manage: apps, API keys, SDK configuration, users.

use std::time::{Duration, SystemTime};

use devicelink_shared::api_key::KeyId;
use devicelink_shared::config::LimitsConfig;
use devicelink_shared::limits::{Rate, Scope};
use devicelink_shared::secret::SecretHash;
use devicelink_shared::stores::execute_typed;
use devicelink_shared::validate::{AppId, ExternalId};
use tokio_postgres::types::Type;
use uuid::Uuid;

use super::connection::Connection;
use super::pipelined_tx::PipelinedTransaction;
use super::{STATUS_CHANNEL, Store, epoch, status_from_row};
use crate::audit::{self, Actor, AuditRow, CallContext};
use crate::domain::{FormFactor, InstallStatus, MAX_ACTIVE_KEYS_PER_APP, Platform, StateReason};
use crate::error::StoreError;
use devicelink_shared::pb;
use devicelink_shared::pb::audit_event::Payload;

/// An API key to store.
#[derive(Debug)]
pub struct NewApiKeyRecord {
    /// The key's public id.
    pub key_id: KeyId,
    /// Its app.
    pub app_id: AppId,
    /// The hash of its secret.
    pub secret_hash: SecretHash,
    /// What it may do.
    pub scopes: Vec<String>,
    /// How long it lives.
    pub ttl: Duration,
}

/// Who makes an admin change, and from where: what its event records.
#[derive(Debug, Clone)]
pub struct Attribution {
    /// The call.
    pub context: CallContext,
    /// The operator, as an actor.
    pub actor: Actor,
}

impl Attribution {
    fn change(&self, payload: Payload) -> AuditRow {
        audit::change(&self.context, &self.actor, payload)
    }
}

/// A stored API key and its history.
#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    /// The key's public id.
    pub key_id: String,
    /// Its app.
    pub app_id: AppId,
    /// What it may do.
    pub scopes: Vec<String>,
    /// When it was created.
    pub created_at: SystemTime,
    /// When it stops working.
    pub expires_at: SystemTime,
    /// When it was last used (to the minute).
    pub last_used_at: Option<SystemTime>,
    /// When it was revoked.
    pub revoked_at: Option<SystemTime>,
}

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

/// An app's own setting for one limit, in place of the deployment's
/// default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitOverride {
    /// This rate.
    Rate(Rate),
    /// No limit for this app.
    Off,
}

impl LimitOverride {
    /// Parses the operators' syntax: a rate as the `RATE_LIMIT_*`
    /// variables write it, or `off`.
    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(Rate::parse_setting(text)?.map_or(Self::Off, Self::Rate))
    }

    /// The rate applied; `None` when off.
    pub fn rate(self) -> Option<Rate> {
        match self {
            Self::Rate(rate) => Some(rate),
            Self::Off => None,
        }
    }
}

impl std::fmt::Display for LimitOverride {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rate(rate) => rate.fmt(f),
            Self::Off => f.write_str("off"),
        }
    }
}

/// An app's own rate limits, one per scope whose subject names the app;
/// `None` keeps the deployment's default. Install-token and
/// failed-credential limits have none: their subject (a token, an address)
/// does not name an app until it has been looked up, and the limit must
/// hold before that lookup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppLimits {
    /// `MintAuthCode` per API key.
    pub mint_per_key: Option<LimitOverride>,
    /// `MintAuthCode` per external id.
    pub mint_per_external_id: Option<LimitOverride>,
    /// `CreateUser` per device.
    pub redeem_per_device: Option<LimitOverride>,
}

impl AppLimits {
    /// The scopes an app may override, in a stable order.
    pub const SCOPES: [Scope; 3] = [
        Scope::MintPerKey,
        Scope::MintPerExternalId,
        Scope::RedeemPerDevice,
    ];

    /// The app's own setting for `scope`; `None` for a scope it cannot
    /// override or does not.
    pub fn get(&self, scope: Scope) -> Option<LimitOverride> {
        match scope {
            Scope::MintPerKey => self.mint_per_key,
            Scope::MintPerExternalId => self.mint_per_external_id,
            Scope::RedeemPerDevice => self.redeem_per_device,
            Scope::InstallPerToken | Scope::FailedAuthPerAddress => None,
        }
    }

    /// The rate applied to the app for `scope`: its own where set, else
    /// the deployment's default.
    pub fn rate(&self, scope: Scope, defaults: &LimitsConfig) -> Option<Rate> {
        self.get(scope)
            .map_or_else(|| defaults.rate(scope), LimitOverride::rate)
    }

    /// The stored columns, in [`Self::SCOPES`] order.
    fn to_columns(self) -> [Option<String>; 3] {
        Self::SCOPES.map(|scope| self.get(scope).map(|setting| setting.to_string()))
    }

    /// Reads the stored columns `first..first + 3` of `row`.
    fn from_columns(row: &tokio_postgres::Row, first: usize) -> Result<Self, StoreError> {
        let column = |offset: usize| -> Result<Option<LimitOverride>, StoreError> {
            let text: Option<String> = row.try_get(first + offset)?;
            text.map(|text| {
                LimitOverride::parse(&text).map_err(|error| {
                    StoreError::internal(format!("a stored app limit does not parse: {error}"))
                })
            })
            .transpose()
        };
        Ok(Self {
            mint_per_key: column(0)?,
            mint_per_external_id: column(1)?,
            redeem_per_device: column(2)?,
        })
    }
}

/// An app as an operator sees it.
#[derive(Debug, Clone)]
pub struct AppRecord {
    /// The app's id.
    pub app_id: AppId,
    /// Its name.
    pub name: String,
    /// When it was created.
    pub created_at: SystemTime,
    /// Its SDK configuration.
    pub sdk_config: serde_json::Value,
    /// Its own rate limits.
    pub limits: AppLimits,
    /// Whether its codes must be minted with a `code_challenge`.
    pub require_code_challenge: bool,
}

const LIMIT_COLUMNS: &str =
    "limit_mint_per_key, limit_mint_per_external_id, limit_redeem_per_device";

/// What storing a new API key came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateKeyOutcome {
    /// Stored; it works until `expires_at`.
    Created {
        /// When the key stops working.
        expires_at: SystemTime,
    },
    /// The app holds [`MAX_ACTIVE_KEYS_PER_APP`] active keys already;
    /// nothing was stored.
    TooManyActiveKeys,
    /// There is no such app.
    AppNotFound,
}

const KEY_COLUMNS: &str =
    "key_id, app_id, scopes, created_at, expires_at, last_used_at, revoked_at";

impl Store {
    /// Registers an app.
    #[tracing::instrument(target = "devicelink::span", level = "debug", name = "postgres.create_app", skip_all, fields(db.system = "postgresql"))]
    pub async fn create_app(&self, name: &str) -> Result<AppId, StoreError> {
        let app_id = AppId(Uuid::now_v7());
        self.execute_call(
            "INSERT INTO apps (id, name) VALUES ($1, $2)",
            &[(&app_id.0, Type::UUID), (&name, Type::TEXT)],
        )
        .await?;
        Ok(app_id)
    }

    /// Stores a new key, refusing an app's key past
    /// [`MAX_ACTIVE_KEYS_PER_APP`] active ones. The app's row is locked so
    /// two concurrent creations cannot both pass the count.
    #[tracing::instrument(target = "devicelink::span", level = "debug", name = "postgres.create_api_key", skip_all, fields(db.system = "postgresql"))]
    pub async fn create_api_key(
        &self,
        key: &NewApiKeyRecord,
        by: &Attribution,
    ) -> Result<CreateKeyOutcome, StoreError> {
        let mut tx =
            PipelinedTransaction::begin(self.connection().await?, PipelinedTransaction::BEGIN)
                .await?;
        match insert_key(&mut tx, key, by).await {
            Ok(CreateKeyOutcome::Created { expires_at }) => {
                tx.commit().await?;
                Ok(CreateKeyOutcome::Created { expires_at })
            }
            other => {
                tx.rollback().await;
                other
            }
        }
    }

    /// An app's keys, newest first; `None` when there is no such app.
    #[tracing::instrument(target = "devicelink::span", level = "debug", name = "postgres.list_api_keys", skip_all, fields(db.system = "postgresql"))]
    pub async fn list_api_keys(
        &self,
        app_id: AppId,
    ) -> Result<Option<Vec<ApiKeyRecord>>, StoreError> {
        let mut connection = self.connection().await?;
        if !app_exists(&mut connection, app_id).await? {
            return Ok(None);
        }
        let rows = connection
            .call(async |client| {
                client
                    .query_typed(
                        &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE app_id = $1 ORDER BY created_at DESC, key_id"),
                        &[(&app_id.0, Type::UUID)],
                    )
                    .await
            })
            .await??;
        let keys = rows
            .iter()
            .map(|row| {
                Ok(ApiKeyRecord {
                    key_id: row.try_get(0)?,
                    app_id: AppId(row.try_get(1)?),
                    scopes: row.try_get(2)?,
                    created_at: row.try_get(3)?,
                    expires_at: row.try_get(4)?,
                    last_used_at: row.try_get(5)?,
                    revoked_at: row.try_get(6)?,
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()?;
        Ok(Some(keys))
    }

    /// Revokes a key, keeping the first revocation time; `None` when the key
    /// is unknown.
    #[tracing::instrument(target = "devicelink::span", level = "debug", name = "postgres.revoke_api_key", skip_all, fields(db.system = "postgresql"))]
    pub async fn revoke_api_key(
        &self,
        key_id: &KeyId,
        by: &Attribution,
    ) -> Result<Option<SystemTime>, StoreError> {
        // Only the first revocation is a change, and has an event.
        let revoked = by.change(Payload::ApiKeyRevoked(pb::ApiKeyRevoked {}));
        let row = self
            .query_opt_call(
                "WITH before AS (SELECT key_id, revoked_at FROM api_keys WHERE key_id = $1 FOR UPDATE),
                 revoked AS (UPDATE api_keys k SET revoked_at = coalesce(k.revoked_at, now())
                     FROM before WHERE k.key_id = before.key_id
                     RETURNING k.key_id, k.app_id, k.revoked_at, before.revoked_at IS NULL AS first),
                 event AS (INSERT INTO audit_events (app_id, type, api_key_id, event)
                     SELECT app_id, $2, key_id, $3 FROM revoked WHERE first)
                 SELECT revoked_at FROM revoked",
                &[
                    (&key_id.as_str(), Type::TEXT),
                    (&revoked.type_name, Type::TEXT),
                    (&revoked.event, Type::BYTEA),
                ],
            )
            .await?;
        Ok(row.map(|row| row.try_get(0)).transpose()?)
    }

    /// Replaces an app's SDK configuration; false when the app is unknown.
    #[tracing::instrument(target = "devicelink::span", level = "debug", name = "postgres.set_sdk_config", skip_all, fields(db.system = "postgresql"))]
    pub async fn set_sdk_config(
        &self,
        app_id: AppId,
        sdk_config: &serde_json::Value,
        encoded_size: usize,
        by: &Attribution,
    ) -> Result<bool, StoreError> {
        let changed = by.change(Payload::SdkConfigChanged(pb::SdkConfigChanged {
            encoded_size: u64::try_from(encoded_size).unwrap_or(u64::MAX),
        }));
        let updated = self
            .execute_call(
                "WITH app AS (UPDATE apps SET sdk_config = $2 WHERE id = $1 RETURNING id),
                 event AS (INSERT INTO audit_events (app_id, type, event) SELECT id, $3, $4 FROM app)
                 SELECT 1 FROM app",
                &[
                    (&app_id.0, Type::UUID),
                    (sdk_config, Type::JSONB),
                    (&changed.type_name, Type::TEXT),
                    (&changed.event, Type::BYTEA),
                ],
            )
            .await?;
        Ok(updated == 1)
    }

    /// An app with its settings; `None` when there is no such app.
    #[tracing::instrument(target = "devicelink::span", level = "debug", name = "postgres.get_app", skip_all, fields(db.system = "postgresql"))]
    pub async fn get_app(&self, app_id: AppId) -> Result<Option<AppRecord>, StoreError> {
        let row = self
            .query_opt_call(
                &format!(
                    "SELECT name, created_at, sdk_config, {LIMIT_COLUMNS}, require_code_challenge \
                     FROM apps WHERE id = $1"
                ),
                &[(&app_id.0, Type::UUID)],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(AppRecord {
            app_id,
            name: row.try_get(0)?,
            created_at: row.try_get(1)?,
            sdk_config: row.try_get(2)?,
            limits: AppLimits::from_columns(&row, 3)?,
            require_code_challenge: row.try_get(6)?,
        }))
    }

    /// An app's own rate limits; `None` when there is no such app.
    #[tracing::instrument(target = "devicelink::span", level = "debug", name = "postgres.app_limits", skip_all, fields(db.system = "postgresql"))]
    pub async fn app_limits(&self, app_id: AppId) -> Result<Option<AppLimits>, StoreError> {
        let row = self
            .query_opt_call(
                &format!("SELECT {LIMIT_COLUMNS} FROM apps WHERE id = $1"),
                &[(&app_id.0, Type::UUID)],
            )
            .await?;
        row.map(|row| AppLimits::from_columns(&row, 0)).transpose()
    }

    /// Replaces an app's own rate limits; false when the app is unknown.
    #[tracing::instrument(target = "devicelink::span", level = "debug", name = "postgres.set_app_limits", skip_all, fields(db.system = "postgresql"))]
    pub async fn set_app_limits(
        &self,
        app_id: AppId,
        limits: AppLimits,
    ) -> Result<bool, StoreError> {
        let [mint_per_key, mint_per_external_id, redeem_per_device] = limits.to_columns();
        let updated = self.execute_call("UPDATE apps SET limit_mint_per_key = $2, limit_mint_per_external_id = $3, limit_redeem_per_device = $4 WHERE id = $1", &[(&app_id.0, Type::UUID), (&mint_per_key, Type::TEXT), (&mint_per_external_id, Type::TEXT), (&redeem_per_device, Type::TEXT)]).await?;
        Ok(updated == 1)
    }

    /// Sets whether an app's codes must be minted with a `code_challenge`;
    /// false when the app is unknown. authcode reads the column with the
    /// API key (and caches it as long).
    #[tracing::instrument(target = "devicelink::span", level = "debug", name = "postgres.set_app_security", skip_all, fields(db.system = "postgresql"))]
    pub async fn set_app_security(
        &self,
        app_id: AppId,
        require_code_challenge: bool,
    ) -> Result<bool, StoreError> {
        let updated = self
            .execute_call(
                "UPDATE apps SET require_code_challenge = $2 WHERE id = $1",
                &[
                    (&app_id.0, Type::UUID),
                    (&require_code_challenge, Type::BOOL),
                ],
            )
            .await?;
        Ok(updated == 1)
    }

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

/// The statements of [`Store::create_api_key`] inside its transaction, a
/// round trip each; the caller commits only what is
/// [`CreateKeyOutcome::Created`].
async fn insert_key(
    tx: &mut PipelinedTransaction,
    key: &NewApiKeyRecord,
    by: &Attribution,
) -> Result<CreateKeyOutcome, StoreError> {
    let app = tx
        .call(async |client| {
            client
                .query_typed_opt(
                    "SELECT id FROM apps WHERE id = $1 FOR UPDATE",
                    &[(&key.app_id.0, Type::UUID)],
                )
                .await
        })
        .await??;
    if app.is_none() {
        return Ok(CreateKeyOutcome::AppNotFound);
    }
    let active: i64 = tx
        .call(async |client| {
            client
                .query_typed_one(
                    "SELECT count(*) FROM api_keys WHERE app_id = $1 AND revoked_at IS NULL AND expires_at > now()",
                    &[(&key.app_id.0, Type::UUID)],
                )
                .await
        })
        .await??
        .try_get(0)?;
    if active >= MAX_ACTIVE_KEYS_PER_APP {
        return Ok(CreateKeyOutcome::TooManyActiveKeys);
    }
    let expires_at = SystemTime::now() + key.ttl;
    let created = by.change(Payload::ApiKeyCreated(pb::ApiKeyCreated {
        scopes: key.scopes.clone(),
        expires_at: Some(expires_at.into()),
    }));
    tx.call(async |client| {
        execute_typed(
            client,
            "WITH key AS (INSERT INTO api_keys (key_id, app_id, secret_hash, scopes, expires_at)
                 VALUES ($1, $2, $3, $4, $5) RETURNING key_id, app_id)
             INSERT INTO audit_events (app_id, type, api_key_id, event)
             SELECT app_id, $6, key_id, $7 FROM key",
            &[
                (&key.key_id.as_str(), Type::TEXT),
                (&key.app_id.0, Type::UUID),
                (&key.secret_hash.as_bytes().as_slice(), Type::BYTEA),
                (&key.scopes, Type::TEXT_ARRAY),
                (&expires_at, Type::TIMESTAMPTZ),
                (&created.type_name, Type::TEXT),
                (&created.event, Type::BYTEA),
            ],
        )
        .await
    })
    .await??;
    Ok(CreateKeyOutcome::Created { expires_at })
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

async fn app_exists(connection: &mut Connection, app_id: AppId) -> Result<bool, StoreError> {
    let row = connection
        .call(async |client| {
            client
                .query_typed_opt(
                    "SELECT 1 FROM apps WHERE id = $1",
                    &[(&app_id.0, Type::UUID)],
                )
                .await
        })
        .await??;
    Ok(row.is_some())
}
