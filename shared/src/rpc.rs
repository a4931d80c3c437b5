//! One span and one set of metrics per gRPC call, for every service.
//!
//! The span is made for export (see [`crate::telemetry::SPAN_TARGET`]): it
//! costs nothing while no exporter is configured and `RUST_LOG` does not
//! ask for it.
//!
//! The span follows the OpenTelemetry RPC conventions (`rpc.system`,
//! `rpc.service`, `rpc.method`, `rpc.grpc.status_code`) and takes the W3C
//! `traceparent` of the incoming call as its parent, so a caller's trace
//! continues through devicelink. Metrics:
//! [`GRPC_REQUESTS`](crate::metrics_catalog::GRPC_REQUESTS) by method and
//! status code,
//! [`GRPC_REQUEST_DURATION`](crate::metrics_catalog::GRPC_REQUEST_DURATION)
//! by method.
//!
//! Labels and span names come from a fixed set: a method the services
//! serve (read once from the compiled-in descriptor sets), or `unknown`.
//! The raw request path is never a label, so a caller sending ever-new
//! paths cannot make ever-new series that are never dropped.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use opentelemetry::propagation::Extractor;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics_catalog;

/// Wraps a gRPC server's services; add it with `Server::builder().layer(..)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcLayer;

impl<S> tower::Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcService { inner }
    }
}

/// The service [`RpcLayer`] wraps around another.
#[derive(Debug, Clone)]
pub struct RpcService<S> {
    inner: S,
}

/// The future of a wrapping service's call.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The inner service of a wrapper, to call: the one that was polled ready
/// is the one to call, and a fresh clone takes its place for the next call
/// (tower's rule for services called from a spawned future).
pub(crate) fn take_polled<S: Clone>(slot: &mut S) -> S {
    let clone = slot.clone();
    std::mem::replace(slot, clone)
}

impl<S, B, ResponseBody> tower::Service<http::Request<B>> for RpcService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResponseBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = known_method(request.uri().path()).unwrap_or(UNKNOWN_METHOD);
        let (service, method) = path.split_once('/').unwrap_or((path, path));
        let span = tracing::debug_span!(
            target: crate::telemetry::SPAN_TARGET,
            "grpc",
            otel.name = path,
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        if !span.is_disabled() {
            let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
                propagator.extract(&HeaderExtractor(request.headers()))
            });
            let _ = span.set_parent(parent);
        }
        let mut inner = take_polled(&mut self.inner);
        let started = Instant::now();
        Box::pin(async move {
            let result = inner.call(request).instrument(span.clone()).await;
            let code = match &result {
                Ok(response) => grpc_status(response.headers()),
                Err(_) => tonic::Code::Unknown,
            };
            span.record("rpc.grpc.status_code", code as i32);
            if code != tonic::Code::Ok {
                span.record("otel.status_code", "ERROR");
            }
            metrics::counter!(
                metrics_catalog::GRPC_REQUESTS,
                "method" => path,
                "code" => code_name(code),
            )
            .increment(1);
            metrics::histogram!(metrics_catalog::GRPC_REQUEST_DURATION, "method" => path)
                .record(started.elapsed().as_secs_f64());
            result
        })
    }
}

/// The label of a call to a path no service serves.
pub const UNKNOWN_METHOD: &str = "unknown";

/// `package.Service/Method` of a request path the services serve, as a
/// string that lives as long as the process; `None` for any other path.
pub fn known_method(path: &str) -> Option<&'static str> {
    static KNOWN: OnceLock<HashSet<String>> = OnceLock::new();
    let known = KNOWN.get_or_init(|| {
        [
            crate::pb::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ]
        .into_iter()
        .flat_map(method_paths)
        .collect()
    });
    known
        .get(path.strip_prefix('/').unwrap_or(path))
        .map(String::as_str)
}

/// Every `package.Service/Method` an encoded descriptor set declares.
fn method_paths(encoded: &[u8]) -> Vec<String> {
    use prost::Message as _;
    let Ok(set) = prost_types::FileDescriptorSet::decode(encoded) else {
        tracing::error!("a compiled-in descriptor set does not decode");
        return Vec::new();
    };
    let mut paths = Vec::new();
    for file in &set.file {
        for service in &file.service {
            for method in &service.method {
                paths.push(format!(
                    "{}.{}/{}",
                    file.package(),
                    service.name(),
                    method.name()
                ));
            }
        }
    }
    paths
}

/// The canonical name of a status code, without allocating.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "Ok",
        Code::Cancelled => "Cancelled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// The status of a response whose headers carry it (errors are sent
/// "trailers-only"); a response without it is a success so far.
fn grpc_status(headers: &http::HeaderMap) -> tonic::Code {
    headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32)
}

/// Reads the W3C trace context from request headers.
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_served_methods_are_known() {
        for served in [
            "/devicelink.v1.AuthCodeService/MintAuthCode",
            "/devicelink.v1.RegistrationService/CreateUser",
            "/devicelink.v1.AdminService/CreateApp",
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            assert_eq!(known_method(served), Some(&served[1..]), "{served}");
        }
        for unserved in [
            "/devicelink.v1.AuthCodeService/Nope",
            "/devicelink.v1.AuthCodeService/",
            "/x",
            "",
            "/google.api.Http/Anything",
        ] {
            assert_eq!(known_method(unserved), None, "{unserved}");
        }
    }

    #[test]
    fn status_comes_from_the_headers() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(grpc_status(&headers), tonic::Code::Ok);
        headers.insert("grpc-status", "5".parse().expect("ascii"));
        assert_eq!(grpc_status(&headers), tonic::Code::NotFound);
        assert_eq!(
            code_name(tonic::Code::NotFound),
            format!("{:?}", tonic::Code::NotFound)
        );
    }
}
