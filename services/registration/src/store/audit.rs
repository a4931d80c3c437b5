//! Reading the audit events that the store's changes wrote with
//! themselves (see [`crate::audit`]), and purging old ones.
//!
//! # Why a watch waits [`watch_settle`]
//!
//! Event ids are UUIDv7s given by Postgres's clock when the row is
//! inserted, but transactions commit in another order than they insert: a
//! watch that sent every committed event past its cursor would skip an
//! event inserted earlier whose transaction commits later. So a watch
//! sends only events inserted before `statement_timestamp() -
//! watch_settle`, once every transaction that inserted one has ended: each
//! event is inserted by the last statement of its transaction, or
//! pipelined with its `COMMIT` (redemptions), and Postgres ends a
//! statement past `statement_timeout` and a transaction left idle past
//! `idle_in_transaction_session_timeout` (both set on every connection,
//! see `devicelink_shared::stores`). A first statement reads that bound;
//! the reads of rows and of packs ([`super::audit_packs`]) that follow it
//! take their snapshots later, so everything settled by then is in them,
//! and both stop at the same bound. Below the cursor nothing new can then
//! appear: a client that resumes from the last cursor it saw misses
//! nothing and gets nothing twice, whichever replica serves it. The cost
//! is latency: an event reaches a watch [`watch_settle`] after it was
//! written (11 s with the default `DATABASE_CALL_TIMEOUT_MS`), plus a
//! poll. The bound holds when every
//! replica of both services runs with the same call timeout, as one
//! deployment's shared configuration has it.

use std::time::{Duration, SystemTime};

use devicelink_shared::stores::server_timeout;
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

use super::Store;
use super::audit_packs::PackRead;
use crate::error::StoreError;

/// How old an event must be before a watch sends it, for connections whose
/// calls are bounded by `call_timeout`: the longest a transaction can stay
/// open after inserting it (a statement up to `statement_timeout`, then up
/// to `idle_in_transaction_session_timeout` idle before its `COMMIT`), and
/// a second's margin.
pub fn watch_settle(call_timeout: Duration) -> Duration {
    let server = server_timeout(call_timeout);
    server
        .saturating_add(server)
        .saturating_add(Duration::from_secs(1))
}

/// The columns of an event, in the order [`StoredAuditEvent::from_row`]
/// reads them.
const COLUMNS: &str =
    "event_id, occurred_at, type, app_id, user_id, install_id, api_key_id, external_id_hash, event";

/// The filters both reads share: `$1` app, `$2` types (empty: all), `$3`
/// user, `$4` since, `$5` until; every one optional.
const FILTERS: &str = "($1::uuid IS NULL OR app_id = $1)
      AND (cardinality($2::text[]) = 0 OR type = ANY($2::text[]))
      AND ($3::uuid IS NULL OR user_id = $3)
      AND ($4::timestamptz IS NULL OR occurred_at >= $4)
      AND ($5::timestamptz IS NULL OR occurred_at < $5)";

/// Which events to read.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this app's.
    pub app_id: Option<Uuid>,
    /// Only these types (`type` column values); empty for all.
    pub types: Vec<String>,
    /// Only this user's.
    pub user_id: Option<Uuid>,
    /// Only events at or after this time.
    pub since: Option<SystemTime>,
    /// Only events before this time.
    pub until: Option<SystemTime>,
}

impl AuditFilter {
    /// `$1` to `$5` of the reads of rows ([`FILTERS`]) and of packs
    /// (`audit_packs::PACK_FILTERS`).
    pub(super) fn params(&self) -> [(&(dyn ToSql + Sync), Type); 5] {
        [
            (&self.app_id, Type::UUID),
            (&self.types, Type::TEXT_ARRAY),
            (&self.user_id, Type::UUID),
            (&self.since, Type::TIMESTAMPTZ),
            (&self.until, Type::TIMESTAMPTZ),
        ]
    }
}

/// One stored event, as its row holds it.
#[derive(Debug, Clone)]
pub struct StoredAuditEvent {
    /// The event's id, a UUIDv7: its cursor too.
    pub event_id: Uuid,
    /// When it was written.
    pub occurred_at: SystemTime,
    /// Its type's `type` column value.
    pub type_name: String,
    /// The app, user, install and key it concerns.
    pub app_id: Option<Uuid>,
    /// The user it concerns.
    pub user_id: Option<Uuid>,
    /// The install it concerns.
    pub install_id: Option<Uuid>,
    /// The key it concerns.
    pub api_key_id: Option<String>,
    /// The external id's keyed hash, until the user is erased.
    pub external_id_hash: Option<Vec<u8>>,
    /// The rest of the event, encoded.
    pub event: Vec<u8>,
}

impl StoredAuditEvent {
    fn from_row(row: &tokio_postgres::Row) -> Result<Self, StoreError> {
        Ok(Self {
            event_id: row.try_get(0)?,
            occurred_at: row.try_get(1)?,
            type_name: row.try_get(2)?,
            app_id: row.try_get(3)?,
            user_id: row.try_get(4)?,
            install_id: row.try_get(5)?,
            api_key_id: row.try_get(6)?,
            external_id_hash: row.try_get(7)?,
            event: row.try_get(8)?,
        })
    }
}

/// A page of events, and where the next one starts.
#[derive(Debug)]
pub struct AuditPage {
    /// The events.
    pub events: Vec<StoredAuditEvent>,
    /// The event id to continue from; `None` when there is nothing more.
    pub next_cursor: Option<Uuid>,
}

impl Store {
    /// Up to `limit` events matching `filter`, newest first, older than
    /// `before` (the previous page's cursor). Pages do not shift as new
    /// events arrive: each continues below the last id it gave.
    #[tracing::instrument(target = "devicelink::span", level = "debug", name = "postgres.list_audit_events", skip_all, fields(db.system = "postgresql"))]
    pub async fn list_audit_events(
        &self,
        filter: &AuditFilter,
        before: Option<Uuid>,
        limit: u32,
    ) -> Result<AuditPage, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM audit_events WHERE {FILTERS}
               AND ($6::uuid IS NULL OR event_id < $6)
             ORDER BY event_id DESC LIMIT $7"
        );
        let wanted = limit as usize + 1;
        let mut events = self
            .read_events(&sql, filter, before, wanted as i64, None)
            .await?;
        events.extend(
            self.packed_audit_events(filter, PackRead::NewestBelow(before), wanted)
                .await?,
        );
        events.sort_unstable_by_key(|event| std::cmp::Reverse(event.event_id));
        let more = events.len() > limit as usize;
        events.truncate(limit as usize);
        let next_cursor = more
            .then(|| events.last().map(|event| event.event_id))
            .flatten();
        Ok(AuditPage {
            events,
            next_cursor,
        })
    }

    /// Up to `limit` settled events matching `filter` after the cursor
    /// `after`, oldest first (see the module's doc on settling).
    #[tracing::instrument(target = "devicelink::span", level = "debug", name = "postgres.settled_audit_events", skip_all, fields(db.system = "postgresql"))]
    pub async fn settled_audit_events(
        &self,
        filter: &AuditFilter,
        after: Uuid,
        limit: u32,
    ) -> Result<Vec<StoredAuditEvent>, StoreError> {
        // One bound for both reads: rows and packs settled by the same
        // time, so that neither runs ahead of the other's next poll.
        let settle_seconds = watch_settle(self.postgres.call_timeout()).as_secs_f64();
        let bound: Uuid = self
            .query_opt_call(
                "SELECT audit_uuidv7_floor(statement_timestamp() - make_interval(secs => $1))",
                &[(&settle_seconds, Type::FLOAT8)],
            )
            .await?
            .ok_or_else(|| StoreError::internal("no row for the settled bound"))?
            .try_get(0)?;
        let sql = format!(
            "SELECT {COLUMNS} FROM audit_events WHERE {FILTERS}
               AND event_id > $6 AND event_id < $8
             ORDER BY event_id LIMIT $7"
        );
        let mut events = self
            .read_events(&sql, filter, Some(after), i64::from(limit), Some(bound))
            .await?;
        events.extend(
            self.packed_audit_events(
                filter,
                PackRead::OldestAbove { after, bound },
                limit as usize,
            )
            .await?,
        );
        events.sort_unstable_by_key(|event| event.event_id);
        events.truncate(limit as usize);
        Ok(events)
    }

    /// The cursor of "now": events written from now on come after it.
    pub async fn audit_cursor_now(&self) -> Result<Uuid, StoreError> {
        let row = self
            .query_opt_call("SELECT audit_uuidv7_floor(clock_timestamp())", &[])
            .await?
            .ok_or_else(|| StoreError::internal("no row for the audit cursor"))?;
        Ok(row.try_get(0)?)
    }

    async fn read_events(
        &self,
        sql: &str,
        filter: &AuditFilter,
        cursor: Option<Uuid>,
        limit: i64,
        bound: Option<Uuid>,
    ) -> Result<Vec<StoredAuditEvent>, StoreError> {
        let mut params = filter.params().to_vec();
        params.extend([
            (&cursor as &(dyn ToSql + Sync), Type::UUID),
            (&limit, Type::INT8),
        ]);
        if let Some(bound) = &bound {
            params.push((bound, Type::UUID));
        }
        let mut connection = self.connection().await?;
        let rows = connection
            .call(async |client| client.query_typed(sql, &params[..]).await)
            .await??;
        rows.iter().map(StoredAuditEvent::from_row).collect()
    }

    /// Deletes up to `batch` event rows and `batch` packs written longer
    /// than `retention` ago (by their ids, whose first bits are the time
    /// they were written: the primary keys find them); how many events
    /// went.
    #[tracing::instrument(target = "devicelink::span", level = "debug", name = "postgres.purge_audit_events", skip_all, fields(db.system = "postgresql"))]
    pub async fn purge_audit_events(
        &self,
        retention: Duration,
        batch: i64,
    ) -> Result<u64, StoreError> {
        let retention_seconds = retention.as_secs_f64();
        let params: &[(&(dyn ToSql + Sync), Type)] =
            &[(&retention_seconds, Type::FLOAT8), (&batch, Type::INT8)];
        let rows = self
            .execute_call(
                "DELETE FROM audit_events WHERE event_id IN (
                     SELECT event_id FROM audit_events
                     WHERE event_id < audit_uuidv7_floor(now() - make_interval(secs => $1))
                     LIMIT $2)",
                params,
            )
            .await?;
        let packed: i64 = self
            .query_opt_call(
                "WITH purged AS (
                     DELETE FROM audit_event_packs WHERE first_event_id IN (
                         SELECT first_event_id FROM audit_event_packs
                         WHERE first_event_id < audit_uuidv7_floor(now() - make_interval(secs => $1))
                         LIMIT $2)
                     RETURNING event_count)
                 SELECT coalesce(sum(event_count), 0)::int8 FROM purged",
                params,
            )
            .await?
            .ok_or_else(|| StoreError::internal("no row for the purged packs"))?
            .try_get(0)?;
        Ok(rows + packed.unsigned_abs())
    }
}
