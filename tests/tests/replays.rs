//! What a used code leaves behind, and for how long: replays are one row
//! per (code, device) and go with their redemption, purged or erased; a
//! retry is answered only while the code would still have been live.

use std::time::{Duration, Instant};

use devicelink_e2e::*;
use devicelink_registration::janitor::REDEMPTION_RETENTION;
use devicelink_registration::store::Store;
use devicelink_shared::auth_code::AuthCode;
use devicelink_shared::pb;
use devicelink_shared::stores::Postgres;
use tonic::Code;

/// The hash a code is stored under, as the bytes Postgres holds.
fn code_hash(code: &str) -> Vec<u8> {
    AuthCode::parse(code)
        .expect("an auth code")
        .hash()
        .as_bytes()
        .to_vec()
}

/// `(device_id, count)` of each replay row of `code`, by device.
async fn replays_of(env: &TestEnv, code: &str) -> Vec<(String, i64)> {
    env.database()
        .await
        .query(
            "SELECT device_id, count FROM code_replays WHERE code_hash = $1 ORDER BY device_id",
            &[&code_hash(code)],
        )
        .await
        .expect("read replays")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// Redeems `code` on `device_id`, expecting a refusal as a used code.
async fn replay(env: &TestEnv, code: &str, app_id: &str, device_id: &str) {
    let refused = env
        .registration()
        .await
        .create_user(create_user_request(code, app_id, phone(device_id)))
        .await
        .expect_err("a used code from another device");
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
}

/// A code minted for `external_id` and redeemed on its phone.
async fn redeemed_code(env: &TestEnv, app_id: &str, api_key: &str, external_id: &str) -> String {
    let code = env.mint(api_key, external_id).await;
    env.registration()
        .await
        .create_user(create_user_request(
            &code,
            app_id,
            phone(&format!("{external_id}-phone")),
        ))
        .await
        .expect("redeem");
    code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_from_one_device_are_one_row_counting_them() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let code = redeemed_code(&env, &app_id, &api_key, "u").await;

    // A hundred replays from one device, ten at a time, so that upserts of
    // one row race.
    for _ in 0..10 {
        let wave = (0..10).map(|_| replay(&env, &code, &app_id, "intruder"));
        futures_util::future::join_all(wave).await;
    }
    assert_eq!(replays_of(&env, &code).await, [("intruder".into(), 100)]);
    let (first_seen, last_seen): (std::time::SystemTime, std::time::SystemTime) = {
        let row = env
            .database()
            .await
            .query_one("SELECT first_seen_at, last_seen_at FROM code_replays", &[])
            .await
            .expect("the one row");
        (row.get(0), row.get(1))
    };
    assert!(first_seen < last_seen, "{first_seen:?} {last_seen:?}");

    // Each other device is a row of its own.
    for device in ["other-1", "other-2", "other-3"] {
        replay(&env, &code, &app_id, device).await;
    }
    assert_eq!(
        replays_of(&env, &code).await,
        [
            ("intruder".into(), 100),
            ("other-1".into(), 1),
            ("other-2".into(), 1),
            ("other-3".into(), 1),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_a_user_erases_the_replays_of_its_codes() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let alices = redeemed_code(&env, &app_id, &api_key, "alice").await;
    let bobs = redeemed_code(&env, &app_id, &api_key, "bob").await;
    for code in [&alices, &bobs] {
        replay(&env, code, &app_id, "intruder").await;
    }
    assert_eq!(env.count("SELECT count(*) FROM code_replays").await, 2);

    env.admin()
        .await
        .delete_user(authorized(
            pb::DeleteUserRequest {
                app_id: app_id.clone(),
                external_id: "alice".into(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("erase alice");
    assert_eq!(replays_of(&env, &alices).await, [], "alice's replays stay");
    assert_eq!(
        replays_of(&env, &bobs).await,
        [("intruder".into(), 1)],
        "bob's replays go with alice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_janitor_purges_replays_with_their_redemption() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let old = redeemed_code(&env, &app_id, &api_key, "old").await;
    let young = redeemed_code(&env, &app_id, &api_key, "young").await;
    for code in [&old, &young] {
        replay(&env, code, &app_id, "intruder").await;
    }
    env.database()
        .await
        .execute(
            "UPDATE redeemed_codes SET redeemed_at = now() - interval '2 days' WHERE code_hash = $1",
            &[&code_hash(&old)],
        )
        .await
        .expect("age one redemption");

    let store = Store::new(Postgres::new(&env.database_url, 1).expect("a Postgres handle"));
    let purged = store
        .purge_redemptions(REDEMPTION_RETENTION)
        .await
        .expect("purge");
    assert_eq!(purged, 1);
    assert_eq!(replays_of(&env, &old).await, [], "the old replay stays");
    assert_eq!(replays_of(&env, &young).await, [("intruder".into(), 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_answered_while_the_code_would_live_and_refused_after() {
    const CODE_TTL: Duration = Duration::from_secs(2);
    let env = TestEnv::start_with(TestOptions {
        code_ttl: CODE_TTL,
        ..Default::default()
    })
    .await;
    let (app_id, api_key) = env.app_with_key().await;
    let minted_at = Instant::now();
    let code = env.mint(&api_key, "u").await;
    let mut registration = env.registration().await;
    let first = registration
        .create_user(create_user_request(&code, &app_id, phone("p")))
        .await
        .expect("redeem")
        .into_inner();
    let retry = registration
        .create_user(create_user_request(&code, &app_id, phone("p")))
        .await
        .expect("a retry within the TTL")
        .into_inner();
    assert!(
        minted_at.elapsed() < CODE_TTL,
        "the retry came only after {:?}",
        minted_at.elapsed()
    );
    assert_eq!(retry.install_token, first.install_token);

    tokio::time::sleep_until((minted_at + CODE_TTL + Duration::from_millis(500)).into()).await;
    let late = registration
        .create_user(create_user_request(&code, &app_id, phone("p")))
        .await
        .expect_err("a retry after the TTL");
    assert_eq!(late.code(), Code::NotFound, "{late:?}");
    assert_eq!(late.message(), "auth code is unknown or expired");
    let intruder = registration
        .create_user(create_user_request(&code, &app_id, phone("intruder")))
        .await
        .expect_err("another device after the TTL");
    assert_eq!(intruder.code(), Code::NotFound, "{intruder:?}");
    assert_eq!(replays_of(&env, &code).await, [], "a late replay is kept");
    assert_eq!(
        env.count("SELECT count(*) FROM redeemed_codes").await,
        1,
        "the claim stays, keeping the code single-use"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_folds_existing_replays_and_bounds_existing_retries() {
    // A database as the first version left it: migration 1 applied, a
    // redemption replayed three times from one device and once from
    // another, and replays of a code whose redemption was purged.
    let database_url = devicelink_e2e::env::create_database().await;
    let (db, connection) = tokio_postgres::connect(&database_url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(connection);
    db.batch_execute(include_str!(
        "../../services/registration/migrations/0001_initial.sql"
    ))
    .await
    .expect("migration 1");
    db.batch_execute(
        "CREATE TABLE schema_migrations (
             version integer PRIMARY KEY, name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now());
         INSERT INTO schema_migrations (version, name) VALUES (1, 'initial');
         INSERT INTO redeemed_codes (code_hash, app_id, device_id, token_nonce, redeemed_at)
             VALUES (decode(repeat('11', 32), 'hex'), gen_random_uuid(), 'p',
                     decode(repeat('00', 16), 'hex'), now() - interval '10 minutes');
         INSERT INTO code_replays (code_hash, app_id, device_id, seen_at)
             SELECT decode(repeat('11', 32), 'hex'), gen_random_uuid(), 'd1', now() - n * interval '1 minute'
             FROM generate_series(1, 3) AS n;
         INSERT INTO code_replays (code_hash, app_id, device_id)
             VALUES (decode(repeat('11', 32), 'hex'), gen_random_uuid(), 'd2'),
                    (decode(repeat('22', 32), 'hex'), gen_random_uuid(), 'd1'),
                    (decode(repeat('22', 32), 'hex'), gen_random_uuid(), 'd1');",
    )
    .await
    .expect("the first version's rows");

    let postgres = Postgres::new(&database_url, 1).expect("a Postgres handle");
    devicelink_registration::migrate::run(&postgres)
        .await
        .expect("migrate");

    let replays: Vec<(String, String, i64, bool)> = db
        .query(
            "SELECT encode(code_hash, 'hex'), device_id, count,
                    last_seen_at - first_seen_at = CASE count WHEN 3 THEN interval '2 minutes' ELSE interval '0' END
             FROM code_replays ORDER BY device_id",
            &[],
        )
        .await
        .expect("read replays")
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
        .collect();
    let c1 = "11".repeat(32);
    assert_eq!(
        replays,
        [
            (c1.clone(), "d1".into(), 3, true),
            (c1.clone(), "d2".into(), 1, true),
        ],
        "folded by (code, device), orphans dropped"
    );
    let retry_window_is_an_hour: bool = db
        .query_one(
            "SELECT code_expires_at = redeemed_at + interval '1 hour' FROM redeemed_codes",
            &[],
        )
        .await
        .expect("the redemption")
        .get(0);
    assert!(retry_window_is_an_hour);
}
