//! A caller that gives up. A `CreateUser` cancelled while its writes wait
//! on a lock writes nothing, does not consume the code, and leaves no
//! pooled connection inside a transaction for later calls to inherit. A new
//! user is written by one statement that commits on its own, a restoration
//! by a transaction of two round trips: each is cancelled here while
//! Postgres shows it waiting on a lock the test holds. A restoration given
//! up in its second round trip, when its `COMMIT` was already sent, may
//! still commit: the retry from the same device gets the same answer.

use devicelink_e2e::pg_activity::{
    await_backend_gone, await_client_side_closed, await_one_lock_waiter,
};
use devicelink_e2e::*;
use devicelink_registration::store::redeem_sql;
use devicelink_shared::auth_code::AuthCode;
use devicelink_shared::pb;
use tokio::task::JoinHandle;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_redemption_leaves_nothing_behind() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let code = env.mint(&api_key, "cancelled").await;
    let mut registration = env.registration().await;
    let watcher = env.database().await;

    // Creating a user takes a key-share lock on its app: holding the app's
    // row keeps the redemption's one statement waiting, uncommitted.
    let mut db = env.database().await;
    let lock = db.transaction().await.expect("a transaction");
    lock.execute("SELECT id FROM apps FOR UPDATE", &[])
        .await
        .expect("lock the app");
    let call = start_create_user(&registration, &code, &app_id, "first");
    let waiter = await_one_lock_waiter(&watcher).await;
    assert!(
        waiter.runs(redeem_sql::CREATE_USER),
        "the new user's statement waits: {waiter:?}"
    );
    call.abort();
    // The service cancels the statement in Postgres: its backend goes while
    // the lock is still held, so nothing can run once the lock is free.
    await_backend_gone(&watcher, waiter.pid).await;
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
    let watcher = env.database().await;

    // A restoration locks its user's row in its first round trip: holding
    // it keeps the redemption waiting inside its transaction, before its
    // writes and its `COMMIT` are sent.
    let mut db = env.database().await;
    let lock = db.transaction().await.expect("a transaction");
    lock.execute(
        "SELECT id FROM users WHERE external_id = 'restored' FOR UPDATE",
        &[],
    )
    .await
    .expect("lock the user");
    let call = start_create_user(&registration, &code, &app_id, "away");
    let waiter = await_one_lock_waiter(&watcher).await;
    assert!(
        waiter.runs(redeem_sql::UPSERT_USER),
        "the restoration waits in its first round trip: {waiter:?}"
    );
    call.abort();
    // The service closes the connection, which is the rollback: Postgres
    // notices only once the lock is free, and then has no `COMMIT` to run.
    await_client_side_closed(waiter.client_port).await;
    lock.rollback().await.expect("release the user");
    await_backend_gone(&watcher, waiter.pid).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restoration_cancelled_after_sending_its_commit_writes_nothing_and_its_retry_is_answered_alike()
 {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    env.link(&app_id, &api_key, "restored", phone("home")).await;
    let code = env.mint(&api_key, "restored").await;
    let code_hash = AuthCode::parse(&code).expect("a code").hash();
    let mut registration = env.registration().await;
    let watcher = env.database().await;

    // The test claims the code in a transaction of its own, left open: the
    // restoration's claim, in its second round trip with `COMMIT` pipelined
    // behind it, waits for that transaction.
    let mut db = env.database().await;
    let blocker = db.transaction().await.expect("a transaction");
    blocker
        .execute(
            "INSERT INTO redeemed_codes (code_hash, app_id, device_id, token_nonce)
             VALUES ($1, $2::text::uuid, 'blocker', $3)",
            &[
                &code_hash.as_bytes().as_slice(),
                &app_id,
                &[0u8; 16].as_slice(),
            ],
        )
        .await
        .expect("claim the code, uncommitted");
    let call = start_create_user(&registration, &code, &app_id, "away");
    let waiter = await_one_lock_waiter(&watcher).await;
    assert!(
        waiter.runs(redeem_sql::INSERT_INSTALL),
        "the restoration waits in its second round trip: {waiter:?}"
    );
    call.abort();
    // The service cancels the waiting statement before it closes its side:
    // the `COMMIT` pipelined behind it then ends a failed transaction.
    await_client_side_closed(waiter.client_port).await;
    blocker.rollback().await.expect("release the claim");
    await_backend_gone(&watcher, waiter.pid).await;
    no_connection_stays_in_a_transaction(&env).await;
    assert_eq!(
        env.count("SELECT count(*) FROM installs WHERE device_id = 'away'")
            .await,
        0,
        "the abandoned restoration wrote nothing, its COMMIT already sent"
    );

    // The code is still live; the device's retry redeems it, and a retry of
    // that is answered alike.
    let retry = redeem(&mut registration, &code, &app_id, "away").await;
    let again = redeem(&mut registration, &code, &app_id, "away").await;
    assert!(retry.restored);
    assert_eq!(
        (&retry.install_id, &retry.install_token),
        (&again.install_id, &again.install_token),
        "the same answer on every retry"
    );
    let stored: String = watcher
        .query_one(
            "SELECT id::text FROM installs WHERE device_id = 'away'",
            &[],
        )
        .await
        .expect("the install the abandoned call bound")
        .get(0);
    assert_eq!(
        retry.install_id, stored,
        "the retry names the stored install"
    );
    let status = status_of_token(&mut registration, &retry.install_token)
        .await
        .expect("the retry's token is the install's");
    assert_eq!(state(&status), ACTIVE);
    assert_eq!(
        env.count("SELECT count(*) FROM installs WHERE state = 'active'")
            .await,
        1
    );
}

/// Starts a `CreateUser` of `code` on `device_id`; aborting the task is the
/// client giving up (its stream is reset).
fn start_create_user(
    registration: &pb::registration_service_client::RegistrationServiceClient<
        tonic::transport::Channel,
    >,
    code: &str,
    app_id: &str,
    device_id: &str,
) -> JoinHandle<Result<tonic::Response<pb::CreateUserResponse>, tonic::Status>> {
    let mut client = registration.clone();
    let request = create_user_request(code, app_id, phone(device_id));
    tokio::spawn(async move { client.create_user(request).await })
}

/// Redeems `code` on `device_id`, which must succeed.
async fn redeem(
    registration: &mut pb::registration_service_client::RegistrationServiceClient<
        tonic::transport::Channel,
    >,
    code: &str,
    app_id: &str,
    device_id: &str,
) -> pb::CreateUserResponse {
    registration
        .create_user(create_user_request(code, app_id, phone(device_id)))
        .await
        .expect("a redemption")
        .into_inner()
}

/// Waits until no connection of the test's database is inside a
/// transaction: whatever an abandoned transaction wrote must never commit.
async fn no_connection_stays_in_a_transaction(env: &TestEnv) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while env.count("SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' AND datname = current_database()").await > 0 {
        assert!(std::time::Instant::now() < deadline, "a connection stays inside a transaction");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
