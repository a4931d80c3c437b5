//! Code records that someone with write access to Redis cannot forge: a
//! record under a made-up code, an altered record, and a genuine record
//! moved under another code are all refused as unknown codes (and logged as
//! tampering); a key rotation keeps live codes redeemable.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use devicelink_e2e::logs::recorded_logs;
use devicelink_e2e::*;
use devicelink_shared::auth_code::{AuthCode, AuthCodeRecord, redis_key};
use devicelink_shared::code_record_seal::RecordKeys;
use devicelink_shared::pb;
use devicelink_shared::validate::AppId;
use redis::AsyncCommands;
use tonic::Code;

/// What registration logs when a record fails its seal.
const TAMPERING_LOG_LINE: &str = "failed its seal";

/// Every test of this binary records the logs, before any service starts:
/// the subscriber is global, and the first test to start wins.
fn record_logs() -> devicelink_e2e::logs::RecordedLogs {
    recorded_logs("info,h2=warn,hyper=warn,tower=warn")
}

const OLD_KEY: &str = "the-old-record-key-before-the-rotation-0123";
const NEW_KEY: &str = "the-new-record-key-after-the-rotation-45678";

async fn redis() -> redis::aio::MultiplexedConnection {
    let url = std::env::var("DEVICELINK_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    redis::Client::open(url)
        .expect("a Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("Redis answers")
}

/// A record as authcode would write it for `external_id` of `app_id`, live
/// for ten minutes.
fn record_for(app_id: &str, external_id: &str) -> AuthCodeRecord {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970");
    let millis = |at: Duration| i64::try_from(at.as_millis()).expect("a sane clock");
    AuthCodeRecord {
        app_id: app_id.to_owned(),
        external_id: external_id.to_owned(),
        minted_at_unix_ms: millis(now),
        key_id: "forged".into(),
        expires_at_unix_ms: millis(now + Duration::from_secs(600)),
        code_challenge: Vec::new(),
    }
}

/// Redeems `code` for `app_id` on a fresh phone; the status on refusal.
async fn redeem(env: &TestEnv, code: &str, app_id: &str) -> Result<pb::CreateUserResponse, Code> {
    let device = format!("phone-{}", uuid::Uuid::new_v4().simple());
    env.registration()
        .await
        .create_user(create_user_request(code, app_id, phone(&device)))
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| status.code())
}

fn app(app_id: &str) -> AppId {
    AppId::parse("app_id", app_id).expect("an app id")
}

async fn users(env: &TestEnv) -> i64 {
    env.count("SELECT count(*) FROM users").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_written_under_a_made_up_code_is_refused_and_logged() {
    let logs = record_logs();
    let env = TestEnv::start().await;
    let (app_id, _) = env.app_with_key().await;
    let mut redis = redis().await;
    let keys_of_an_attacker =
        RecordKeys::new("an-attackers-guess-at-the-record-key", None).expect("a well-formed key");

    let unsealed = AuthCode::generate();
    let sealed_elsewhere = AuthCode::generate();
    let forgeries = [
        (&unsealed, record_for(&app_id, "victim").to_bytes()),
        (
            &sealed_elsewhere,
            keys_of_an_attacker.seal(&sealed_elsewhere.hash(), &record_for(&app_id, "victim")),
        ),
    ];
    for (code, value) in forgeries {
        let _: () = redis
            .set(
                redis_key(&env.redis_key_prefix, app(&app_id), &code.hash()),
                value,
            )
            .await
            .expect("write the forged record");
        assert_eq!(
            redeem(&env, code.expose(), &app_id).await.err(),
            Some(Code::NotFound),
            "a forged record is refused as an unknown code"
        );
    }
    assert_eq!(
        users(&env).await,
        0,
        "no user was created for the forged id"
    );
    assert!(logs.text().contains(TAMPERING_LOG_LINE), "{}", logs.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_record_is_refused_and_the_genuine_one_still_redeems() {
    record_logs();
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let code = env.mint(&api_key, "customer-1").await;
    let key = redis_key(
        &env.redis_key_prefix,
        app(&app_id),
        &AuthCode::parse(&code).expect("a minted code parses").hash(),
    );
    let mut redis = redis().await;
    let genuine: Vec<u8> = redis.get(&key).await.expect("the minted record");

    // The attacker rewrites the external id and keeps the seal.
    let record_len = genuine.len() - 34;
    let mut altered = record_for(&app_id, "victim").to_bytes();
    altered.extend_from_slice(&genuine[record_len..]);
    let _: () = redis.set(&key, &altered).await.expect("alter the record");
    assert_eq!(
        redeem(&env, &code, &app_id).await.err(),
        Some(Code::NotFound)
    );
    assert_eq!(users(&env).await, 0);

    // A refused record consumes nothing: put back, the code redeems.
    let _: () = redis.set(&key, &genuine).await.expect("restore the record");
    let created = redeem(&env, &code, &app_id)
        .await
        .expect("the genuine record");
    assert!(!created.user_id.is_empty());
    let external_ids = env
        .database()
        .await
        .query("SELECT external_id FROM users", &[])
        .await
        .expect("read users");
    let external_ids: Vec<String> = external_ids.iter().map(|row| row.get(0)).collect();
    assert_eq!(external_ids, ["customer-1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_genuine_record_copied_under_another_code_is_refused() {
    record_logs();
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let code = env.mint(&api_key, "customer-1").await;
    let hash = AuthCode::parse(&code).expect("a minted code parses").hash();
    let mut redis = redis().await;
    let genuine: Vec<u8> = redis
        .get(redis_key(&env.redis_key_prefix, app(&app_id), &hash))
        .await
        .expect("the minted record");

    let made_up = AuthCode::generate();
    let _: () = redis
        .set(
            redis_key(&env.redis_key_prefix, app(&app_id), &made_up.hash()),
            genuine,
        )
        .await
        .expect("copy the record");
    assert_eq!(
        redeem(&env, made_up.expose(), &app_id).await.err(),
        Some(Code::NotFound)
    );
    assert!(
        redeem(&env, &code, &app_id).await.is_ok(),
        "the real code still redeems"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_sealed_with_the_previous_key_redeem_while_it_is_held() {
    record_logs();
    let old = RecordKeys::new(OLD_KEY, None).expect("a key");
    let rotating = RecordKeys::new(NEW_KEY, Some(OLD_KEY)).expect("keys");
    let rotated = RecordKeys::new(NEW_KEY, None).expect("a key");

    // Registration already holds the new key and the old one; authcode
    // still seals with the old one: its codes redeem.
    let env = TestEnv::start_with(TestOptions {
        record_keys: (old.clone(), rotating),
        ..Default::default()
    })
    .await;
    let (app_id, api_key) = env.app_with_key().await;
    let code = env.mint(&api_key, "during-rotation").await;
    assert!(redeem(&env, &code, &app_id).await.is_ok());
    drop(env);

    // Once the previous key is dropped, what it sealed is refused.
    let env = TestEnv::start_with(TestOptions {
        record_keys: (old, rotated),
        ..Default::default()
    })
    .await;
    let (app_id, api_key) = env.app_with_key().await;
    let code = env.mint(&api_key, "after-rotation").await;
    assert_eq!(
        redeem(&env, &code, &app_id).await.err(),
        Some(Code::NotFound)
    );
}
