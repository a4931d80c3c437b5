//! No key, code or token ever reaches a log line, even at the most verbose
//! level. This test binary installs its own global subscriber, recording
//! every line, before any service starts.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use devicelink_e2e::*;
use devicelink_shared::pb;
use futures_util::StreamExt;

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<u8>>>);

impl Write for Recorder {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_flow_logs_no_secret() {
    let recorder = Recorder::default();
    let writer = recorder.clone();
    tracing_subscriber::fmt()
        .with_env_filter("trace,h2=info,hyper=info,tower=info")
        .with_writer(move || writer.clone())
        .init();

    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let code = env.mint(&api_key, "secret-keeper").await;
    let mut registration = env.registration().await;
    let created = registration
        .create_user(create_user_request(&code, &app_id, phone("p")))
        .await
        .expect("create")
        .into_inner();
    registration
        .create_user(create_user_request(&code, &app_id, phone("p")))
        .await
        .expect("a retry");
    registration
        .create_user(create_user_request(&code, &app_id, phone("replayer")))
        .await
        .expect_err("a replay");
    let mut stream = registration
        .watch_install_status(authorized(
            pb::WatchInstallStatusRequest {},
            &created.install_token,
        ))
        .await
        .expect("watch")
        .into_inner();
    stream.next().await.expect("first").expect("ok");
    registration
        .reset_install(authorized(
            pb::ResetInstallRequest {},
            &created.install_token,
        ))
        .await
        .expect("reset");
    registration
        .get_install_status(authorized(
            pb::GetInstallStatusRequest {},
            &created.install_token,
        ))
        .await
        .expect_err("reset token");
    env.authcode()
        .await
        .mint_auth_code(authorized(
            pb::MintAuthCodeRequest {
                external_id: "x".into(),
                app_id: String::new(),
            },
            &format!("{}x", &api_key[..api_key.len() - 1]),
        ))
        .await
        .expect_err("a mistyped key");

    let logs = String::from_utf8_lossy(&recorder.0.lock().unwrap_or_else(PoisonError::into_inner))
        .into_owned();
    assert!(
        logs.contains("auth code redeemed"),
        "the flow was logged at all"
    );
    let api_key_secret = &api_key[api_key.find('.').expect("a key has a dot") + 1..];
    for (what, secret) in [
        ("API key", api_key.as_str()),
        ("API key secret", api_key_secret),
        ("auth code", code.as_str()),
        ("install token", created.install_token.as_str()),
        (
            "install token secret",
            &created.install_token["dlit_".len()..],
        ),
        ("admin token", ADMIN_TOKEN),
    ] {
        assert!(!logs.contains(secret), "the {what} appears in the logs");
    }
}
