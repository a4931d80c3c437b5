//! What operators manage: apps, API keys, SDK configuration, users.

use std::time::{Duration, SystemTime};

use devicelink_shared::api_key::KeyId;
use devicelink_shared::secret::SecretHash;
use devicelink_shared::validate::{AppId, ExternalId};
use uuid::Uuid;

use super::{STATUS_CHANNEL, StatusRecord, Store, epoch};
use crate::domain::{FormFactor, Platform};
use crate::error::{RegistrationError, StoreError};

/// The most active (neither revoked nor expired) keys an app may hold.
pub const MAX_ACTIVE_KEYS_PER_APP: i64 = 10;

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
    pub status: StatusRecord,
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

const KEY_COLUMNS: &str =
    "key_id, app_id, scopes, created_at, expires_at, last_used_at, revoked_at";

impl Store {
    /// Registers an app.
    #[tracing::instrument(target = "devicelink::span", level = "debug", name = "postgres.create_app", skip_all, fields(db.system = "postgresql"))]
    pub async fn create_app(&self, name: &str) -> Result<AppId, StoreError> {
        let client = self.pool.get().await?;
        let app_id = AppId(Uuid::now_v7());
        client
            .execute(
                "INSERT INTO apps (id, name) VALUES ($1, $2)",
                &[&app_id.0, &name],
            )
            .await?;
        Ok(app_id)
    }

    /// Stores a new key, refusing an app's eleventh active key. The app's row
    /// is locked so two concurrent creations cannot both pass the count.
    #[tracing::instrument(target = "devicelink::span", level = "debug", name = "postgres.create_api_key", skip_all, fields(db.system = "postgresql"))]
    pub async fn create_api_key(
        &self,
        key: &NewApiKeyRecord,
    ) -> Result<SystemTime, RegistrationError> {
        let mut client = self.pool.get().await.map_err(StoreError::from)?;
        let tx = client.transaction().await.map_err(StoreError::from)?;
        let app = tx
            .query_opt(
                "SELECT id FROM apps WHERE id = $1 FOR UPDATE",
                &[&key.app_id.0],
            )
            .await
            .map_err(StoreError::from)?;
        if app.is_none() {
            return Err(app_not_found(key.app_id));
        }
        let active: i64 = tx
            .query_one(
                "SELECT count(*) FROM api_keys WHERE app_id = $1 AND revoked_at IS NULL AND expires_at > now()",
                &[&key.app_id.0],
            )
            .await
            .and_then(|row| row.try_get(0))
            .map_err(StoreError::from)?;
        if active >= MAX_ACTIVE_KEYS_PER_APP {
            return Err(RegistrationError::FailedPrecondition(format!(
                "app {} already holds {MAX_ACTIVE_KEYS_PER_APP} active API keys; revoke one first",
                key.app_id
            )));
        }
        let expires_at = SystemTime::now() + key.ttl;
        tx.execute(
            "INSERT INTO api_keys (key_id, app_id, secret_hash, scopes, expires_at) VALUES ($1, $2, $3, $4, $5)",
            &[&key.key_id.as_str(), &key.app_id.0, &key.secret_hash.as_bytes().as_slice(), &key.scopes, &expires_at],
        )
        .await
        .map_err(StoreError::from)?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(expires_at)
    }

    /// An app's keys, newest first.
    #[tracing::instrument(target = "devicelink::span", level = "debug", name = "postgres.list_api_keys", skip_all, fields(db.system = "postgresql"))]
    pub async fn list_api_keys(
        &self,
        app_id: AppId,
    ) -> Result<Vec<ApiKeyRecord>, RegistrationError> {
        let client = self.pool.get().await.map_err(StoreError::from)?;
        if !app_exists(&client, app_id).await? {
            return Err(app_not_found(app_id));
        }
        let rows = client
            .query(
                &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE app_id = $1 ORDER BY created_at DESC, key_id"),
                &[&app_id.0],
            )
            .await
            .map_err(StoreError::from)?;
        rows.iter()
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
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(|error| StoreError::from(error).into())
    }

    /// Revokes a key, keeping the first revocation time; `None` when the key
    /// is unknown.
    #[tracing::instrument(target = "devicelink::span", level = "debug", name = "postgres.revoke_api_key", skip_all, fields(db.system = "postgresql"))]
    pub async fn revoke_api_key(&self, key_id: &KeyId) -> Result<Option<SystemTime>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = $1 RETURNING revoked_at",
                &[&key_id.as_str()],
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
    ) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let updated = client
            .execute(
                "UPDATE apps SET sdk_config = $2 WHERE id = $1",
                &[&app_id.0, sdk_config],
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
        let client = self.pool.get().await?;
        let Some(user) = client
            .query_opt(
                "SELECT id, epoch, created_at FROM users WHERE app_id = $1 AND external_id = $2",
                &[&app_id.0, &external_id.as_str()],
            )
            .await?
        else {
            return Ok(None);
        };
        let user_id: Uuid = user.try_get(0)?;
        let rows = client
            .query(
                concat!(
                    "SELECT ",
                    status_columns!(),
                    ", i.device_id, i.platform, i.form_factor, i.model, i.os_version,
                            i.app_version, i.sdk_version, i.created_at
                     FROM installs i JOIN users u ON u.id = i.user_id
                     WHERE i.user_id = $1 ORDER BY i.created_at DESC, i.id"
                ),
                &[&user_id],
            )
            .await?;
        let installs = rows
            .iter()
            .map(|row| {
                Ok(InstallSummaryRecord {
                    status: StatusRecord::from_row(row)?,
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
    ) -> Result<bool, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let user = tx
            .query_opt(
                "SELECT id FROM users WHERE app_id = $1 AND external_id = $2 FOR UPDATE",
                &[&app_id.0, &external_id.as_str()],
            )
            .await?;
        let Some(user) = user else {
            return Ok(false);
        };
        let user_id: Uuid = user.try_get(0)?;
        tx.execute(
            "SELECT pg_notify($2, id::text) FROM installs WHERE user_id = $1",
            &[&user_id, &STATUS_CHANNEL],
        )
        .await?;
        tx.execute("DELETE FROM users WHERE id = $1", &[&user_id])
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}

async fn app_exists(client: &deadpool_postgres::Client, app_id: AppId) -> Result<bool, StoreError> {
    Ok(client
        .query_opt("SELECT 1 FROM apps WHERE id = $1", &[&app_id.0])
        .await?
        .is_some())
}

fn app_not_found(app_id: AppId) -> RegistrationError {
    RegistrationError::NotFound(format!("app {app_id} does not exist"))
}
