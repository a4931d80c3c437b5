//! The GCRA decision in Redis: one Lua script, one round trip, atomic.
//!
//! GCRA (the generic cell rate algorithm) keeps one number per subject, its
//! theoretical arrival time (TAT): when the subject's calls, spaced by the
//! rate's emission interval, would have caught up. A call is allowed when
//! pushing the TAT one interval further keeps it within the burst window of
//! now, and refused otherwise, the excess being how long to wait. The
//! script reads the Redis server's clock (`TIME`), so replicas with drifting
//! clocks share one timeline, and expires each key when its TAT passes:
//! an idle subject costs nothing.
//!
//! One call decides several scopes together, all or nothing: when any
//! refuses, none is consumed. It can also store one value (`SET NX PX`)
//! only when every scope allows, so that a mint decides its limits and
//! stores its code in the same round trip; a taken key stores nothing and
//! consumes nothing.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::keys::{Limit, LimitKey, Scope};
use super::rate::Rate;

/// How a subject's key holds its TAT: in microseconds since the epoch, or,
/// for a subject created by a plain write ([`create_subjects`]),
/// the text [`TAT_AT_EXPIRY`] and an expiry at the TAT, read back as now
/// plus the key's time to live (to the millisecond, rounded up: never an
/// allowance more). The scripts read TATs with this function only.
macro_rules! tat_of_lua {
    () => {
        r"
local function tat_of(key, now)
  local value = redis.call('GET', key)
  if not value then return now end
  local tat = tonumber(value) or now + math.max(redis.call('PTTL', key), 0) * 1000
  if tat < now then return now end
  return tat
end
"
    };
}
pub(super) use tat_of_lua;

/// The value of a subject's key whose TAT is its expiry (see
/// [`tat_of_lua`]).
pub(super) const TAT_AT_EXPIRY: &str = "expiry";

/// The script. Lua numbers are doubles: microseconds since the epoch
/// (about 2^51) are exact, but Lua 5.1 prints numbers with 14 digits, so
/// every number written back is formatted with `%.0f`.
///
/// KEYS: the limit keys, then optionally the key to `SET`.
/// ARGV: the number of limits; per limit its emission interval and burst
/// window in microseconds and `1` to consume it or `0` to only look at it;
/// then, with a key to `SET`, its value and time to live in milliseconds.
/// Returns `{allowed, wait in µs, refusing limit (1-based, 0 for none),
/// stored}`. An allowed call that used up a consumed limit (the next call
/// would be refused) returns that limit and the next call's wait instead
/// of `0, 0`, so the caller can refuse the next call without asking.
pub const GCRA_SCRIPT: &str = concat!(
    tat_of_lua!(),
    r"
local count = tonumber(ARGV[1])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local new_tats = {}
local refusing, longest_wait = 0, 0
for i = 1, count do
  local emission = tonumber(ARGV[3 * i - 1])
  local window = tonumber(ARGV[3 * i])
  local tat = tat_of(KEYS[i], now)
  local new_tat = tat + emission
  local wait = new_tat - now - window
  if wait > longest_wait then refusing, longest_wait = i, wait end
  new_tats[i] = new_tat
end
if refusing > 0 then return {0, longest_wait, refusing, 0} end
local stored = 0
if #KEYS > count then
  local set = redis.call('SET', KEYS[count + 1], ARGV[2 + 3 * count], 'NX', 'PX', ARGV[3 + 3 * count])
  if not set then return {1, 0, 0, 0} end
  stored = 1
end
local exhausted, next_wait = 0, 0
for i = 1, count do
  if ARGV[3 * i + 1] == '1' then
    local ttl_ms = math.ceil((new_tats[i] - now) / 1000)
    redis.call('SET', KEYS[i], string.format('%.0f', new_tats[i]), 'PX', string.format('%.0f', ttl_ms))
    local wait = new_tats[i] + tonumber(ARGV[3 * i - 1]) - now - tonumber(ARGV[3 * i])
    if wait > next_wait then exhausted, next_wait = i, wait end
  end
end
return {1, next_wait, exhausted, stored}
"
);

static GCRA: LazyLock<Script> = LazyLock::new(|| Script::new(GCRA_SCRIPT));

/// What one limit decision came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Every scope allows the call (and, when consuming, counted it).
    Allowed,
    /// A scope refuses it.
    Limited(Refusal),
}

impl Decision {
    /// Whether the call may go on.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allowed)
    }
}

/// Which scope refused a call, and when it would be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The refusing scope (the one with the longest wait when several do).
    pub scope: Scope,
    /// How long until the same call would be allowed.
    pub retry_after: Duration,
}

/// A value to store only when every limit allows the call.
#[derive(Debug, Clone, Copy)]
pub struct SetIfAllowed<'a> {
    /// The key. In a Redis Cluster it must carry the limits' hash tag
    /// ([`super::LimitKey::hash_tag`]).
    pub key: &'a str,
    /// The value.
    pub value: &'a [u8],
    /// When Redis forgets it (rounded up to whole milliseconds, at least one).
    pub ttl: Duration,
}

/// What [`super::RateLimiter::check_and_set`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOutcome {
    /// The limits allowed the call, consumed it, and the value is stored.
    Stored,
    /// The limits allow the call but the key already exists: nothing was
    /// stored and nothing consumed (a mint draws a fresh code and retries).
    Taken,
    /// A limit refused the call: nothing was stored and nothing consumed.
    Limited(Refusal),
}

/// The script's reply, before it is matched to the limits.
struct Reply {
    allowed: bool,
    wait_micros: i64,
    refusing: usize,
    stored: bool,
}

/// What the script decided for one call.
#[derive(Debug, Clone)]
pub(super) struct Outcome {
    /// Allowed or refused.
    pub decision: Decision,
    /// The key of the limit that refused the call.
    pub refused_by: Option<LimitKey>,
    /// Whether the value to set was stored.
    pub stored: bool,
    /// For an allowed call that used up a consumed limit: that limit's
    /// key, and the refusal the next call would meet now.
    pub exhausted: Option<(LimitKey, Refusal)>,
}

/// Runs the script over `redis`: the call counts against `consumed` and is
/// refused if one more call would exceed `peeked` (counted against none of
/// them); `set` is stored only when the call is allowed.
pub(super) async fn run<C>(
    redis: &mut C,
    key_prefix: &str,
    consumed: &[Limit],
    peeked: &[Limit],
    set: Option<&SetIfAllowed<'_>>,
) -> redis::RedisResult<Outcome>
where
    C: redis::aio::ConnectionLike,
{
    let mut invocation = GCRA.prepare_invoke();
    invocation.arg(consumed.len() + peeked.len());
    let flagged = consumed
        .iter()
        .map(|limit| (limit, 1u8))
        .chain(peeked.iter().map(|limit| (limit, 0u8)));
    for (limit, consume) in flagged {
        invocation
            .key(limit.key.redis_key(key_prefix))
            .arg(micros(limit.rate.emission_interval()))
            .arg(micros(limit.rate.burst_window()))
            .arg(consume);
    }
    if let Some(set) = set {
        invocation
            .key(set.key)
            .arg(set.value)
            .arg(ttl_millis(set.ttl));
    }
    let (allowed, wait_micros, refusing, stored): (i64, i64, i64, i64) =
        invocation.invoke_async(redis).await?;
    let reply = Reply {
        allowed: allowed == 1,
        wait_micros,
        refusing: usize::try_from(refusing).unwrap_or(0),
        stored: stored == 1,
    };
    let refusing = reply
        .refusing
        .checked_sub(1)
        .and_then(|index| consumed.iter().chain(peeked).nth(index));
    let exhausted = match (reply.allowed, refusing) {
        (true, Some(limit)) if reply.wait_micros > 0 => {
            Some((limit.key.clone(), refusal(limit, reply.wait_micros)))
        }
        _ => None,
    };
    Ok(Outcome {
        decision: decision(&reply, refusing),
        refused_by: refusing
            .filter(|_| !reply.allowed)
            .map(|limit| limit.key.clone()),
        stored: reply.stored,
        exhausted,
    })
}

fn refusal(limit: &Limit, wait_micros: i64) -> Refusal {
    Refusal {
        scope: limit.key.scope(),
        retry_after: Duration::from_micros(u64::try_from(wait_micros).unwrap_or(0)),
    }
}

fn decision(reply: &Reply, refusing: Option<&Limit>) -> Decision {
    if reply.allowed {
        return Decision::Allowed;
    }
    let Some(limit) = refusing else {
        debug_assert!(false, "the script refused without naming a limit");
        return Decision::Allowed;
    };
    Decision::Limited(refusal(limit, reply.wait_micros))
}

/// Stores `set` with a plain `SET NX PX`, no limit involved: the write of a
/// call whose limits were decided in memory. Whether it was stored.
pub(super) async fn set_nx<C>(redis: &mut C, set: &SetIfAllowed<'_>) -> redis::RedisResult<bool>
where
    C: redis::aio::ConnectionLike,
{
    let reply = redis
        .req_packed_command(&set_nx_command(set.key, set.value, set.ttl))
        .await?;
    was_set(Some(reply))
}

/// `SET key value NX PX ttl`, its buffer sized once: built on every mint,
/// a command grown an argument at a time reallocated several times.
fn set_nx_command(key: &str, value: &[u8], ttl: Duration) -> redis::Cmd {
    // Each argument's length prefix and separators, generously.
    const FRAMING: usize = 16;
    let mut command = redis::Cmd::with_capacity(6, key.len() + value.len() + 6 * FRAMING);
    command
        .arg("SET")
        .arg(key)
        .arg(value)
        .arg("NX")
        .arg("PX")
        .arg(ttl_millis(ttl));
    command
}

/// Creates, in one pipeline, the key of each subject of `fresh` that has
/// none, as the GCRA script would leave it after the subject's `calls`
/// (a TAT that many emission intervals ahead, here the key's expiry:
/// [`TAT_AT_EXPIRY`]); a subject that has a key is left alone. Per subject,
/// whether it was created. A single server's only: a cluster's pipeline
/// must not cross slots, and its subjects are counted by the scripts.
pub(super) async fn create_subjects<C>(
    redis: &mut C,
    key_prefix: &str,
    fresh: &[(&LimitKey, Rate, u32)],
) -> redis::RedisResult<Vec<bool>>
where
    C: redis::aio::ConnectionLike,
{
    let mut pipeline = redis::Pipeline::with_capacity(fresh.len());
    for (key, rate, calls) in fresh {
        pipeline.add_command(set_nx_command(
            &key.redis_key(key_prefix),
            TAT_AT_EXPIRY.as_bytes(),
            rate.emission_interval().saturating_mul(*calls),
        ));
    }
    let replies: Vec<redis::Value> = pipeline.query_async(redis).await?;
    if replies.len() != fresh.len() {
        return Err(std::io::Error::other(
            "Redis answered a pipeline with the wrong number of replies",
        )
        .into());
    }
    replies
        .into_iter()
        .map(|reply| was_set(Some(reply)))
        .collect()
}

/// Whether a `SET .. NX` reply says it stored: `OK`, or nil when the key
/// was there (read without making a string of the `OK`).
fn was_set(reply: Option<redis::Value>) -> redis::RedisResult<bool> {
    match reply.unwrap_or(redis::Value::Nil) {
        redis::Value::Nil => Ok(false),
        redis::Value::Okay => Ok(true),
        redis::Value::ServerError(error) => Err(error.into()),
        other => {
            let reply: Option<String> = redis::from_redis_value(other)?;
            Ok(reply.is_some())
        }
    }
}

/// Whether one of `blockers` refuses a call now, read from their keys'
/// time to live alone (`PTTL`, one plain command each): the GCRA script
/// expires a key exactly when its TAT passes, so the TTL is how far the TAT
/// runs ahead of now, and a call is refused when that exceeds the burst
/// window less one emission interval.
pub(super) async fn blocked<C>(
    redis: &mut C,
    key_prefix: &str,
    blockers: &[Limit],
) -> redis::RedisResult<Option<Refusal>>
where
    C: redis::aio::ConnectionLike,
{
    let mut longest: Option<Refusal> = None;
    for limit in blockers {
        let ttl_ms: i64 = redis::cmd("PTTL")
            .arg(limit.key.redis_key(key_prefix))
            .query_async(redis)
            .await?;
        if let Some(refusal) = blocked_by(limit, ttl_ms)
            && longest.is_none_or(|worst| refusal.retry_after > worst.retry_after)
        {
            longest = Some(refusal);
        }
    }
    Ok(longest)
}

/// The time to live of each of `limits`' keys (`PTTL`: negative when the
/// key is gone), in one pipeline.
pub(super) async fn ttls<C>(
    redis: &mut C,
    key_prefix: &str,
    limits: &[Limit],
) -> redis::RedisResult<Vec<i64>>
where
    C: redis::aio::ConnectionLike,
{
    let mut pipeline = redis::Pipeline::with_capacity(limits.len());
    for limit in limits {
        pipeline.cmd("PTTL").arg(limit.key.redis_key(key_prefix));
    }
    pipeline.query_async(redis).await
}

/// The refusal of `limit` whose key has `ttl_ms` left (`PTTL`: negative
/// when the key is gone), if one more call would exceed it.
pub(super) fn blocked_by(limit: &Limit, ttl_ms: i64) -> Option<Refusal> {
    let ahead = Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(0));
    let allowed_ahead = limit
        .rate
        .burst_window()
        .saturating_sub(limit.rate.emission_interval());
    let wait = ahead.saturating_sub(allowed_ahead);
    (!wait.is_zero()).then(|| Refusal {
        scope: limit.key.scope(),
        retry_after: wait,
    })
}

fn ttl_millis(ttl: Duration) -> u64 {
    ttl.as_micros().div_ceil(1000).max(1) as u64
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}
