//! registration's settings, from the environment.
//!
//! The shared [`CommonConfig`] covers the stores and the listen address;
//! the variables only registration reads are named here, as the shared ones
//! are in [`devicelink_shared::config`].

use devicelink_shared::config::{CommonConfig, ConfigError, optional, parsed_or, required};
use devicelink_shared::secret::SecretHash;

/// The operator credential that guards `AdminService` (at least
/// [`MIN_ADMIN_TOKEN_LEN`] characters); `devicelinkctl` reads it too.
pub const DEVICELINK_ADMIN_TOKEN: &str = "DEVICELINK_ADMIN_TOKEN";
/// `1` or `true` to migrate the schema and exit: the migration step of a
/// rollout, run once before the new replicas start (`0`, `false` or unset
/// to serve).
pub const DEVICELINK_MIGRATE_ONLY: &str = "DEVICELINK_MIGRATE_ONLY";

/// The port registration listens on unless `LISTEN_ADDR` says otherwise.
pub const DEFAULT_PORT: u16 = 50052;
/// The shortest admin token accepted: a guessable operator credential would
/// open every app's keys.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// Everything registration needs to start.
#[derive(Debug, Clone)]
pub struct RegistrationConfig {
    /// Stores and listen address.
    pub common: CommonConfig,
    /// The hash of the operator credential guarding `AdminService`.
    pub admin_token_hash: SecretHash,
    /// How many `WatchInstallStatus` streams may be open.
    pub watch_caps: WatchCaps,
}

impl RegistrationConfig {
    /// Reads and checks the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let admin_token = required(DEVICELINK_ADMIN_TOKEN)?;
        Ok(Self {
            common: CommonConfig::from_env(DEFAULT_PORT)?,
            admin_token_hash: admin_token_hash(&admin_token)?,
            watch_caps: WatchCaps::from_env()?,
        })
    }
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
