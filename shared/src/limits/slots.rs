//! Decisions whose keys lie in several hash slots of a Redis Cluster.
//!
//! A cluster runs a script only when every key it touches hashes to one
//! slot. The keys of one app (its mint and redeem limits, its codes) share
//! the app's hash tag, so a mint stays one script; but a call's blocker,
//! the client address's failed credentials, is deployment-wide and lies in
//! the address's own slot. So against a cluster the limiter runs one script
//! per slot, concurrently (the call waits for the slowest, not for their
//! sum: no round trip is added), and combines the answers: refused when any
//! refuses, with the longest wait.
//!
//! What is given up: all-or-nothing across slots. A call refused by its
//! blocker alone still counts against its own limits (it was made), and a
//! mint refused that way may have stored its code, which is never handed
//! out and expires with its TTL. Within one slot, and so for every limit of
//! one app, the decision stays atomic. Against a single server nothing here
//! runs: every decision is one script, as before.
//!
//! A stored code is also waited for on a replica ([`run`]), so that a
//! failover does not lose a code already handed out.

use std::time::Duration;

use redis::RedisResult;
use redis::cluster_routing::Slot;

use super::keys::Limit;
use super::script::{self, Decision, Outcome, SetIfAllowed};

/// The limits and the write of one slot.
struct SlotGroup<'a> {
    slot: Slot,
    consumed: Vec<Limit>,
    peeked: Vec<Limit>,
    set: Option<&'a SetIfAllowed<'a>>,
}

/// How long a mint waits for the replica of its code's master to
/// acknowledge the code (`WAIT 1`) before answering without it.
pub const REPLICA_ACK_TIMEOUT: Duration = Duration::from_millis(50);

/// [`script::run`], one script per slot the keys lie in; a value stored is
/// then waited for on a replica.
///
/// Redis replicates asynchronously: a master that crashes right after
/// acknowledging a write may take it with it, and a code handed out would
/// then be lost in the failover. So once a code is stored, the mint asks
/// its master to `WAIT` until one replica holds it (at most
/// [`REPLICA_ACK_TIMEOUT`]; with no replica answering, the code is handed
/// out all the same, as the cluster itself goes on without its replica).
/// It costs the mint a second round trip, against a cluster only.
pub(super) async fn run<C>(
    redis: &C,
    key_prefix: &str,
    consumed: &[Limit],
    peeked: &[Limit],
    set: Option<&SetIfAllowed<'_>>,
) -> RedisResult<Outcome>
where
    C: redis::aio::ConnectionLike + Clone + Send,
{
    let outcome = run_per_slot(redis, key_prefix, consumed, peeked, set).await?;
    if let (true, Some(set)) = (outcome.stored, set) {
        wait_for_replica(redis, set.key).await?;
    }
    Ok(outcome)
}

/// `WAIT 1` on the master holding `key`: the pipeline goes where its first
/// keyed command (`EXISTS key`) goes. A server that refuses `WAIT` (an ACL
/// without it, a managed Redis without it) is logged and not waited for;
/// a connection that fails fails the mint, whose code is then never handed
/// out.
pub(super) async fn wait_for_replica<C>(redis: &C, key: &str) -> RedisResult<()>
where
    C: redis::aio::ConnectionLike + Clone + Send,
{
    let timeout_ms = u64::try_from(REPLICA_ACK_TIMEOUT.as_millis()).unwrap_or(u64::MAX);
    let reply: RedisResult<(i64, i64)> = redis::pipe()
        .cmd("EXISTS")
        .arg(key)
        .cmd("WAIT")
        .arg(1)
        .arg(timeout_ms)
        .query_async(&mut redis.clone())
        .await;
    match reply {
        Ok((_, 0)) => {
            tracing::debug!("no replica acknowledged a minted code in time; handing it out");
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(error) if error.is_io_error() || error.is_timeout() => Err(error),
        Err(error) => {
            tracing::warn!(%error, "WAIT refused: minted codes are not waited for on a replica");
            Ok(())
        }
    }
}

/// [`script::run`], one script per slot the keys lie in.
async fn run_per_slot<C>(
    redis: &C,
    key_prefix: &str,
    consumed: &[Limit],
    peeked: &[Limit],
    set: Option<&SetIfAllowed<'_>>,
) -> RedisResult<Outcome>
where
    C: redis::aio::ConnectionLike + Clone + Send,
{
    let groups = by_slot(key_prefix, consumed, peeked, set);
    if groups.len() <= 1 {
        return script::run(&mut redis.clone(), key_prefix, consumed, peeked, set).await;
    }
    let runs = groups.iter().map(|group| {
        let mut redis = redis.clone();
        async move {
            script::run(
                &mut redis,
                key_prefix,
                &group.consumed,
                &group.peeked,
                group.set,
            )
            .await
        }
    });
    let mut combined = Outcome {
        decision: Decision::Allowed,
        refused_by: None,
        stored: false,
        exhausted: None,
    };
    for reply in futures_util::future::join_all(runs).await {
        let outcome = reply?;
        combined.stored |= outcome.stored;
        let decision = longest_refusal(combined.decision, outcome.decision);
        if decision != combined.decision {
            combined.refused_by = outcome.refused_by;
        }
        combined.decision = decision;
        combined.exhausted = combined.exhausted.or(outcome.exhausted);
    }
    Ok(combined)
}

fn by_slot<'a>(
    key_prefix: &str,
    consumed: &[Limit],
    peeked: &[Limit],
    set: Option<&'a SetIfAllowed<'a>>,
) -> Vec<SlotGroup<'a>> {
    let mut groups: Vec<SlotGroup<'a>> = Vec::new();
    let mut group_of = |slot: Slot| -> usize {
        if let Some(index) = groups.iter().position(|group| group.slot == slot) {
            return index;
        }
        groups.push(SlotGroup {
            slot,
            consumed: Vec::new(),
            peeked: Vec::new(),
            set: None,
        });
        groups.len() - 1
    };
    let mut placed = Vec::new();
    for (limit, consume) in consumed
        .iter()
        .map(|limit| (limit, true))
        .chain(peeked.iter().map(|limit| (limit, false)))
    {
        let index = group_of(Slot::for_key(limit.key.redis_key(key_prefix)));
        placed.push((index, limit.clone(), consume));
    }
    let set_index = set.map(|set| group_of(Slot::for_key(set.key)));
    for (index, limit, consume) in placed {
        let group = &mut groups[index];
        if consume {
            group.consumed.push(limit);
        } else {
            group.peeked.push(limit);
        }
    }
    if let (Some(index), Some(set)) = (set_index, set) {
        groups[index].set = Some(set);
    }
    groups
}

fn longest_refusal(current: Decision, next: Decision) -> Decision {
    match (current, next) {
        (Decision::Limited(held), Decision::Limited(new)) if new.retry_after > held.retry_after => {
            next
        }
        (Decision::Allowed, _) => next,
        _ => current,
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::limits::{LimitKey, Rate};
    use crate::validate::{AppId, ExternalId};

    #[test]
    fn an_app_keys_share_one_group_and_the_address_gets_its_own() {
        let rate = Rate::parse_setting("1/s").expect("parses");
        let app = AppId(uuid::Uuid::from_u128(3));
        let external = ExternalId::parse("external_id", "u").expect("valid");
        let consumed: Vec<Limit> = [
            Limit::new(LimitKey::mint_per_external_id(app, &external), rate),
            Limit::new(LimitKey::redeem_per_device(app, "d"), rate),
        ]
        .into_iter()
        .flatten()
        .collect();
        let address: IpAddr = "192.0.2.1".parse().expect("ip");
        let peeked: Vec<Limit> = Limit::new(LimitKey::failed_auth_per_address(address), rate)
            .into_iter()
            .collect();
        let code_key = format!("p:authcode:{}:abc", crate::limits::app_hash_tag(app));
        let set = SetIfAllowed {
            key: &code_key,
            value: b"v",
            ttl: std::time::Duration::from_secs(1),
        };
        let groups = by_slot("p:", &consumed, &peeked, Some(&set));
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].consumed.len(), 2);
        assert!(
            groups[0].set.is_some(),
            "the code goes with its app's limits"
        );
        assert_eq!(groups[1].peeked.len(), 1);
        assert!(groups[1].set.is_none());
    }
}
