//! Watch streams are capped per install and per replica, and a stream gives
//! its place back however it ends: the client goes away, the install is
//! reset, the server drains.
//!
//! A binary of its own with a single test: the open streams are read from
//! the process-wide `devicelink_watch_streams` gauge, which only this test
//! may move.

use std::time::{Duration, Instant};

use devicelink_e2e::prometheus::{counter, free_metrics_addr, scrape};
use devicelink_e2e::*;
use devicelink_registration::config::{
    WATCH_STREAMS_PER_INSTALL, WATCH_STREAMS_PER_REPLICA, WatchCaps,
};
use devicelink_shared::pb;
use devicelink_shared::telemetry::{TelemetryConfig, init};
use tonic::Code;

const OPEN_STREAMS: &str = "devicelink_watch_streams";

/// Opens a watch stream of `install_token`, or answers why it was refused.
async fn try_watch(
    env: &TestEnv,
    install_token: &str,
) -> Result<tonic::Streaming<pb::WatchInstallStatusResponse>, tonic::Status> {
    let mut stream = env
        .registration()
        .await
        .watch_install_status(authorized(pb::WatchInstallStatusRequest {}, install_token))
        .await?
        .into_inner();
    next_status(&mut stream).await.expect("a first status");
    Ok(stream)
}

/// Opens a watch stream of `install_token` once a place is free, within
/// five seconds: a stream that ended gives its place back as soon as its
/// feeding task notices.
async fn watch_once_free(
    env: &TestEnv,
    install_token: &str,
) -> tonic::Streaming<pb::WatchInstallStatusResponse> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match try_watch(env, install_token).await {
            Ok(stream) => return stream,
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(
                    Instant::now() < deadline,
                    "no place was given back: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("watch refused: {status:?}"),
        }
    }
}

/// Waits, up to five seconds, for the gauge of open streams to read
/// `expected`.
async fn await_open_streams(metrics_addr: std::net::SocketAddr, expected: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let open = counter(&scrape(metrics_addr).await, OPEN_STREAMS);
        if open == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{OPEN_STREAMS} reads {open}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts a refusal is RESOURCE_EXHAUSTED and names `cap`.
fn assert_refused_by(outcome: Result<impl Sized, tonic::Status>, cap: &str) {
    let Err(refused) = outcome else {
        panic!("a stream past {cap} was opened");
    };
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains(cap), "{}", refused.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_are_capped_and_give_their_place_back_however_they_end() {
    let metrics_addr = free_metrics_addr();
    let _telemetry = init(&TelemetryConfig {
        service_name: "devicelink-test".into(),
        json_logs: false,
        otlp_endpoint: None,
        metrics_addr: Some(metrics_addr),
    })
    .expect("telemetry");
    let mut env = TestEnv::start_with(TestOptions {
        watch_caps: WatchCaps {
            per_install: 2,
            per_replica: 3,
        },
        ..Default::default()
    })
    .await;
    let (app_id, api_key) = env.app_with_key().await;
    let alice = env.link(&app_id, &api_key, "alice", phone("a")).await;
    let bob = env.link(&app_id, &api_key, "bob", phone("b")).await;
    let carol = env.link(&app_id, &api_key, "carol", phone("c")).await;

    // Per install: two streams, and a third is refused naming the cap.
    let alice_first = try_watch(&env, &alice.install_token).await.expect("first");
    let alice_second = try_watch(&env, &alice.install_token).await.expect("second");
    await_open_streams(metrics_addr, 2.0).await;
    assert_refused_by(
        try_watch(&env, &alice.install_token).await,
        WATCH_STREAMS_PER_INSTALL,
    );
    await_open_streams(metrics_addr, 2.0).await;

    // The client goes away: its stream's place comes back.
    drop(alice_first);
    let alice_third = watch_once_free(&env, &alice.install_token).await;

    // Per replica: bob's stream is the third and last place.
    let mut bob_stream = try_watch(&env, &bob.install_token).await.expect("bob");
    await_open_streams(metrics_addr, 3.0).await;
    assert_refused_by(
        try_watch(&env, &carol.install_token).await,
        WATCH_STREAMS_PER_REPLICA,
    );

    // The install is reset: its stream ends, and its place comes back.
    env.registration()
        .await
        .reset_install(authorized(pb::ResetInstallRequest {}, &bob.install_token))
        .await
        .expect("reset bob");
    let last = next_status(&mut bob_stream)
        .await
        .expect("the reset status");
    assert_eq!(
        pb::InstallState::try_from(last.state),
        Ok(pb::InstallState::Reset)
    );
    assert!(
        next_status(&mut bob_stream).await.is_none(),
        "bob's stream ends"
    );
    let carol_stream = watch_once_free(&env, &carol.install_token).await;
    await_open_streams(metrics_addr, 3.0).await;

    // The server drains: every stream ends, and every place comes back.
    let serving = env.shut_down_registration(0);
    for mut stream in [alice_second, alice_third, carol_stream] {
        assert!(next_status(&mut stream).await.is_none(), "drained");
    }
    await_open_streams(metrics_addr, 0.0).await;
    tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("the server stops after draining")
        .expect("the task ran")
        .expect("a clean stop");
}
