//! authcode's API-key lookups when Postgres stops answering: through a
//! network partition (a proxy that holds bytes and keeps every socket
//! open), and behind a lock that keeps the lookup waiting inside Postgres.
//!
//! What must hold: a mint whose key must be read from Postgres fails with
//! UNAVAILABLE within the store deadline and never hangs; the abandoned
//! lookup is cancelled in Postgres and its connection retired, never handed
//! to a later call with the statement still queued on it; once Postgres
//! answers again every call succeeds at the first try.
//!
//! Each fresh API key costs one lookup (only keys read before are cached),
//! so every call here that must reach Postgres uses a key not used before.

use std::time::{Duration, Instant};

use devicelink_e2e::credentials::insert_api_key;
use devicelink_e2e::pg_activity::{await_backend_gone, await_one_lock_waiter, lock_waiters};
use devicelink_e2e::*;
use devicelink_shared::api_key::SCOPE_USER_LINK;
use devicelink_shared::pb;
use devicelink_shared::stores::STORE_TIMEOUT;
use tonic::Code;
use tonic::transport::Channel;

/// The longest a mint may take to fail: the store deadline and some slack
/// for a loaded machine.
const FAIL_WITHIN: Duration = STORE_TIMEOUT.saturating_add(Duration::from_millis(1500));
/// A call that has not returned after this is hung.
const HANG: Duration = Duration::from_secs(15);
/// How long the partition lasts: well past the deadline.
const PARTITION: Duration = Duration::from_secs(5);
/// How soon after its call failed or was given up an abandoned lookup
/// must be gone from Postgres: far below the server's own
/// `statement_timeout`, which would end it otherwise.
const CANCELLED_WITHIN: Duration = Duration::from_millis(1500);
/// How many connections authcode's pool holds in tests.
const POOL_SIZE: usize = 8;

type AuthCode = pb::auth_code_service_client::AuthCodeServiceClient<Channel>;

/// `count` new API keys for `app_id`, none used yet. Written straight
/// into the database: more than the ten active keys an app may hold
/// through AdminService.
async fn fresh_keys(env: &TestEnv, app_id: &str, count: usize) -> Vec<String> {
    let mut keys = Vec::new();
    for _ in 0..count {
        keys.push(insert_api_key(env, app_id, &[SCOPE_USER_LINK]).await);
    }
    keys
}

/// A mint with `api_key`, its outcome and how long it took; fails the test
/// if it hangs.
async fn timed_mint(
    mut authcode: AuthCode,
    api_key: String,
) -> (Result<String, tonic::Status>, Duration) {
    let request = authorized(
        pb::MintAuthCodeRequest {
            external_id: "u".into(),
            app_id: String::new(),
            ..Default::default()
        },
        &api_key,
    );
    let started = Instant::now();
    let outcome = tokio::time::timeout(HANG, authcode.mint_auth_code(request))
        .await
        .unwrap_or_else(|_| panic!("a mint hung for {HANG:?}"));
    (
        outcome.map(|response| response.into_inner().auth_code),
        started.elapsed(),
    )
}

/// Asserts a mint failed with UNAVAILABLE within [`FAIL_WITHIN`]; returns
/// how long it took.
fn failed_fast(what: &str, (outcome, took): (Result<String, tonic::Status>, Duration)) -> Duration {
    let status = outcome.expect_err(what);
    assert_eq!(status.code(), Code::Unavailable, "{what}: {status:?}");
    assert!(took < FAIL_WITHIN, "{what} took {took:?} to fail");
    took
}

/// Mints with every key of `keys` at once, each a lookup of its own.
async fn mint_with_each(
    authcode: AuthCode,
    keys: Vec<String>,
) -> Vec<(Result<String, tonic::Status>, Duration)> {
    let mints = keys
        .into_iter()
        .map(|key| tokio::spawn(timed_mint(authcode.clone(), key)));
    futures_util::future::join_all(mints)
        .await
        .into_iter()
        .map(|mint| mint.expect("the mint's task"))
        .collect()
}

/// Mints with `key`, dropping the call after `after`, as a client that
/// gives up would.
async fn give_up_on_mint(authcode: &AuthCode, key: &str, after: Duration) {
    let mut authcode = authcode.clone();
    let request = authorized(
        pb::MintAuthCodeRequest {
            external_id: "u".into(),
            app_id: String::new(),
            ..Default::default()
        },
        key,
    );
    let _ = tokio::time::timeout(after, authcode.mint_auth_code(request)).await;
}

/// A warm-up, not a claim: opens as many pooled connections as the pool
/// holds, so that the partition's lookups find them there and get stuck on
/// them (a new connection would fail at its connect timeout instead). The
/// lookups with `keys`, one per connection, wait together behind a lock on
/// `apps` until each holds a connection of its own.
async fn fill_the_pool(env: &TestEnv, authcode: &AuthCode, keys: &[String]) {
    let watcher = env.database().await;
    let mut db = env.database().await;
    let lock = db.transaction().await.expect("a transaction");
    lock.batch_execute("LOCK TABLE apps IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock the apps");
    let mints = tokio::spawn(mint_with_each(authcode.clone(), keys.to_vec()));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting = lock_waiters(&watcher)
            .await
            .iter()
            .filter(|waiter| waiter.query.contains("FROM api_keys"))
            .count();
        if waiting >= keys.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {waiting} lookups hold a connection"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lock.rollback().await.expect("release the apps");
    for (outcome, _) in mints.await.expect("the warm-up's task") {
        outcome.expect("a mint before the partition");
    }
}

/// Every mint succeeds at the first try and in good time: the keys in
/// `keys` one after another, then as many at once as the pool holds.
fn all_succeeded(what: &str, mints: Vec<(Result<String, tonic::Status>, Duration)>) {
    for (outcome, took) in mints {
        outcome.unwrap_or_else(|status| panic!("{what}: {status:?}"));
        assert!(took < FAIL_WITHIN, "{what} took {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_partition_fails_key_lookups_fast_and_leaves_the_pool_healthy() {
    let env = TestEnv::start_with(TestOptions {
        through_proxies: true,
        ..Default::default()
    })
    .await;
    // Held for the whole test, so that no sweep of stale test databases
    // can drop this one while the services cannot reach it.
    let _pinned = env.database().await;
    let (app_id, _) = env.app_with_key().await;
    let mut keys = fresh_keys(&env, &app_id, 4 * POOL_SIZE).await.into_iter();
    let authcode = env.authcode().await;
    let warm_up: Vec<String> = keys.by_ref().take(POOL_SIZE).collect();
    fill_the_pool(&env, &authcode, &warm_up).await;
    let postgres = env.postgres_proxy.as_ref().expect("a Postgres proxy");

    postgres.pause();
    let partitioned_at = Instant::now();
    // Clients that give up mid-lookup, each on a connection whose statement
    // is stuck in the partition.
    let abandoned: Vec<String> = keys.by_ref().take(POOL_SIZE / 2).collect();
    let giving_up = abandoned
        .iter()
        .map(|key| give_up_on_mint(&authcode, key, Duration::from_millis(300)));
    futures_util::future::join_all(giving_up).await;
    // Lookups that wait out the deadline, several at once.
    let mut slowest_failure = Duration::ZERO;
    let during: Vec<String> = keys.by_ref().take(POOL_SIZE / 2).collect();
    for mint in mint_with_each(authcode.clone(), during.clone()).await {
        slowest_failure = slowest_failure.max(failed_fast("a lookup during the partition", mint));
    }
    let took = failed_fast(
        "a lookup after the abandoned ones",
        timed_mint(authcode.clone(), keys.next().expect("a key")).await,
    );
    slowest_failure = slowest_failure.max(took);
    tokio::time::sleep(PARTITION.saturating_sub(partitioned_at.elapsed())).await;

    postgres.resume();
    // Nothing the partition left behind may fail a call: fresh lookups one
    // after another, then as many at once as the pool holds, then the keys
    // whose lookups failed.
    let mut after = Vec::new();
    for _ in 0..POOL_SIZE / 2 {
        after.push(timed_mint(authcode.clone(), keys.next().expect("a key")).await);
    }
    all_succeeded("a lookup after the partition healed", after);
    let concurrent: Vec<String> = keys.by_ref().take(POOL_SIZE).collect();
    all_succeeded(
        "a concurrent lookup after the partition healed",
        mint_with_each(authcode.clone(), concurrent).await,
    );
    let failed_before: Vec<String> = abandoned.into_iter().chain(during).collect();
    all_succeeded(
        "a key whose lookup failed in the partition",
        mint_with_each(authcode.clone(), failed_before).await,
    );
    println!("partition figures: authcode: slowest failing key lookup {slowest_failure:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_stuck_in_postgres_is_cancelled_not_left_on_a_pooled_connection() {
    let env = TestEnv::start().await;
    let (app_id, _) = env.app_with_key().await;
    let mut keys = fresh_keys(&env, &app_id, 2 + 2 * POOL_SIZE)
        .await
        .into_iter();
    let authcode = env.authcode().await;
    let watcher = env.database().await;

    // The lookup joins `apps`: a lock on the whole table keeps it waiting
    // inside Postgres, the connection open and the statement unanswered.
    let mut db = env.database().await;
    let lock = db.transaction().await.expect("a transaction");
    lock.batch_execute("LOCK TABLE apps IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock the apps");

    // A lookup that runs out of the deadline...
    let timed_out = tokio::spawn(timed_mint(authcode.clone(), keys.next().expect("a key")));
    let waiter = await_one_lock_waiter(&watcher).await;
    assert!(
        waiter.query.contains("FROM api_keys"),
        "the key lookup waits: {waiter:?}"
    );
    let took = failed_fast(
        "a lookup behind the lock",
        timed_out.await.expect("the mint's task"),
    );
    // ... is cancelled in Postgres and its connection closed, while the lock
    // is still held: nothing of it is left to run, or to queue a later
    // call behind it. At once, not when Postgres's own statement_timeout
    // would end it.
    let failed_at = Instant::now();
    await_backend_gone(&watcher, waiter.pid).await;
    let cancelled_after = failed_at.elapsed();
    assert!(
        cancelled_after < CANCELLED_WITHIN,
        "the timed-out lookup ran on {cancelled_after:?} after it failed"
    );

    // A lookup whose client gives up is cancelled as soon as it does, well
    // before the deadline.
    let key = keys.next().expect("a key");
    let given_up_at = Instant::now();
    let giving_up = give_up_on_mint(&authcode, &key, Duration::from_millis(300));
    let (_, waiter) = tokio::join!(giving_up, await_one_lock_waiter(&watcher));
    await_backend_gone(&watcher, waiter.pid).await;
    let gone_after = given_up_at.elapsed();
    assert!(
        gone_after < CANCELLED_WITHIN,
        "the abandoned lookup ran {gone_after:?}"
    );
    lock.rollback().await.expect("release the apps");

    // Every connection the pool hands out answers at once.
    let mut sequential = Vec::new();
    for _ in 0..POOL_SIZE {
        sequential.push(timed_mint(authcode.clone(), keys.next().expect("a key")).await);
    }
    all_succeeded("a lookup after the lock", sequential);
    let concurrent: Vec<String> = keys.collect();
    all_succeeded(
        "a concurrent lookup after the lock",
        mint_with_each(authcode.clone(), concurrent).await,
    );
    println!(
        "partition figures: authcode: a lookup behind a lock failed in {took:?}; \
         it was cancelled {cancelled_after:?} later; an abandoned one was cancelled \
         {gone_after:?} after its client gave up"
    );
}
