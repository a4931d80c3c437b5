//! Activation arbitration end to end: which of a user's devices is active,
//! the same device again, and a device that holds another user.

use devicelink_e2e::*;
use devicelink_shared::pb;
use tonic::Code;

/// Links one user on each device in order; returns each response.
async fn link_in_order(env: &TestEnv, devices: Vec<pb::DeviceInfo>) -> Vec<pb::CreateUserResponse> {
    let (app_id, api_key) = env.app_with_key().await;
    let mut responses = Vec::new();
    for device in devices {
        responses.push(env.link(&app_id, &api_key, "arbitrated-user", device).await);
    }
    responses
}

async fn state_by_token(env: &TestEnv, token: &str) -> (pb::InstallState, pb::InstallStateReason) {
    let status = status_of_token(&mut env.registration().await, token)
        .await
        .expect("status");
    state(&status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tablet_after_a_phone_stays_inactive() {
    let env = TestEnv::start().await;
    let linked = link_in_order(&env, vec![phone("p"), tablet("t")]).await;
    assert_eq!(state_of(&linked[1].status), PHONE_PREFERRED);
    assert_eq!(linked[1].status.as_ref().expect("status").current_epoch, 1);
    assert_eq!(state_by_token(&env, &linked[0].install_token).await, ACTIVE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_after_a_tablet_takes_over() {
    let env = TestEnv::start().await;
    let linked = link_in_order(&env, vec![tablet("t"), phone("p")]).await;
    assert_eq!(state_of(&linked[1].status), ACTIVE);
    assert_eq!(
        state_by_token(&env, &linked[0].install_token).await,
        SUPERSEDED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_after_a_phone_takes_over() {
    let env = TestEnv::start().await;
    let linked = link_in_order(&env, vec![phone("p1"), phone("p2")]).await;
    assert_eq!(state_of(&linked[1].status), ACTIVE);
    assert_eq!(
        state_by_token(&env, &linked[0].install_token).await,
        SUPERSEDED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tablet_after_a_tablet_takes_over() {
    let env = TestEnv::start().await;
    let linked = link_in_order(&env, vec![tablet("t1"), tablet("t2")]).await;
    assert_eq!(state_of(&linked[1].status), ACTIVE);
    assert_eq!(
        state_by_token(&env, &linked[0].install_token).await,
        SUPERSEDED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_device_again_reactivates_its_install() {
    let env = TestEnv::start().await;
    let linked = link_in_order(&env, vec![phone("a"), phone("b"), phone("a")]).await;
    assert_eq!(
        linked[2].install_id, linked[0].install_id,
        "no second install for device a"
    );
    assert_eq!(state_of(&linked[2].status), ACTIVE);
    assert_eq!(linked[2].status.as_ref().expect("status").epoch, 3);
    assert_eq!(
        state_by_token(&env, &linked[1].install_token).await,
        SUPERSEDED
    );
    let old = status_of_token(&mut env.registration().await, &linked[0].install_token)
        .await
        .expect_err("the replaced token no longer works");
    assert_eq!(old.code(), Code::Unauthenticated);
    assert_eq!(env.count("SELECT count(*) FROM installs").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_holding_another_user_is_refused_until_reset() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let mut registration = env.registration().await;
    let alice = env.link(&app_id, &api_key, "alice", phone("shared")).await;

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
