//! Store outages: with Redis or Postgres gone, calls fail fast with
//! UNAVAILABLE, nothing is consumed or half-written (Postgres, read
//! directly, holds nothing of a failed call once the stores are back), and
//! the services recover by themselves when the store comes back. The outage is real: the
//! services reach the stores through proxies the test cuts.

use std::time::{Duration, Instant};

use devicelink_e2e::rows::{RedemptionCounts, redemption_counts, redemption_rows};
use devicelink_e2e::*;
use devicelink_shared::pb;
use tonic::Code;

/// Generous against a loaded CI machine; the services aim for one second.
const FAIL_FAST: Duration = Duration::from_millis(1500);

/// How long the tests wait, once a service answers again, before checking
/// that a call that failed during the outage left nothing: long enough for
/// a write the service had deferred (queued, retried in the background) to
/// land, so that the check would see it.
const SETTLE: Duration = Duration::from_secs(2);

fn with_proxies() -> TestOptions {
    TestOptions {
        through_proxies: true,
        ..Default::default()
    }
}

/// Retries `call` until it succeeds, for at most ten seconds.
async fn eventually<T, F, Fut>(mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match call().await {
            Ok(value) => return value,
            Err(status) if Instant::now() < deadline => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("the service did not recover: {status:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_means_unavailable_then_recovery() {
    let env = TestEnv::start_with(with_proxies()).await;
    let (app_id, api_key) = env.app_with_key().await;
    let code = env.mint(&api_key, "u").await;
    let redis = env.redis_proxy.as_ref().expect("a Redis proxy");
    let mut authcode = env.authcode().await;
    let mut registration = env.registration().await;

    redis.cut();
    let started = Instant::now();
    let status = authcode
        .mint_auth_code(authorized(
            pb::MintAuthCodeRequest {
                external_id: "u".into(),
                app_id: String::new(),
                ..Default::default()
            },
            &api_key,
        ))
        .await
        .expect_err("Redis is down");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        started.elapsed() < FAIL_FAST,
        "mint took {:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let status = registration
        .create_user(create_user_request(&code, &app_id, phone("p")))
        .await
        .expect_err("Redis is down");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        started.elapsed() < FAIL_FAST,
        "redemption took {:?}",
        started.elapsed()
    );
    assert!(!status.message().contains(&code));

    redis.restore();
    eventually(|| {
        let mut authcode = authcode.clone();
        let request = authorized(
            pb::MintAuthCodeRequest {
                external_id: "u".into(),
                app_id: String::new(),
                ..Default::default()
            },
            &api_key,
        );
        async move { authcode.mint_auth_code(request).await }
    })
    .await;
    // The stores are back and the failed redemption has not been retried:
    // it must have left nothing, not even later.
    tokio::time::sleep(SETTLE).await;
    let db = env.database().await;
    assert_eq!(
        redemption_counts(&db, &code, "u").await,
        RedemptionCounts {
            users: 0,
            installs: 0,
            redeemed_codes: 0
        },
        "the redemption that failed wrote something"
    );
    let rows = redemption_rows(&db).await;
    assert!(rows.values().all(Vec::is_empty), "{rows:?}");

    let created = eventually(|| {
        let mut registration = registration.clone();
        let request = create_user_request(&code, &app_id, phone("p"));
        async move { registration.create_user(request).await }
    })
    .await;
    assert_eq!(
        state_of(&created.into_inner().status),
        ACTIVE,
        "the code survived the outage"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_means_unavailable_then_recovery() {
    let env = TestEnv::start_with(with_proxies()).await;
    let (app_id, api_key) = env.app_with_key().await;
    let first = env
        .registration()
        .await
        .create_user(create_user_request(
            &env.mint(&api_key, "u").await,
            &app_id,
            phone("a"),
        ))
        .await
        .expect("before the outage")
        .into_inner();
    let code = env.mint(&api_key, "u").await;
    let postgres = env.postgres_proxy.as_ref().expect("a Postgres proxy");
    let mut registration = env.registration().await;
    // The test reads Postgres directly, not through the proxy it cuts.
    let db = env.database().await;
    let before_outage = redemption_rows(&db).await;

    postgres.cut();
    let started = Instant::now();
    let status = registration
        .create_user(create_user_request(&code, &app_id, phone("b")))
        .await
        .expect_err("Postgres is down");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        started.elapsed() < FAIL_FAST,
        "redemption took {:?}",
        started.elapsed()
    );
    let status = registration
        .get_install_status(authorized(
            pb::GetInstallStatusRequest {},
            &first.install_token,
        ))
        .await
        .expect_err("Postgres is down");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    postgres.restore();
    let first_status = eventually(|| {
        let mut registration = registration.clone();
        let request = authorized(pb::GetInstallStatusRequest {}, &first.install_token);
        async move { registration.get_install_status(request).await }
    })
    .await
    .into_inner()
    .status;
    assert_eq!(state_of(&first_status), ACTIVE);
    // Postgres is back and the failed redemption has not been retried: it
    // must have left nothing, not even later.
    tokio::time::sleep(SETTLE).await;
    assert_eq!(
        redemption_counts(&db, &code, "u").await,
        RedemptionCounts {
            users: 1,
            installs: 1,
            redeemed_codes: 0
        },
        "the redemption that failed wrote something"
    );
    assert_eq!(redemption_rows(&db).await, before_outage);

    let second = eventually(|| {
        let mut registration = registration.clone();
        let request = create_user_request(&code, &app_id, phone("b"));
        async move { registration.create_user(request).await }
    })
    .await
    .into_inner();
    assert!(second.restored);
    assert_eq!(state_of(&second.status), ACTIVE);
    let first_status = registration
        .get_install_status(authorized(
            pb::GetInstallStatusRequest {},
            &first.install_token,
        ))
        .await
        .expect("recovered")
        .into_inner()
        .status;
    assert_eq!(state_of(&first_status), SUPERSEDED);
}

/// The errors an outage gives are told from those a bug gives: a
/// statement whose parameters or columns disagree with the code fails the
/// same way on every retry, so it is INTERNAL, not UNAVAILABLE (which asks
/// clients to retry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_at_odds_with_its_code_is_a_bug_and_a_lost_connection_an_outage() {
    use devicelink_e2e::env::{connect_postgres, create_database};
    use devicelink_shared::stores::is_unreachable;
    let url = create_database().await;
    let client = connect_postgres(&url).await.expect("connect");
    let wrong_count = client
        .query("SELECT $1::int", &[])
        .await
        .expect_err("one parameter short");
    assert!(!is_unreachable(&wrong_count), "{wrong_count}");
    let wrong_type = client
        .query_one("SELECT 1::int8", &[])
        .await
        .expect("a row")
        .try_get::<_, String>(0)
        .expect_err("an int8 read as text");
    assert!(!is_unreachable(&wrong_type), "{wrong_type}");
    let no_row = client
        .query_one("SELECT 1 WHERE false", &[])
        .await
        .expect_err("no row");
    assert!(!is_unreachable(&no_row), "{no_row}");

    let other = connect_postgres(&url).await.expect("connect");
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("a pid")
        .get(0);
    other
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .expect("terminate");
    let gone = client
        .query_one("SELECT 1", &[])
        .await
        .expect_err("its connection is gone");
    assert!(is_unreachable(&gone), "{gone}");
}
