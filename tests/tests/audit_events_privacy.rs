//! Audit events and personal data: no event holds a secret or an external
//! id in clear, and erasing a user keeps its events but unlinks them from
//! the person.

mod audit_support;

use std::collections::HashSet;

use audit_support::*;
use devicelink_e2e::*;
use devicelink_shared::pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_keeps_the_events_but_unlinks_the_person() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let linked = env.link(&app_id, &api_key, "dora", phone("one")).await;
    env.link(&app_id, &api_key, "dora", phone("two")).await;
    env.link(&app_id, &api_key, "erik", phone("three")).await;
    let before = all_events(&env, &app_id, 100).await;
    // Her redemptions carry the hash; her installs' events name her by
    // user id only.
    let of_dora = || {
        before
            .iter()
            .filter(|event| event.user_id == linked.user_id)
    };
    assert!(
        of_dora()
            .filter(|event| event_type(event) != T::CodeRedeemed)
            .all(|event| event.external_id_hash.is_empty()),
        "{before:#?}"
    );
    let dora_hashes: HashSet<String> = of_dora()
        .filter(|event| event_type(event) == T::CodeRedeemed)
        .map(|event| event.external_id_hash.clone())
        .collect();
    assert_eq!(dora_hashes.len(), 1, "one hash names dora: {dora_hashes:?}");
    let dora_hash = dora_hashes.into_iter().next().expect("a hash");
    assert_eq!(dora_hash.len(), 64, "a hex HMAC-SHA256");
    // The mints name no one: they carry their code's id instead.
    await_mints(&env, 3).await;
    assert_eq!(
        env.count(&stored_events(
            "type = 'code_minted' AND external_id_hash IS NOT NULL",
            "'code_minted' = ANY(types) AND external_id_hash IS NOT NULL"
        ))
        .await,
        0,
        "no mint holds an external id hash"
    );
    let named_dora = format!(
        "SELECT (SELECT count(*) FROM audit_events
                 WHERE external_id_hash = decode('{dora_hash}', 'hex'))
              + (SELECT count(*) FROM audit_event_packs
                 WHERE external_id_hash = decode('{dora_hash}', 'hex'))"
    );
    assert_eq!(env.count(&named_dora).await, 2, "her two redemptions");

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
    assert_eq!(env.count(&named_dora).await, 0);
    assert!(
        after
            .iter()
            .filter(|event| event.user_id != linked.user_id && event_type(event) == T::CodeRedeemed)
            .all(|event| event.external_id_hash.len() == 64),
        "erik's events keep their hash"
    );
    assert_eq!(
        env.count(&stored_events(
            &format!(
                "user_id = '{}' AND external_id_hash IS NOT NULL",
                linked.user_id
            ),
            &format!(
                "user_id = '{}' AND external_id_hash IS NOT NULL",
                linked.user_id
            )
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
    // event both, packs included; the mints' too, once written.
    await_mints(&env, 4).await;
    let stored = env.count(&stored_events("true", "true")).await;
    assert!(stored >= 17, "the run wrote its events: {stored}");
    let rows = env
        .database()
        .await
        .query(
            "SELECT audit_events::text, event FROM audit_events
             UNION ALL SELECT audit_event_packs::text, pack FROM audit_event_packs",
            &[],
        )
        .await
        .expect("read every event");
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
