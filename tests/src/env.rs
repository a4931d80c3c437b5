//! One test's world: a database, a Redis key space, the services.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use devicelink_authcode::{Application as AuthCodeApplication, AuthCodeConfig};
use devicelink_registration::config::admin_token_hash;
use devicelink_registration::operators::OperatorSource;
use devicelink_registration::{
    Application as RegistrationApplication, RegistrationConfig,
    StartupError as RegistrationStartupError,
};
use devicelink_shared::config::{CommonConfig, RedisSettings};
use devicelink_shared::pb;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use devicelink_shared::code_record_seal::RecordKeys;

use crate::client::{authorized, bearer, connect, create_user_request, next_status};
use crate::proxy::TcpProxy;

/// The admin token every test environment uses: the quickstart's
/// `DEVICELINK_ADMIN_TOKEN`, the operator named `admin`.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The `AUTH_CODE_RECORD_KEY` both services get unless a test sets its own.
pub const RECORD_KEY: &str = "test-record-key-0123456789abcdef0123456789";

const DEFAULT_DATABASE_URL: &str = "postgres://devicelink:devicelink@127.0.0.1:5432/devicelink";
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";

/// [`RECORD_KEY`] alone.
pub fn test_record_keys() -> RecordKeys {
    RecordKeys::new(RECORD_KEY, None).expect("a valid record key")
}

/// How a test wants its world.
#[derive(Debug, Clone)]
pub struct TestOptions {
    /// How many registration replicas share the database.
    pub registration_replicas: usize,
    /// How long minted codes live.
    pub code_ttl: Duration,
    /// Whether authcode records each mint as an audit event
    /// (`AUDIT_MINT_EVENTS`).
    pub audit_mint_events: bool,
    /// Route each service's Postgres and Redis traffic through proxies the
    /// test can cut, to simulate outages.
    pub through_proxies: bool,
    /// With [`Self::through_proxies`], how many of the last registration
    /// replicas reach the stores directly instead: a partition that cuts
    /// off some replicas and not others.
    pub direct_replicas: usize,
    /// How long in-flight calls may take to finish once a service drains.
    pub shutdown_grace: Duration,
    /// Serve TLS with these files.
    pub tls: Option<devicelink_shared::config::TlsFiles>,
    /// Rate limits: off unless a test is about them, so that tests making
    /// many calls from one address are not refused.
    pub limits: devicelink_shared::config::LimitsConfig,
    /// Caps on open watch streams, per install and per replica.
    pub watch_caps: devicelink_registration::config::WatchCaps,
    /// The text of a `DEVICELINK_ADMIN_TOKENS_FILE` (`name:sha256hex` a
    /// line) naming operators beside [`ADMIN_TOKEN`]'s; the test can rewrite
    /// it ([`TestEnv::write_operators`]).
    pub operators_file: Option<String>,
    /// The code record keys authcode seals with and registration opens
    /// with: both [`RECORD_KEY`] unless a test rotates or mismatches them.
    pub record_keys: (RecordKeys, RecordKeys),
    /// Redis as the services reach it, instead of
    /// `DEVICELINK_TEST_REDIS_URL`: a TLS server or a cluster.
    pub redis: Option<devicelink_shared::config::RedisSettings>,
    /// The Postgres to make the test's database on (a role that may
    /// `CREATE DATABASE`), instead of `DEVICELINK_TEST_DATABASE_URL`: a
    /// server of the test's own, over TLS say. TLS settings in its query
    /// (`sslmode`, `sslrootcert`) go to the services too.
    pub admin_database_url: Option<String>,
    /// Send the services' statements through the PgBouncer at this address
    /// (`DATABASE_URL`), their sessions straight to Postgres
    /// (`DATABASE_DIRECT_URL`).
    pub pgbouncer: Option<SocketAddr>,
    /// The services' `DATABASE_CALL_TIMEOUT_MS`: the deadline of one
    /// Postgres call.
    pub database_call_timeout: Duration,
}

impl Default for TestOptions {
    fn default() -> Self {
        Self {
            registration_replicas: 1,
            code_ttl: Duration::from_secs(600),
            audit_mint_events: true,
            through_proxies: false,
            direct_replicas: 0,
            shutdown_grace: Duration::from_secs(5),
            tls: None,
            limits: devicelink_shared::config::LimitsConfig::off(),
            watch_caps: devicelink_registration::config::WatchCaps::default(),
            operators_file: None,
            record_keys: (test_record_keys(), test_record_keys()),
            redis: None,
            admin_database_url: None,
            pgbouncer: None,
            database_call_timeout: devicelink_shared::stores::STORE_TIMEOUT,
        }
    }
}

/// The running services of one test. Dropping it stops them.
pub struct TestEnv {
    /// The test's own database.
    pub database_url: String,
    /// The test's Redis key prefix.
    pub redis_key_prefix: String,
    /// Where authcode listens.
    pub authcode_addr: SocketAddr,
    /// Where each registration replica listens.
    pub registration_addrs: Vec<SocketAddr>,
    /// Where each registration replica serves `AdminService`.
    pub registration_admin_addrs: Vec<SocketAddr>,
    /// The Postgres proxy, when the test asked for proxies.
    pub postgres_proxy: Option<TcpProxy>,
    /// The Redis proxy, when the test asked for proxies.
    pub redis_proxy: Option<TcpProxy>,
    /// Stops each registration replica; dropping one stops it too.
    registration_stops: Vec<Option<oneshot::Sender<()>>>,
    /// Each registration replica's serving task.
    registration_tasks: Vec<Option<JoinHandle<Result<(), RegistrationStartupError>>>>,
    /// The operators' tokens file, when the test asked for one.
    operators_file: Option<TokensFile>,
    _authcode_stop: oneshot::Sender<()>,
}

/// A tokens file in the temporary directory, removed when dropped.
struct TokensFile(PathBuf);

impl TokensFile {
    fn create(text: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "devicelink-operators-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let file = Self(path);
        file.write(text);
        file
    }

    /// Replaces the content at once (write and rename), so that a reload
    /// never reads half a file.
    fn write(&self, text: &str) {
        let staged = self.0.with_extension("new");
        std::fs::write(&staged, text).expect("write the tokens file");
        std::fs::rename(&staged, &self.0).expect("replace the tokens file");
    }
}

impl Drop for TokensFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A tokens file line naming `operator` by `token`'s hash.
pub fn operator_line(operator: &str, token: &str) -> String {
    let hash = devicelink_shared::secret::SecretHash::of(&[token.as_bytes()]);
    format!("{operator}:{}\n", hash.to_hex())
}

fn admin_database_url() -> String {
    std::env::var("DEVICELINK_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.into())
}

fn redis_url() -> String {
    std::env::var("DEVICELINK_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.into())
}

/// `url` with its database name replaced.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(base, query)| (base, Some(query)));
    let authority_end = base.find("://").map_or(0, |scheme| scheme + 3);
    let base = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

/// `url` pointed at another host and port (the proxy's).
fn with_host(url: &str, addr: SocketAddr) -> String {
    let scheme_end = url.find("://").map_or(0, |scheme| scheme + 3);
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let credentials = authority
        .rsplit_once('@')
        .map(|(credentials, _)| credentials);
    let new_authority = match credentials {
        Some(credentials) => format!("{credentials}@{addr}"),
        None => addr.to_string(),
    };
    format!(
        "{}{}{}",
        &url[..scheme_end],
        new_authority,
        &rest[authority_end..]
    )
}

fn host_port(url: &str, default_port: u16) -> String {
    let scheme_end = url.find("://").map_or(0, |scheme| scheme + 3);
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = rest[..authority_end]
        .rsplit_once('@')
        .map_or(&rest[..authority_end], |(_, host)| host);
    if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:{default_port}")
    }
}

/// Logs go through the test harness's capture, so a failing test shows its
/// own log lines and a passing one stays quiet. `RUST_LOG` picks the level.
fn init_test_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,h2=warn,hyper=warn,tower=warn")
    });
    let _already_set = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

static SWEPT: AtomicBool = AtomicBool::new(false);
static DATABASE_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Whether the test process that made database `name`
/// (`dltest_{pid}_{n}`) still runs; where `/proc` cannot tell, no.
fn test_process_is_running(name: &str) -> bool {
    let pid = name
        .strip_prefix("dltest_")
        .and_then(|rest| rest.split('_').next())
        .and_then(|pid| pid.parse::<u32>().ok());
    pid.is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
}

/// Creates a fresh database for one test. Databases of earlier test runs
/// (other process ids, no longer running) are dropped first, once per
/// process.
pub async fn create_database() -> String {
    create_database_on(&admin_database_url()).await
}

/// [`create_database`] on the Postgres `admin_url` names.
pub async fn create_database_on(admin_url: &str) -> String {
    let client = connect_postgres(admin_url).await.unwrap_or_else(|error| {
        panic!("cannot reach the test Postgres ({error}); run deploy/local/test.sh")
    });
    let pid = std::process::id();
    if !SWEPT.swap(true, Ordering::SeqCst) {
        let stale = client
            .query(
                "SELECT datname FROM pg_database WHERE datname LIKE 'dltest\\_%' AND datname NOT LIKE $1",
                &[&format!("dltest\\_{pid}\\_%")],
            )
            .await
            .expect("list stale test databases");
        for row in stale {
            let name: String = row.get(0);
            if test_process_is_running(&name) {
                // Another test run, going on now (a neighbour's worktree):
                // its databases are in use, even when a partition test has
                // left them without a connection for a moment.
                continue;
            }
            let _ = client
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\""))
                .await;
        }
    }
    let name = format!(
        "dltest_{pid}_{}",
        DATABASE_COUNTER.fetch_add(1, Ordering::SeqCst)
    );
    client
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .expect("create the test database");
    with_database(admin_url, &name)
}

/// A connection to `url`, made as the services make theirs (TLS settings
/// included), without their timeouts.
pub async fn connect_postgres(url: &str) -> Result<tokio_postgres::Client, String> {
    let (client, connection) = devicelink_shared::stores::connect_once(url)
        .await
        .map_err(|error| devicelink_shared::status::error_chain(&*error))?;
    tokio::spawn(connection);
    Ok(client)
}

impl TestEnv {
    /// One registration replica, default TTL.
    pub async fn start() -> Self {
        Self::start_with(TestOptions::default()).await
    }

    /// The world `options` describe.
    pub async fn start_with(options: TestOptions) -> Self {
        init_test_logs();
        let database_url = match &options.admin_database_url {
            Some(admin_url) => create_database_on(admin_url).await,
            None => create_database().await,
        };
        let redis_key_prefix = format!("dltest:{}:", uuid::Uuid::new_v4().simple());
        let mut postgres_proxy = None;
        let mut redis_proxy = None;
        let (service_database_url, service_redis_url) = if options.through_proxies {
            let pg = TcpProxy::start(host_port(&database_url, 5432)).await;
            let redis = TcpProxy::start(host_port(&redis_url(), 6379)).await;
            let urls = (
                with_host(&database_url, pg.addr()),
                with_host(&redis_url(), redis.addr()),
            );
            postgres_proxy = Some(pg);
            redis_proxy = Some(redis);
            urls
        } else {
            (database_url.clone(), redis_url())
        };
        let (service_database_url, database_direct_url) = match options.pgbouncer {
            Some(pgbouncer) => (
                with_host(&service_database_url, pgbouncer),
                Some(service_database_url),
            ),
            None => (service_database_url, None),
        };
        let common = CommonConfig {
            database_url: service_database_url,
            database_transaction_pooling: database_direct_url.is_some(),
            database_direct_url,
            database_pool_size: 8,
            database_call_timeout: options.database_call_timeout,
            redis: options
                .redis
                .clone()
                .unwrap_or_else(|| RedisSettings::single(service_redis_url)),
            redis_key_prefix: redis_key_prefix.clone(),
            listen_addr: "127.0.0.1:0".parse().expect("loopback address"),
            shutdown_grace: options.shutdown_grace,
            tls: options.tls.clone(),
            limits: options.limits.clone(),
            record_keys: options.record_keys.1.clone(),
        };
        let mut registration_stops = Vec::new();
        let mut registration_tasks = Vec::new();
        let mut registration_addrs = Vec::new();
        let mut registration_admin_addrs = Vec::new();
        let operators_file = options.operators_file.as_deref().map(TokensFile::create);
        let operators = OperatorSource {
            quickstart_token: Some(admin_token_hash(ADMIN_TOKEN).expect("a valid admin token")),
            tokens_file: operators_file.as_ref().map(|file| file.0.clone()),
        };
        // Replicas start at once, as a rollout starts them: migrations must
        // cope.
        let replica_count = options.registration_replicas.max(1);
        let direct_from = replica_count.saturating_sub(options.direct_replicas);
        let replicas = (0..replica_count).map(|replica| {
            let mut common = common.clone();
            if replica >= direct_from {
                common.database_url = database_url.clone();
                common.redis = options
                    .redis
                    .clone()
                    .unwrap_or_else(|| RedisSettings::single(redis_url()));
            }
            RegistrationApplication::build(RegistrationConfig {
                common,
                watch_caps: options.watch_caps,
                audit_retention: devicelink_registration::janitor::DEFAULT_AUDIT_RETENTION,
                admin_listen_addr: "127.0.0.1:0".parse().expect("loopback address"),
                operators: operators.clone(),
            })
        });
        for application in futures_util::future::join_all(replicas).await {
            let application = application.expect("registration starts");
            registration_addrs.push(application.local_addr());
            registration_admin_addrs.push(application.admin_addr());
            let (sender, receiver) = oneshot::channel::<()>();
            registration_stops.push(Some(sender));
            registration_tasks.push(Some(tokio::spawn(application.run_until_stopped(
                async move {
                    let _ = receiver.await;
                },
            ))));
        }
        let config = AuthCodeConfig {
            common: CommonConfig {
                record_keys: options.record_keys.0.clone(),
                ..common
            },
            code_ttl: options.code_ttl,
            audit_mint_events: options.audit_mint_events,
        };
        let application = AuthCodeApplication::build(config)
            .await
            .expect("authcode starts");
        let authcode_addr = application.local_addr();
        let (authcode_stop, receiver) = oneshot::channel::<()>();
        tokio::spawn(application.run_until_stopped(async move {
            let _ = receiver.await;
        }));
        Self {
            database_url,
            redis_key_prefix,
            authcode_addr,
            registration_addrs,
            registration_admin_addrs,
            postgres_proxy,
            redis_proxy,
            registration_stops,
            registration_tasks,
            operators_file,
            _authcode_stop: authcode_stop,
        }
    }

    /// Sends registration replica `index` its shutdown signal, as SIGTERM
    /// would, and returns its serving task, which ends once it has drained.
    pub fn shut_down_registration(
        &mut self,
        index: usize,
    ) -> JoinHandle<Result<(), RegistrationStartupError>> {
        if let Some(stop) = self.registration_stops[index].take() {
            let _ = stop.send(());
        }
        self.registration_tasks[index]
            .take()
            .expect("each replica is shut down once")
    }

    /// A client of authcode.
    pub async fn authcode(&self) -> pb::auth_code_service_client::AuthCodeServiceClient<Channel> {
        pb::auth_code_service_client::AuthCodeServiceClient::new(connect(self.authcode_addr).await)
    }

    /// A client of the first registration replica.
    pub async fn registration(
        &self,
    ) -> pb::registration_service_client::RegistrationServiceClient<Channel> {
        self.registration_replica(0).await
    }

    /// A client of registration replica `index`.
    pub async fn registration_replica(
        &self,
        index: usize,
    ) -> pb::registration_service_client::RegistrationServiceClient<Channel> {
        let addr = self.registration_addrs[index % self.registration_addrs.len()];
        pb::registration_service_client::RegistrationServiceClient::new(connect(addr).await)
    }

    /// A client of the admin API, on registration replica 0's admin
    /// listener.
    pub async fn admin(&self) -> pb::admin_service_client::AdminServiceClient<Channel> {
        pb::admin_service_client::AdminServiceClient::new(
            connect(self.registration_admin_addrs[0]).await,
        )
    }

    /// Replaces the operators' tokens file (the test must have asked for
    /// one in [`TestOptions::operators_file`]); replicas read it again
    /// within [`devicelink_registration::operators::RELOAD_INTERVAL`].
    pub fn write_operators(&self, text: &str) {
        self.operators_file
            .as_ref()
            .expect("TestOptions::operators_file names a tokens file")
            .write(text);
    }

    /// A new app with one API key: `(app_id, api_key)`.
    pub async fn app_with_key(&self) -> (String, String) {
        let mut admin = self.admin().await;
        crate::client::create_app_with_key(&mut admin, &bearer(ADMIN_TOKEN), "test app")
            .await
            .expect("create an app and its key")
    }

    /// Revokes the one API key of `app_id` (as [`Self::app_with_key`] made
    /// it); its public id.
    pub async fn revoke_only_key(&self, app_id: &str) -> String {
        let mut admin = self.admin().await;
        let key_id = admin
            .list_api_keys(authorized(
                pb::ListApiKeysRequest {
                    app_id: app_id.into(),
                },
                ADMIN_TOKEN,
            ))
            .await
            .expect("list the app's keys")
            .into_inner()
            .api_keys[0]
            .key_id
            .clone();
        admin
            .revoke_api_key(authorized(
                pb::RevokeApiKeyRequest {
                    key_id: key_id.clone(),
                },
                ADMIN_TOKEN,
            ))
            .await
            .expect("revoke the key");
        key_id
    }

    /// Mints a code for `external_id` with `api_key`.
    pub async fn mint(&self, api_key: &str, external_id: &str) -> String {
        self.authcode()
            .await
            .mint_auth_code(authorized(
                pb::MintAuthCodeRequest {
                    external_id: external_id.into(),
                    app_id: String::new(),
                    ..Default::default()
                },
                api_key,
            ))
            .await
            .expect("mint a code")
            .into_inner()
            .auth_code
    }

    /// Mints a code for `external_id` with `api_key` and redeems it on
    /// `device` through registration replica 0.
    pub async fn link(
        &self,
        app_id: &str,
        api_key: &str,
        external_id: &str,
        device: pb::DeviceInfo,
    ) -> pb::CreateUserResponse {
        let code = self.mint(api_key, external_id).await;
        self.registration()
            .await
            .create_user(create_user_request(&code, app_id, device))
            .await
            .expect("redeem a fresh code")
            .into_inner()
    }

    /// Watches the install holding `install_token`; returns the stream
    /// after reading the current status, which it also returns.
    pub async fn watch(
        &self,
        install_token: &str,
    ) -> (
        tonic::Streaming<pb::WatchInstallStatusResponse>,
        pb::InstallStatus,
    ) {
        let mut stream = self
            .registration()
            .await
            .watch_install_status(authorized(pb::WatchInstallStatusRequest {}, install_token))
            .await
            .expect("watch")
            .into_inner();
        let current = next_status(&mut stream).await.expect("a first status");
        (stream, current)
    }

    /// The number `sql` (a `SELECT count(*)`) counts in the test's database.
    pub async fn count(&self, sql: &str) -> i64 {
        self.database()
            .await
            .query_one(sql, &[])
            .await
            .expect("count")
            .get(0)
    }

    /// A plain connection to the test's database, for checking what was
    /// stored.
    pub async fn database(&self) -> tokio_postgres::Client {
        connect_postgres(&self.database_url)
            .await
            .unwrap_or_else(|error| panic!("connect to the test database: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_replaced() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/db", "x"),
            "postgres://u:p@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    }

    #[test]
    fn hosts_are_replaced_keeping_credentials() {
        let addr: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        assert_eq!(
            with_host("postgres://u:p@h:5432/db", addr),
            "postgres://u:p@127.0.0.1:9/db"
        );
        assert_eq!(
            with_host("redis://127.0.0.1:6379/0", addr),
            "redis://127.0.0.1:9/0"
        );
        assert_eq!(host_port("redis://127.0.0.1/0", 6379), "127.0.0.1:6379");
        assert_eq!(host_port("postgres://u:p@db:6000/x", 5432), "db:6000");
    }
}
