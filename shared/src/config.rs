//! Configuration from the environment: the variables both services read,
//! each named once here, and the helpers that read them.
//!
//! A variable only one service reads is named in that service's own
//! `config.rs`, in the same style. Each service reads its settings with
//! these helpers, validates them and exits with [`EXIT_BAD_CONFIG`] (64,
//! `EX_USAGE`) when one is wrong, so a bad deployment fails at once and
//! says which variable to fix. How start-up failures past configuration
//! exit is [`crate::serve::StartupError::exit_code`].

use std::str::FromStr;

use crate::code_record_seal::RecordKeys;

/// Postgres connection URL, e.g. `postgres://user:pass@host:5432/devicelink`.
/// libpq's `sslmode` (`disable` to `verify-full`) and `sslrootcert` are
/// honoured, e.g. `...?sslmode=verify-full&sslrootcert=/etc/pg/ca.crt`.
pub const DATABASE_URL: &str = "DATABASE_URL";
/// Optional: a direct (session) Postgres URL for LISTEN and the migration
/// lock, when `DATABASE_URL` goes through PgBouncer in transaction mode.
/// Read by registration, the one service that opens sessions.
pub const DATABASE_DIRECT_URL: &str = "DATABASE_DIRECT_URL";
/// `true` when `DATABASE_URL` goes through a pooler in transaction mode
/// (PgBouncer): statements are then sent unnamed, not prepared. Defaults to
/// whether `DATABASE_DIRECT_URL` is set, which only such a deployment sets.
pub const DATABASE_TRANSACTION_POOLING: &str = "DATABASE_TRANSACTION_POOLING";
/// Redis connection URL, e.g. `redis://127.0.0.1:6379/0`, or
/// `rediss://user:password@host:6380/0` for TLS with an ACL user.
pub const REDIS_URL: &str = "REDIS_URL";
/// Comma-separated seed nodes of a Redis Cluster (`redis://` or
/// `rediss://`); when set, `REDIS_URL` is not used.
pub const REDIS_CLUSTER_URLS: &str = "REDIS_CLUSTER_URLS";
/// PEM file of the CA that signed the Redis servers' certificates, for
/// `rediss://` with a private CA; the system's roots otherwise.
pub const REDIS_CA_FILE: &str = "REDIS_CA_FILE";
/// PEM client certificate chain for Redis servers that ask for one
/// (`tls-auth-clients yes`); set together with `REDIS_CLIENT_KEY_FILE`.
pub const REDIS_CLIENT_CERT_FILE: &str = "REDIS_CLIENT_CERT_FILE";
/// PEM private key of `REDIS_CLIENT_CERT_FILE`.
pub const REDIS_CLIENT_KEY_FILE: &str = "REDIS_CLIENT_KEY_FILE";
/// A file holding the Redis password (a mounted Secret); replaces the
/// password of the URL(s), so that the URL itself holds no secret.
pub const REDIS_PASSWORD_FILE: &str = "REDIS_PASSWORD_FILE";
/// The gRPC listen address, e.g. `0.0.0.0:50051`.
pub const LISTEN_ADDR: &str = "LISTEN_ADDR";
/// Prefix of every Redis key the services write, so that deployments (and
/// tests) can share one Redis.
pub const REDIS_KEY_PREFIX: &str = "REDIS_KEY_PREFIX";
/// How long one Postgres call (a statement, or a transaction's round trip)
/// may take before the request fails with UNAVAILABLE, in milliseconds:
/// default 2000, from 100 to 10000. Postgres's own `statement_timeout` and
/// `idle_in_transaction_session_timeout` are set 3 s past it.
pub const DATABASE_CALL_TIMEOUT_MS: &str = "DATABASE_CALL_TIMEOUT_MS";
/// Most Postgres connections one replica holds.
pub const DATABASE_POOL_SIZE: &str = "DATABASE_POOL_SIZE";
/// How long in-flight calls may take to finish after SIGTERM, in seconds.
pub const SHUTDOWN_GRACE_SECS: &str = "SHUTDOWN_GRACE_SECS";
/// PEM certificate chain to serve gRPC over TLS; set together with
/// `TLS_KEY_FILE`, or neither for plaintext (TLS ended by a mesh or gateway).
pub const TLS_CERT_FILE: &str = "TLS_CERT_FILE";
/// PEM private key of `TLS_CERT_FILE`.
pub const TLS_KEY_FILE: &str = "TLS_KEY_FILE";
/// `json` for production log lines, `text` for people (the default).
pub const LOG_FORMAT: &str = "LOG_FORMAT";
/// `MintAuthCode` per API key: `<count>/<s|min|h>[,burst=<n>]` or `off`,
/// default `100/s,burst=200`. Every `RATE_LIMIT_*` takes this syntax.
pub const RATE_LIMIT_MINT_PER_KEY: &str = "RATE_LIMIT_MINT_PER_KEY";
/// `MintAuthCode` per (app, external id), default `10/min,burst=5`.
pub const RATE_LIMIT_MINT_PER_EXTERNAL_ID: &str = "RATE_LIMIT_MINT_PER_EXTERNAL_ID";
/// `CreateUser` per (app, device id), default `10/min,burst=5`.
pub const RATE_LIMIT_REDEEM_PER_DEVICE: &str = "RATE_LIMIT_REDEEM_PER_DEVICE";
/// `GetInstallStatus` and `ResetInstall` per install token, default
/// `120/min,burst=20`.
pub const RATE_LIMIT_INSTALL_PER_TOKEN: &str = "RATE_LIMIT_INSTALL_PER_TOKEN";
/// Failed credentials per client address, default `30/min,burst=10`; past
/// it the address is refused before any store lookup.
pub const RATE_LIMIT_FAILED_AUTH_PER_ADDRESS: &str = "RATE_LIMIT_FAILED_AUTH_PER_ADDRESS";
/// Comma-separated CIDR blocks (or addresses) of proxies whose
/// `x-forwarded-for` is believed; empty (trust no one) by default.
pub const TRUSTED_PROXIES: &str = "TRUSTED_PROXIES";

/// The exit code of a service started with bad configuration (`EX_USAGE`):
/// a variable missing or malformed, or a store URL, TLS file or listen
/// address that cannot be used.
pub const EXIT_BAD_CONFIG: i32 = 64;

/// A variable that is missing or does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub variable: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    /// A complaint about `variable`.
    pub fn new(variable: &'static str, message: impl Into<String>) -> Self {
        Self {
            variable,
            message: message.into(),
        }
    }
}

/// The value of a variable that must be set and non-empty.
pub fn required(variable: &'static str) -> Result<String, ConfigError> {
    optional(variable).ok_or_else(|| ConfigError::new(variable, "must be set"))
}

/// The value of a variable, `None` when unset or empty.
pub fn optional(variable: &'static str) -> Option<String> {
    std::env::var(variable)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

/// A variable parsed as `T`, or `default` when unset.
pub fn parsed_or<T>(variable: &'static str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match optional(variable) {
        None => Ok(default),
        Some(text) => text.trim().parse().map_err(|error| {
            ConfigError::new(variable, format!("{text:?} does not parse: {error}"))
        }),
    }
}

/// Settings both services share.
#[derive(Clone)]
pub struct CommonConfig {
    /// Postgres connection URL. Holds a password: never logged.
    pub database_url: String,
    /// `DATABASE_DIRECT_URL`: where sessions go when `database_url` is
    /// PgBouncer's; `None` sends them to `database_url`. Never logged.
    pub database_direct_url: Option<String>,
    /// `DATABASE_TRANSACTION_POOLING`: `database_url` pools transactions,
    /// so statements are sent unnamed.
    pub database_transaction_pooling: bool,
    /// Most Postgres connections this replica holds.
    pub database_pool_size: usize,
    /// `DATABASE_CALL_TIMEOUT_MS`: the deadline of one Postgres call.
    pub database_call_timeout: std::time::Duration,
    /// Which Redis (one server or a cluster) and how to reach it. May hold
    /// a password: never logged.
    pub redis: RedisSettings,
    /// Prefix of every Redis key.
    pub redis_key_prefix: String,
    /// Where to listen for gRPC.
    pub listen_addr: std::net::SocketAddr,
    /// How long in-flight calls may take to finish once draining begins.
    pub shutdown_grace: std::time::Duration,
    /// Certificate and key files to serve TLS with; `None` for plaintext.
    pub tls: Option<TlsFiles>,
    /// Rate limits and the proxies whose `x-forwarded-for` is believed.
    pub limits: LimitsConfig,
    /// The keys that seal code records in Redis (authcode seals, registration
    /// opens).
    pub record_keys: RecordKeys,
}

/// Where a service's TLS certificate chain and private key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert_path: std::path::PathBuf,
    /// PEM private key.
    pub key_path: std::path::PathBuf,
}

/// `TLS_CERT_FILE` and `TLS_KEY_FILE`, both or neither.
fn tls_files() -> Result<Option<TlsFiles>, ConfigError> {
    match (optional(TLS_CERT_FILE), optional(TLS_KEY_FILE)) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(TlsFiles {
            cert_path: cert.into(),
            key_path: key.into(),
        })),
        (Some(_), None) => Err(ConfigError::new(
            TLS_KEY_FILE,
            "must be set with TLS_CERT_FILE",
        )),
        (None, Some(_)) => Err(ConfigError::new(
            TLS_CERT_FILE,
            "must be set with TLS_KEY_FILE",
        )),
    }
}

impl std::fmt::Debug for CommonConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommonConfig")
            .field("database_pool_size", &self.database_pool_size)
            .field("database_call_timeout", &self.database_call_timeout)
            .field("redis", &self.redis)
            .field(
                "database_transaction_pooling",
                &self.database_transaction_pooling,
            )
            .field("redis_key_prefix", &self.redis_key_prefix)
            .field("listen_addr", &self.listen_addr)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl CommonConfig {
    /// Reads the shared settings; `default_port` is the service's own.
    pub fn from_env(default_port: u16) -> Result<Self, ConfigError> {
        let database_direct_url = optional(DATABASE_DIRECT_URL);
        let config = Self {
            database_url: required(DATABASE_URL)?,
            database_transaction_pooling: parsed_or(
                DATABASE_TRANSACTION_POOLING,
                database_direct_url.is_some(),
            )?,
            database_direct_url,
            database_pool_size: parsed_or(DATABASE_POOL_SIZE, 16)?,
            database_call_timeout: std::time::Duration::from_millis(parsed_or(
                DATABASE_CALL_TIMEOUT_MS,
                crate::stores::STORE_TIMEOUT.as_millis() as u64,
            )?),
            redis: RedisSettings::from_env()?,
            redis_key_prefix: optional(REDIS_KEY_PREFIX).unwrap_or_else(|| "devicelink:".into()),
            listen_addr: parsed_or(LISTEN_ADDR, ([0, 0, 0, 0], default_port).into())?,
            shutdown_grace: std::time::Duration::from_secs(parsed_or(SHUTDOWN_GRACE_SECS, 20)?),
            tls: tls_files()?,
            limits: LimitsConfig::from_env()?,
            record_keys: RecordKeys::from_env()?,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks what parsing alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=1024).contains(&self.database_pool_size) {
            return Err(ConfigError::new(
                DATABASE_POOL_SIZE,
                "must be between 1 and 1024",
            ));
        }
        let call_timeout_ms = self.database_call_timeout.as_millis();
        if !(100..=10_000).contains(&call_timeout_ms) {
            return Err(ConfigError::new(
                DATABASE_CALL_TIMEOUT_MS,
                "must be between 100 and 10000 (milliseconds)",
            ));
        }
        if self.shutdown_grace > std::time::Duration::from_secs(3600) {
            return Err(ConfigError::new(
                SHUTDOWN_GRACE_SECS,
                "must be at most 3600",
            ));
        }
        for (variable, url) in [
            (DATABASE_URL, Some(&self.database_url)),
            (DATABASE_DIRECT_URL, self.database_direct_url.as_ref()),
        ] {
            if let Some(Err(problem)) = url.map(|url| crate::stores::PostgresUrl::parse(url)) {
                return Err(ConfigError::new(variable, problem.to_string()));
            }
        }
        self.redis.validate(&self.redis_key_prefix)
    }
}

use crate::limits::{Rate, Scope, TrustedProxies};
pub use crate::stores::{RedisServers, RedisSettings};

/// The rate limits of every scope (`None`: off) and the trusted proxies.
/// Per-app limits, set through `AdminService`, override these defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// `RATE_LIMIT_MINT_PER_KEY`.
    pub mint_per_key: Option<Rate>,
    /// `RATE_LIMIT_MINT_PER_EXTERNAL_ID`.
    pub mint_per_external_id: Option<Rate>,
    /// `RATE_LIMIT_REDEEM_PER_DEVICE`.
    pub redeem_per_device: Option<Rate>,
    /// `RATE_LIMIT_INSTALL_PER_TOKEN`.
    pub install_per_token: Option<Rate>,
    /// `RATE_LIMIT_FAILED_AUTH_PER_ADDRESS`.
    pub failed_auth_per_address: Option<Rate>,
    /// `TRUSTED_PROXIES`.
    pub trusted_proxies: TrustedProxies,
}

/// The defaults the specification documents, in the variables' syntax.
const LIMIT_DEFAULTS: [(&str, &str); 5] = [
    (RATE_LIMIT_MINT_PER_KEY, "100/s,burst=200"),
    (RATE_LIMIT_MINT_PER_EXTERNAL_ID, "10/min,burst=5"),
    (RATE_LIMIT_REDEEM_PER_DEVICE, "10/min,burst=5"),
    (RATE_LIMIT_INSTALL_PER_TOKEN, "120/min,burst=20"),
    (RATE_LIMIT_FAILED_AUTH_PER_ADDRESS, "30/min,burst=10"),
];

impl LimitsConfig {
    /// Reads every `RATE_LIMIT_*` and `TRUSTED_PROXIES`, defaults for those
    /// unset.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(optional)
    }

    /// Every limit off and no proxy trusted: for tests that are not about
    /// limits, and for benchmarks of what a call costs without them.
    pub fn off() -> Self {
        Self::from_lookup(|variable| {
            variable
                .starts_with("RATE_LIMIT_")
                .then(|| "off".to_owned())
        })
        .unwrap_or_else(|_| unreachable!("off parses"))
    }

    /// The documented defaults.
    pub fn defaults() -> Self {
        Self::from_lookup(|_| None).unwrap_or_else(|_| unreachable!("the defaults parse"))
    }

    /// Reads the settings through `lookup` (the environment, or a test's
    /// map), so that parsing is tested without touching the process's
    /// environment.
    pub fn from_lookup(
        lookup: impl Fn(&'static str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let rate = |variable: &'static str| -> Result<Option<Rate>, ConfigError> {
            let default = LIMIT_DEFAULTS
                .iter()
                .find(|(name, _)| *name == variable)
                .map_or("off", |(_, default)| default);
            let text = lookup(variable).unwrap_or_else(|| default.to_owned());
            Rate::parse_setting(&text).map_err(|message| ConfigError::new(variable, message))
        };
        Ok(Self {
            mint_per_key: rate(RATE_LIMIT_MINT_PER_KEY)?,
            mint_per_external_id: rate(RATE_LIMIT_MINT_PER_EXTERNAL_ID)?,
            redeem_per_device: rate(RATE_LIMIT_REDEEM_PER_DEVICE)?,
            install_per_token: rate(RATE_LIMIT_INSTALL_PER_TOKEN)?,
            failed_auth_per_address: rate(RATE_LIMIT_FAILED_AUTH_PER_ADDRESS)?,
            trusted_proxies: TrustedProxies::parse(&lookup(TRUSTED_PROXIES).unwrap_or_default())
                .map_err(|message| ConfigError::new(TRUSTED_PROXIES, message))?,
        })
    }

    /// The environment's rate for `scope`.
    pub fn rate(&self, scope: Scope) -> Option<Rate> {
        match scope {
            Scope::MintPerKey => self.mint_per_key,
            Scope::MintPerExternalId => self.mint_per_external_id,
            Scope::RedeemPerDevice => self.redeem_per_device,
            Scope::InstallPerToken => self.install_per_token,
            Scope::FailedAuthPerAddress => self.failed_auth_per_address,
        }
    }
}

#[cfg(test)]
mod limits_config_tests {
    #[test]
    fn off_turns_every_limit_off() {
        let off = super::LimitsConfig::off();
        for scope in crate::limits::Scope::ALL {
            assert_eq!(off.rate(scope), None, "{scope:?}");
        }
        assert_eq!(off.trusted_proxies, Default::default());
    }

    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<LimitsConfig, ConfigError> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        LimitsConfig::from_lookup(|variable| {
            pairs
                .iter()
                .find(|(name, _)| name == variable)
                .map(|(_, value)| value.clone())
        })
    }

    #[test]
    fn unset_variables_take_the_documented_defaults() {
        let config = read(&[]).expect("the defaults parse");
        assert_eq!(config, LimitsConfig::defaults());
        let show = |rate: Option<Rate>| rate.map(|rate| rate.to_string());
        assert_eq!(
            show(config.mint_per_key).as_deref(),
            Some("100/s,burst=200")
        );
        assert_eq!(
            show(config.mint_per_external_id).as_deref(),
            Some("10/min,burst=5")
        );
        assert_eq!(
            show(config.redeem_per_device).as_deref(),
            Some("10/min,burst=5")
        );
        assert_eq!(
            show(config.install_per_token).as_deref(),
            Some("120/min,burst=20")
        );
        assert_eq!(
            show(config.failed_auth_per_address).as_deref(),
            Some("30/min,burst=10")
        );
        assert_eq!(config.trusted_proxies, TrustedProxies::default());
        for scope in Scope::ALL {
            assert!(config.rate(scope).is_some(), "{scope:?}");
        }
    }

    #[test]
    fn settings_override_the_defaults_and_off_switches_a_limit_off() {
        let config = read(&[
            (RATE_LIMIT_MINT_PER_KEY, "5/s"),
            (RATE_LIMIT_INSTALL_PER_TOKEN, "off"),
            (TRUSTED_PROXIES, "10.0.0.0/8, 192.168.0.1"),
        ])
        .expect("parses");
        assert_eq!(config.mint_per_key.map(|r| r.burst()), Some(5));
        assert_eq!(config.install_per_token, None);
        assert_eq!(config.rate(Scope::InstallPerToken), None);
        assert!(
            config
                .trusted_proxies
                .contains("10.3.2.1".parse().expect("ip"))
        );
    }

    #[test]
    fn a_bad_setting_names_its_variable() {
        let error = read(&[(RATE_LIMIT_REDEEM_PER_DEVICE, "10/fortnight")]).expect_err("bad unit");
        assert_eq!(error.variable, RATE_LIMIT_REDEEM_PER_DEVICE);
        assert!(
            error
                .to_string()
                .starts_with("RATE_LIMIT_REDEEM_PER_DEVICE: "),
            "{error}"
        );
        assert!(error.message.contains("fortnight"), "{error}");
        let error = read(&[(TRUSTED_PROXIES, "10.0.0.0/99")]).expect_err("bad prefix");
        assert_eq!(error.variable, TRUSTED_PROXIES);
        let error = read(&[(RATE_LIMIT_FAILED_AUTH_PER_ADDRESS, "0/min")]).expect_err("zero");
        assert_eq!(error.variable, RATE_LIMIT_FAILED_AUTH_PER_ADDRESS);
    }
}
