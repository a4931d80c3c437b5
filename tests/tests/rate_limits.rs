//! Rate limits, through the real services on real Postgres and Redis: each
//! scope reached, and what a limited client sees (RESOURCE_EXHAUSTED with
//! RetryInfo, QuotaFailure naming the scope, and `retry-after`).
//!
//! Each test turns on only the scopes it is about, at rates small enough to
//! reach in a few calls; every call comes from 127.0.0.1, so limits per
//! client address are that address's. Outages, replicas and proxies are in
//! `rate_limits_edges.rs`; the metric in `rate_limits_metrics.rs`.

mod rate_limits_support;

use devicelink_e2e::*;
use devicelink_shared::limits::write_behind::FLUSH_INTERVAL;
use devicelink_shared::pb;
use rate_limits_support::*;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minting_is_limited_per_api_key() {
    let env = start(&[(MINT_PER_KEY, "3/h")]).await;
    let (_, api_key) = env.app_with_key().await;
    let mut authcode = env.authcode().await;
    for index in 0..3 {
        mint(&mut authcode, &api_key, &format!("user-{index}"))
            .await
            .expect("within the key's limit");
    }
    assert_limited(
        mint(&mut authcode, &api_key, "user-3").await,
        "mint_per_key",
    );
    // Another key of another app has its own allowance.
    let (_, other_key) = env.app_with_key().await;
    mint(&mut authcode, &other_key, "user-3")
        .await
        .expect("another key is not limited by the first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minting_is_limited_per_external_id() {
    let env = start(&[(MINT_PER_EXTERNAL_ID, "2/h")]).await;
    let (app_id, api_key) = env.app_with_key().await;
    let mut authcode = env.authcode().await;
    for _ in 0..2 {
        mint(&mut authcode, &api_key, "alice")
            .await
            .expect("within the external id's limit");
    }
    assert_limited(
        mint(&mut authcode, &api_key, "alice").await,
        "mint_per_external_id",
    );
    mint(&mut authcode, &api_key, "bob")
        .await
        .expect("another external id has its own allowance");
    // A refused mint stored no code: only the two allowed codes for alice
    // and the one for bob exist in Redis.
    assert_eq!(codes_in_redis(&env).await, 3, "codes stored for {app_id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_user_is_limited_per_device_and_a_refusal_consumes_no_code() {
    let env = start(&[(REDEEM_PER_DEVICE, "2/h")]).await;
    let (app_id, api_key) = env.app_with_key().await;
    let mut registration = env.registration().await;
    for _ in 0..2 {
        let code = env.mint(&api_key, "alice").await;
        registration
            .create_user(create_user_request(&code, &app_id, phone("device-a")))
            .await
            .expect("within the device's limit");
    }
    let code = env.mint(&api_key, "alice").await;
    assert_limited(
        registration
            .create_user(create_user_request(&code, &app_id, phone("device-a")))
            .await,
        "redeem_per_device",
    );
    registration
        .create_user(create_user_request(&code, &app_id, phone("device-b")))
        .await
        .expect("the refused code is still live, and another device has its own allowance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_reset_are_limited_per_install_token() {
    let env = start(&[(INSTALL_PER_TOKEN, "3/h")]).await;
    let (app_id, api_key) = env.app_with_key().await;
    let first = env.link(&app_id, &api_key, "alice", phone("a")).await;
    let second = env.link(&app_id, &api_key, "bob", phone("b")).await;
    let mut registration = env.registration().await;
    for _ in 0..3 {
        status_of_token(&mut registration, &first.install_token)
            .await
            .expect("within the token's limit");
    }
    assert_limited(
        status_of_token(&mut registration, &first.install_token).await,
        "install_per_token",
    );
    assert_limited(
        registration
            .reset_install(authorized(pb::ResetInstallRequest {}, &first.install_token))
            .await,
        "install_per_token",
    );
    assert_limited(
        registration
            .watch_install_status(authorized(
                pb::WatchInstallStatusRequest {},
                &first.install_token,
            ))
            .await,
        "install_per_token",
    );
    status_of_token(&mut registration, &second.install_token)
        .await
        .expect("another token has its own allowance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_api_keys_block_the_address() {
    let env = start(&[(FAILED_AUTH_PER_ADDRESS, "3/h")]).await;
    let (_, api_key) = env.app_with_key().await;
    let mut authcode = env.authcode().await;
    for _ in 0..3 {
        let refused = mint(&mut authcode, &made_up_api_key(), "alice")
            .await
            .expect_err("an unknown key");
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    }
    assert_limited(
        mint(&mut authcode, &made_up_api_key(), "alice").await,
        "failed_auth_per_address",
    );
    // The address is blocked, whatever key it now presents.
    assert_limited(
        mint(&mut authcode, &api_key, "alice").await,
        "failed_auth_per_address",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_codes_block_the_address() {
    let env = start(&[(FAILED_AUTH_PER_ADDRESS, "3/h")]).await;
    let (app_id, api_key) = env.app_with_key().await;
    // Minted first: the address about to be blocked is authcode's caller
    // too.
    let code = env.mint(&api_key, "alice").await;
    let mut registration = env.registration().await;
    for index in 0..3 {
        let refused = registration
            .create_user(create_user_request(
                &made_up_code(),
                &app_id,
                phone(&format!("d{index}")),
            ))
            .await
            .expect_err("an unknown code");
        assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
    }
    assert_limited(
        registration
            .create_user(create_user_request(&code, &app_id, phone("d9")))
            .await,
        "failed_auth_per_address",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_code_from_another_device_counts_as_a_failure() {
    let env = start(&[(FAILED_AUTH_PER_ADDRESS, "2/h")]).await;
    let (app_id, api_key) = env.app_with_key().await;
    let code = env.mint(&api_key, "alice").await;
    let mut registration = env.registration().await;
    let redeem = |device: &str| create_user_request(&code, &app_id, phone(device));
    registration
        .create_user(redeem("owner"))
        .await
        .expect("the first redemption");
    // The owner's retries are not failures.
    for _ in 0..3 {
        registration
            .create_user(redeem("owner"))
            .await
            .expect("a retry by the same device");
    }
    for _ in 0..2 {
        let refused = registration
            .create_user(redeem("thief"))
            .await
            .expect_err("a replay");
        assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
    }
    assert_limited(
        registration.create_user(redeem("thief")).await,
        "failed_auth_per_address",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_install_tokens_block_the_address() {
    let env = start(&[(FAILED_AUTH_PER_ADDRESS, "3/h")]).await;
    let (app_id, api_key) = env.app_with_key().await;
    let linked = env.link(&app_id, &api_key, "alice", phone("a")).await;
    let mut registration = env.registration().await;
    for _ in 0..3 {
        let refused = status_of_token(&mut registration, &made_up_install_token())
            .await
            .expect_err("an unknown token");
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    }
    assert_limited(
        status_of_token(&mut registration, &made_up_install_token()).await,
        "failed_auth_per_address",
    );
    assert_limited(
        status_of_token(&mut registration, &linked.install_token).await,
        "failed_auth_per_address",
    );
    // The address is one, whichever service it failed with. authcode saw
    // none of the failures: a mint with a valid key it holds in its cache
    // goes on (and has authcode watch the address) until authcode's next
    // flush reads the address's state; one whose key must be looked up
    // asks Redis first and is refused at once. Either way, refused after a
    // flush.
    let mut authcode = env.authcode().await;
    let _allowed_or_refused = mint(&mut authcode, &api_key, "bob").await;
    tokio::time::sleep(FLUSH_INTERVAL * 3).await;
    assert_limited(
        mint(&mut authcode, &api_key, "bob").await,
        "failed_auth_per_address",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_limits_leave_ordinary_use_alone() {
    let env = TestEnv::start_with(TestOptions {
        limits: devicelink_shared::config::LimitsConfig::defaults(),
        ..Default::default()
    })
    .await;
    let (app_id, api_key) = env.app_with_key().await;
    let linked = env.link(&app_id, &api_key, "alice", phone("a")).await;
    let mut registration = env.registration().await;
    // More calls than the failed-credential burst (10), fewer than the
    // token's (20): only the token's limit applies to a good token.
    for _ in 0..15 {
        status_of_token(&mut registration, &linked.install_token)
            .await
            .expect("a device polling its status");
    }
}
