//! Limits decided in this replica's memory and counted in Redis behind the
//! calls, for scopes whose calls have no Redis work of their own.
//!
//! A `GetInstallStatus` answered from the status cache touches no store:
//! deciding its per-token limit in Redis would be its only round trip, and
//! most of its cost. So [`super::RateLimiter::check_in_memory_first`]
//! decides in memory (this replica's GCRA at the full rate, and the
//! refusals it already knows) and queues the call; every
//! [`FLUSH_INTERVAL`] the queue is added to the subjects' shared state in
//! Redis: script calls of at most [`SUBJECTS_PER_SCRIPT`] subjects of one
//! hash tag each (per app, or per one of 256 buckets of install tokens),
//! one after another. Redis answers each with the
//! wait its next call would face; a subject over its limit across all
//! replicas is then refused by this replica until that wait has passed
//! ([`super::KnownRefusals`]).
//!
//! A mint's subjects that are new to the replica are not queued: the
//! mint's own round trip creates their keys with a plain `SET NX`
//! ([`super::RateLimiter::set_in_memory_first`]), cheaper in Redis than
//! this script's Lua for a subject, and only a subject that already has a
//! key is queued.
//!
//! The price is a bounded overshoot: with N replicas a subject can exceed
//! its shared limit by at most what the other replicas allowed before
//! their next flush reported it, about (N − 1) × (burst + rate ×
//! [`FLUSH_INTERVAL`]). With one replica the limit is exact. Calls made
//! past the limit still count in Redis, so a subject that overshot waits
//! until its average is back under the rate.
//!
//! Memory is bounded: at most [`MAX_PENDING`] subjects wait for a flush;
//! past that, new subjects are limited by this replica's memory alone until
//! the next flush. When Redis cannot be reached the queue is dropped and the
//! replica's own limit stands, as with the fallback of the other scopes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex, PoisonError, Weak};
use std::time::Duration;

use redis::Script;

use super::keys::{Limit, LimitKey};
use super::rate::Rate;
use super::refusals::KnownRefusals;
use super::script::Refusal;
use crate::status::error_chain;

/// How often queued calls are counted in Redis.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(250);
/// The most subjects queued between two flushes.
pub const MAX_PENDING: usize = 50_000;
/// The most subjects one script call counts. A script holds Redis for its
/// whole run: every subject of an app shares one hash tag, and an app
/// minting for thousands of external ids a second once sent them all in
/// one script that held Redis for tens of milliseconds, so every mint
/// behind it waited (the benchmark's p99.9 at 30,000 mints a second was 35
/// to 60 ms). In calls of 64, sent one after another, the calls' own
/// commands run between them.
pub const SUBJECTS_PER_SCRIPT: usize = 64;

/// Adds calls already made to subjects' TATs, whatever they come to (they
/// were answered), with the same keys and units as [`super::GCRA_SCRIPT`],
/// so that both decide on one timeline.
///
/// KEYS: the limit keys, all of one hash tag (one Redis Cluster slot).
/// ARGV: per key its emission interval and burst window in microseconds
/// and the number of calls. Returns per key the wait in microseconds that
/// one more call would face (0 or less: none).
const ADD_SCRIPT: &str = concat!(
    super::script::tat_of_lua!(),
    r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local waits = {}
for i = 1, #KEYS do
  local emission = tonumber(ARGV[3 * i - 2])
  local tat = tat_of(KEYS[i], now)
  local new_tat = tat + emission * tonumber(ARGV[3 * i])
  local ttl_ms = math.ceil((new_tat - now) / 1000)
  redis.call('SET', KEYS[i], string.format('%.0f', new_tat), 'PX', string.format('%.0f', ttl_ms))
  waits[i] = new_tat + emission - now - tonumber(ARGV[3 * i - 1])
end
return waits
"
);

static ADD: LazyLock<Script> = LazyLock::new(|| Script::new(ADD_SCRIPT));

/// Calls allowed in memory and not yet counted in Redis.
#[derive(Debug, Default)]
pub(super) struct Pending {
    calls: Mutex<HashMap<LimitKey, (Rate, u32)>>,
    flusher_started: AtomicBool,
}

impl Pending {
    /// Queues one call against each of `limits`; whether there was any.
    pub(super) fn add<'a>(&self, limits: impl IntoIterator<Item = &'a Limit>) -> bool {
        let mut limits = limits.into_iter().peekable();
        if limits.peek().is_none() {
            return false;
        }
        let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        for limit in limits {
            if let Some((_, count)) = calls.get_mut(&limit.key) {
                *count = count.saturating_add(1);
            } else if calls.len() < MAX_PENDING {
                calls.insert(limit.key.clone(), (limit.rate, 1));
            }
        }
        true
    }

    /// Whether the flusher still has to be started (true once).
    pub(super) fn start_flusher(&self) -> bool {
        !self.flusher_started.swap(true, Ordering::Relaxed)
    }

    fn take(&self) -> HashMap<LimitKey, (Rate, u32)> {
        std::mem::take(&mut *self.calls.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Counts `pending` in Redis every [`FLUSH_INTERVAL`] and remembers the
/// subjects it finds over their limit, until the limiter is dropped.
pub(super) async fn flush_until_dropped<C>(
    pending: Weak<Pending>,
    refusals: Weak<KnownRefusals>,
    redis: C,
    key_prefix: String,
    store_timeout: Duration,
) where
    C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    let mut ticks = tokio::time::interval(FLUSH_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate: let the first interval's calls gather.
    ticks.tick().await;
    let mut failing = false;
    loop {
        ticks.tick().await;
        let (Some(pending), Some(refusals)) = (pending.upgrade(), refusals.upgrade()) else {
            return;
        };
        let batch = pending.take();
        drop(pending);
        if batch.is_empty() {
            continue;
        }
        let flushed =
            tokio::time::timeout(store_timeout, flush(&batch, &redis, &key_prefix, &refusals))
                .await;
        match flushed {
            Ok(Ok(())) if failing => {
                failing = false;
                tracing::info!("rate limits counted in memory reach Redis again");
            }
            Ok(Ok(())) => {}
            Ok(Err(error)) if !failing => {
                failing = true;
                tracing::warn!(
                    error = %error_chain(&error),
                    "rate limits counted in memory cannot reach Redis; each replica limits on its own"
                );
            }
            Err(_elapsed) if !failing => {
                failing = true;
                tracing::warn!(
                    "rate limits counted in memory: Redis did not answer in time; each replica limits on its own"
                );
            }
            Ok(Err(_)) | Err(_) => {}
        }
    }
}

/// Script calls of at most [`SUBJECTS_PER_SCRIPT`] subjects of one hash
/// tag each (every subject of an app shares one), one after another: the
/// connection is the one the calls use, and Redis runs one connection's
/// commands in order, so scripts sent all at once would queue every call
/// behind all of them. One at a time, a call waits for at most one.
async fn flush<C>(
    batch: &HashMap<LimitKey, (Rate, u32)>,
    redis: &C,
    key_prefix: &str,
    refusals: &KnownRefusals,
) -> redis::RedisResult<()>
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync,
{
    let mut by_tag: HashMap<String, Vec<(&LimitKey, Rate, u32)>> = HashMap::new();
    for (key, (rate, calls)) in batch {
        by_tag
            .entry(key.hash_tag())
            .or_default()
            .push((key, *rate, *calls));
    }
    let mut redis = redis.clone();
    for subjects in by_tag.values() {
        for chunk in subjects.chunks(SUBJECTS_PER_SCRIPT) {
            let mut invocation = ADD.prepare_invoke();
            for (key, rate, calls) in chunk {
                invocation
                    .key(key.redis_key(key_prefix))
                    .arg(micros(rate.emission_interval()))
                    .arg(micros(rate.burst_window()))
                    .arg(*calls);
            }
            let waits: Vec<i64> = invocation.invoke_async(&mut redis).await?;
            for ((key, _, _), wait) in chunk.iter().zip(waits) {
                if wait > 0 {
                    refusals.remember(
                        key,
                        Refusal {
                            scope: key.scope(),
                            retry_after: Duration::from_micros(wait.unsigned_abs()),
                        },
                    );
                }
            }
        }
    }
    Ok(())
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}
