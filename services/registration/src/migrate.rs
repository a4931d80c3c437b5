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

use deadpool_postgres::Pool;

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
];

/// An arbitrary constant naming devicelink's migration lock. Public so a
/// test can hold it and see replicas queue behind it.
pub const MIGRATION_LOCK_ID: i64 = 0x6465_7669_6365_6c6b; // "devicelk"

/// Applies every migration the database has not seen yet.
pub async fn run(pool: &Pool) -> Result<(), StoreError> {
    run_reporting(pool).await.map(drop)
}

/// [`run`], answering the versions this call applied: none when another
/// replica applied them first. That answer is how a test tells that
/// replicas starting at once migrated once.
pub async fn run_reporting(pool: &Pool) -> Result<Vec<i32>, StoreError> {
    let mut client = pool.get().await?;
    // Everything under the lock, the bookkeeping table's creation too:
    // replicas racing on `CREATE TABLE IF NOT EXISTS` collide in the
    // catalog (`type "schema_migrations" already exists`).
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_ID])
        .await?;
    let outcome = create_bookkeeping(&client).await;
    let outcome = match outcome {
        Ok(()) => apply_pending(&mut client).await,
        Err(error) => Err(error),
    };
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_ID])
        .await;
    if let Err(error) = unlocked {
        // The lock belongs to the session: ending the session, rather than
        // returning it to the pool, is what releases it.
        drop(deadpool_postgres::Object::take(client));
        return Err(error.into());
    }
    outcome
}

/// The table recording which migrations were applied.
async fn create_bookkeeping(client: &deadpool_postgres::Client) -> Result<(), StoreError> {
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

async fn apply_pending(client: &mut deadpool_postgres::Client) -> Result<Vec<i32>, StoreError> {
    let applied: Vec<i32> = client
        .query("SELECT version FROM schema_migrations", &[])
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
            .execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                &[version, name],
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
