//! Start-up: connect, migrate, bind, serve until told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use devicelink_shared::pb::admin_service_server::AdminServiceServer;
use devicelink_shared::pb::registration_service_server::RegistrationServiceServer;
use devicelink_shared::serving::{
    TlsSetupError, drain_channel, reflection, serve_gracefully, server_builder, start_health_watch,
};
use devicelink_shared::stores::{
    StoreSetupError, postgres_config, postgres_pool, postgres_reachable, record_pool_usage,
    redis_connection,
};
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;

use crate::codes::CodeStore;
use crate::config::RegistrationConfig;
use crate::error::StoreError;
use crate::janitor::spawn_janitor;
use crate::migrate;
use crate::notify::spawn_listener;
use crate::service::admin::{AdminHandler, admin_guard};
use crate::service::registration::RegistrationHandler;
use crate::status_cache::StatusCache;
use crate::store::Store;

/// Why the service could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A store URL is unusable.
    #[error("store configuration")]
    StoreSetup(#[from] StoreSetupError),
    /// The schema could not be migrated (Postgres unreachable or refusing).
    #[error("database migration failed")]
    Migration(#[source] StoreError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS certificate or key is unusable.
    #[error("TLS set-up failed")]
    Tls(#[from] TlsSetupError),
    /// The gRPC server failed.
    #[error("gRPC server failed")]
    Serve(#[from] tonic::transport::Error),
}

/// The gRPC services whose health is reported.
const HEALTH_SERVICES: &[&str] = &[
    <RegistrationServiceServer<RegistrationHandler> as NamedService>::NAME,
    <AdminServiceServer<AdminHandler> as NamedService>::NAME,
];

/// registration, connected, migrated and bound, ready to serve.
pub struct Application {
    config: RegistrationConfig,
    /// The gRPC server, TLS already configured.
    server: tonic::transport::Server,
    listener: TcpListener,
    store: Store,
    codes: CodeStore,
}

impl Application {
    /// Connects to the stores, migrates the schema and binds the listen
    /// address (port 0 picks a free port, as tests do).
    pub async fn build(config: RegistrationConfig) -> Result<Self, StartupError> {
        let pool = postgres_pool(
            &config.common.database_url,
            config.common.database_pool_size,
        )?;
        let store = Store::new(pool);
        migrate::run(store.pool())
            .await
            .map_err(StartupError::Migration)?;
        let redis = redis_connection(&config.common.redis_url)?;
        let codes = CodeStore::new(redis, config.common.redis_key_prefix.clone());
        let server = server_builder(config.common.tls.as_ref())?;
        let addr = config.common.listen_addr;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
        Ok(Self {
            config,
            server,
            listener,
            store,
            codes,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.config.common.listen_addr)
    }

    /// Serves until `shutdown` resolves, then reports NOT_SERVING, ends open
    /// watch streams, stops accepting and lets in-flight calls finish within
    /// the grace period.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        let (trigger, drain) = drain_channel();
        let statuses = Arc::new(StatusCache::default());
        let notifier = spawn_listener(
            postgres_config(&self.config.common.database_url)?,
            statuses.clone(),
            drain.clone(),
        );
        spawn_janitor(self.store.clone(), drain.clone());
        let (health_reporter, health) = tonic_health::server::health_reporter();
        let (store, codes) = (self.store.clone(), self.codes.clone());
        start_health_watch(
            health_reporter,
            HEALTH_SERVICES,
            move || {
                let (store, codes) = (store.clone(), codes.clone());
                async move {
                    record_pool_usage(store.pool());
                    postgres_reachable(store.pool()).await && codes.reachable().await
                }
            },
            drain.clone(),
        )
        .await;
        let (reflection_v1, reflection_v1alpha) = reflection();
        let registration = RegistrationHandler::new(
            self.store.clone(),
            self.codes,
            statuses,
            notifier,
            drain.clone(),
        );
        let admin = AdminServiceServer::with_interceptor(
            AdminHandler::new(self.store),
            admin_guard(self.config.admin_token_hash),
        );
        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        let mut server_drain = drain;
        let server = self
            .server
            .layer(devicelink_shared::rpc::RpcLayer)
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(RegistrationServiceServer::new(registration))
            .add_service(admin)
            .serve_with_incoming_shutdown(incoming, async move { server_drain.requested().await });
        serve_gracefully(server, shutdown, trigger, self.config.common.shutdown_grace).await?;
        Ok(())
    }
}

/// Migrates the schema and returns: the migration step of a rollout
/// (`DEVICELINK_MIGRATE_ONLY=1`), run once before new replicas start.
pub async fn migrate_only(database_url: &str) -> Result<(), StartupError> {
    let pool = postgres_pool(database_url, 1)?;
    migrate::run(&pool).await.map_err(StartupError::Migration)
}
