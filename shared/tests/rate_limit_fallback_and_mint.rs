//! A mint's limits and its write in one round trip, and limits that keep
//! working in memory when Redis is down or silent.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use devicelink_shared::limits::{
    Decision, LimitStoreError, REDIS_RETRY_AFTER, RateLimiter, Scope, SetIfAllowed, SetOutcome,
};
use support::{CountingConnection, keys_under, per_token, unique_prefix};

async fn stored_value(key: &str) -> Option<Vec<u8>> {
    let mut redis = support::redis();
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut redis)
        .await
        .expect("GET answers")
}

#[tokio::test]
async fn check_and_set_decides_and_stores_in_one_round_trip() {
    let prefix = unique_prefix();
    let connection = CountingConnection::new();
    let limiter = RateLimiter::new(connection.clone(), prefix.as_str());
    let limits = [
        per_token("api-key", "1/h,burst=2"),
        per_token("external-id", "1/h,burst=5"),
    ];
    let code_key = format!("{prefix}authcode:{}first", limits[0].key.hash_tag());
    let set = SetIfAllowed {
        key: &code_key,
        value: b"record",
        ttl: Duration::from_secs(600),
    };
    // Loads the script into Redis, so that the count below is a warm call's.
    let outcome = limiter
        .check_and_set(&limits, &[], &set)
        .await
        .expect("Redis answers");
    assert_eq!(outcome, SetOutcome::Stored);
    assert_eq!(
        stored_value(&code_key).await.as_deref(),
        Some(&b"record"[..])
    );

    let second_key = format!("{prefix}authcode:second");
    let before = connection.count();
    let outcome = limiter
        .check_and_set(
            &limits,
            &[],
            &SetIfAllowed {
                key: &second_key,
                ..set
            },
        )
        .await
        .expect("Redis answers");
    assert_eq!(outcome, SetOutcome::Stored);
    assert_eq!(
        connection.count() - before,
        1,
        "one request decided and stored"
    );
    let mut redis = support::redis();
    let ttl: i64 = redis::cmd("TTL")
        .arg(&second_key)
        .query_async(&mut redis)
        .await
        .expect("TTL answers");
    assert!((590..=600).contains(&ttl), "{ttl}");

    // The API key's burst of two is spent: refused, and nothing stored.
    let refused_key = format!("{prefix}authcode:refused");
    let outcome = limiter
        .check_and_set(
            &limits,
            &[],
            &SetIfAllowed {
                key: &refused_key,
                ..set
            },
        )
        .await
        .expect("Redis answers");
    let SetOutcome::Limited(refusal) = outcome else {
        panic!("the third mint should be refused, got {outcome:?}");
    };
    assert_eq!(refusal.scope, Scope::InstallPerToken);
    assert!(refusal.retry_after > Duration::from_secs(3000));
    assert_eq!(stored_value(&refused_key).await, None);
    // Nor was the external id's limit consumed by the refused mint: it
    // allowed two of five, so three more (alone) pass and the fourth fails.
    for _ in 0..3 {
        assert!(limiter.check(&limits[1..]).await.is_allowed());
    }
    assert!(!limiter.check(&limits[1..]).await.is_allowed());
}

#[tokio::test]
async fn a_blocked_address_stores_nothing() {
    let prefix = unique_prefix();
    let limiter = support::limiter(&prefix);
    let address = per_token("address", "1/h,burst=1");
    assert!(
        limiter
            .record(std::slice::from_ref(&address))
            .await
            .is_allowed()
    );
    let key = format!("{prefix}authcode:blocked");
    let set = SetIfAllowed {
        key: &key,
        value: b"record",
        ttl: Duration::from_secs(60),
    };
    let limits = [per_token("api-key", "1/h,burst=1")];
    let outcome = limiter
        .check_and_set(&limits, std::slice::from_ref(&address), &set)
        .await
        .expect("Redis answers");
    assert!(matches!(outcome, SetOutcome::Limited(_)), "{outcome:?}");
    assert_eq!(stored_value(&key).await, None);
    // The API key's only call is still there.
    assert!(limiter.check(&limits).await.is_allowed());
}

#[tokio::test]
async fn a_taken_key_stores_nothing_and_consumes_nothing() {
    let prefix = unique_prefix();
    let limiter = support::limiter(&prefix);
    let limits = [per_token("api-key", "1/h,burst=1")];
    let key = format!("{prefix}authcode:taken");
    let mut redis = support::redis();
    let () = redis::cmd("SET")
        .arg(&key)
        .arg("earlier")
        .query_async(&mut redis)
        .await
        .expect("SET answers");
    let set = SetIfAllowed {
        key: &key,
        value: b"later",
        ttl: Duration::from_secs(60),
    };
    let outcome = limiter
        .check_and_set(&limits, &[], &set)
        .await
        .expect("Redis answers");
    assert_eq!(outcome, SetOutcome::Taken);
    assert_eq!(stored_value(&key).await.as_deref(), Some(&b"earlier"[..]));
    // The burst of one is still there for the retry with a fresh code.
    let fresh = format!("{prefix}authcode:fresh");
    let outcome = limiter
        .check_and_set(&limits, &[], &SetIfAllowed { key: &fresh, ..set })
        .await
        .expect("Redis answers");
    assert_eq!(outcome, SetOutcome::Stored);
}

/// A limiter whose Redis is `url`, waiting at most 300 ms for it.
fn limiter_at(url: &str) -> RateLimiter<devicelink_shared::stores::RedisConnection> {
    let redis = devicelink_shared::stores::RedisConnection::new(url).expect("a valid URL");
    RateLimiter::new(redis, unique_prefix()).with_store_timeout(Duration::from_millis(300))
}

#[tokio::test]
async fn limits_fall_back_to_memory_when_redis_is_unreachable() {
    // Nothing listens on port 1.
    let limiter = limiter_at("redis://127.0.0.1:1/0");
    let limit = per_token("token", "1/h,burst=3");
    let started = std::time::Instant::now();
    for _ in 0..3 {
        assert!(
            limiter
                .check(std::slice::from_ref(&limit))
                .await
                .is_allowed()
        );
    }
    let Decision::Limited(refusal) = limiter.check(std::slice::from_ref(&limit)).await else {
        panic!("the memory fallback should refuse the fourth call");
    };
    assert_eq!(refusal.scope, Scope::InstallPerToken);
    assert_eq!(limiter.memory().len(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // Peeking and recording fall back too.
    assert!(
        !limiter
            .peek(std::slice::from_ref(&limit))
            .await
            .is_allowed()
    );
    assert!(
        !limiter
            .record(std::slice::from_ref(&limit))
            .await
            .is_allowed()
    );
    // A mint cannot store its code without Redis: an error, not a guess.
    let set = SetIfAllowed {
        key: "unused",
        value: b"",
        ttl: Duration::from_secs(1),
    };
    let error = limiter
        .check_and_set(&[limit], &[], &set)
        .await
        .expect_err("no Redis");
    assert!(
        matches!(error, LimitStoreError::Redis(_) | LimitStoreError::TimedOut),
        "{error:?}"
    );
}

#[tokio::test]
async fn limits_fall_back_to_memory_when_redis_does_not_answer() {
    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let port = silent.local_addr().expect("an address").port();
    let _accepting = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let limiter = limiter_at(&format!("redis://127.0.0.1:{port}/0"));
    let limit = per_token("token", "1/h,burst=1");
    let started = std::time::Instant::now();
    let first = limiter.check(std::slice::from_ref(&limit)).await;
    assert!(first.is_allowed());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // The first call waited out the timeout; the next go straight to memory
    // while Redis rests.
    let started = std::time::Instant::now();
    let second = limiter.check(std::slice::from_ref(&limit)).await;
    assert!(!second.is_allowed());
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(limiter.memory().len(), 1);
}

/// A TCP door to the test Redis: shut (connections dropped at once) until
/// opened.
async fn door_to_redis() -> (u16, Arc<AtomicBool>) {
    let url = support::redis_url();
    let authority = url
        .split("//")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("redis://host:port/db")
        .to_owned();
    let open = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let port = listener.local_addr().expect("an address").port();
    let is_open = Arc::clone(&open);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            if !is_open.load(Ordering::SeqCst) {
                continue; // dropped: the connection is reset
            }
            let authority = authority.clone();
            tokio::spawn(async move {
                if let Ok(mut redis) = tokio::net::TcpStream::connect(&authority).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut redis).await;
                }
            });
        }
    });
    (port, open)
}

#[tokio::test]
async fn limits_return_to_redis_once_it_answers_again() {
    let (port, open) = door_to_redis().await;
    let prefix = unique_prefix();
    let redis =
        devicelink_shared::stores::RedisConnection::new(&format!("redis://127.0.0.1:{port}/0"))
            .expect("a valid URL");
    let limiter =
        RateLimiter::new(redis, prefix.as_str()).with_store_timeout(Duration::from_millis(300));
    let limit = per_token("token", "1/h,burst=2");
    assert!(
        limiter
            .check(std::slice::from_ref(&limit))
            .await
            .is_allowed()
    );
    assert_eq!(
        limiter.memory().len(),
        1,
        "decided in memory while Redis is away"
    );
    assert!(keys_under(&prefix).await.is_empty());

    open.store(true, Ordering::SeqCst);
    // Redis has its own count again: once the connection is back (the one
    // the door dropped may fail one more call, which memory decides), the
    // call is counted there, not in memory.
    let given_up = std::time::Instant::now() + 3 * REDIS_RETRY_AFTER;
    loop {
        tokio::time::sleep(REDIS_RETRY_AFTER + Duration::from_millis(100)).await;
        assert!(
            limiter
                .check(std::slice::from_ref(&limit))
                .await
                .is_allowed()
        );
        if keys_under(&prefix).await.len() == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < given_up,
            "Redis never decided again once it answered"
        );
    }
    assert!(
        limiter
            .check(std::slice::from_ref(&limit))
            .await
            .is_allowed()
    );
    assert!(!limiter.check(&[limit]).await.is_allowed());
}
