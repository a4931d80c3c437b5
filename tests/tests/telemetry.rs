//! Traces reach an OTLP collector, continue the caller's W3C trace context,
//! follow the RPC conventions, and carry no secret; metrics are served in
//! Prometheus text. The collector is a real
//! OTLP/gRPC server run by this test; this binary installs the process-wide
//! telemetry before any service starts.

use std::sync::{Arc, Mutex, PoisonError};

use devicelink_e2e::prometheus::{free_metrics_addr, scrape};
use devicelink_e2e::*;
use devicelink_shared::pb;
use devicelink_shared::telemetry::{TelemetryConfig, init};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;

/// Everything the collector received.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    fn spans(&self) -> Vec<Span> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .flat_map(|request| &request.resource_spans)
            .flat_map(|resource| &resource.scope_spans)
            .flat_map(|scope| scope.spans.clone())
            .collect()
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|attribute| attribute.key == key)
        .and_then(|attribute| attribute.value.as_ref()?.value.as_ref())
        .map(|value| match value {
            Value::StringValue(text) => text.clone(),
            Value::IntValue(number) => number.to_string(),
            other => format!("{other:?}"),
        })
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_continue_the_callers_trace_and_carry_no_secret() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the collector");
    let collector_addr = listener.local_addr().expect("collector address");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let metrics_addr = free_metrics_addr();
    let telemetry = init(&TelemetryConfig {
        service_name: "devicelink-test".into(),
        json_logs: false,
        otlp_endpoint: Some(format!("http://{collector_addr}")),
        metrics_addr: Some(metrics_addr),
    })
    .expect("telemetry");

    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let mut request = authorized(
        pb::MintAuthCodeRequest {
            external_id: "traced-user".into(),
            app_id: String::new(),
            ..Default::default()
        },
        &api_key,
    );
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01")
            .parse()
            .expect("ascii"),
    );
    let code = env
        .authcode()
        .await
        .mint_auth_code(request)
        .await
        .expect("mint")
        .into_inner()
        .auth_code;
    let created = env
        .registration()
        .await
        .create_user(create_user_request(&code, &app_id, phone("p")))
        .await
        .expect("create")
        .into_inner();
    let metrics = scrape(metrics_addr).await;
    for expected in [
        "devicelink_grpc_requests_total{method=\"devicelink.v1.AuthCodeService/MintAuthCode\",code=\"Ok\"} 1",
        "devicelink_grpc_requests_total{method=\"devicelink.v1.RegistrationService/CreateUser\",code=\"Ok\"} 1",
        "devicelink_grpc_request_duration_seconds_bucket{method=\"devicelink.v1.AuthCodeService/MintAuthCode\"",
        "devicelink_auth_codes_minted_total 1",
        "devicelink_auth_codes_redeemed_total 1",
        "devicelink_activations_total 1",
    ] {
        assert!(
            metrics.contains(expected),
            "{expected} missing from:\n{metrics}"
        );
    }
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .expect("flushed");

    let spans = collector.spans();
    let traced: Vec<&Span> = spans
        .iter()
        .filter(|span| hex(&span.trace_id) == TRACE_ID)
        .collect();
    let server = traced
        .iter()
        .find(|span| span.name == "devicelink.v1.AuthCodeService/MintAuthCode")
        .unwrap_or_else(|| panic!("no server span in the caller's trace: {traced:#?}"));
    assert_eq!(hex(&server.parent_span_id), PARENT_SPAN_ID);
    assert_eq!(attribute(server, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(
        attribute(server, "rpc.service").as_deref(),
        Some("devicelink.v1.AuthCodeService")
    );
    assert_eq!(
        attribute(server, "rpc.method").as_deref(),
        Some("MintAuthCode")
    );
    assert_eq!(
        attribute(server, "rpc.grpc.status_code").as_deref(),
        Some("0")
    );
    for child in ["postgres.api_key", "redis.store_auth_code"] {
        let span = traced
            .iter()
            .find(|span| span.name == child)
            .unwrap_or_else(|| panic!("no {child} span in the trace"));
        assert_eq!(
            hex(&span.parent_span_id),
            hex(&server.span_id),
            "{child} is a child of the MintAuthCode server span"
        );
    }

    // The redemption came without a traceparent: its server span starts a
    // trace, and its Postgres work is a child in that same trace.
    let redemption_server = spans
        .iter()
        .find(|span| span.name == "devicelink.v1.RegistrationService/CreateUser")
        .expect("the CreateUser server span");
    let redeem = spans
        .iter()
        .find(|span| span.name == "postgres.redeem")
        .expect("the redemption's Postgres span");
    assert_eq!(
        hex(&redeem.trace_id),
        hex(&redemption_server.trace_id),
        "the Postgres span is in the call's trace"
    );
    assert_eq!(
        hex(&redeem.parent_span_id),
        hex(&redemption_server.span_id),
        "the Postgres span is a child of the CreateUser server span"
    );

    let everything = format!(
        "{:?}",
        collector.0.lock().unwrap_or_else(PoisonError::into_inner)
    );
    for secret in [
        &api_key,
        &code,
        &created.install_token,
        &ADMIN_TOKEN.to_owned(),
    ] {
        assert!(
            !everything.contains(secret.as_str()),
            "a secret reached the collector"
        );
    }
}
