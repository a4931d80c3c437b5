//! The whole flow, touching every statement the services send, for tests
//! that run it over a Postgres reached another way (TLS, PgBouncer).

use devicelink_shared::pb;
use tonic::Code;

use crate::client::{
    ACTIVE, SUPERSEDED, authorized, create_user_request, next_status, phone, state, state_of,
    status_of_token,
};
use crate::env::{ADMIN_TOKEN, TestEnv};

/// Runs, and checks, every kind of call: admin calls (app, key, SDK
/// configuration, limits, user lookup and erasure), a mint (the API key
/// lookup), a new user's redemption, a restoring redemption that
/// arbitrates in a pipelined transaction and supersedes a watched install
/// (so its change must reach the watcher through LISTEN), a retried
/// redemption (its read-only transaction), a replay, a status lookup and a
/// reset.
pub async fn every_statement(env: &TestEnv) {
    let (app_id, api_key) = env.app_with_key().await;
    let mut admin = env.admin().await;
    admin
        .set_sdk_config(authorized(
            pb::SetSdkConfigRequest {
                app_id: app_id.clone(),
                sdk_config: Some(
                    devicelink_registration::service::sdk_config::json_to_struct(
                        &serde_json::json!({"poll_seconds": 30.0}),
                    ),
                ),
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("set the SDK configuration");
    admin
        .list_api_keys(authorized(
            pb::ListApiKeysRequest {
                app_id: app_id.clone(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("list the keys");
    admin
        .get_app(authorized(
            pb::GetAppRequest {
                app_id: app_id.clone(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("read the app");

    let mut registration = env.registration().await;
    let code = env.mint(&api_key, "u-1").await;
    let first = registration
        .create_user(create_user_request(&code, &app_id, phone("phone-a")))
        .await
        .expect("redeem as a new user")
        .into_inner();
    assert_eq!(state_of(&first.status), ACTIVE);
    let retry = registration
        .create_user(create_user_request(&code, &app_id, phone("phone-a")))
        .await
        .expect("a retry is answered")
        .into_inner();
    assert_eq!(retry, first);
    let replay = registration
        .create_user(create_user_request(&code, &app_id, phone("intruder")))
        .await
        .expect_err("a replay from another device");
    assert_eq!(replay.code(), Code::NotFound);

    let (mut stream, current) = env.watch(&first.install_token).await;
    assert_eq!(state(&current), ACTIVE);
    let second = env.link(&app_id, &api_key, "u-1", phone("phone-b")).await;
    assert!(second.restored);
    assert_eq!(state_of(&second.status), ACTIVE);
    let change = next_status(&mut stream)
        .await
        .expect("the change reaches the watcher");
    assert_eq!(state(&change), SUPERSEDED);
    let status = status_of_token(&mut registration, &first.install_token)
        .await
        .expect("status by token");
    assert_eq!(state(&status), SUPERSEDED);

    registration
        .reset_install(authorized(
            pb::ResetInstallRequest {},
            &second.install_token,
        ))
        .await
        .expect("reset");
    let user = admin
        .get_user(authorized(
            pb::GetUserRequest {
                app_id: app_id.clone(),
                external_id: "u-1".into(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("read the user")
        .into_inner();
    assert_eq!(user.user.expect("the user").installs.len(), 2);
    admin
        .delete_user(authorized(
            pb::DeleteUserRequest {
                app_id,
                external_id: "u-1".into(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("erase the user");
    assert_eq!(env.count("SELECT count(*) FROM users").await, 0);
}
