//! What the audit event tests share: reading every event written with a
//! change, waiting for the buffered mints, resetting an install.

#![allow(dead_code, reason = "each test binary uses a part of it")]

use devicelink_e2e::*;
use devicelink_shared::pb;
pub use pb::AuditEventType as T;

/// The types of the events written with Postgres changes, at once (the
/// buffered ones, of mints and refusals, are in `audit_events_refusals.rs`).
pub const WRITTEN_WITH_CHANGES: [T; 9] = [
    T::CodeRedeemed,
    T::InstallActivated,
    T::InstallDeactivated,
    T::InstallReset,
    T::ApiKeyCreated,
    T::ApiKeyRevoked,
    T::SdkConfigChanged,
    T::UserErased,
    T::ReplayRefused,
];

/// Every event of `app_id` written with a change, newest first, read a page
/// of `page_size` at a time.
pub async fn all_events(env: &TestEnv, app_id: &str, page_size: u32) -> Vec<pb::AuditEvent> {
    let mut admin = env.admin().await;
    let mut events = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = admin
            .list_audit_events(authorized(
                pb::ListAuditEventsRequest {
                    filter: Some(pb::AuditEventFilter {
                        app_id: app_id.into(),
                        types: WRITTEN_WITH_CHANGES
                            .map(|event_type| event_type as i32)
                            .to_vec(),
                        ..Default::default()
                    }),
                    page_size,
                    cursor: cursor.clone(),
                },
                ADMIN_TOKEN,
            ))
            .await
            .expect("list audit events")
            .into_inner();
        events.extend(page.events);
        if page.next_cursor.is_empty() {
            return events;
        }
        cursor = page.next_cursor;
    }
}

pub fn event_type(event: &pb::AuditEvent) -> T {
    T::try_from(event.r#type).expect("a known type")
}

/// A query counting the stored events: the rows of `audit_events` that
/// match `rows`, and the events of the `audit_event_packs` rows that match
/// `packs` (conditions on each table's columns).
pub fn stored_events(rows: &str, packs: &str) -> String {
    format!(
        "SELECT (SELECT count(*) FROM audit_events WHERE {rows})
              + (SELECT coalesce(sum(event_count), 0) FROM audit_event_packs WHERE {packs})::int8"
    )
}

/// Waits until the buffered writer has written `count` mint events.
pub async fn await_mints(env: &TestEnv, count: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while env
        .count(&stored_events(
            "type = 'code_minted'",
            "types = ARRAY['code_minted']",
        ))
        .await
        < count
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{count} mints written"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

pub async fn reset(env: &TestEnv, install_token: &str) {
    env.registration()
        .await
        .reset_install(authorized(pb::ResetInstallRequest {}, install_token))
        .await
        .expect("reset");
}
