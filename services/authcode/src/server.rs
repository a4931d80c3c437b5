//! Starting and stopping the service.
//!
//! [`Application::build`] does everything that can fail at start-up (binding
//! the port, reading the store URLs and the TLS files) and nothing that
//! depends on the stores being up: both clients connect on first use, so a
//! replica starts, and answers UNAVAILABLE, while a store is down, then
//! recovers by itself. Its errors are [`StartupError`]s, which say how the
//! binary exits. [`Application::run_until_stopped`] serves until the given
//! future resolves, which is how the binary stops on SIGTERM and how tests
//! stop it; it then drains (see [`devicelink_shared::serve`]).
//!
//! Next to `AuthCodeService` it serves `grpc.health.v1` (NOT_SERVING while
//! Postgres or Redis cannot be reached, and while draining) and server
//! reflection.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use devicelink_shared::audit_writer::{AuditWriter, AuditWriterTask};
use devicelink_shared::config::LISTEN_ADDR;
use devicelink_shared::pb::auth_code_service_server::AuthCodeServiceServer;
pub use devicelink_shared::serve::StartupError;
use devicelink_shared::serve::{BoundListener, ServerGroup, load_tls, router, server_builder};
use devicelink_shared::serving::start_health_watch;
use devicelink_shared::stores::{Postgres, RedisConnection};
use tonic::server::NamedService;
use tonic::transport::Server;

use crate::api_keys::ApiKeyVerifier;
use crate::codes::CodeMinter;
use crate::config::AuthCodeConfig;
use crate::limits::MintLimits;
use crate::service::AuthCodeHandler;

/// The gRPC services whose health is reported.
const HEALTH_SERVICES: &[&str] = &[<AuthCodeServiceServer<AuthCodeHandler> as NamedService>::NAME];

/// A bound, ready-to-serve authcode service.
pub struct Application {
    /// The gRPC server, TLS already configured.
    server: Server,
    listener: BoundListener,
    handler: AuthCodeHandler,
    /// Writes the handler's audit events once the service runs.
    audit_task: AuditWriterTask,
    postgres: Postgres,
    redis: RedisConnection,
    shutdown_grace: Duration,
}

impl Application {
    /// Binds `config.common.listen_addr` (port 0 picks a free port) and sets
    /// up the store clients without connecting them.
    pub async fn build(config: AuthCodeConfig) -> Result<Self, StartupError> {
        let common = config.common;
        let postgres = Postgres::with_call_timeout(
            &common.database_url,
            common.database_pool_size,
            common.database_call_timeout,
        )?
        .with_transaction_pooling(common.database_transaction_pooling);
        let redis = RedisConnection::connect(&common.redis)?;
        let server = server_builder();
        let tls = load_tls(common.tls.as_ref())?;
        let listener = BoundListener::bind(LISTEN_ADDR, common.listen_addr)
            .await?
            .with_tls(tls);
        // One limiter per replica; its state is in Redis, shared by every
        // replica. It also stores the codes: a mint's limits and its code
        // are one script.
        let limits = MintLimits::new(redis.clone(), &common.redis_key_prefix, common.limits);
        // Mints and refusals are audited through a buffer, written to
        // Postgres in batches once the service runs.
        let (audit, audit_task) = AuditWriter::new();
        let handler = AuthCodeHandler::new(
            ApiKeyVerifier::new(postgres.clone()).with_audit(audit.clone()),
            CodeMinter::new(
                limits.limiter().clone(),
                common.redis_key_prefix,
                config.code_ttl,
                common.record_keys,
            ),
            limits,
            audit,
        )
        .auditing_mints(config.audit_mint_events);
        Ok(Self {
            server,
            listener,
            handler,
            audit_task,
            postgres,
            redis,
            shutdown_grace: common.shutdown_grace,
        })
    }

    /// The address actually bound, with the real port when 0 was asked for.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr()
    }

    /// Serves gRPC until `shutdown` resolves, then reports NOT_SERVING,
    /// stops accepting and lets requests in flight finish within the grace
    /// period.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        let mut servers = ServerGroup::new();
        let (health_reporter, health) = tonic_health::server::health_reporter();
        self.audit_task
            .spawn(self.postgres.clone(), servers.drain_signal());
        let (postgres, redis) = (self.postgres, self.redis);
        start_health_watch(
            health_reporter,
            HEALTH_SERVICES,
            move || {
                let (postgres, redis) = (postgres.clone(), redis.clone());
                async move {
                    postgres.record_pool_usage();
                    postgres.reachable().await && redis.reachable().await
                }
            },
            servers.drain_signal(),
        )
        .await;
        let router = router(self.server, health, HEALTH_SERVICES)
            .add_service(AuthCodeServiceServer::new(self.handler));
        servers.serve(self.listener, |incoming, drained| {
            router.serve_with_incoming_shutdown(incoming, drained)
        });
        servers
            .run_until_stopped(shutdown, self.shutdown_grace)
            .await
    }
}
