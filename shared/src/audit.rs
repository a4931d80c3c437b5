//! Audit events (`devicelink.v1.AuditEvent`): how both services build
//! them. registration writes the events of its Postgres changes with the
//! changes themselves (its `store`); refusals, and authcode's mints, go
//! through the buffered [`crate::audit_writer`].
//!
//! An event is stored as a row of `audit_events`, or in a pack of several
//! ([`crate::audit_pack`]), whose columns hold what the List filters and
//! erasure need (type, app, user, install, key, the external id's keyed
//! hash); the rest is the encoded `AuditEvent` without those. Postgres
//! gives the event id (and, for a change, the time) when the row is
//! written, and registration reads them back into the message. Nothing
//! here ever holds a secret, and the external id never appears but as its
//! keyed hash ([`crate::code_record_seal::RecordKeys::audit_subject_hash`]).

use std::net::IpAddr;

use prost::Message;
use tonic::metadata::MetadataMap;

use crate::audit_pack::{AuditPack, PackedEvent};
use crate::pb;
use crate::pb::audit_actor::Actor as PbActor;
use crate::pb::audit_event::Payload;
use crate::secret::{SecretHash, lower_hex};

/// The prefix of every `AuditEventType` name, dropped in the `type` column.
const TYPE_PREFIX: &str = "AUDIT_EVENT_TYPE_";

/// Separates a code's public id from its hash (the key it is stored and
/// claimed under).
const CODE_ID_DOMAIN: &[u8] = b"devicelink/audit-code-id/v1\0";

/// The bytes of a code's public id (32 hex digits).
const CODE_ID_BYTES: usize = 16;

/// The longest trace id kept (a W3C trace id is 32 hex digits).
const TRACE_ID_CHARS: usize = 32;

/// Who caused an event.
#[derive(Debug, Clone)]
pub enum Actor {
    /// A backend, calling with the API key of this public id.
    ApiKey(String),
    /// A device, calling as the install it holds or is being bound as.
    Install(String),
    /// A device calling as the install the event is about, whose id the
    /// statement finds (a reset, by token): stored with an empty id, which
    /// registration fills from the event's `install_id` when reading.
    EventInstall,
    /// A device whose install is not known (a refused redemption).
    Device,
    /// A named operator, through the admin API.
    Operator(String),
    /// The service itself.
    System,
}

impl Actor {
    fn message(&self) -> pb::AuditActor {
        let actor = match self {
            Self::ApiKey(key_id) => PbActor::ApiKeyId(key_id.clone()),
            Self::Install(install_id) => PbActor::InstallId(install_id.clone()),
            Self::EventInstall => PbActor::InstallId(String::new()),
            Self::Device => return pb::AuditActor { actor: None },
            Self::Operator(name) => PbActor::Operator(name.clone()),
            Self::System => PbActor::System(true),
        };
        pb::AuditActor { actor: Some(actor) }
    }
}

/// What a call tells about itself, recorded with every event it causes.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// The client's address (behind trusted proxies).
    pub client_address: Option<IpAddr>,
    /// The W3C trace id of the call's `traceparent`, if it carried one.
    pub trace_id: Option<String>,
    /// The SDK version a device reported.
    pub sdk_version: Option<String>,
}

impl CallContext {
    /// The context of a call from `client_address` with `metadata`.
    pub fn new(client_address: Option<IpAddr>, metadata: &MetadataMap) -> Self {
        Self {
            client_address,
            trace_id: trace_id(metadata),
            sdk_version: None,
        }
    }

    /// The same, for a device that reports its SDK version.
    pub fn with_sdk_version(mut self, sdk_version: &str) -> Self {
        self.sdk_version = Some(sdk_version.to_owned());
        self
    }
}

/// The trace id of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`),
/// if the metadata carries a well-formed one.
fn trace_id(metadata: &MetadataMap) -> Option<String> {
    let traceparent = metadata.get("traceparent")?.to_str().ok()?;
    let trace_id = traceparent.split('-').nth(1)?;
    let well_formed =
        trace_id.len() == TRACE_ID_CHARS && trace_id.bytes().all(|b| b.is_ascii_hexdigit());
    well_formed.then(|| trace_id.to_ascii_lowercase())
}

/// A code's public id, which its `CODE_MINTED` and `CODE_REDEEMED` events
/// both carry: a hash of the code's hash, so that it names the code (tying
/// a mint to its redemption) without being the key the code is stored and
/// claimed under, and without naming the person it was minted for.
pub fn code_id(code_hash: &SecretHash) -> String {
    let id = SecretHash::of(&[CODE_ID_DOMAIN, code_hash.as_bytes()]);
    lower_hex(&id.as_bytes()[..CODE_ID_BYTES])
}

/// One event to write: its `type` column and its encoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// `code_redeemed`, `install_activated`, ...
    pub type_name: String,
    /// The encoded `AuditEvent`, without what the row's columns hold.
    pub event: Vec<u8>,
}

/// Events to write with one statement, as the two arrays its
/// `unnest($types::text[], $events::bytea[])` reads.
#[derive(Debug, Clone, Default)]
pub struct AuditRows {
    /// The `type` of each event.
    pub types: Vec<String>,
    /// The encoded event of each.
    pub events: Vec<Vec<u8>>,
}

impl AuditRows {
    /// Adds one event.
    pub fn push(&mut self, row: AuditRow) {
        self.types.push(row.type_name);
        self.events.push(row.event);
    }
}

impl AuditRows {
    /// The events as one pack ([`crate::audit_pack`]), to write with the
    /// change they record. Only `code_redeemed` carries the external id
    /// hash of the pack: an install's events name the user by id, as a
    /// reset's do, and need no hash of the person (less to erase).
    pub fn pack(&self) -> ChangePack {
        let redeemed = type_name(pb::AuditEventType::CodeRedeemed);
        let mut types: Vec<String> = Vec::new();
        let events = self
            .types
            .iter()
            .zip(&self.events)
            .map(|(type_name, event)| {
                if !types.contains(type_name) {
                    types.push(type_name.clone());
                }
                PackedEvent {
                    event: event.clone(),
                    type_name: type_name.clone(),
                    names_person: *type_name == redeemed,
                    ..PackedEvent::default()
                }
            })
            .collect::<Vec<_>>();
        ChangePack {
            types,
            count: i32::try_from(events.len()).unwrap_or(i32::MAX),
            pack: AuditPack { events }.encode_to_vec(),
        }
    }
}

/// The events of one change as the statement that makes the change writes
/// them: one `audit_event_packs` row.
#[derive(Debug, Clone, Default)]
pub struct ChangePack {
    /// Its events' types, each once.
    pub types: Vec<String>,
    /// How many events it holds.
    pub count: i32,
    /// The encoded [`AuditPack`].
    pub pack: Vec<u8>,
}

impl FromIterator<AuditRow> for AuditRows {
    fn from_iter<I: IntoIterator<Item = AuditRow>>(rows: I) -> Self {
        let mut all = Self::default();
        rows.into_iter().for_each(|row| all.push(row));
        all
    }
}

/// The `type` column's value for `event_type`.
pub fn type_name(event_type: pb::AuditEventType) -> String {
    event_type
        .as_str_name()
        .trim_start_matches(TYPE_PREFIX)
        .to_ascii_lowercase()
}

/// The `AuditEventType` a `type` column holds.
pub fn type_from_name(name: &str) -> Option<pb::AuditEventType> {
    pb::AuditEventType::from_str_name(&format!("{TYPE_PREFIX}{}", name.to_ascii_uppercase()))
        .filter(|event_type| *event_type != pb::AuditEventType::Unspecified)
}

/// A successful change caused by `actor` during the call of `context`.
pub fn change(context: &CallContext, actor: &Actor, payload: Payload) -> AuditRow {
    row(
        context,
        actor,
        pb::AuditOutcome::Success,
        String::new(),
        payload,
    )
}

/// An install that stopped being active, for `reason` (its
/// `StateReason` as stored: `superseded`, `phone_preferred`, `reset`,
/// `erased`), replaced by `superseded_by` when superseded.
pub fn deactivation(
    context: &CallContext,
    actor: &Actor,
    reason: pb::DeactivationReason,
    superseded_by: Option<String>,
) -> AuditRow {
    let name = reason
        .as_str_name()
        .trim_start_matches("DEACTIVATION_REASON_")
        .to_ascii_lowercase();
    let payload = Payload::InstallDeactivated(pb::InstallDeactivated {
        reason: reason as i32,
        superseded_by_install_id: superseded_by.unwrap_or_default(),
    });
    row(context, actor, pb::AuditOutcome::Success, name, payload)
}

/// A refused call, for `reason` (short, machine-readable).
pub fn refusal(context: &CallContext, actor: &Actor, reason: &str, payload: Payload) -> AuditRow {
    row(
        context,
        actor,
        pb::AuditOutcome::Refused,
        reason.to_owned(),
        payload,
    )
}

fn row(
    context: &CallContext,
    actor: &Actor,
    outcome: pb::AuditOutcome,
    reason: String,
    payload: Payload,
) -> AuditRow {
    let event_type = payload_type(&payload);
    let event = pb::AuditEvent {
        r#type: event_type as i32,
        actor: Some(actor.message()),
        outcome: outcome as i32,
        reason,
        client_address: context
            .client_address
            .map(|address| address.to_string())
            .unwrap_or_default(),
        sdk_version: context.sdk_version.clone().unwrap_or_default(),
        trace_id: context.trace_id.clone().unwrap_or_default(),
        payload: Some(payload),
        ..Default::default()
    };
    AuditRow {
        type_name: type_name(event_type),
        event: event.encode_to_vec(),
    }
}

/// The type each payload records: one type per payload, so the two never
/// disagree.
fn payload_type(payload: &Payload) -> pb::AuditEventType {
    use pb::AuditEventType as T;
    match payload {
        Payload::CodeMinted(_) => T::CodeMinted,
        Payload::CodeRedeemed(_) => T::CodeRedeemed,
        Payload::RedemptionRefused(_) => T::RedemptionRefused,
        Payload::ReplayRefused(_) => T::ReplayRefused,
        Payload::InstallActivated(_) => T::InstallActivated,
        Payload::InstallDeactivated(_) => T::InstallDeactivated,
        Payload::InstallReset(_) => T::InstallReset,
        Payload::ApiKeyCreated(_) => T::ApiKeyCreated,
        Payload::ApiKeyRevoked(_) => T::ApiKeyRevoked,
        Payload::ApiKeyRefused(_) => T::ApiKeyRefused,
        Payload::SdkConfigChanged(_) => T::SdkConfigChanged,
        Payload::UserErased(_) => T::UserErased,
        Payload::RateLimited(_) => T::RateLimited,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deactivation_names_its_reason_as_stored() {
        let row = deactivation(
            &CallContext::default(),
            &Actor::System,
            pb::DeactivationReason::PhonePreferred,
            None,
        );
        let event = pb::AuditEvent::decode(row.event.as_slice()).unwrap();
        assert_eq!(event.reason, "phone_preferred");
        assert_eq!(row.type_name, "install_deactivated");
    }

    #[test]
    fn type_names_round_trip_and_refuse_unspecified() {
        assert_eq!(type_name(pb::AuditEventType::CodeRedeemed), "code_redeemed");
        assert_eq!(
            type_from_name("install_deactivated"),
            Some(pb::AuditEventType::InstallDeactivated)
        );
        assert_eq!(type_from_name("unspecified"), None);
        assert_eq!(type_from_name("nonsense"), None);
    }

    #[test]
    fn a_traceparent_gives_its_trace_id_and_anything_else_none() {
        let mut metadata = MetadataMap::new();
        assert_eq!(trace_id(&metadata), None);
        metadata.insert(
            "traceparent",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            trace_id(&metadata).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        metadata.insert("traceparent", "00-not-a-trace".parse().unwrap());
        assert_eq!(trace_id(&metadata), None);
    }
}
