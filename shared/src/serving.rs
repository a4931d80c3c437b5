//! What makes a devicelink service a good citizen of gRPC and Kubernetes:
//! health checking that follows the stores, server reflection, and a
//! graceful drain on shutdown.
//!
//! On shutdown a service reports NOT_SERVING, fires its [`DrainSignal`] (open
//! watch streams end, the server stops accepting), lets in-flight calls
//! finish within a grace period, and returns.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// The health name a liveness probe asks for: SERVING for as long as the
/// process serves at all, whatever the stores do, so that an outage of
/// Postgres or Redis makes replicas unready, never restarts them.
pub const LIVENESS_SERVICE: &str = "liveness";

/// How often the stores are probed for the health service.
const HEALTH_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Tells long-lived work (watch streams, background tasks, the server's
/// accept loop) that the service is draining. Cheap to clone.
#[derive(Clone, Debug)]
pub struct DrainSignal(watch::Receiver<bool>);

impl DrainSignal {
    /// Resolves once draining has begun (at once if it already has).
    pub async fn requested(&mut self) {
        let _ = self.0.wait_for(|draining| *draining).await;
    }

    /// Whether draining has begun.
    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once draining has begun, owning the signal: what a server
    /// takes as its shutdown future.
    pub async fn into_requested(mut self) {
        self.requested().await;
    }
}

/// Starts a drain; held by whoever decides when the service stops.
#[derive(Debug)]
pub struct DrainTrigger(watch::Sender<bool>);

impl DrainTrigger {
    /// Begins draining.
    pub fn fire(&self) {
        self.0.send_replace(true);
    }
}

/// A new drain pair.
pub fn drain_channel() -> (DrainTrigger, DrainSignal) {
    let (sender, receiver) = watch::channel(false);
    (DrainTrigger(sender), DrainSignal(receiver))
}

/// The reflection services, v1 and v1alpha (grpcurl 1.8 speaks only the
/// latter), describing the health service and the services of `served`
/// alone: a listener's reflection lists what that listener answers, and a
/// proto file declaring a service served elsewhere (the private admin
/// API, on the public port) is not described at all.
pub fn reflection(
    served: &[&'static str],
) -> (
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
) {
    let contracts = contracts_of(served);
    let builder = || {
        let builder = tonic_reflection::server::Builder::configure()
            .register_file_descriptor_set(contracts.clone())
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name(HEALTH_SERVICE);
        served
            .iter()
            .fold(builder, |builder, name| builder.with_service_name(*name))
    };
    #[allow(clippy::expect_used)]
    let v1 = builder()
        .build_v1()
        .expect("the compiled-in descriptor sets are valid");
    #[allow(clippy::expect_used)]
    let v1alpha = builder()
        .build_v1alpha()
        .expect("the compiled-in descriptor sets are valid");
    (v1, v1alpha)
}

/// The health service's full name, always described.
const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

/// devicelink's descriptor set without the files that declare a service
/// not in `served`. (Decoding drops the `google.api.http` options, which
/// reflection clients do not need; the gateway reads the full set.)
fn contracts_of(served: &[&str]) -> prost_types::FileDescriptorSet {
    use prost::Message as _;
    #[allow(clippy::expect_used)]
    let mut set = prost_types::FileDescriptorSet::decode(crate::pb::FILE_DESCRIPTOR_SET)
        .expect("the compiled-in descriptor set decodes");
    set.file.retain(|file| {
        file.service.iter().all(|service| {
            let name = format!("{}.{}", file.package(), service.name());
            served.contains(&name.as_str())
        })
    });
    set
}

/// Keeps the health service truthful: [`LIVENESS_SERVICE`] is SERVING, and
/// the overall status (`""`) and each of `services` are SERVING while
/// `probe` says the stores answer, NOT_SERVING
/// while they do not and from the moment draining begins. The first probe is
/// reported before this returns, so the health service never answers
/// "service not registered" once the server accepts calls.
pub async fn start_health_watch<P, F>(
    reporter: HealthReporter,
    services: &'static [&'static str],
    probe: P,
    mut drain: DrainSignal,
) where
    P: Fn() -> F + Send + Sync + 'static,
    F: Future<Output = bool> + Send,
{
    reporter
        .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
        .await;
    let mut reported = None;
    report_health(&reporter, services, &probe, &drain, &mut reported).await;
    tokio::spawn(async move {
        while !drain.is_requested() {
            tokio::select! {
                () = tokio::time::sleep(HEALTH_PROBE_INTERVAL) => {}
                () = drain.requested() => {}
            }
            report_health(&reporter, services, &probe, &drain, &mut reported).await;
        }
    });
}

/// Probes once and reports the outcome when it changed.
async fn report_health<P, F>(
    reporter: &HealthReporter,
    services: &'static [&'static str],
    probe: &P,
    drain: &DrainSignal,
    reported: &mut Option<bool>,
) where
    P: Fn() -> F,
    F: Future<Output = bool>,
{
    let healthy = !drain.is_requested() && probe().await && !drain.is_requested();
    metrics::gauge!(crate::metrics_catalog::SERVING).set(if healthy { 1.0 } else { 0.0 });
    if *reported == Some(healthy) {
        return;
    }
    let status = if healthy {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    for name in std::iter::once(&"").chain(services) {
        reporter.set_service_status(*name, status).await;
    }
    if !healthy {
        tracing::warn!(draining = drain.is_requested(), "reporting NOT_SERVING");
    }
    *reported = Some(healthy);
}
