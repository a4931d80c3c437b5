//! Per-app rate limits (`AdminService.SetAppLimits`, shown by `GetApp`),
//! through the real services on real Postgres and Redis: stored and shown,
//! refused when they do not parse, applied to their app only, picked up by
//! running services within seconds, and `off` lifting a limit for one app.

mod rate_limits_support;

use std::time::{Duration, Instant};

use devicelink_e2e::*;
use devicelink_shared::pb;
use devicelink_shared::pb::admin_service_client::AdminServiceClient;
use rate_limits_support::*;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// How soon a change must reach a running service: the key cache's and
/// the per-app cache's two seconds, plus a read, with room for a slow CI.
const APPLIES_WITHIN: Duration = Duration::from_secs(5);

fn limits(
    mint_per_key: Option<&str>,
    mint_per_external_id: Option<&str>,
    redeem_per_device: Option<&str>,
) -> pb::AppLimits {
    pb::AppLimits {
        mint_per_key: mint_per_key.map(str::to_owned),
        mint_per_external_id: mint_per_external_id.map(str::to_owned),
        redeem_per_device: redeem_per_device.map(str::to_owned),
    }
}

async fn set_limits(
    admin: &mut AdminServiceClient<Channel>,
    app_id: &str,
    limits: pb::AppLimits,
) -> Result<pb::AppLimits, Status> {
    let request = pb::SetAppLimitsRequest {
        app_id: app_id.into(),
        limits: Some(limits),
    };
    let response = admin
        .set_app_limits(authorized(request, ADMIN_TOKEN))
        .await?;
    Ok(response.into_inner().limits.unwrap_or_default())
}

async fn get_app(admin: &mut AdminServiceClient<Channel>, app_id: &str) -> Result<pb::App, Status> {
    let request = pb::GetAppRequest {
        app_id: app_id.into(),
    };
    let response = admin.get_app(authorized(request, ADMIN_TOKEN)).await?;
    Ok(response.into_inner().app.expect("an app"))
}

/// `CreateUser` with a fresh code for `external_id`, on `device_id`.
async fn sign_in(
    env: &TestEnv,
    api_key: &str,
    app_id: &str,
    external_id: &str,
    device_id: &str,
) -> Result<pb::CreateUserResponse, Status> {
    let code = env.mint(api_key, external_id).await;
    env.registration()
        .await
        .create_user(create_user_request(&code, app_id, phone(device_id)))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_app_limits_is_shown_by_get_app_with_the_effective_rates() {
    let env = start(&[
        (MINT_PER_KEY, "100/s,burst=200"),
        (MINT_PER_EXTERNAL_ID, "10/min,burst=5"),
    ])
    .await;
    let (app_id, _) = env.app_with_key().await;
    let mut admin = env.admin().await;

    let app = get_app(&mut admin, &app_id).await.expect("GetApp");
    assert_eq!(app.app_id, app_id);
    assert_eq!(app.name, "test app");
    assert!(app.created_at.is_some());
    assert_eq!(
        app.limits,
        Some(limits(None, None, None)),
        "no own limits yet"
    );
    assert_eq!(
        app.effective_limits,
        Some(limits(
            Some("100/s,burst=200"),
            Some("10/min,burst=5"),
            Some("off")
        )),
        "the deployment's defaults"
    );

    let stored = set_limits(
        &mut admin,
        &app_id,
        limits(Some("50/s,burst=100"), Some("off"), Some("3/min")),
    )
    .await
    .expect("SetAppLimits");
    let written = limits(Some("50/s,burst=100"), Some("off"), Some("3/min,burst=3"));
    assert_eq!(stored, written);
    let app = get_app(&mut admin, &app_id).await.expect("GetApp");
    assert_eq!(app.limits.as_ref(), Some(&written));
    assert_eq!(app.effective_limits.as_ref(), Some(&written));

    // A limit left out returns to the default.
    set_limits(&mut admin, &app_id, limits(None, None, Some("off")))
        .await
        .expect("SetAppLimits");
    let app = get_app(&mut admin, &app_id).await.expect("GetApp");
    assert_eq!(app.limits, Some(limits(None, None, Some("off"))));
    assert_eq!(
        app.effective_limits,
        Some(limits(
            Some("100/s,burst=200"),
            Some("10/min,burst=5"),
            Some("off")
        ))
    );

    let unknown = "0190b3d4-0000-7000-8000-000000000000";
    let status = get_app(&mut admin, unknown).await.expect_err("no such app");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = set_limits(&mut admin, unknown, limits(Some("off"), None, None))
        .await
        .expect_err("no such app");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_that_does_not_parse_is_refused_naming_its_field() {
    let env = start(&[]).await;
    let (app_id, _) = env.app_with_key().await;
    let mut admin = env.admin().await;
    set_limits(&mut admin, &app_id, limits(Some("5/s"), None, None))
        .await
        .expect("SetAppLimits");

    let status = set_limits(
        &mut admin,
        &app_id,
        limits(Some("50/s"), Some("ten a minute"), None),
    )
    .await
    .expect_err("a bad rate is refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let fields: Vec<String> = status
        .get_error_details()
        .bad_request()
        .expect("a BadRequest detail")
        .field_violations
        .iter()
        .map(|violation| violation.field.clone())
        .collect();
    assert_eq!(fields, ["limits.mint_per_external_id"], "{status:?}");
    assert!(
        status.message().contains("limits.mint_per_external_id"),
        "{status:?}"
    );
    let app = get_app(&mut admin, &app_id).await.expect("GetApp");
    assert_eq!(
        app.limits,
        Some(limits(Some("5/s,burst=5"), None, None)),
        "a refused call stores nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_with_a_tighter_limit_is_held_to_it_while_another_keeps_the_default() {
    let env = start(&[(MINT_PER_EXTERNAL_ID, "3/h"), (REDEEM_PER_DEVICE, "3/h")]).await;
    let (tight_app, tight_key) = env.app_with_key().await;
    let (other_app, other_key) = env.app_with_key().await;
    let mut admin = env.admin().await;
    set_limits(
        &mut admin,
        &tight_app,
        limits(None, Some("1/h"), Some("1/h")),
    )
    .await
    .expect("SetAppLimits");
    let mut authcode = env.authcode().await;

    mint(&mut authcode, &tight_key, "alice")
        .await
        .expect("within the app's own limit");
    assert_limited(
        mint(&mut authcode, &tight_key, "alice").await,
        "mint_per_external_id",
    );
    for _ in 0..3 {
        mint(&mut authcode, &other_key, "alice")
            .await
            .expect("the other app keeps the default");
    }
    assert_limited(
        mint(&mut authcode, &other_key, "alice").await,
        "mint_per_external_id",
    );

    sign_in(&env, &tight_key, &tight_app, "bob", "device-a")
        .await
        .expect("within the app's own limit");
    assert_limited(
        sign_in(&env, &tight_key, &tight_app, "carol", "device-a").await,
        "redeem_per_device",
    );
    // The same user again and again: a device may re-link its own user.
    for _ in 0..3 {
        sign_in(&env, &other_key, &other_app, "bob", "device-a")
            .await
            .expect("the other app keeps the default");
    }
    assert_limited(
        sign_in(&env, &other_key, &other_app, "carol", "device-a").await,
        "redeem_per_device",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_reaches_running_services_within_seconds() {
    let env = start(&[(MINT_PER_EXTERNAL_ID, "2/h"), (REDEEM_PER_DEVICE, "2/h")]).await;
    let (app_id, api_key) = env.app_with_key().await;
    let mut authcode = env.authcode().await;
    // Both services have read the app's (absent) limits and cached them.
    sign_in(&env, &api_key, &app_id, "warm-up", "warm-up-device")
        .await
        .expect("a sign-in at the defaults");

    let mut admin = env.admin().await;
    set_limits(&mut admin, &app_id, limits(None, None, Some("1/h")))
        .await
        .expect("SetAppLimits");
    let changed_at = Instant::now();

    // Each round signs a fresh user in twice on a fresh device: the
    // default allows it (two codes for the user, two sign-ins on the
    // device), the new device limit does not.
    let mut round = 0;
    let refused = loop {
        round += 1;
        let (user, device_id) = (format!("user-{round}"), format!("device-{round}"));
        sign_in(&env, &api_key, &app_id, &user, &device_id)
            .await
            .expect("a first sign-in is within either limit");
        let second = sign_in(&env, &api_key, &app_id, &user, &device_id).await;
        if second.is_err() {
            break second;
        }
        assert!(
            changed_at.elapsed() < APPLIES_WITHIN,
            "registration still signs in at the default rate {:?} after the change",
            changed_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_limited(refused, "redeem_per_device");

    set_limits(&mut admin, &app_id, limits(None, Some("1/h"), Some("1/h")))
        .await
        .expect("SetAppLimits");
    let changed_at = Instant::now();
    // Each round mints for a fresh external id twice: the default allows
    // it, the new limit does not.
    let refused = loop {
        round += 1;
        let external_id = format!("probe-{round}");
        mint(&mut authcode, &api_key, &external_id)
            .await
            .expect("a first mint is within either limit");
        let second = mint(&mut authcode, &api_key, &external_id).await;
        if second.is_err() {
            break second;
        }
        assert!(
            changed_at.elapsed() < APPLIES_WITHIN,
            "authcode still mints at the default rate {:?} after the change",
            changed_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_limited(refused, "mint_per_external_id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_lifts_a_limit_for_one_app() {
    let env = start(&[(MINT_PER_EXTERNAL_ID, "1/h"), (REDEEM_PER_DEVICE, "1/h")]).await;
    let (free_app, free_key) = env.app_with_key().await;
    let (other_app, other_key) = env.app_with_key().await;
    let mut admin = env.admin().await;
    set_limits(
        &mut admin,
        &free_app,
        limits(None, Some("off"), Some("off")),
    )
    .await
    .expect("SetAppLimits");
    let mut authcode = env.authcode().await;

    for _ in 0..5 {
        mint(&mut authcode, &free_key, "alice")
            .await
            .expect("no limit per external id for this app");
    }
    mint(&mut authcode, &other_key, "alice")
        .await
        .expect("within the default");
    assert_limited(
        mint(&mut authcode, &other_key, "alice").await,
        "mint_per_external_id",
    );

    // The same user again and again: a device may re-link its own user.
    for _ in 0..3 {
        sign_in(&env, &free_key, &free_app, "u1", "device-a")
            .await
            .expect("no limit per device for this app");
    }
    sign_in(&env, &other_key, &other_app, "u1", "device-a")
        .await
        .expect("within the default");
    assert_limited(
        sign_in(&env, &other_key, &other_app, "u2", "device-a").await,
        "redeem_per_device",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_limits_are_set_and_shown_over_rest_through_envoy() {
    use devicelink_e2e::gateway::*;
    use serde_json::json;

    let env = start(&[(MINT_PER_EXTERNAL_ID, "10/min,burst=5")]).await;
    let gateway = Gateway::start(&env).await;
    let (app_id, _) = env.app_with_key().await;
    let limits_path = format!("/v1/admin/apps/{app_id}/limits");

    let stored = gateway
        .call_admin(
            "PUT",
            &limits_path,
            Some(ADMIN_TOKEN),
            Some(json!({"mint_per_key": "off"})),
        )
        .await
        .ok();
    assert_eq!(stored["limits"], json!({"mint_per_key": "off"}));

    let app = gateway.admin_get_app(&app_id).await;
    assert_eq!(app["app"]["app_id"], app_id.as_str());
    assert_eq!(app["app"]["limits"], json!({"mint_per_key": "off"}));
    assert_eq!(
        app["app"]["effective_limits"],
        json!({
            "mint_per_key": "off",
            "mint_per_external_id": "10/min,burst=5",
            "redeem_per_device": "off",
        })
    );

    let refused = gateway
        .call_admin(
            "PUT",
            &limits_path,
            Some(ADMIN_TOKEN),
            Some(json!({"redeem_per_device": "lots"})),
        )
        .await;
    assert_error(&refused, &[400], 3);
    assert!(
        refused.text().contains("limits.redeem_per_device"),
        "{}",
        refused.text()
    );
}
