//! Redemptions at their edges: a code past its TTL, a device that holds
//! another user, and many devices of one user redeeming at once. Each
//! refusal says why and writes nothing; each race ends with every
//! redemption answered and one active install.

use std::time::{Duration, Instant};

use devicelink_e2e::logs::recorded_logs;
use devicelink_e2e::rows::{RedemptionCounts, redemption_counts, redemption_rows};
use devicelink_e2e::*;
use devicelink_shared::pb;
use tonic::Code;

/// The line `Store::redeem` logs when an attempt collided with a concurrent
/// redemption and is tried again.
const RETRY_LOG_LINE: &str = "redemption collided; retrying";

/// Every test of this binary records the logs: the race test counts the
/// retries they show.
fn record_logs() -> devicelink_e2e::logs::RecordedLogs {
    recorded_logs("info,devicelink_registration::store::redeem=debug,h2=warn,hyper=warn,tower=warn")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_redeems_within_its_ttl_and_is_refused_as_expired_after_it() {
    record_logs();
    const CODE_TTL: Duration = Duration::from_secs(3);
    let env = TestEnv::start_with(TestOptions {
        code_ttl: CODE_TTL,
        ..Default::default()
    })
    .await;
    let (app_id, api_key) = env.app_with_key().await;
    let minted_at = Instant::now();
    let redeemed_in_time = env.mint(&api_key, "on-time").await;
    let redeemed_late = env.mint(&api_key, "late").await;
    let mut registration = env.registration().await;

    let created = registration
        .create_user(create_user_request(&redeemed_in_time, &app_id, phone("p1")))
        .await
        .expect("a code within its TTL")
        .into_inner();
    assert!(
        minted_at.elapsed() < CODE_TTL,
        "the first code was redeemed only after {:?}",
        minted_at.elapsed()
    );
    assert_eq!(state_of(&created.status), ACTIVE);

    tokio::time::sleep_until((minted_at + CODE_TTL + Duration::from_millis(500)).into()).await;
    let status = registration
        .create_user(create_user_request(&redeemed_late, &app_id, phone("p2")))
        .await
        .expect_err("a code past its TTL");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(status.message(), "auth code is unknown or expired");
    assert_eq!(
        redemption_counts(&env.database().await, &redeemed_late, "late").await,
        RedemptionCounts {
            users: 0,
            installs: 0,
            redeemed_codes: 0
        },
        "the expired code wrote something"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restoring_onto_a_device_held_by_another_user_is_refused_and_writes_nothing() {
    record_logs();
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let alice = env
        .link(&app_id, &api_key, "alice", phone("alice-phone"))
        .await;
    env.link(&app_id, &api_key, "bob", phone("bob-phone")).await;
    let bobs_code = env.mint(&api_key, "bob").await;
    let db = env.database().await;
    let before = redemption_rows(&db).await;

    let mut registration = env.registration().await;
    let status = registration
        .create_user(create_user_request(
            &bobs_code,
            &app_id,
            phone("alice-phone"),
        ))
        .await
        .expect_err("bob restored onto alice's device");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("another user"),
        "{}",
        status.message()
    );
    assert_eq!(
        redemption_rows(&db).await,
        before,
        "the refused restoration wrote"
    );
    assert_eq!(
        state(
            &status_of_token(&mut registration, &alice.install_token)
                .await
                .expect("alice")
        ),
        ACTIVE
    );

    // Nothing was claimed: the code still restores bob where it may.
    let restored = registration
        .create_user(create_user_request(
            &bobs_code,
            &app_id,
            phone("bob-new-phone"),
        ))
        .await
        .expect("the code was not consumed")
        .into_inner();
    assert!(restored.restored);
    assert_eq!(state_of(&restored.status), ACTIVE);
}

/// Redeems one code per device for `external_id`, all at once, spread over
/// the replicas; returns the outcomes in device order.
async fn redeem_all_at_once(
    env: &TestEnv,
    app_id: &str,
    api_key: &str,
    external_id: &str,
    devices: &[String],
) -> Vec<Result<pb::CreateUserResponse, tonic::Status>> {
    let mut requests = Vec::new();
    for (index, device) in devices.iter().enumerate() {
        let code = env.mint(api_key, external_id).await;
        let client = env.registration_replica(index).await;
        requests.push((client, create_user_request(&code, app_id, phone(device))));
    }
    // Every request is ready before any is sent, so they meet in Postgres.
    let calls = requests.into_iter().map(|(mut client, request)| {
        tokio::spawn(async move { client.create_user(request).await })
    });
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|joined| {
            joined
                .expect("the call's task")
                .map(tonic::Response::into_inner)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_redemptions_of_one_user_all_succeed_with_one_active_install() {
    const DEVICES_PER_ROUND: usize = 12;
    let logs = record_logs();
    let env = TestEnv::start_with(TestOptions {
        registration_replicas: 2,
        ..Default::default()
    })
    .await;
    let (app_id, api_key) = env.app_with_key().await;
    let retries_before = logs.text().matches(RETRY_LOG_LINE).count();

    // The first round races to create the user; the second races on the
    // user it created.
    let mut outcomes = Vec::new();
    for round in 0..2 {
        let devices: Vec<String> = (0..DEVICES_PER_ROUND)
            .map(|index| format!("phone-{round}-{index}"))
            .collect();
        outcomes.extend(redeem_all_at_once(&env, &app_id, &api_key, "racer", &devices).await);
    }
    // The user row's lock serializes redemptions of one user, so this is
    // usually none: the retry loop is the fallback should they collide
    // anyway. Shown with `--nocapture`, for whoever changes that locking.
    let retries = logs.text().matches(RETRY_LOG_LINE).count() - retries_before;
    eprintln!("{retries} redemption attempts collided and were retried");
    let answers: Vec<pb::CreateUserResponse> = outcomes
        .into_iter()
        .map(|outcome| {
            outcome.unwrap_or_else(|status| {
                panic!("a redemption failed ({retries} attempts were retried): {status:?}")
            })
        })
        .collect();

    // Each redemption of a phone activates it: each took its own epoch, one
    // after another, with none skipped or shared.
    let mut epochs: Vec<u64> = answers
        .iter()
        .map(|answer| answer.status.as_ref().expect("a status").epoch)
        .collect();
    epochs.sort_unstable();
    let expected: Vec<u64> = (1..=answers.len() as u64).collect();
    assert_eq!(epochs, expected, "epochs taken by the redemptions");
    assert_eq!(
        answers.iter().filter(|answer| answer.restored).count(),
        answers.len() - 1,
        "exactly one redemption created the user"
    );

    let db = env.database().await;
    let user_epoch: i64 = db
        .query_one("SELECT epoch FROM users WHERE external_id = 'racer'", &[])
        .await
        .expect("the one user")
        .get(0);
    assert_eq!(user_epoch, answers.len() as i64);
    let installs = db
        .query(
            "SELECT id::text, state, epoch FROM installs ORDER BY epoch",
            &[],
        )
        .await
        .expect("installs");
    assert_eq!(installs.len(), answers.len());
    let active: Vec<(String, i64)> = installs
        .iter()
        .filter(|row| row.get::<_, &str>(1) == "active")
        .map(|row| (row.get(0), row.get(2)))
        .collect();
    let latest = answers
        .iter()
        .max_by_key(|answer| answer.status.as_ref().expect("a status").epoch)
        .expect("answers");
    assert_eq!(
        active,
        [(latest.install_id.clone(), answers.len() as i64)],
        "one active install, the one of the latest epoch"
    );
}
