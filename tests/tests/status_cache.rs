//! The status cache across replicas: a status served from one replica's
//! cache follows a change made on another.
//!
//! A binary of its own with a single test: whether a read was a cache hit
//! is read from the process-wide `devicelink_status_cache_hits_total`
//! counter, which only this test may move.

use std::time::{Duration, Instant};

use devicelink_e2e::prometheus::{counter, free_metrics_addr, scrape};
use devicelink_e2e::*;
use devicelink_shared::telemetry::{TelemetryConfig, init};

const CACHE_HITS: &str = "devicelink_status_cache_hits_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_read_on_one_replica_follows_a_takeover_made_on_another() {
    let metrics_addr = free_metrics_addr();
    let _telemetry = init(&TelemetryConfig {
        service_name: "devicelink-test".into(),
        json_logs: false,
        otlp_endpoint: None,
        metrics_addr: Some(metrics_addr),
    })
    .expect("telemetry");
    let env = TestEnv::start_with(TestOptions {
        registration_replicas: 2,
        ..Default::default()
    })
    .await;
    let (app_id, api_key) = env.app_with_key().await;
    let first = env.link(&app_id, &api_key, "u", phone("a")).await;
    let mut first_replica = env.registration_replica(0).await;

    // Read until replica 0 answers from its cache: the cache is bypassed
    // until the replica's change listener is connected.
    let hits_before = counter(&scrape(metrics_addr).await, CACHE_HITS);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = status_of_token(&mut first_replica, &first.install_token)
            .await
            .expect("status");
        assert_eq!(state(&status), ACTIVE);
        if counter(&scrape(metrics_addr).await, CACHE_HITS) > hits_before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica 0 never answered from its cache"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let code = env.mint(&api_key, "u").await;
    env.registration_replica(1)
        .await
        .create_user(create_user_request(&code, &app_id, phone("b")))
        .await
        .expect("the takeover on replica 1");
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let status = status_of_token(&mut first_replica, &first.install_token)
            .await
            .expect("status");
        if state(&status) == SUPERSEDED {
            break;
        }
        assert!(Instant::now() < deadline, "replica 0 kept a stale status");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
