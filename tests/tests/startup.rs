//! How the real binaries exit when they cannot start, as the README's
//! configuration section promises: 64 and the variable or file to fix for a
//! bad configuration, 69 for a store that is down at start-up.
//!
//! The stores are given as closed loopback ports: configuration is checked
//! before any store is needed, so a bad configuration is reported as one
//! even while the stores are away.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use devicelink_e2e::binaries::service_binary;
use devicelink_e2e::{ADMIN_TOKEN, RECORD_KEY};
use tokio::process::Command;

/// How long a binary that cannot start may take to say so. registration
/// waits up to its pool's timeouts for an unreachable Postgres.
const EXIT_DEADLINE: Duration = Duration::from_secs(30);

/// `EX_USAGE`: fix the configuration.
const EXIT_BAD_CONFIG: i32 = 64;
/// `EX_UNAVAILABLE`: a store is down; try again later.
const EXIT_STORE_UNAVAILABLE: i32 = 69;

#[derive(Debug, Clone, Copy)]
enum Service {
    AuthCode,
    Registration,
}

const BOTH: [Service; 2] = [Service::AuthCode, Service::Registration];

impl Service {
    fn binary(self) -> std::path::PathBuf {
        match self {
            Self::AuthCode => service_binary("devicelink-authcode", "authcode-service"),
            Self::Registration => service_binary("devicelink-registration", "registration-service"),
        }
    }
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A complete configuration whose stores cannot be reached.
fn baseline() -> Vec<(&'static str, String)> {
    vec![
        (
            "DATABASE_URL",
            format!(
                "postgres://devicelink:devicelink@127.0.0.1:{}/devicelink",
                closed_port()
            ),
        ),
        (
            "REDIS_URL",
            format!("redis://127.0.0.1:{}/0", closed_port()),
        ),
        ("LISTEN_ADDR", "127.0.0.1:0".into()),
        ("ADMIN_LISTEN_ADDR", "127.0.0.1:0".into()),
        ("DEVICELINK_ADMIN_TOKEN", ADMIN_TOKEN.into()),
        ("AUTH_CODE_RECORD_KEY", RECORD_KEY.into()),
    ]
}

/// How a run ended: the exit code and everything it printed.
#[derive(Debug)]
struct Exit {
    code: Option<i32>,
    output: String,
}

/// Runs `service` with the baseline configuration changed by `set` (an
/// empty value removes the variable) and waits for it to exit.
async fn run(service: Service, set: &[(&'static str, &str)]) -> Exit {
    let mut env = baseline();
    for (variable, value) in set {
        env.retain(|(name, _)| name != variable);
        if !value.is_empty() {
            env.push((variable, (*value).to_owned()));
        }
    }
    let child = Command::new(service.binary())
        .env_clear()
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the service");
    let output = tokio::time::timeout(EXIT_DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{service:?} with {set:?} did not exit"))
        .expect("its output");
    Exit {
        code: output.status.code(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// Asserts that `service` with `set` exits with `code` and says every one
/// of `mentions`.
async fn assert_exits(
    service: Service,
    set: &[(&'static str, &str)],
    code: i32,
    mentions: &[&str],
) {
    let exit = run(service, set).await;
    assert_eq!(
        exit.code,
        Some(code),
        "{service:?} with {set:?} exited {:?}:\n{}",
        exit.code,
        exit.output
    );
    for mention in mentions {
        assert!(
            exit.output.contains(mention),
            "{service:?} with {set:?} does not mention {mention:?}:\n{}",
            exit.output
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_tls_file_exits_64_naming_the_variable_and_the_file() {
    let missing = std::env::temp_dir().join(format!(
        "devicelink-missing-{}.pem",
        uuid::Uuid::new_v4().simple()
    ));
    let missing = missing.to_str().expect("a UTF-8 path");
    for service in BOTH {
        assert_exits(
            service,
            &[("TLS_CERT_FILE", missing), ("TLS_KEY_FILE", missing)],
            EXIT_BAD_CONFIG,
            &["TLS_CERT_FILE", missing],
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_certificate_exits_64_naming_the_variables() {
    let dir = std::env::temp_dir().join(format!(
        "devicelink-startup-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let garbage = write(&dir, "garbage.pem", "not a certificate\n");
    for service in BOTH {
        assert_exits(
            service,
            &[("TLS_CERT_FILE", &garbage), ("TLS_KEY_FILE", &garbage)],
            EXIT_BAD_CONFIG,
            &["TLS_CERT_FILE", "TLS_KEY_FILE"],
        )
        .await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn write(dir: &Path, name: &str, contents: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write a file");
    path.to_str().expect("a UTF-8 path").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_store_urls_exit_64_naming_the_variable() {
    for service in BOTH {
        assert_exits(
            service,
            &[("DATABASE_URL", "not a url")],
            EXIT_BAD_CONFIG,
            &["DATABASE_URL"],
        )
        .await;
        assert_exits(
            service,
            &[("REDIS_URL", "http://127.0.0.1:6379")],
            EXIT_BAD_CONFIG,
            &["REDIS_URL"],
        )
        .await;
        assert_exits(
            service,
            &[("DATABASE_URL", "")],
            EXIT_BAD_CONFIG,
            &["DATABASE_URL", "must be set"],
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_timeout_out_of_range_exits_64_naming_the_variable() {
    for service in BOTH {
        for value in ["50", "60000", "2s"] {
            assert_exits(
                service,
                &[("DATABASE_CALL_TIMEOUT_MS", value)],
                EXIT_BAD_CONFIG,
                &["DATABASE_CALL_TIMEOUT_MS"],
            )
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_short_record_key_exits_64_naming_the_variable() {
    for service in BOTH {
        assert_exits(
            service,
            &[("AUTH_CODE_RECORD_KEY", "")],
            EXIT_BAD_CONFIG,
            &["AUTH_CODE_RECORD_KEY", "must be set"],
        )
        .await;
        let short = "short-record-key";
        let exit = run(service, &[("AUTH_CODE_RECORD_KEY_PREVIOUS", short)]).await;
        assert_eq!(exit.code, Some(EXIT_BAD_CONFIG), "{}", exit.output);
        assert!(
            exit.output.contains("AUTH_CODE_RECORD_KEY_PREVIOUS"),
            "{}",
            exit.output
        );
        assert!(
            !exit.output.contains(short),
            "the key leaked: {}",
            exit.output
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_sslmode_or_an_unreadable_ca_file_exits_64_naming_the_variable() {
    let port = closed_port();
    let url = |query: &str| {
        format!("postgres://devicelink:devicelink@127.0.0.1:{port}/devicelink?{query}")
    };
    let missing_ca = url("sslmode=verify-full&sslrootcert=/nonexistent/ca.crt");
    for service in BOTH {
        assert_exits(
            service,
            &[("DATABASE_URL", &url("sslmode=verify_full"))],
            EXIT_BAD_CONFIG,
            &["DATABASE_URL", "sslmode \"verify_full\" is not one of"],
        )
        .await;
        assert_exits(
            service,
            &[("DATABASE_URL", &missing_ca)],
            EXIT_BAD_CONFIG,
            &["DATABASE_URL", "sslrootcert /nonexistent/ca.crt"],
        )
        .await;
    }
    assert_exits(
        Service::Registration,
        &[("DATABASE_DIRECT_URL", &url("sslmode=bogus"))],
        EXIT_BAD_CONFIG,
        &["DATABASE_DIRECT_URL", "sslmode \"bogus\""],
    )
    .await;
    // The rollout's migration step reads the URL on its own path.
    assert_exits(
        Service::Registration,
        &[
            ("DEVICELINK_MIGRATE_ONLY", "1"),
            ("DATABASE_URL", &missing_ca),
        ],
        EXIT_BAD_CONFIG,
        &["DATABASE_URL", "sslrootcert /nonexistent/ca.crt"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_address_in_use_exits_64_naming_the_variable() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = taken.local_addr().expect("its address").to_string();
    for service in BOTH {
        assert_exits(
            service,
            &[("LISTEN_ADDR", &addr)],
            EXIT_BAD_CONFIG,
            &["LISTEN_ADDR", &addr],
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_listen_address_in_use_exits_64_naming_the_variable() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = taken.local_addr().expect("its address").to_string();
    assert_exits(
        Service::Registration,
        &[("ADMIN_LISTEN_ADDR", &addr)],
        EXIT_BAD_CONFIG,
        &["ADMIN_LISTEN_ADDR", &addr],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_without_an_operator_exits_64_naming_both_variables() {
    assert_exits(
        Service::Registration,
        &[("DEVICELINK_ADMIN_TOKEN", "")],
        EXIT_BAD_CONFIG,
        &["DEVICELINK_ADMIN_TOKENS_FILE", "DEVICELINK_ADMIN_TOKEN"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_tokens_file_exits_64_naming_the_line_not_its_content() {
    let dir = std::env::temp_dir().join(format!(
        "devicelink-startup-operators-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("a directory");
    let malformed = write(&dir, "operators", "# ops\nalice:hunter2-not-a-hash\n");
    let missing = dir.join("absent").display().to_string();
    let outcomes = [
        run(
            Service::Registration,
            &[("DEVICELINK_ADMIN_TOKENS_FILE", &malformed)],
        )
        .await,
        run(
            Service::Registration,
            &[("DEVICELINK_ADMIN_TOKENS_FILE", &missing)],
        )
        .await,
    ];
    let _ = std::fs::remove_dir_all(&dir);
    let [malformed, missing_file] = outcomes;
    assert_eq!(
        malformed.code,
        Some(EXIT_BAD_CONFIG),
        "{}",
        malformed.output
    );
    assert!(
        malformed
            .output
            .contains("DEVICELINK_ADMIN_TOKENS_FILE: line 2"),
        "{}",
        malformed.output
    );
    assert!(
        !malformed.output.contains("hunter2"),
        "{}",
        malformed.output
    );
    assert_eq!(
        missing_file.code,
        Some(EXIT_BAD_CONFIG),
        "{}",
        missing_file.output
    );
    assert!(
        missing_file.output.contains("DEVICELINK_ADMIN_TOKENS_FILE")
            && missing_file.output.contains(&missing),
        "{}",
        missing_file.output
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_exits_69_when_postgres_is_down_for_the_migration() {
    assert_exits(
        Service::Registration,
        &[],
        EXIT_STORE_UNAVAILABLE,
        &["migrating the schema", "Postgres cannot be reached"],
    )
    .await;
    // The migration step of a rollout alike.
    assert_exits(
        Service::Registration,
        &[("DEVICELINK_MIGRATE_ONLY", "1")],
        EXIT_STORE_UNAVAILABLE,
        &["Postgres cannot be reached"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misspelt_migrate_only_flag_exits_64_rather_than_serving() {
    assert_exits(
        Service::Registration,
        &[("DEVICELINK_MIGRATE_ONLY", "yes")],
        EXIT_BAD_CONFIG,
        &["DEVICELINK_MIGRATE_ONLY"],
    )
    .await;
}
