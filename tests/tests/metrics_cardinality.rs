//! Hostile callers cannot grow the metrics: calls to paths no service
//! serves are all labelled `unknown`, so ten thousand made-up paths leave
//! the number of series as it was. This binary installs the process-wide
//! metrics recorder, so it holds this one test.

use devicelink_e2e::prometheus::{free_metrics_addr, scrape, series};
use devicelink_e2e::*;
use devicelink_shared::telemetry::{TelemetryConfig, init};
use futures_util::StreamExt;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

/// How many made-up paths the flood sends.
const FLOOD: usize = 10_000;
/// How many of them go over one connection.
const CALLS_PER_CONNECTION: usize = 500;

/// Calls `path` with an empty message; the answer is beside the point.
async fn call(channel: Channel, path: String) -> tonic::Code {
    let mut grpc = tonic::client::Grpc::new(channel);
    if grpc.ready().await.is_err() {
        return tonic::Code::Unavailable;
    }
    let path = PathAndQuery::try_from(path).expect("a valid path");
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    match grpc.unary(tonic::Request::new(()), path, codec).await {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    }
}

/// Every series of the per-call metrics.
fn call_series(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = [
        "devicelink_grpc_requests_total",
        "devicelink_grpc_request_duration_seconds",
    ]
    .into_iter()
    .flat_map(|metric| series(text, metric))
    .map(|line| {
        line.rsplit_once(' ')
            .map_or(line, |(name, _)| name)
            .to_owned()
    })
    .collect();
    lines.sort();
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_paths_add_no_metric_series() {
    let metrics_addr = free_metrics_addr();
    let telemetry = init(&TelemetryConfig {
        service_name: "devicelink-test".into(),
        json_logs: false,
        otlp_endpoint: None,
        metrics_addr: Some(metrics_addr),
    })
    .expect("telemetry");
    let env = TestEnv::start().await;
    let channel = connect(env.registration_addrs[0]).await;
    // One made-up call first, so the `unknown` series exist, and one real
    // one, to show that served methods keep their own label.
    let first = call(
        channel.clone(),
        "/devicelink.v1.RegistrationService/Nope".into(),
    )
    .await;
    assert_eq!(first, tonic::Code::Unimplemented);
    env.app_with_key().await;
    let before = call_series(&scrape(metrics_addr).await);
    assert!(
        before
            .iter()
            .any(|line| line.contains("method=\"unknown\"")),
        "{before:#?}"
    );
    assert!(
        before
            .iter()
            .any(|line| line.contains("method=\"devicelink.v1.AdminService/CreateApp\"")),
        "{before:#?}"
    );

    // A new connection every CALLS_PER_CONNECTION calls: a call refused
    // before its body is read may make the server reset the stream when the
    // body arrives, and h2 ends a connection after MAX_LOCAL_ERROR_RESETS of
    // those (see `devicelink_shared::hardening`).
    let mut channels = Vec::new();
    for _ in 0..FLOOD.div_ceil(CALLS_PER_CONNECTION) {
        channels.push(connect(env.registration_addrs[0]).await);
    }
    let codes: Vec<tonic::Code> = futures_util::stream::iter(0..FLOOD)
        .map(|index| {
            let channel = &channels[index / CALLS_PER_CONNECTION];
            let id = uuid::Uuid::new_v4().simple();
            // Half under a routed service's prefix, half anywhere at all.
            let path = if index % 2 == 0 {
                format!("/devicelink.v1.RegistrationService/M{id}")
            } else {
                format!("/p{id}/m{index}")
            };
            call(channel.clone(), path)
        })
        .buffered(32)
        .collect()
        .await;
    let others: Vec<_> = codes
        .iter()
        .filter(|code| **code != tonic::Code::Unimplemented)
        .collect();
    assert!(
        others.is_empty(),
        "every made-up path is UNIMPLEMENTED, not {others:?}"
    );

    let after_text = scrape(metrics_addr).await;
    let after = call_series(&after_text);
    assert_eq!(before, after, "the flood added or removed series");
    let unknown_calls: f64 = series(&after_text, "devicelink_grpc_requests_total")
        .filter(|line| line.contains("method=\"unknown\""))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(unknown_calls, (FLOOD + 1) as f64, "every call is counted");
    drop(env);
    telemetry.shutdown();
}
