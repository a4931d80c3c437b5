//! Redis over TLS with an ACL user: a real `redis-server` listening on TLS
//! only (`tests/src/stores/redis_tls.rs`), its certificates generated for
//! the test, its `default` user off.
//!
//! The whole flow (mint, redeem, status) runs over `rediss://`; a CA that
//! did not sign the server's certificate, or a wrong password, fails the
//! calls with UNAVAILABLE and says why in the logs without the password;
//! files that cannot be used stop the binaries with exit 64 naming their
//! variable.

use std::process::Stdio;
use std::time::Duration;

use devicelink_e2e::binaries::service_binary;
use devicelink_e2e::logs::recorded_logs;
use devicelink_e2e::stores::redis_tls::TlsRedis;
use devicelink_e2e::{
    ADMIN_TOKEN, RECORD_KEY, TestEnv, TestOptions, authorized, phone, status_of_token,
};
use devicelink_shared::config::{RedisServers, RedisSettings};
use devicelink_shared::pb;
use devicelink_shared::stores::RedisConnection;
use tonic::Code;

/// Every test of this binary records its logs, to look for passwords.
fn logs() -> devicelink_e2e::logs::RecordedLogs {
    recorded_logs("info,h2=warn,hyper=warn,tower=warn")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_flow_runs_over_rediss_with_an_acl_user_and_a_client_certificate() {
    let logs = logs();
    // `yes`: the server refuses a client without a certificate of its CA.
    let redis = TlsRedis::start("yes").await;
    // With the default rate limits, so that the ACL user is shown to cover
    // the limiter's commands too (its scripts, the blockers' `PTTL`, the
    // subjects it creates with the write).
    let env = TestEnv::start_with(TestOptions {
        redis: Some(redis.settings()),
        limits: devicelink_shared::config::LimitsConfig::defaults(),
        ..Default::default()
    })
    .await;
    let (app_id, api_key) = env.app_with_key().await;
    let code = env.mint(&api_key, "tls-user").await;
    // The code is in the TLS server, under the test's prefix.
    let mut tls_redis = RedisConnection::connect(&redis.settings()).expect("settings");
    let parsed = devicelink_shared::auth_code::AuthCode::parse(&code).expect("a code");
    let app = devicelink_shared::validate::AppId(app_id.parse().expect("a UUID"));
    let key = devicelink_shared::auth_code::redis_key(&env.redis_key_prefix, app, &parsed.hash());
    let stored: Option<Vec<u8>> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut tls_redis)
        .await
        .expect("read the code over TLS");
    assert!(stored.is_some(), "the code is in the TLS Redis");
    let created = env
        .registration()
        .await
        .create_user(devicelink_e2e::create_user_request(
            &code,
            &app_id,
            phone("tls-phone"),
        ))
        .await
        .expect("redeem over TLS")
        .into_inner();
    let status = status_of_token(&mut env.registration().await, &created.install_token)
        .await
        .expect("status");
    assert_eq!(
        pb::InstallState::try_from(status.state),
        Ok(pb::InstallState::Active)
    );
    let replay = env
        .registration()
        .await
        .create_user(devicelink_e2e::create_user_request(
            &code,
            &app_id,
            phone("another-phone"),
        ))
        .await
        .expect_err("a used code");
    assert_eq!(replay.code(), Code::NotFound);
    assert!(!logs.text().contains(redis.password()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_file_replaces_the_password_of_the_url() {
    let redis = TlsRedis::start("optional").await;
    let password_file = redis.write_file("password", &format!("{}\n", redis.password()));
    let settings = RedisSettings {
        servers: RedisServers::Single(redis.url_with_password("not-the-password")),
        password_file: Some(password_file),
        client_cert: None,
        ..redis.settings()
    };
    let connection = RedisConnection::connect(&settings).expect("settings");
    assert!(connection.reachable().await, "the file's password logs in");
    let without_file = RedisSettings {
        password_file: None,
        ..settings
    };
    let connection = RedisConnection::connect(&without_file).expect("settings");
    assert!(!connection.reachable().await, "the URL's password is wrong");
}

/// Mints once against `settings` and returns the refusal and the logs.
async fn mint_fails(settings: RedisSettings) -> tonic::Status {
    let env = TestEnv::start_with(TestOptions {
        redis: Some(settings),
        ..Default::default()
    })
    .await;
    let (_app_id, api_key) = env.app_with_key().await;
    env.authcode()
        .await
        .mint_auth_code(authorized(
            pb::MintAuthCodeRequest {
                external_id: "u".into(),
                app_id: String::new(),
                ..Default::default()
            },
            &api_key,
        ))
        .await
        .expect_err("Redis cannot be used")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_another_ca_is_refused_clearly() {
    let logs = logs();
    let redis = TlsRedis::start("optional").await;
    let settings = RedisSettings {
        ca_file: Some(redis.file("other-ca.pem")),
        client_cert: None,
        ..redis.settings()
    };
    // The client says why.
    let mut connection = RedisConnection::connect(&settings).expect("settings");
    let error = redis::cmd("PING")
        .query_async::<String>(&mut connection)
        .await
        .expect_err("an untrusted server");
    assert!(
        error.to_string().contains("UnknownIssuer"),
        "the error names the certificate problem: {error}"
    );
    // And the service answers UNAVAILABLE, logging the cause.
    let refused = mint_fails(settings).await;
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        logs.text().contains("UnknownIssuer"),
        "the log says the certificate is not trusted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_clearly_and_is_never_logged() {
    let logs = logs();
    let redis = TlsRedis::start("optional").await;
    let wrong = format!("wrong-{}", uuid::Uuid::new_v4().simple());
    let settings = RedisSettings {
        servers: RedisServers::Single(redis.url_with_password(&wrong)),
        client_cert: None,
        ..redis.settings()
    };
    let refused = mint_fails(settings).await;
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(!refused.message().contains(&wrong), "{refused:?}");
    let text = logs.text();
    assert!(
        text.contains("Password authentication failed"),
        "the log says the login was refused"
    );
    assert!(!text.contains(&wrong), "the wrong password is in the logs");
    assert!(
        !text.contains(redis.password()),
        "the right password is in the logs"
    );
}

/// A service binary's exit code and output with `env` (and the baseline
/// of a working configuration whose stores are closed ports).
async fn run_binary(package: &str, bin: &'static str, env: &[(&str, String)]) -> (i32, String) {
    let closed = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port()
    };
    let child = tokio::process::Command::new(service_binary(package, bin))
        .env_clear()
        .env(
            "DATABASE_URL",
            format!(
                "postgres://devicelink:devicelink@127.0.0.1:{}/devicelink",
                closed()
            ),
        )
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("ADMIN_LISTEN_ADDR", "127.0.0.1:0")
        .env("DEVICELINK_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("AUTH_CODE_RECORD_KEY", RECORD_KEY)
        .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the service");
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the service exits")
        .expect("its output");
    (
        output.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_redis_files_exit_64_naming_their_variable_and_no_password() {
    let dir = std::env::temp_dir().join(format!(
        "devicelink-redis-files-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let missing = dir.join("missing.pem").display().to_string();
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let garbage = garbage.display().to_string();
    let secret = format!("secret-{}", uuid::Uuid::new_v4().simple());
    let url = format!("rediss://app:{secret}@127.0.0.1:1/0");
    let cases: [(&str, Vec<(&str, String)>); 5] = [
        (
            "REDIS_CA_FILE",
            vec![
                ("REDIS_URL", url.clone()),
                ("REDIS_CA_FILE", missing.clone()),
            ],
        ),
        (
            "REDIS_CA_FILE",
            vec![
                ("REDIS_URL", url.clone()),
                ("REDIS_CA_FILE", garbage.clone()),
            ],
        ),
        (
            "REDIS_PASSWORD_FILE",
            vec![
                ("REDIS_URL", url.clone()),
                ("REDIS_PASSWORD_FILE", missing.clone()),
            ],
        ),
        (
            "REDIS_CLIENT_KEY_FILE",
            vec![
                ("REDIS_URL", url.clone()),
                ("REDIS_CLIENT_CERT_FILE", garbage.clone()),
            ],
        ),
        (
            "REDIS_CA_FILE",
            vec![
                ("REDIS_URL", format!("redis://app:{secret}@127.0.0.1:1/0")),
                ("REDIS_CA_FILE", garbage.clone()),
            ],
        ),
    ];
    for (package, bin) in [
        ("devicelink-authcode", "authcode-service"),
        ("devicelink-registration", "registration-service"),
    ] {
        for (variable, env) in &cases {
            let (code, output) = run_binary(package, bin, env).await;
            assert_eq!(code, 64, "{bin} with {env:?}:\n{output}");
            assert!(output.contains(variable), "{bin} with {env:?}:\n{output}");
            assert!(!output.contains(&secret), "{bin} printed the password");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
