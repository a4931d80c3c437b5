//! The GCRA limiter against a real Redis: bursts, refusals and recovery,
//! limits shared between replicas, several scopes at once, and keys that
//! hide their subjects.

mod support;

use std::time::Duration;

use devicelink_shared::limits::{Decision, Limit, LimitKey, Refusal, Scope};
use devicelink_shared::validate::{AppId, ExternalId};
use support::{keys_under, limiter, parse, per_address, per_token, unique_prefix};

fn refusal(decision: Decision) -> Refusal {
    match decision {
        Decision::Limited(refusal) => refusal,
        Decision::Allowed => panic!("the call should have been refused"),
    }
}

#[tokio::test]
async fn a_burst_is_allowed_then_refused_until_the_delay_has_passed() {
    let limiter = limiter(&unique_prefix());
    // 10/s: one call per 100 ms, three at once.
    let limit = per_token("token-a", "10/s,burst=3");
    for call in 0..3 {
        assert!(
            limiter
                .check(std::slice::from_ref(&limit))
                .await
                .is_allowed(),
            "call {call} of the burst"
        );
    }
    let refused = refusal(limiter.check(std::slice::from_ref(&limit)).await);
    assert_eq!(refused.scope, Scope::InstallPerToken);
    assert!(refused.retry_after > Duration::ZERO);
    assert!(
        refused.retry_after <= Duration::from_millis(100),
        "{refused:?}"
    );
    // A refused call consumed nothing: waiting the delay is enough.
    tokio::time::sleep(refused.retry_after + Duration::from_millis(20)).await;
    assert!(
        limiter
            .check(std::slice::from_ref(&limit))
            .await
            .is_allowed()
    );
    assert!(!limiter.check(&[limit]).await.is_allowed());
}

#[tokio::test]
async fn the_retry_delay_follows_the_rate() {
    let limiter = limiter(&unique_prefix());
    let limit = per_token("token-b", "60/min,burst=2");
    assert!(
        limiter
            .check(std::slice::from_ref(&limit))
            .await
            .is_allowed()
    );
    assert!(
        limiter
            .check(std::slice::from_ref(&limit))
            .await
            .is_allowed()
    );
    let refused = refusal(limiter.check(&[limit]).await);
    assert!(
        refused.retry_after > Duration::from_millis(900),
        "{refused:?}"
    );
    assert!(refused.retry_after <= Duration::from_secs(1), "{refused:?}");
}

#[tokio::test]
async fn two_replicas_sharing_redis_share_the_limit() {
    let prefix = unique_prefix();
    let (first, second) = (limiter(&prefix), limiter(&prefix));
    let limit = per_token("shared", "1/h,burst=4");
    for replica in [&first, &second, &first, &second] {
        assert!(
            replica
                .check(std::slice::from_ref(&limit))
                .await
                .is_allowed()
        );
    }
    assert!(!first.check(std::slice::from_ref(&limit)).await.is_allowed());
    assert!(!second.check(&[limit]).await.is_allowed());
}

#[tokio::test]
async fn concurrent_calls_never_exceed_the_burst() {
    let prefix = unique_prefix();
    let limit = per_token("hot", "1/h,burst=10");
    // Fifty concurrent calls, each through a replica of its own.
    let calls = (0..50).map(|_| {
        let replica = limiter(&prefix);
        let limit = limit.clone();
        tokio::spawn(async move { replica.check(&[limit]).await.is_allowed() })
    });
    let mut allowed = 0;
    for call in calls.collect::<Vec<_>>() {
        allowed += usize::from(call.await.expect("the call ran"));
    }
    assert_eq!(allowed, 10);
}

#[tokio::test]
async fn a_refusal_by_one_scope_consumes_none_of_the_others() {
    let limiter = limiter(&unique_prefix());
    let tight = per_token("tight", "1/h,burst=1");
    let app = AppId(uuid::Uuid::new_v4());
    let external_id = ExternalId::parse("external_id", "user-1").expect("valid");
    let loose = Limit::new(
        LimitKey::mint_per_external_id(app, &external_id),
        parse("2/h,burst=2"),
    )
    .expect("not off");
    assert!(
        limiter
            .check(&[tight.clone(), loose.clone()])
            .await
            .is_allowed()
    );
    for _ in 0..3 {
        let refused = refusal(limiter.check(&[loose.clone(), tight.clone()]).await);
        assert_eq!(refused.scope, Scope::InstallPerToken);
        assert!(
            refused.retry_after > Duration::from_secs(3000),
            "{refused:?}"
        );
    }
    // The refused calls left `loose` at one call of its two.
    assert!(
        limiter
            .check(std::slice::from_ref(&loose))
            .await
            .is_allowed()
    );
    let refused = refusal(limiter.check(&[loose]).await);
    assert_eq!(refused.scope, Scope::MintPerExternalId);
}

#[tokio::test]
async fn each_subject_has_its_own_limit() {
    let prefix = unique_prefix();
    let limiter = support::limiter(&prefix);
    let app = AppId(uuid::Uuid::new_v4());
    let device = |id: &str| {
        Limit::new(LimitKey::redeem_per_device(app, id), parse("1/h,burst=1")).expect("not off")
    };
    assert!(limiter.check(&[device("device-1")]).await.is_allowed());
    assert!(!limiter.check(&[device("device-1")]).await.is_allowed());
    assert!(limiter.check(&[device("device-2")]).await.is_allowed());
    let other_app = Limit::new(
        LimitKey::redeem_per_device(AppId(uuid::Uuid::new_v4()), "device-1"),
        parse("1/h,burst=1"),
    )
    .expect("not off");
    assert!(limiter.check(&[other_app]).await.is_allowed());
    // Another deployment (prefix) sharing this Redis is not affected.
    let elsewhere = support::limiter(&unique_prefix());
    assert!(elsewhere.check(&[device("device-1")]).await.is_allowed());
}

#[tokio::test]
async fn failures_are_recorded_and_peeking_consumes_nothing() {
    let limiter = limiter(&unique_prefix());
    let from = |address: &str| per_address(address, "30/min,burst=3");
    let address = from("198.51.100.7");
    for _ in 0..10 {
        assert!(
            limiter
                .peek(std::slice::from_ref(&address))
                .await
                .is_allowed()
        );
    }
    for _ in 0..3 {
        assert!(
            limiter
                .record(std::slice::from_ref(&address))
                .await
                .is_allowed()
        );
    }
    let blocked = refusal(limiter.peek(std::slice::from_ref(&address)).await);
    assert_eq!(blocked.scope, Scope::FailedAuthPerAddress);
    assert!(blocked.retry_after <= Duration::from_secs(2), "{blocked:?}");
    assert!(limiter.peek(&[from("198.51.100.8")]).await.is_allowed());
    // One emission interval (2 s at 30/min) later, one more failure is let through.
    tokio::time::sleep(blocked.retry_after + Duration::from_millis(20)).await;
    assert!(
        limiter
            .peek(std::slice::from_ref(&address))
            .await
            .is_allowed()
    );
    assert!(
        limiter
            .record(std::slice::from_ref(&address))
            .await
            .is_allowed()
    );
    assert!(!limiter.peek(&[address]).await.is_allowed());
}

#[tokio::test]
async fn keys_are_hash_tagged_hide_their_subject_and_expire() {
    let prefix = unique_prefix();
    let limiter = limiter(&prefix);
    let app = AppId(uuid::Uuid::new_v4());
    let external_id = ExternalId::parse("external_id", "alice@example.com").expect("valid");
    let limits = [
        Limit::new(
            LimitKey::mint_per_external_id(app, &external_id),
            parse("10/min,burst=5"),
        )
        .expect("not off"),
        Limit::new(
            LimitKey::redeem_per_device(app, "device-secret-id"),
            parse("10/min"),
        )
        .expect("not off"),
        per_token("install-token-secret", "120/min,burst=20"),
    ];
    assert!(limiter.check(&limits).await.is_allowed());
    let keys = keys_under(&prefix).await;
    assert_eq!(keys.len(), 3, "{keys:?}");
    let mut redis = support::redis();
    for key in &keys {
        let rest = key
            .strip_prefix(&format!("{prefix}rl:{{"))
            .expect("a hash tag");
        let (tag, rest) = rest.split_once("}:").expect("a closed hash tag");
        assert_eq!(tag.len(), 16, "{key}");
        let (_scope, subject) = rest.split_once(':').expect("scope and subject");
        assert_eq!(subject.len(), 32, "{key}");
        assert!(
            tag.chars()
                .chain(subject.chars())
                .all(|c| c.is_ascii_hexdigit()),
            "{key}"
        );
        for secret in [
            "alice",
            "device-secret-id",
            "install-token-secret",
            &app.to_string(),
        ] {
            assert!(!key.contains(secret), "{key} holds {secret}");
        }
        let ttl_ms: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut redis)
            .await
            .expect("PTTL answers");
        // A key lives until its TAT: one emission interval after a first
        // call, 6 s at 10/min at most.
        assert!(ttl_ms > 0 && ttl_ms <= 6_000, "{key}: {ttl_ms} ms");
    }
    // The two scopes of one app share a slot; the token has its own.
    let tag = |key: &LimitKey| key.hash_tag();
    assert_eq!(tag(&limits[0].key), tag(&limits[1].key));
    assert_ne!(tag(&limits[0].key), tag(&limits[2].key));
}

#[tokio::test]
async fn a_state_long_past_counts_as_none() {
    // A key whose TAT has passed (an expiry not yet applied, or a clock
    // step) must not hand out the whole interval since as extra calls.
    let prefix = unique_prefix();
    let limiter = limiter(&prefix);
    let limit = per_token("stale", "1/h,burst=3");
    let mut redis = support::redis();
    let (seconds, _micros): (u64, u64) = redis::cmd("TIME")
        .query_async(&mut redis)
        .await
        .expect("TIME answers");
    let day_ago_micros = (seconds - 86_400) * 1_000_000;
    let () = redis::cmd("SET")
        .arg(limit.key.redis_key(&prefix))
        .arg(day_ago_micros)
        .query_async(&mut redis)
        .await
        .expect("SET answers");
    for _ in 0..3 {
        assert!(
            limiter
                .check(std::slice::from_ref(&limit))
                .await
                .is_allowed()
        );
    }
    assert!(!limiter.check(&[limit]).await.is_allowed());
    assert!(
        limiter.memory().is_empty(),
        "decided in Redis, not the fallback"
    );
}

#[tokio::test]
async fn a_blocked_address_refuses_the_call_in_the_same_round_trip() {
    let limiter = limiter(&unique_prefix());
    let address = per_address("203.0.113.50", "1/h,burst=2");
    let device = per_token("device", "1/h,burst=1");
    // Blockers are looked at, never counted: any number of calls pass.
    for _ in 0..3 {
        let decision = limiter
            .check_unless_blocked(&[], std::slice::from_ref(&address))
            .await;
        assert!(decision.is_allowed());
    }
    for _ in 0..2 {
        assert!(
            limiter
                .record(std::slice::from_ref(&address))
                .await
                .is_allowed()
        );
    }
    let blocked = refusal(
        limiter
            .check_unless_blocked(
                std::slice::from_ref(&device),
                std::slice::from_ref(&address),
            )
            .await,
    );
    assert_eq!(blocked.scope, Scope::FailedAuthPerAddress);
    // The refused call did not spend the device's only call.
    assert!(limiter.check(&[device]).await.is_allowed());
}

#[tokio::test]
async fn a_refused_subject_is_refused_from_memory_until_its_retry_time() {
    let redis = support::CountingConnection::new();
    let limiter = devicelink_shared::limits::RateLimiter::new(redis.clone(), unique_prefix());
    let address = per_address("203.0.113.77", "60/min,burst=2");
    let address = std::slice::from_ref(&address);
    for _ in 0..2 {
        assert!(limiter.record(address).await.is_allowed());
    }
    let first = refusal(limiter.peek(address).await);
    let round_trips = redis.count();

    // A flood from the blocked address: every call refused, none of them
    // asks Redis, and each says how long is left.
    for _ in 0..100 {
        let again = refusal(limiter.peek(address).await);
        assert_eq!(again.scope, Scope::FailedAuthPerAddress);
        assert!(again.retry_after <= first.retry_after);
    }
    assert_eq!(redis.count(), round_trips, "the flood reached Redis");
    // Another subject is still decided in Redis.
    assert!(
        limiter
            .peek(&[per_token("other", "1/min")])
            .await
            .is_allowed()
    );
    assert_eq!(redis.count(), round_trips + 1);

    // Once the retry time has passed, Redis decides again.
    tokio::time::sleep(first.retry_after + Duration::from_millis(20)).await;
    assert!(limiter.peek(address).await.is_allowed());
    assert_eq!(redis.count(), round_trips + 2);
}
