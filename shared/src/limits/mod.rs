//! Rate limits shared by every replica, kept in Redis.
//!
//! Each handler calls the limiter once it knows the subject (after the API
//! key is verified, say), with the [`Limit`]s of its scopes; over a limit it
//! answers [`rate_limited`]. The decision is GCRA in one Lua script
//! ([`script`]): atomic, on the Redis server's clock, several scopes at
//! once and all or nothing. A mint decides its limits and stores its code
//! in the same script ([`RateLimiter::check_and_set`]), so limiting costs
//! it no round trip.
//!
//! When Redis errors or does not answer within [`STORE_TIMEOUT`], limits
//! fall back to this replica's memory ([`memory`]) rather than refusing
//! every call; after a failure Redis is left alone for
//! [`REDIS_RETRY_AFTER`] so that calls do not each wait out a timeout.
//!
//! Metrics: `devicelink_rate_limited_total{scope}` counts refused calls;
//! `devicelink_rate_limit_fallback_total` counts decisions made in memory.
//!
//! How a handler calls it (each rate from [`crate::config::LimitsConfig`]
//! or the app's own; [`Limit::new`] gives `None` for a rate that is off):
//!
//! - First, the client address
//!   ([`TrustedProxies::client_address`]) and its
//!   [`LimitKey::failed_auth_per_address`] limit: before any store lookup,
//!   [`RateLimiter::peek`] it; after a failed credential,
//!   [`RateLimiter::record`] it.
//! - `MintAuthCode`, once the key is verified: [`RateLimiter::check_and_set`]
//!   with [`LimitKey::mint_per_key`] and [`LimitKey::mint_per_external_id`]
//!   and the code's record as [`SetIfAllowed`]; `Taken` means draw a fresh
//!   code and call again.
//! - `CreateUser`: [`RateLimiter::check`] (or
//!   [`RateLimiter::check_unless_blocked`], the address as blocker, to save
//!   the peek's round trip) with [`LimitKey::redeem_per_device`].
//! - `GetInstallStatus`, `ResetInstall`: [`RateLimiter::check`] with
//!   [`LimitKey::install_per_token`].
//! - Over a limit: [`rate_limited`] makes the status.

mod client_address;
mod keys;
pub mod memory;
mod rate;
pub mod script;
mod status;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use client_address::{Cidr, TrustedProxies};
pub use keys::{Limit, LimitKey, Scope};
pub use memory::MemoryLimiter;
pub use rate::{MAX_COUNT, Period, Rate};
pub use script::{Decision, GCRA_SCRIPT, Refusal, SetIfAllowed, SetOutcome};
pub use status::{rate_limited, retry_after_seconds};

use crate::status::error_chain;
use crate::stores::STORE_TIMEOUT;

/// How long the limiter decides in memory alone after Redis failed, before
/// trying Redis again.
pub const REDIS_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why [`RateLimiter::check_and_set`] could not decide (it has no fallback:
/// its write needs Redis).
#[derive(Debug, thiserror::Error)]
pub enum LimitStoreError {
    /// Redis refused or could not be reached.
    #[error("Redis failed")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer within [`STORE_TIMEOUT`].
    #[error("Redis did not answer in time")]
    TimedOut,
}

/// Decides rate limits in Redis, falling back to memory. Cheap to clone:
/// clones share the connection and the fallback.
#[derive(Clone)]
pub struct RateLimiter<C> {
    redis: C,
    key_prefix: String,
    store_timeout: Duration,
    memory: Arc<MemoryLimiter>,
    /// Milliseconds after `started` before which Redis is not tried.
    redis_resting_until: Arc<AtomicU64>,
    started: Instant,
}

impl<C> std::fmt::Debug for RateLimiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("key_prefix", &self.key_prefix)
            .field("memory_entries", &self.memory.len())
            .finish_non_exhaustive()
    }
}

impl<C> RateLimiter<C>
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync,
{
    /// A limiter keeping its state under `key_prefix` in `redis`.
    pub fn new(redis: C, key_prefix: impl Into<String>) -> Self {
        Self {
            redis,
            key_prefix: key_prefix.into(),
            store_timeout: STORE_TIMEOUT,
            memory: Arc::new(MemoryLimiter::default()),
            redis_resting_until: Arc::new(AtomicU64::new(0)),
            started: Instant::now(),
        }
    }

    /// The same limiter waiting at most `timeout` for Redis (tests use a
    /// short one).
    pub fn with_store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = timeout;
        self
    }

    /// Counts a call against every limit, or against none when one refuses.
    /// A refusal is counted in `devicelink_rate_limited_total`.
    pub async fn check(&self, limits: &[Limit]) -> Decision {
        counted(self.decide(limits, &[]).await)
    }

    /// [`check`](Self::check) on `limits` and [`peek`](Self::peek) on
    /// `blockers` in one round trip: the call counts against `limits`
    /// unless one of them refuses or one more call would exceed a blocker
    /// (the client address's failures, say), and never against `blockers`.
    pub async fn check_unless_blocked(&self, limits: &[Limit], blockers: &[Limit]) -> Decision {
        counted(self.decide(limits, blockers).await)
    }

    /// Whether a call would be refused, counting nothing: before looking up
    /// credentials, whether the client address is blocked by its failures
    /// (`peek(&[failed_auth_per_address])`). A refusal is counted in
    /// `devicelink_rate_limited_total`, since the call is refused.
    pub async fn peek(&self, limits: &[Limit]) -> Decision {
        counted(self.decide(&[], limits).await)
    }

    /// Counts a failure (bad credentials) against `limits`. The call that
    /// failed is answered as a failure whatever this returns; a refusal
    /// here means the address is now blocked, which the next `peek` sees.
    pub async fn record(&self, limits: &[Limit]) -> Decision {
        self.decide(limits, &[]).await
    }

    /// Decides `limits` (and `blockers`, as
    /// [`check_unless_blocked`](Self::check_unless_blocked) does) and, only
    /// when the call is allowed, stores `set` with `SET NX`, all in one
    /// round trip. Nothing is consumed unless the value is stored. No
    /// fallback: the write needs Redis.
    pub async fn check_and_set(
        &self,
        limits: &[Limit],
        blockers: &[Limit],
        set: &SetIfAllowed<'_>,
    ) -> Result<SetOutcome, LimitStoreError> {
        let mut redis = self.redis.clone();
        let run = script::run(&mut redis, &self.key_prefix, limits, blockers, Some(set));
        let (decision, stored) = tokio::time::timeout(self.store_timeout, run)
            .await
            .map_err(|_elapsed| LimitStoreError::TimedOut)??;
        Ok(match counted(decision) {
            Decision::Limited(refusal) => SetOutcome::Limited(refusal),
            Decision::Allowed if stored => SetOutcome::Stored,
            Decision::Allowed => SetOutcome::Taken,
        })
    }

    /// The in-memory fallback, shared by clones.
    pub fn memory(&self) -> &MemoryLimiter {
        &self.memory
    }

    async fn decide(&self, consumed: &[Limit], peeked: &[Limit]) -> Decision {
        if consumed.is_empty() && peeked.is_empty() {
            return Decision::Allowed;
        }
        if self.millis_since_start() >= self.redis_resting_until.load(Ordering::Relaxed) {
            let mut redis = self.redis.clone();
            let run = script::run(&mut redis, &self.key_prefix, consumed, peeked, None);
            match tokio::time::timeout(self.store_timeout, run).await {
                Ok(Ok((decision, _))) => return decision,
                Ok(Err(error)) => self.rest_redis(&error),
                Err(_elapsed) => self.rest_redis(&LimitStoreError::TimedOut),
            }
        }
        metrics::counter!(crate::metrics_catalog::RATE_LIMIT_FALLBACK).increment(1);
        self.memory.decide(consumed, peeked)
    }

    fn rest_redis(&self, error: &dyn std::error::Error) {
        tracing::warn!(
            error = %error_chain(error),
            "rate limits fall back to this replica's memory"
        );
        let until = self.millis_since_start() + REDIS_RETRY_AFTER.as_millis() as u64;
        self.redis_resting_until.store(until, Ordering::Relaxed);
    }

    fn millis_since_start(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Counts a refusal in `devicelink_rate_limited_total{scope}`; the scope
/// names are a fixed set, so the label cannot grow.
fn counted(decision: Decision) -> Decision {
    if let Decision::Limited(refusal) = decision {
        metrics::counter!(crate::metrics_catalog::RATE_LIMITED, "scope" => refusal.scope.name())
            .increment(1);
    }
    decision
}
