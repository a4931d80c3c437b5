//! Start-up: set up the stores, bind, migrate, serve until told to stop.
//!
//! Everything a deployment could have got wrong (store URLs, TLS files,
//! the listen address) is checked before the schema is migrated, so a bad
//! configuration is reported as one (exit 64) even while Postgres is down;
//! a Postgres that cannot be reached for the migration, for
//! [`MIGRATION_WAIT`], is an outage (exit 69). See
//! [`devicelink_shared::serve`].
//!
//! Two listeners, one drain: the public one (`LISTEN_ADDR`) serves
//! `RegistrationService`; the private one (`ADMIN_LISTEN_ADDR`) serves
//! `AdminService` alone, behind the operator guard
//! ([`crate::service::admin_guard`]). Each has health and reflection, so
//! that probes and `grpcurl` work on both.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use devicelink_shared::config::LISTEN_ADDR;
use devicelink_shared::hardening::{MAX_ADMIN_REQUEST_BYTES, MAX_PUBLIC_REQUEST_BYTES};
use devicelink_shared::limits::RateLimiter;
use devicelink_shared::pb::admin_service_server::AdminServiceServer;
use devicelink_shared::pb::registration_service_server::RegistrationServiceServer;
pub use devicelink_shared::serve::StartupError;
use devicelink_shared::serve::{BoundListener, ServerGroup, load_tls, router, server_builder};
use devicelink_shared::serving::start_health_watch;
use devicelink_shared::status::error_chain;
use devicelink_shared::stores::{Postgres, RedisConnection};
use tonic::server::NamedService;

use crate::codes::CodeStore;
use crate::config::{ADMIN_LISTEN_ADDR, RegistrationConfig};
use crate::error::StoreError;
use crate::janitor::spawn_janitor;
use crate::migrate;
use crate::notify::spawn_listener;
use crate::operators::OperatorRegistry;
use crate::service::admin::AdminHandler;
use crate::service::admin_guard::{AdminGuard, GuardSettings};
use crate::service::limits::RequestLimits;
use crate::service::registration::RegistrationHandler;
use crate::service::watch::WatchSlots;
use crate::status_cache::StatusCache;
use crate::store::Store;
use devicelink_shared::audit_writer::AuditWriter;

/// The gRPC services whose health is reported.
const HEALTH_SERVICES: &[&str] = &[PUBLIC_SERVICES[0], ADMIN_SERVICES[0]];
/// What the public listener serves (and its reflection describes).
const PUBLIC_SERVICES: &[&str] =
    &[<RegistrationServiceServer<RegistrationHandler> as NamedService>::NAME];
/// What the private admin listener serves.
const ADMIN_SERVICES: &[&str] = &[<AdminServiceServer<AdminHandler> as NamedService>::NAME];

/// registration, connected, migrated and bound, ready to serve.
pub struct Application {
    config: RegistrationConfig,
    /// The gRPC server, TLS already configured.
    server: tonic::transport::Server,
    listener: BoundListener,
    /// `AdminService`'s own listener, private.
    admin_listener: BoundListener,
    /// The operators allowed in, read at start-up.
    operators: OperatorRegistry,
    store: Store,
    codes: CodeStore,
    redis: RedisConnection,
}

impl Application {
    /// Sets up the stores, reads the operators, binds both listen addresses
    /// (port 0 picks a free port, as tests do) and migrates the schema.
    pub async fn build(config: RegistrationConfig) -> Result<Self, StartupError> {
        let common = &config.common;
        let postgres = Postgres::with_call_timeout(
            &common.database_url,
            common.database_pool_size,
            common.database_call_timeout,
        )?
        .with_direct_url(common.database_direct_url.as_deref())?
        .with_transaction_pooling(common.database_transaction_pooling);
        let redis = RedisConnection::connect(&common.redis)?;
        let server = server_builder();
        let tls = load_tls(common.tls.as_ref())?;
        // Checked when the configuration was read; failing now means the
        // file changed in between.
        let operators = config
            .operators
            .load()
            .map_err(|problem| StartupError::Step {
                step: "reading the admin operators",
                cause: problem.into(),
            })?;
        let listener = BoundListener::bind(LISTEN_ADDR, common.listen_addr)
            .await?
            .with_tls(tls.clone());
        let admin_listener = BoundListener::bind(ADMIN_LISTEN_ADDR, config.admin_listen_addr)
            .await?
            .with_tls(tls);
        migrate_schema(&postgres).await?;
        let codes = CodeStore::new(
            redis.clone(),
            common.redis_key_prefix.clone(),
            common.record_keys.clone(),
        );
        Ok(Self {
            config,
            server,
            listener,
            admin_listener,
            operators: OperatorRegistry::new(operators),
            store: Store::new(postgres),
            codes,
            redis,
        })
    }

    /// The public address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr()
    }

    /// The admin address actually bound.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then reports NOT_SERVING, ends open
    /// watch streams, stops accepting and lets in-flight calls finish within
    /// the grace period.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        let mut servers = ServerGroup::new();
        let drain = servers.drain_signal();
        let statuses = Arc::new(StatusCache::default());
        let notifier = spawn_listener(
            self.store.postgres().clone(),
            statuses.clone(),
            drain.clone(),
        );
        await_listener(&statuses).await;
        spawn_janitor(
            self.store.clone(),
            self.config.audit_retention,
            drain.clone(),
        );
        self.operators
            .spawn_reload(self.config.operators.clone(), drain.clone());
        let (health_reporter, health) = tonic_health::server::health_reporter();
        let (postgres, codes) = (self.store.postgres().clone(), self.codes.clone());
        let listener = statuses.clone();
        // SERVING needs both stores answering and the change listener alive:
        // a replica whose listener went silent would serve watches that
        // never move.
        start_health_watch(
            health_reporter,
            HEALTH_SERVICES,
            move || {
                let (postgres, codes) = (postgres.clone(), codes.clone());
                let listener_alive = listener.listener_alive();
                async move {
                    postgres.record_pool_usage();
                    listener_alive && postgres.reachable().await && codes.reachable().await
                }
            },
            drain.clone(),
        )
        .await;
        // Rate limits (RATE_LIMIT_*, TRUSTED_PROXIES): one limiter per
        // replica, its state in the codes' Redis, shared by every replica.
        let limits = RequestLimits::new(
            self.codes.redis().clone(),
            &self.config.common.redis_key_prefix,
            self.config.common.limits.clone(),
            self.store.clone(),
            AuditWriter::spawn(self.store.postgres().clone(), drain.clone()),
        );
        let registration = RegistrationHandler::new(
            self.store.clone(),
            self.codes,
            statuses,
            notifier,
            drain.clone(),
            limits,
            WatchSlots::new(self.config.watch_caps),
        );
        let public = router(self.server.clone(), health.clone(), PUBLIC_SERVICES).add_service(
            RegistrationServiceServer::new(registration)
                .max_decoding_message_size(MAX_PUBLIC_REQUEST_BYTES),
        );
        servers.serve(self.listener, |incoming, drained| {
            public.serve_with_incoming_shutdown(incoming, drained)
        });

        // The admin plane: its own listener, its own failed-token limiter.
        let common = &self.config.common;
        let guard = GuardSettings {
            operators: self.operators,
            limiter: RateLimiter::new(self.redis, common.redis_key_prefix.clone()),
            failed_auth_per_address: common.limits.failed_auth_per_address,
            trusted_proxies: common.limits.trusted_proxies.clone(),
        };
        let admin = AdminGuard::new(
            AdminServiceServer::new(AdminHandler::new(self.store, common.limits.clone(), drain))
                .max_decoding_message_size(MAX_ADMIN_REQUEST_BYTES),
            guard,
        );
        let admin = router(self.server, health, ADMIN_SERVICES).add_service(admin);
        servers.serve(self.admin_listener, |incoming, drained| {
            admin.serve_with_incoming_shutdown(incoming, drained)
        });
        servers
            .run_until_stopped(shutdown, self.config.common.shutdown_grace)
            .await
    }
}

/// How long start-up waits for the change listener before its first health
/// report: the listener's own connect deadline.
const LISTENER_START_WAIT: Duration = Duration::from_secs(2);

/// Waits, for at most [`LISTENER_START_WAIT`], until the change listener is
/// alive, so that the first health report (NOT_SERVING while it is not)
/// describes a replica that has started rather than one still starting.
/// A listener that cannot connect is reported by the health service.
async fn await_listener(statuses: &StatusCache) {
    let alive = async {
        while !statuses.listener_alive() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let _ = tokio::time::timeout(LISTENER_START_WAIT, alive).await;
}

/// Migrates the schema and returns: the migration step of a rollout
/// (`DEVICELINK_MIGRATE_ONLY=1`), run once before new replicas start. The
/// migration lock is taken on `direct_url` when it is given
/// (`DATABASE_DIRECT_URL`, bypassing PgBouncer).
pub async fn migrate_only(
    database_url: &str,
    direct_url: Option<&str>,
) -> Result<(), StartupError> {
    migrate_schema(&Postgres::new(database_url, 1)?.with_direct_url(direct_url)?).await
}

/// How long start-up keeps trying to migrate while Postgres cannot be
/// reached before it gives up with exit code 69: long enough to ride out a
/// Postgres that is still starting, or a first connection that is slow on
/// a busy machine, short enough that an outage is reported (and the
/// replica restarted) soon.
const MIGRATION_WAIT: Duration = Duration::from_secs(10);
/// The pause between two attempts to migrate.
const MIGRATION_RETRY_DELAY: Duration = Duration::from_millis(500);

/// Applies pending migrations, waiting up to [`MIGRATION_WAIT`] for an
/// unreachable Postgres; an outage is told apart from a migration that
/// fails. A Postgres that accepts the connection and then stops answering
/// is given the same [`MIGRATION_WAIT`] in all, then reported as an outage.
async fn migrate_schema(postgres: &Postgres) -> Result<(), StartupError> {
    const STEP: &str = "migrating the schema";
    let deadline = Instant::now() + MIGRATION_WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt = tokio::time::timeout(left, migrate::run(postgres)).await;
        let Ok(attempt) = attempt else {
            return Err(StartupError::StoreUnavailable {
                step: STEP,
                store: "Postgres",
                cause: format!("no answer within {MIGRATION_WAIT:?}").into(),
            });
        };
        match attempt {
            Ok(()) => return Ok(()),
            Err(StoreError::Unavailable(cause)) if Instant::now() < deadline => {
                tracing::warn!(error = %error_chain(&*cause), "Postgres cannot be reached to migrate the schema; retrying");
                tokio::time::sleep(MIGRATION_RETRY_DELAY).await;
            }
            Err(StoreError::Unavailable(cause)) => {
                return Err(StartupError::StoreUnavailable {
                    step: STEP,
                    store: "Postgres",
                    cause,
                });
            }
            Err(other) => {
                return Err(StartupError::Step {
                    step: STEP,
                    cause: Box::new(other),
                });
            }
        }
    }
}
