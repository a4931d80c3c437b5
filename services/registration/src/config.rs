//! registration's settings, from the environment.

use devicelink_shared::config::{CommonConfig, ConfigError, DEVICELINK_ADMIN_TOKEN, optional};
use devicelink_shared::secret::SecretHash;

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
}

impl RegistrationConfig {
    /// Reads and checks the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let admin_token = optional(DEVICELINK_ADMIN_TOKEN)
            .ok_or_else(|| ConfigError::new(DEVICELINK_ADMIN_TOKEN, "must be set"))?;
        Ok(Self {
            common: CommonConfig::from_env(DEFAULT_PORT)?,
            admin_token_hash: admin_token_hash(&admin_token)?,
        })
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
}
