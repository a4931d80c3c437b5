//! The rate limits of `MintAuthCode` (see [`devicelink_shared::limits`]).
//!
//! Three scopes: per API key and per (app, external id), decided with the
//! write of the code ([`crate::codes::CodeMinter`]: in memory far below
//! them, in the same script that stores the code near them), so a mint
//! costs one Redis round trip with or without limits; and failed
//! credentials per client address, which blocks an address that keeps
//! presenting bad keys.
//!
//! Which refusals count as failed credentials: a key that is unknown (no
//! such key id, or a secret that does not match), revoked or expired. Each
//! of those cost a lookup or are what a key-guessing client would see. A
//! missing, malformed or mistyped (bad checksum) key does not count: it is
//! refused offline, costs no store lookup and teaches nothing, and it is
//! what a misconfigured backend sends on every call.
//!
//! An app may set its own mint limits (`AdminService.SetAppLimits`):
//! they are read with its API key, in the same query, and cached with it
//! ([`crate::api_keys`]), so they cost no extra round trip and a change
//! applies on every replica within the key cache's two seconds. The
//! failed-credential limit stays deployment-wide: its subject is an
//! address, which names no app, and it must hold before the key (and so
//! the app) has been looked up.
//!
//! A blocked address is refused before any store lookup: the verifier asks
//! [`CallLimits::admit`] before it reads a key from Postgres. A key served
//! from its cache meets the address's limit in this replica's memory: the
//! refusals it has seen, its own failures at once and, since each mint has
//! the limiter watch its address, another replica's block within a flush
//! (250 ms). So the hot path (a cached key) pays nothing in Redis for the
//! address.

use std::net::SocketAddr;

use devicelink_shared::api_key::KeyId;
use devicelink_shared::config::LimitsConfig;
use devicelink_shared::limits::{Decision, Limit, LimitKey, Rate, RateLimiter, Scope};
use devicelink_shared::stores::RedisConnection;
use devicelink_shared::validate::{AppId, ExternalId};
use tonic::metadata::MetadataMap;

use crate::error::{AuthCodeError, KeyRejection};

/// An app's own mint limits, as `AdminService.SetAppLimits` stored them:
/// `None` keeps the deployment's default, `Some(None)` is off for the app,
/// `Some(Some(rate))` is the app's own rate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppMintLimits {
    /// `MintAuthCode` per API key of the app.
    pub per_key: Option<Option<Rate>>,
    /// `MintAuthCode` per external id of the app.
    pub per_external_id: Option<Option<Rate>>,
}

impl AppMintLimits {
    /// The limits from their stored text (`apps.limit_mint_per_*`). Text
    /// that does not parse (registration validates what it stores, so
    /// never in practice) keeps the default, with a warning: a bad row
    /// must not stop an app from minting.
    pub fn from_stored(per_key: Option<&str>, per_external_id: Option<&str>) -> Self {
        let parse = |scope: Scope, text: Option<&str>| {
            let text = text?;
            Rate::parse_setting(text)
                .inspect_err(|error| {
                    tracing::warn!(
                        scope = scope.name(),
                        error,
                        "a stored app limit does not parse; applying the default"
                    );
                })
                .ok()
        };
        Self {
            per_key: parse(Scope::MintPerKey, per_key),
            per_external_id: parse(Scope::MintPerExternalId, per_external_id),
        }
    }

    /// The rate applied for `scope`: the app's own where set, else
    /// `default`.
    fn rate(&self, scope: Scope, default: Option<Rate>) -> Option<Rate> {
        let own = match scope {
            Scope::MintPerKey => self.per_key,
            Scope::MintPerExternalId => self.per_external_id,
            Scope::RedeemPerDevice | Scope::InstallPerToken | Scope::FailedAuthPerAddress => None,
        };
        own.unwrap_or(default)
    }
}

/// The limiter and the rates it applies: one per replica.
#[derive(Clone, Debug)]
pub struct MintLimits {
    limiter: RateLimiter<RedisConnection>,
    config: LimitsConfig,
}

impl MintLimits {
    /// Limits kept under `key_prefix` in `redis`, at the rates of `config`.
    pub fn new(redis: RedisConnection, key_prefix: &str, config: LimitsConfig) -> Self {
        Self {
            limiter: RateLimiter::new(redis, key_prefix),
            config,
        }
    }

    /// The limiter, which also stores minted codes.
    pub fn limiter(&self) -> &RateLimiter<RedisConnection> {
        &self.limiter
    }

    /// The limits of one call from `peer` (the client address behind
    /// trusted proxies, see [`devicelink_shared::limits::TrustedProxies`]).
    pub fn for_call(&self, peer: Option<SocketAddr>, metadata: &MetadataMap) -> CallLimits<'_> {
        let address = self
            .config
            .trusted_proxies
            .client_address(peer.map(|peer| peer.ip()), metadata);
        let failed_auth = address.and_then(|address| {
            Limit::new(
                LimitKey::failed_auth_per_address(address),
                self.config.failed_auth_per_address,
            )
        });
        CallLimits {
            limits: self,
            failed_auth,
            address,
        }
    }
}

/// The limits of one call, once its client address is known.
#[derive(Debug)]
pub struct CallLimits<'a> {
    limits: &'a MintLimits,
    /// The client address's failed-credential limit; `None` when off or
    /// when the call has no address.
    failed_auth: Option<Limit>,
    /// The client address, as audit events record it.
    address: Option<std::net::IpAddr>,
}

impl CallLimits<'_> {
    /// The client address (behind trusted proxies), if known.
    pub fn client_address(&self) -> Option<std::net::IpAddr> {
        self.address
    }

    /// Refuses a call from an address blocked by its failures, counting
    /// nothing: asked before a key is looked up in Postgres.
    pub async fn admit(&self) -> Result<(), AuthCodeError> {
        match self.limits.limiter.peek(self.blockers()).await {
            Decision::Allowed => Ok(()),
            Decision::Limited(refusal) => Err(AuthCodeError::RateLimited(refusal)),
        }
    }

    /// Counts `error` against the client address when it is a failed
    /// credential, and gives it back: the call is answered with its own
    /// failure, and the next one from a blocked address is refused.
    pub async fn failed(&self, error: AuthCodeError) -> AuthCodeError {
        if counts_as_failed_credential(&error) {
            let _now_blocked_or_not = self.limits.limiter.record(self.blockers()).await;
        }
        error
    }

    /// What the mint consumes: its key's and its external id's limits, at
    /// the app's own rates where it has them.
    pub fn mint(
        &self,
        app_id: AppId,
        key_id: &KeyId,
        external_id: &ExternalId,
        app_limits: &AppMintLimits,
    ) -> Vec<Limit> {
        let rate = |scope: Scope| app_limits.rate(scope, self.limits.config.rate(scope));
        [
            Limit::new(
                LimitKey::mint_per_key(app_id, key_id),
                rate(Scope::MintPerKey),
            ),
            Limit::new(
                LimitKey::mint_per_external_id(app_id, external_id),
                rate(Scope::MintPerExternalId),
            ),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// What refuses the call without being consumed by it: the client
    /// address's failed credentials.
    pub fn blockers(&self) -> &[Limit] {
        self.failed_auth.as_slice()
    }
}

/// Whether a refusal is one a key-guessing client would meet.
fn counts_as_failed_credential(error: &AuthCodeError) -> bool {
    matches!(
        error,
        AuthCodeError::Unauthenticated(
            KeyRejection::Unknown | KeyRejection::Revoked | KeyRejection::Expired
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_a_key_guesser_meets_count() {
        let counted =
            |rejection| counts_as_failed_credential(&AuthCodeError::Unauthenticated(rejection));
        assert!(counted(KeyRejection::Unknown));
        assert!(counted(KeyRejection::Revoked));
        assert!(counted(KeyRejection::Expired));
        assert!(!counted(KeyRejection::Missing));
        assert!(!counted(KeyRejection::Malformed));
        assert!(!counted(KeyRejection::BadChecksum));
        assert!(!counts_as_failed_credential(&AuthCodeError::WrongApp));
    }

    #[test]
    fn an_app_own_limit_replaces_the_default_and_off_lifts_it() {
        let default = Rate::parse_setting("10/min").expect("parses");
        let own = Rate::parse_setting("2/min").expect("parses");
        let limits = AppMintLimits::from_stored(Some("off"), Some("2/min"));
        assert_eq!(limits.rate(Scope::MintPerKey, default), None);
        assert_eq!(limits.rate(Scope::MintPerExternalId, default), own);
        let unset = AppMintLimits::from_stored(None, Some("not a rate"));
        assert_eq!(unset.rate(Scope::MintPerKey, default), default);
        assert_eq!(unset.rate(Scope::MintPerExternalId, default), default);
    }
}
