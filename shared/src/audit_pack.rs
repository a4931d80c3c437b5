//! Packs: audit events stored several to an `audit_event_packs` row
//! (migration 0008 says which and why), and how their ids are made.
//!
//! A pack's first id is a UUIDv7 made by Postgres's clock when it is
//! written, whose last byte is zero ([`audit_pack_first_id_tail`]); event `n` of
//! the pack adds `n` ([`event_id`]), so a pack's ids fill an aligned block
//! of [`MAX_EVENTS`] that no other pack shares: packs never interleave,
//! and a reader orders their events by ordering the packs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

/// The most events in a pack: the ids of its block.
pub const MAX_EVENTS: usize = 256;

/// SQL for the second half of a pack's first id: the variant and random
/// bits of a fresh UUIDv4, with the last byte zeroed. A macro, so that a
/// statement can `concat!` it.
#[macro_export]
macro_rules! audit_pack_first_id_tail {
    () => {
        "overlay(substring(uuid_send(gen_random_uuid()) FROM 9) PLACING '\\x00'::bytea FROM 8)"
    };
}

/// A pack's events, in the order of their ids. What the row's columns hold
/// (app, user, install, the hash, the ids) is not repeated.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AuditPack {
    /// The events.
    #[prost(message, repeated, tag = "1")]
    pub events: Vec<PackedEvent>,
}

/// One event of a pack.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PackedEvent {
    /// When it happened, in microseconds since the Unix epoch; 0 for the
    /// time the pack was written (events written with their change).
    #[prost(int64, tag = "1")]
    pub occurred_at_micros: i64,
    /// The public id of the API key it concerns; empty for none.
    #[prost(string, tag = "2")]
    pub api_key_id: String,
    /// The encoded `AuditEvent`, without what the row and this message
    /// hold, as `audit_events.event`.
    #[prost(bytes = "vec", tag = "3")]
    pub event: Vec<u8>,
    /// Its type (as `audit_events.type`); empty when the pack has one
    /// type only.
    #[prost(string, tag = "4")]
    pub type_name: String,
    /// Whether it carries the pack's external id hash.
    #[prost(bool, tag = "5")]
    pub names_person: bool,
}

impl PackedEvent {
    /// When it happened; `written` when the pack's time is its time.
    pub fn occurred_at(&self, written: SystemTime) -> SystemTime {
        match u64::try_from(self.occurred_at_micros) {
            Ok(micros) if micros > 0 => UNIX_EPOCH + Duration::from_micros(micros),
            _ => written,
        }
    }
}

/// Microseconds since the Unix epoch (0 before it).
pub fn micros(time: SystemTime) -> i64 {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX)
}

/// The id of the `index`th event of the pack whose first id is `first`.
pub fn event_id(first: Uuid, index: usize) -> Uuid {
    Uuid::from_u128(first.as_u128() + index as u128)
}

/// The first id of the block `id` falls in: the first id of the pack that
/// holds an event of id `id`, if a pack does.
pub fn block_of(id: Uuid) -> Uuid {
    Uuid::from_u128(id.as_u128() & !(MAX_EVENTS as u128 - 1))
}

/// The first id of the block after `first`'s.
pub fn next_block(first: Uuid) -> Uuid {
    Uuid::from_u128(block_of(first).as_u128().saturating_add(MAX_EVENTS as u128))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_of_a_pack_stay_in_its_block_and_in_order() {
        let first = Uuid::from_u128(0x0192_3456_789a_7bcd_8123_4567_89ab_cd00);
        let ids: Vec<Uuid> = (0..MAX_EVENTS)
            .map(|index| event_id(first, index))
            .collect();
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(ids.iter().all(|id| block_of(*id) == first));
        assert_eq!(ids[0], first);
        assert!(ids.iter().all(|id| *id < next_block(first)));
        assert_eq!(block_of(next_block(first)), next_block(first));
        assert_eq!(ids[MAX_EVENTS - 1].get_version_num(), 7);
    }

    #[test]
    fn a_pack_survives_encoding_and_an_unset_time_is_the_packs() {
        let time = UNIX_EPOCH + Duration::from_micros(1_764_000_000_123_456);
        let pack = AuditPack {
            events: vec![
                PackedEvent {
                    occurred_at_micros: micros(time),
                    api_key_id: "key".into(),
                    event: vec![1, 2, 3],
                    ..Default::default()
                },
                PackedEvent {
                    type_name: "code_redeemed".into(),
                    names_person: true,
                    ..Default::default()
                },
            ],
        };
        let decoded =
            <AuditPack as prost::Message>::decode(prost::Message::encode_to_vec(&pack).as_slice())
                .expect("decodes");
        assert_eq!(decoded, pack);
        assert_eq!(decoded.events[0].occurred_at(UNIX_EPOCH), time);
        assert_eq!(decoded.events[1].occurred_at(time), time);
    }
}
