//! Minting auth codes into Redis.
//!
//! A code is 256 random bits; Redis holds only its hash as the key and the
//! [`AuthCodeRecord`] registration needs as the value, with the code's TTL so
//! that Redis itself forgets expired codes. `SET .. NX` refuses to overwrite:
//! a collision, however unlikely, can never rebind a live code to another
//! user.
//!
//! The write goes through the rate limiter
//! ([`RateLimiter::set_in_memory_first`]): far below its limits a mint is
//! counted in the replica's memory and its code stored with a plain
//! `SET NX`, its one command (its limits counted and the client address's
//! block read behind it, within 250 ms); near a limit one script decides
//! the limits and stores the code. A refused mint stores nothing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use devicelink_shared::api_key::KeyId;
use devicelink_shared::auth_code::{AuthCode, AuthCodeRecord, redis_key};
use devicelink_shared::code_challenge::CodeChallenge;
use devicelink_shared::code_record_seal::RecordKeys;
use devicelink_shared::limits::{Limit, LimitStoreError, RateLimiter, SetIfAllowed, SetOutcome};
use devicelink_shared::secret::SecretHash;
use devicelink_shared::stores::RedisConnection;
use devicelink_shared::validate::{AppId, ExternalId};

use crate::error::{AuthCodeError, StoreKind};
use crate::limits::{AppMintLimits, CallLimits};

/// How many fresh codes to try when `SET NX` finds the key taken. With 256
/// random bits a second attempt is already a sign of a broken generator.
const MINT_ATTEMPTS: usize = 3;

/// A code that is stored and can be handed out.
#[derive(Debug)]
pub struct MintedCode {
    /// The code; its text goes into the response and nowhere else.
    pub code: AuthCode,
    /// The code's hash, the key it is stored under (its audit event names
    /// the code by a hash of it).
    pub code_hash: SecretHash,
    /// When the code stops being redeemable, as promised to the client.
    /// Redis forgets it a little later, never sooner.
    pub expires_at: SystemTime,
}

/// Writes codes under `key_prefix` in Redis, through the rate limiter's
/// script. Cheap to clone: the connection is multiplexed and reconnects by
/// itself.
#[derive(Clone)]
pub struct CodeMinter {
    limiter: RateLimiter<RedisConnection>,
    key_prefix: String,
    ttl: Duration,
    record_keys: RecordKeys,
}

impl CodeMinter {
    /// A minter whose codes live for `ttl` (whole seconds, at least one),
    /// stored by `limiter` (whose Redis holds the codes), each record sealed
    /// with `record_keys` so that registration can tell it from a forgery.
    pub fn new(
        limiter: RateLimiter<RedisConnection>,
        key_prefix: String,
        ttl: Duration,
        record_keys: RecordKeys,
    ) -> Self {
        Self {
            limiter,
            key_prefix,
            ttl,
            record_keys,
        }
    }

    /// Mints and stores a code for `external_id` of `app_id`, bound to the
    /// device that holds the verifier of `code_challenge` if given, on
    /// behalf of the key `key_id`, unless `limits` (at the app's own rates where
    /// `app_limits` has them) refuse it
    /// ([`AuthCodeError::RateLimited`]).
    #[tracing::instrument(target = "devicelink::span", level = "debug", name = "redis.store_auth_code", skip_all, fields(db.system = "redis"))]
    pub async fn mint(
        &self,
        app_id: AppId,
        external_id: &ExternalId,
        code_challenge: Option<&CodeChallenge>,
        key_id: &KeyId,
        app_limits: &AppMintLimits,
        limits: &CallLimits<'_>,
    ) -> Result<MintedCode, AuthCodeError> {
        let consumed = limits.mint(app_id, key_id, external_id, app_limits);
        // Taken before the write, so the promised expiry is never later than
        // the moment Redis drops the code.
        let minted_at = SystemTime::now();
        let expires_at = minted_at
            .checked_add(self.ttl)
            .ok_or_else(|| AuthCodeError::internal("the code's expiry overflows the clock"))?;
        let record = AuthCodeRecord {
            app_id: app_id.to_string(),
            external_id: external_id.as_str().to_owned(),
            minted_at_unix_ms: unix_millis(minted_at),
            key_id: key_id.as_str().to_owned(),
            expires_at_unix_ms: unix_millis(expires_at),
            code_challenge: code_challenge
                .map(|challenge| challenge.as_bytes().to_vec())
                .unwrap_or_default(),
        };
        for _ in 0..MINT_ATTEMPTS {
            let code = AuthCode::generate();
            let code_hash = code.hash();
            let sealed = self.record_keys.seal(&code_hash, &record);
            match self
                .store(app_id, &code_hash, &sealed, &consumed, limits.blockers())
                .await?
            {
                SetOutcome::Stored => {
                    return Ok(MintedCode {
                        code,
                        code_hash,
                        expires_at,
                    });
                }
                SetOutcome::Limited(refusal) => return Err(AuthCodeError::RateLimited(refusal)),
                SetOutcome::Taken => {}
            }
            tracing::warn!("a freshly generated auth code was already taken; generating another");
        }
        Err(AuthCodeError::internal(
            "every generated auth code was already taken",
        ))
    }

    /// Stores the sealed `record` under the code's hash unless the key exists or a
    /// limit refuses, consuming `consumed` only when it stores. The limiter
    /// bounds the script by [`devicelink_shared::stores::STORE_TIMEOUT`].
    async fn store(
        &self,
        app_id: AppId,
        code_hash: &SecretHash,
        record: &[u8],
        consumed: &[Limit],
        blockers: &[Limit],
    ) -> Result<SetOutcome, AuthCodeError> {
        let key = redis_key(&self.key_prefix, app_id, code_hash);
        let set = SetIfAllowed {
            key: &key,
            value: record,
            ttl: Duration::from_secs(self.ttl.as_secs().max(1)),
        };
        self.limiter
            .set_in_memory_first(consumed, blockers, &set)
            .await
            .map_err(|error| match error {
                LimitStoreError::Redis(error) => AuthCodeError::redis(error),
                LimitStoreError::TimedOut => AuthCodeError::timed_out(StoreKind::Redis),
            })
    }
}

/// Milliseconds since the Unix epoch; 0 for a clock set before 1970, which
/// only the audit field would show.
fn unix_millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_millis_counts_from_the_epoch() {
        assert_eq!(unix_millis(UNIX_EPOCH), 0);
        assert_eq!(
            unix_millis(UNIX_EPOCH + Duration::from_millis(1_234)),
            1_234
        );
        assert_eq!(unix_millis(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }
}
