//! Start-up: connect, migrate, bind, serve until told to stop.

use std::future::Future;
use std::net::SocketAddr;

use devicelink_shared::pb::admin_service_server::AdminServiceServer;
use devicelink_shared::pb::registration_service_server::RegistrationServiceServer;
use devicelink_shared::stores::{
    StoreSetupError, postgres_config, postgres_pool, redis_connection,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

use crate::codes::CodeStore;
use crate::config::RegistrationConfig;
use crate::error::StoreError;
use crate::janitor::spawn_janitor;
use crate::migrate;
use crate::notify::spawn_listener;
use crate::service::admin::{AdminHandler, admin_guard};
use crate::service::registration::RegistrationHandler;
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
    /// The gRPC server failed.
    #[error("gRPC server failed")]
    Serve(#[from] tonic::transport::Error),
}

/// registration, connected, migrated and bound, ready to serve.
pub struct Application {
    config: RegistrationConfig,
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
        let addr = config.common.listen_addr;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
        Ok(Self {
            config,
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

    /// Serves until `shutdown` resolves, then ends open watch streams and
    /// lets in-flight calls finish.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        let (stop, stopped) = watch::channel(false);
        let notifier = spawn_listener(
            postgres_config(&self.config.common.database_url)?,
            stopped.clone(),
        );
        spawn_janitor(self.store.clone(), stopped.clone());
        let registration =
            RegistrationHandler::new(self.store.clone(), self.codes, notifier, stopped);
        let admin = AdminServiceServer::with_interceptor(
            AdminHandler::new(self.store),
            admin_guard(self.config.admin_token_hash),
        );
        let drain = async move {
            shutdown.await;
            let _ = stop.send(true);
        };
        tonic::transport::Server::builder()
            .add_service(RegistrationServiceServer::new(registration))
            .add_service(admin)
            .serve_with_incoming_shutdown(TcpListenerStream::new(self.listener), drain)
            .await?;
        Ok(())
    }
}
