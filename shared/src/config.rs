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

/// Postgres connection URL, e.g. `postgres://user:pass@host:5432/devicelink`.
pub const DATABASE_URL: &str = "DATABASE_URL";
/// Redis connection URL, e.g. `redis://127.0.0.1:6379/0`.
pub const REDIS_URL: &str = "REDIS_URL";
/// The gRPC listen address, e.g. `0.0.0.0:50051`.
pub const LISTEN_ADDR: &str = "LISTEN_ADDR";
/// Prefix of every Redis key the services write, so that deployments (and
/// tests) can share one Redis.
pub const REDIS_KEY_PREFIX: &str = "REDIS_KEY_PREFIX";
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
    /// Most Postgres connections this replica holds.
    pub database_pool_size: usize,
    /// Redis connection URL. May hold a password: never logged.
    pub redis_url: String,
    /// Prefix of every Redis key.
    pub redis_key_prefix: String,
    /// Where to listen for gRPC.
    pub listen_addr: std::net::SocketAddr,
    /// How long in-flight calls may take to finish once draining begins.
    pub shutdown_grace: std::time::Duration,
    /// Certificate and key files to serve TLS with; `None` for plaintext.
    pub tls: Option<TlsFiles>,
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
        let config = Self {
            database_url: required(DATABASE_URL)?,
            database_pool_size: parsed_or(DATABASE_POOL_SIZE, 16)?,
            redis_url: required(REDIS_URL)?,
            redis_key_prefix: optional(REDIS_KEY_PREFIX).unwrap_or_else(|| "devicelink:".into()),
            listen_addr: parsed_or(LISTEN_ADDR, ([0, 0, 0, 0], default_port).into())?,
            shutdown_grace: std::time::Duration::from_secs(parsed_or(SHUTDOWN_GRACE_SECS, 20)?),
            tls: tls_files()?,
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
        if self.shutdown_grace > std::time::Duration::from_secs(3600) {
            return Err(ConfigError::new(
                SHUTDOWN_GRACE_SECS,
                "must be at most 3600",
            ));
        }
        if self.database_url.parse::<tokio_postgres::Config>().is_err() {
            return Err(ConfigError::new(
                DATABASE_URL,
                "is not a Postgres connection URL",
            ));
        }
        if redis::Client::open(self.redis_url.as_str()).is_err() {
            return Err(ConfigError::new(REDIS_URL, "is not a Redis connection URL"));
        }
        Ok(())
    }
}
