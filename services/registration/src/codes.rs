//! Reading and retiring auth codes in Redis.
//!
//! Redemption reads a code with `GET`, not `GETDEL`: a request that fails
//! later (a bad device, Postgres down) must not consume the code. What makes
//! a code single-use is the `redeemed_codes` row written in the redemption
//! transaction; the `DEL` afterwards only tidies up. So it is taken off the
//! response path and batched: one task deletes every code redeemed while
//! its previous `DEL` was in flight, which under load is one Redis round
//! trip for many redemptions instead of one each.
//!
//! Every command is bounded by [`devicelink_shared::stores::STORE_TIMEOUT`]
//! inside [`RedisConnection`]: a Redis that stops answering fails the read
//! with UNAVAILABLE, and a stuck `DEL` gives way to the next batch.

use devicelink_shared::auth_code::{AuthCodeRecord, redis_key};
use devicelink_shared::code_record_seal::{RecordKeys, UnsealError};
use devicelink_shared::metrics_catalog;
use devicelink_shared::secret::SecretHash;
use devicelink_shared::stores::RedisConnection;
use devicelink_shared::validate::AppId;
use redis::AsyncCommands;
use tokio::sync::mpsc;

use crate::error::StoreError;

/// Redeemed codes waiting for their `DEL`. A code that finds the queue full
/// (Redis slow or away) is left to expire: it is refused all the same.
const RETIRE_QUEUE: usize = 4_096;
/// Most keys in one `DEL`.
const RETIRE_BATCH: usize = 256;
/// The pause after a `DEL` of less than a full batch, so that the codes of
/// the next calls gather into one command: without it, every redemption
/// woke the task and cost Redis a command of its own. Codes outlive their
/// redemption by this much more, refused all the same.
const RETIRE_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// The auth codes minted by authcode.
#[derive(Clone)]
pub struct CodeStore {
    redis: RedisConnection,
    key_prefix: String,
    record_keys: RecordKeys,
    retired: mpsc::Sender<(AppId, SecretHash)>,
}

impl CodeStore {
    /// Codes under `key_prefix` in `redis`. Starts the task that deletes
    /// redeemed codes, so it must run inside a Tokio runtime; the task ends
    /// once every clone of the store is dropped and its queue is empty.
    /// Records are opened with `record_keys`: one that none of them sealed
    /// for its code is treated as no record at all.
    pub fn new(redis: RedisConnection, key_prefix: String, record_keys: RecordKeys) -> Self {
        let (retired, queue) = mpsc::channel(RETIRE_QUEUE);
        tokio::spawn(delete_retired(redis.clone(), key_prefix.clone(), queue));
        Self {
            redis,
            key_prefix,
            record_keys,
            retired,
        }
    }

    /// The external id's keyed hash that audit events hold (under the
    /// record key, see [`RecordKeys::audit_subject_hash`]).
    pub fn audit_subject_hash(&self, app_id: AppId, external_id: &str) -> [u8; 32] {
        self.record_keys
            .audit_subject_hash(&app_id.to_string(), external_id)
    }

    /// The record of a live code minted for `app_id`, `None` when unknown,
    /// expired, minted for another app (its key carries the app's hash tag,
    /// see [`redis_key`]), or not sealed by authcode for this code (forged,
    /// altered or moved in Redis: logged as tampering, and refused as an
    /// unknown code is, so a forger learns nothing more than a guesser).
    #[tracing::instrument(target = "devicelink::span", level = "debug", name = "redis.get_auth_code", skip_all, fields(db.system = "redis"))]
    pub async fn fetch(
        &self,
        app_id: AppId,
        code_hash: &SecretHash,
    ) -> Result<Option<AuthCodeRecord>, StoreError> {
        let bytes: Option<Vec<u8>> = self
            .redis
            .clone()
            .get(redis_key(&self.key_prefix, app_id, code_hash))
            .await
            .map_err(StoreError::redis)?;
        let Some(bytes) = bytes else {
            return Ok(None);
        };
        match self.record_keys.open(code_hash, &bytes) {
            Ok(record) => Ok(Some(record)),
            Err(UnsealError::Unauthenticated) => {
                metrics::counter!(metrics_catalog::CODE_RECORDS_REFUSED).increment(1);
                tracing::warn!(
                    code_key = %redis_key(&self.key_prefix, app_id, code_hash),
                    "a code record in Redis failed its seal (forged, altered, or sealed with a \
                     key this replica does not hold): refused as an unknown code"
                );
                Ok(None)
            }
            Err(error @ UnsealError::Unreadable(_)) => Err(StoreError::internal(error.to_string())),
        }
    }

    /// The Redis connection the codes live on, which the rate limiter
    /// shares.
    pub fn redis(&self) -> &RedisConnection {
        &self.redis
    }

    /// Whether Redis answers, for the health service.
    pub async fn reachable(&self) -> bool {
        self.redis.reachable().await
    }

    /// Queues a redeemed code for deletion; returns at once.
    pub fn retire(&self, app_id: AppId, code_hash: SecretHash) {
        if self.retired.try_send((app_id, code_hash)).is_err() {
            tracing::debug!("the queue of redeemed auth codes is full; this one is left to expire");
        }
    }
}

/// Deletes queued codes, as many per `DEL` as have queued up since the last
/// (at most [`RETIRE_PAUSE`] apart while few come). In a Redis Cluster the
/// batch's keys lie in several slots (one per app): the cluster client
/// splits a multi-key `DEL` by slot itself.
async fn delete_retired(
    redis: RedisConnection,
    key_prefix: String,
    mut queue: mpsc::Receiver<(AppId, SecretHash)>,
) {
    let mut batch = Vec::with_capacity(RETIRE_BATCH);
    while queue.recv_many(&mut batch, RETIRE_BATCH).await > 0 {
        let full = batch.len() == RETIRE_BATCH;
        let keys: Vec<String> = batch
            .drain(..)
            .map(|(app_id, code_hash)| redis_key(&key_prefix, app_id, &code_hash))
            .collect();
        delete_codes(&redis, keys).await;
        if !full {
            tokio::time::sleep(RETIRE_PAUSE).await;
        }
    }
}

/// One `DEL`. Failure is logged and otherwise harmless: the redemption rows
/// already refuse the codes, and they expire.
#[tracing::instrument(target = "devicelink::span", level = "debug", name = "redis.delete_auth_codes", skip_all, fields(db.system = "redis", count = keys.len()))]
async fn delete_codes(redis: &RedisConnection, keys: Vec<String>) {
    let count = keys.len();
    let deleted: Result<u32, _> = redis.clone().del(keys).await;
    if let Err(error) = deleted {
        tracing::warn!(count, error = %error, "could not delete redeemed auth codes; they stay refused and expire");
    }
}
