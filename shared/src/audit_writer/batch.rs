//! How [`super::write_events`] writes a batch: one statement for its rows
//! and its packs (see [`crate::audit_pack`]).

use std::collections::HashMap;
use std::time::SystemTime;

use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

use super::PendingAuditEvent;
use crate::audit_pack::{self, AuditPack, PackedEvent};
use crate::stores::{BoundedConnection, Postgres, Sql};

/// Writes a batch: its events that name a user, install or person as a
/// row each (`$1` to `$9`, an array each with one element per event), and
/// the others as packs (`$10` to `$15`, an array each with one element per
/// pack; see [`crate::audit_pack`]). Prepared once per connection (unnamed
/// behind a transaction pooler), so a batch is not parsed and planned
/// again.
///
/// Every id the statement gives starts with the first half of one UUIDv7
/// Postgres makes when it runs (its millisecond and fraction, so an id
/// still follows the clock of the insert, as the audit watch needs). A
/// row's id ends with the variant and 62 random bits the writer sends
/// (`$1`): making a whole id per row cost Postgres about 3 µs a row. A
/// pack's ends with random bits and a zero byte.
const INSERT_BATCH: Sql = Sql::new(
    concat!(
        "WITH clock AS (SELECT substring(uuid_send(audit_uuidv7()) FROM 1 FOR 8) AS prefix),
     event_rows AS (
         INSERT INTO audit_events
         (event_id, occurred_at, app_id, type, user_id, install_id, api_key_id, external_id_hash, event)
         SELECT encode(clock.prefix || e.id_tail, 'hex')::uuid,
                e.occurred_at, e.app_id, e.type, e.user_id, e.install_id, e.api_key_id,
                e.external_id_hash, e.event
         FROM clock,
              unnest($1::bytea[], $2::timestamptz[], $3::uuid[], $4::text[], $5::uuid[], $6::uuid[],
                     $7::text[], $8::bytea[], $9::bytea[])
                AS e(id_tail, occurred_at, app_id, type, user_id, install_id, api_key_id,
                     external_id_hash, event)),
     packs AS (
         INSERT INTO audit_event_packs
         (first_event_id, types, app_id, event_count, first_occurred_at, last_occurred_at, pack)
         SELECT encode(clock.prefix || ",
        crate::audit_pack_first_id_tail!(),
        ", 'hex')::uuid,
                ARRAY[p.type], p.app_id, p.event_count, p.first_occurred_at, p.last_occurred_at,
                p.pack
         FROM clock,
              unnest($10::text[], $11::uuid[], $12::int4[], $13::timestamptz[], $14::timestamptz[],
                     $15::bytea[])
                AS p(type, app_id, event_count, first_occurred_at, last_occurred_at, pack))
     SELECT 1"
    ),
    &[
        Type::BYTEA_ARRAY,
        Type::TIMESTAMPTZ_ARRAY,
        Type::UUID_ARRAY,
        Type::TEXT_ARRAY,
        Type::UUID_ARRAY,
        Type::UUID_ARRAY,
        Type::TEXT_ARRAY,
        Type::BYTEA_ARRAY,
        Type::BYTEA_ARRAY,
        Type::TEXT_ARRAY,
        Type::UUID_ARRAY,
        Type::INT4_ARRAY,
        Type::TIMESTAMPTZ_ARRAY,
        Type::TIMESTAMPTZ_ARRAY,
        Type::BYTEA_ARRAY,
    ],
);

/// The second half of a UUIDv7 (RFC 9562): the variant bits `10`, then 62
/// random bits.
fn id_tails(count: usize) -> Vec<[u8; 8]> {
    let mut random = vec![0u8; count * 8];
    getrandom::fill(&mut random).expect("the operating system's random generator failed");
    random
        .chunks_exact(8)
        .map(|chunk| {
            let mut tail: [u8; 8] = chunk.try_into().expect("chunks of eight");
            tail[0] = (tail[0] & 0x3f) | 0x80;
            tail
        })
        .collect()
}

/// Writes `batch` in one statement: its rows and its packs.
pub(super) async fn write_batch(
    postgres: &Postgres,
    batch: &[PendingAuditEvent],
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (named, packable): (Vec<&PendingAuditEvent>, Vec<&PendingAuditEvent>) =
        batch.iter().partition(|event| event.names_someone());
    let rows = EventRows::of(&named);
    let packs = packs_of(&packable);
    let packs = PackColumns::of(&packs);
    let mut params: Vec<&(dyn ToSql + Sync)> = rows.params().to_vec();
    params.extend(packs.params());
    let mut connection = BoundedConnection::get(postgres).await?;
    connection
        .call(async |client| INSERT_BATCH.execute(client, &params).await)
        .await??;
    Ok(())
}

impl PendingAuditEvent {
    /// Whether it names a user, an install or a person: such an event is a
    /// row of its own, which erasure and the by-user index find; any other
    /// goes into a pack.
    fn names_someone(&self) -> bool {
        self.user_id.is_some() || self.install_id.is_some() || self.external_id_hash.is_some()
    }
}

/// `INSERT_BATCH`'s first nine parameters: events written as rows.
struct EventRows<'a> {
    tails: Vec<Vec<u8>>,
    occurred_at: Vec<SystemTime>,
    app_ids: Vec<Option<Uuid>>,
    types: Vec<&'a str>,
    user_ids: Vec<Option<Uuid>>,
    install_ids: Vec<Option<Uuid>>,
    api_key_ids: Vec<Option<&'a str>>,
    hashes: Vec<Option<&'a [u8]>>,
    events: Vec<&'a [u8]>,
}

impl<'a> EventRows<'a> {
    fn of(events: &[&'a PendingAuditEvent]) -> Self {
        Self {
            tails: id_tails(events.len())
                .iter()
                .map(|tail| tail.to_vec())
                .collect(),
            occurred_at: events.iter().map(|event| event.occurred_at).collect(),
            app_ids: events.iter().map(|event| event.app_id).collect(),
            types: events
                .iter()
                .map(|event| event.row.type_name.as_str())
                .collect(),
            user_ids: events.iter().map(|event| event.user_id).collect(),
            install_ids: events.iter().map(|event| event.install_id).collect(),
            api_key_ids: events
                .iter()
                .map(|event| event.api_key_id.as_deref())
                .collect(),
            hashes: events
                .iter()
                .map(|event| event.external_id_hash.as_ref().map(<[u8; 32]>::as_slice))
                .collect(),
            events: events
                .iter()
                .map(|event| event.row.event.as_slice())
                .collect(),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 9] {
        [
            &self.tails,
            &self.occurred_at,
            &self.app_ids,
            &self.types,
            &self.user_ids,
            &self.install_ids,
            &self.api_key_ids,
            &self.hashes,
            &self.events,
        ]
    }
}

/// A pack to write: the events of one batch of one app and type.
struct PendingPack<'a> {
    type_name: &'a str,
    app_id: Option<Uuid>,
    first_occurred_at: SystemTime,
    last_occurred_at: SystemTime,
    pack: AuditPack,
}

/// The packable events of a batch, one pack per app and type (another
/// once one holds [`audit_pack::MAX_EVENTS`]), each in the order the events
/// were appended (their ids follow it).
fn packs_of<'a>(events: &[&'a PendingAuditEvent]) -> Vec<PendingPack<'a>> {
    let mut places: HashMap<(Option<Uuid>, &str), usize> = HashMap::new();
    let mut packs: Vec<PendingPack<'a>> = Vec::new();
    for event in events {
        let key = (event.app_id, event.row.type_name.as_str());
        let open = places
            .get(&key)
            .copied()
            .filter(|place| packs[*place].pack.events.len() < audit_pack::MAX_EVENTS);
        let place = open.unwrap_or_else(|| {
            packs.push(PendingPack {
                type_name: &event.row.type_name,
                app_id: event.app_id,
                first_occurred_at: event.occurred_at,
                last_occurred_at: event.occurred_at,
                pack: AuditPack::default(),
            });
            places.insert(key, packs.len() - 1);
            packs.len() - 1
        });
        let pack = &mut packs[place];
        pack.first_occurred_at = pack.first_occurred_at.min(event.occurred_at);
        pack.last_occurred_at = pack.last_occurred_at.max(event.occurred_at);
        pack.pack.events.push(PackedEvent {
            occurred_at_micros: audit_pack::micros(event.occurred_at),
            api_key_id: event.api_key_id.clone().unwrap_or_default(),
            event: event.row.event.clone(),
            ..PackedEvent::default()
        });
    }
    packs
}

/// `INSERT_BATCH`'s last six parameters: packs.
struct PackColumns<'a> {
    types: Vec<&'a str>,
    app_ids: Vec<Option<Uuid>>,
    counts: Vec<i32>,
    first_occurred_at: Vec<SystemTime>,
    last_occurred_at: Vec<SystemTime>,
    packs: Vec<Vec<u8>>,
}

impl<'a> PackColumns<'a> {
    fn of(packs: &[PendingPack<'a>]) -> Self {
        Self {
            types: packs.iter().map(|pack| pack.type_name).collect(),
            app_ids: packs.iter().map(|pack| pack.app_id).collect(),
            counts: packs
                .iter()
                .map(|pack| i32::try_from(pack.pack.events.len()).unwrap_or(i32::MAX))
                .collect(),
            first_occurred_at: packs.iter().map(|pack| pack.first_occurred_at).collect(),
            last_occurred_at: packs.iter().map(|pack| pack.last_occurred_at).collect(),
            packs: packs
                .iter()
                .map(|pack| prost::Message::encode_to_vec(&pack.pack))
                .collect(),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 6] {
        [
            &self.types,
            &self.app_ids,
            &self.counts,
            &self.first_occurred_at,
            &self.last_occurred_at,
            &self.packs,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_tails_carry_the_variant_and_random_bits() {
        let tails = id_tails(64);
        assert_eq!(tails.len(), 64);
        assert!(tails.iter().all(|tail| tail[0] & 0xc0 == 0x80));
        let distinct: std::collections::HashSet<_> = tails.iter().collect();
        assert_eq!(distinct.len(), 64, "random");
    }

    #[test]
    fn a_pack_holds_at_most_its_block_and_the_rest_start_another() {
        let app = Some(Uuid::now_v7());
        let minted = |_| {
            let row = crate::audit::AuditRow {
                type_name: "code_minted".into(),
                event: vec![1, 2, 3],
            };
            PendingAuditEvent::new(app, row)
        };
        let events: Vec<PendingAuditEvent> = (0..600).map(minted).collect();
        let refused = PendingAuditEvent::new(
            app,
            crate::audit::AuditRow {
                type_name: "api_key_refused".into(),
                event: vec![4],
            },
        );
        let mut all: Vec<&PendingAuditEvent> = events.iter().collect();
        all.insert(300, &refused);
        let sizes: Vec<(&str, usize)> = packs_of(&all)
            .iter()
            .map(|pack| (pack.type_name, pack.pack.events.len()))
            .collect();
        assert_eq!(
            sizes,
            [
                ("code_minted", audit_pack::MAX_EVENTS),
                ("code_minted", audit_pack::MAX_EVENTS),
                ("api_key_refused", 1),
                ("code_minted", 600 - 2 * audit_pack::MAX_EVENTS),
            ]
        );
    }
}
