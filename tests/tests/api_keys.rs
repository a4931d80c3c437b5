//! API keys: minting needs a live key of the right app and scope, with the
//! right secret; keys are listed with their history and revoked everywhere
//! within five seconds.

use std::time::{Duration, Instant};

use devicelink_e2e::*;
use devicelink_shared::pb;
use tonic::Code;

fn mint_request(external_id: &str) -> pb::MintAuthCodeRequest {
    pb::MintAuthCodeRequest {
        external_id: external_id.into(),
        app_id: String::new(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_is_refused_within_five_seconds() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let mut authcode = env.authcode().await;
    authcode
        .mint_auth_code(authorized(mint_request("u"), &api_key))
        .await
        .expect("the key works and is now cached");

    env.revoke_only_key(&app_id).await;
    let revoked_at = Instant::now();

    loop {
        match authcode
            .mint_auth_code(authorized(mint_request("u"), &api_key))
            .await
        {
            Ok(_) => assert!(
                revoked_at.elapsed() < Duration::from_secs(5),
                "still accepted after 5 s"
            ),
            Err(status) => {
                assert_eq!(status.code(), Code::Unauthenticated);
                assert!(!status.message().contains(&api_key));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(revoked_at.elapsed() < Duration::from_secs(5));

    let keys = env
        .admin()
        .await
        .list_api_keys(authorized(pb::ListApiKeysRequest { app_id }, ADMIN_TOKEN))
        .await
        .expect("list")
        .into_inner()
        .api_keys;
    assert_eq!(keys[0].state, pb::ApiKeyState::Revoked as i32);
    assert!(keys[0].revoked_at.is_some());
    assert!(keys[0].last_used_at.is_some(), "the key's use was recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_malformed_and_unknown_keys_are_unauthenticated() {
    let env = TestEnv::start().await;
    let (_, api_key) = env.app_with_key().await;
    let mut authcode = env.authcode().await;
    let unknown = devicelink_shared::api_key::generate().text;
    let mut tampered = api_key.clone();
    tampered.replace_range(25..26, if &api_key[25..26] == "a" { "b" } else { "a" });
    for (key, reason) in [
        ("", "missing API key"),
        ("not-a-key", "not a devicelink API key"),
        (unknown.as_str(), "API key is not recognised"),
        (tampered.as_str(), "API key checksum does not match"),
    ] {
        let request = if key.is_empty() {
            tonic::Request::new(mint_request("u"))
        } else {
            authorized(mint_request("u"), key)
        };
        let status = authcode.mint_auth_code(request).await.expect_err("refused");
        assert_eq!(status.code(), Code::Unauthenticated, "{key:?}: {status:?}");
        assert!(
            status.message().starts_with(reason),
            "{key:?}: {}",
            status.message()
        );
    }
}

/// Mints once with `api_key`: `Ok` with the code, or the refusal.
async fn try_mint(env: &TestEnv, api_key: &str) -> Result<String, tonic::Status> {
    env.authcode()
        .await
        .mint_auth_code(authorized(mint_request("u"), api_key))
        .await
        .map(|response| response.into_inner().auth_code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_of_a_real_key_is_unauthenticated() {
    let env = TestEnv::start().await;
    let (_, api_key) = env.app_with_key().await;
    try_mint(&env, &api_key).await.expect("the real key works");
    // Well formed, with a valid checksum and the real key id: it passes
    // every offline check and is refused only by the hash comparison.
    let forged = credentials::with_wrong_secret(&api_key);
    let status = try_mint(&env, &forged)
        .await
        .expect_err("a wrong secret is refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(status.message(), "API key is not recognised");
    assert!(!status.message().contains(&forged));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_without_the_user_link_scope_is_permission_denied() {
    let env = TestEnv::start().await;
    let (app_id, _) = env.app_with_key().await;
    // A row written this way works when it holds the scope, so the refusals
    // below are the scope's doing and nothing else's.
    let with_scope = credentials::insert_api_key(
        &env,
        &app_id,
        &[devicelink_shared::api_key::SCOPE_USER_LINK],
    )
    .await;
    try_mint(&env, &with_scope)
        .await
        .expect("a key with user_link mints");

    for scopes in [&[][..], &["audit_read"][..]] {
        let key = credentials::insert_api_key(&env, &app_id, scopes).await;
        let status = try_mint(&env, &key)
            .await
            .expect_err("a key without user_link");
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{scopes:?}: {status:?}"
        );
        assert!(
            status.message().contains("user_link"),
            "{scopes:?}: {}",
            status.message()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_key_is_refused() {
    let env = TestEnv::start().await;
    let (app_id, _) = env.app_with_key().await;
    let key = env
        .admin()
        .await
        .create_api_key(authorized(
            pb::CreateApiKeyRequest {
                app_id: app_id.clone(),
                ..Default::default()
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("a key")
        .into_inner();
    try_mint(&env, &key.api_key)
        .await
        .expect("the key works before it expires");

    env.database()
        .await
        .execute(
            "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE key_id = $1",
            &[&key.key_id],
        )
        .await
        .expect("expire the key");
    // authcode trusts a key it read for KEY_CACHE_TTL (2 s), so the expiry
    // shows within that, plus a lookup.
    let expired_at = Instant::now();
    let status = loop {
        match try_mint(&env, &key.api_key).await {
            Ok(_) => assert!(
                expired_at.elapsed() < Duration::from_secs(5),
                "an expired key still mints after 5 s"
            ),
            Err(status) => break status,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(status.message(), "API key has expired");

    let listed = env
        .admin()
        .await
        .list_api_keys(authorized(pb::ListApiKeysRequest { app_id }, ADMIN_TOKEN))
        .await
        .expect("list")
        .into_inner()
        .api_keys;
    let listed = listed
        .iter()
        .find(|listed| listed.key_id == key.key_id)
        .expect("the key is listed");
    assert_eq!(listed.state, pb::ApiKeyState::Expired as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_works_only_for_its_own_app() {
    let env = TestEnv::start().await;
    let (_, api_key) = env.app_with_key().await;
    let (other_app_id, _) = env.app_with_key().await;
    let status = env
        .authcode()
        .await
        .mint_auth_code(authorized(
            pb::MintAuthCodeRequest {
                external_id: "u".into(),
                app_id: other_app_id,
                ..Default::default()
            },
            &api_key,
        ))
        .await
        .expect_err("another app's key");
    assert_eq!(status.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_holds_at_most_ten_active_keys() {
    let env = TestEnv::start().await;
    let (app_id, _) = env.app_with_key().await;
    let mut admin = env.admin().await;
    let create = || {
        authorized(
            pb::CreateApiKeyRequest {
                app_id: app_id.clone(),
                ..Default::default()
            },
            ADMIN_TOKEN,
        )
    };
    let mut last_key_id = String::new();
    for _ in 0..9 {
        last_key_id = admin
            .create_api_key(create())
            .await
            .expect("keys 2 to 10")
            .into_inner()
            .key_id;
    }
    let eleventh = admin
        .create_api_key(create())
        .await
        .expect_err("the eleventh key");
    assert_eq!(eleventh.code(), Code::FailedPrecondition);
    admin
        .revoke_api_key(authorized(
            pb::RevokeApiKeyRequest {
                key_id: last_key_id,
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("revoke one");
    admin
        .create_api_key(create())
        .await
        .expect("room again after a revocation");
    let listed = admin
        .list_api_keys(authorized(
            pb::ListApiKeysRequest {
                app_id: app_id.clone(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("list")
        .into_inner()
        .api_keys;
    assert_eq!(listed.len(), 11);
    assert_eq!(
        listed
            .iter()
            .filter(|key| key.state == pb::ApiKeyState::Active as i32)
            .count(),
        10
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_needs_the_admin_token() {
    let env = TestEnv::start().await;
    let mut admin = env.admin().await;
    let request = || pb::CreateAppRequest { name: "x".into() };
    let missing = admin
        .create_app(tonic::Request::new(request()))
        .await
        .expect_err("no token");
    assert_eq!(missing.code(), Code::Unauthenticated);
    let wrong = admin
        .create_app(authorized(request(), "not-the-admin-token-at-all"))
        .await
        .expect_err("wrong token");
    assert_eq!(wrong.code(), Code::Unauthenticated);
    // An API key is not an admin credential either.
    let (_, api_key) = env.app_with_key().await;
    let with_key = admin
        .create_app(authorized(request(), &api_key))
        .await
        .expect_err("API key");
    assert_eq!(with_key.code(), Code::Unauthenticated);
}
