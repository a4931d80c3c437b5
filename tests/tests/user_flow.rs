//! The user-creation flow end to end: minting, redemption, restoration,
//! status, watch, reset and retries.

use std::time::Duration;

use devicelink_e2e::*;
use devicelink_shared::pb;
use futures_util::StreamExt;
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
    let mut registration = env.registration().await;
    let first = registration
        .create_user(create_user_request(
            &env.mint(&api_key, "u-1").await,
            &app_id,
            phone("phone-a"),
        ))
        .await
        .expect("first device")
        .into_inner();

    let mut stream = registration
        .watch_install_status(authorized(
            pb::WatchInstallStatusRequest {},
            &first.install_token,
        ))
        .await
        .expect("watch")
        .into_inner();
    let current = stream
        .next()
        .await
        .expect("a first status")
        .expect("ok")
        .status;
    assert_eq!(state_of(&current), ACTIVE);

    let second = registration
        .create_user(create_user_request(
            &env.mint(&api_key, "u-1").await,
            &app_id,
            phone("phone-b"),
        ))
        .await
        .expect("second device")
        .into_inner();
    assert!(second.restored);
    assert_eq!(second.user_id, first.user_id);
    assert_eq!(state_of(&second.status), ACTIVE);
    assert_eq!(second.status.as_ref().expect("status").epoch, 2);

    let change = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the change arrives promptly")
        .expect("a change")
        .expect("ok")
        .status;
    assert_eq!(state_of(&change), SUPERSEDED);
    let change = change.expect("status");
    assert_eq!(change.current_epoch, 2);
    assert_eq!(change.epoch, 1);

    let status = registration
        .get_install_status(authorized(
            pb::GetInstallStatusRequest {},
            &first.install_token,
        ))
        .await
        .expect("status of the first device")
        .into_inner()
        .status;
    assert_eq!(state_of(&status), SUPERSEDED);
    assert!(status.expect("status").changed_at.is_some());
}

/// Redeems one code per device, in order, for one user; returns each
/// response.
async fn redeem_in_order(
    env: &TestEnv,
    devices: Vec<pb::DeviceInfo>,
) -> Vec<pb::CreateUserResponse> {
    let (app_id, api_key) = env.app_with_key().await;
    let mut registration = env.registration().await;
    let mut responses = Vec::new();
    for device in devices {
        let code = env.mint(&api_key, "arbitrated-user").await;
        responses.push(
            registration
                .create_user(create_user_request(&code, &app_id, device))
                .await
                .expect("create user")
                .into_inner(),
        );
    }
    responses
}

async fn status_of(env: &TestEnv, token: &str) -> (pb::InstallState, pb::InstallStateReason) {
    let status = env
        .registration()
        .await
        .get_install_status(authorized(pb::GetInstallStatusRequest {}, token))
        .await
        .expect("status")
        .into_inner()
        .status;
    state_of(&status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tablet_after_a_phone_stays_inactive() {
    let env = TestEnv::start().await;
    let [phone_install, tablet_install] =
        <[_; 2]>::try_from(redeem_in_order(&env, vec![phone("p"), tablet("t")]).await)
            .expect("two");
    assert_eq!(state_of(&tablet_install.status), PHONE_PREFERRED);
    assert_eq!(
        tablet_install
            .status
            .as_ref()
            .expect("status")
            .current_epoch,
        1
    );
    assert_eq!(status_of(&env, &phone_install.install_token).await, ACTIVE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_after_a_tablet_takes_over() {
    let env = TestEnv::start().await;
    let [tablet_install, phone_install] =
        <[_; 2]>::try_from(redeem_in_order(&env, vec![tablet("t"), phone("p")]).await)
            .expect("two");
    assert_eq!(state_of(&phone_install.status), ACTIVE);
    assert_eq!(
        status_of(&env, &tablet_install.install_token).await,
        SUPERSEDED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_after_a_phone_takes_over() {
    let env = TestEnv::start().await;
    let [first, second] =
        <[_; 2]>::try_from(redeem_in_order(&env, vec![phone("p1"), phone("p2")]).await)
            .expect("two");
    assert_eq!(state_of(&second.status), ACTIVE);
    assert_eq!(status_of(&env, &first.install_token).await, SUPERSEDED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tablet_after_a_tablet_takes_over() {
    let env = TestEnv::start().await;
    let [first, second] =
        <[_; 2]>::try_from(redeem_in_order(&env, vec![tablet("t1"), tablet("t2")]).await)
            .expect("two");
    assert_eq!(state_of(&second.status), ACTIVE);
    assert_eq!(status_of(&env, &first.install_token).await, SUPERSEDED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_device_again_reactivates_its_install() {
    let env = TestEnv::start().await;
    let responses = redeem_in_order(&env, vec![phone("a"), phone("b"), phone("a")]).await;
    assert_eq!(
        responses[2].install_id, responses[0].install_id,
        "no second install for device a"
    );
    assert_eq!(state_of(&responses[2].status), ACTIVE);
    assert_eq!(responses[2].status.as_ref().expect("status").epoch, 3);
    assert_eq!(
        status_of(&env, &responses[1].install_token).await,
        SUPERSEDED
    );
    // The earlier token of device a was replaced by the new one.
    let old = env
        .registration()
        .await
        .get_install_status(authorized(
            pb::GetInstallStatusRequest {},
            &responses[0].install_token,
        ))
        .await
        .expect_err("the replaced token no longer works");
    assert_eq!(old.code(), Code::Unauthenticated);
    let installs: i64 = env
        .database()
        .await
        .query_one("SELECT count(*) FROM installs", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(installs, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_holding_another_user_is_refused_until_reset() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let mut registration = env.registration().await;
    let alice = registration
        .create_user(create_user_request(
            &env.mint(&api_key, "alice").await,
            &app_id,
            phone("shared"),
        ))
        .await
        .expect("alice")
        .into_inner();

    let bob_code = env.mint(&api_key, "bob").await;
    let refused = registration
        .create_user(create_user_request(&bob_code, &app_id, phone("shared")))
        .await
        .expect_err("the device holds alice");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("reset"), "{}", refused.message());

    registration
        .reset_install(authorized(pb::ResetInstallRequest {}, &alice.install_token))
        .await
        .expect("reset");
    // The refused request did not consume bob's code.
    let bob = registration
        .create_user(create_user_request(&bob_code, &app_id, phone("shared")))
        .await
        .expect("bob after the reset")
        .into_inner();
    assert_ne!(bob.user_id, alice.user_id);
    assert_eq!(state_of(&bob.status), ACTIVE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_ends_the_install_and_its_token() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let mut registration = env.registration().await;
    let created = registration
        .create_user(create_user_request(
            &env.mint(&api_key, "u").await,
            &app_id,
            phone("p"),
        ))
        .await
        .expect("create")
        .into_inner();
    let mut stream = registration
        .watch_install_status(authorized(
            pb::WatchInstallStatusRequest {},
            &created.install_token,
        ))
        .await
        .expect("watch")
        .into_inner();
    stream.next().await.expect("first status").expect("ok");

    registration
        .reset_install(authorized(
            pb::ResetInstallRequest {},
            &created.install_token,
        ))
        .await
        .expect("reset");
    let last = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("prompt")
        .expect("a final status")
        .expect("ok")
        .status;
    assert_eq!(
        state_of(&last),
        (pb::InstallState::Reset, pb::InstallStateReason::Reset)
    );
    assert!(stream.next().await.is_none(), "the stream ends after RESET");

    for outcome in [
        registration
            .get_install_status(authorized(
                pb::GetInstallStatusRequest {},
                &created.install_token,
            ))
            .await
            .map(drop),
        registration
            .reset_install(authorized(
                pb::ResetInstallRequest {},
                &created.install_token,
            ))
            .await
            .map(drop),
    ] {
        assert_eq!(
            outcome.expect_err("the token stopped working").code(),
            Code::Unauthenticated
        );
    }
    let user = env
        .admin()
        .await
        .get_user(authorized(
            pb::GetUserRequest {
                app_id,
                external_id: "u".into(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("the user remains")
        .into_inner()
        .user
        .expect("user");
    let active = user
        .installs
        .iter()
        .filter(|install| state_of(&install.status).0 == pb::InstallState::Active)
        .count();
    assert_eq!(
        active, 0,
        "no active install after resetting the active one"
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
    assert_eq!(refused.code(), Code::PermissionDenied);
    registration
        .create_user(create_user_request(&code, &app_id, phone("p")))
        .await
        .expect("the code still works for its own app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_a_user_removes_it_and_tells_its_devices() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let mut registration = env.registration().await;
    let created = registration
        .create_user(create_user_request(
            &env.mint(&api_key, "gone").await,
            &app_id,
            phone("p"),
        ))
        .await
        .expect("create")
        .into_inner();
    let mut stream = registration
        .watch_install_status(authorized(
            pb::WatchInstallStatusRequest {},
            &created.install_token,
        ))
        .await
        .expect("watch")
        .into_inner();
    stream.next().await.expect("first").expect("ok");

    let mut admin = env.admin().await;
    let user_request = || pb::DeleteUserRequest {
        app_id: app_id.clone(),
        external_id: "gone".into(),
    };
    admin
        .delete_user(authorized(user_request(), ADMIN_TOKEN))
        .await
        .expect("erase");
    let last = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("prompt")
        .expect("a final status")
        .expect("ok")
        .status;
    assert_eq!(
        state_of(&last),
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
    let status = registration
        .get_install_status(authorized(
            pb::GetInstallStatusRequest {},
            &created.install_token,
        ))
        .await
        .expect_err("the token is gone with the user");
    assert_eq!(status.code(), Code::Unauthenticated);
    let db = env.database().await;
    for table in ["users", "installs", "redeemed_codes"] {
        let rows: i64 = db
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .expect("count")
            .get(0);
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

    env.registration()
        .await
        .create_user(create_user_request(&code, &app_id, phone("p")))
        .await
        .expect("redeem");
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
    panic!("the redeemed code stayed in Redis");
}
