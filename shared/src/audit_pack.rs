//! Packs: how the audit events of a batch that name no person, user or
//! install are stored, one `audit_event_packs` row per batch, app and type
//! instead of an `audit_events` row each (migration 0008 says why).
//!
//! A pack's events have consecutive ids. The pack's first id is the first
//! of an aligned block: the first 8 bytes of a UUIDv7 made by Postgres's
//! clock when the batch is written, then one byte with the variant bits
//! and the pack's place in its statement ([`block_byte`]), then 7 zero
//! bytes. Event `n` of the pack adds `n` to the last 7 bytes
//! ([`event_id`]). No two packs share a block (the table's primary key),
//! so packs never interleave and a reader orders their events by ordering
//! the packs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

/// The most packs one statement writes: the block byte has 6 bits for the
/// pack's place after the variant's 2.
pub const PACKS_PER_STATEMENT: usize = 64;

/// A pack's events, in the order of their ids. What the row's columns hold
/// (app, type, the pack's ids) is not repeated.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AuditPack {
    /// The events.
    #[prost(message, repeated, tag = "1")]
    pub events: Vec<PackedEvent>,
}

/// One event of a pack.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PackedEvent {
    /// When it happened, in microseconds since the Unix epoch.
    #[prost(int64, tag = "1")]
    pub occurred_at_micros: i64,
    /// The public id of the API key it concerns; empty for none.
    #[prost(string, tag = "2")]
    pub api_key_id: String,
    /// The encoded `AuditEvent`, without what the row and this message
    /// hold, as `audit_events.event`.
    #[prost(bytes = "vec", tag = "3")]
    pub event: Vec<u8>,
}

impl PackedEvent {
    /// When it happened.
    pub fn occurred_at(&self) -> SystemTime {
        let micros = u64::try_from(self.occurred_at_micros).unwrap_or_default();
        UNIX_EPOCH + Duration::from_micros(micros)
    }
}

/// Microseconds since the Unix epoch (0 before it).
pub fn micros(time: SystemTime) -> i64 {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX)
}

/// The 9th byte of the ids of the `place`th pack of a statement: the
/// variant bits `10`, then `place` (below [`PACKS_PER_STATEMENT`]).
pub fn block_byte(place: usize) -> u8 {
    debug_assert!(place < PACKS_PER_STATEMENT);
    0x80 | (place as u8 & 0x3f)
}

/// The id of the `index`th event of the pack whose first id is `first`.
pub fn event_id(first: Uuid, index: usize) -> Uuid {
    Uuid::from_u128(first.as_u128() + index as u128)
}

/// The first id of the block `id` falls in: the first id of the pack that
/// holds an event of id `id`, if a pack does.
pub fn block_of(id: Uuid) -> Uuid {
    const WITHIN_BLOCK: u128 = (1 << 56) - 1;
    Uuid::from_u128(id.as_u128() & !WITHIN_BLOCK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_of_a_pack_stay_in_its_block_and_in_order() {
        let first = Uuid::from_u128(0x0192_3456_789a_7bcd_8000_0000_0000_0000);
        let ids: Vec<Uuid> = (0..300).map(|index| event_id(first, index)).collect();
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(ids.iter().all(|id| block_of(*id) == first));
        assert_eq!(ids[0], first);
        let next_block = Uuid::from_u128(0x0192_3456_789a_7bcd_8100_0000_0000_0000);
        assert!(ids.iter().all(|id| *id < next_block));
        assert_eq!(ids[299].get_version_num(), 7);
    }

    #[test]
    fn block_bytes_carry_the_variant() {
        assert_eq!(block_byte(0), 0x80);
        assert_eq!(block_byte(PACKS_PER_STATEMENT - 1), 0xbf);
        let id = Uuid::from_u128(0x0192_3456_789a_7bcd_bf00_0000_0000_0005);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
    }

    #[test]
    fn a_pack_survives_encoding() {
        let time = UNIX_EPOCH + Duration::from_micros(1_764_000_000_123_456);
        let pack = AuditPack {
            events: vec![PackedEvent {
                occurred_at_micros: micros(time),
                api_key_id: "key".into(),
                event: vec![1, 2, 3],
            }],
        };
        let decoded =
            <AuditPack as prost::Message>::decode(prost::Message::encode_to_vec(&pack).as_slice())
                .expect("decodes");
        assert_eq!(decoded, pack);
        assert_eq!(decoded.events[0].occurred_at(), time);
    }
}
