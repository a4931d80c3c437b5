//! Network partitions: a store that stops answering without closing its
//! connections (a frozen host, a failover behind a load balancer). The
//! services reach the stores through proxies the test pauses: bytes are
//! held both ways and every socket stays open, so only the services' own
//! deadlines can notice.
//!
//! What must hold: calls fail with UNAVAILABLE within the store deadline and
//! none hangs; health reports NOT_SERVING and comes back by itself; calls
//! the client gave up on leave nothing behind that breaks the calls after
//! the partition heals; a replica cut off from Postgres stops answering from
//! its status cache within the bound the README states; watch streams catch
//! up (or end with UNAVAILABLE) once it heals.
//!
//! Each test prints its figures (`partition figures: ...`); run with
//! `--nocapture` to read them.

use std::time::{Duration, Instant};

use devicelink_e2e::*;
use devicelink_shared::pb;
use devicelink_shared::stores::STORE_TIMEOUT;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The longest a call may take to fail during a partition: the store
/// deadline and some slack for a loaded machine. Far below the test's own
/// guard against a hang ([`HANG`]).
const FAIL_WITHIN: Duration = STORE_TIMEOUT.saturating_add(Duration::from_millis(1500));
/// A call that has not returned after this is hung.
const HANG: Duration = Duration::from_secs(15);
/// The README's bound: a replica never answers `GetInstallStatus` from its
/// cache more than this after its change listener last proved alive.
const STALE_BOUND: Duration = Duration::from_secs(2);
/// How long a partition lasts in these tests: well past every deadline.
const PARTITION: Duration = Duration::from_secs(5);

type Registration = pb::registration_service_client::RegistrationServiceClient<Channel>;

/// A session on the test's database, held for the whole test: a test run
/// of an older harness, sweeping databases it thinks stale, cannot drop a
/// database someone is connected to, and a partition can leave the services
/// with no connection to it for a while.
async fn pin_database(env: &TestEnv) -> tokio_postgres::Client {
    env.database().await
}

fn with_proxies() -> TestOptions {
    TestOptions {
        through_proxies: true,
        ..Default::default()
    }
}

/// `call`'s outcome and how long it took, failing the test if it hangs.
async fn timed<T>(
    call: impl Future<Output = Result<T, tonic::Status>>,
) -> (Result<T, tonic::Status>, Duration) {
    let started = Instant::now();
    let outcome = tokio::time::timeout(HANG, call)
        .await
        .unwrap_or_else(|_| panic!("a call hung for {HANG:?}"));
    (outcome, started.elapsed())
}

/// Asserts a call failed with UNAVAILABLE within [`FAIL_WITHIN`]; returns
/// how long it took.
fn failed_fast<T: std::fmt::Debug>(
    what: &str,
    (outcome, took): (Result<T, tonic::Status>, Duration),
) -> Duration {
    let status = outcome.expect_err(what);
    assert_eq!(status.code(), Code::Unavailable, "{what}: {status:?}");
    assert!(took < FAIL_WITHIN, "{what} took {took:?} to fail");
    took
}

async fn health(channel: Channel) -> ServingStatus {
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health check")
        .into_inner();
    ServingStatus::try_from(response.status).expect("a known status")
}

/// Polls registration replica `index`'s health until it reports `wanted`;
/// returns how long that took (at most `within`).
async fn await_health(
    env: &TestEnv,
    index: usize,
    wanted: ServingStatus,
    within: Duration,
) -> Duration {
    let channel = connect(env.registration_addrs[index]).await;
    let started = Instant::now();
    while health(channel.clone()).await != wanted {
        assert!(
            started.elapsed() < within,
            "replica {index} did not report {wanted:?} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// Fires `count` status reads and redemptions at `registration` and drops
/// each after `after`, as a client that gives up would.
async fn give_up_on_calls(
    registration: &Registration,
    app_id: &str,
    codes: &[String],
    install_token: &str,
    after: Duration,
) {
    let mut abandoned = Vec::new();
    for code in codes {
        let mut client = registration.clone();
        let request = create_user_request(code, app_id, phone("abandoned"));
        abandoned.push(tokio::spawn(async move {
            let _ = tokio::time::timeout(after, client.create_user(request)).await;
        }));
        let mut client = registration.clone();
        let token = install_token.to_owned();
        abandoned.push(tokio::spawn(async move {
            let _ = tokio::time::timeout(after, status_of_token(&mut client, &token)).await;
        }));
    }
    for call in abandoned {
        call.await.expect("the abandoned call's task");
    }
}

/// Opens as many pooled connections as registration's pool holds (eight
/// in tests), by redeeming codes at once, so that the calls of a partition
/// find them there.
async fn fill_the_pool(env: &TestEnv, app_id: &str, api_key: &str) {
    let mut codes = Vec::new();
    for user in 0..16 {
        codes.push((user, env.mint(api_key, &format!("pool-{user}")).await));
    }
    let registration = env.registration().await;
    let redemptions = codes.into_iter().map(|(user, code)| {
        let mut client = registration.clone();
        let request = create_user_request(&code, app_id, phone(&format!("pool-{user}")));
        // A warm-up, not a claim: on a busy machine opening eight
        // connections at once can outlast the connect timeout, so each
        // redemption is retried until it lands.
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while let Err(status) = client.create_user(request.clone()).await {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(
                    Instant::now() < deadline,
                    "the pool never filled: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    });
    for redemption in futures_util::future::join_all(redemptions).await {
        redemption.expect("the redemption's task");
    }
}

/// After a partition heals: every one of many calls succeeds at the first
/// try, sequential and concurrent (as many as the pool holds).
async fn every_call_succeeds(registration: &Registration, install_token: &str) {
    for _ in 0..20 {
        let mut client = registration.clone();
        let (outcome, took) = timed(status_of_token(&mut client, install_token)).await;
        outcome.expect("a status read after the partition healed");
        assert!(
            took < FAIL_WITHIN,
            "a read after the partition took {took:?}"
        );
    }
    let concurrent = (0..8).map(|_| {
        let mut client = registration.clone();
        let token = install_token.to_owned();
        tokio::spawn(async move { timed(status_of_token(&mut client, &token)).await })
    });
    for call in futures_util::future::join_all(concurrent).await {
        let (outcome, _) = call.expect("the call's task");
        outcome.expect("a concurrent read after the partition healed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_partition_fails_calls_fast_and_heals_by_itself() {
    let env = TestEnv::start_with(with_proxies()).await;
    let _pinned = pin_database(&env).await;
    let (app_id, api_key) = env.app_with_key().await;
    let linked = env.link(&app_id, &api_key, "u", phone("a")).await;
    let token = linked.install_token.clone();
    let mut codes = Vec::new();
    for _ in 0..6 {
        codes.push(env.mint(&api_key, "u").await);
    }
    let registration = env.registration().await;
    await_health(&env, 0, ServingStatus::Serving, Duration::from_secs(10)).await;
    fill_the_pool(&env, &app_id, &api_key).await;
    let postgres = env.postgres_proxy.as_ref().expect("a Postgres proxy");

    postgres.pause();
    let partitioned_at = Instant::now();
    // Clients that give up mid-call, as many as the pool holds, each on a
    // pooled connection whose statement is stuck in the partition.
    give_up_on_calls(
        &registration,
        &app_id,
        &codes[2..],
        &token,
        Duration::from_millis(300),
    )
    .await;
    let mut slowest_failure = Duration::ZERO;
    // Reads and writes, several at once; a read may still be answered from
    // the cache, but only within the bound.
    let redemptions = codes[..2].iter().map(|code| {
        let mut client = registration.clone();
        let request = create_user_request(code, &app_id, phone("b"));
        tokio::spawn(async move { timed(client.create_user(request)).await })
    });
    for outcome in futures_util::future::join_all(redemptions).await {
        let took = failed_fast("a redemption during the partition", outcome.expect("task"));
        slowest_failure = slowest_failure.max(took);
    }
    loop {
        let mut client = registration.clone();
        let outcome = timed(status_of_token(&mut client, &token)).await;
        if outcome.0.is_ok() {
            assert!(
                partitioned_at.elapsed() < STALE_BOUND,
                "answered from the cache {:?} into the partition",
                partitioned_at.elapsed()
            );
            continue;
        }
        slowest_failure = slowest_failure.max(failed_fast("a read during the partition", outcome));
        break;
    }
    let not_serving_after = partitioned_at.elapsed()
        + await_health(&env, 0, ServingStatus::NotServing, Duration::from_secs(5)).await;
    let mut client = registration.clone();
    let took = failed_fast(
        "a read after the abandoned calls",
        timed(status_of_token(&mut client, &token)).await,
    );
    slowest_failure = slowest_failure.max(took);
    tokio::time::sleep(PARTITION.saturating_sub(partitioned_at.elapsed())).await;

    postgres.resume();
    // The replica finds out by itself that Postgres is back; from then on
    // nothing the partition left behind may fail a call.
    let serving_after =
        await_health(&env, 0, ServingStatus::Serving, Duration::from_secs(10)).await;
    every_call_succeeds(&registration, &token).await;
    let code = env.mint(&api_key, "u").await;
    let mut client = registration.clone();
    client
        .create_user(create_user_request(&code, &app_id, phone("c")))
        .await
        .expect("a redemption after the partition healed");
    println!(
        "partition figures: postgres: slowest failing call {slowest_failure:?}, \
         NOT_SERVING {not_serving_after:?} into the partition, SERVING {serving_after:?} after it healed"
    );
}

/// `DATABASE_CALL_TIMEOUT_MS` is the deadline calls fail at: shorter than the
/// default, a redemption during a partition fails sooner than the default
/// deadline could, and not before the configured one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_call_timeout_is_the_deadline_calls_fail_at() {
    let call_timeout = Duration::from_millis(600);
    let env = TestEnv::start_with(TestOptions {
        database_call_timeout: call_timeout,
        ..with_proxies()
    })
    .await;
    let _pinned = pin_database(&env).await;
    let (app_id, api_key) = env.app_with_key().await;
    let code = env.mint(&api_key, "u").await;
    let registration = env.registration().await;
    await_health(&env, 0, ServingStatus::Serving, Duration::from_secs(10)).await;
    let postgres = env.postgres_proxy.as_ref().expect("a Postgres proxy");

    postgres.pause();
    let mut client = registration.clone();
    let (outcome, took) =
        timed(client.create_user(create_user_request(&code, &app_id, phone("a")))).await;
    postgres.resume();

    let status = outcome.expect_err("a redemption during the partition");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // One deadline, not one per store call the request would make; at
    // most a connection attempt (0.8 s) instead when the pool had no idle
    // connection, and slack for a loaded machine.
    assert!(
        took >= call_timeout && took < call_timeout + Duration::from_millis(900),
        "failed after {took:?}, configured deadline {call_timeout:?}"
    );
    println!("partition figures: configured deadline {call_timeout:?}, failed after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_replica_stops_trusting_its_cache_within_the_bound() {
    // Replica 0 reaches Postgres through the proxy; replica 1 directly, so
    // a takeover can commit through it while replica 0 is cut off.
    let env = TestEnv::start_with(TestOptions {
        registration_replicas: 2,
        direct_replicas: 1,
        ..with_proxies()
    })
    .await;
    let _pinned = pin_database(&env).await;
    let (app_id, api_key) = env.app_with_key().await;
    let linked = env.link(&app_id, &api_key, "u", phone("a")).await;
    let token = linked.install_token.clone();
    let takeover_code = env.mint(&api_key, "u").await;
    await_health(&env, 0, ServingStatus::Serving, Duration::from_secs(10)).await;
    let replica0 = env.registration_replica(0).await;
    let mut replica1 = env.registration_replica(1).await;
    let (mut watch, current) = env.watch(&token).await;
    assert_eq!(state(&current), ACTIVE);
    // Fill replica 0's cache.
    for _ in 0..5 {
        let mut client = replica0.clone();
        let status = status_of_token(&mut client, &token).await.expect("status");
        assert_eq!(state(&status), ACTIVE);
    }

    let postgres = env.postgres_proxy.as_ref().expect("a Postgres proxy");
    postgres.pause();
    let partitioned_at = Instant::now();
    // Reads on replica 0 throughout, each recorded with when it returned.
    let reader = {
        let replica0 = replica0.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let mut answers = Vec::new();
            while partitioned_at.elapsed() < PARTITION {
                let mut client = replica0.clone();
                let (outcome, took) = timed(status_of_token(&mut client, &token)).await;
                answers.push((partitioned_at.elapsed(), took, outcome));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            answers
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    replica1
        .create_user(create_user_request(&takeover_code, &app_id, phone("b")))
        .await
        .expect("the takeover through replica 1");
    let committed_at = partitioned_at.elapsed();
    let answers = reader.await.expect("the reader");

    // The listener's last sign of life was before the partition began, so
    // every answer after the takeover committed that still says ACTIVE is
    // stale, and must have come within the bound of the partition's start.
    let mut last_stale = None;
    let mut stale_answers = 0;
    let mut slowest_failure = Duration::ZERO;
    for (returned_at, took, outcome) in &answers {
        match outcome {
            Ok(status) if state(status) == ACTIVE && *returned_at > committed_at => {
                stale_answers += 1;
                last_stale = Some(*returned_at);
                assert!(
                    *returned_at <= STALE_BOUND,
                    "replica 0 answered ACTIVE from its cache {returned_at:?} into the \
                     partition, after the takeover committed at {committed_at:?}"
                );
            }
            Ok(_) => {}
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(*took < FAIL_WITHIN, "a read took {took:?} to fail");
                slowest_failure = slowest_failure.max(*took);
            }
        }
    }
    assert!(
        answers.iter().any(|(_, _, outcome)| outcome.is_err()),
        "replica 0 kept answering through a partition of {PARTITION:?}: {answers:?}"
    );

    postgres.resume();
    let healed_at = Instant::now();
    // The watch stream reports the takeover, or ends with UNAVAILABLE.
    match tokio::time::timeout(Duration::from_secs(10), watch.message()).await {
        Ok(Ok(Some(message))) => {
            assert_eq!(state_of(&message.status), SUPERSEDED, "the watch caught up");
        }
        Ok(Err(status)) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        Ok(Ok(None)) => panic!("the watch stream ended without a status"),
        Err(_) => panic!("the watch stream said nothing for 10 s after the partition healed"),
    }
    let watch_caught_up = healed_at.elapsed();
    // Replica 0 comes back by itself and answers the new status.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut client = replica0.clone();
        if let Ok(status) = status_of_token(&mut client, &token).await {
            assert_eq!(
                state(&status),
                SUPERSEDED,
                "a stale status after the partition"
            );
            break;
        }
        assert!(Instant::now() < deadline, "replica 0 did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    await_health(&env, 0, ServingStatus::Serving, Duration::from_secs(10)).await;
    println!(
        "partition figures: cache: takeover committed {committed_at:?} into the partition; \
         {stale_answers} stale ACTIVE answers, the last {last_stale:?} into it (bound {STALE_BOUND:?}); \
         slowest failing read {slowest_failure:?}; watch caught up {watch_caught_up:?} after it healed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_partition_fails_calls_fast_and_heals_by_itself() {
    let env = TestEnv::start_with(with_proxies()).await;
    let _pinned = pin_database(&env).await;
    let (app_id, api_key) = env.app_with_key().await;
    let linked = env.link(&app_id, &api_key, "u", phone("a")).await;
    let token = linked.install_token.clone();
    let mut codes = Vec::new();
    for _ in 0..6 {
        codes.push(env.mint(&api_key, "u").await);
    }
    let registration = env.registration().await;
    let authcode = env.authcode().await;
    let redis = env.redis_proxy.as_ref().expect("a Redis proxy");

    redis.pause();
    let mut slowest_failure = Duration::ZERO;
    let mint = |mut client: pb::auth_code_service_client::AuthCodeServiceClient<Channel>| {
        let request = authorized(
            pb::MintAuthCodeRequest {
                external_id: "u".into(),
                app_id: String::new(),
                ..Default::default()
            },
            &api_key,
        );
        async move { client.mint_auth_code(request).await }
    };
    let took = failed_fast(
        "a mint during the partition",
        timed(mint(authcode.clone())).await,
    );
    slowest_failure = slowest_failure.max(took);
    let mut client = registration.clone();
    let took = failed_fast(
        "a redemption during the partition",
        timed(client.create_user(create_user_request(&codes[0], &app_id, phone("b")))).await,
    );
    slowest_failure = slowest_failure.max(took);
    give_up_on_calls(
        &registration,
        &app_id,
        &codes[1..5],
        &token,
        Duration::from_millis(300),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    redis.resume();
    every_call_succeeds(&registration, &token).await;
    for _ in 0..10 {
        let (outcome, took) = timed(mint(authcode.clone())).await;
        outcome.expect("a mint after the partition healed");
        assert!(
            took < FAIL_WITHIN,
            "a mint after the partition took {took:?}"
        );
    }
    let mut client = registration.clone();
    client
        .create_user(create_user_request(&codes[5], &app_id, phone("c")))
        .await
        .expect("a redemption after the partition healed");
    println!("partition figures: redis: slowest failing call {slowest_failure:?}");
}
