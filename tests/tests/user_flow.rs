//! The user-creation flow end to end: minting, redemption, restoration,
//! status, watch, reset and retries.

use std::time::Duration;

use devicelink_e2e::*;
use devicelink_shared::pb;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_creates_an_active_user_with_the_sdk_config() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let config = serde_json::json!({"poll_seconds": 30.0, "features": {"chat": true}});
    env.admin()
        .await
        .set_sdk_config(authorized(
            pb::SetSdkConfigRequest {
                app_id: app_id.clone(),
                sdk_config: Some(
                    devicelink_registration::service::sdk_config::json_to_struct(&config),
                ),
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("set the SDK config");

    let minted = env
        .authcode()
        .await
        .mint_auth_code(authorized(
            pb::MintAuthCodeRequest {
                external_id: "customer-user-1".into(),
                app_id: app_id.clone(),
                ..Default::default()
            },
            &api_key,
        ))
        .await
        .expect("mint")
        .into_inner();
    assert_eq!(minted.app_id, app_id);
    assert!(minted.auth_code.len() >= 26, "at least 128 bits of base32");
    let expires_at = minted.expires_at.expect("an expiry");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!(
        (expires_at.seconds - now - 600).abs() <= 5,
        "default TTL is 10 minutes"
    );

    let created = env
        .registration()
        .await
        .create_user(create_user_request(
            &minted.auth_code,
            &app_id,
            phone("phone-1"),
        ))
        .await
        .expect("create user")
        .into_inner();
    assert!(!created.restored);
    assert!(created.install_token.starts_with("dlit_"));
    assert_eq!(state_of(&created.status), ACTIVE);
    assert_eq!(created.status.as_ref().expect("status").epoch, 1);
    let sdk_config = devicelink_registration::service::sdk_config::struct_to_json(
        created.sdk_config.as_ref().expect("an SDK config"),
    );
    assert_eq!(sdk_config, config);

    let status = env
        .registration()
        .await
        .get_install_status(authorized(
            pb::GetInstallStatusRequest {},
            &created.install_token,
        ))
        .await
        .expect("status")
        .into_inner()
        .status;
    assert_eq!(state_of(&status), ACTIVE);
    assert_eq!(status.expect("status").install_id, created.install_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restoring_on_a_second_device_tells_the_first_by_status_and_stream() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let first = env.link(&app_id, &api_key, "u-1", phone("phone-a")).await;
    let (mut stream, current) = env.watch(&first.install_token).await;
    assert_eq!(state(&current), ACTIVE);

    let second = env.link(&app_id, &api_key, "u-1", phone("phone-b")).await;
    assert!(second.restored);
    assert_eq!(second.user_id, first.user_id);
    assert_eq!(state_of(&second.status), ACTIVE);
    assert_eq!(second.status.as_ref().expect("status").epoch, 2);

    let change = next_status(&mut stream).await.expect("the change arrives");
    assert_eq!(state(&change), SUPERSEDED);
    assert_eq!((change.epoch, change.current_epoch), (1, 2));

    let status = status_of_token(&mut env.registration().await, &first.install_token)
        .await
        .expect("status of the first device");
    assert_eq!(state(&status), SUPERSEDED);
    assert!(status.changed_at.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_ends_the_install_and_its_token() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let mut registration = env.registration().await;
    let created = env.link(&app_id, &api_key, "u", phone("p")).await;
    let (mut stream, _) = env.watch(&created.install_token).await;

    registration
        .reset_install(authorized(
            pb::ResetInstallRequest {},
            &created.install_token,
        ))
        .await
        .expect("reset");
    let last = next_status(&mut stream).await.expect("a final status");
    assert_eq!(
        state(&last),
        (pb::InstallState::Reset, pb::InstallStateReason::Reset)
    );
    assert!(
        next_status(&mut stream).await.is_none(),
        "the stream ends after RESET"
    );

    let status = status_of_token(&mut registration, &created.install_token).await;
    assert_eq!(
        status.expect_err("the token stopped working").code(),
        Code::Unauthenticated
    );
    let again = registration
        .reset_install(authorized(
            pb::ResetInstallRequest {},
            &created.install_token,
        ))
        .await
        .expect_err("nothing left to reset");
    assert_eq!(again.code(), Code::Unauthenticated);
    let active = env
        .count("SELECT count(*) FROM installs WHERE state = 'active'")
        .await;
    assert_eq!(
        active, 0,
        "no active install after resetting the active one"
    );
    assert_eq!(
        env.count("SELECT count(*) FROM users").await,
        1,
        "the user remains"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_from_the_same_device_gets_the_same_answer_and_others_are_refused() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let mut registration = env.registration().await;
    let code = env.mint(&api_key, "u").await;
    let first = registration
        .create_user(create_user_request(&code, &app_id, phone("p")))
        .await
        .expect("first")
        .into_inner();
    let retry = registration
        .create_user(create_user_request(&code, &app_id, phone("p")))
        .await
        .expect("the retry succeeds")
        .into_inner();
    assert_eq!(retry, first);

    let replay = registration
        .create_user(create_user_request(&code, &app_id, phone("intruder")))
        .await
        .expect_err("another device is refused");
    assert_eq!(replay.code(), Code::NotFound);
    assert!(!replay.message().contains(&code));
    let replays: i64 = env
        .database()
        .await
        .query_one(
            "SELECT count(*) FROM code_replays WHERE device_id = 'intruder'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(replays, 1, "the replay was recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_expire() {
    let env = TestEnv::start_with(TestOptions {
        code_ttl: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let (app_id, api_key) = env.app_with_key().await;
    let code = env.mint(&api_key, "u").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = env
        .registration()
        .await
        .create_user(create_user_request(&code, &app_id, phone("p")))
        .await
        .expect_err("expired");
    assert_eq!(expired.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_of_another_app_is_refused_and_not_consumed() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let (other_app_id, _) = env.app_with_key().await;
    let code = env.mint(&api_key, "u").await;
    let mut registration = env.registration().await;
    let refused = registration
        .create_user(create_user_request(&code, &other_app_id, phone("p")))
        .await
        .expect_err("another app");
    // The code's Redis key carries its app's hash tag (so that a Redis
    // Cluster keeps a mint in one slot): under another app it is not found.
    assert_eq!(refused.code(), Code::NotFound);
    registration
        .create_user(create_user_request(&code, &app_id, phone("p")))
        .await
        .expect("the code still works for its own app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_whose_app_is_gone_is_not_found_and_writes_nothing() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let code = env.mint(&api_key, "orphan").await;
    env.database()
        .await
        .execute("DELETE FROM apps", &[])
        .await
        .expect("remove the app");
    let refused = env
        .registration()
        .await
        .create_user(create_user_request(&code, &app_id, phone("p")))
        .await
        .expect_err("no app");
    assert_eq!(refused.code(), Code::NotFound);
    assert!(refused.message().contains("does not exist"), "{refused:?}");
    assert_eq!(env.count("SELECT count(*) FROM users").await, 0);
    assert_eq!(env.count("SELECT count(*) FROM redeemed_codes").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_a_user_removes_it_and_tells_its_devices() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let created = env.link(&app_id, &api_key, "gone", phone("p")).await;
    let (mut stream, _) = env.watch(&created.install_token).await;

    let mut admin = env.admin().await;
    let user_request = || pb::DeleteUserRequest {
        app_id: app_id.clone(),
        external_id: "gone".into(),
    };
    admin
        .delete_user(authorized(user_request(), ADMIN_TOKEN))
        .await
        .expect("erase");
    let last = next_status(&mut stream).await.expect("a final status");
    assert_eq!(
        state(&last),
        (pb::InstallState::Reset, pb::InstallStateReason::Erased)
    );

    let missing = admin
        .get_user(authorized(
            pb::GetUserRequest {
                app_id: app_id.clone(),
                external_id: "gone".into(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect_err("erased");
    assert_eq!(missing.code(), Code::NotFound);
    let again = admin
        .delete_user(authorized(user_request(), ADMIN_TOKEN))
        .await
        .expect_err("nothing left to erase");
    assert_eq!(again.code(), Code::NotFound);
    let status = status_of_token(&mut env.registration().await, &created.install_token).await;
    assert_eq!(
        status.expect_err("the token is gone with the user").code(),
        Code::Unauthenticated
    );
    for table in ["users", "installs", "redeemed_codes"] {
        let rows = env.count(&format!("SELECT count(*) FROM {table}")).await;
        assert_eq!(rows, 0, "{table} is empty after erasure");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_holds_no_usable_code_and_redeemed_codes_leave_it() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let code = env.mint(&api_key, "u").await;
    let client = redis::Client::open(
        std::env::var("DEVICELINK_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into()),
    )
    .expect("a Redis URL");
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    let pattern = format!("{}*", env.redis_key_prefix);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(&mut redis)
        .await
        .expect("keys");
    assert_eq!(keys.len(), 1, "one code, one key");
    let value: Vec<u8> = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut redis)
        .await
        .expect("the record");
    assert!(!keys[0].contains(&code));
    assert!(
        !String::from_utf8_lossy(&value).contains(&code),
        "the record holds no code"
    );
    let ttl: i64 = redis::cmd("TTL")
        .arg(&keys[0])
        .query_async(&mut redis)
        .await
        .expect("ttl");
    assert!((590..=600).contains(&ttl), "TTL {ttl}");

    // Redeemed together, the codes leave Redis together (in batched
    // deletes).
    let mut codes = vec![(code, phone("p"))];
    for user in 0..15 {
        let code = env.mint(&api_key, &format!("u{user}")).await;
        codes.push((code, phone(&format!("p{user}"))));
    }
    let redemptions = codes.into_iter().map(|(code, device)| {
        let request = create_user_request(&code, &app_id, device);
        let registration = env.registration();
        async move { registration.await.create_user(request).await }
    });
    for redeemed in futures_util::future::join_all(redemptions).await {
        redeemed.expect("redeem");
    }
    for _ in 0..50 {
        let left: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query_async(&mut redis)
            .await
            .expect("keys");
        if left.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("redeemed codes stayed in Redis");
}
