//! The REST gateway's own answers: every error through the real Envoy
//! (configured by deploy/envoy/envoy.yaml, as in `rest_gateway.rs`) is
//! `google.rpc.Status` JSON with the HTTP status of its gRPC code, on the
//! public and the admin listener alike.
//!
//! Envoy comes from `DEVICELINK_ENVOY_BIN`, else `envoy` on `PATH`;
//! `deploy/gateway/install-tools.sh` installs the pinned one. Without Envoy
//! the test fails: a gateway that was never run is not a tested gateway.

use devicelink_e2e::gateway::*;
use devicelink_e2e::*;
use serde_json::{Value, json};

/// Where a request of [`gateway_answers_are_json_with_the_right_status`] goes.
#[derive(Clone, Copy, Debug)]
enum Listener {
    Public,
    Admin,
}

/// A request of [`gateway_answers_are_json_with_the_right_status`] and its
/// answer: (listener, method, path, credential, raw body, HTTP status, gRPC
/// code, the `Allow` header of a 405).
type Case<'a> = (
    Listener,
    &'a str,
    &'a str,
    Option<&'a str>,
    &'a str,
    u16,
    i64,
    Option<&'a str>,
);

/// Envoy's own answers (no route, an undeclared method, a missing
/// credential, a body the transcoder cannot read) are `google.rpc.Status`
/// JSON with the HTTP status of their gRPC code, on both listeners, as the
/// services' errors are; a missing credential is 401 whatever the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_answers_are_json_with_the_right_status() {
    use Listener::{Admin, Public};
    let env = TestEnv::start().await;
    let gateway = Gateway::start(&env).await;
    let (app_id, api_key) = env.app_with_key().await;
    let code = env.mint(&api_key, "json-user").await;
    let created = gateway
        .call(
            "POST",
            "/v1/users",
            None,
            Some(create_user_body(
                &code,
                &app_id,
                "json-phone",
                "FORM_FACTOR_PHONE",
            )),
        )
        .await
        .ok();
    let install_token = created["install_token"].as_str().expect("a token");
    let app_path = format!("/v1/admin/apps/{app_id}");
    let keys_path = format!("/v1/admin/apps/{app_id}/api-keys");

    let cases: Vec<Case> = vec![
        // A missing credential is 401 before the body is read.
        (
            Public,
            "POST",
            "/v1/auth-codes",
            None,
            "[null, null]",
            401,
            16,
            None,
        ),
        (
            Public,
            "POST",
            "/v1/auth-codes",
            Some(""),
            "{\"external_id\": 1}",
            401,
            16,
            None,
        ),
        (Public, "GET", "/v1/install/status", None, "", 401, 16, None),
        (
            Public,
            "GET",
            "/v1/install/status:watch",
            None,
            "",
            401,
            16,
            None,
        ),
        (
            Public,
            "POST",
            "/v1/install:reset",
            None,
            "[null, null]",
            401,
            16,
            None,
        ),
        (
            Admin,
            "POST",
            "/v1/admin/apps",
            None,
            "[null, null]",
            401,
            16,
            None,
        ),
        (
            Admin,
            "POST",
            &keys_path,
            None,
            "{\"ttl_seconds\": \"\"}",
            401,
            16,
            None,
        ),
        // Bodies the transcoder cannot read, credentials present.
        (
            Public,
            "POST",
            "/v1/auth-codes",
            Some(&api_key),
            "[null, null]",
            400,
            3,
            None,
        ),
        (
            Public,
            "POST",
            "/v1/auth-codes",
            Some(&api_key),
            "not json",
            400,
            3,
            None,
        ),
        (
            Public,
            "POST",
            "/v1/auth-codes",
            Some(&api_key),
            "{\"external_id\": {}}",
            400,
            3,
            None,
        ),
        (
            Public,
            "POST",
            "/v1/users",
            None,
            "[null, null]",
            400,
            3,
            None,
        ),
        (
            Public,
            "POST",
            "/v1/users",
            None,
            "{\"device\": 5}",
            400,
            3,
            None,
        ),
        (
            Public,
            "POST",
            "/v1/install:reset",
            Some(install_token),
            "[null, null]",
            400,
            3,
            None,
        ),
        (
            Admin,
            "POST",
            &keys_path,
            Some(ADMIN_TOKEN),
            "{\"ttl_seconds\": \"\"}",
            400,
            3,
            None,
        ),
        (
            Admin,
            "POST",
            "/v1/admin/apps",
            Some(ADMIN_TOKEN),
            "[null, null]",
            400,
            3,
            None,
        ),
        // A method the path does not declare.
        (
            Public,
            "TRACE",
            "/v1/auth-codes",
            Some(&api_key),
            "",
            405,
            12,
            Some("POST"),
        ),
        (
            Public,
            "PUT",
            "/v1/users",
            None,
            "{}",
            405,
            12,
            Some("POST"),
        ),
        (
            Public,
            "DELETE",
            "/v1/install/status",
            Some(install_token),
            "",
            405,
            12,
            Some("GET"),
        ),
        (
            Admin,
            "DELETE",
            &app_path,
            Some(ADMIN_TOKEN),
            "",
            405,
            12,
            Some("GET"),
        ),
        (
            Admin,
            "PATCH",
            &keys_path,
            Some(ADMIN_TOKEN),
            "{}",
            405,
            12,
            Some("GET, POST"),
        ),
        // No such path.
        (Public, "GET", "/v1/nowhere", None, "", 404, 5, None),
        (
            Public,
            "POST",
            "/v1/admin/apps",
            Some(ADMIN_TOKEN),
            "{\"name\": \"x\"}",
            404,
            5,
            None,
        ),
        (
            Admin,
            "GET",
            "/v1/admin/nowhere",
            Some(ADMIN_TOKEN),
            "",
            404,
            5,
            None,
        ),
        (
            Admin,
            "GET",
            "/v1/auth-codes",
            Some(ADMIN_TOKEN),
            "",
            404,
            5,
            None,
        ),
    ];
    for (listener, method, path, token, body, status, grpc_code, allow) in cases {
        let response = match listener {
            Public => gateway.call_raw(method, path, token, body).await,
            Admin => gateway.call_admin_raw(method, path, token, body).await,
        };
        let context = format!("{listener:?} {method} {path} (credential {token:?}, body {body:?})");
        assert_eq!(
            response.status,
            status,
            "{context}: {:?} {}",
            response.headers,
            response.text()
        );
        assert_eq!(
            response.header("content-type"),
            Some("application/json"),
            "{context}: {}",
            response.text()
        );
        let error: Value = serde_json::from_slice(&response.body)
            .unwrap_or_else(|_| panic!("{context}: not JSON: {}", response.text()));
        assert_eq!(error["code"], grpc_code, "{context}: {error}");
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{context}: a readable message in {error}"
        );
        assert_eq!(error["details"], json!([]), "{context}: {error}");
        assert_eq!(
            response.header("allow"),
            allow,
            "{context}: the Allow header"
        );
    }

    // An SDK configuration with an empty key is refused: Envoy 1.40's
    // transcoder crashes printing one, so storing it would take the gateway
    // down at the app's next GetApp or CreateUser.
    let sdk_path = format!("/v1/admin/apps/{app_id}/sdk-config");
    let empty_key = gateway
        .call_admin_raw("PUT", &sdk_path, Some(ADMIN_TOKEN), "{\"a\": {\"\": 1}}")
        .await;
    let body = assert_error(&empty_key, &[400], 3);
    assert!(body.to_string().contains("sdk_config"), "{body}");
    gateway
        .call_admin("GET", &app_path, Some(ADMIN_TOKEN), None)
        .await
        .ok();

    // The probe's `ok` stays as it was.
    let health = gateway.call("GET", "/healthz", None, None).await;
    assert_eq!((health.status, health.text().as_str()), (200, "ok\n"));
}
