//! Limits decided in memory first (`RateLimiter::check_in_memory_first`,
//! and `set_in_memory_first` for a write), against a real Redis: calls far
//! below their limit cost no round trip of their own and are still counted
//! in Redis behind them; near the limit Redis decides; a refusal found by
//! another replica, or an address it blocked, reaches this one within a
//! flush.

mod support;

use std::time::Duration;

use devicelink_shared::limits::write_behind::{FLUSH_INTERVAL, SUBJECTS_PER_SCRIPT};
use devicelink_shared::limits::{Decision, RateLimiter, Scope, SetIfAllowed, SetOutcome};
use devicelink_shared::limits::{Limit, LimitKey};
use devicelink_shared::validate::{AppId, ExternalId};
use support::{
    CountingConnection, keys_under, limiter, parse, per_address, per_token, unique_prefix,
};

/// Long enough for the queued calls to be counted in Redis.
const AFTER_A_FLUSH: Duration = Duration::from_millis(FLUSH_INTERVAL.as_millis() as u64 * 3);

#[tokio::test]
async fn calls_far_below_their_limit_cost_no_round_trip_and_are_counted_behind() {
    let prefix = unique_prefix();
    let redis = CountingConnection::new();
    let replica = RateLimiter::new(redis.clone(), prefix.clone());
    let token = per_token("polling-device", "60/min,burst=20");
    for _ in 0..10 {
        let decision = replica
            .check_in_memory_first(std::slice::from_ref(&token), &[])
            .await;
        assert!(decision.is_allowed());
    }
    assert_eq!(redis.count(), 0, "a call asked Redis");

    // The ten calls reach Redis: another replica deciding exactly finds
    // ten of the twenty spent (give or take the one the rate refilled
    // meanwhile).
    tokio::time::sleep(AFTER_A_FLUSH).await;
    assert!(redis.count() >= 1, "nothing was counted in Redis");
    let other = limiter(&prefix);
    let mut allowed = 0;
    while other.check(std::slice::from_ref(&token)).await.is_allowed() {
        allowed += 1;
        assert!(allowed < 20, "the calls made in memory were never counted");
    }
    assert!((10..=11).contains(&allowed), "{allowed} allowed");
}

#[tokio::test]
async fn an_app_with_many_subjects_is_counted_in_short_scripts_not_one_long_one() {
    // Every external id of an app shares the app's hash tag. Counted in one
    // script, a busy app's thousands of subjects would hold Redis (and
    // every mint behind them) for tens of milliseconds.
    let prefix = unique_prefix();
    let redis = CountingConnection::new();
    let replica = RateLimiter::new(redis.clone(), prefix.clone());
    let app = AppId(uuid::Uuid::new_v4());
    let subjects = 1000;
    for n in 0..subjects {
        let external_id = ExternalId::parse("external_id", &format!("user-{n}")).expect("valid");
        let limit = Limit::new(
            LimitKey::mint_per_external_id(app, &external_id),
            parse("10/min,burst=5"),
        )
        .expect("not off");
        let decision = replica
            .check_in_memory_first(std::slice::from_ref(&limit), &[])
            .await;
        assert!(decision.is_allowed());
    }
    assert_eq!(redis.count(), 0, "a call asked Redis");

    tokio::time::sleep(AFTER_A_FLUSH).await;
    assert_eq!(
        keys_under(&prefix).await.len(),
        subjects,
        "every subject was counted"
    );
    let scripts = redis.count();
    assert!(
        scripts >= subjects.div_ceil(SUBJECTS_PER_SCRIPT),
        "{subjects} subjects of one app counted in {scripts} script calls"
    );
}

#[tokio::test]
async fn near_its_limit_a_subject_is_decided_in_redis_then_refused_from_memory() {
    let redis = CountingConnection::new();
    let replica = RateLimiter::new(redis.clone(), unique_prefix());
    let token = per_token("busy-device", "6/min,burst=4");
    let token = std::slice::from_ref(&token);
    // Half the burst in memory, the rest in Redis.
    for _ in 0..2 {
        assert!(replica.check_in_memory_first(token, &[]).await.is_allowed());
    }
    assert_eq!(redis.count(), 0);
    for _ in 0..2 {
        assert!(replica.check_in_memory_first(token, &[]).await.is_allowed());
    }
    let Decision::Limited(refusal) = replica.check_in_memory_first(token, &[]).await else {
        panic!("the fifth call within the burst window was allowed");
    };
    assert_eq!(refusal.scope, Scope::InstallPerToken);
    let round_trips = redis.count();
    assert!(
        round_trips >= 2,
        "the calls near the limit were not decided in Redis"
    );
    // Refused from memory now, until the retry time.
    for _ in 0..50 {
        assert!(!replica.check_in_memory_first(token, &[]).await.is_allowed());
    }
    assert_eq!(redis.count(), round_trips);
}

#[tokio::test]
async fn a_limit_spent_on_another_replica_is_refused_here_within_a_flush() {
    let prefix = unique_prefix();
    let token = per_token("shared-device", "6/min,burst=4");
    let token = std::slice::from_ref(&token);
    let elsewhere = limiter(&prefix);
    for _ in 0..4 {
        assert!(elsewhere.check(token).await.is_allowed());
    }
    assert!(!elsewhere.check(token).await.is_allowed());

    // This replica has seen nothing of the token: its first call is
    // allowed in memory (the bounded overshoot), and counted behind it.
    let redis = CountingConnection::new();
    let here = RateLimiter::new(redis.clone(), prefix);
    assert!(here.check_in_memory_first(token, &[]).await.is_allowed());
    tokio::time::sleep(AFTER_A_FLUSH).await;
    let round_trips = redis.count();
    assert!(
        !here.check_in_memory_first(token, &[]).await.is_allowed(),
        "the flush did not carry the refusal back"
    );
    assert_eq!(redis.count(), round_trips, "refused from memory");
}

#[tokio::test]
async fn without_redis_the_replica_still_limits_on_its_own() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port");
    let unreachable =
        devicelink_shared::stores::RedisConnection::new(&format!("redis://{closed}/0"))
            .expect("a valid URL");
    let replica = RateLimiter::new(unreachable, unique_prefix())
        .with_store_timeout(Duration::from_millis(200));
    let token = per_token("offline-device", "6/min,burst=4");
    let token = std::slice::from_ref(&token);
    for _ in 0..4 {
        assert!(replica.check_in_memory_first(token, &[]).await.is_allowed());
    }
    assert!(!replica.check_in_memory_first(token, &[]).await.is_allowed());
}

#[tokio::test]
async fn a_write_far_below_its_limits_is_its_own_set_and_its_new_subjects_follow() {
    let prefix = unique_prefix();
    let redis = CountingConnection::new();
    let replica = RateLimiter::new(redis.clone(), prefix.clone());
    let per_key = per_token("api-key", "10/min,burst=200");
    let per_user = per_token("external-id", "6/min,burst=2");
    let limits = [per_key, per_user];
    let write = |n: usize| format!("{prefix}authcode:{n}");
    let set = |key: String| store(&replica, &limits, &[], key);

    // Far below both limits, both subjects new: the write alone, one
    // command; the subjects' keys within a flush.
    assert_eq!(set(write(1)).await, SetOutcome::Stored);
    assert_eq!(redis.count(), 1, "the write is one command");
    assert_eq!(keys_under(&prefix).await, [write(1)]);
    tokio::time::sleep(AFTER_A_FLUSH).await;
    assert_eq!(
        keys_under(&prefix).await.len(),
        3,
        "the subjects were never created"
    );

    // Near the external id's limit the script decides; past it, refused.
    assert_eq!(set(write(2)).await, SetOutcome::Stored);
    assert!(matches!(set(write(3)).await, SetOutcome::Limited(_)));
    let mut written = keys_under(&prefix).await;
    written.retain(|key| key.contains(":authcode:"));
    written.sort();
    assert_eq!(
        written,
        [write(1), write(2)],
        "a refused write stores nothing"
    );
}

#[tokio::test]
async fn an_address_blocked_on_another_replica_is_refused_here_within_a_flush() {
    let prefix = unique_prefix();
    let address = per_address("203.0.113.7", "3/h,burst=2");
    let user = per_token("external-id", "60/min,burst=20");
    let write = |n: usize| format!("{prefix}authcode:{n}");

    // Another replica counts the address's failed credentials past its
    // burst.
    let elsewhere = limiter(&prefix);
    for _ in 0..2 {
        assert!(
            elsewhere
                .record(std::slice::from_ref(&address))
                .await
                .is_allowed()
        );
    }
    assert!(
        !elsewhere
            .record(std::slice::from_ref(&address))
            .await
            .is_allowed()
    );

    // This replica has not heard yet: a mint far below its own limits
    // goes on, and the address is watched.
    let here = limiter(&prefix);
    let limits = std::slice::from_ref(&user);
    let blockers = std::slice::from_ref(&address);
    assert_eq!(
        store(&here, limits, blockers, write(1)).await,
        SetOutcome::Stored
    );
    tokio::time::sleep(AFTER_A_FLUSH).await;
    let SetOutcome::Limited(refusal) = store(&here, limits, blockers, write(2)).await else {
        panic!("the flush did not find the address blocked");
    };
    assert_eq!(refusal.scope, Scope::FailedAuthPerAddress);
    assert!(
        !keys_under(&prefix).await.contains(&write(2)),
        "a refused write stored its code"
    );
}

#[tokio::test]
async fn subjects_created_with_a_write_count_for_the_scripts_that_follow() {
    let prefix = unique_prefix();
    let replica = limiter(&prefix);
    // An emission interval of a second and a burst of 20.
    let once = per_token("minted-once", "60/min,burst=20");
    let thrice = per_token("minted-thrice", "60/min,burst=20");
    let write = |n: usize| format!("{prefix}authcode:{n}");
    // `once`: created by the write. `thrice`: created by the first, the
    // other two counted behind on top of it.
    assert_eq!(
        store(&replica, std::slice::from_ref(&once), &[], write(0)).await,
        SetOutcome::Stored
    );
    for n in 1..=3 {
        assert_eq!(
            store(&replica, std::slice::from_ref(&thrice), &[], write(n)).await,
            SetOutcome::Stored
        );
    }
    tokio::time::sleep(AFTER_A_FLUSH).await;
    // Another replica deciding in Redis finds the calls spent: 20 less
    // one (19) and 20 less three (17), with less than a second refilled.
    // Read as fresh, the created keys would give 20 and 18.
    let other = limiter(&prefix);
    for (subject, left) in [(&once, 19), (&thrice, 17)] {
        let mut allowed = 0;
        while other
            .check(std::slice::from_ref(subject))
            .await
            .is_allowed()
        {
            allowed += 1;
            assert!(allowed <= 20, "the calls were never counted");
        }
        assert_eq!(allowed, left, "calls left to {subject:?}");
    }
}

/// Writes `key` through `replica` within `limits`.
async fn store<C>(
    replica: &RateLimiter<C>,
    limits: &[Limit],
    blockers: &[Limit],
    key: String,
) -> SetOutcome
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    let set = SetIfAllowed {
        key: &key,
        value: b"record",
        ttl: Duration::from_secs(60),
    };
    replica
        .set_in_memory_first(limits, blockers, &set)
        .await
        .expect("Redis answers")
}
