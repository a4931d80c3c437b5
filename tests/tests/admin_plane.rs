//! The private admin plane: `AdminService` only on registration's admin
//! listener, named operators from a tokens file (rotated while serving),
//! every call logged with its operator, failed tokens logged without the
//! token and limited per client address.
//!
//! This binary records every log line ([`recorded_logs`]); the tests share
//! the record, so each asserts on lines only its own operators or apps
//! could have left.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use devicelink_e2e::logs::{RecordedLogs, recorded_logs};
use devicelink_e2e::*;
use devicelink_shared::limits::Rate;
use devicelink_shared::pb;
use devicelink_shared::pb::admin_service_client::AdminServiceClient;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tonic_types::StatusExt;

const LOG_FILTER: &str = "info,h2=warn,hyper=warn,tower=warn";

/// A client of `AdminService` at `addr`, connecting from `from`.
async fn admin_from(addr: SocketAddr, from: IpAddr) -> AdminServiceClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("a valid URI")
        .local_address(Some(from))
        .connect()
        .await
        .expect("connect to the admin listener");
    AdminServiceClient::new(channel)
}

/// A client of `AdminService` at `addr`.
async fn admin_at(addr: SocketAddr) -> AdminServiceClient<Channel> {
    AdminServiceClient::new(connect(addr).await)
}

/// Creates an app named `name` with `token`; its id.
async fn create_app(
    admin: &mut AdminServiceClient<Channel>,
    token: &str,
    name: &str,
) -> Result<String, tonic::Status> {
    Ok(admin
        .create_app(authorized(
            pb::CreateAppRequest { name: name.into() },
            token,
        ))
        .await?
        .into_inner()
        .app_id)
}

/// `text` without the terminal's colour codes (`ESC [ ... m`), which the
/// recorder keeps between a field's name and its value.
fn without_colours(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            plain.push(c);
        }
    }
    plain
}

/// Fails unless a line of `logs` holds every one of `parts`; the failure
/// shows the lines holding the first part.
fn assert_logged(logs: &RecordedLogs, parts: &[&str], what: &str) {
    let text = without_colours(&logs.text());
    if text
        .lines()
        .any(|line| parts.iter().all(|part| line.contains(part)))
    {
        return;
    }
    let near: Vec<&str> = text
        .lines()
        .filter(|line| line.contains(parts[0]))
        .collect();
    panic!(
        "{what}: no line holds {parts:?}; lines with {:?}:\n{}",
        parts[0],
        near.join("\n")
    );
}

/// Waits (up to three reload intervals) until `token` is accepted, or
/// refused when `accepted` is false.
async fn await_token(admin: &mut AdminServiceClient<Channel>, token: &str, accepted: bool) {
    let deadline = Instant::now() + 3 * devicelink_registration::operators::RELOAD_INTERVAL;
    loop {
        let outcome = create_app(admin, token, "rotation probe").await;
        if outcome.is_ok() == accepted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the tokens file was not reloaded: {outcome:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_service_is_served_only_on_the_admin_listener() {
    let _logs = recorded_logs(LOG_FILTER);
    let env = TestEnv::start().await;
    assert_ne!(env.registration_addrs[0], env.registration_admin_addrs[0]);

    let mut public = admin_at(env.registration_addrs[0]).await;
    let refused = create_app(&mut public, ADMIN_TOKEN, "public")
        .await
        .expect_err("no AdminService on the public port");
    assert_eq!(refused.code(), Code::Unimplemented, "{refused:?}");

    let mut admin = env.admin().await;
    let app_id = create_app(&mut admin, ADMIN_TOKEN, "private")
        .await
        .expect("AdminService on the admin port");
    assert!(!app_id.is_empty());

    // And the public API is not on the admin port.
    let mut registration = pb::registration_service_client::RegistrationServiceClient::new(
        connect(env.registration_admin_addrs[0]).await,
    );
    let status = registration
        .get_install_status(authorized(pb::GetInstallStatusRequest {}, "token"))
        .await
        .expect_err("no RegistrationService on the admin port");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_named_in_the_tokens_file_are_each_logged() {
    let logs = recorded_logs(LOG_FILTER);
    let file = operator_line("alice-naming", "alice-token-0123456789")
        + &operator_line("bob-naming", "bob-token-0123456789");
    let env = TestEnv::start_with(TestOptions {
        operators_file: Some(file),
        ..TestOptions::default()
    })
    .await;
    let mut admin = env.admin().await;
    let by_alice = create_app(&mut admin, "alice-token-0123456789", "alice's")
        .await
        .expect("alice is an operator");
    let by_bob = create_app(&mut admin, "bob-token-0123456789", "bob's")
        .await
        .expect("bob is an operator");
    create_app(&mut admin, ADMIN_TOKEN, "the quickstart's")
        .await
        .expect("the quickstart token still works beside the file");

    for (operator, app_id) in [("alice-naming", &by_alice), ("bob-naming", &by_bob)] {
        let operator_field = format!("operator={operator}");
        assert_logged(
            &logs,
            &["app created", &operator_field, app_id],
            &format!("the change is logged with {operator}"),
        );
        assert_logged(
            &logs,
            &[
                "admin call",
                &operator_field,
                "AdminService/CreateApp",
                "code=Ok",
            ],
            &format!("the call is logged with {operator}"),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_rotated_without_downtime() {
    let logs = recorded_logs(LOG_FILTER);
    const OLD: &str = "carol-old-token-0123456789";
    const NEW: &str = "carol-new-token-0123456789";
    let env = TestEnv::start_with(TestOptions {
        operators_file: Some(operator_line("carol", OLD)),
        ..TestOptions::default()
    })
    .await;
    let mut admin = env.admin().await;
    create_app(&mut admin, OLD, "before")
        .await
        .expect("the old token works");
    let refused = create_app(&mut admin, NEW, "too early")
        .await
        .expect_err("the new token is not in the file yet");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    // Add the new token: both work.
    env.write_operators(&(operator_line("carol", OLD) + &operator_line("carol", NEW)));
    await_token(&mut admin, NEW, true).await;
    // carol's two tokens and the quickstart's (only this test rotates).
    assert_logged(
        &logs,
        &["admin operators changed", "operators=3"],
        "the reload is logged",
    );
    create_app(&mut admin, OLD, "during")
        .await
        .expect("the old token works while both are listed");

    // Remove the old one: only the new works.
    env.write_operators(&operator_line("carol", NEW));
    await_token(&mut admin, OLD, false).await;
    let refused = create_app(&mut admin, OLD, "after")
        .await
        .expect_err("the old token is gone");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    create_app(&mut admin, NEW, "after")
        .await
        .expect("the new token works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_and_logged_without_the_token() {
    let logs = recorded_logs(LOG_FILTER);
    const WRONG: &str = "wrong-admin-token-made-up-9876";
    let env = TestEnv::start().await;
    // An address of this test's own, so that the lines it looks for are its.
    let mut admin = admin_from(env.registration_admin_addrs[0], [127, 0, 0, 3].into()).await;
    let wrong = create_app(&mut admin, WRONG, "by a guesser")
        .await
        .expect_err("a wrong token");
    assert_eq!(wrong.code(), Code::Unauthenticated, "{wrong:?}");
    let missing = admin
        .create_app(pb::CreateAppRequest {
            name: "anonymous".into(),
        })
        .await
        .expect_err("no token");
    assert_eq!(missing.code(), Code::Unauthenticated, "{missing:?}");
    assert!(missing.message().contains("authorization"), "{missing:?}");

    assert_logged(
        &logs,
        &[
            "WARN",
            "admin call refused",
            "AdminService/CreateApp",
            "client=127.0.0.3",
            "wrong admin token",
        ],
        "the refusal is logged with the method and the client address",
    );
    assert_logged(
        &logs,
        &[
            "admin call refused",
            "client=127.0.0.3",
            "missing admin token",
        ],
        "a missing token is logged too",
    );
    assert!(!logs.text().contains(WRONG), "the token is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_tokens_are_limited_per_client_address() {
    let logs = recorded_logs(LOG_FILTER);
    let mut limits = devicelink_shared::config::LimitsConfig::off();
    limits.failed_auth_per_address = Rate::parse_setting("3/min").expect("a rate");
    let env = TestEnv::start_with(TestOptions {
        limits,
        ..TestOptions::default()
    })
    .await;
    let admin_addr = env.registration_admin_addrs[0];
    let mut guesser = admin_from(admin_addr, [127, 0, 0, 1].into()).await;
    for attempt in 1..=3 {
        let refused = create_app(&mut guesser, &format!("guess-{attempt}-0123456789"), "x")
            .await
            .expect_err("a wrong token");
        assert_eq!(refused.code(), Code::Unauthenticated, "attempt {attempt}");
    }

    // Past the burst, even the right token is refused from that address,
    // before it is looked at.
    let limited = create_app(&mut guesser, ADMIN_TOKEN, "blocked")
        .await
        .expect_err("the address is blocked");
    assert_eq!(limited.code(), Code::ResourceExhausted, "{limited:?}");
    let retry = limited
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .expect("a RetryInfo detail");
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(60),
        "{retry:?}"
    );
    let retry_after: u64 = limited
        .metadata()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse().ok())
        .expect("retry-after metadata in seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_logged(
        &logs,
        &[
            "admin call refused",
            "too many failed admin tokens",
            "client=127.0.0.1",
        ],
        "the blocked attempt is logged",
    );

    // Another address is not blocked by this one's failures.
    let mut operator = admin_from(admin_addr, [127, 0, 0, 2].into()).await;
    create_app(&mut operator, ADMIN_TOKEN, "from elsewhere")
        .await
        .expect("another address gets in");
}
