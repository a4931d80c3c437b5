//! The run's own database and Redis key space, and users loaded straight
//! into Postgres.

use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

use super::{BenchResult, Context};

/// How many users one bulk statement inserts, so that progress shows.
const BULK_CHUNK: u64 = 250_000;

/// Users, each with an epoch of 1. Ids are a per-run prefix followed by the
/// user's number, so they are ordered (inserted at the right edge of the
/// primary key, as the services' UUIDv7 ids are) and unique across runs
/// sharing a database; external ids are zero-padded to sort the same way.
const BULK_USERS: &str = "INSERT INTO users (id, app_id, external_id, epoch)
     SELECT ($1::text || lpad(to_hex(i), 20, '0'))::uuid, $2::uuid, 'bulk-' || lpad(i::text, 9, '0'), 1
     FROM generate_series($3::bigint, $4::bigint) AS i";

/// One active phone install per bulk user, activated in epoch 1, with a
/// token hash that looks like a real one (random order, 32 bytes).
const BULK_INSTALLS: &str =
    "INSERT INTO installs (id, app_id, user_id, device_id, platform, form_factor,
         model, os_version, app_version, sdk_version, bundle_id, state, reason, epoch, token_hash)
     SELECT ($5::text || lpad(to_hex(i), 20, '0'))::uuid, $2::uuid,
            ($1::text || lpad(to_hex(i), 20, '0'))::uuid, 'bulk-device-' || lpad(i::text, 9, '0'), 'android', 'phone',
            'Pixel 8', '15', '1.4.0', '2.0.1', 'com.example.app', 'active', NULL, 1,
            sha256(convert_to($5::text || ':' || i, 'UTF8'))
     FROM generate_series($3::bigint, $4::bigint) AS i";

/// Connects to Postgres, driving the connection on a task of its own.
pub async fn connect(url: &str) -> BenchResult<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .context("connecting to Postgres")?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            eprintln!("devicelink-bench: a Postgres connection ended: {error}");
        }
    });
    Ok(client)
}

/// `url` with `sslmode=disable` added when it names no `sslmode`.
pub fn plaintext_unless_set(url: &str) -> String {
    if url.contains("sslmode=") {
        return url.to_owned();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}sslmode=disable")
}

/// `url` with its database name replaced by `database`.
pub fn with_database(url: &str, database: &str) -> BenchResult<String> {
    let scheme_end = url
        .find("://")
        .context("DATABASE_URL must be a URL, postgres://user:password@host:port/database")?
        + 3;
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path_and_query) = rest.split_at(authority_end);
    let query = path_and_query
        .find('?')
        .map_or("", |start| &path_and_query[start..]);
    Ok(format!(
        "{}{authority}/{database}{query}",
        &url[..scheme_end]
    ))
}

/// Creates database `name` (the services migrate it) and returns its URL.
pub async fn create_database(admin_url: &str, name: &str) -> BenchResult<String> {
    let admin = connect(admin_url).await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .context(format!(
            "CREATE DATABASE {name} (the DATABASE_URL role needs CREATEDB)"
        ))?;
    with_database(admin_url, name)
}

/// Drops database `name`, closing any connection still open to it.
pub async fn drop_database(admin_url: &str, name: &str) -> BenchResult<()> {
    let admin = connect(admin_url).await?;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .context(format!("DROP DATABASE {name}"))
}

/// Where bulk-loaded users and installs take their ids from.
#[derive(Debug, Clone)]
pub struct BulkIds {
    /// 12 hex digits before each user's number.
    user_prefix: String,
    /// 12 hex digits before each install's number.
    install_prefix: String,
}

impl BulkIds {
    /// Fresh prefixes for this run.
    pub fn new() -> Self {
        let random = Uuid::new_v4().simple().to_string();
        Self {
            user_prefix: random[..12].to_owned(),
            install_prefix: random[12..24].to_owned(),
        }
    }
}

impl Default for BulkIds {
    fn default() -> Self {
        Self::new()
    }
}

/// Constraints set aside during a large bulk load: foreign keys on or
/// referencing the two tables first (they must go before the keys they
/// reference), then their primary and unique keys. Each comes back from its
/// own definition, in reverse order.
const CONSTRAINTS_TO_SET_ASIDE: &str =
    "SELECT conrelid::regclass::text, quote_ident(conname), pg_get_constraintdef(oid)
     FROM pg_constraint
     WHERE (contype IN ('p', 'u') AND conrelid IN ('users'::regclass, 'installs'::regclass))
        OR (contype = 'f' AND (conrelid IN ('users'::regclass, 'installs'::regclass)
                               OR confrelid IN ('users'::regclass, 'installs'::regclass)))
     ORDER BY contype = 'f' DESC, conname";

/// Indexes of the two tables that back no constraint, set aside likewise.
const INDEXES_TO_SET_ASIDE: &str = "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid)
     FROM pg_index i
     WHERE indrelid IN ('users'::regclass, 'installs'::regclass)
       AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                       WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid
                         AND c.contype IN ('p', 'u', 'x'))";

/// From this many users on, a bulk load sets indexes and foreign keys
/// aside and builds them again afterwards: one sorted build is much faster
/// than a million row-by-row insertions and checks.
const SET_ASIDE_FROM: u64 = 100_000;

/// Inserts users `first..=last` of `app_id`, each with one active install,
/// then vacuums and analyzes the two tables so the planner knows their size
/// (as autovacuum would on a real database). Returns how long it took.
///
/// With `exclusive` (the run's own database, nothing else writing) a large
/// load follows Postgres's advice for populating a database: in one
/// transaction, the foreign keys, keys and indexes of `users` and
/// `installs` are dropped, the rows inserted, and every one of them made
/// again from its own definition, so the schema ends exactly as the
/// migrations left it, every constraint checked.
pub async fn bulk_load_users(
    database_url: &str,
    app_id: Uuid,
    ids: &BulkIds,
    first: u64,
    last: u64,
    exclusive: bool,
) -> BenchResult<Duration> {
    let started = Instant::now();
    let mut client = connect(database_url).await?;
    client
        .batch_execute("SET synchronous_commit = off; SET maintenance_work_mem = '256MB'")
        .await
        .context("setting up the bulk load")?;
    let tx = client
        .transaction()
        .await
        .context("starting the bulk load")?;
    let set_aside = exclusive && last.saturating_sub(first) >= SET_ASIDE_FROM;
    let mut restore = Vec::new();
    if set_aside {
        for row in tx
            .query(CONSTRAINTS_TO_SET_ASIDE, &[])
            .await
            .context("reading the constraints")?
        {
            let (table, name, definition): (String, String, String) = (
                row.try_get(0).context("a constraint")?,
                row.try_get(1).context("a constraint")?,
                row.try_get(2).context("a constraint")?,
            );
            tx.batch_execute(&format!("ALTER TABLE {table} DROP CONSTRAINT {name}"))
                .await
                .context(format!("setting {name} aside"))?;
            restore.push(format!(
                "ALTER TABLE {table} ADD CONSTRAINT {name} {definition}"
            ));
        }
        for row in tx
            .query(INDEXES_TO_SET_ASIDE, &[])
            .await
            .context("reading the indexes")?
        {
            let (name, definition): (String, String) = (
                row.try_get(0).context("an index")?,
                row.try_get(1).context("an index")?,
            );
            tx.batch_execute(&format!("DROP INDEX {name}"))
                .await
                .context(format!("setting {name} aside"))?;
            restore.push(definition);
        }
    }
    let mut start = first;
    while start <= last {
        let end = last.min(start + BULK_CHUNK - 1);
        let (from, to) = (
            i64::try_from(start).context("a user number")?,
            i64::try_from(end).context("a user number")?,
        );
        tx.execute(BULK_USERS, &[&ids.user_prefix, &app_id, &from, &to])
            .await
            .context(format!("bulk-loading users {start}..={end}"))?;
        tx.execute(
            BULK_INSTALLS,
            &[&ids.user_prefix, &app_id, &from, &to, &ids.install_prefix],
        )
        .await
        .context(format!("bulk-loading installs {start}..={end}"))?;
        if last.saturating_sub(first) >= BULK_CHUNK {
            eprintln!("devicelink-bench:   {end} of {last} users inserted");
        }
        start = end + 1;
    }
    // Indexes, then keys, then the foreign keys that need those keys.
    for statement in restore.iter().rev() {
        tx.batch_execute(statement)
            .await
            .context(format!("restoring the schema: {statement}"))?;
    }
    tx.commit().await.context("committing the bulk load")?;
    client
        .batch_execute("VACUUM ANALYZE users, installs")
        .await
        .context("VACUUM ANALYZE after the bulk load")?;
    Ok(started.elapsed())
}

/// Makes Postgres finish a checkpoint now, so that a measurement after a
/// bulk load does not overlap the checkpoint the load's WAL set off (which
/// writes the loaded pages out and makes every first change of a page after
/// it log the whole page). `CHECKPOINT` takes a superuser or
/// `pg_checkpoint`; without either, dropping a database forces an immediate
/// checkpoint and waits for it, and a scratch database is all the
/// `CREATEDB` the benchmark already needs allows. Returns how long it took.
pub async fn checkpoint(admin_url: &str, scratch_name: &str) -> BenchResult<Duration> {
    let started = Instant::now();
    let admin = connect(admin_url).await?;
    if admin.batch_execute("CHECKPOINT").await.is_err() {
        admin
            .batch_execute(&format!("CREATE DATABASE {scratch_name}"))
            .await
            .context(format!(
                "CREATE DATABASE {scratch_name} (to force a checkpoint)"
            ))?;
        admin
            .batch_execute(&format!("DROP DATABASE {scratch_name}"))
            .await
            .context(format!(
                "DROP DATABASE {scratch_name} (to force a checkpoint)"
            ))?;
    }
    Ok(started.elapsed())
}

/// How many users the database holds.
pub async fn count_users(database_url: &str) -> BenchResult<i64> {
    let client = connect(database_url).await?;
    let row = client
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .context("counting users")?;
    row.try_get(0).context("counting users")
}

/// A multiplexed Redis connection, as the services use.
pub async fn redis(url: &str) -> BenchResult<ConnectionManager> {
    let client = redis::Client::open(url).context("REDIS_URL")?;
    ConnectionManager::new(client)
        .await
        .context("connecting to Redis")
}

/// Deletes every key under `prefix`; returns how many there were.
pub async fn delete_keys(redis: &mut ConnectionManager, prefix: &str) -> BenchResult<u64> {
    let pattern = format!("{prefix}*");
    let mut cursor = 0_u64;
    let mut deleted = 0_u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1_000)
            .query_async(redis)
            .await
            .context("scanning the run's Redis keys")?;
        if !keys.is_empty() {
            deleted += keys.len() as u64;
            redis::cmd("UNLINK")
                .arg(&keys)
                .query_async::<()>(redis)
                .await
                .context("deleting the run's Redis keys")?;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

#[cfg(test)]
mod tests {
    use super::{plaintext_unless_set, with_database};

    #[test]
    fn plaintext_is_added_only_when_no_sslmode_is_given() {
        assert_eq!(
            plaintext_unless_set("postgres://u@h/b"),
            "postgres://u@h/b?sslmode=disable"
        );
        assert_eq!(
            plaintext_unless_set("postgres://u@h/b?application_name=x"),
            "postgres://u@h/b?application_name=x&sslmode=disable"
        );
        assert_eq!(
            plaintext_unless_set("postgres://u@h/b?sslmode=require"),
            "postgres://u@h/b?sslmode=require"
        );
    }

    #[test]
    fn replaces_the_database_only() {
        assert_eq!(
            with_database("postgres://u:p@127.0.0.1:5432/devicelink", "bench_1").ok(),
            Some("postgres://u:p@127.0.0.1:5432/bench_1".into())
        );
        assert_eq!(
            with_database("postgres://u@localhost?sslmode=disable", "b").ok(),
            Some("postgres://u@localhost/b?sslmode=disable".into())
        );
        assert!(with_database("host=localhost", "b").is_err());
    }
}
