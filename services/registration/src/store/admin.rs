//! What operators manage: apps, API keys, SDK configuration and app settings
//! (users are in `users.rs`, an app's own limits in `app_limits.rs`).

use std::time::{Duration, SystemTime};

use devicelink_shared::api_key::KeyId;
use devicelink_shared::pb;
use devicelink_shared::pb::audit_event::Payload;
use devicelink_shared::secret::SecretHash;
use devicelink_shared::stores::execute_typed;
use devicelink_shared::validate::AppId;
use tokio_postgres::types::Type;
use uuid::Uuid;

use super::Store;
use super::app_limits::AppLimits;
use super::connection::Connection;
use super::pipelined_tx::PipelinedTransaction;
use crate::audit::{self, Actor, AuditRow, CallContext};
use crate::domain::MAX_ACTIVE_KEYS_PER_APP;
use crate::error::StoreError;

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
    pub(super) fn change(&self, payload: Payload) -> AuditRow {
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
