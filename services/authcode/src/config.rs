//! authcode's settings, from the environment.
//!
//! The shared [`CommonConfig`] covers the stores and the listen address;
//! authcode adds the lifetime of the codes it mints and whether each mint is
//! an audit event. Its variables are named here, as the shared ones are in
//! [`devicelink_shared::config`].

use std::time::Duration;

use devicelink_shared::config::{CommonConfig, ConfigError, parsed_or};

/// How long a minted auth code lives, in seconds (default 600, at most 3600).
pub const AUTH_CODE_TTL_SECS: &str = "AUTH_CODE_TTL_SECS";

/// Whether each mint is recorded as a `code_minted` audit event (`true`,
/// the default, or `false`). A deployment that mints tens of thousands of
/// codes a second and accounts for them by the
/// `devicelink_auth_codes_minted_total` metric can spare Postgres a row per
/// mint; the benchmark compares the two. Refusals are audited either way.
pub const AUDIT_MINT_EVENTS: &str = "AUDIT_MINT_EVENTS";

/// The port authcode listens on unless `LISTEN_ADDR` says otherwise.
pub const DEFAULT_PORT: u16 = 50051;
/// How long a code lives unless `AUTH_CODE_TTL_SECS` says otherwise: long
/// enough for a backend to hand the code to an app, short enough that a
/// leaked code is soon worthless.
pub const DEFAULT_CODE_TTL_SECS: u64 = 600;
/// The longest lifetime a deployment may choose (the product's bound).
pub const MAX_CODE_TTL_SECS: u64 = 3600;

/// Everything authcode needs to start.
#[derive(Debug, Clone)]
pub struct AuthCodeConfig {
    /// Stores and listen address.
    pub common: CommonConfig,
    /// How long a minted code can be redeemed; also its Redis TTL.
    pub code_ttl: Duration,
    /// Whether mints are audit events ([`AUDIT_MINT_EVENTS`]).
    pub audit_mint_events: bool,
}

impl AuthCodeConfig {
    /// Reads and checks the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(DEFAULT_PORT)?,
            code_ttl: code_ttl(parsed_or(AUTH_CODE_TTL_SECS, DEFAULT_CODE_TTL_SECS)?)?,
            audit_mint_events: parsed_or(AUDIT_MINT_EVENTS, true)?,
        })
    }
}

/// Checks a code lifetime in seconds: zero would mint codes that are dead on
/// arrival (and Redis refuses `EX 0`), more than an hour breaks the product's
/// promise.
pub fn code_ttl(secs: u64) -> Result<Duration, ConfigError> {
    if !(1..=MAX_CODE_TTL_SECS).contains(&secs) {
        return Err(ConfigError::new(
            AUTH_CODE_TTL_SECS,
            format!("must be between 1 and {MAX_CODE_TTL_SECS} seconds, got {secs}"),
        ));
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_ttl_accepts_one_second_to_one_hour() {
        assert_eq!(code_ttl(1).ok(), Some(Duration::from_secs(1)));
        assert_eq!(
            code_ttl(DEFAULT_CODE_TTL_SECS).ok(),
            Some(Duration::from_secs(600))
        );
        assert_eq!(code_ttl(3600).ok(), Some(Duration::from_secs(3600)));
    }

    #[test]
    fn code_ttl_refuses_zero_and_more_than_an_hour() {
        for secs in [0, 3601, u64::MAX] {
            let error = code_ttl(secs).expect_err("out of bounds");
            assert_eq!(error.variable, AUTH_CODE_TTL_SECS);
            assert!(error.message.contains("between 1 and 3600"), "{error}");
        }
    }
}
