//! The real `registration-service` binary and signals, as Kubernetes sends
//! them: SIGTERM lets the call in flight finish and exits 0; a second
//! signal exits at once.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use devicelink_e2e::*;
use devicelink_shared::pb;
use tokio::process::{Child, Command};

/// The service binary, built by the cargo running this test: an integration
/// test of another package gets no `CARGO_BIN_EXE_*`, and `cargo test
/// --workspace` does not build other packages' binaries. Cargo holds no
/// build lock while tests run, so this nested build cannot deadlock; when
/// the binary is current it takes a fraction of a second.
fn service_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(build_service_binary).clone()
}

fn build_service_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let target_dir = profile_dir.parent().expect("target/");
    let mut build = std::process::Command::new(env!("CARGO"));
    build.args([
        "build",
        "--package",
        "devicelink-registration",
        "--bin",
        "registration-service",
        "--target-dir",
    ]);
    build.arg(target_dir);
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    let status = build.status().expect("cargo runs");
    assert!(status.success(), "building registration-service failed");
    let binary = profile_dir.join("registration-service");
    assert!(binary.exists(), "{} was not built", binary.display());
    binary
}

/// Starts the binary against `env`'s database and waits until it serves.
async fn start_service(env: &TestEnv) -> (Child, std::net::SocketAddr) {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port");
    let child = Command::new(service_binary())
        .env("DATABASE_URL", &env.database_url)
        .env(
            "REDIS_URL",
            std::env::var("DEVICELINK_TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into()),
        )
        .env("LISTEN_ADDR", addr.to_string())
        .env("DEVICELINK_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("SHUTDOWN_GRACE_SECS", "30")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start registration-service");
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "registration-service did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, addr)
}

fn signal(child: &Child, name: &str) {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Starts a `CreateApp` call that blocks on a lock the test holds on
/// `apps`; returns the call and the transaction holding the lock.
async fn call_held_in_flight(
    addr: std::net::SocketAddr,
    db: &mut tokio_postgres::Client,
) -> (
    tokio::task::JoinHandle<Result<tonic::Response<pb::CreateAppResponse>, tonic::Status>>,
    tokio_postgres::Transaction<'_>,
) {
    let lock = db.transaction().await.expect("a transaction");
    lock.batch_execute("LOCK TABLE apps IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock apps");
    let mut admin = pb::admin_service_client::AdminServiceClient::new(connect(addr).await);
    let call = tokio::spawn(async move {
        admin
            .create_app(authorized(
                pb::CreateAppRequest {
                    name: "in flight".into(),
                },
                ADMIN_TOKEN,
            ))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    (call, lock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_call_in_flight_finish_then_exits_zero() {
    let env = TestEnv::start().await;
    let (mut child, addr) = start_service(&env).await;
    let mut db = env.database().await;
    let (call, lock) = call_held_in_flight(addr, &mut db).await;

    signal(&child, "TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        child.try_wait().expect("status").is_none(),
        "still draining"
    );
    lock.rollback().await.expect("release apps");
    call.await
        .expect("the task ran")
        .expect("the call in flight completes");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits after draining")
        .expect("status");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let env = TestEnv::start().await;
    let (mut child, addr) = start_service(&env).await;
    let mut db = env.database().await;
    let (_call, _lock) = call_held_in_flight(addr, &mut db).await;

    signal(&child, "TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
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
