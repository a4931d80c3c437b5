//! Reading and retiring auth codes in Redis.
//!
//! Redemption reads a code with `GET`, not `GETDEL`: a request that fails
//! later (a bad device, Postgres down) must not consume the code. What makes
//! a code single-use is the `redeemed_codes` row written in the redemption
//! transaction; the `DEL` afterwards only tidies up.

use devicelink_shared::auth_code::{AuthCodeRecord, redis_key};
use devicelink_shared::secret::SecretHash;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use crate::error::StoreError;

/// The auth codes minted by authcode.
#[derive(Clone)]
pub struct CodeStore {
    redis: ConnectionManager,
    key_prefix: String,
}

impl CodeStore {
    /// Codes under `key_prefix` in `redis`.
    pub fn new(redis: ConnectionManager, key_prefix: String) -> Self {
        Self { redis, key_prefix }
    }

    /// The record of a live code, `None` when unknown or expired.
    #[tracing::instrument(target = "devicelink::span", level = "debug", name = "redis.get_auth_code", skip_all, fields(db.system = "redis"))]
    pub async fn fetch(
        &self,
        code_hash: &SecretHash,
    ) -> Result<Option<AuthCodeRecord>, StoreError> {
        let bytes: Option<Vec<u8>> = self
            .redis
            .clone()
            .get(redis_key(&self.key_prefix, code_hash))
            .await
            .map_err(StoreError::redis)?;
        bytes
            .map(|bytes| {
                AuthCodeRecord::from_bytes(&bytes).map_err(|error| {
                    StoreError::internal(format!("unreadable auth code record: {error}"))
                })
            })
            .transpose()
    }

    /// Whether Redis answers, for the health service.
    pub async fn reachable(&self) -> bool {
        devicelink_shared::stores::redis_reachable(&self.redis).await
    }

    /// Removes a redeemed code. Failure is logged and otherwise harmless:
    /// the redemption row already refuses the code.
    #[tracing::instrument(target = "devicelink::span", level = "debug", name = "redis.delete_auth_code", skip_all, fields(db.system = "redis"))]
    pub async fn retire(&self, code_hash: &SecretHash) {
        let deleted: Result<u32, _> = self
            .redis
            .clone()
            .del(redis_key(&self.key_prefix, code_hash))
            .await;
        if let Err(error) = deleted {
            tracing::warn!(error = %error, "could not delete a redeemed auth code; it stays refused");
        }
    }
}
