//! `AdminService.ListAuditEvents` and `WatchAuditEvents`: the audit
//! events the store wrote with its changes, as operators read them.

use std::pin::Pin;
use std::time::{Duration, SystemTime};

use devicelink_shared::pb;
use devicelink_shared::pb::audit_actor::Actor as PbActor;
use devicelink_shared::serving::DrainSignal;
use devicelink_shared::validate::{FieldViolation, uuid};
use futures_util::Stream;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use uuid::Uuid;

use super::convert::timestamp;
use crate::audit::{type_from_name, type_name};
use crate::error::{RegistrationError, StoreError};
use crate::store::{AuditFilter, Store, StoredAuditEvent};

/// The page size when the request names none.
const DEFAULT_PAGE_SIZE: u32 = 100;
/// The largest page.
const MAX_PAGE_SIZE: u32 = 1000;
/// How often a watch asks Postgres for newly settled events.
pub const WATCH_POLL: Duration = Duration::from_secs(1);
/// The most events one poll of a watch reads; more wait for the next.
const WATCH_BATCH: u32 = 500;

/// The stream a watch answers.
pub type AuditEventStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchAuditEventsResponse, Status>> + Send>>;

/// The filter of a request, every bad field reported at once.
fn filter(request: Option<&pb::AuditEventFilter>) -> Result<AuditFilter, RegistrationError> {
    let Some(request) = request else {
        return Ok(AuditFilter::default());
    };
    let mut violations = Vec::new();
    let mut optional_uuid = |field: &str, value: &str| {
        if value.is_empty() {
            return None;
        }
        uuid(field, value)
            .map_err(|violation| violations.push(violation))
            .ok()
    };
    let app_id = optional_uuid("filter.app_id", &request.app_id);
    let user_id = optional_uuid("filter.user_id", &request.user_id);
    let mut types = Vec::new();
    for value in &request.types {
        match pb::AuditEventType::try_from(*value) {
            Ok(event_type) if event_type != pb::AuditEventType::Unspecified => {
                types.push(type_name(event_type));
            }
            _ => violations.push(FieldViolation::new(
                "filter.types",
                "must be audit event types other than AUDIT_EVENT_TYPE_UNSPECIFIED",
            )),
        }
    }
    let mut time = |field: &str, value: Option<&prost_types::Timestamp>| {
        let value = value?;
        SystemTime::try_from(*value)
            .map_err(|_| violations.push(FieldViolation::new(field, "must be a valid time")))
            .ok()
    };
    let since = time("filter.since", request.since.as_ref());
    let until = time("filter.until", request.until.as_ref());
    if !violations.is_empty() {
        return Err(RegistrationError::InvalidArgument(violations));
    }
    Ok(AuditFilter {
        app_id,
        types,
        user_id,
        since,
        until,
    })
}

/// A cursor: the id of the last event seen.
fn cursor(value: &str) -> Result<Option<Uuid>, RegistrationError> {
    if value.is_empty() {
        return Ok(None);
    }
    uuid("cursor", value)
        .map(Some)
        .map_err(|violation| RegistrationError::InvalidArgument(vec![violation]))
}

/// A stored event as operators see it: the encoded rest of the event with
/// the row's columns put back.
fn event_message(stored: StoredAuditEvent) -> Result<pb::AuditEvent, StoreError> {
    let mut event = pb::AuditEvent::decode(stored.event.as_slice())
        .map_err(|error| StoreError::internal(format!("unreadable audit event: {error}")))?;
    let install_id = stored
        .install_id
        .map(|id| id.to_string())
        .unwrap_or_default();
    // A device that acted as the install the event is about was stored
    // without the id the statement found (see `audit::Actor`).
    if let Some(pb::AuditActor {
        actor: Some(PbActor::InstallId(actor)),
    }) = event.actor.as_mut()
        && actor.is_empty()
    {
        actor.clone_from(&install_id);
    }
    let event_type = type_from_name(&stored.type_name).unwrap_or(pb::AuditEventType::Unspecified);
    event.event_id = stored.event_id.to_string();
    event.r#type = event_type as i32;
    event.time = Some(timestamp(stored.occurred_at));
    event.app_id = stored.app_id.map(|id| id.to_string()).unwrap_or_default();
    event.user_id = stored.user_id.map(|id| id.to_string()).unwrap_or_default();
    event.install_id = install_id;
    event.api_key_id = stored.api_key_id.unwrap_or_default();
    event.external_id_hash = stored
        .external_id_hash
        .map(|hash| hex(&hash))
        .unwrap_or_default();
    Ok(event)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// `ListAuditEvents`.
pub async fn list(
    store: &Store,
    request: &pb::ListAuditEventsRequest,
) -> Result<pb::ListAuditEventsResponse, RegistrationError> {
    let filter = filter(request.filter.as_ref())?;
    let before = cursor(&request.cursor)?;
    let page_size = match request.page_size {
        0 => DEFAULT_PAGE_SIZE,
        size if size <= MAX_PAGE_SIZE => size,
        _ => {
            return Err(RegistrationError::invalid(
                "page_size",
                &format!("must be at most {MAX_PAGE_SIZE}"),
            ));
        }
    };
    let page = store.list_audit_events(&filter, before, page_size).await?;
    Ok(pb::ListAuditEventsResponse {
        events: page
            .events
            .into_iter()
            .map(event_message)
            .collect::<Result<_, _>>()?,
        next_cursor: page
            .next_cursor
            .map(|cursor| cursor.to_string())
            .unwrap_or_default(),
    })
}

/// `WatchAuditEvents`: a task polls for settled events and sends them in
/// order until the client goes, the server drains, or Postgres fails (the
/// stream then ends with that status, and the client resumes from the last
/// cursor it saw).
pub async fn watch(
    store: &Store,
    request: &pb::WatchAuditEventsRequest,
    drain: DrainSignal,
) -> Result<AuditEventStream, RegistrationError> {
    let filter = filter(request.filter.as_ref())?;
    let start = match cursor(&request.cursor)? {
        Some(cursor) => cursor,
        None => store.audit_cursor_now().await?,
    };
    let (sender, receiver) = mpsc::channel(WATCH_BATCH as usize);
    tokio::spawn(send_settled(store.clone(), filter, start, sender, drain));
    Ok(Box::pin(ReceiverStream::new(receiver)))
}

async fn send_settled(
    store: Store,
    filter: AuditFilter,
    mut after: Uuid,
    sender: mpsc::Sender<Result<pb::WatchAuditEventsResponse, Status>>,
    mut drain: DrainSignal,
) {
    loop {
        let events = match store
            .settled_audit_events(&filter, after, WATCH_BATCH)
            .await
        {
            Ok(events) => events,
            Err(error) => {
                let _ = sender
                    .send(Err(RegistrationError::from(error).into()))
                    .await;
                return;
            }
        };
        let full = events.len() == WATCH_BATCH as usize;
        for stored in events {
            let event_id = stored.event_id;
            let response = event_message(stored)
                .map(|event| pb::WatchAuditEventsResponse {
                    event: Some(event),
                    cursor: event_id.to_string(),
                })
                .map_err(|error| RegistrationError::from(error).into());
            let failed = response.is_err();
            if sender.send(response).await.is_err() || failed {
                return;
            }
            after = event_id;
        }
        if full {
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(WATCH_POLL) => {}
            () = drain.requested() => return,
            () = sender.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_reports_every_bad_field_and_keeps_good_ones() {
        let bad = pb::AuditEventFilter {
            app_id: "nope".into(),
            user_id: "nope".into(),
            types: vec![0],
            ..Default::default()
        };
        let Err(RegistrationError::InvalidArgument(violations)) = filter(Some(&bad)) else {
            panic!("a bad filter was accepted");
        };
        assert_eq!(violations.len(), 3);
        let good = pb::AuditEventFilter {
            types: vec![pb::AuditEventType::CodeRedeemed as i32],
            ..Default::default()
        };
        assert_eq!(filter(Some(&good)).unwrap().types, vec!["code_redeemed"]);
    }
}
