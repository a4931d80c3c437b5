//! Floors (c) and (d): the store work of `CreateUser` and `GetInstallStatus`
//! done straight from tokio-postgres and redis-rs, no gRPC, no service.
//!
//! Floor (c) is the naive redemption: Redis `GET` of the code's record,
//! then `BEGIN`, each step of the service's redemption transaction as a
//! statement of its own (`devicelink_registration::store::redeem_sql::steps`,
//! the service's SQL for each step) and `COMMIT`, each awaited before the
//! next is sent (one round trip each), then Redis `DEL`. A service that
//! merges steps and pipelines statements should beat this floor.
//! Floor (d) is the service's status lookup (`store::STATUS_BY_TOKEN`), one
//! prepared query.
//!
//! Connections are leased exclusively from a pool of the service's size,
//! each with its statements prepared once, as deadpool-postgres with
//! `prepare_cached` would give the service.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use devicelink_registration::store::STATUS_BY_TOKEN;
use devicelink_registration::store::redeem_sql::NEW_USER_EPOCH;
use devicelink_registration::store::redeem_sql::steps::{
    CLAIM_CODE, INSERT_INSTALL, INSTALLS_IN_PLAY, NOTIFY, SDK_CONFIG, SET_USER_EPOCH, SUPERSEDE,
    UPSERT_USER,
};
use devicelink_shared::auth_code::AuthCodeRecord;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::{Client, Statement};
use uuid::Uuid;

use super::load::CallError;
use super::{BenchResult, Context, stores};

/// Recent token hashes of the run's app, for floor (d) to look up.
const TOKEN_HASHES: &str = "SELECT token_hash FROM installs
     WHERE app_id = $1 AND token_hash IS NOT NULL ORDER BY changed_at DESC LIMIT $2";

/// Not the services' channel, so that registration's listener gets no
/// work from the floor; `pg_notify` costs Postgres the same.
const FLOOR_CHANNEL: &str = "devicelink_bench_floor";
/// How long the floor's code records live in Redis.
const CODE_TTL_SECS: u64 = 600;
/// Redis commands per pipeline while storing code records.
const PREFILL_BATCH: usize = 500;

/// Every statement, prepared on each pooled connection.
struct Statements {
    upsert: Statement,
    in_play: Statement,
    sdk_config: Statement,
    supersede: Statement,
    insert: Statement,
    set_epoch: Statement,
    claim: Statement,
    notify: Statement,
    status: Statement,
}

struct Connection {
    client: Client,
    statements: Statements,
}

/// Connections leased one request at a time.
struct Pool {
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

/// A leased connection, returned to the pool when dropped.
struct Lease<'a> {
    pool: &'a Pool,
    connection: Option<Connection>,
    _permit: SemaphorePermit<'a>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(connection);
        }
    }
}

impl Pool {
    async fn lease(&self) -> Result<Lease<'_>, CallError> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_closed| CallError::new("pool", "the pool is closed"))?;
        let connection = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .ok_or_else(|| CallError::new("pool", "a permit without a connection"))?;
        Ok(Lease {
            pool: self,
            connection: Some(connection),
            _permit: permit,
        })
    }
}

/// One redemption for floor (c), prepared before the clock starts.
#[derive(Debug)]
pub struct Redemption {
    key: String,
    code_hash: Vec<u8>,
    external_id: String,
    device_id: String,
    token_nonce: Vec<u8>,
    token_hash: Vec<u8>,
}

/// Floors (c) and (d) over one pool. Cheap to clone.
#[derive(Clone)]
pub struct SqlFloor {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    redis: ConnectionManager,
    app_id: Uuid,
    key_prefix: String,
}

/// `n` random bytes (from v4 UUIDs: 122 random bits each, plenty for keys
/// that only need to be distinct).
fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(n + 16);
    while bytes.len() < n {
        bytes.extend_from_slice(Uuid::new_v4().as_bytes());
    }
    bytes.truncate(n);
    bytes
}

impl SqlFloor {
    /// Opens `pool_size` connections to `database_url` and prepares every
    /// statement on each.
    pub async fn connect(
        database_url: &str,
        redis: ConnectionManager,
        pool_size: usize,
        app_id: Uuid,
        key_prefix: &str,
    ) -> BenchResult<Self> {
        let mut idle = Vec::with_capacity(pool_size);
        for _ in 0..pool_size {
            let client = stores::connect(database_url).await?;
            let statements = prepare_all(&client)
                .await
                .context("preparing the floor's statements")?;
            idle.push(Connection { client, statements });
        }
        Ok(Self {
            inner: Arc::new(Inner {
                pool: Pool {
                    idle: Mutex::new(idle),
                    permits: Semaphore::new(pool_size),
                },
                redis,
                app_id,
                key_prefix: key_prefix.to_owned(),
            }),
        })
    }

    /// Stores a code record in Redis for each of `external_ids`, as a mint
    /// would, and returns the redemptions of those codes on `device_ids`.
    pub async fn prepare_redemptions(
        &self,
        external_ids: Vec<String>,
        device_ids: Vec<String>,
    ) -> BenchResult<Vec<Redemption>> {
        let minted_at_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| i64::try_from(since.as_millis()).unwrap_or(0));
        let redemptions: Vec<Redemption> = external_ids
            .into_iter()
            .zip(device_ids)
            .map(|(external_id, device_id)| {
                let code_hash = random_bytes(32);
                let key = format!(
                    "{}floorc:{}",
                    self.inner.key_prefix,
                    devicelink_shared::secret::lower_hex(&code_hash)
                );
                Redemption {
                    key,
                    code_hash,
                    external_id,
                    device_id,
                    token_nonce: random_bytes(16),
                    token_hash: random_bytes(32),
                }
            })
            .collect();
        let mut redis = self.inner.redis.clone();
        for batch in redemptions.chunks(PREFILL_BATCH) {
            let mut pipe = redis::pipe();
            for redemption in batch {
                let record = AuthCodeRecord {
                    app_id: self.inner.app_id.to_string(),
                    external_id: redemption.external_id.clone(),
                    minted_at_unix_ms,
                    key_id: "floor".into(),
                    expires_at_unix_ms: minted_at_unix_ms + CODE_TTL_SECS as i64 * 1000,
                    code_challenge: Vec::new(),
                };
                pipe.cmd("SET")
                    .arg(&redemption.key)
                    .arg(record.to_bytes())
                    .arg("EX")
                    .arg(CODE_TTL_SECS)
                    .ignore();
            }
            pipe.query_async::<()>(&mut redis)
                .await
                .context("storing the floor's code records")?;
        }
        Ok(redemptions)
    }

    /// Floor (c): one redemption, statement after statement.
    pub async fn redeem(&self, redemption: &Redemption) -> Result<(), CallError> {
        let inner = &self.inner;
        let mut redis = inner.redis.clone();
        let record: Option<Vec<u8>> = redis.get(&redemption.key).await?;
        let record = record.ok_or_else(|| CallError::new("check", "no code record in Redis"))?;
        AuthCodeRecord::from_bytes(&record)
            .map_err(|error| CallError::new("check", error.to_string()))?;

        let mut lease = inner.pool.lease().await?;
        let connection = lease
            .connection
            .as_mut()
            .ok_or_else(|| CallError::new("pool", "an empty lease"))?;
        let statements = &connection.statements;
        let app_id = inner.app_id;
        let tx = connection.client.transaction().await?;
        let user = tx
            .query_one(
                &statements.upsert,
                &[
                    &Uuid::now_v7(),
                    &app_id,
                    &redemption.external_id,
                    &NEW_USER_EPOCH,
                ],
            )
            .await?;
        let user_id: Uuid = user.try_get(0)?;
        let stored_epoch: i64 = user.try_get(1)?;
        let created: bool = user.try_get(2)?;
        let installs = tx
            .query(
                &statements.in_play,
                &[&app_id, &redemption.external_id, &redemption.device_id],
            )
            .await?;
        let config = tx
            .query_opt(&statements.sdk_config, &[&app_id])
            .await?
            .ok_or_else(|| CallError::new("check", "the app is missing"))?;
        let _config: serde_json::Value = config.try_get(0)?;
        let mut changed = Vec::new();
        for install in &installs {
            let (id, owner, state): (Uuid, Uuid, &str) = (
                install.try_get(0)?,
                install.try_get(1)?,
                install.try_get(4)?,
            );
            if owner == user_id && state == "active" {
                tx.execute(&statements.supersede, &[&id]).await?;
                changed.push(id);
            }
        }
        let install_id = Uuid::now_v7();
        let epoch = if created {
            NEW_USER_EPOCH
        } else {
            stored_epoch + 1
        };
        tx.query_one(
            &statements.insert,
            &[
                &install_id,
                &app_id,
                &user_id,
                &redemption.device_id,
                &"android",
                &"phone",
                &"Pixel 8",
                &"15",
                &"1.4.0",
                &"2.0.1",
                &"com.example.app",
                &redemption.token_hash,
                &"active",
                &None::<&str>,
                &epoch,
            ],
        )
        .await?;
        if epoch != stored_epoch {
            tx.execute(&statements.set_epoch, &[&user_id, &epoch])
                .await?;
        }
        if !changed.is_empty() {
            tx.query(&statements.notify, &[&FLOOR_CHANNEL, &changed])
                .await?;
        }
        // As the service does: the claim keeps the code's expiry.
        let code_expires_at = SystemTime::now() + Duration::from_secs(CODE_TTL_SECS);
        tx.execute(
            &statements.claim,
            &[
                &redemption.code_hash,
                &app_id,
                &redemption.device_id,
                &redemption.token_nonce,
                &user_id,
                &install_id,
                &!created,
                &code_expires_at,
            ],
        )
        .await?;
        tx.commit().await?;
        drop(lease);
        let _deleted: u32 = redis.del(&redemption.key).await?;
        Ok(())
    }

    /// Up to `limit` token hashes of the app's installs, newest first.
    pub async fn token_hashes(&self, limit: usize) -> BenchResult<Vec<Vec<u8>>> {
        let lease = self.inner.pool.lease().await.map_err(|error| {
            super::BenchError::new(format!("leasing a connection: {}", error.message))
        })?;
        let connection = lease.connection.as_ref().context("an empty lease")?;
        let limit = i64::try_from(limit).context("a token count")?;
        let rows = connection
            .client
            .query(TOKEN_HASHES, &[&self.inner.app_id, &limit])
            .await
            .context("reading token hashes")?;
        rows.iter()
            .map(|row| row.try_get(0).context("reading a token hash"))
            .collect()
    }

    /// Floor (d): the status of the install holding `token_hash`.
    pub async fn lookup_status(&self, token_hash: &[u8]) -> Result<(), CallError> {
        let lease = self.inner.pool.lease().await?;
        let connection = lease
            .connection
            .as_ref()
            .ok_or_else(|| CallError::new("pool", "an empty lease"))?;
        let row = connection
            .client
            .query_opt(&connection.statements.status, &[&token_hash])
            .await?
            .ok_or_else(|| CallError::new("check", "no install holds the token"))?;
        // Read every column, as the service does.
        let _status: (Uuid, &str, Option<&str>, i64, SystemTime, i64) = (
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
            row.try_get(4)?,
            row.try_get(5)?,
        );
        Ok(())
    }
}

async fn prepare_all(client: &Client) -> Result<Statements, tokio_postgres::Error> {
    Ok(Statements {
        upsert: client.prepare(UPSERT_USER).await?,
        in_play: client.prepare(INSTALLS_IN_PLAY).await?,
        sdk_config: client.prepare(SDK_CONFIG).await?,
        supersede: client.prepare(SUPERSEDE).await?,
        insert: client.prepare(INSERT_INSTALL).await?,
        set_epoch: client.prepare(SET_USER_EPOCH).await?,
        claim: client.prepare(CLAIM_CODE).await?,
        notify: client.prepare(NOTIFY).await?,
        status: client.prepare(STATUS_BY_TOKEN).await?,
    })
}
