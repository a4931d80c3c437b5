//! Audit events (`AdminService.ListAuditEvents`): each change writes its
//! events exactly once, with the change; a call that fails or is cancelled
//! writes none; pages are stable; retention deletes only what is older.
//! (Secrets and erasure: `audit_events_privacy.rs`.)

mod audit_support;

use std::collections::HashSet;

use audit_support::*;
use devicelink_e2e::pg_activity::{await_backend_gone, await_one_lock_waiter};
use devicelink_e2e::*;
use devicelink_registration::store::{Store, redeem_sql};
use devicelink_shared::pb;
use devicelink_shared::pb::audit_actor::Actor;
use devicelink_shared::pb::audit_event::Payload;

fn summary(events: &[pb::AuditEvent]) -> Vec<(T, String)> {
    events
        .iter()
        .rev()
        .map(|event| (event_type(event), event.install_id.clone()))
        .collect()
}

fn deactivation(event: &pb::AuditEvent) -> &pb::InstallDeactivated {
    match &event.payload {
        Some(Payload::InstallDeactivated(deactivated)) => deactivated,
        other => panic!("not a deactivation: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_change_writes_its_events_once_and_a_failed_call_none() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let mut registration = env.registration().await;
    let mut admin = env.admin().await;

    // A new user, then a takeover by another phone, then a tablet that
    // the phone is kept over.
    let first = env.link(&app_id, &api_key, "alice", phone("one")).await;
    let second = env.link(&app_id, &api_key, "alice", phone("two")).await;
    let third = env.link(&app_id, &api_key, "alice", tablet("three")).await;
    // Refused calls change nothing and write nothing: a device that holds
    // another user, an unknown code, a key for an app that does not exist.
    let held = env.mint(&api_key, "bob").await;
    registration
        .create_user(create_user_request(&held, &app_id, phone("two")))
        .await
        .expect_err("the device holds alice");
    registration
        .create_user(create_user_request(
            "dl_unknown000000000000000000000000000",
            &app_id,
            phone("four"),
        ))
        .await
        .expect_err("an unknown code");
    let retried = env.mint(&api_key, "carol").await;
    let mut carol = String::new();
    for _ in 0..2 {
        // The second is a retry from the same device: answered, not redone.
        carol = registration
            .create_user(create_user_request(&retried, &app_id, phone("five")))
            .await
            .expect("redeem, then retry")
            .into_inner()
            .install_id;
    }
    admin
        .create_api_key(authorized(
            pb::CreateApiKeyRequest {
                app_id: uuid::Uuid::now_v7().to_string(),
                ..Default::default()
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect_err("no such app");
    reset(&env, &second.install_token).await;
    admin
        .set_sdk_config(authorized(
            pb::SetSdkConfigRequest {
                app_id: app_id.clone(),
                sdk_config: Some(Default::default()),
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("set the SDK config");
    let keys = admin
        .list_api_keys(authorized(
            pb::ListApiKeysRequest {
                app_id: app_id.clone(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("keys")
        .into_inner()
        .api_keys;
    for _ in 0..2 {
        // Revoking twice is one change.
        admin
            .revoke_api_key(authorized(
                pb::RevokeApiKeyRequest {
                    key_id: keys[0].key_id.clone(),
                },
                ADMIN_TOKEN,
            ))
            .await
            .expect("revoke");
    }
    admin
        .delete_user(authorized(
            pb::DeleteUserRequest {
                app_id: app_id.clone(),
                external_id: "carol".into(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("erase carol");

    let events = all_events(&env, &app_id, 100).await;
    let none = String::new();
    // Events of one statement may share a microsecond, so their order is
    // not asserted: each appears exactly once.
    let mut expected = vec![
        (T::ApiKeyCreated, none.clone()),
        (T::CodeRedeemed, first.install_id.clone()),
        (T::InstallActivated, first.install_id.clone()),
        (T::InstallDeactivated, first.install_id.clone()),
        (T::CodeRedeemed, second.install_id.clone()),
        (T::InstallActivated, second.install_id.clone()),
        (T::CodeRedeemed, third.install_id.clone()),
        (T::CodeRedeemed, carol.clone()),
        (T::InstallActivated, carol.clone()),
        (T::InstallReset, second.install_id.clone()),
        (T::InstallDeactivated, second.install_id.clone()),
        (T::SdkConfigChanged, none.clone()),
        (T::ApiKeyRevoked, none.clone()),
        (T::InstallDeactivated, carol.clone()),
        (T::UserErased, none.clone()),
    ];
    expected.sort();
    let mut written = summary(&events);
    written.sort();
    assert_eq!(written, expected, "{events:#?}");

    let of = |wanted: T, install: &str| {
        events
            .iter()
            .find(|event| event_type(event) == wanted && event.install_id == install)
            .unwrap_or_else(|| panic!("a {wanted:?} event of {install}"))
    };
    let superseded = of(T::InstallDeactivated, &first.install_id);
    assert_eq!(
        deactivation(superseded).reason,
        pb::DeactivationReason::Superseded as i32
    );
    assert_eq!(
        deactivation(superseded).superseded_by_install_id,
        second.install_id
    );
    assert_eq!(superseded.reason, "superseded");
    assert_eq!(
        deactivation(of(T::InstallDeactivated, &second.install_id)).reason,
        pb::DeactivationReason::Reset as i32
    );
    assert_eq!(
        deactivation(of(T::InstallDeactivated, &carol)).reason,
        pb::DeactivationReason::Erased as i32
    );
    let restored = of(T::CodeRedeemed, &third.install_id);
    assert!(
        matches!(
            &restored.payload,
            Some(Payload::CodeRedeemed(pb::CodeRedeemed { restored: true, code_id }))
                if code_id.len() == 32
        ),
        "{restored:#?}"
    );
    assert_eq!(restored.user_id, first.user_id);
    assert_eq!(restored.sdk_version, "2.0.1");
    assert_eq!(restored.client_address, "127.0.0.1");
    assert_eq!(
        restored
            .actor
            .as_ref()
            .and_then(|actor| actor.actor.clone()),
        Some(Actor::InstallId(third.install_id.clone()))
    );
    // A reset names the install that reset itself as its actor.
    assert_eq!(
        of(T::InstallReset, &second.install_id)
            .actor
            .as_ref()
            .and_then(|actor| actor.actor.clone()),
        Some(Actor::InstallId(second.install_id.clone()))
    );
    let revoked = events
        .iter()
        .find(|event| event_type(event) == T::ApiKeyRevoked)
        .expect("a revocation");
    assert_eq!(revoked.api_key_id, keys[0].key_id);
    assert_eq!(
        revoked.actor.as_ref().and_then(|actor| actor.actor.clone()),
        Some(Actor::Operator("admin".into()))
    );
    // Event ids are time-ordered UUIDv7s, unique.
    let ids: HashSet<&str> = events.iter().map(|event| event.event_id.as_str()).collect();
    assert_eq!(ids.len(), events.len());
    assert!(events.iter().all(|event| {
        uuid::Uuid::parse_str(&event.event_id)
            .expect("a UUID")
            .get_version_num()
            == 7
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_create_user_writes_no_event() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let code = env.mint(&api_key, "cancelled").await;
    let registration = env.registration().await;
    let watcher = env.database().await;

    // Holding the app's row keeps the new user's one statement waiting.
    let mut db = env.database().await;
    let lock = db.transaction().await.expect("a transaction");
    lock.execute("SELECT id FROM apps FOR UPDATE", &[])
        .await
        .expect("lock the app");
    let mut client = registration.clone();
    let request = create_user_request(&code, &app_id, phone("first"));
    let call = tokio::spawn(async move { client.create_user(request).await });
    let waiter = await_one_lock_waiter(&watcher).await;
    assert!(
        waiter.runs(redeem_sql::CREATE_USER),
        "the new user's statement waits: {waiter:?}"
    );
    call.abort();
    await_backend_gone(&watcher, waiter.pid).await;
    lock.rollback().await.expect("release the app");
    assert_eq!(
        env.count(&stored_events(
            "type NOT IN ('api_key_created', 'code_minted')",
            "NOT types <@ ARRAY['api_key_created', 'code_minted']"
        ))
        .await,
        0,
        "the cancelled redemption wrote no event"
    );

    registration
        .clone()
        .create_user(create_user_request(&code, &app_id, phone("second")))
        .await
        .expect("the code still works");
    assert_eq!(
        devicelink_e2e::audit_events::audit_events(&env, &app_id, &[T::CodeRedeemed])
            .await
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_stable_while_events_arrive() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    for n in 0..12 {
        env.link(
            &app_id,
            &api_key,
            &format!("user-{n}"),
            phone(&format!("d-{n}")),
        )
        .await;
    }
    let at_start = all_events(&env, &app_id, 1000).await;
    assert_eq!(at_start.len(), 25);

    let mut admin = env.admin().await;
    let mut paged = Vec::new();
    let mut cursor = String::new();
    let mut n = 100;
    loop {
        let page = admin
            .list_audit_events(authorized(
                pb::ListAuditEventsRequest {
                    filter: Some(pb::AuditEventFilter {
                        app_id: app_id.clone(),
                        types: WRITTEN_WITH_CHANGES
                            .map(|event_type| event_type as i32)
                            .to_vec(),
                        ..Default::default()
                    }),
                    page_size: 4,
                    cursor: cursor.clone(),
                },
                ADMIN_TOKEN,
            ))
            .await
            .expect("a page")
            .into_inner();
        paged.extend(page.events);
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
        // Events keep arriving between pages.
        env.link(
            &app_id,
            &api_key,
            &format!("user-{n}"),
            phone(&format!("d-{n}")),
        )
        .await;
        n += 1;
    }
    let ids: Vec<&str> = paged.iter().map(|event| event.event_id.as_str()).collect();
    let expected: Vec<&str> = at_start
        .iter()
        .map(|event| event.event_id.as_str())
        .collect();
    assert_eq!(
        ids, expected,
        "the pages hold exactly the events there were, newest first, none twice"
    );

    // The filters: by type, by user, by time.
    let user_id = at_start
        .iter()
        .find(|event| !event.user_id.is_empty())
        .expect("a user's event")
        .user_id
        .clone();
    let filtered = admin
        .list_audit_events(authorized(
            pb::ListAuditEventsRequest {
                filter: Some(pb::AuditEventFilter {
                    app_id: app_id.clone(),
                    types: vec![T::InstallActivated as i32],
                    user_id: user_id.clone(),
                    since: at_start.last().and_then(|event| event.time),
                    until: None,
                }),
                ..Default::default()
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("a filtered list")
        .into_inner()
        .events;
    assert_eq!(filtered.len(), 1, "{filtered:#?}");
    assert_eq!(filtered[0].user_id, user_id);
    let status = admin
        .list_audit_events(authorized(
            pb::ListAuditEventsRequest {
                filter: Some(pb::AuditEventFilter {
                    types: vec![0],
                    ..Default::default()
                }),
                ..Default::default()
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect_err("an unspecified type is refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

/// SQL giving the id in `column` (an event's, or a pack's first) the value
/// it would have had if written `age` ago: an event's age is its id's (a
/// UUIDv7 of the time it was written), so the test ages one by moving its
/// time bits, keeping its random ones.
fn aged_id(column: &str, age: &str) -> String {
    format!(
        "encode(substring(uuid_send(audit_uuidv7_floor(now() - ({age}))) FROM 1 FOR 8)
                || substring(uuid_send({column}) FROM 9), 'hex')::uuid"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_only_older_events_in_batches() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    for n in 0..3 {
        env.link(
            &app_id,
            &api_key,
            &format!("user-{n}"),
            phone(&format!("d-{n}")),
        )
        .await;
    }
    let db = env.database().await;
    // The key's creation and user-0's two events (one pack) are past a
    // 90-day retention; user-1's are a minute younger than it. (Mints are
    // written by a buffer, whenever it flushes: left out.)
    db.batch_execute(&format!(
        "UPDATE audit_events SET event_id = {}
         WHERE type = 'api_key_created';
         UPDATE audit_event_packs SET first_event_id = {}
         WHERE user_id = (SELECT id FROM users WHERE external_id = 'user-0');
         UPDATE audit_event_packs SET first_event_id = {}
         WHERE user_id = (SELECT id FROM users WHERE external_id = 'user-1')",
        aged_id("event_id", "interval '91 days'"),
        aged_id("first_event_id", "interval '91 days'"),
        aged_id("first_event_id", "interval '90 days' - interval '1 minute'")
    ))
    .await
    .expect("age some events");
    let postgres =
        devicelink_shared::stores::Postgres::new(&env.database_url, 1).expect("a Postgres handle");
    let store = Store::new(postgres);
    let retention = devicelink_registration::janitor::DEFAULT_AUDIT_RETENTION;
    assert_eq!(
        store.purge_audit_events(retention, 1).await.expect("purge"),
        3,
        "a batch is one row and one pack: the key's creation, user-0's two events"
    );
    assert_eq!(
        store.purge_audit_events(retention, 1).await.expect("purge"),
        0
    );
    assert_eq!(
        env.count(&stored_events(
            "type <> 'code_minted'",
            "types <> ARRAY['code_minted']"
        ))
        .await,
        4,
        "user-1's and user-2's events stay"
    );
    assert_eq!(
        env.count(&stored_events(
            "user_id = (SELECT id FROM users WHERE external_id = 'user-0')",
            "user_id = (SELECT id FROM users WHERE external_id = 'user-0')"
        ))
        .await,
        0
    );
}
