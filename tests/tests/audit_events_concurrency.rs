//! Audit events of concurrent restorations of one user, through two
//! replicas: read in event order, they tell the same story as the final
//! state. Each successful redemption has one `code_redeemed`; each
//! activation after the first deactivates, as superseded, the install
//! active before it, naming its successor; and the last activation is the
//! install active at the end.

use devicelink_e2e::*;
use devicelink_shared::pb;
use devicelink_shared::pb::audit_event::Payload;
use pb::AuditEventType as T;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_concurrent_restorations_replay_to_the_final_state() {
    let env = TestEnv::start_with(TestOptions {
        registration_replicas: 2,
        ..Default::default()
    })
    .await;
    let (app_id, api_key) = env.app_with_key().await;
    let first = env.link(&app_id, &api_key, "olga", phone("home")).await;
    let mut codes = Vec::new();
    for _ in 0..12 {
        codes.push(env.mint(&api_key, "olga").await);
    }
    let clients = [
        env.registration_replica(0).await,
        env.registration_replica(1).await,
    ];
    let calls = codes.into_iter().enumerate().map(|(n, code)| {
        let mut client = clients[n % 2].clone();
        let request = create_user_request(&code, &app_id, phone(&format!("phone-{n}")));
        tokio::spawn(async move { client.create_user(request).await })
    });
    let succeeded = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .filter(|outcome| matches!(outcome, Ok(Ok(_))))
        .count();
    assert!(succeeded > 0);

    let mut events = env
        .admin()
        .await
        .list_audit_events(authorized(
            pb::ListAuditEventsRequest {
                filter: Some(pb::AuditEventFilter {
                    app_id: app_id.clone(),
                    user_id: first.user_id.clone(),
                    types: vec![
                        T::CodeRedeemed as i32,
                        T::InstallActivated as i32,
                        T::InstallDeactivated as i32,
                    ],
                    ..Default::default()
                }),
                page_size: 1000,
                cursor: String::new(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("list")
        .into_inner()
        .events;
    events.reverse();

    let redeemed = events
        .iter()
        .filter(|event| event.r#type == T::CodeRedeemed as i32)
        .count();
    assert_eq!(redeemed, succeeded + 1, "one per successful redemption");

    // Replay the events: who is active after each.
    let mut active: Option<String> = None;
    let mut activations = 0;
    for event in &events {
        match &event.payload {
            Some(Payload::InstallActivated(_)) => {
                activations += 1;
                active = Some(event.install_id.clone());
            }
            Some(Payload::InstallDeactivated(deactivated)) => {
                assert_eq!(
                    active.as_deref(),
                    Some(event.install_id.as_str()),
                    "only the active install is deactivated: {events:#?}"
                );
                assert_eq!(
                    deactivated.reason,
                    pb::DeactivationReason::Superseded as i32
                );
                active = None;
            }
            _ => {}
        }
    }
    assert_eq!(activations, succeeded + 1, "every new phone took over");

    let db = env.database().await;
    let row = db
        .query_one(
            "SELECT id::text FROM installs WHERE state = 'active' AND user_id = $1::text::uuid",
            &[&first.user_id],
        )
        .await
        .expect("one active install");
    let final_active: String = row.get(0);
    assert_eq!(
        active,
        Some(final_active),
        "the last activation is the one that stands"
    );
    // Each deactivation names the install that took over: the next one
    // activated.
    let superseded_by: Vec<&str> = events
        .iter()
        .filter_map(|event| match &event.payload {
            Some(Payload::InstallDeactivated(deactivated)) => {
                Some(deactivated.superseded_by_install_id.as_str())
            }
            _ => None,
        })
        .collect();
    let activated_after_the_first: Vec<&str> = events
        .iter()
        .filter(|event| event.r#type == T::InstallActivated as i32)
        .map(|event| event.install_id.as_str())
        .skip(1)
        .collect();
    assert_eq!(
        superseded_by, activated_after_the_first,
        "each superseded install names the next one activated"
    );
}
