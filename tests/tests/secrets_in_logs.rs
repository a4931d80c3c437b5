//! No key, code or token ever reaches a log line, even at the most verbose
//! level. This test binary installs its own global subscriber, recording
//! every line, before any service starts; the flow includes refusals (a
//! replayed code, a reset token, a wrong key secret, a key without the
//! scope) whose log lines name
//! what was refused.

use devicelink_e2e::credentials::{api_key_secret, insert_api_key, with_wrong_secret};
use devicelink_e2e::logs::recorded_logs;
use devicelink_e2e::*;
use devicelink_shared::pb;
use futures_util::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_flow_logs_no_secret() {
    let recorder = recorded_logs("trace,h2=info,hyper=info,tower=info");

    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let code = env.mint(&api_key, "secret-keeper").await;
    let mut registration = env.registration().await;
    let created = registration
        .create_user(create_user_request(&code, &app_id, phone("p")))
        .await
        .expect("create")
        .into_inner();
    registration
        .create_user(create_user_request(&code, &app_id, phone("p")))
        .await
        .expect("a retry");
    registration
        .create_user(create_user_request(&code, &app_id, phone("replayer")))
        .await
        .expect_err("a replay");
    let mut stream = registration
        .watch_install_status(authorized(
            pb::WatchInstallStatusRequest {},
            &created.install_token,
        ))
        .await
        .expect("watch")
        .into_inner();
    stream.next().await.expect("first").expect("ok");
    registration
        .reset_install(authorized(
            pb::ResetInstallRequest {},
            &created.install_token,
        ))
        .await
        .expect("reset");
    registration
        .get_install_status(authorized(
            pb::GetInstallStatusRequest {},
            &created.install_token,
        ))
        .await
        .expect_err("reset token");
    // A key that passes every offline check, so that its refusal is logged
    // by the lookup that compares hashes.
    let forged_key = with_wrong_secret(&api_key);
    env.authcode()
        .await
        .mint_auth_code(authorized(
            pb::MintAuthCodeRequest {
                external_id: "x".into(),
                app_id: String::new(),
                ..Default::default()
            },
            &forged_key,
        ))
        .await
        .expect_err("a wrong secret");
    let unscoped_key = insert_api_key(&env, &app_id, &[]).await;
    env.authcode()
        .await
        .mint_auth_code(authorized(
            pb::MintAuthCodeRequest {
                external_id: "x".into(),
                app_id: String::new(),
                ..Default::default()
            },
            &unscoped_key,
        ))
        .await
        .expect_err("a key without the user_link scope");

    let logs = recorder.text();
    assert!(
        logs.contains("auth code redeemed"),
        "the flow was logged at all"
    );
    assert!(
        logs.contains("API key refused"),
        "the refusal of the wrong secret was logged"
    );
    for (what, secret) in [
        ("API key", api_key.as_str()),
        ("API key secret", api_key_secret(&api_key)),
        ("wrong API key", forged_key.as_str()),
        ("wrong API key secret", api_key_secret(&forged_key)),
        ("unscoped API key", unscoped_key.as_str()),
        ("auth code", code.as_str()),
        ("install token", created.install_token.as_str()),
        (
            "install token secret",
            &created.install_token["dlit_".len()..],
        ),
        ("admin token", ADMIN_TOKEN),
    ] {
        assert!(!logs.contains(secret), "the {what} appears in the logs");
    }
}
