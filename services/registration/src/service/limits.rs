//! The rate limits of `RegistrationService` (see
//! [`devicelink_shared::limits`]).
//!
//! - `CreateUser`: per (app, device id), with the client address's failed
//!   credentials as a blocker; decided while the code is read, both Redis
//!   commands in flight together on the one multiplexed connection, so the
//!   limit adds no round trip of latency.
//! - `GetInstallStatus`, `WatchInstallStatus` (its first read) and
//!   `ResetInstall`: per install token (its hash), with the same blocker,
//!   before the status cache or Postgres is asked.
//!
//! What counts as a failed credential: a code that is neither live nor ever
//! redeemed (made up, or expired: the two cannot be told apart), a used
//! code presented by another device, and a well-formed install token that
//! no install holds. A missing or malformed token or code does not count:
//! it is refused offline, before any store lookup, and teaches nothing.

use std::net::{IpAddr, SocketAddr};

use devicelink_shared::config::LimitsConfig;
use devicelink_shared::limits::{Decision, Limit, LimitKey, RateLimiter};
use devicelink_shared::secret::SecretHash;
use devicelink_shared::stores::RedisConnection;
use devicelink_shared::validate::AppId;
use tonic::metadata::MetadataMap;

use crate::error::RegistrationError;

/// The limiter and the rates it applies: one per replica, cheap to clone.
#[derive(Clone, Debug)]
pub struct RequestLimits {
    limiter: RateLimiter<RedisConnection>,
    config: LimitsConfig,
}

/// Who a call comes from, as far as limits are concerned.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    /// The client address (behind trusted proxies); `None` without a peer.
    address: Option<IpAddr>,
}

impl RequestLimits {
    /// Limits kept under `key_prefix` in `redis`, at the rates of `config`.
    pub fn new(redis: RedisConnection, key_prefix: &str, config: LimitsConfig) -> Self {
        Self {
            limiter: RateLimiter::new(redis, key_prefix),
            config,
        }
    }

    /// The caller of a request from `peer` with `metadata`: the peer's
    /// address, or the client's behind a trusted proxy.
    pub fn caller(&self, peer: Option<SocketAddr>, metadata: &MetadataMap) -> Caller {
        Caller {
            address: self
                .config
                .trusted_proxies
                .client_address(peer.map(|peer| peer.ip()), metadata),
        }
    }

    /// Counts a `CreateUser` against its device, unless the caller's
    /// address is blocked by its failed credentials.
    pub async fn redeem(
        &self,
        caller: Caller,
        app_id: AppId,
        device_id: &str,
    ) -> Result<(), RegistrationError> {
        let device = Limit::new(
            LimitKey::redeem_per_device(app_id, device_id),
            self.config.redeem_per_device,
        );
        let decision = self
            .limiter
            .check_unless_blocked(device.as_slice(), self.blockers(caller).as_slice())
            .await;
        allowed(decision)
    }

    /// Counts a call made with an install token (by its hash) against that
    /// token, unless the caller's address is blocked.
    pub async fn install(
        &self,
        caller: Caller,
        token_hash: &SecretHash,
    ) -> Result<(), RegistrationError> {
        let token = Limit::new(
            LimitKey::install_per_token(token_hash.as_bytes()),
            self.config.install_per_token,
        );
        let decision = self
            .limiter
            .check_unless_blocked(token.as_slice(), self.blockers(caller).as_slice())
            .await;
        allowed(decision)
    }

    /// Counts a failed credential against the caller's address. The call
    /// is answered with its own failure whatever this decides; once the
    /// address is past its limit, its next calls are refused.
    pub async fn failed(&self, caller: Caller) {
        let _now_blocked_or_not = self.limiter.record(self.blockers(caller).as_slice()).await;
    }

    /// The caller's failed-credential limit; `None` when off or without an
    /// address.
    fn blockers(&self, caller: Caller) -> Option<Limit> {
        caller.address.and_then(|address| {
            Limit::new(
                LimitKey::failed_auth_per_address(address),
                self.config.failed_auth_per_address,
            )
        })
    }
}

fn allowed(decision: Decision) -> Result<(), RegistrationError> {
    match decision {
        Decision::Allowed => Ok(()),
        Decision::Limited(refusal) => Err(RegistrationError::RateLimited(refusal)),
    }
}
