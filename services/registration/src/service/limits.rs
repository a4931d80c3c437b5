//! The rate limits of `RegistrationService` (see
//! [`devicelink_shared::limits`]).
//!
//! - `CreateUser`: per (app, device id), with the client address's failed
//!   credentials as a blocker. The blocker is read (`PTTL`, a plain
//!   command) while the code is read, both in flight together on the one
//!   multiplexed connection, so it adds no round trip of latency; the
//!   device's limit is decided in memory and counted in Redis behind the
//!   call, as the install token's is (below), and decided in Redis by
//!   the GCRA script once the device nears it. A redemption then costs
//!   Redis two plain reads, where a script per call cost it three times
//!   as much.
//! - `GetInstallStatus`, `WatchInstallStatus` (its first read) and
//!   `ResetInstall`: per install token (its hash), with the same blocker,
//!   before the status cache or Postgres is asked; decided in memory and
//!   counted in Redis behind the call, so that a cached status costs no
//!   round trip ([`devicelink_shared::limits::write_behind`] states the
//!   bound across replicas).
//!
//! An app may set its own `CreateUser` limit (`AdminService.SetAppLimits`):
//! [`AppLimitsCache`] keeps each app's overrides for [`APP_LIMITS_TTL`], so
//! a change applies on every replica within a few seconds and a busy app
//! costs one indexed Postgres read per replica per period. Install-token
//! and failed-credential limits stay deployment-wide: their subject (a
//! token, an address) names no app until it has been looked up, and the
//! limit has to hold before that lookup.
//!
//! What counts as a failed credential: a code that is neither live nor ever
//! redeemed (made up, or expired: the two cannot be told apart), a used
//! code presented by another device, a device-bound code without its
//! `code_verifier` (missing, wrong, or sent for a code not bound), and a
//! well-formed install token that no install holds. A missing or malformed token or code does not count:
//! it is refused offline, before any store lookup, and teaches nothing.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use devicelink_shared::audit_writer::AuditWriter;
use devicelink_shared::config::LimitsConfig;
use devicelink_shared::limits::{Decision, Limit, LimitKey, RateLimiter, Scope};
use devicelink_shared::secret::SecretHash;
use devicelink_shared::stores::RedisConnection;
use devicelink_shared::validate::AppId;
use tonic::metadata::MetadataMap;

use crate::error::RegistrationError;
use crate::store::{AppLimits, Store};

/// How long an app's own limits are used without reading them again: a
/// change made through `AdminService` applies on every replica within this
/// (plus one read).
pub const APP_LIMITS_TTL: Duration = Duration::from_secs(2);
/// The most apps whose limits are kept; past it the cache is emptied. Real
/// deployments have far fewer apps; this bounds memory against callers
/// naming made-up ones.
pub const MAX_CACHED_APPS: usize = 10_000;

/// The limiter and the rates it applies: one per replica, cheap to clone.
#[derive(Clone, Debug)]
pub struct RequestLimits {
    limiter: RateLimiter<RedisConnection>,
    config: LimitsConfig,
    apps: Arc<AppLimitsCache>,
    /// Where refusals are counted for the audit log (one `rate_limited`
    /// event per scope, app and minute), and where the service's other
    /// refusals are appended.
    audit: AuditWriter,
}

/// Who a call comes from, as far as limits are concerned.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    /// The client address (behind trusted proxies); `None` without a peer.
    address: Option<IpAddr>,
}

impl Caller {
    /// The client address, as audit events record it.
    pub fn address(self) -> Option<IpAddr> {
        self.address
    }
}

impl RequestLimits {
    /// Limits kept under `key_prefix` in `redis`, at the rates of `config`
    /// unless an app's own limits in `store` say otherwise.
    pub fn new(
        redis: RedisConnection,
        key_prefix: &str,
        config: LimitsConfig,
        store: Store,
        audit: AuditWriter,
    ) -> Self {
        Self {
            limiter: RateLimiter::new(redis, key_prefix),
            config,
            apps: Arc::new(AppLimitsCache::new(store)),
            audit,
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
        let rate = self
            .apps
            .get(app_id)
            .await?
            .rate(Scope::RedeemPerDevice, &self.config);
        let device = Limit::new(LimitKey::redeem_per_device(app_id, device_id), rate);
        let blockers = self.blockers(caller);
        // The address first, read with a plain command that goes out with
        // the code's: a blocked address consumes nothing.
        let blocked = self.limiter.blocked(blockers.as_slice()).await;
        self.allowed(blocked, Some(app_id))?;
        let decision = self
            .limiter
            .check_in_memory_first(device.as_slice(), blockers.as_slice())
            .await;
        self.allowed(decision, Some(app_id))
    }

    /// Counts a call made with an install token (by its hash) against that
    /// token, unless the caller's address is blocked. Decided in memory
    /// while the token is far from its limit, and counted in Redis behind
    /// the call ([`RateLimiter::check_in_memory_first`]): a status answered
    /// from the cache then costs no store round trip at all.
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
            .check_in_memory_first(token.as_slice(), self.blockers(caller).as_slice())
            .await;
        self.allowed(decision, None)
    }

    /// Refuses a caller whose address is blocked by its failed credentials,
    /// counting nothing: asked before an install token is looked up in
    /// Postgres (a status not in the cache, a reset), since the token's own
    /// limit was decided in memory and looked at the address only in the
    /// refusals this replica knows.
    pub async fn admit(&self, caller: Caller) -> Result<(), RegistrationError> {
        let decision = self.limiter.blocked(self.blockers(caller).as_slice()).await;
        self.allowed(decision, None)
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

/// Each app's own limits, read from Postgres on a miss and kept for
/// [`APP_LIMITS_TTL`]. The lock is held for a map operation only, never
/// across an `.await`.
struct AppLimitsCache {
    store: Store,
    entries: Mutex<HashMap<AppId, (Instant, AppLimits)>>,
}

impl std::fmt::Debug for AppLimitsCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppLimitsCache").finish_non_exhaustive()
    }
}

impl AppLimitsCache {
    fn new(store: Store) -> Self {
        Self {
            store,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The app's own limits. An app that does not exist has none (the call
    /// fails on its own later). A failed read fails the call: a redemption
    /// needs Postgres next anyway, and going on would make a caller during a
    /// partition wait out a second store deadline before the same
    /// UNAVAILABLE.
    async fn get(&self, app_id: AppId) -> Result<AppLimits, RegistrationError> {
        if let Some(limits) = self.fresh(app_id) {
            return Ok(limits);
        }
        let read_at = Instant::now();
        match self.store.app_limits(app_id).await {
            Ok(limits) => {
                let limits = limits.unwrap_or_default();
                let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
                if entries.len() >= MAX_CACHED_APPS {
                    entries.clear();
                }
                entries.insert(app_id, (read_at, limits));
                Ok(limits)
            }
            Err(error) => Err(error.into()),
        }
    }

    fn fresh(&self, app_id: AppId) -> Option<AppLimits> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let (read_at, limits) = entries.get(&app_id)?;
        (read_at.elapsed() < APP_LIMITS_TTL).then_some(*limits)
    }
}

impl RequestLimits {
    /// The writer of the audit events of refusals.
    pub fn audit(&self) -> &AuditWriter {
        &self.audit
    }

    /// The call goes ahead, or is refused and counted for the audit log
    /// against its scope (and `app_id`, when the scope names an app).
    fn allowed(&self, decision: Decision, app_id: Option<AppId>) -> Result<(), RegistrationError> {
        match decision {
            Decision::Allowed => Ok(()),
            Decision::Limited(refusal) => {
                let app_id = app_id.filter(|_| refusal.scope == Scope::RedeemPerDevice);
                self.audit
                    .rate_limited(refusal.scope.name(), app_id.map(|app| app.0));
                Err(RegistrationError::RateLimited(refusal))
            }
        }
    }
}
