//! A caller that gives up: a `CreateUser` cancelled while its transaction
//! is open writes nothing, does not consume the code, and leaves no pooled
//! connection inside a transaction for later calls to inherit.

use std::time::{Duration, Instant};

use devicelink_e2e::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_redemption_leaves_nothing_behind() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let code = env.mint(&api_key, "cancelled").await;
    let mut registration = env.registration().await;

    // Creating a user takes a key-share lock on its app: holding the app's
    // row keeps the redemption waiting with its transaction open.
    let mut db = env.database().await;
    let lock = db.transaction().await.expect("a transaction");
    lock.execute("SELECT id FROM apps FOR UPDATE", &[])
        .await
        .expect("lock the app");
    let call = registration.create_user(create_user_request(&code, &app_id, phone("first")));
    assert!(
        tokio::time::timeout(Duration::from_millis(500), call)
            .await
            .is_err(),
        "the redemption waits for the lock"
    );
    // The client gave up; give the server a moment to drop the call.
    tokio::time::sleep(Duration::from_millis(300)).await;
    lock.rollback().await.expect("release the app");

    // Whatever the abandoned transaction wrote must never commit.
    let deadline = Instant::now() + Duration::from_secs(5);
    while env.count("SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' AND datname = current_database()").await > 0 {
        assert!(Instant::now() < deadline, "a connection stays inside a transaction");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

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
