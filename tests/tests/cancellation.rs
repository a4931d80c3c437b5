//! A caller that gives up: a `CreateUser` cancelled while its writes wait
//! writes nothing, does not consume the code, and leaves no pooled
//! connection inside a transaction for later calls to inherit. A new user
//! is written by one statement that commits on its own, a restoration by a
//! transaction: both are cancelled here.

use std::time::{Duration, Instant};

use devicelink_e2e::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_redemption_leaves_nothing_behind() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let code = env.mint(&api_key, "cancelled").await;
    let mut registration = env.registration().await;

    // Creating a user takes a key-share lock on its app: holding the app's
    // row keeps the redemption's one statement waiting, uncommitted.
    let mut db = env.database().await;
    let lock = db.transaction().await.expect("a transaction");
    lock.execute("SELECT id FROM apps FOR UPDATE", &[])
        .await
        .expect("lock the app");
    give_up_on(registration.create_user(create_user_request(&code, &app_id, phone("first")))).await;
    lock.rollback().await.expect("release the app");

    no_connection_stays_in_a_transaction(&env).await;

    // Every pooled connection serves later calls outside any transaction,
    // and the code was not consumed.
    for n in 0..20 {
        let device = format!("other-{n}");
        registration
            .create_user(create_user_request(
                &env.mint(&api_key, &device).await,
                &app_id,
                phone(&device),
            ))
            .await
            .expect("a later redemption");
    }
    let response = registration
        .create_user(create_user_request(&code, &app_id, phone("second")))
        .await
        .expect("the code still works")
        .into_inner();
    assert!(!response.restored, "the cancelled call created no user");
    assert_eq!(
        env.count("SELECT count(*) FROM users WHERE external_id = 'cancelled'")
            .await,
        1
    );
    assert_eq!(
        env.count("SELECT count(*) FROM installs WHERE device_id = 'first'")
            .await,
        0
    );
    assert_eq!(env.count("SELECT count(*) FROM users").await, 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_restoration_leaves_nothing_behind() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    env.link(&app_id, &api_key, "restored", phone("home")).await;
    let code = env.mint(&api_key, "restored").await;
    let mut registration = env.registration().await;

    // A restoration locks its user's row: holding it keeps the redemption
    // waiting inside its transaction.
    let mut db = env.database().await;
    let lock = db.transaction().await.expect("a transaction");
    lock.execute(
        "SELECT id FROM users WHERE external_id = 'restored' FOR UPDATE",
        &[],
    )
    .await
    .expect("lock the user");
    give_up_on(registration.create_user(create_user_request(&code, &app_id, phone("away")))).await;
    lock.rollback().await.expect("release the user");
    no_connection_stays_in_a_transaction(&env).await;

    let response = registration
        .create_user(create_user_request(&code, &app_id, phone("again")))
        .await
        .expect("the code still works")
        .into_inner();
    assert!(response.restored);
    assert_eq!(
        env.count("SELECT count(*) FROM installs WHERE device_id = 'away'")
            .await,
        0,
        "the cancelled call bound no install"
    );
    assert_eq!(
        env.count("SELECT count(*) FROM installs WHERE state = 'active'")
            .await,
        1
    );
}

/// Gives up on a call that must still be waiting (on a lock) after half a
/// second, then leaves the server a moment to drop it.
async fn give_up_on<T>(call: impl Future<Output = T>) {
    assert!(
        tokio::time::timeout(Duration::from_millis(500), call)
            .await
            .is_err(),
        "the redemption waits for the lock"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// Waits until no connection of the test's database is inside a
/// transaction: whatever an abandoned transaction wrote must never commit.
async fn no_connection_stays_in_a_transaction(env: &TestEnv) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while env.count("SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' AND datname = current_database()").await > 0 {
        assert!(Instant::now() < deadline, "a connection stays inside a transaction");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
