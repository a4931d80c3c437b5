//! Verifying the API key of a request against Postgres.
//!
//! A key is looked up by its public id and its secret compared by hash in
//! constant time. Looked-up rows are cached in memory for [`KEY_CACHE_TTL`]:
//! a busy backend does not cost one Postgres query per mint, and a revoked
//! key is still refused on every replica within the product's five seconds.
//! Only rows that exist are cached; an unknown key always costs a lookup, so
//! that a key created a moment ago works at once.
//!
//! An entry is refreshed ahead of its expiry, by the one request that finds
//! it past [`KEY_REFRESH_AFTER`], while every other request keeps using it:
//! a busy key never expires, so its callers never all miss at the same
//! instant and queue for the pool together.
//!
//! The key's app's own mint limits (`AdminService.SetAppLimits`) and
//! whether it requires device-bound codes (`AdminService.SetAppSecurity`)
//! come with it, from the same query, and are cached and refreshed with
//! it: they cost a mint no extra round trip, and a change reaches every
//! replica within [`KEY_CACHE_TTL`].
//!
//! Before any Postgres lookup the call's client address is checked against
//! its failed credentials ([`CallLimits::admit`]): an address that keeps
//! presenting bad keys is refused without costing a query.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use devicelink_shared::api_key::{self, ApiKeyFormatError, KeyId};
use devicelink_shared::audit::{self, Actor, CallContext};
use devicelink_shared::audit_writer::{AuditWriter, PendingAuditEvent};
use devicelink_shared::pb;
use devicelink_shared::pb::audit_event::Payload;
use devicelink_shared::secret::SecretHash;
use devicelink_shared::status::bearer_token;
use devicelink_shared::stores::{
    BoundedConnection, CallError, PooledClient, Postgres, execute_typed,
};
use devicelink_shared::validate::AppId;
use tokio_postgres::types::Type;
use tonic::metadata::MetadataMap;

use crate::error::{AuthCodeError, KeyRejection};
use crate::limits::{AppMintLimits, CallLimits};

/// How long a looked-up key is trusted without asking Postgres again. With
/// the lookup's own time it keeps revocation well inside five seconds.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(2);
/// The age past which one request re-reads a cached key, so that a key in
/// use is renewed before [`KEY_CACHE_TTL`] runs out.
pub const KEY_REFRESH_AFTER: Duration = Duration::from_secs(1);
/// How often, at most, a key's `last_used_at` is written: a listing needs
/// "used today", not one write per mint.
pub const USAGE_WRITE_INTERVAL: Duration = Duration::from_secs(60);
/// The most keys either in-memory map holds before it is emptied. Only real
/// keys get in, so this is never reached in practice; it bounds memory if
/// that assumption ever breaks.
pub const MAX_TRACKED_KEYS: usize = 10_000;

const SELECT_KEY: &str = "SELECT k.app_id, k.secret_hash, k.scopes, k.expires_at, \
            k.revoked_at IS NOT NULL AS revoked, \
            a.limit_mint_per_key, a.limit_mint_per_external_id, a.require_code_challenge \
     FROM api_keys k JOIN apps a ON a.id = k.app_id WHERE k.key_id = $1";
const TOUCH_KEY: &str = "UPDATE api_keys SET last_used_at = now() WHERE key_id = $1";

/// A key that passed every check: the caller acts for `app_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedKey {
    /// The app the key belongs to.
    pub app_id: AppId,
    /// The key's public id, for logs and audit.
    pub key_id: KeyId,
    /// What the key may do.
    pub scopes: Arc<[String]>,
    /// Its app's own mint limits, read with the key.
    pub app_limits: AppMintLimits,
    /// Whether its app refuses codes minted without a `code_challenge`.
    pub require_code_challenge: bool,
}

impl VerifiedKey {
    /// Refuses a key without `scope` with PERMISSION_DENIED.
    pub fn require_scope(&self, scope: &'static str) -> Result<(), AuthCodeError> {
        if self.scopes.iter().any(|held| held == scope) {
            Ok(())
        } else {
            Err(AuthCodeError::MissingScope(scope))
        }
    }
}

/// A stored key as read from `api_keys`.
#[derive(Debug, Clone)]
struct StoredKey {
    app_id: AppId,
    secret_hash: SecretHash,
    scopes: Arc<[String]>,
    expires_at: SystemTime,
    revoked: bool,
    app_limits: AppMintLimits,
    require_code_challenge: bool,
}

/// A stored key and when it was read.
#[derive(Debug)]
struct CachedKey {
    key: StoredKey,
    fetched_at: Instant,
    /// Set by the request that took on re-reading the key.
    refreshing: AtomicBool,
}

/// A cache hit, and whether this request is the one to refresh it.
struct CacheHit {
    key: StoredKey,
    refresh: bool,
}

/// Checks `authorization: Bearer <api key>` against `api_keys`. One per
/// replica, shared by every request: both maps sit behind std locks that are
/// held for a map operation only, never across an `.await`.
pub struct ApiKeyVerifier {
    postgres: Postgres,
    /// Keys read recently, by id.
    cache: RwLock<HashMap<KeyId, CachedKey>>,
    /// When each key's use was last written to Postgres.
    usage_written: Mutex<HashMap<KeyId, Instant>>,
    /// Where a revoked or expired key's refusal is audited, if anywhere.
    audit: Option<AuditWriter>,
}

impl ApiKeyVerifier {
    /// A verifier reading keys through `postgres`'s pool.
    pub fn new(postgres: Postgres) -> Self {
        Self {
            postgres,
            cache: RwLock::new(HashMap::new()),
            usage_written: Mutex::new(HashMap::new()),
            audit: None,
        }
    }

    /// The same, auditing refusals of revoked and expired keys to `audit`.
    pub fn with_audit(mut self, audit: AuditWriter) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Verifies the request's API key: well formed, known, secret matching,
    /// not revoked, not expired. Records the key's use on success. A key
    /// that must be read from Postgres is read only if `limits` admit the
    /// call's address.
    pub async fn verify(
        &self,
        metadata: &MetadataMap,
        limits: &CallLimits<'_>,
    ) -> Result<VerifiedKey, AuthCodeError> {
        let token =
            bearer_token(metadata).ok_or(AuthCodeError::Unauthenticated(KeyRejection::Missing))?;
        let presented = api_key::parse(token).map_err(|error| {
            AuthCodeError::Unauthenticated(match error {
                ApiKeyFormatError::Malformed => KeyRejection::Malformed,
                ApiKeyFormatError::BadChecksum => KeyRejection::BadChecksum,
            })
        })?;
        let key_id = presented.key_id;
        let refuse = |rejection: KeyRejection| {
            tracing::info!(key_id = %key_id, reason = %rejection, "API key refused");
            Err(AuthCodeError::Unauthenticated(rejection))
        };

        let Some(stored) = self.stored_key(&key_id, limits).await? else {
            return refuse(KeyRejection::Unknown);
        };
        // The secret first: whether a key is revoked or expired is only told
        // to someone who holds it.
        if !stored.secret_hash.matches(&presented.secret_hash) {
            return refuse(KeyRejection::Unknown);
        }
        if stored.revoked {
            self.audit_refusal(&key_id, stored.app_id, true, metadata, limits);
            return refuse(KeyRejection::Revoked);
        }
        if stored.expires_at <= SystemTime::now() {
            self.audit_refusal(&key_id, stored.app_id, false, metadata, limits);
            return refuse(KeyRejection::Expired);
        }

        self.record_use(&key_id);
        Ok(VerifiedKey {
            app_id: stored.app_id,
            key_id,
            scopes: stored.scopes,
            app_limits: stored.app_limits,
            require_code_challenge: stored.require_code_challenge,
        })
    }

    /// Appends the audit event of a key refused for being revoked (or
    /// expired): only a caller holding the key's secret gets this far.
    fn audit_refusal(
        &self,
        key_id: &KeyId,
        app_id: AppId,
        revoked: bool,
        metadata: &MetadataMap,
        limits: &CallLimits<'_>,
    ) {
        let Some(audit) = &self.audit else {
            return;
        };
        let context = CallContext::new(limits.client_address(), metadata);
        let payload = Payload::ApiKeyRefused(pb::ApiKeyRefused { revoked });
        let reason = if revoked { "revoked" } else { "expired" };
        let row = audit::refusal(
            &context,
            &Actor::ApiKey(key_id.to_string()),
            reason,
            payload,
        );
        audit.append(PendingAuditEvent {
            api_key_id: Some(key_id.to_string()),
            ..PendingAuditEvent::new(Some(app_id.0), row)
        });
    }

    /// The key from the cache when fresh, else from Postgres. With Postgres
    /// down, a fresh entry still answers; a stale one does not, since the key
    /// may have been revoked since.
    async fn stored_key(
        &self,
        key_id: &KeyId,
        limits: &CallLimits<'_>,
    ) -> Result<Option<StoredKey>, AuthCodeError> {
        match self.cached(key_id) {
            Some(CacheHit {
                key,
                refresh: false,
            }) => Ok(Some(key)),
            Some(CacheHit { key, refresh: true }) => {
                match self.fetch_and_cache(key_id, limits).await {
                    Ok(fetched) => Ok(fetched),
                    Err(error) => {
                        tracing::debug!(
                            key_id = %key_id,
                            error = %devicelink_shared::status::error_chain(&error),
                            "could not refresh a cached API key; using it until it expires"
                        );
                        self.refresh_failed(key_id);
                        Ok(Some(key))
                    }
                }
            }
            None => self.fetch_and_cache(key_id, limits).await,
        }
    }

    fn cached(&self, key_id: &KeyId) -> Option<CacheHit> {
        let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
        let entry = cache.get(key_id)?;
        let age = entry.fetched_at.elapsed();
        if age >= KEY_CACHE_TTL {
            return None;
        }
        let refresh = age >= KEY_REFRESH_AFTER && !entry.refreshing.swap(true, Ordering::Relaxed);
        Some(CacheHit {
            key: entry.key.clone(),
            refresh,
        })
    }

    /// Lets the next request try the refresh that just failed.
    fn refresh_failed(&self, key_id: &KeyId) {
        let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = cache.get(key_id) {
            entry.refreshing.store(false, Ordering::Relaxed);
        }
    }

    /// Reads the key from Postgres, if `limits` admit the call's address,
    /// and caches what was read.
    async fn fetch_and_cache(
        &self,
        key_id: &KeyId,
        limits: &CallLimits<'_>,
    ) -> Result<Option<StoredKey>, AuthCodeError> {
        limits.admit().await?;
        // Taken before the lookup: the entry is as old as the moment the row
        // could have been read, so a slow query cannot stretch the cache's
        // promise.
        let lookup_started = Instant::now();
        let fetched = self.fetch(key_id).await?;
        let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
        match &fetched {
            Some(key) => {
                if cache.len() >= MAX_TRACKED_KEYS {
                    cache.clear();
                }
                let entry = CachedKey {
                    key: key.clone(),
                    fetched_at: lookup_started,
                    refreshing: AtomicBool::new(false),
                };
                cache.insert(key_id.clone(), entry);
            }
            // Deleted keys (their app was deleted) leave the cache too.
            None => {
                cache.remove(key_id);
            }
        }
        Ok(fetched)
    }

    /// Reads a key's row within the store deadline, waiting for a pooled
    /// connection included: in a partition every pooled connection can be
    /// stuck, and the pool's own wait (5 s) and then a query's deadline
    /// once let a mint take 7 s to fail. The query is cancelled with its
    /// connection retired when it runs out of time or the caller goes away
    /// ([`BoundedConnection`]).
    #[tracing::instrument(target = "devicelink::span", level = "debug", name = "postgres.api_key", skip_all, fields(db.system = "postgresql"))]
    async fn fetch(&self, key_id: &KeyId) -> Result<Option<StoredKey>, AuthCodeError> {
        let deadline = self.postgres.call_timeout();
        let started = Instant::now();
        let mut connection = tokio::time::timeout(deadline, BoundedConnection::get(&self.postgres))
            .await
            .map_err(|_elapsed| AuthCodeError::postgres_call(CallError::TimedOut(deadline)))?
            .map_err(AuthCodeError::pool)?;
        let remaining = deadline.saturating_sub(started.elapsed());
        // Unnamed, which works behind PgBouncer too: lookups are cached.
        let query = async |client: &PooledClient<'_>| {
            client
                .query_typed_opt(SELECT_KEY, &[(&key_id.as_str(), Type::TEXT)])
                .await
        };
        let Some(row) = connection
            .call_within(remaining, query)
            .await
            .map_err(AuthCodeError::postgres_call)?
            .map_err(AuthCodeError::postgres)?
        else {
            return Ok(None);
        };
        let secret_hash: Vec<u8> = row
            .try_get("secret_hash")
            .map_err(AuthCodeError::postgres)?;
        Ok(Some(StoredKey {
            app_id: AppId(row.try_get("app_id").map_err(AuthCodeError::postgres)?),
            secret_hash: SecretHash::from_bytes(&secret_hash)
                .ok_or_else(|| AuthCodeError::internal("stored API key hash is not 32 bytes"))?,
            scopes: row
                .try_get::<_, Vec<String>>("scopes")
                .map_err(AuthCodeError::postgres)?
                .into(),
            expires_at: row.try_get("expires_at").map_err(AuthCodeError::postgres)?,
            revoked: row.try_get("revoked").map_err(AuthCodeError::postgres)?,
            app_limits: AppMintLimits::from_stored(
                row.try_get("limit_mint_per_key")
                    .map_err(AuthCodeError::postgres)?,
                row.try_get("limit_mint_per_external_id")
                    .map_err(AuthCodeError::postgres)?,
            ),
            require_code_challenge: row
                .try_get("require_code_challenge")
                .map_err(AuthCodeError::postgres)?,
        }))
    }

    /// Writes `last_used_at` at most once per [`USAGE_WRITE_INTERVAL`] per
    /// key, in the background: a slow or failed write must not slow or fail
    /// the mint it describes.
    fn record_use(&self, key_id: &KeyId) {
        {
            let mut written = self
                .usage_written
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            if written
                .get(key_id)
                .is_some_and(|last| now.duration_since(*last) < USAGE_WRITE_INTERVAL)
            {
                return;
            }
            if written.len() >= MAX_TRACKED_KEYS {
                written.clear();
            }
            written.insert(key_id.clone(), now);
        }
        let postgres = self.postgres.clone();
        let key_id = key_id.clone();
        tokio::spawn(async move {
            if let Err(error) = touch(&postgres, &key_id).await {
                tracing::warn!(
                    key_id = %key_id,
                    error = %devicelink_shared::status::error_chain(&error),
                    "could not record API key use"
                );
            }
        });
    }
}

async fn touch(postgres: &Postgres, key_id: &KeyId) -> Result<(), AuthCodeError> {
    let mut connection = BoundedConnection::get(postgres)
        .await
        .map_err(AuthCodeError::pool)?;
    let update = async |client: &PooledClient<'_>| {
        execute_typed(client, TOUCH_KEY, &[(&key_id.as_str(), Type::TEXT)]).await
    };
    connection
        .call(update)
        .await
        .map_err(AuthCodeError::postgres_call)?
        .map_err(AuthCodeError::postgres)?;
    Ok(())
}
