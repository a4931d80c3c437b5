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
//! A mint far below its limits ([`super::RateLimiter::set_in_memory_first`])
//! sends Redis its code's `SET NX` alone; its limits are queued here too,
//! with two differences:
//! - A subject new to the replica (an external id's first mint) is
//!   created by the flush with a plain `SET NX` (pipelined, 64 at a time),
//!   cheaper in Redis than this script's Lua for a subject; only a subject
//!   that turns out to have a key already is counted by the script.
//! - The client addresses the mints came from are watched: the flush reads
//!   each one's failed-credential state (`PTTL`), and an address blocked
//!   by its failures on another replica is refused here from then on. An
//!   address this replica blocked itself is refused at once (its refusal
//!   is remembered when the failure is counted), and a call from any
//!   address that needs a store lookup (an API key not cached) asks Redis
//!   first, as before: only mints with a valid, cached key from an
//!   address another replica blocked go on for up to a flush interval.
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
use super::memory::FreshSubjects;
use super::rate::Rate;
use super::refusals::KnownRefusals;
use super::script;
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
    queue: Mutex<Queue>,
    flusher_started: AtomicBool,
}

/// What the next flush sends.
#[derive(Debug, Default)]
struct Queue {
    /// Per subject, its calls.
    calls: HashMap<LimitKey, Queued>,
    /// The blockers (client addresses) to read, with their rates.
    watched: HashMap<LimitKey, Rate>,
}

/// A subject's calls waiting for a flush.
#[derive(Debug, Clone, Copy)]
struct Queued {
    /// The rate of its first queued call (an app changing its own rate
    /// applies from the next flush).
    rate: Rate,
    /// How many.
    calls: u32,
    /// The replica had no entry for the subject at its first queued call:
    /// the flush creates its key if Redis has none either.
    fresh: bool,
}

impl Pending {
    /// Queues one call against each of `limits`, those whose index is in
    /// `fresh` marked new to the replica, and has the next flush read
    /// `blockers`' state; whether there was anything to send.
    pub(super) fn add<'a>(
        &self,
        limits: impl IntoIterator<Item = &'a Limit>,
        fresh: FreshSubjects,
        blockers: &[Limit],
    ) -> bool {
        let mut limits = limits.into_iter().enumerate().peekable();
        if limits.peek().is_none() && blockers.is_empty() {
            return false;
        }
        let mut queue = self.lock();
        for (index, limit) in limits {
            if let Some(queued) = queue.calls.get_mut(&limit.key) {
                queued.calls = queued.calls.saturating_add(1);
            } else if queue.calls.len() < MAX_PENDING {
                let queued = Queued {
                    rate: limit.rate,
                    calls: 1,
                    fresh: fresh.contains(index),
                };
                queue.calls.insert(limit.key.clone(), queued);
            }
        }
        for blocker in blockers {
            if queue.watched.len() < MAX_PENDING || queue.watched.contains_key(&blocker.key) {
                queue.watched.insert(blocker.key.clone(), blocker.rate);
            }
        }
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the flusher still has to be started (true once).
    pub(super) fn start_flusher(&self) -> bool {
        !self.flusher_started.swap(true, Ordering::Relaxed)
    }

    fn take(&self) -> Queue {
        std::mem::take(&mut *self.lock())
    }
}

/// Counts `pending` in Redis every [`FLUSH_INTERVAL`] and remembers the
/// subjects it finds over their limit and the watched addresses it finds
/// blocked, until the limiter is dropped. `plain_creates`: a single
/// server, where fresh subjects are created by plain pipelined writes (a
/// cluster's pipelines must not cross slots: there the scripts count them).
pub(super) async fn flush_until_dropped<C>(
    pending: Weak<Pending>,
    refusals: Weak<KnownRefusals>,
    redis: C,
    key_prefix: String,
    store_timeout: Duration,
    plain_creates: bool,
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
        let queue = pending.take();
        drop(pending);
        if queue.calls.is_empty() && queue.watched.is_empty() {
            continue;
        }
        let flush = Flush {
            redis: redis.clone(),
            key_prefix: &key_prefix,
            refusals: &refusals,
            plain_creates,
        };
        let flushed = tokio::time::timeout(store_timeout, flush.run(&queue)).await;
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

/// One flush's connection and what it tells.
struct Flush<'a, C> {
    redis: C,
    key_prefix: &'a str,
    refusals: &'a KnownRefusals,
    plain_creates: bool,
}

impl<C> Flush<'_, C>
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync,
{
    /// Reads the watched addresses, creates the fresh subjects, counts the
    /// others. Everything goes out on the connection the calls use, and
    /// Redis runs one connection's commands in order, so it goes out in
    /// pieces of at most [`SUBJECTS_PER_SCRIPT`] subjects, one after
    /// another: a call waits behind at most one of them.
    async fn run(mut self, queue: &Queue) -> redis::RedisResult<()> {
        self.read_watched(&queue.watched).await?;
        let mut counted: Vec<(&LimitKey, Rate, u32)> = Vec::with_capacity(queue.calls.len());
        let mut fresh = Vec::new();
        for (key, queued) in &queue.calls {
            let subject = (key, queued.rate, queued.calls);
            if queued.fresh && self.plain_creates {
                fresh.push(subject);
            } else {
                counted.push(subject);
            }
        }
        for chunk in fresh.chunks(SUBJECTS_PER_SCRIPT) {
            let created = script::create_subjects(&mut self.redis, self.key_prefix, chunk).await?;
            counted.extend(
                chunk
                    .iter()
                    .zip(created)
                    .filter(|(_, created)| !created)
                    .map(|(subject, _)| *subject),
            );
        }
        self.count(&counted).await
    }

    /// Remembers each watched address found blocked (its failures' key
    /// runs further ahead than its burst allows).
    async fn read_watched(&mut self, watched: &HashMap<LimitKey, Rate>) -> redis::RedisResult<()> {
        let blockers: Vec<Limit> = watched
            .iter()
            .map(|(key, rate)| Limit {
                key: key.clone(),
                rate: *rate,
            })
            .collect();
        for chunk in blockers.chunks(SUBJECTS_PER_SCRIPT) {
            let ttls = if self.plain_creates {
                script::ttls(&mut self.redis, self.key_prefix, chunk).await?
            } else {
                // A cluster: a key at a time, each to its slot's master.
                let mut ttls = Vec::with_capacity(chunk.len());
                for blocker in chunk {
                    ttls.extend(
                        script::ttls(
                            &mut self.redis,
                            self.key_prefix,
                            std::slice::from_ref(blocker),
                        )
                        .await?,
                    );
                }
                ttls
            };
            for (blocker, ttl_ms) in chunk.iter().zip(ttls) {
                if let Some(refusal) = script::blocked_by(blocker, ttl_ms) {
                    self.refusals.remember(&blocker.key, refusal);
                }
            }
        }
        Ok(())
    }

    /// Adds `subjects`' calls with the script: calls of at most
    /// [`SUBJECTS_PER_SCRIPT`] subjects of one hash tag each (every subject
    /// of an app shares one).
    async fn count(&mut self, subjects: &[(&LimitKey, Rate, u32)]) -> redis::RedisResult<()> {
        let mut by_tag: HashMap<String, Vec<(&LimitKey, Rate, u32)>> = HashMap::new();
        for subject in subjects {
            by_tag
                .entry(subject.0.hash_tag())
                .or_default()
                .push(*subject);
        }
        for subjects in by_tag.values() {
            for chunk in subjects.chunks(SUBJECTS_PER_SCRIPT) {
                let mut invocation = ADD.prepare_invoke();
                for (key, rate, calls) in chunk {
                    invocation
                        .key(key.redis_key(self.key_prefix))
                        .arg(micros(rate.emission_interval()))
                        .arg(micros(rate.burst_window()))
                        .arg(*calls);
                }
                let waits: Vec<i64> = invocation.invoke_async(&mut self.redis).await?;
                for ((key, _, _), wait) in chunk.iter().zip(waits) {
                    if wait > 0 {
                        self.refusals.remember(
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
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}
