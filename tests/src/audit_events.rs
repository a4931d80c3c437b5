//! The audit events an app's calls left, read as an operator reads them
//! (`AdminService.ListAuditEvents` on the admin listener), for the tests
//! of what each call audits.

use std::time::{Duration, Instant};

use devicelink_shared::pb;

use crate::{ADMIN_TOKEN, TestEnv, authorized, connect};

/// How long a buffered event (a refusal, a mint) may take to be written:
/// a flush interval and a write, with room for a slow machine.
pub const FLUSHED_WITHIN: Duration = Duration::from_secs(10);

/// The events of `app_id` of `types` (all types when empty), newest first.
pub async fn audit_events(
    env: &TestEnv,
    app_id: &str,
    types: &[pb::AuditEventType],
) -> Vec<pb::AuditEvent> {
    audit_events_on_replica(env, 0, app_id, types).await
}

/// [`audit_events`] as registration replica `replica` answers them.
pub async fn audit_events_on_replica(
    env: &TestEnv,
    replica: usize,
    app_id: &str,
    types: &[pb::AuditEventType],
) -> Vec<pb::AuditEvent> {
    pb::admin_service_client::AdminServiceClient::new(
        connect(env.registration_admin_addrs[replica]).await,
    )
    .list_audit_events(authorized(
        pb::ListAuditEventsRequest {
            filter: Some(pb::AuditEventFilter {
                app_id: app_id.into(),
                types: types.iter().map(|event_type| *event_type as i32).collect(),
                ..Default::default()
            }),
            page_size: 1000,
            cursor: String::new(),
        },
        ADMIN_TOKEN,
    ))
    .await
    .expect("list audit events")
    .into_inner()
    .events
}

/// The events of `types` once there are `count` of them (within
/// [`FLUSHED_WITHIN`]), and a moment later still no more: each asserted
/// exactly.
pub async fn await_audit_events(
    env: &TestEnv,
    app_id: &str,
    types: &[pb::AuditEventType],
    count: usize,
) -> Vec<pb::AuditEvent> {
    let deadline = Instant::now() + FLUSHED_WITHIN;
    while audit_events(env, app_id, types).await.len() < count && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let settled = audit_events(env, app_id, types).await;
    assert_eq!(settled.len(), count, "{types:?}: {settled:#?}");
    settled
}
