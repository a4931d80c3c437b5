//! `AdminService.WatchAuditEvents` against two registration replicas: a
//! watch resumed from the last cursor it saw, on the other replica, misses
//! nothing and repeats nothing while both replicas write; and an event
//! whose transaction commits after later events' is still delivered, in
//! order (the trap of a watch that sends whatever committed past its
//! cursor).

use std::time::Duration;

use devicelink_e2e::*;
use devicelink_shared::pb;
use devicelink_shared::pb::admin_service_client::AdminServiceClient;
use futures_util::StreamExt;
use prost::Message;
use tonic::transport::Channel;

/// Long enough for an event to settle (`WATCH_SETTLE`, 11 s) and be
/// polled, with room for a slow machine.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(60);

fn two_replicas() -> TestOptions {
    TestOptions {
        registration_replicas: 2,
        ..Default::default()
    }
}

async fn admin_of(env: &TestEnv, replica: usize) -> AdminServiceClient<Channel> {
    AdminServiceClient::new(connect(env.registration_admin_addrs[replica]).await)
}

/// The events of redemptions, of `app_id`.
fn redemption_filter(app_id: &str) -> pb::AuditEventFilter {
    pb::AuditEventFilter {
        app_id: app_id.into(),
        types: vec![
            pb::AuditEventType::CodeRedeemed as i32,
            pb::AuditEventType::InstallActivated as i32,
            pb::AuditEventType::InstallDeactivated as i32,
            pb::AuditEventType::SdkConfigChanged as i32,
        ],
        ..Default::default()
    }
}

async fn watch(
    admin: &mut AdminServiceClient<Channel>,
    filter: pb::AuditEventFilter,
    cursor: &str,
) -> tonic::Streaming<pb::WatchAuditEventsResponse> {
    admin
        .watch_audit_events(authorized(
            pb::WatchAuditEventsRequest {
                filter: Some(filter),
                cursor: cursor.into(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("watch")
        .into_inner()
}

async fn next(
    stream: &mut tonic::Streaming<pb::WatchAuditEventsResponse>,
) -> pb::WatchAuditEventsResponse {
    tokio::time::timeout(DELIVERY_DEADLINE, stream.next())
        .await
        .expect("an event within the deadline")
        .expect("the stream goes on")
        .expect("an event, not an error")
}

/// Every event of `filter`, oldest first.
async fn listed(env: &TestEnv, filter: pb::AuditEventFilter) -> Vec<String> {
    let mut ids = admin_of(env, 0)
        .await
        .list_audit_events(authorized(
            pb::ListAuditEventsRequest {
                filter: Some(filter),
                page_size: 1000,
                cursor: String::new(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("list")
        .into_inner()
        .events
        .into_iter()
        .map(|event| event.event_id)
        .collect::<Vec<_>>();
    ids.reverse();
    ids
}

/// Links `count` users, alternating replicas, one after another.
async fn link_users(env: &TestEnv, app_id: &str, api_key: &str, prefix: &str, count: usize) {
    for n in 0..count {
        let code = env.mint(api_key, &format!("{prefix}-{n}")).await;
        env.registration_replica(n % 2)
            .await
            .create_user(create_user_request(
                &code,
                app_id,
                phone(&format!("{prefix}-device-{n}")),
            ))
            .await
            .expect("link");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumed_on_another_replica_misses_nothing_and_repeats_nothing() {
    let env = TestEnv::start_with(two_replicas()).await;
    let (app_id, api_key) = env.app_with_key().await;
    let filter = redemption_filter(&app_id);
    let mut first = watch(&mut admin_of(&env, 0).await, filter.clone(), "").await;

    link_users(&env, &app_id, &api_key, "early", 4).await;
    let writer = link_users(&env, &app_id, &api_key, "late", 6);
    // Read three events on replica 0, then drop the stream and resume on
    // replica 1 from the last cursor, while the writer goes on.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    let reader = async {
        for _ in 0..3 {
            let response = next(&mut first).await;
            seen.push(response.event.expect("an event").event_id);
            cursor = response.cursor;
        }
        drop(first);
    };
    tokio::join!(writer, reader);

    // Resumed on replica 1 while both replicas write more.
    let mut resumed = watch(&mut admin_of(&env, 1).await, filter.clone(), &cursor).await;
    let writer = link_users(&env, &app_id, &api_key, "after", 4);
    let reader = async {
        // Fourteen users, two events each.
        while seen.len() < 28 {
            seen.push(next(&mut resumed).await.event.expect("an event").event_id);
        }
    };
    tokio::join!(writer, reader);
    let expected = listed(&env, filter).await;
    assert_eq!(expected.len(), 28);
    assert_eq!(seen, expected, "every event once, in order");
    // Nothing more comes: the next poll finds nothing past the last event.
    assert!(
        tokio::time::timeout(Duration::from_secs(3), resumed.next())
            .await
            .is_err(),
        "no event twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_whose_transaction_commits_late_is_delivered_in_order() {
    let env = TestEnv::start_with(two_replicas()).await;
    let (app_id, api_key) = env.app_with_key().await;
    let filter = redemption_filter(&app_id);
    let mut stream = watch(&mut admin_of(&env, 1).await, filter.clone(), "").await;

    // A transaction writes an event and stays open (as a slow change would,
    // within Postgres's timeouts) while later events commit around it.
    let mut db = env.database().await;
    let late = db.transaction().await.expect("a transaction");
    let event = pb::AuditEvent {
        r#type: pb::AuditEventType::SdkConfigChanged as i32,
        ..Default::default()
    };
    let late_id: uuid::Uuid = late
        .query_one(
            "INSERT INTO audit_events (app_id, type, event) VALUES ($1::text::uuid, 'sdk_config_changed', $2)
             RETURNING event_id",
            &[&app_id, &event.encode_to_vec()],
        )
        .await
        .expect("write an event")
        .get(0);
    link_users(&env, &app_id, &api_key, "around", 3).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    late.commit().await.expect("commit late");

    let expected = listed(&env, filter).await;
    assert_eq!(expected.len(), 7);
    assert_eq!(
        expected[0],
        late_id.to_string(),
        "the late event sorts first"
    );
    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        seen.push(next(&mut stream).await.event.expect("an event").event_id);
    }
    assert_eq!(seen, expected, "the late event too, and first");
}
