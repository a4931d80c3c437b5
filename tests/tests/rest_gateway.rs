//! The REST gateway end to end: the real Envoy, configured by
//! deploy/envoy/envoy.yaml (only its addresses and descriptor path swapped
//! for the test's), transcodes REST/JSON to both in-process services, and a
//! plain HTTP/1.1 client drives the whole flow and its errors through it.
//!
//! Envoy comes from `DEVICELINK_ENVOY_BIN`, else `envoy` on `PATH`;
//! `deploy/gateway/install-tools.sh` installs the pinned one. Without Envoy
//! the test fails: a gateway that was never run is not a tested gateway.

use std::time::Duration;

use devicelink_e2e::gateway::*;
use devicelink_e2e::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_flow_works_over_rest_through_envoy() {
    let env = TestEnv::start().await;
    let gateway = Gateway::start(&env).await;

    // The public listener routes no admin path, REST or gRPC.
    let public_admin = gateway
        .call(
            "POST",
            "/v1/admin/apps",
            Some(ADMIN_TOKEN),
            Some(json!({"name": "public app"})),
        )
        .await;
    assert_eq!(public_admin.status, 404, "{}", public_admin.text());
    let public_grpc = devicelink_shared::pb::admin_service_client::AdminServiceClient::new(
        connect(gateway.addr).await,
    )
    .create_app(authorized(
        devicelink_shared::pb::CreateAppRequest {
            name: "grpc through the public listener".into(),
        },
        ADMIN_TOKEN,
    ))
    .await
    .expect_err("the public listener does not route AdminService");
    assert_eq!(
        public_grpc.code(),
        tonic::Code::Unimplemented,
        "{public_grpc:?}"
    );
    // A gRPC caller's local replies are not JSON: its message stays text.
    assert!(!public_grpc.message().starts_with('{'), "{public_grpc:?}");

    // Admin, on the private listener: an app, its SDK configuration and an
    // API key.
    let missing_admin = gateway
        .call_admin(
            "POST",
            "/v1/admin/apps",
            None,
            Some(json!({"name": "rest app"})),
        )
        .await;
    assert_error(&missing_admin, &[401], 16);
    let app_id = gateway
        .call_admin(
            "POST",
            "/v1/admin/apps",
            Some(ADMIN_TOKEN),
            Some(json!({"name": "rest app"})),
        )
        .await
        .ok()["app_id"]
        .as_str()
        .expect("an app id")
        .to_owned();
    let config = json!({"poll_seconds": 30, "features": {"chat": true}});
    gateway
        .call_admin(
            "PUT",
            &format!("/v1/admin/apps/{app_id}/sdk-config"),
            Some(ADMIN_TOKEN),
            Some(config.clone()),
        )
        .await
        .ok();
    let key = gateway
        .call_admin(
            "POST",
            &format!("/v1/admin/apps/{app_id}/api-keys"),
            Some(ADMIN_TOKEN),
            Some(json!({})),
        )
        .await
        .ok();
    let api_key = key["api_key"].as_str().expect("an API key").to_owned();
    let key_id = key["key_id"].as_str().expect("a key id").to_owned();
    let listed = gateway
        .call_admin(
            "GET",
            &format!("/v1/admin/apps/{app_id}/api-keys"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await
        .ok();
    assert_eq!(listed["api_keys"][0]["key_id"], key_id.as_str());
    assert_eq!(listed["api_keys"][0]["state"], "API_KEY_STATE_ACTIVE");

    // The customer's backend mints a code.
    let missing_key = gateway
        .call(
            "POST",
            "/v1/auth-codes",
            None,
            Some(json!({"external_id": "rest-user-1"})),
        )
        .await;
    assert_error(&missing_key, &[401], 16);
    let bad_external_id = gateway
        .call(
            "POST",
            "/v1/auth-codes",
            Some(&api_key),
            Some(json!({"external_id": ""})),
        )
        .await;
    let body = assert_error(&bad_external_id, &[400], 3);
    assert!(
        body.to_string().contains("external_id"),
        "the error names the field: {body}"
    );
    let minted = gateway
        .call(
            "POST",
            "/v1/auth-codes",
            Some(&api_key),
            Some(json!({"external_id": "rest-user-1"})),
        )
        .await
        .ok();
    let code = minted["auth_code"].as_str().expect("a code").to_owned();
    assert_eq!(minted["app_id"], app_id.as_str());
    assert!(
        minted["expires_at"]
            .as_str()
            .is_some_and(|at| at.ends_with('Z')),
        "an RFC 3339 expiry: {minted}"
    );

    // The app redeems it: bad input, an unknown code, then the real one.
    let mut bad_device = create_user_body(&code, &app_id, "phone-1", "FORM_FACTOR_PHONE");
    bad_device["device"]["form_factor"] = json!("FORM_FACTOR_UNSPECIFIED");
    let body = assert_error(
        &gateway
            .call("POST", "/v1/users", None, Some(bad_device))
            .await,
        &[400],
        3,
    );
    assert!(
        body.to_string().contains("device.form_factor"),
        "the error names the field: {body}"
    );
    let unknown = gateway
        .call(
            "POST",
            "/v1/users",
            None,
            Some(create_user_body(
                // Well-formed (52 characters of a-z and 2-7), never minted.
                &"a".repeat(52),
                &app_id,
                "phone-1",
                "FORM_FACTOR_PHONE",
            )),
        )
        .await;
    assert_error(&unknown, &[404], 5);

    let created = gateway
        .call(
            "POST",
            "/v1/users",
            None,
            Some(create_user_body(
                &code,
                &app_id,
                "phone-1",
                "FORM_FACTOR_PHONE",
            )),
        )
        .await
        .ok();
    assert_eq!(created["restored"], false, "{created}");
    assert_eq!(created["status"]["state"], "INSTALL_STATE_ACTIVE");
    assert_eq!(
        created["status"]["reason"],
        "INSTALL_STATE_REASON_UNSPECIFIED"
    );
    assert_eq!(created["status"]["epoch"], "1", "uint64 is a JSON string");
    assert_eq!(created["sdk_config"], config);
    let install_id = created["install_id"].as_str().expect("an install id");
    let install_token = created["install_token"]
        .as_str()
        .expect("an install token")
        .to_owned();

    // The device asks where it stands.
    let status = gateway
        .call("GET", "/v1/install/status", Some(&install_token), None)
        .await
        .ok();
    assert_eq!(status["status"]["install_id"], install_id);
    assert_eq!(status["status"]["state"], "INSTALL_STATE_ACTIVE");
    assert_error(
        &gateway.call("GET", "/v1/install/status", None, None).await,
        &[401],
        16,
    );

    // The same device cannot take another user while it holds this one.
    let other_code = gateway
        .call(
            "POST",
            "/v1/auth-codes",
            Some(&api_key),
            Some(json!({"external_id": "rest-user-2"})),
        )
        .await
        .ok()["auth_code"]
        .as_str()
        .expect("a code")
        .to_owned();
    let taken = gateway
        .call(
            "POST",
            "/v1/users",
            None,
            Some(create_user_body(
                &other_code,
                &app_id,
                "phone-1",
                "FORM_FACTOR_PHONE",
            )),
        )
        .await;
    // FAILED_PRECONDITION is HTTP 409: the request is well formed, the
    // state it meets is not (the transcoder alone would say 400).
    let body = assert_error(&taken, &[409], 9);
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|message| message.contains("reset")),
        "the message says what to do: {body}"
    );

    // The operator sees the user and its install.
    let user = gateway
        .call_admin(
            "GET",
            &format!("/v1/admin/apps/{app_id}/users/rest-user-1"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await
        .ok();
    assert_eq!(user["user"]["user_id"], created["user_id"]);
    assert_eq!(user["user"]["installs"][0]["device_id"], "phone-1");

    // A watch over REST: a JSON array streamed element by element, first
    // the current status...
    let mut watch = TcpStream::connect(gateway.addr)
        .await
        .expect("connect for the watch");
    watch
        .write_all(
            format!(
                "GET /v1/install/status:watch HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\
                 authorization: Bearer {install_token}\r\n\r\n",
                gateway.addr
            )
            .as_bytes(),
        )
        .await
        .expect("send the watch");
    let mut watched = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !String::from_utf8_lossy(&watched).contains("INSTALL_STATE_ACTIVE") {
            let mut chunk = [0u8; 4096];
            let read = watch.read(&mut chunk).await.expect("read the watch");
            assert!(
                read > 0,
                "the watch ended early: {}",
                String::from_utf8_lossy(&watched)
            );
            watched.extend_from_slice(&chunk[..read]);
        }
    })
    .await
    .expect("the current status arrives at once");

    // Reset: the install ends and its token stops working.
    let reset = gateway
        .call(
            "POST",
            "/v1/install:reset",
            Some(&install_token),
            Some(json!({})),
        )
        .await
        .ok();
    assert_eq!(reset, json!({}));
    // ... and the watch hears of the reset, then ends.
    tokio::time::timeout(Duration::from_secs(10), watch.read_to_end(&mut watched))
        .await
        .expect("the watch ends after the reset")
        .expect("read the watch");
    let watched = parse_response(&watched).expect("an HTTP response");
    assert_eq!(watched.status, 200, "{}", watched.text());
    let states: Vec<Value> = watched
        .json()
        .as_array()
        .expect("a JSON array of statuses")
        .iter()
        .map(|element| element["status"]["state"].clone())
        .collect();
    assert_eq!(
        states,
        [json!("INSTALL_STATE_ACTIVE"), json!("INSTALL_STATE_RESET")]
    );
    assert_error(
        &gateway
            .call("GET", "/v1/install/status", Some(&install_token), None)
            .await,
        &[401],
        16,
    );

    // Now the device may take the other user (the refused attempt consumed
    // nothing).
    let second = gateway
        .call(
            "POST",
            "/v1/users",
            None,
            Some(create_user_body(
                &other_code,
                &app_id,
                "phone-1",
                "FORM_FACTOR_PHONE",
            )),
        )
        .await
        .ok();
    assert_ne!(second["user_id"], created["user_id"]);
    assert_eq!(second["status"]["state"], "INSTALL_STATE_ACTIVE");

    // Revoking the key over REST.
    let revoked = gateway
        .call_admin(
            "POST",
            &format!("/v1/admin/api-keys/{key_id}:revoke"),
            Some(ADMIN_TOKEN),
            Some(json!({})),
        )
        .await
        .ok();
    assert!(revoked["revoked_at"].is_string(), "{revoked}");

    // Not a route of the API.
    let nowhere = gateway.call("GET", "/v1/nowhere", None, None).await;
    assert_eq!(nowhere.status, 404, "{}", nowhere.text());

    // The probe route, and native gRPC through the admin listener's routes.
    let health = gateway.call("GET", "/healthz", None, None).await;
    assert_eq!(health.status, 200, "{}", health.text());
    let grpc_app = devicelink_shared::pb::admin_service_client::AdminServiceClient::new(
        connect(gateway.admin_addr).await,
    )
    .create_app(authorized(
        devicelink_shared::pb::CreateAppRequest {
            name: "grpc through envoy".into(),
        },
        ADMIN_TOKEN,
    ))
    .await
    .expect("gRPC passes through Envoy's admin listener")
    .into_inner();
    assert!(!grpc_app.app_id.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_call_is_429_with_retry_after_through_envoy() {
    let mut limits = devicelink_shared::config::LimitsConfig::off();
    limits.redeem_per_device =
        devicelink_shared::limits::Rate::parse_setting("2/min").expect("a rate");
    let env = TestEnv::start_with(TestOptions {
        limits,
        ..TestOptions::default()
    })
    .await;
    let gateway = Gateway::start(&env).await;
    let (app_id, _) = env.app_with_key().await;
    // Made-up codes from one device: the first two are looked up and are
    // unknown, the third is over the device's limit.
    let redeem = || {
        gateway.call(
            "POST",
            "/v1/users",
            None,
            Some(create_user_body(
                &"b".repeat(52),
                &app_id,
                "limited-device",
                "FORM_FACTOR_PHONE",
            )),
        )
    };
    for _ in 0..2 {
        assert_error(&redeem().await, &[404], 5);
    }
    let limited = redeem().await;
    let body = assert_error(&limited, &[429], 8);
    let retry_after: u64 = limited
        .header("retry-after")
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("a Retry-After header: {:?}", limited.headers));
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    let details = body["details"].to_string();
    assert!(details.contains("RetryInfo"), "{details}");
    assert!(details.contains("redeem_per_device"), "{details}");
}
