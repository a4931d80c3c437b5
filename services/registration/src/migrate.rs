//! Schema migrations, run on start-up.
//!
//! Numbered SQL files under `migrations/` are compiled in and applied in
//! order, each in its own transaction, under a Postgres advisory lock: when
//! several replicas start at once, one migrates and the others wait, then
//! find nothing left to do.
//!
//! Migrations run under the same server-side `statement_timeout` as every
//! other statement (see [`devicelink_shared::stores`]), and start-up (or
//! the rollout's migration step) gives them ten seconds in all, so that a
//! Postgres that stops answering is reported, not waited on for ever. A
//! migration with a longer statement (an index on a large table) must
//! raise the timeout for its own transaction (`SET LOCAL
//! statement_timeout = ...` at the top of its file) and the start-up
//! budget (`MIGRATION_WAIT` in [`crate::server`]).

use devicelink_shared::stores::Postgres;
use tokio_postgres::Client;
use tokio_postgres::types::Type;

use crate::error::StoreError;

/// `(version, name, sql)` of every migration, oldest first.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "initial", include_str!("../migrations/0001_initial.sql")),
    (
        2,
        "bounded_replays",
        include_str!("../migrations/0002_bounded_replays.sql"),
    ),
    (
        3,
        "app_limits",
        include_str!("../migrations/0003_app_limits.sql"),
    ),
    (
        4,
        "device_bound_codes",
        include_str!("../migrations/0004_device_bound_codes.sql"),
    ),
    (
        5,
        "audit_events",
        include_str!("../migrations/0005_audit_events.sql"),
    ),
    (
        6,
        "cheaper_audit_rows",
        include_str!("../migrations/0006_cheaper_audit_rows.sql"),
    ),
    (
        7,
        "sdk_configs_without_empty_keys",
        include_str!("../migrations/0007_sdk_configs_without_empty_keys.sql"),
    ),
    (
        8,
        "audit_event_packs",
        include_str!("../migrations/0008_audit_event_packs.sql"),
    ),
];

/// Every migration's version, in the order they are applied.
pub fn versions() -> Vec<i32> {
    MIGRATIONS.iter().map(|(version, _, _)| *version).collect()
}

/// An arbitrary constant naming devicelink's migration lock. Public so a
/// test can hold it and see replicas queue behind it.
pub const MIGRATION_LOCK_ID: i64 = 0x6465_7669_6365_6c6b; // "devicelk"

/// Applies every migration the database has not seen yet.
pub async fn run(postgres: &Postgres) -> Result<(), StoreError> {
    run_reporting(postgres).await.map(drop)
}

/// [`run`], answering the versions this call applied: none when another
/// replica applied them first. That answer is how a test tells that
/// replicas starting at once migrated once.
///
/// The lock is a session's, so it is taken on a session of its own
/// ([`Postgres::connect_session`]: straight to Postgres when
/// `DATABASE_DIRECT_URL` bypasses PgBouncer), never on a pooled connection;
/// the session ends when this returns, and the lock with it, whatever
/// failed on the way.
pub async fn run_reporting(postgres: &Postgres) -> Result<Vec<i32>, StoreError> {
    let (mut client, connection) = postgres.connect_session().await?;
    let driver = tokio::spawn(connection);
    let outcome = migrate_locked(&mut client).await;
    drop(client);
    // The session's end, which releases the lock if unlocking failed.
    let _ = driver.await;
    outcome
}

/// Everything under the lock, the bookkeeping table's creation too:
/// replicas racing on `CREATE TABLE IF NOT EXISTS` collide in the catalog
/// (`type "schema_migrations" already exists`).
async fn migrate_locked(client: &mut Client) -> Result<Vec<i32>, StoreError> {
    let lock_id: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 1] =
        [(&MIGRATION_LOCK_ID, Type::INT8)];
    client
        .query_typed("SELECT pg_advisory_lock($1)", &lock_id)
        .await?;
    create_bookkeeping(client).await?;
    let applied_now = apply_pending(client).await?;
    client
        .query_typed("SELECT pg_advisory_unlock($1)", &lock_id)
        .await?;
    Ok(applied_now)
}

/// The table recording which migrations were applied.
async fn create_bookkeeping(client: &Client) -> Result<(), StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version     integer PRIMARY KEY,
                 name        text NOT NULL,
                 applied_at  timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await?;
    Ok(())
}

async fn apply_pending(client: &mut Client) -> Result<Vec<i32>, StoreError> {
    let applied: Vec<i32> = client
        .query_typed("SELECT version FROM schema_migrations", &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut applied_now = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        let transaction = client.transaction().await?;
        transaction.batch_execute(sql).await?;
        transaction
            .query_typed(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                &[(version, Type::INT4), (name, Type::TEXT)],
            )
            .await?;
        transaction.commit().await?;
        tracing::info!(version, name, "migration applied");
        applied_now.push(*version);
    }
    if applied_now.is_empty() {
        tracing::info!("schema already up to date");
    }
    Ok(applied_now)
}
