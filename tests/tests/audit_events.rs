//! Audit events (`AdminService.ListAuditEvents`): each change writes its
//! events exactly once, with the change; a call that fails or is cancelled
//! writes none; no event holds a secret or an external id in clear; erasing
//! a user keeps its events but unlinks them from the person; pages are
//! stable; retention deletes only what is older.

use std::collections::HashSet;

use devicelink_e2e::pg_activity::{await_backend_gone, await_one_lock_waiter};
use devicelink_e2e::*;
use devicelink_registration::store::{Store, redeem_sql};
use devicelink_shared::pb;
use devicelink_shared::pb::audit_actor::Actor;
use devicelink_shared::pb::audit_event::Payload;
use pb::AuditEventType as T;

/// The types of the events written with Postgres changes, at once (the
/// buffered ones, of mints and refusals, are in `audit_events_refusals.rs`).
const WRITTEN_WITH_CHANGES: [T; 9] = [
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
async fn all_events(env: &TestEnv, app_id: &str, page_size: u32) -> Vec<pb::AuditEvent> {
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

fn event_type(event: &pb::AuditEvent) -> T {
    T::try_from(event.r#type).expect("a known type")
}

/// `(type, install id)` of every event, oldest first.
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

/// Waits until the buffered writer has written `count` mint events.
async fn await_mints(env: &TestEnv, count: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while env
        .count("SELECT count(*) FROM audit_events WHERE type = 'code_minted'")
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

async fn reset(env: &TestEnv, install_token: &str) {
    env.registration()
        .await
        .reset_install(authorized(pb::ResetInstallRequest {}, install_token))
        .await
        .expect("reset");
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
    assert_eq!(
        restored.payload,
        Some(Payload::CodeRedeemed(pb::CodeRedeemed { restored: true }))
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
        env.count(
            "SELECT count(*) FROM audit_events WHERE type NOT IN ('api_key_created', 'code_minted')"
        )
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
        env.count("SELECT count(*) FROM audit_events WHERE type = 'code_redeemed'")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_keeps_the_events_but_unlinks_the_person() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let linked = env.link(&app_id, &api_key, "dora", phone("one")).await;
    env.link(&app_id, &api_key, "dora", phone("two")).await;
    env.link(&app_id, &api_key, "erik", phone("three")).await;
    let before = all_events(&env, &app_id, 100).await;
    let dora_hashes: HashSet<String> = before
        .iter()
        .filter(|event| event.user_id == linked.user_id)
        .map(|event| event.external_id_hash.clone())
        .collect();
    assert_eq!(dora_hashes.len(), 1, "one hash names dora: {dora_hashes:?}");
    let dora_hash = dora_hashes.into_iter().next().expect("a hash");
    assert_eq!(dora_hash.len(), 64, "a hex HMAC-SHA256");
    // The mints name dora by the same hash.
    await_mints(&env, 3).await;
    let named_dora = format!(
        "SELECT count(*) FROM audit_events WHERE external_id_hash = decode('{dora_hash}', 'hex')"
    );
    assert_eq!(
        env.count(&named_dora).await,
        7,
        "five redemption events, two mints"
    );

    env.admin()
        .await
        .delete_user(authorized(
            pb::DeleteUserRequest {
                app_id: app_id.clone(),
                external_id: "dora".into(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("erase dora");

    let after = all_events(&env, &app_id, 100).await;
    let kept: Vec<&pb::AuditEvent> = after
        .iter()
        .filter(|event| event.user_id == linked.user_id)
        .collect();
    // Dora's five redemption events (two redemptions, two activations,
    // one takeover), the deactivation of her active install and the
    // erasure itself.
    assert_eq!(kept.len(), 7, "{kept:#?}");
    assert!(
        after
            .iter()
            .all(|event| event.external_id_hash != dora_hash),
        "no event names dora any more"
    );
    assert_eq!(env.count(&named_dora).await, 0, "not even a mint");
    assert_eq!(
        env.count(
            "SELECT count(*) FROM audit_events WHERE type = 'code_minted' AND external_id_hash IS NOT NULL"
        )
        .await,
        1,
        "erik's mint keeps its hash"
    );
    assert!(
        after
            .iter()
            .filter(|event| event.user_id != linked.user_id && event_type(event) == T::CodeRedeemed)
            .all(|event| event.external_id_hash.len() == 64),
        "erik's events keep their hash"
    );
    assert_eq!(
        env.count(&format!(
            "SELECT count(*) FROM audit_events WHERE user_id = '{}' AND external_id_hash IS NOT NULL",
            linked.user_id
        ))
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_event_holds_a_secret_or_an_external_id_in_clear() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let mut secrets = vec![
        api_key.clone(),
        devicelink_e2e::credentials::api_key_secret(&api_key).to_owned(),
        ADMIN_TOKEN.to_owned(),
        RECORD_KEY.to_owned(),
    ];
    let external_ids = ["frida-external", "gustav-external"];
    secrets.extend(external_ids.iter().map(|id| (*id).to_owned()));
    let mut registration = env.registration().await;
    for (n, external_id) in external_ids.iter().enumerate() {
        for device in [format!("phone-{n}"), format!("tablet-{n}")] {
            let code = env.mint(&api_key, external_id).await;
            let device_info = if device.starts_with("phone") {
                phone(&device)
            } else {
                tablet(&device)
            };
            let linked = registration
                .create_user(create_user_request(&code, &app_id, device_info))
                .await
                .expect("link")
                .into_inner();
            secrets.push(code);
            secrets.push(linked.install_token.clone());
            reset(&env, &linked.install_token).await;
        }
    }
    let created = env
        .admin()
        .await
        .create_api_key(authorized(
            pb::CreateApiKeyRequest {
                app_id: app_id.clone(),
                ..Default::default()
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("another key")
        .into_inner();
    secrets.push(created.api_key.clone());
    secrets.push(devicelink_e2e::credentials::api_key_secret(&created.api_key).to_owned());

    // Every byte of every stored event, the row as text and the encoded
    // event both; the mints' too, once written.
    await_mints(&env, 4).await;
    let rows = env
        .database()
        .await
        .query("SELECT audit_events::text, event FROM audit_events", &[])
        .await
        .expect("read every event");
    assert!(rows.len() >= 17, "the run wrote its events: {}", rows.len());
    for row in rows {
        let text: String = row.get(0);
        let encoded: Vec<u8> = row.get(1);
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "{secret:?} in {text}");
            assert!(
                !encoded
                    .windows(secret.len())
                    .any(|window| window == secret.as_bytes()),
                "{secret:?} in an encoded event"
            );
        }
    }
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
    // The key's creation and user-0's two events are past a 90-day
    // retention; the others are a minute younger than it. (Mints are
    // written by a buffer, whenever it flushes: left out.)
    db.execute(
        "UPDATE audit_events SET occurred_at = now() - interval '91 days'
         WHERE type = 'api_key_created' OR user_id = (SELECT id FROM users WHERE external_id = 'user-0')",
        &[],
    )
    .await
    .expect("age some events");
    db.execute(
        "UPDATE audit_events SET occurred_at = now() - interval '90 days' + interval '1 minute'
         WHERE user_id = (SELECT id FROM users WHERE external_id = 'user-1')",
        &[],
    )
    .await
    .expect("age others less");
    let postgres =
        devicelink_shared::stores::Postgres::new(&env.database_url, 1).expect("a Postgres handle");
    let store = Store::new(postgres);
    let retention = devicelink_registration::janitor::DEFAULT_AUDIT_RETENTION;
    assert_eq!(
        store.purge_audit_events(retention, 2).await.expect("purge"),
        2,
        "one batch is bounded"
    );
    assert_eq!(
        store.purge_audit_events(retention, 2).await.expect("purge"),
        1
    );
    assert_eq!(
        store.purge_audit_events(retention, 2).await.expect("purge"),
        0
    );
    assert_eq!(
        env.count("SELECT count(*) FROM audit_events WHERE type <> 'code_minted'")
            .await,
        4
    );
    assert_eq!(
        env.count(
            "SELECT count(*) FROM audit_events
             WHERE user_id = (SELECT id FROM users WHERE external_id = 'user-0')"
        )
        .await,
        0
    );
}
