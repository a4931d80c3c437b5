//! Device-bound codes (proof of possession, after RFC 7636), through the
//! real services on real Postgres and Redis: a code minted with a
//! `code_challenge` is redeemed only with its `code_verifier`; a missing
//! or wrong verifier is PERMISSION_DENIED, writes nothing, leaves the code
//! to the device that holds the verifier, and counts as a failed
//! credential; a retry must prove possession too; an app can make the
//! challenge mandatory.

mod rate_limits_support;

use std::time::{Duration, Instant};

use devicelink_e2e::audit_events::await_audit_events;
use devicelink_e2e::logs::recorded_logs;
use devicelink_e2e::rows::{RedemptionCounts, redemption_counts};
use devicelink_e2e::*;
use devicelink_shared::code_challenge::{CodeChallenge, CodeVerifier};
use devicelink_shared::pb;
use devicelink_shared::secret::{base32, random_bytes};
use rate_limits_support::{FAILED_AUTH_PER_ADDRESS, assert_limited, codes_in_redis};
use tonic::{Code, Status};

/// What the refusal of a code's redemption wrote: nothing.
const NOTHING: RedemptionCounts = RedemptionCounts {
    users: 0,
    installs: 0,
    redeemed_codes: 0,
};

/// Every test of this binary records the logs (the subscriber is one per
/// process, installed before any service starts): one test reads them.
fn record_logs() -> devicelink_e2e::logs::RecordedLogs {
    recorded_logs("info,h2=warn,hyper=warn,tower=warn")
}

/// A verifier as an app makes one: 256 random bits, 52 characters.
fn new_verifier() -> CodeVerifier {
    CodeVerifier::parse("code_verifier", &base32(&random_bytes::<32>())).expect("a valid verifier")
}

/// The challenge an app's backend passes on for `verifier`.
fn challenge_of(verifier: &CodeVerifier) -> String {
    CodeChallenge::of(verifier).to_text()
}

/// `MintAuthCode` for `external_id` with `api_key` and `code_challenge`
/// (empty: none).
async fn mint_with(
    env: &TestEnv,
    api_key: &str,
    external_id: &str,
    code_challenge: &str,
) -> Result<pb::MintAuthCodeResponse, Status> {
    env.authcode()
        .await
        .mint_auth_code(authorized(
            pb::MintAuthCodeRequest {
                external_id: external_id.into(),
                code_challenge: code_challenge.into(),
                ..Default::default()
            },
            api_key,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// A code for `external_id` bound to `verifier`.
async fn mint_bound(
    env: &TestEnv,
    api_key: &str,
    external_id: &str,
    verifier: &CodeVerifier,
) -> String {
    mint_with(env, api_key, external_id, &challenge_of(verifier))
        .await
        .expect("mint a device-bound code")
        .auth_code
}

/// `CreateUser` of `code` on the phone `device_id`, with `verifier` if any.
async fn redeem(
    env: &TestEnv,
    code: &str,
    app_id: &str,
    device_id: &str,
    verifier: Option<&CodeVerifier>,
) -> Result<pb::CreateUserResponse, Status> {
    let request = pb::CreateUserRequest {
        code_verifier: verifier.map_or_else(String::new, |v| v.expose().to_owned()),
        ..create_user_request(code, app_id, phone(device_id))
    };
    env.registration()
        .await
        .create_user(request)
        .await
        .map(tonic::Response::into_inner)
}

#[track_caller]
fn assert_denied<T: std::fmt::Debug>(result: Result<T, Status>, says: &str) {
    let status = result.expect_err("a redemption without proof of possession");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains(says), "{status:?}");
}

/// Sets the app's `require_code_challenge` and answers what `GetApp` shows.
async fn require_challenge(env: &TestEnv, app_id: &str, required: bool) -> pb::AppSecurity {
    let mut admin = env.admin().await;
    let stored = admin
        .set_app_security(authorized(
            pb::SetAppSecurityRequest {
                app_id: app_id.into(),
                security: Some(pb::AppSecurity {
                    require_code_challenge: required,
                }),
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("set the app's security")
        .into_inner()
        .security
        .expect("the settings stored");
    assert_eq!(stored.require_code_challenge, required);
    admin
        .get_app(authorized(
            pb::GetAppRequest {
                app_id: app_id.into(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("get the app")
        .into_inner()
        .app
        .and_then(|app| app.security)
        .expect("the app's security settings")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaked_code_is_useless_without_its_verifier_and_stays_the_devices() {
    let logs = record_logs();
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let verifier = new_verifier();
    let code = mint_bound(&env, &api_key, "alice", &verifier).await;

    // Whoever intercepted the code, on their own device: without a
    // verifier, with a made-up one, with the challenge itself.
    assert_denied(
        redeem(&env, &code, &app_id, "thief", None).await,
        "send its code_verifier",
    );
    assert_denied(
        redeem(&env, &code, &app_id, "thief", Some(&new_verifier())).await,
        "does not match",
    );
    // Even on the device id of the real device, which is no secret.
    assert_denied(
        redeem(&env, &code, &app_id, "alice-phone", None).await,
        "send its code_verifier",
    );
    let challenge_as_verifier =
        CodeVerifier::parse("code_verifier", &challenge_of(&verifier)).expect("43 characters");
    assert_denied(
        redeem(&env, &code, &app_id, "thief", Some(&challenge_as_verifier)).await,
        "does not match",
    );
    assert_eq!(
        redemption_counts(&env.database().await, &code, "alice").await,
        NOTHING,
        "a refused proof wrote nothing"
    );

    // The real device redeems the code afterwards, as if nothing happened.
    let created = redeem(&env, &code, &app_id, "alice-phone", Some(&verifier))
        .await
        .expect("the device holding the verifier redeems the code");
    assert!(!created.restored);
    assert_eq!(state_of(&created.status), ACTIVE);
    // And the thief still gets nothing, now that it is used.
    assert_denied(
        redeem(&env, &code, &app_id, "thief", None).await,
        "send its code_verifier",
    );

    let logs = logs.text();
    assert!(
        logs.contains("the code_verifier does not prove possession"),
        "the refusals were logged"
    );
    for secret in [verifier.expose(), code.as_str()] {
        assert!(!logs.contains(secret), "a secret appears in the logs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_wrong_and_right_verifiers_redeem_once_for_the_right_one() {
    record_logs();
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let verifier = new_verifier();
    let code = mint_bound(&env, &api_key, "alice", &verifier).await;

    // Twelve wrong verifiers on twelve devices and three calls of the real
    // device (a redemption and two of its retries), all at once.
    let wrong = (0..12).map(|index| {
        let (env, code, app_id) = (&env, &code, &app_id);
        async move {
            let wrong = new_verifier();
            redeem(env, code, app_id, &format!("thief-{index}"), Some(&wrong)).await
        }
    });
    let right = (0..3).map(|_| redeem(&env, &code, &app_id, "alice-phone", Some(&verifier)));
    let (wrong, right) = tokio::join!(
        futures_util::future::join_all(wrong),
        futures_util::future::join_all(right)
    );

    for refused in wrong {
        assert_denied(refused, "does not match");
    }
    let answers: Vec<pb::CreateUserResponse> = right
        .into_iter()
        .map(|answer| answer.expect("the device with the verifier"))
        .collect();
    for answer in &answers[1..] {
        assert_eq!(answer.user_id, answers[0].user_id);
        assert_eq!(answer.install_id, answers[0].install_id);
        assert_eq!(answer.install_token, answers[0].install_token);
    }
    assert_eq!(
        redemption_counts(&env.database().await, &code, "alice").await,
        RedemptionCounts {
            users: 1,
            installs: 1,
            redeemed_codes: 1,
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_can_require_a_challenge_at_mint() {
    record_logs();
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    // Off by default: a code without a challenge is minted, and the key's
    // row is now cached in authcode.
    let security = require_challenge(&env, &app_id, false).await;
    assert!(!security.require_code_challenge);
    mint_with(&env, &api_key, "alice", "")
        .await
        .expect("no challenge is needed by default");

    let security = require_challenge(&env, &app_id, true).await;
    assert!(security.require_code_challenge, "GetApp shows the setting");
    // The key's cache gives the setting a few seconds to reach authcode.
    let deadline = Instant::now() + Duration::from_secs(6);
    let refused = loop {
        match mint_with(&env, &api_key, "alice", "").await {
            Err(refused) => break refused,
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(_) => panic!("a code without a challenge is still minted"),
        }
    };
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("code_challenge: this app requires code_challenge"),
        "{refused:?}"
    );
    let verifier = new_verifier();
    let code = mint_bound(&env, &api_key, "alice", &verifier).await;
    redeem(&env, &code, &app_id, "alice-phone", Some(&verifier))
        .await
        .expect("a bound code of the app redeems");

    // Unknown apps are named as such.
    let unknown = env
        .admin()
        .await
        .set_app_security(authorized(
            pb::SetAppSecurityRequest {
                app_id: uuid::Uuid::now_v7().to_string(),
                security: None,
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect_err("an unknown app");
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_must_prove_possession_and_then_gets_the_first_answer() {
    record_logs();
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let verifier = new_verifier();
    let code = mint_bound(&env, &api_key, "alice", &verifier).await;
    let first = redeem(&env, &code, &app_id, "alice-phone", Some(&verifier))
        .await
        .expect("the first redemption");

    // Once the code has left Redis, only its redemption row remembers the
    // challenge: that is the retry to prove.
    let deadline = Instant::now() + Duration::from_secs(5);
    while codes_in_redis(&env).await > 0 {
        assert!(Instant::now() < deadline, "the redeemed code left Redis");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_denied(
        redeem(&env, &code, &app_id, "alice-phone", None).await,
        "send its code_verifier",
    );
    assert_denied(
        redeem(&env, &code, &app_id, "alice-phone", Some(&new_verifier())).await,
        "does not match",
    );
    let retried = redeem(&env, &code, &app_id, "alice-phone", Some(&verifier))
        .await
        .expect("a retry with the verifier");
    assert_eq!(retried.user_id, first.user_id);
    assert_eq!(retried.install_id, first.install_id);
    assert_eq!(retried.install_token, first.install_token);
    assert_eq!(retried.restored, first.restored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verifier_for_a_code_minted_without_a_challenge_is_refused() {
    record_logs();
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let code = env.mint(&api_key, "alice").await;
    // A device expecting its code to be bound is not handed one that is
    // not (RFC 7636's downgrade): refused, and nothing consumed.
    assert_denied(
        redeem(&env, &code, &app_id, "alice-phone", Some(&new_verifier())).await,
        "minted without a code_challenge",
    );
    assert_eq!(
        redemption_counts(&env.database().await, &code, "alice").await,
        NOTHING
    );
    // Without one, it redeems exactly as before device binding.
    redeem(&env, &code, &app_id, "alice-phone", None)
        .await
        .expect("a code without a challenge needs no verifier");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_challenges_and_verifiers_are_invalid_arguments_naming_the_field() {
    record_logs();
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let verifier = new_verifier();
    let good_challenge = challenge_of(&verifier);
    let padded = format!("{good_challenge}=");
    let standard_base64 = format!("+{}", &good_challenge[1..]);
    for (challenge, field) in [
        ("not-a-challenge", "code_challenge:"),
        (padded.as_str(), "code_challenge:"),
        (standard_base64.as_str(), "code_challenge:"),
        (verifier.expose(), "code_challenge:"),
    ] {
        let refused = mint_with(&env, &api_key, "alice", challenge)
            .await
            .expect_err("a malformed challenge");
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().contains(field), "{refused:?}");
    }
    let plain = env
        .authcode()
        .await
        .mint_auth_code(authorized(
            pb::MintAuthCodeRequest {
                external_id: "alice".into(),
                code_challenge: good_challenge.clone(),
                code_challenge_method: "plain".into(),
                ..Default::default()
            },
            &api_key,
        ))
        .await
        .expect_err("the plain method");
    assert_eq!(plain.code(), Code::InvalidArgument, "{plain:?}");
    assert!(
        plain.message().contains("code_challenge_method:"),
        "{plain:?}"
    );

    let code = mint_bound(&env, &api_key, "alice", &verifier).await;
    let short = pb::CreateUserRequest {
        code_verifier: "too-short".into(),
        ..create_user_request(&code, &app_id, phone("alice-phone"))
    };
    let refused = env
        .registration()
        .await
        .create_user(short)
        .await
        .expect_err("a malformed verifier");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("code_verifier:"), "{refused:?}");
    assert!(!refused.message().contains("too-short"), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_verifier_counts_as_a_failed_credential() {
    record_logs();
    let env = rate_limits_support::start(&[(FAILED_AUTH_PER_ADDRESS, "3/h")]).await;
    let (app_id, api_key) = env.app_with_key().await;
    let verifier = new_verifier();
    // Minted first: the address about to be blocked is authcode's caller
    // too.
    let code = mint_bound(&env, &api_key, "alice", &verifier).await;
    for index in 0..3 {
        assert_denied(
            redeem(
                &env,
                &code,
                &app_id,
                &format!("thief-{index}"),
                Some(&new_verifier()),
            )
            .await,
            "does not match",
        );
    }
    // The address is now blocked, even for the right verifier.
    assert_limited(
        redeem(&env, &code, &app_id, "alice-phone", Some(&verifier)).await,
        "failed_auth_per_address",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_carries_the_challenge_the_verifier_and_the_setting() {
    use devicelink_e2e::gateway::{Gateway, assert_error, create_user_body};
    use serde_json::json;

    record_logs();
    let env = TestEnv::start().await;
    let gateway = Gateway::start(&env).await;
    let (app_id, api_key) = env.app_with_key().await;

    let stored = gateway
        .call_admin(
            "PUT",
            &format!("/v1/admin/apps/{app_id}/security"),
            Some(ADMIN_TOKEN),
            Some(json!({"require_code_challenge": true})),
        )
        .await
        .ok();
    assert_eq!(stored["security"]["require_code_challenge"], true);
    let app = gateway.admin_get_app(&app_id).await;
    assert_eq!(app["app"]["security"]["require_code_challenge"], true);

    // The setting was stored before the key's first use: no cache to wait
    // for.
    let body = assert_error(
        &gateway
            .call(
                "POST",
                "/v1/auth-codes",
                Some(&api_key),
                Some(json!({"external_id": "alice"})),
            )
            .await,
        &[400],
        3,
    );
    assert!(
        body.to_string()
            .contains("this app requires code_challenge"),
        "{body}"
    );
    let verifier = new_verifier();
    let minted = gateway
        .call(
            "POST",
            "/v1/auth-codes",
            Some(&api_key),
            Some(json!({
                "external_id": "alice",
                "code_challenge": challenge_of(&verifier),
                "code_challenge_method": "S256",
            })),
        )
        .await
        .ok();
    let code = minted["auth_code"].as_str().expect("a code");

    let without = create_user_body(code, &app_id, "alice-phone", "FORM_FACTOR_PHONE");
    let body = assert_error(
        &gateway
            .call("POST", "/v1/users", None, Some(without.clone()))
            .await,
        &[403],
        7,
    );
    assert!(body.to_string().contains("code_verifier"), "{body}");
    let mut with = without;
    with["code_verifier"] = json!(verifier.expose());
    let created = gateway
        .call("POST", "/v1/users", None, Some(with))
        .await
        .ok();
    assert_eq!(created["restored"], false, "{created}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refused_proof_is_audited_once_without_the_verifier() {
    let _logs = record_logs();
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let verifier = new_verifier();
    let code = mint_bound(&env, &api_key, "mira", &verifier).await;
    let wrong = new_verifier();

    assert_denied(redeem(&env, &code, &app_id, "thief", None).await, "");
    assert_denied(
        redeem(&env, &code, &app_id, "thief", Some(&wrong)).await,
        "",
    );
    redeem(&env, &code, &app_id, "phone", Some(&verifier))
        .await
        .expect("the device redeems its code");

    let events =
        await_audit_events(&env, &app_id, &[pb::AuditEventType::RedemptionRefused], 2).await;
    for event in &events {
        let Some(pb::audit_event::Payload::RedemptionRefused(refused)) = &event.payload else {
            panic!("not a refused redemption: {event:?}");
        };
        assert_eq!(
            refused.refusal,
            pb::RedemptionRefusal::VerifierMismatch as i32,
            "{event:?}"
        );
        assert_eq!(event.reason, "verifier_mismatch", "{event:?}");
        let printed = format!("{event:?}");
        for secret in [verifier.expose(), wrong.expose(), code.as_str()] {
            assert!(!printed.contains(secret), "{printed}");
        }
    }
}
