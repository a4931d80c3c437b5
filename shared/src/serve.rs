//! One way for a service to start, serve and stop.
//!
//! Each service's `Application::build` does everything that can fail at start-up: reading the
//! TLS files ([`load_tls`]), binding its listeners
//! ([`BoundListener::bind`]), setting up the store clients. What fails there
//! is a [`StartupError`], and [`StartupError::exit_code`] tells the binary
//! how to exit, so that a bad deployment is told apart from an outage.
//!
//! Serving is a [`ServerGroup`]: one gRPC server per listener (the public
//! API today; a private admin listener next), all stopped by one drain.
//! When the shutdown future resolves, the drain fires (health turns
//! NOT_SERVING, watch streams end, every listener stops accepting) and the
//! calls in flight on every listener get one grace period to finish.
//!
//! TLS, when configured, belongs to each listener ([`BoundListener::with_tls`]):
//! the listener does the handshakes itself ([`crate::tls_incoming`]) with a
//! certificate reloaded when its files change ([`crate::tls_reload`]), so
//! that a renewed certificate is served without a restart.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::Router;
use tonic_health::pb::health_server::{Health, HealthServer};
use tower::layer::util::{Identity, Stack};

use crate::config::{EXIT_BAD_CONFIG, TLS_CERT_FILE, TLS_KEY_FILE, TlsFiles};
use crate::hardening::ShedLayer;
use crate::rpc::RpcLayer;
use crate::serving::{DrainSignal, DrainTrigger, drain_channel, reflection};
use crate::stores::StoreSetupError;
pub use crate::tls_incoming::Incoming;
pub use crate::tls_reload::ServerTls;

/// The exit code of a service that could not reach a store it needs at
/// start-up (`EX_UNAVAILABLE`): an outage, not a configuration to fix, so
/// restarting later may succeed as it is.
pub const EXIT_STORE_UNAVAILABLE: i32 = 69;
/// The exit code of a service that failed for any other reason.
pub const EXIT_FAILURE: i32 = 1;

/// A boxed cause, kept for the logs.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why a service could not start, or stopped serving abnormally. Every
/// message names what to fix: the variable, the file or the store.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A store URL or pool setting is unusable.
    #[error(transparent)]
    Store(#[from] StoreSetupError),
    /// The TLS certificate or key is unusable.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// A listen address cannot be bound.
    #[error("{variable}: cannot listen on {addr}")]
    Bind {
        /// The variable that set the address.
        variable: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
    /// A store needed at start-up cannot be reached (an outage, or a store
    /// still starting).
    #[error("{step}: {store} cannot be reached")]
    StoreUnavailable {
        /// What start-up was doing, e.g. "migrating the schema".
        step: &'static str,
        /// The store, e.g. "Postgres".
        store: &'static str,
        /// What the client reported.
        #[source]
        cause: Cause,
    },
    /// A start-up step failed for another reason.
    #[error("{step} failed")]
    Step {
        /// What start-up was doing.
        step: &'static str,
        /// Why it failed.
        #[source]
        cause: Cause,
    },
    /// A gRPC server failed while serving.
    #[error("the gRPC server failed")]
    Serve(#[from] tonic::transport::Error),
}

impl StartupError {
    /// How the binary exits: [`EXIT_BAD_CONFIG`] (64) for what a deployment
    /// must fix (a store URL, a TLS file, a listen address),
    /// [`EXIT_STORE_UNAVAILABLE`] (69) for a store that is down,
    /// [`EXIT_FAILURE`] (1) for anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Store(_) | Self::Tls(_) | Self::Bind { .. } => EXIT_BAD_CONFIG,
            Self::StoreUnavailable { .. } => EXIT_STORE_UNAVAILABLE,
            Self::Step { .. } | Self::Serve(_) => EXIT_FAILURE,
        }
    }
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A certificate or key file could not be read.
    #[error("{variable}: cannot read {}", .path.display())]
    Read {
        /// The variable naming the file.
        variable: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The certificate or key was refused.
    #[error("{TLS_CERT_FILE}, {TLS_KEY_FILE}: not a usable PEM certificate chain and key")]
    Invalid(#[source] Cause),
}

/// A gRPC server builder, hardened. It speaks plaintext; TLS is done by the
/// listeners ([`BoundListener::with_tls`]).
pub fn server_builder() -> Server {
    crate::hardening::harden(Server::builder())
}

/// The listeners' TLS when `tls` names certificate and key files, `None`
/// for plaintext. The files are read and checked now, so a missing or
/// unusable file stops the service at start-up rather than at the first
/// handshake; from then on they are watched, and a renewed pair is served
/// to new connections ([`ServerTls`]).
pub fn load_tls(tls: Option<&TlsFiles>) -> Result<Option<ServerTls>, TlsSetupError> {
    tls.map(ServerTls::load).transpose()
}

/// What every devicelink gRPC listener serves before its own services: a
/// span and metrics per call (a shed call included), a bound on the calls
/// in flight ([`ShedLayer`]), the health service and reflection describing
/// `served`, the full names of the services the listener answers.
pub fn router<H: Health>(
    server: Server,
    health: HealthServer<H>,
    served: &[&'static str],
) -> Router<Stack<ShedLayer, Stack<RpcLayer, Identity>>> {
    let (reflection_v1, reflection_v1alpha) = reflection(served);
    server
        .layer(RpcLayer)
        .layer(ShedLayer::default())
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
}

/// A listening socket, bound at start-up so that a port in use or an
/// address that is not this host's stops the service before it claims to
/// be up.
#[derive(Debug)]
pub struct BoundListener {
    listener: TcpListener,
    local_addr: SocketAddr,
    /// TLS for its connections; plaintext when `None`.
    tls: Option<ServerTls>,
}

impl BoundListener {
    /// Binds `addr`, as set by `variable` (port 0 picks a free port, as
    /// tests do).
    pub async fn bind(variable: &'static str, addr: SocketAddr) -> Result<Self, StartupError> {
        let bind_error = |source| StartupError::Bind {
            variable,
            addr,
            source,
        };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        Ok(Self {
            listener,
            local_addr,
            tls: None,
        })
    }

    /// Serves TLS with `tls` (from [`load_tls`]) when given.
    pub fn with_tls(self, tls: Option<ServerTls>) -> Self {
        Self { tls, ..self }
    }

    /// The address actually bound, with the real port when 0 was asked for.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

/// A running gRPC server, as [`ServerGroup`] holds it.
type ServerFuture = Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>>;

/// The future a server is given as its shutdown signal: it resolves once
/// the group drains.
pub type Drained = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The gRPC servers of one service, one per listener, stopped together by
/// one drain under one grace period.
pub struct ServerGroup {
    trigger: DrainTrigger,
    drain: DrainSignal,
    servers: Vec<ServerFuture>,
}

impl Default for ServerGroup {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerGroup {
    /// A group with no server yet.
    pub fn new() -> Self {
        let (trigger, drain) = drain_channel();
        Self {
            trigger,
            drain,
            servers: Vec::new(),
        }
    }

    /// The group's drain signal, for the work that must end with it: the
    /// health watch, watch streams, background tasks.
    pub fn drain_signal(&self) -> DrainSignal {
        self.drain.clone()
    }

    /// Adds the server that `serve` makes of `listener`'s connections and
    /// the drain, typically
    /// `|incoming, drained| router.serve_with_incoming_shutdown(incoming, drained)`.
    pub fn serve<S, F>(&mut self, listener: BoundListener, serve: S)
    where
        S: FnOnce(Incoming, Drained) -> F,
        F: Future<Output = Result<(), tonic::transport::Error>> + Send + 'static,
    {
        let incoming = Incoming::new(listener.listener, listener.tls);
        let drained = Box::pin(self.drain.clone().into_requested());
        self.servers.push(Box::pin(serve(incoming, drained)));
    }

    /// Serves until `shutdown` resolves, then drains: every server stops
    /// accepting and the calls in flight get `grace` to finish. A server
    /// that fails ends the whole group with its error.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()>,
        grace: Duration,
    ) -> Result<(), StartupError> {
        let mut servers = futures_util::future::try_join_all(self.servers);
        tokio::select! {
            result = &mut servers => return result.map(drop).map_err(StartupError::Serve),
            () = shutdown => {}
        }
        tracing::info!(
            grace_secs = grace.as_secs_f64(),
            "draining: no new connections, finishing calls in flight"
        );
        self.trigger.fire();
        match tokio::time::timeout(grace, servers).await {
            Ok(result) => result.map(drop).map_err(StartupError::Serve),
            Err(_) => {
                tracing::warn!("grace period over; dropping the calls still in flight");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic_health::ServingStatus;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    use super::*;

    async fn health_of(addr: SocketAddr) -> Result<i32, tonic::Status> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
        let response = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await?;
        Ok(response.into_inner().status)
    }

    #[tokio::test]
    async fn every_listener_serves_and_one_shutdown_stops_them_all() {
        let mut servers = ServerGroup::new();
        let mut addrs = Vec::new();
        for _ in 0..2 {
            let listener = BoundListener::bind("LISTEN_ADDR", "127.0.0.1:0".parse().unwrap())
                .await
                .unwrap();
            addrs.push(listener.local_addr());
            let (reporter, health) = tonic_health::server::health_reporter();
            reporter
                .set_service_status("", ServingStatus::Serving)
                .await;
            let router = router(server_builder(), health, &[]);
            servers.serve(listener, |incoming, drained| {
                router.serve_with_incoming_shutdown(incoming, drained)
            });
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(servers.run_until_stopped(
            async move {
                let _ = stopped.await;
            },
            // Longer than the wait below: the servers must stop because they
            // drained, not because the grace ran out.
            Duration::from_secs(30),
        ));
        for addr in &addrs {
            assert_eq!(
                health_of(*addr).await.unwrap(),
                ServingStatus::Serving as i32
            );
        }

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .expect("every server stops once drained")
            .unwrap()
            .expect("a clean stop");
        for addr in &addrs {
            assert!(
                tokio::net::TcpStream::connect(addr).await.is_err(),
                "{addr} still accepts"
            );
        }
    }

    #[test]
    fn configuration_errors_exit_64_and_outages_69() {
        let bind = StartupError::Bind {
            variable: "LISTEN_ADDR",
            addr: "127.0.0.1:1".parse().unwrap(),
            source: std::io::ErrorKind::AddrInUse.into(),
        };
        assert_eq!(bind.exit_code(), EXIT_BAD_CONFIG);
        assert!(bind.to_string().starts_with("LISTEN_ADDR: "), "{bind}");
        let outage = StartupError::StoreUnavailable {
            step: "migrating the schema",
            store: "Postgres",
            cause: "refused".into(),
        };
        assert_eq!(outage.exit_code(), EXIT_STORE_UNAVAILABLE);
        let failed = StartupError::Step {
            step: "migrating the schema",
            cause: "refused".into(),
        };
        assert_eq!(failed.exit_code(), EXIT_FAILURE);
    }
}
