//! Bad input gets INVALID_ARGUMENT naming the field, never a panic and never
//! a half-written row.

use devicelink_e2e::*;
use devicelink_shared::pb;
use tonic::Code;
use tonic_types::StatusExt;

/// The fields a status's `BadRequest` detail names, in order; empty when
/// it carries none.
fn violated_fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|bad_request| {
            bad_request
                .field_violations
                .iter()
                .map(|violation| violation.field.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts that `status` is INVALID_ARGUMENT and that its `BadRequest`
/// detail names exactly `field`, as its message does.
fn assert_names_field(status: &tonic::Status, field: &str, case: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
    assert_eq!(violated_fields(status), [field], "{case}: {status:?}");
    assert!(
        status.message().contains(field),
        "{case}: {}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_user_names_each_bad_field() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let code = env.mint(&api_key, "u").await;
    let mut registration = env.registration().await;

    type Mutation = fn(&mut pb::CreateUserRequest);
    let cases: Vec<(&str, Mutation)> = vec![
        ("auth_code", |r| r.auth_code.clear()),
        ("auth_code", |r| r.auth_code = "x".repeat(10_000)),
        ("auth_code", |r| r.auth_code = "DROP TABLE users;".into()),
        ("app_id", |r| r.app_id = "not-a-uuid".into()),
        ("app", |r| r.app = None),
        ("app.app_version", |r| {
            r.app.as_mut().expect("app").app_version = "1 0".into()
        }),
        ("app.sdk_version", |r| {
            r.app.as_mut().expect("app").sdk_version = "v".repeat(65)
        }),
        ("app.bundle_id", |r| {
            r.app.as_mut().expect("app").bundle_id = "com/../evil".into()
        }),
        ("device", |r| r.device = None),
        ("device.device_id", |r| {
            r.device.as_mut().expect("device").device_id.clear()
        }),
        ("device.device_id", |r| {
            r.device.as_mut().expect("device").device_id = "d".repeat(129)
        }),
        ("device.platform", |r| {
            r.device.as_mut().expect("device").platform = 0
        }),
        ("device.platform", |r| {
            r.device.as_mut().expect("device").platform = 42
        }),
        ("device.form_factor", |r| {
            r.device.as_mut().expect("device").form_factor = 0
        }),
        ("device.model", |r| {
            r.device.as_mut().expect("device").model = "a\u{0}b".into()
        }),
        ("device.os_version", |r| {
            r.device.as_mut().expect("device").os_version.clear()
        }),
    ];
    for (field, mutate) in cases {
        let mut request = create_user_request(&code, &app_id, phone("p"));
        mutate(&mut request);
        let status = registration.create_user(request).await.expect_err(field);
        assert_names_field(&status, field, field);
    }

    // None of that wrote anything, and the code still works.
    let db = env.database().await;
    let users: i64 = db
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(users, 0);
    registration
        .create_user(create_user_request(&code, &app_id, phone("p")))
        .await
        .expect("the code was not consumed by bad requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_codes_and_tokens_are_refused() {
    let env = TestEnv::start().await;
    let (app_id, _) = env.app_with_key().await;
    let mut registration = env.registration().await;
    let unknown_code = devicelink_shared::auth_code::AuthCode::generate();
    let status = registration
        .create_user(create_user_request(
            unknown_code.expose(),
            &app_id,
            phone("p"),
        ))
        .await
        .expect_err("unknown code");
    assert_eq!(status.code(), Code::NotFound);

    for token in [
        "",
        "garbage",
        "dlit_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ] {
        let request = if token.is_empty() {
            tonic::Request::new(pb::GetInstallStatusRequest {})
        } else {
            authorized(pb::GetInstallStatusRequest {}, token)
        };
        let status = registration
            .get_install_status(request)
            .await
            .expect_err("no install");
        assert_eq!(status.code(), Code::Unauthenticated, "{token:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_and_admin_calls_name_bad_fields() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let mut authcode = env.authcode().await;
    for (external_id, app, field) in [
        ("", "", "external_id"),
        ("x\ny", "", "external_id"),
        (&"x".repeat(257) as &str, "", "external_id"),
        ("u", "nope", "app_id"),
    ] {
        let status = authcode
            .mint_auth_code(authorized(
                pb::MintAuthCodeRequest {
                    external_id: external_id.into(),
                    app_id: app.into(),
                    ..Default::default()
                },
                &api_key,
            ))
            .await
            .expect_err("bad mint");
        assert_names_field(&status, field, &format!("mint {external_id:?} {app:?}"));
    }

    let mut admin = env.admin().await;
    let status = admin
        .create_app(authorized(
            pb::CreateAppRequest {
                name: String::new(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect_err("no name");
    assert_names_field(&status, "name", "create_app without a name");
    let status = admin
        .create_api_key(authorized(
            pb::CreateApiKeyRequest {
                app_id: app_id.clone(),
                scopes: vec!["everything".into()],
                ttl_seconds: 0,
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect_err("unknown scope");
    assert_names_field(&status, "scopes", "create_api_key with an unknown scope");
    let status = admin
        .create_api_key(authorized(
            pb::CreateApiKeyRequest {
                app_id: app_id.clone(),
                scopes: vec![],
                ttl_seconds: u64::MAX,
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect_err("a TTL past two years");
    assert_names_field(&status, "ttl_seconds", "create_api_key with a huge TTL");
    let status = admin
        .create_api_key(authorized(
            pb::CreateApiKeyRequest {
                app_id: uuid::Uuid::new_v4().to_string(),
                ..Default::default()
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect_err("unknown app");
    assert_eq!(status.code(), Code::NotFound);
    let status = admin
        .revoke_api_key(authorized(
            pb::RevokeApiKeyRequest { key_id: "x".into() },
            ADMIN_TOKEN,
        ))
        .await
        .expect_err("bad key id");
    assert_names_field(&status, "key_id", "revoke_api_key with a bad key id");
    let status = admin
        .get_user(authorized(
            pb::GetUserRequest {
                app_id,
                external_id: "nobody".into(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect_err("no such user");
    assert_eq!(status.code(), Code::NotFound);
}
