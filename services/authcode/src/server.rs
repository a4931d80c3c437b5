//! Starting and stopping the service.
//!
//! [`Application::build`] does everything that can fail at start-up (binding
//! the port, reading the store URLs) and nothing that depends on the stores
//! being up: both clients connect on first use, so a replica starts, and
//! answers UNAVAILABLE, while a store is down, then recovers by itself.
//! [`Application::run_until_stopped`] serves until the given future
//! resolves, which is how the binary stops on SIGTERM and how tests stop it;
//! it then drains (see [`devicelink_shared::serving`]).
//!
//! Next to `AuthCodeService` it serves `grpc.health.v1` (NOT_SERVING while
//! Postgres or Redis cannot be reached, and while draining) and server
//! reflection.

use std::future::Future;
use std::net::SocketAddr;

use devicelink_shared::pb::auth_code_service_server::AuthCodeServiceServer;
use devicelink_shared::serving::{
    TlsSetupError, drain_channel, reflection, serve_gracefully, server_builder, start_health_watch,
};
use devicelink_shared::stores::{
    StoreSetupError, postgres_pool, postgres_reachable, record_pool_usage, redis_connection,
    redis_reachable,
};
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::api_keys::ApiKeyVerifier;
use crate::codes::CodeMinter;
use crate::config::AuthCodeConfig;
use crate::service::AuthCodeHandler;

/// Why the service could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A store URL or pool setting is unusable.
    #[error("cannot set up the stores")]
    Store(#[from] StoreSetupError),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
    /// The TLS certificate or key is unusable.
    #[error("TLS set-up failed")]
    Tls(#[from] TlsSetupError),
    /// The gRPC server failed while serving.
    #[error("the gRPC server failed")]
    Serve(#[from] tonic::transport::Error),
}

/// The gRPC services whose health is reported.
const HEALTH_SERVICES: &[&str] = &[<AuthCodeServiceServer<AuthCodeHandler> as NamedService>::NAME];

/// A bound, ready-to-serve authcode service.
pub struct Application {
    /// The gRPC server, TLS already configured.
    server: Server,
    listener: TcpListener,
    local_addr: SocketAddr,
    handler: AuthCodeHandler,
    pool: deadpool_postgres::Pool,
    redis: redis::aio::ConnectionManager,
    shutdown_grace: Duration,
}

impl Application {
    /// Binds `config.common.listen_addr` (port 0 picks a free port) and sets
    /// up the store clients without connecting them.
    pub async fn build(config: AuthCodeConfig) -> Result<Self, StartupError> {
        let common = config.common;
        let pool = postgres_pool(&common.database_url, common.database_pool_size)?;
        let redis = redis_connection(&common.redis_url)?;
        let server = server_builder(common.tls.as_ref())?;
        let listener = TcpListener::bind(common.listen_addr)
            .await
            .map_err(|source| StartupError::Bind {
                addr: common.listen_addr,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| StartupError::Bind {
            addr: common.listen_addr,
            source,
        })?;
        let handler = AuthCodeHandler::new(
            ApiKeyVerifier::new(pool.clone()),
            CodeMinter::new(redis.clone(), common.redis_key_prefix, config.code_ttl),
        );
        Ok(Self {
            server,
            listener,
            local_addr,
            handler,
            pool,
            redis,
            shutdown_grace: common.shutdown_grace,
        })
    }

    /// The address actually bound, with the real port when 0 was asked for.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves gRPC until `shutdown` resolves, then reports NOT_SERVING,
    /// stops accepting and lets requests in flight finish within the grace
    /// period.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        let (trigger, drain) = drain_channel();
        let (health_reporter, health) = tonic_health::server::health_reporter();
        let (pool, redis) = (self.pool, self.redis);
        start_health_watch(
            health_reporter,
            HEALTH_SERVICES,
            move || {
                let (pool, redis) = (pool.clone(), redis.clone());
                async move {
                    record_pool_usage(&pool);
                    postgres_reachable(&pool).await && redis_reachable(&redis).await
                }
            },
            drain.clone(),
        )
        .await;
        let (reflection_v1, reflection_v1alpha) = reflection();
        // TCP_NODELAY: a unary response is small, and Nagle's algorithm would
        // hold it back waiting for the client's delayed ACK.
        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        let mut server_drain = drain;
        let server = self
            .server
            .layer(devicelink_shared::rpc::RpcLayer)
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(AuthCodeServiceServer::new(self.handler))
            .serve_with_incoming_shutdown(incoming, async move { server_drain.requested().await });
        serve_gracefully(server, shutdown, trigger, self.shutdown_grace).await?;
        Ok(())
    }
}
