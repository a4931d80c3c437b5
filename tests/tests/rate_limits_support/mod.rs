//! What the rate-limit tests share: limits turned on by name, made-up
//! credentials, and the check of what a limited client sees.

#![allow(
    dead_code,
    unused_imports,
    reason = "each test binary uses a part of it"
)]

use std::time::Duration;

use devicelink_e2e::{TestEnv, TestOptions, authorized};
use devicelink_shared::config::LimitsConfig;
pub use devicelink_shared::config::{
    RATE_LIMIT_FAILED_AUTH_PER_ADDRESS as FAILED_AUTH_PER_ADDRESS,
    RATE_LIMIT_INSTALL_PER_TOKEN as INSTALL_PER_TOKEN,
    RATE_LIMIT_MINT_PER_EXTERNAL_ID as MINT_PER_EXTERNAL_ID,
    RATE_LIMIT_MINT_PER_KEY as MINT_PER_KEY, RATE_LIMIT_REDEEM_PER_DEVICE as REDEEM_PER_DEVICE,
    TRUSTED_PROXIES,
};
use devicelink_shared::pb;
use devicelink_shared::pb::auth_code_service_client::AuthCodeServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// Every limit off but those `settings` name (`(variable, value)`, in the
/// environment's syntax).
pub fn limits(settings: &[(&str, &str)]) -> LimitsConfig {
    LimitsConfig::from_lookup(|variable| {
        settings
            .iter()
            .find(|(name, _)| *name == variable)
            .map(|(_, value)| (*value).to_owned())
            .or_else(|| {
                variable
                    .starts_with("RATE_LIMIT_")
                    .then(|| "off".to_owned())
            })
    })
    .expect("the test's limits parse")
}

/// One registration replica and authcode with `settings`' limits.
pub async fn start(settings: &[(&str, &str)]) -> TestEnv {
    TestEnv::start_with(TestOptions {
        limits: limits(settings),
        ..Default::default()
    })
    .await
}

/// `MintAuthCode` for `external_id` with `api_key`.
pub async fn mint(
    authcode: &mut AuthCodeServiceClient<Channel>,
    api_key: &str,
    external_id: &str,
) -> Result<pb::MintAuthCodeResponse, Status> {
    authcode
        .mint_auth_code(authorized(
            pb::MintAuthCodeRequest {
                external_id: external_id.into(),
                app_id: String::new(),
                ..Default::default()
            },
            api_key,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// Asserts that `result` is a refusal by the limit of `scope`, as the
/// product promises it: RESOURCE_EXHAUSTED, a `RetryInfo` with a delay, a
/// `QuotaFailure` naming the scope, and `retry-after` in whole seconds.
#[track_caller]
pub fn assert_limited<T: std::fmt::Debug>(result: Result<T, Status>, scope: &str) {
    let status = result.expect_err("the call is rate limited");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let details = status.get_error_details();
    let delay = details
        .retry_info()
        .and_then(|retry| retry.retry_delay)
        .expect("a RetryInfo detail with a delay");
    assert!(delay > Duration::ZERO, "{delay:?}");
    let quota = details.quota_failure().expect("a QuotaFailure detail");
    let subjects: Vec<&str> = quota
        .violations
        .iter()
        .map(|violation| violation.subject.as_str())
        .collect();
    assert_eq!(subjects, [scope], "{status:?}");
    let retry_after: u64 = status
        .metadata()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .expect("retry-after metadata in whole seconds");
    assert!(retry_after >= 1, "retry-after: {retry_after}");
    assert!(
        Duration::from_secs(retry_after) >= delay,
        "retry-after {retry_after} s is shorter than the delay {delay:?}"
    );
}

/// A well-formed API key (prefix and checksum right) that no app holds.
pub fn made_up_api_key() -> String {
    devicelink_shared::api_key::generate().text
}

/// A well-formed auth code nobody minted.
pub fn made_up_code() -> String {
    devicelink_shared::auth_code::AuthCode::generate()
        .expose()
        .to_owned()
}

/// A well-formed install token no install holds.
pub fn made_up_install_token() -> String {
    use devicelink_registration::install_token::{InstallToken, new_nonce};
    let code = devicelink_shared::auth_code::AuthCode::generate();
    InstallToken::derive(&code, &new_nonce())
        .expose()
        .to_owned()
}

/// How many auth codes the test's key space holds in Redis.
pub async fn codes_in_redis(env: &TestEnv) -> usize {
    let url = std::env::var("DEVICELINK_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    let client = redis::Client::open(url).expect("the test Redis URL");
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the test Redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}authcode:*", env.redis_key_prefix))
        .query_async(&mut redis)
        .await
        .expect("list the codes");
    keys.len()
}
