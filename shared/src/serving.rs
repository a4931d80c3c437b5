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

use crate::config::TlsFiles;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// A gRPC server builder, serving TLS when `tls` names certificate and key
/// files. The files are read now, so a missing or unreadable file stops the
/// service at start-up rather than at the first handshake.
pub fn server_builder(tls: Option<&TlsFiles>) -> Result<tonic::transport::Server, TlsSetupError> {
    let builder = crate::hardening::harden(tonic::transport::Server::builder());
    let Some(tls) = tls else {
        return Ok(builder);
    };
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|source| TlsSetupError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let identity =
        tonic::transport::Identity::from_pem(read(&tls.cert_path)?, read(&tls.key_path)?);
    Ok(builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?)
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A certificate or key file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The certificate or key was refused.
    #[error("invalid TLS certificate or key")]
    Invalid(#[from] tonic::transport::Error),
}

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

/// Runs `server` until `shutdown` resolves, then drains: `trigger` fires
/// (the server must have been given a [`DrainSignal`] of it as its own
/// shutdown future) and in-flight calls get `grace` to finish.
pub async fn serve_gracefully<E>(
    server: impl Future<Output = Result<(), E>>,
    shutdown: impl Future<Output = ()>,
    trigger: DrainTrigger,
    grace: Duration,
) -> Result<(), E> {
    let mut server = std::pin::pin!(server);
    tokio::select! {
        result = &mut server => return result,
        () = shutdown => {}
    }
    tracing::info!(
        grace_secs = grace.as_secs_f64(),
        "draining: no new connections, finishing calls in flight"
    );
    trigger.fire();
    match tokio::time::timeout(grace, server).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!("grace period over; dropping the calls still in flight");
            Ok(())
        }
    }
}

/// The reflection services, v1 and v1alpha (grpcurl 1.8 speaks only the
/// latter), describing devicelink's contracts and the health service.
pub fn reflection() -> (
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
) {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
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

/// Keeps the health service truthful: [`LIVENESS_SERVICE`] is SERVING, and
/// the overall status (`""`) and each of `services` are SERVING while `probe` says the stores answer, NOT_SERVING
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
