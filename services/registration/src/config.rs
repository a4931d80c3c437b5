//! registration's settings, from the environment.
//!
//! The shared [`CommonConfig`] covers the stores and the public listen
//! address; the variables only registration reads are named here, as the
//! shared ones are in [`devicelink_shared::config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use devicelink_shared::config::{CommonConfig, ConfigError, optional, parsed_or};
use devicelink_shared::secret::SecretHash;

use crate::operators::OperatorSource;

/// Where `AdminService` listens, alone (default [`DEFAULT_ADMIN_LISTEN_ADDR`]):
/// a private address, never the public one, so that the admin API cannot
/// be reached from where the public API can.
pub const ADMIN_LISTEN_ADDR: &str = "ADMIN_LISTEN_ADDR";
/// The quickstart's single operator token (at least
/// [`MIN_ADMIN_TOKEN_LEN`] characters), known as the operator
/// [`crate::operators::QUICKSTART_OPERATOR`]; `devicelinkctl` reads it too.
/// Optional when [`DEVICELINK_ADMIN_TOKENS_FILE`] names operators.
pub const DEVICELINK_ADMIN_TOKEN: &str = "DEVICELINK_ADMIN_TOKEN";
/// A file of named operators, one `name:sha256hex` (the SHA-256 of the
/// operator's token) a line, mounted from a Secret and read again while
/// serving (see [`crate::operators`]).
pub const DEVICELINK_ADMIN_TOKENS_FILE: &str = "DEVICELINK_ADMIN_TOKENS_FILE";
/// `1` or `true` to migrate the schema and exit: the migration step of a
/// rollout, run once before the new replicas start (`0`, `false` or unset
/// to serve).
pub const DEVICELINK_MIGRATE_ONLY: &str = "DEVICELINK_MIGRATE_ONLY";

/// The port registration listens on unless `LISTEN_ADDR` says otherwise.
pub const DEFAULT_PORT: u16 = 50052;
/// Where `AdminService` listens unless [`ADMIN_LISTEN_ADDR`] says
/// otherwise: loopback, so that an operator reaches it only from the pod
/// (or through a port-forward or the gateway's private listener).
pub const DEFAULT_ADMIN_LISTEN_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50053);
/// The shortest admin token accepted: a guessable operator credential would
/// open every app's keys.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// Everything registration needs to start.
#[derive(Debug, Clone)]
pub struct RegistrationConfig {
    /// Stores and the public listen address.
    pub common: CommonConfig,
    /// Where `AdminService` listens ([`ADMIN_LISTEN_ADDR`]).
    pub admin_listen_addr: SocketAddr,
    /// Where the operators allowed to call `AdminService` come from.
    pub operators: OperatorSource,
    /// How many `WatchInstallStatus` streams may be open.
    pub watch_caps: WatchCaps,
    /// How long audit events are kept ([`AUDIT_RETENTION_DAYS`]).
    pub audit_retention: Duration,
}

impl RegistrationConfig {
    /// Reads and checks the environment, the tokens file included: a file
    /// that cannot be read or does not parse stops the service at start-up.
    pub fn from_env() -> Result<Self, ConfigError> {
        let operators = OperatorSource {
            quickstart_token: optional(DEVICELINK_ADMIN_TOKEN)
                .map(|token| admin_token_hash(&token))
                .transpose()?,
            tokens_file: optional(DEVICELINK_ADMIN_TOKENS_FILE).map(PathBuf::from),
        };
        check_operators(&operators)?;
        Ok(Self {
            common: CommonConfig::from_env(DEFAULT_PORT)?,
            admin_listen_addr: parsed_or(ADMIN_LISTEN_ADDR, DEFAULT_ADMIN_LISTEN_ADDR)?,
            operators,
            watch_caps: WatchCaps::from_env()?,
            audit_retention: audit_retention_from_env()?,
        })
    }
}

/// Whether `source` gives at least one operator. The complaint names the
/// variable to fix and, for the file, the line; never a token or a hash.
pub fn check_operators(source: &OperatorSource) -> Result<(), ConfigError> {
    if source.quickstart_token.is_none() && source.tokens_file.is_none() {
        return Err(ConfigError::new(
            DEVICELINK_ADMIN_TOKENS_FILE,
            format!(
                "set it or {DEVICELINK_ADMIN_TOKEN}: without either, no operator can call AdminService"
            ),
        ));
    }
    source
        .load()
        .map(drop)
        .map_err(|problem| ConfigError::new(DEVICELINK_ADMIN_TOKENS_FILE, problem))
}

/// Whether this run only migrates the schema (`DEVICELINK_MIGRATE_ONLY`).
/// A value other than `1`, `true`, `0` or `false` is refused rather than
/// read as "serve": a rollout's migration step must not start serving by a
/// typo.
pub fn migrate_only_from_env() -> Result<bool, ConfigError> {
    migrate_only(optional(DEVICELINK_MIGRATE_ONLY).as_deref())
}

fn migrate_only(value: Option<&str>) -> Result<bool, ConfigError> {
    match value.map(str::trim) {
        None | Some("0" | "false") => Ok(false),
        Some("1" | "true") => Ok(true),
        Some(other) => Err(ConfigError::new(
            DEVICELINK_MIGRATE_ONLY,
            format!("must be 1, true, 0 or false, got {other:?}"),
        )),
    }
}

/// Checks an admin token's strength and hashes it; the text itself is not
/// kept in memory longer than this.
pub fn admin_token_hash(admin_token: &str) -> Result<SecretHash, ConfigError> {
    if admin_token.trim().len() < MIN_ADMIN_TOKEN_LEN {
        return Err(ConfigError::new(
            DEVICELINK_ADMIN_TOKEN,
            format!("must be at least {MIN_ADMIN_TOKEN_LEN} characters"),
        ));
    }
    Ok(SecretHash::of(&[admin_token.trim().as_bytes()]))
}

// ---- Audit events ---------------------------------------------------------

/// How many days audit events are kept (default
/// [`DEFAULT_AUDIT_RETENTION_DAYS`]); the janitor deletes older ones.
pub const AUDIT_RETENTION_DAYS: &str = "AUDIT_RETENTION_DAYS";
/// [`AUDIT_RETENTION_DAYS`] unless set.
pub const DEFAULT_AUDIT_RETENTION_DAYS: u32 = 90;
/// The longest retention accepted: ten years, past which a typo is likelier
/// than a policy.
const MAX_AUDIT_RETENTION_DAYS: u32 = 3650;

fn audit_retention_from_env() -> Result<Duration, ConfigError> {
    audit_retention(parsed_or(
        AUDIT_RETENTION_DAYS,
        DEFAULT_AUDIT_RETENTION_DAYS,
    )?)
}

fn audit_retention(days: u32) -> Result<Duration, ConfigError> {
    if !(1..=MAX_AUDIT_RETENTION_DAYS).contains(&days) {
        return Err(ConfigError::new(
            AUDIT_RETENTION_DAYS,
            format!("must be 1 to {MAX_AUDIT_RETENTION_DAYS} days, got {days}"),
        ));
    }
    Ok(Duration::from_secs(u64::from(days) * 24 * 3600))
}

// ---- Watch stream caps ----------------------------------------------------

/// Most `WatchInstallStatus` streams open at once for one install (default
/// [`DEFAULT_WATCH_STREAMS_PER_INSTALL`]): a device needs one, and one more
/// while it reconnects; a stolen token must not pin a replica's memory.
pub const WATCH_STREAMS_PER_INSTALL: &str = "WATCH_STREAMS_PER_INSTALL";
/// Most `WatchInstallStatus` streams open at once on one replica (default
/// [`DEFAULT_WATCH_STREAMS_PER_REPLICA`]): each holds a task, a channel and
/// an HTTP/2 stream, so their number bounds the replica's memory.
pub const WATCH_STREAMS_PER_REPLICA: &str = "WATCH_STREAMS_PER_REPLICA";
/// [`WATCH_STREAMS_PER_INSTALL`] unless set.
pub const DEFAULT_WATCH_STREAMS_PER_INSTALL: usize = 2;
/// [`WATCH_STREAMS_PER_REPLICA`] unless set.
pub const DEFAULT_WATCH_STREAMS_PER_REPLICA: usize = 10_000;

/// How many watch streams may be open; past either cap a new stream is
/// refused with RESOURCE_EXHAUSTED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchCaps {
    /// Most open streams of one install.
    pub per_install: usize,
    /// Most open streams on this replica.
    pub per_replica: usize,
}

impl Default for WatchCaps {
    fn default() -> Self {
        Self {
            per_install: DEFAULT_WATCH_STREAMS_PER_INSTALL,
            per_replica: DEFAULT_WATCH_STREAMS_PER_REPLICA,
        }
    }
}

impl WatchCaps {
    /// Reads both caps; zero is refused, since it would refuse every stream.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            per_install: at_least_one(
                WATCH_STREAMS_PER_INSTALL,
                parsed_or(WATCH_STREAMS_PER_INSTALL, DEFAULT_WATCH_STREAMS_PER_INSTALL)?,
            )?,
            per_replica: at_least_one(
                WATCH_STREAMS_PER_REPLICA,
                parsed_or(WATCH_STREAMS_PER_REPLICA, DEFAULT_WATCH_STREAMS_PER_REPLICA)?,
            )?,
        })
    }
}

fn at_least_one(variable: &'static str, value: usize) -> Result<usize, ConfigError> {
    if value == 0 {
        return Err(ConfigError::new(variable, "must be at least 1"));
    }
    Ok(value)
}

// ---- end of watch stream caps -----------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_admin_tokens_are_refused() {
        let error = admin_token_hash("short").unwrap_err();
        assert_eq!(error.variable, DEVICELINK_ADMIN_TOKEN);
        assert!(!error.message.contains("short"));
        assert!(admin_token_hash("a-long-enough-operator-token").is_ok());
    }

    #[test]
    fn a_watch_cap_of_zero_is_refused() {
        let error = at_least_one(WATCH_STREAMS_PER_INSTALL, 0).unwrap_err();
        assert_eq!(error.variable, WATCH_STREAMS_PER_INSTALL);
        assert_eq!(at_least_one(WATCH_STREAMS_PER_REPLICA, 1), Ok(1));
    }

    #[test]
    fn some_operator_must_be_named() {
        let nobody = OperatorSource {
            quickstart_token: None,
            tokens_file: None,
        };
        let error = check_operators(&nobody).unwrap_err();
        assert_eq!(error.variable, DEVICELINK_ADMIN_TOKENS_FILE);
        assert!(error.message.contains(DEVICELINK_ADMIN_TOKEN), "{error}");
        let quickstart = OperatorSource {
            quickstart_token: Some(admin_token_hash("a-long-enough-operator-token").expect("long")),
            tokens_file: None,
        };
        assert!(check_operators(&quickstart).is_ok());
    }

    #[test]
    fn a_malformed_tokens_file_is_refused_by_line_without_its_content() {
        let path = std::env::temp_dir().join(format!("devicelink-tokens-{}", std::process::id()));
        std::fs::write(&path, "# ops\nalice:not-a-hash-secret\n").expect("write");
        let source = OperatorSource {
            quickstart_token: None,
            tokens_file: Some(path.clone()),
        };
        let error = check_operators(&source).unwrap_err();
        let _ = std::fs::remove_file(&path);
        assert_eq!(error.variable, DEVICELINK_ADMIN_TOKENS_FILE);
        assert!(error.message.starts_with("line 2:"), "{error}");
        assert!(!error.message.contains("not-a-hash-secret"), "{error}");
    }

    #[test]
    fn audit_retention_is_one_day_to_ten_years() {
        assert_eq!(
            audit_retention(90).unwrap(),
            Duration::from_secs(90 * 24 * 3600)
        );
        assert!(audit_retention(0).is_err());
        assert!(audit_retention(3651).is_err());
    }

    #[test]
    fn migrate_only_is_a_strict_flag() {
        assert_eq!(migrate_only(None), Ok(false));
        assert_eq!(migrate_only(Some("0")), Ok(false));
        assert_eq!(migrate_only(Some("false")), Ok(false));
        assert_eq!(migrate_only(Some("1")), Ok(true));
        assert_eq!(migrate_only(Some("true")), Ok(true));
        let error = migrate_only(Some("yes")).unwrap_err();
        assert_eq!(error.variable, DEVICELINK_MIGRATE_ONLY);
    }
}
