//! Audit events of what changes nothing in Postgres (refused redemptions,
//! mints, refused keys, rate limits), appended through the buffered
//! writer: each appears once for its call, within a flush; and replays,
//! written with their Postgres record.

use std::time::{Duration, Instant};

use devicelink_e2e::audit_events::{
    FLUSHED_WITHIN, audit_events, audit_events_on_replica, await_audit_events,
};
use devicelink_e2e::*;
use devicelink_shared::pb;
use devicelink_shared::pb::audit_event::Payload;
use pb::AuditEventType as T;
use tonic::Code;

fn refusal_of(event: &pb::AuditEvent) -> pb::RedemptionRefusal {
    match &event.payload {
        Some(Payload::RedemptionRefused(refused)) => {
            pb::RedemptionRefusal::try_from(refused.refusal).expect("a known refusal")
        }
        other => panic!("not a refused redemption: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_redemptions_replays_and_mints_each_write_one_event() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let (other_app, _) = env.app_with_key().await;
    let mut registration = env.registration().await;

    let linked = env.link(&app_id, &api_key, "hanna", phone("one")).await;
    // The code of a device that holds another user.
    let held = env.mint(&api_key, "ivan").await;
    registration
        .create_user(create_user_request(&held, &app_id, phone("one")))
        .await
        .expect_err("the device holds hanna");
    // A code presented for another app: codes are looked up under the app
    // named, so to that app it is unknown.
    let elsewhere = env.mint(&api_key, "jana").await;
    let status = registration
        .create_user(create_user_request(&elsewhere, &other_app, phone("two")))
        .await
        .expect_err("another app's code");
    assert_eq!(status.code(), Code::NotFound);
    // A well-formed code that was never minted.
    let made_up = devicelink_shared::auth_code::AuthCode::generate();
    let status = registration
        .create_user(create_user_request(
            made_up.expose(),
            &app_id,
            phone("three"),
        ))
        .await
        .expect_err("an unknown code");
    assert_eq!(status.code(), Code::NotFound);
    // A replay, twice: a used code from another device.
    let used = env.mint(&api_key, "lena").await;
    registration
        .create_user(create_user_request(&used, &app_id, phone("four")))
        .await
        .expect("redeem");
    for _ in 0..2 {
        registration
            .create_user(create_user_request(&used, &app_id, phone("five")))
            .await
            .expect_err("a replay");
    }

    // Minted: hanna's, ivan's, jana's and lena's codes, each named by its
    // code id, none naming the person.
    let minted = await_audit_events(&env, &app_id, &[T::CodeMinted], 4).await;
    let minted_code_ids: Vec<&str> = minted
        .iter()
        .map(|event| match &event.payload {
            Some(Payload::CodeMinted(code)) => code.code_id.as_str(),
            other => panic!("not a mint: {other:?}"),
        })
        .collect();
    assert!(minted.iter().all(|event| event.api_key_id.len() > 4
        && event.external_id_hash.is_empty()
        && event.user_id.is_empty()));
    assert!(minted_code_ids.iter().all(|code_id| code_id.len() == 32));
    let hanna_redeemed = audit_events(&env, &app_id, &[T::CodeRedeemed])
        .await
        .into_iter()
        .find(|event| event.user_id == linked.user_id)
        .expect("hanna's redemption");
    let Some(Payload::CodeRedeemed(redeemed)) = &hanna_redeemed.payload else {
        panic!("not a redemption: {hanna_redeemed:?}");
    };
    assert_eq!(
        minted_code_ids
            .iter()
            .filter(|code_id| **code_id == redeemed.code_id)
            .count(),
        1,
        "exactly one mint carries the code id of hanna's redemption"
    );
    assert_eq!(hanna_redeemed.external_id_hash.len(), 64);

    // The other-app refusal is recorded under the app the caller named.
    let refused = await_audit_events(&env, &app_id, &[T::RedemptionRefused], 2).await;
    let other = await_audit_events(&env, &other_app, &[T::RedemptionRefused], 1).await;
    let mut refusals: Vec<_> = refused.iter().map(refusal_of).collect();
    let mut expected = vec![
        pb::RedemptionRefusal::UnknownOrExpired,
        pb::RedemptionRefusal::DeviceHoldsAnotherUser,
        pb::RedemptionRefusal::UnknownOrExpired,
    ];
    expected.sort();
    refusals.extend(other.iter().map(refusal_of));
    refusals.sort();
    assert_eq!(refusals, expected, "{refused:#?} {other:#?}");
    assert!(
        refused
            .iter()
            .chain(&other)
            .all(|event| event.outcome == pb::AuditOutcome::Refused as i32)
    );

    let replays = await_audit_events(&env, &app_id, &[T::ReplayRefused], 2).await;
    assert!(replays.iter().all(|event| !event.user_id.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_refused_writes_one_event_per_refusal() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let key_id = env.revoke_only_key(&app_id).await;
    let mut authcode = env.authcode().await;
    let mut refusals = 0;
    for _ in 0..3 {
        let status = authcode
            .mint_auth_code(authorized(
                pb::MintAuthCodeRequest {
                    external_id: "mona".into(),
                    ..Default::default()
                },
                &api_key,
            ))
            .await
            .expect_err("a revoked key");
        assert_eq!(status.code(), Code::Unauthenticated);
        refusals += 1;
    }
    let refused = await_audit_events(&env, &app_id, &[T::ApiKeyRefused], refusals).await;
    assert!(refused.iter().all(|event| event.api_key_id == key_id
        && event.reason == "revoked"
        && event.payload == Some(Payload::ApiKeyRefused(pb::ApiKeyRefused { revoked: true }))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_refusals_are_one_event_per_scope_and_minute() {
    let mut env = TestEnv::start_with(TestOptions {
        registration_replicas: 2,
        ..Default::default()
    })
    .await;
    let (app_id, api_key) = env.app_with_key().await;
    env.admin()
        .await
        .set_app_limits(authorized(
            pb::SetAppLimitsRequest {
                app_id: app_id.clone(),
                limits: Some(pb::AppLimits {
                    redeem_per_device: Some("1/min".into()),
                    ..Default::default()
                }),
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("limit redemptions per device");
    // The limit applies within its cache's few seconds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut registration = env.registration_replica(0).await;
    let mut limited = 0;
    for n in 0..5 {
        let code = env.mint(&api_key, &format!("nils-{n}")).await;
        match registration
            .create_user(create_user_request(&code, &app_id, phone("busy")))
            .await
        {
            Ok(_) => {}
            Err(status) if status.code() == Code::ResourceExhausted => limited += 1,
            Err(status) => panic!("{status:?}"),
        }
    }
    assert!(limited >= 3, "the limit refused most calls: {limited}");
    // A replica writes a minute's count once the minute ends, or when it
    // drains: shut replica 0 down and read through replica 1.
    env.shut_down_registration(0)
        .await
        .expect("the task ran")
        .expect("a clean drain");
    let deadline = Instant::now() + FLUSHED_WITHIN;
    let events = loop {
        let events = audit_events_on_replica(&env, 1, &app_id, &[T::RateLimited]).await;
        if !events.is_empty() || Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let counted: u64 = events
        .iter()
        .map(|event| match &event.payload {
            Some(Payload::RateLimited(rate_limited)) => {
                assert_eq!(rate_limited.scope, "redeem_per_device");
                rate_limited.refused_calls
            }
            other => panic!("not a rate_limited event: {other:?}"),
        })
        .sum();
    assert_eq!(counted, limited, "every refusal counted once: {events:#?}");
    assert!(
        events.len() <= 2,
        "one event per minute (the calls may straddle two): {events:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mint_events_off_mints_write_none_and_refusals_still_do() {
    let env = TestEnv::start_with(TestOptions {
        audit_mint_events: false,
        ..Default::default()
    })
    .await;
    let (app_id, api_key) = env.app_with_key().await;
    for n in 0..3 {
        env.mint(&api_key, &format!("otto-{n}")).await;
    }
    // A refusal after the mints, with another app's key, revoked before
    // its first use (a key in use is cached for a few seconds).
    let (other_app, other_key) = env.app_with_key().await;
    env.revoke_only_key(&other_app).await;
    let status = env
        .authcode()
        .await
        .mint_auth_code(authorized(
            pb::MintAuthCodeRequest {
                external_id: "otto-3".into(),
                ..Default::default()
            },
            &other_key,
        ))
        .await
        .expect_err("a revoked key");
    assert_eq!(status.code(), Code::Unauthenticated);
    // The buffer is written in order: once the refusal, appended after the
    // mints, is in, any event of theirs would be too.
    await_audit_events(&env, &other_app, &[T::ApiKeyRefused], 1).await;
    assert_eq!(
        audit_events(&env, &app_id, &[T::CodeMinted]).await,
        Vec::new(),
        "no mint was recorded"
    );
}
