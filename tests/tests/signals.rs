//! The real `registration-service` binary and signals, as Kubernetes sends
//! them: SIGTERM lets the call in flight finish and exits 0; a call that
//! outlives the grace period is cut and the process exits; a second signal
//! exits at once. A call is known to be in flight when Postgres shows it
//! waiting on a row lock the test holds.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use devicelink_e2e::binaries::service_binary as service_binary_of;
use devicelink_e2e::pg_activity::await_one_lock_waiter;
use devicelink_e2e::*;
use devicelink_registration::store::redeem_sql;
use devicelink_shared::pb;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The service binary (see [`devicelink_e2e::binaries`]).
fn service_binary() -> PathBuf {
    service_binary_of("devicelink-registration", "registration-service")
}

/// Starts the binary against `env`'s database and Redis key space, with
/// `grace_secs` for calls in flight at shutdown, and waits until it serves.
/// It binds port 0 and the address is read from its log: a port picked
/// here and freed for it could be taken by any connection in between.
async fn start_service(env: &TestEnv, grace_secs: u64) -> (Child, std::net::SocketAddr) {
    let mut child = Command::new(service_binary())
        .env("DATABASE_URL", &env.database_url)
        .env(
            "REDIS_URL",
            std::env::var("DEVICELINK_TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into()),
        )
        .env("REDIS_KEY_PREFIX", &env.redis_key_prefix)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("ADMIN_LISTEN_ADDR", "127.0.0.1:0")
        .env("DEVICELINK_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("AUTH_CODE_RECORD_KEY", RECORD_KEY)
        .env("SHUTDOWN_GRACE_SECS", grace_secs.to_string())
        .env("RUST_LOG", "warn,registration_service=info")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start registration-service");
    let stdout = child.stdout.take().expect("the service's piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(Duration::from_secs(20), async {
        let mut log = Vec::new();
        while let Some(line) = lines.next_line().await.expect("read the service's log") {
            if let Some(addr) = listening_addr(&line) {
                return addr;
            }
            log.push(line);
        }
        panic!(
            "registration-service exited before listening:\n{}",
            log.join("\n")
        );
    })
    .await
    .expect("registration-service listens within 20 s");
    // Keep reading, so that the service never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

/// The address in the service's `registration-service listening addr=…`
/// log line.
fn listening_addr(line: &str) -> Option<std::net::SocketAddr> {
    let (_, rest) = line.split_once("registration-service listening")?;
    let (_, addr) = rest.split_once("addr=")?;
    addr.split_whitespace().next()?.parse().ok()
}

fn signal(child: &Child, name: &str) {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

type CreateUserCall =
    tokio::task::JoinHandle<Result<tonic::Response<pb::CreateUserResponse>, tonic::Status>>;

/// A `CreateUser` in flight on the service at `addr`: the test locks its
/// app's row, so the new user's statement waits, and returns once
/// `pg_stat_activity` shows it waiting. Returns the call and the
/// transaction holding the lock.
async fn call_held_in_flight<'a>(
    env: &TestEnv,
    addr: std::net::SocketAddr,
    app_id: &str,
    code: &str,
    db: &'a mut tokio_postgres::Client,
) -> (CreateUserCall, tokio_postgres::Transaction<'a>) {
    let watcher = env.database().await;
    let lock = db.transaction().await.expect("a transaction");
    lock.execute("SELECT id FROM apps FOR UPDATE", &[])
        .await
        .expect("lock the app");
    let mut registration =
        pb::registration_service_client::RegistrationServiceClient::new(connect(addr).await);
    let request = create_user_request(code, app_id, phone("in-flight"));
    let call = tokio::spawn(async move { registration.create_user(request).await });
    let waiter = await_one_lock_waiter(&watcher).await;
    assert!(
        waiter.runs(redeem_sql::CREATE_USER),
        "the redemption waits on the app's row: {waiter:?}"
    );
    (call, lock)
}

/// Waits until the service at `addr`, watched over `health`, reports
/// NOT_SERVING: it received the signal and drains.
async fn await_draining(mut health: tonic::Streaming<tonic_health::pb::HealthCheckResponse>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let update = tokio::time::timeout_at(deadline.into(), health.message())
            .await
            .expect("NOT_SERVING within five seconds")
            .expect("the health stream stays healthy")
            .expect("a health update");
        if update.status == ServingStatus::NotServing as i32 {
            return;
        }
    }
}

/// A health watch on the service at `addr`.
async fn watch_health(
    addr: std::net::SocketAddr,
) -> tonic::Streaming<tonic_health::pb::HealthCheckResponse> {
    HealthClient::new(connect(addr).await)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health watch")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_call_in_flight_finish_then_exits_zero() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let code = env.mint(&api_key, "in-flight").await;
    let (mut child, addr) = start_service(&env, 30).await;
    let health = watch_health(addr).await;
    let mut db = env.database().await;
    let (call, lock) = call_held_in_flight(&env, addr, &app_id, &code, &mut db).await;

    signal(&child, "TERM");
    await_draining(health).await;
    assert!(
        child.try_wait().expect("status").is_none(),
        "still draining"
    );
    lock.rollback().await.expect("release the app");
    let created = call
        .await
        .expect("the task ran")
        .expect("the call in flight completes")
        .into_inner();
    assert_eq!(state_of(&created.status), ACTIVE);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits after draining")
        .expect("status");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_outliving_a_short_grace_period_is_cut_and_the_process_exits() {
    const GRACE: Duration = Duration::from_secs(1);
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let code = env.mint(&api_key, "cut").await;
    let (mut child, addr) = start_service(&env, GRACE.as_secs()).await;
    let mut db = env.database().await;
    let (call, lock) = call_held_in_flight(&env, addr, &app_id, &code, &mut db).await;

    let signalled = Instant::now();
    signal(&child, "TERM");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the process exits once the grace period is over")
        .expect("status");
    assert!(
        signalled.elapsed() >= GRACE,
        "the call in flight was given its grace period: exited after {:?}",
        signalled.elapsed()
    );
    assert_eq!(
        status.code(),
        Some(0),
        "a drain that ran out is still a clean stop"
    );
    let cut = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the client hears at once")
        .expect("the task ran");
    assert!(cut.is_err(), "the call was cut: {cut:?}");

    // The device retries on another replica once the lock is free: the
    // code redeems, once.
    lock.rollback().await.expect("release the app");
    env.registration()
        .await
        .create_user(create_user_request(&code, &app_id, phone("in-flight")))
        .await
        .expect("the retry from the same device is answered");
    assert_eq!(
        env.count("SELECT count(*) FROM installs WHERE device_id = 'in-flight'")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let code = env.mint(&api_key, "in-flight").await;
    let (mut child, addr) = start_service(&env, 30).await;
    let health = watch_health(addr).await;
    let mut db = env.database().await;
    let (_call, _lock) = call_held_in_flight(&env, addr, &app_id, &code, &mut db).await;

    signal(&child, "TERM");
    await_draining(health).await;
    assert!(
        child.try_wait().expect("status").is_none(),
        "draining for up to 30 s"
    );
    signal(&child, "INT");
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("the second signal ends it at once")
        .expect("status");
    assert_eq!(status.code(), Some(130));
}
