//! Logs, traces and metrics.
//!
//! - Logs: readable lines for people, JSON lines in production
//!   (`LOG_FORMAT=json`), filtered by `RUST_LOG`. The filter applies to the
//!   log output only: spans exported as traces keep their own filter, so a
//!   quiet log level never switches tracing off.
//! - Traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans are exported
//!   over OTLP/gRPC, and the W3C trace context of incoming calls is honoured
//!   (see [`crate::rpc`]).
//! - Metrics: Prometheus text on `METRICS_ADDR` (off when unset), every
//!   metric named and described in [`crate::metrics_catalog`]; store
//!   operations are timed from their spans ([`crate::metrics_stores`]).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{ConfigError, LOG_FORMAT, optional, parsed_or};
use crate::metrics_catalog;
use crate::metrics_stores::StoreTimingLayer;

/// The OTLP collector endpoint, e.g. `http://otel-collector:4317`.
pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The service name reported with every span.
pub const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
/// Where to serve Prometheus metrics, e.g. `0.0.0.0:9090`.
pub const METRICS_ADDR: &str = "METRICS_ADDR";

/// The log filter used when `RUST_LOG` is unset: the services at `info`, the
/// HTTP/2 stack quiet.
const DEFAULT_LOG_FILTER: &str = "info,h2=warn,hyper=warn,tower=warn";
/// The target of the spans made to be exported: the span of each RPC and its
/// Postgres and Redis children (`#[tracing::instrument(target =
/// "devicelink::span", level = "debug")]`, the same string). At `debug`, the
/// default log filter leaves them out, so that logs do not format every
/// span's fields on every call, and with no exporter configured they are
/// not even created; the trace filter turns them on.
pub const SPAN_TARGET: &str = "devicelink::span";
/// What is exported as traces: everything at `info` and above and the spans
/// of [`SPAN_TARGET`], but the transport and the exporter itself, which
/// would otherwise trace its own exports.
const TRACE_FILTER: &str = "info,devicelink::span=debug,h2=off,hyper=off,hyper_util=off,tower=off,tonic=off,opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off";
/// How long shutdown waits for the last spans to be exported.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

/// How telemetry is set up.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// The name spans are reported under.
    pub service_name: String,
    /// JSON log lines instead of readable ones.
    pub json_logs: bool,
    /// Where to export spans; `None` exports nothing.
    pub otlp_endpoint: Option<String>,
    /// Where to serve Prometheus metrics; `None` serves none.
    pub metrics_addr: Option<SocketAddr>,
}

impl TelemetryConfig {
    /// Reads `LOG_FORMAT`, `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`
    /// and `METRICS_ADDR`.
    pub fn from_env(default_service_name: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            service_name: optional(OTEL_SERVICE_NAME)
                .unwrap_or_else(|| default_service_name.to_owned()),
            json_logs: optional(LOG_FORMAT)
                .is_some_and(|format| format.eq_ignore_ascii_case("json")),
            otlp_endpoint: optional(OTEL_EXPORTER_OTLP_ENDPOINT),
            metrics_addr: match optional(METRICS_ADDR) {
                Some(_) => Some(parsed_or(METRICS_ADDR, ([0, 0, 0, 0], 9090).into())?),
                None => None,
            },
        })
    }
}

/// What must be flushed before the process exits.
#[derive(Debug, Default)]
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered, waiting at most a few seconds.
    pub fn shutdown(self) {
        if let Some(provider) = self.tracer_provider
            && let Err(error) = provider.shutdown_with_timeout(FLUSH_TIMEOUT)
        {
            tracing::warn!(error = %error, "could not flush the last spans");
        }
    }
}

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built.
    #[error("cannot build the OTLP exporter")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// The metrics endpoint could not be started.
    #[error("cannot serve metrics")]
    Metrics(#[from] metrics_exporter_prometheus::BuildError),
}

/// Installs logging, tracing and metrics. Must run inside the tokio runtime
/// (the exporters spawn onto it). A second call in one process (tests start
/// several services) leaves the first set-up in place.
pub fn init(config: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let log_filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let logs = if config.json_logs {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed()
    } else {
        // Colours only for a person at a terminal: they would be noise in a
        // log file or a pod's log, and formatting them costs every span.
        tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stdout().is_terminal())
            .boxed()
    };
    let mut telemetry = Telemetry::default();
    let traces = match &config.otlp_endpoint {
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    Resource::builder()
                        .with_service_name(config.service_name.clone())
                        .build(),
                )
                .build();
            let tracer = provider.tracer("devicelink");
            telemetry.tracer_provider = Some(provider);
            Some(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(EnvFilter::new(TRACE_FILTER)),
            )
        }
        None => None,
    };
    // Store spans are made only when their timings are recorded.
    let store_timings = config.metrics_addr.map(|_| StoreTimingLayer::filtered());
    let installed = tracing_subscriber::registry()
        .with(logs.with_filter(log_filter))
        .with(traces)
        .with(store_timings)
        .try_init()
        .is_ok();
    if !installed {
        return Ok(Telemetry::default());
    }
    if let Some(addr) = config.metrics_addr {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .set_buckets(&[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ])?
            .install()?;
        metrics_catalog::describe_all();
        metrics_catalog::record_build_info();
        tracing::info!(%addr, "serving Prometheus metrics");
    }
    Ok(telemetry)
}

/// For a service binary: [`init`] from the environment, exiting with
/// [`crate::config::EXIT_BAD_CONFIG`] on a bad variable and 1 when an
/// exporter cannot be set up.
pub fn init_or_exit(service_name: &str) -> Telemetry {
    let config = match TelemetryConfig::from_env(service_name) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{service_name}: bad configuration: {error}");
            std::process::exit(crate::config::EXIT_BAD_CONFIG);
        }
    };
    match init(&config) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("{service_name}: {}", crate::status::error_chain(&error));
            std::process::exit(1);
        }
    }
}
