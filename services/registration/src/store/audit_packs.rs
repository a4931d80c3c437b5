//! Reading the audit events stored in packs (`audit_event_packs`, see
//! [`devicelink_shared::audit_pack`]) as if each were a row of its own.
//!
//! Packs never interleave: ordering packs by their first id orders their
//! events. So a read takes packs in order, a few at a time, opens each, and
//! keeps its events that pass the filters, until it has as many as it
//! wants or no pack is left.

use std::time::SystemTime;

use devicelink_shared::audit_pack::{self, AuditPack};
use prost::Message;
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

use super::Store;
use super::audit::{AuditFilter, StoredAuditEvent};
use crate::error::StoreError;

/// How many packs one query reads. A pack holds up to 250 events, so one
/// query usually gives a page; filters that leave few events of each take
/// more.
const PACKS_PER_QUERY: i64 = 8;

/// The columns of a pack, as [`unpack`] reads them.
const PACK_COLUMNS: &str = "first_event_id, types, app_id, user_id, install_id, external_id_hash,
     first_occurred_at, pack";

/// The filters packs can be skipped by without being opened: `$1` app,
/// `$2` types (empty: all; a pack may hold other types beside them), `$3`
/// user, `$4` since, `$5` until.
const PACK_FILTERS: &str = "($1::uuid IS NULL OR app_id = $1)
      AND (cardinality($2::text[]) = 0 OR types && $2::text[])
      AND ($3::uuid IS NULL OR user_id = $3)
      AND ($4::timestamptz IS NULL OR last_occurred_at >= $4)
      AND ($5::timestamptz IS NULL OR first_occurred_at < $5)";

/// Which way a read goes, and where it starts.
#[derive(Debug, Clone, Copy)]
pub enum PackRead {
    /// Newest first, below the event id `before` (from the newest when
    /// `None`).
    NewestBelow(Option<Uuid>),
    /// Oldest first, above the event id `after`, and only packs below
    /// `bound` (an id below which every event has settled).
    OldestAbove { after: Uuid, bound: Uuid },
}

impl Store {
    /// Up to `wanted` packed events matching `filter`, in `read`'s order
    /// (more when the last pack read holds more).
    pub(super) async fn packed_audit_events(
        &self,
        filter: &AuditFilter,
        read: PackRead,
        wanted: usize,
    ) -> Result<Vec<StoredAuditEvent>, StoreError> {
        let sql = match read {
            PackRead::NewestBelow(_) => format!(
                "SELECT {PACK_COLUMNS} FROM audit_event_packs
                 WHERE {PACK_FILTERS} AND ($6::uuid IS NULL OR first_event_id < $6)
                 ORDER BY first_event_id DESC LIMIT $7"
            ),
            PackRead::OldestAbove { .. } => format!(
                "SELECT {PACK_COLUMNS} FROM audit_event_packs
                 WHERE {PACK_FILTERS} AND first_event_id >= $6 AND first_event_id < $8
                 ORDER BY first_event_id LIMIT $7"
            ),
        };
        // The pack-level cursor: below `before` (the pack holding it has
        // events below it only if it starts below it), or from the block
        // of `after` (the pack holding it may have events past it).
        let (mut pack_cursor, bound) = match read {
            PackRead::NewestBelow(before) => (before, None),
            PackRead::OldestAbove { after, bound } => {
                (Some(audit_pack::block_of(after)), Some(bound))
            }
        };
        let mut events = Vec::new();
        let mut connection = self.connection().await?;
        loop {
            let mut params = filter.params().to_vec();
            params.extend([
                (&pack_cursor as &(dyn ToSql + Sync), Type::UUID),
                (&PACKS_PER_QUERY, Type::INT8),
                (&bound, Type::UUID),
            ]);
            let params = match read {
                PackRead::NewestBelow(_) => &params[..7],
                PackRead::OldestAbove { .. } => &params[..],
            };
            let rows = connection
                .call(async |client| client.query_typed(&sql, params).await)
                .await??;
            let mut last_pack = None;
            for row in &rows {
                let first_event_id: Uuid = row.try_get(0)?;
                let unpacked = unpack(row, first_event_id)?;
                let kept = unpacked
                    .into_iter()
                    .filter(|event| read.passes(event.event_id) && filter.passes_unpacked(event));
                match read {
                    PackRead::NewestBelow(_) => events.extend(kept.rev()),
                    PackRead::OldestAbove { .. } => events.extend(kept),
                }
                last_pack = Some(first_event_id);
            }
            let exhausted = rows.len() < PACKS_PER_QUERY as usize;
            match (last_pack, exhausted || events.len() >= wanted) {
                (Some(last), false) => pack_cursor = Some(read.next_pack_cursor(last)),
                _ => return Ok(events),
            }
        }
    }
}

impl PackRead {
    /// Whether an event of id `event_id` is on the read's side of its
    /// cursor.
    fn passes(self, event_id: Uuid) -> bool {
        match self {
            Self::NewestBelow(before) => before.is_none_or(|before| event_id < before),
            Self::OldestAbove { after, .. } => event_id > after,
        }
    }

    /// The pack-level cursor that continues past the pack that starts at
    /// `last`.
    fn next_pack_cursor(self, last: Uuid) -> Uuid {
        match self {
            Self::NewestBelow(_) => last,
            Self::OldestAbove { .. } => Uuid::from_u128(last.as_u128().saturating_add(1 << 56)),
        }
    }
}

impl AuditFilter {
    /// Whether an event of a pack that passed the pack-level filters
    /// passes: its time and type (the pack's columns tell only whether
    /// some of its events may).
    fn passes_unpacked(&self, event: &StoredAuditEvent) -> bool {
        self.since.is_none_or(|since| event.occurred_at >= since)
            && self.until.is_none_or(|until| event.occurred_at < until)
            && (self.types.is_empty() || self.types.contains(&event.type_name))
    }
}

/// A pack's events, oldest first.
fn unpack(
    row: &tokio_postgres::Row,
    first_event_id: Uuid,
) -> Result<Vec<StoredAuditEvent>, StoreError> {
    let types: Vec<String> = row.try_get(1)?;
    let app_id: Option<Uuid> = row.try_get(2)?;
    let user_id: Option<Uuid> = row.try_get(3)?;
    let install_id: Option<Uuid> = row.try_get(4)?;
    let external_id_hash: Option<Vec<u8>> = row.try_get(5)?;
    let written: SystemTime = row.try_get(6)?;
    let pack: &[u8] = row.try_get(7)?;
    let pack = AuditPack::decode(pack)
        .map_err(|error| StoreError::internal(format!("unreadable audit pack: {error}")))?;
    let only_type = match types.as_slice() {
        [only] => Some(only),
        _ => None,
    };
    pack.events
        .into_iter()
        .enumerate()
        .map(|(index, event)| {
            let type_name = match (event.type_name.is_empty(), only_type) {
                (false, _) => event.type_name.clone(),
                (true, Some(only)) => only.clone(),
                (true, None) => {
                    return Err(StoreError::internal(
                        "an audit pack of several types has an event without one",
                    ));
                }
            };
            Ok(StoredAuditEvent {
                event_id: audit_pack::event_id(first_event_id, index),
                occurred_at: event.occurred_at(written),
                type_name,
                app_id,
                user_id,
                install_id,
                api_key_id: (!event.api_key_id.is_empty()).then_some(event.api_key_id),
                external_id_hash: external_id_hash.clone().filter(|_| event.names_person),
                event: event.event,
            })
        })
        .collect()
}
