//! Rate limits at their edges: a blocked address refused before any store
//! lookup, limits shared by replicas, the in-memory fallback without
//! Redis, and `x-forwarded-for` believed only from trusted proxies.

mod rate_limits_support;

use std::time::Duration;

use devicelink_e2e::*;
use devicelink_shared::limits::write_behind::FLUSH_INTERVAL;
use devicelink_shared::pb;
use rate_limits_support::*;
use tonic::Code;

/// `GetInstallStatus` with `token`, as if forwarded for `client`.
fn status_request(
    token: &str,
    forwarded_for: Option<&str>,
) -> tonic::Request<pb::GetInstallStatusRequest> {
    let mut request = authorized(pb::GetInstallStatusRequest {}, token);
    if let Some(client) = forwarded_for {
        request
            .metadata_mut()
            .insert("x-forwarded-for", client.parse().expect("ASCII"));
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_address_is_refused_before_any_store_lookup() {
    let env = TestEnv::start_with(TestOptions {
        through_proxies: true,
        limits: limits(&[(FAILED_AUTH_PER_ADDRESS, "3/h")]),
        ..Default::default()
    })
    .await;
    let postgres = env.postgres_proxy.as_ref().expect("a Postgres proxy");
    let mut authcode = env.authcode().await;
    let mut registration = env.registration().await;

    // Not yet blocked: with Postgres away, an unknown key is looked up and
    // the lookup fails (and counts as no failed credential).
    postgres.cut();
    let unavailable = mint(&mut authcode, &made_up_api_key(), "alice")
        .await
        .expect_err("Postgres is away");
    assert_eq!(unavailable.code(), Code::Unavailable, "{unavailable:?}");
    postgres.restore();

    // Three failed credentials, once the pools have reconnected (a call
    // that meets a broken connection is UNAVAILABLE and counts as none).
    let mut failures = 0;
    while failures < 3 {
        let refused = status_of_token(&mut registration, &made_up_install_token())
            .await
            .expect_err("an unknown token");
        match refused.code() {
            Code::Unauthenticated => failures += 1,
            Code::Unavailable => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => panic!("{refused:?}"),
        }
    }
    postgres.cut();
    assert_limited(
        mint(&mut authcode, &made_up_api_key(), "alice").await,
        "failed_auth_per_address",
    );
    assert_limited(
        status_of_token(&mut registration, &made_up_install_token()).await,
        "failed_auth_per_address",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_their_limits_through_redis() {
    let env = TestEnv::start_with(TestOptions {
        registration_replicas: 2,
        limits: limits(&[(INSTALL_PER_TOKEN, "4/h")]),
        ..Default::default()
    })
    .await;
    let (app_id, api_key) = env.app_with_key().await;
    let linked = env.link(&app_id, &api_key, "alice", phone("a")).await;
    let mut replicas = [
        env.registration_replica(0).await,
        env.registration_replica(1).await,
    ];
    for call in 0..4 {
        status_of_token(&mut replicas[call % 2], &linked.install_token)
            .await
            .expect("within the token's limit, counted across replicas");
    }
    // Far below its limit a token is counted in memory and in Redis behind
    // the call: the replicas agree once their counts have been flushed.
    tokio::time::sleep(FLUSH_INTERVAL * 3).await;
    for replica in &mut replicas {
        assert_limited(
            status_of_token(replica, &linked.install_token).await,
            "install_per_token",
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_limits_fall_back_to_the_replicas_memory() {
    let env = TestEnv::start_with(TestOptions {
        through_proxies: true,
        limits: limits(&[(INSTALL_PER_TOKEN, "3/h")]),
        ..Default::default()
    })
    .await;
    let (app_id, api_key) = env.app_with_key().await;
    let linked = env.link(&app_id, &api_key, "alice", phone("a")).await;
    let mut registration = env.registration().await;
    status_of_token(&mut registration, &linked.install_token)
        .await
        .expect("counted in Redis");

    env.redis_proxy.as_ref().expect("a Redis proxy").cut();
    // A status needs no Redis of its own: it is still served, and limited
    // in this replica's memory, which has counted its calls all along.
    for _ in 0..2 {
        status_of_token(&mut registration, &linked.install_token)
            .await
            .expect("served and counted in memory without Redis");
    }
    assert_limited(
        status_of_token(&mut registration, &linked.install_token).await,
        "install_per_token",
    );
    // A mint needs Redis for its code: UNAVAILABLE, as without limits.
    let unavailable = mint(&mut env.authcode().await, &api_key, "bob")
        .await
        .expect_err("Redis is away");
    assert_eq!(unavailable.code(), Code::Unavailable, "{unavailable:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_is_believed_from_a_trusted_proxy() {
    let env = TestEnv::start_with(TestOptions {
        limits: limits(&[
            (FAILED_AUTH_PER_ADDRESS, "2/h"),
            (TRUSTED_PROXIES, "127.0.0.1/32"),
        ]),
        ..Default::default()
    })
    .await;
    let mut registration = env.registration().await;
    let attacker = Some("203.0.113.7");
    for _ in 0..2 {
        let refused = registration
            .get_install_status(status_request(&made_up_install_token(), attacker))
            .await
            .expect_err("an unknown token");
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    }
    assert_limited(
        registration
            .get_install_status(status_request(&made_up_install_token(), attacker))
            .await,
        "failed_auth_per_address",
    );
    // Another client behind the same proxy is not blocked by the first;
    // nor is the proxy itself.
    for other in [Some("203.0.113.8"), None] {
        let refused = registration
            .get_install_status(status_request(&made_up_install_token(), other))
            .await
            .expect_err("an unknown token");
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let env = start(&[(FAILED_AUTH_PER_ADDRESS, "2/h")]).await;
    let mut registration = env.registration().await;
    for client in ["203.0.113.7", "203.0.113.8"] {
        let refused = registration
            .get_install_status(status_request(&made_up_install_token(), Some(client)))
            .await
            .expect_err("an unknown token");
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    }
    // A fresh spoofed address does not escape the peer's limit.
    assert_limited(
        registration
            .get_install_status(status_request(
                &made_up_install_token(),
                Some("198.51.100.1"),
            ))
            .await,
        "failed_auth_per_address",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_lets_calls_through_again_once_its_window_allows() {
    let env = start(&[(INSTALL_PER_TOKEN, "1/s,burst=1")]).await;
    let (app_id, api_key) = env.app_with_key().await;
    let linked = env.link(&app_id, &api_key, "alice", phone("a")).await;
    let mut registration = env.registration().await;
    status_of_token(&mut registration, &linked.install_token)
        .await
        .expect("the first call");
    let refused = status_of_token(&mut registration, &linked.install_token)
        .await
        .expect_err("over the limit");
    let delay = tonic_types::StatusExt::get_error_details(&refused)
        .retry_info()
        .and_then(|retry| retry.retry_delay)
        .expect("a delay");
    assert!(delay <= Duration::from_secs(1), "{delay:?}");
    tokio::time::sleep(delay + Duration::from_millis(50)).await;
    status_of_token(&mut registration, &linked.install_token)
        .await
        .expect("allowed again after the delay RetryInfo gave");
}
