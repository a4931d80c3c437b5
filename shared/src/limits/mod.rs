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
//! A refusal from Redis is remembered by the replica until its retry time
//! ([`refusals`]): a subject over its limit (an address blocked by its
//! failures, above all) is refused again from memory, so a flood costs no
//! Redis round trips.
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
//! - `MintAuthCode`, once the key is verified:
//!   [`RateLimiter::set_in_memory_first`] with [`LimitKey::mint_per_key`]
//!   and [`LimitKey::mint_per_external_id`], the address's limit as a
//!   blocker, and the code's record as [`SetIfAllowed`]; `Taken` means
//!   draw a fresh code and call again.
//! - `CreateUser`: [`RateLimiter::blocked`] (the address, one plain read
//!   alongside the code's), then [`RateLimiter::check_in_memory_first`]
//!   with [`LimitKey::redeem_per_device`].
//! - `GetInstallStatus`, `ResetInstall`:
//!   [`RateLimiter::check_in_memory_first`] with
//!   [`LimitKey::install_per_token`]: they have no Redis work of their own
//!   to share a round trip with, so the limit is decided in memory and
//!   counted in Redis behind the call ([`write_behind`]).
//! - Over a limit: [`rate_limited`] makes the status.

mod client_address;
mod keys;
pub mod memory;
mod rate;
pub mod refusals;
pub mod script;
mod slots;
mod status;
pub mod write_behind;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use client_address::{Cidr, TrustedProxies};
pub use keys::{Limit, LimitKey, Scope, app_hash_tag, push_app_hash_tag};
pub use memory::{FirstLook, FreshSubjects, MemoryLimiter};
pub use rate::{MAX_COUNT, Period, Rate};
pub use refusals::KnownRefusals;
pub use script::{Decision, GCRA_SCRIPT, Refusal, SetIfAllowed, SetOutcome};
pub use status::{rate_limited, retry_after_seconds};

use crate::status::error_chain;
use crate::stores::{RedisConnection, STORE_TIMEOUT};

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
    /// This replica's own count of the calls limited in memory first.
    local: Arc<MemoryLimiter>,
    refusals: Arc<KnownRefusals>,
    pending: Arc<write_behind::Pending>,
    /// Milliseconds after `started` before which Redis is not tried.
    redis_resting_until: Arc<AtomicU64>,
    started: Instant,
    /// A Redis Cluster is behind `redis`: a decision whose keys lie in
    /// several slots runs one script per slot ([`slots`]).
    one_script_per_slot: bool,
    /// `redis` bounds each command by `store_timeout` itself (a
    /// [`RedisConnection`] does): a write of one round trip then needs no
    /// timer of the limiter's on top, on the hot path of every mint.
    commands_bounded: bool,
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
    C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    /// A limiter keeping its state under `key_prefix` in `redis`. When
    /// `redis` is a [`RedisConnection`] to a Redis Cluster, decisions are
    /// split by hash slot ([`slots`]); any other connection is taken for a
    /// single server.
    pub fn new(redis: C, key_prefix: impl Into<String>) -> Self {
        let connection = (&redis as &dyn std::any::Any).downcast_ref::<RedisConnection>();
        let one_script_per_slot = connection.is_some_and(RedisConnection::is_cluster);
        Self {
            one_script_per_slot,
            commands_bounded: connection.is_some(),
            redis,
            key_prefix: key_prefix.into(),
            store_timeout: STORE_TIMEOUT,
            memory: Arc::new(MemoryLimiter::default()),
            local: Arc::new(MemoryLimiter::default()),
            refusals: Arc::new(KnownRefusals::default()),
            pending: Arc::new(write_behind::Pending::default()),
            redis_resting_until: Arc::new(AtomicU64::new(0)),
            started: Instant::now(),
        }
    }

    /// The same limiter waiting at most `timeout` for Redis (tests use a
    /// short one).
    pub fn with_store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = timeout;
        self.commands_bounded = false;
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
        if let Some(refusal) = self.refusals.refusal(limits.iter().chain(blockers)) {
            return Ok(SetOutcome::Limited(counted_refusal(refusal)));
        }
        let run = self.run(limits, blockers, Some(set));
        let outcome = tokio::time::timeout(self.store_timeout, run)
            .await
            .map_err(|_elapsed| LimitStoreError::TimedOut)??;
        self.remember(&outcome);
        Ok(match counted(outcome.decision) {
            Decision::Limited(refusal) => SetOutcome::Limited(refusal),
            Decision::Allowed if outcome.stored => SetOutcome::Stored,
            Decision::Allowed => SetOutcome::Taken,
        })
    }

    /// [`check_unless_blocked`](Self::check_unless_blocked) for calls with
    /// no Redis work of their own (a cached install status), where a round
    /// trip would be most of their cost. This replica counts the call
    /// itself first ([`MemoryLimiter::first_look`]): a subject it has
    /// seen use up a limit is refused; one far below its limits (at most
    /// half a burst used here) is allowed without Redis and counted there
    /// behind the call, within [`write_behind::FLUSH_INTERVAL`]; one near
    /// a limit is decided in Redis as `check_unless_blocked` does.
    /// Refusals Redis gave (a subject over its limit across replicas, an
    /// address blocked by its failures) are answered from memory until
    /// their retry time. With one replica the limits are exact; across N,
    /// [`write_behind`] states the bound.
    pub async fn check_in_memory_first(&self, limits: &[Limit], blockers: &[Limit]) -> Decision {
        if let Some(refusal) = self.refusals.refusal(limits.iter().chain(blockers)) {
            return Decision::Limited(counted_refusal(refusal));
        }
        match self.local.first_look(limits) {
            FirstLook::Refused(refusal) => Decision::Limited(counted_refusal(refusal)),
            FirstLook::FarBelow { .. } => {
                self.count_behind(limits);
                Decision::Allowed
            }
            FirstLook::Near => self.check_unless_blocked(limits, blockers).await,
        }
    }

    /// [`check_and_set`](Self::check_and_set) decided in memory first, as
    /// [`check_in_memory_first`](Self::check_in_memory_first) decides: far
    /// below its limits a call's Redis work is its plain `SET NX` alone.
    /// Its limits are counted behind it ([`write_behind`]: a subject new to
    /// this replica, an external id minted for the first time, is created
    /// there with a plain write), and `blockers` are watched: refused here
    /// once known (this replica's own failures at once, another replica's
    /// within a flush), and read in Redis by the flush. Near a limit, the
    /// script decides, reads the blockers and stores in one round trip.
    pub async fn set_in_memory_first(
        &self,
        limits: &[Limit],
        blockers: &[Limit],
        set: &SetIfAllowed<'_>,
    ) -> Result<SetOutcome, LimitStoreError> {
        if let Some(refusal) = self.refusals.refusal(limits.iter().chain(blockers)) {
            return Ok(SetOutcome::Limited(counted_refusal(refusal)));
        }
        match self.local.first_look(limits) {
            FirstLook::Refused(refusal) => Ok(SetOutcome::Limited(counted_refusal(refusal))),
            FirstLook::FarBelow { fresh } => {
                let mut redis = self.redis.clone();
                let write = script::set_nx(&mut redis, set);
                let stored = if self.commands_bounded {
                    write.await?
                } else {
                    tokio::time::timeout(self.store_timeout, write)
                        .await
                        .map_err(|_elapsed| LimitStoreError::TimedOut)??
                };
                if !stored {
                    return Ok(SetOutcome::Taken);
                }
                if self.one_script_per_slot {
                    slots::wait_for_replica(&self.redis, set.key).await?;
                }
                if self.pending.add(limits, fresh, blockers) {
                    self.start_flusher();
                }
                Ok(SetOutcome::Stored)
            }
            FirstLook::Near => self.check_and_set(limits, blockers, set).await,
        }
    }

    /// Whether `blockers` refuse a call, counting nothing: the refusals this
    /// replica knows, else the blockers' state in Redis read with a plain
    /// command each (their TTL, which the GCRA script sets to how far the
    /// TAT runs ahead of now), else, with Redis
    /// away, this replica's memory. Cheaper than [`peek`](Self::peek) and
    /// as exact: for the calls that must not reach a store from a blocked
    /// address but have no Redis work to carry the check.
    pub async fn blocked(&self, blockers: &[Limit]) -> Decision {
        if blockers.is_empty() {
            return Decision::Allowed;
        }
        if let Some(refusal) = self.refusals.refusal(blockers) {
            return Decision::Limited(counted_refusal(refusal));
        }
        if self.millis_since_start() >= self.redis_resting_until.load(Ordering::Relaxed) {
            let mut redis = self.redis.clone();
            let read = script::blocked(&mut redis, &self.key_prefix, blockers);
            match tokio::time::timeout(self.store_timeout, read).await {
                Ok(Ok(None)) => return Decision::Allowed,
                Ok(Ok(Some(refusal))) => {
                    self.remember_blocker(blockers, refusal);
                    return Decision::Limited(counted_refusal(refusal));
                }
                Ok(Err(error)) => self.rest_redis(&error),
                Err(_elapsed) => self.rest_redis(&LimitStoreError::TimedOut),
            }
        }
        metrics::counter!(crate::metrics_catalog::RATE_LIMIT_FALLBACK).increment(1);
        counted(self.memory.decide(&[], blockers))
    }

    /// Remembers a refusal read from the blockers' state: the blocker of
    /// its scope.
    fn remember_blocker(&self, blockers: &[Limit], refusal: Refusal) {
        if let Some(blocker) = blockers
            .iter()
            .find(|limit| limit.key.scope() == refusal.scope)
        {
            self.refusals.remember(&blocker.key, refusal);
        }
    }

    /// Queues a call allowed in memory to be counted in Redis.
    fn count_behind(&self, limits: &[Limit]) {
        if self.pending.add(limits, FreshSubjects::default(), &[]) {
            self.start_flusher();
        }
    }

    /// Starts the task that counts queued calls in Redis, once, if there
    /// is a runtime to run it on.
    fn start_flusher(&self) {
        if !self.pending.start_flusher() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(write_behind::flush_until_dropped(
            Arc::downgrade(&self.pending),
            Arc::downgrade(&self.refusals),
            self.redis.clone(),
            self.key_prefix.clone(),
            self.store_timeout,
            !self.one_script_per_slot,
        ));
    }

    /// The in-memory fallback, shared by clones.
    pub fn memory(&self) -> &MemoryLimiter {
        &self.memory
    }

    /// The refusals remembered until their retry time, shared by clones.
    pub fn known_refusals(&self) -> &KnownRefusals {
        &self.refusals
    }

    async fn decide(&self, consumed: &[Limit], peeked: &[Limit]) -> Decision {
        if consumed.is_empty() && peeked.is_empty() {
            return Decision::Allowed;
        }
        if let Some(refusal) = self.refusals.refusal(consumed.iter().chain(peeked)) {
            return Decision::Limited(refusal);
        }
        if self.millis_since_start() >= self.redis_resting_until.load(Ordering::Relaxed) {
            let run = self.run(consumed, peeked, None);
            match tokio::time::timeout(self.store_timeout, run).await {
                Ok(Ok(outcome)) => {
                    self.remember(&outcome);
                    return outcome.decision;
                }
                Ok(Err(error)) => self.rest_redis(&error),
                Err(_elapsed) => self.rest_redis(&LimitStoreError::TimedOut),
            }
        }
        metrics::counter!(crate::metrics_catalog::RATE_LIMIT_FALLBACK).increment(1);
        self.memory.decide(consumed, peeked)
    }

    /// Keeps what Redis said about the subjects until its retry time: the
    /// limit that refused the call, or the one this call used up. (The
    /// in-memory fallback's refusals are not kept: it is asked anyway.)
    fn remember(&self, outcome: &script::Outcome) {
        if let (Some(key), Decision::Limited(refusal)) = (&outcome.refused_by, outcome.decision) {
            self.refusals.remember(key, refusal);
        }
        if let Some((key, refusal)) = &outcome.exhausted {
            self.refusals.remember(key, *refusal);
        }
    }

    /// The script over `redis`, split by slot against a cluster.
    async fn run(
        &self,
        consumed: &[Limit],
        peeked: &[Limit],
        set: Option<&SetIfAllowed<'_>>,
    ) -> redis::RedisResult<script::Outcome> {
        if self.one_script_per_slot {
            return slots::run(&self.redis, &self.key_prefix, consumed, peeked, set).await;
        }
        let mut redis = self.redis.clone();
        script::run(&mut redis, &self.key_prefix, consumed, peeked, set).await
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
        counted_refusal(refusal);
    }
    decision
}

fn counted_refusal(refusal: Refusal) -> Refusal {
    metrics::counter!(crate::metrics_catalog::RATE_LIMITED, "scope" => refusal.scope.name())
        .increment(1);
    refusal
}
