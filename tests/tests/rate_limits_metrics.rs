//! `devicelink_rate_limited_total{scope}` counts refused calls. A binary of
//! its own: the counter is process-wide, and only this test may move it.

mod rate_limits_support;

use devicelink_e2e::prometheus::{counter, free_metrics_addr, scrape};
use devicelink_shared::telemetry::{TelemetryConfig, init};
use rate_limits_support::*;

fn limited(metrics: &str, scope: &str) -> f64 {
    counter(
        metrics,
        &format!("devicelink_rate_limited_total{{scope=\"{scope}\"}}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_calls_are_counted_by_scope() {
    let metrics_addr = free_metrics_addr();
    let _telemetry = init(&TelemetryConfig {
        service_name: "devicelink-test".into(),
        json_logs: false,
        otlp_endpoint: None,
        metrics_addr: Some(metrics_addr),
    })
    .expect("telemetry");
    let env = start(&[(MINT_PER_KEY, "1/h"), (FAILED_AUTH_PER_ADDRESS, "1/h")]).await;
    let (_, api_key) = env.app_with_key().await;
    let mut authcode = env.authcode().await;
    mint(&mut authcode, &api_key, "alice")
        .await
        .expect("the key's one mint");
    for _ in 0..2 {
        assert_limited(mint(&mut authcode, &api_key, "alice").await, "mint_per_key");
    }
    let refused = mint(&mut authcode, &made_up_api_key(), "alice")
        .await
        .expect_err("an unknown key");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    assert_limited(
        mint(&mut authcode, &made_up_api_key(), "alice").await,
        "failed_auth_per_address",
    );

    let metrics = scrape(metrics_addr).await;
    assert_eq!(limited(&metrics, "mint_per_key"), 2.0, "{metrics}");
    assert_eq!(
        limited(&metrics, "failed_auth_per_address"),
        1.0,
        "{metrics}"
    );
    // A failed credential is not itself a limited call.
    assert_eq!(limited(&metrics, "install_per_token"), 0.0, "{metrics}");
}
