//! Every bound the protos declare (`google.api.field_behavior` REQUIRED and
//! `devicelink.v1.rules`, read through `devicelink_shared::contract::rules`)
//! is probed through the real services, just inside and just outside: a
//! value inside must pass validation (any answer but INVALID_ARGUMENT), a
//! value outside must be refused with INVALID_ARGUMENT naming the field.
//! The probes come from the declarations, so a bound added to a proto is
//! probed without touching this file; a field this file cannot reach fails
//! the test until [`call`] learns it.

use devicelink_e2e::*;
use devicelink_shared::contract::{FieldRule, rules};
use devicelink_shared::pb;
use devicelink_shared::pb::FILE_DESCRIPTOR_SET;
use devicelink_shared::validate::Charset;
use prost_reflect::{DescriptorPool, Kind};
use tonic::Code;
use tonic_types::StatusExt;

/// A value a probe sets the field to.
#[derive(Debug, Clone)]
enum Probe {
    /// Text (an unset text field is the empty text).
    Text(String),
    /// A message field left unset.
    Unset,
    /// A number.
    Number(u64),
    /// An enum value by number.
    Enum(i32),
    /// The elements of a repeated text field.
    List(Vec<String>),
    /// A `Struct` that is exactly this many bytes as compact JSON.
    JsonBytes(usize),
    /// A `Struct` of this JSON object.
    Json(serde_json::Value),
}

impl Probe {
    fn text(&self) -> String {
        match self {
            Self::Text(text) => text.clone(),
            _ => String::new(),
        }
    }

    fn enum_value(&self) -> i32 {
        match self {
            Self::Enum(n) => *n,
            _ => 0,
        }
    }
}

/// RFC 7636's example challenge (appendix B): a valid `code_challenge`.
const RFC_CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// A character every charset allows, for padding to a length.
fn filler(charset: Option<Charset>) -> char {
    match charset {
        // Two bytes in UTF-8: bounds count characters, not bytes.
        Some(Charset::Printable) | None => 'é',
        Some(_) => 'a',
    }
}

/// `seed`, padded with the charset's filler (or cut) to `chars` characters.
fn sized(seed: &str, chars: usize, charset: Option<Charset>) -> String {
    let mut text: String = seed.chars().take(chars).collect();
    let pad = chars.saturating_sub(text.chars().count());
    text.extend(std::iter::repeat_n(filler(charset), pad));
    text
}

/// The values at the edges of `rule`, each with whether the service must
/// accept it.
fn probes(rule: &FieldRule, is_message: bool) -> Vec<(String, Probe, bool)> {
    let mut probes = Vec::new();
    let mut add = |what: String, probe: Probe, accepted: bool| probes.push((what, probe, accepted));
    if is_message {
        if rule.required {
            add("unset".into(), Probe::Unset, false);
        }
        return probes;
    }
    if !rule.accepted_enum_values.is_empty() {
        for (number, name) in rule.accepted_enum_values {
            add((*name).to_owned(), Probe::Enum(*number), true);
        }
        let beyond = rule
            .accepted_enum_values
            .iter()
            .map(|(n, _)| n)
            .max()
            .copied()
            .unwrap_or(0)
            + 1;
        add("the zero value".into(), Probe::Enum(0), false);
        add(format!("undeclared {beyond}"), Probe::Enum(beyond), false);
        return probes;
    }
    if let Some(max) = rule.max_value {
        add(format!("{max}"), Probe::Number(max), true);
        add(format!("{}", max + 1), Probe::Number(max + 1), false);
        return probes;
    }
    if let Some(max) = rule.max_json_bytes {
        add(format!("{max} JSON bytes"), Probe::JsonBytes(max), true);
        let over = max + 1;
        add(format!("{over} JSON bytes"), Probe::JsonBytes(over), false);
    }
    if rule.storable_json {
        let inside = serde_json::json!({"k": {"é 日": [1, "x", null, {"a": true}]}});
        add(format!("{inside}"), Probe::Json(inside), true);
        for outside in [
            serde_json::json!({"": 1}),
            serde_json::json!({"k": [{"": 1}]}),
            serde_json::json!({"k": "a\u{0}b"}),
            serde_json::json!({"k\u{0}": 1}),
        ] {
            add(format!("{outside}"), Probe::Json(outside), false);
        }
    }
    if rule.max_json_bytes.is_some() || rule.storable_json {
        return probes;
    }
    if !rule.one_of.is_empty() {
        for allowed in rule.one_of {
            add(
                format!("{allowed:?}"),
                Probe::List(vec![(*allowed).into()]),
                true,
            );
        }
        let unknown = format!("{}x", rule.one_of[0]);
        add(format!("{unknown:?}"), Probe::List(vec![unknown]), false);
        return probes;
    }
    // A text field.
    let charset = rule.charset;
    let min = rule.min_chars.unwrap_or(0);
    let (inside, outside) = charset_edges(charset);
    let valid_seed = inside.first().cloned().unwrap_or_default();
    if rule.required {
        add("empty".into(), Probe::Text(String::new()), false);
    } else if !matches!(charset, Some(Charset::Rate)) {
        // Empty means unset; a rate is `optional`, where empty is a value.
        add("empty".into(), Probe::Text(String::new()), true);
    }
    if min > 1 {
        add(
            format!("{min} characters"),
            Probe::Text(sized(&valid_seed, min, charset)),
            true,
        );
        let short = sized(&valid_seed, min - 1, charset);
        add(format!("{} characters", min - 1), Probe::Text(short), false);
    }
    if let Some(max) = rule.max_chars {
        add(
            format!("{max} characters"),
            Probe::Text(sized(&valid_seed, max, charset)),
            true,
        );
        let long = sized(&valid_seed, max + 1, charset);
        add(format!("{} characters", max + 1), Probe::Text(long), false);
    }
    let fit = |seed: &str| match (min, rule.max_chars) {
        (min, _) if min > 1 => sized(seed, min, charset),
        (_, Some(max)) if seed.chars().count() > max => sized(seed, max, charset),
        _ => seed.to_owned(),
    };
    for seed in inside {
        add(format!("{seed:?}"), Probe::Text(fit(&seed)), true);
    }
    for seed in outside {
        // The bad character first, so that cutting to length keeps it.
        add(format!("{seed:?}"), Probe::Text(fit(&seed)), false);
    }
    probes
}

/// Texts just inside and just outside a charset.
fn charset_edges(charset: Option<Charset>) -> (Vec<String>, Vec<String>) {
    let owned = |texts: &[&str]| texts.iter().map(|t| (*t).to_owned()).collect::<Vec<_>>();
    let uuid = uuid::Uuid::new_v4();
    match charset {
        None => (owned(&["x"]), vec![]),
        Some(Charset::Printable) => (
            owned(&["Pixel 8 ~ é 日本 \u{a0}"]),
            owned(&["\u{1f}x", "\u{7f}x", "\u{9f}x", "\nx"]),
        ),
        Some(Charset::Token) => (owned(&["!1.2-b~"]), owned(&[" x", "éx", "\u{7f}x"])),
        Some(Charset::Identifier) => (owned(&["Az09.-_"]), owned(&["/x", " x", "+x", "éx"])),
        Some(Charset::Base32) => (owned(&["az27"]), owned(&["1a", "8a", "Aa", "=a"])),
        Some(Charset::Uuid) => (
            vec![
                uuid.hyphenated().to_string(),
                uuid.simple().to_string().to_uppercase(),
                uuid.braced().to_string(),
                uuid.urn().to_string(),
            ],
            vec![
                uuid.hyphenated().to_string()[1..].to_owned(),
                format!("{}0", uuid.simple()),
                uuid.hyphenated().to_string().replace('-', "_"),
                "not-a-uuid".to_owned(),
            ],
        ),
        Some(Charset::S256Base64Url) => (
            owned(&[RFC_CHALLENGE, &format!("{}A", &RFC_CHALLENGE[..42])]),
            owned(&[
                &format!("+{}", &RFC_CHALLENGE[1..]),
                &format!("={}", &RFC_CHALLENGE[1..]),
                // The last character's spare bits set: not canonical.
                &format!("{}d", &RFC_CHALLENGE[..42]),
            ]),
        ),
        Some(Charset::PkceUnreserved) => (owned(&["Az09-._~"]), owned(&["+a", "/a", " a", "éa"])),
        Some(Charset::Rate) => (
            owned(&[
                "off",
                "1/s",
                "1000000/h,burst=1000000",
                " 5 / min , burst = 7 ",
            ]),
            owned(&[
                "0/s",
                "1000001/s",
                "5/day",
                "5/s,burst=0",
                "5/s,",
                "fast",
                "",
            ]),
        ),
    }
}

/// What a probe runs against: one app with a key, and clients.
struct Setup {
    env: TestEnv,
    app_id: String,
    api_key: String,
}

/// `json` as a protobuf `Value`.
fn protobuf_value(json: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match json {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(values) => Kind::ListValue(prost_types::ListValue {
            values: values.iter().map(protobuf_value).collect(),
        }),
        serde_json::Value::Object(object) => Kind::StructValue(protobuf_struct(object)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A JSON object as a protobuf `Struct`.
fn protobuf_struct(object: &serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: object
            .iter()
            .map(|(key, value)| (key.clone(), protobuf_value(value)))
            .collect(),
    }
}

/// A `Struct` that is `bytes` long as compact JSON: `{"k":"xx…"}`.
fn struct_of_json_bytes(bytes: usize) -> prost_types::Struct {
    let text = "x".repeat(bytes - r#"{"k":""}"#.len());
    prost_types::Struct {
        fields: [(
            "k".to_owned(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue(text)),
            },
        )]
        .into(),
    }
}

/// An answer, without its message.
fn ok<T>(result: Result<tonic::Response<T>, tonic::Status>) -> Result<(), tonic::Status> {
    result.map(drop)
}

/// A code of the right form that was never minted.
fn fresh_code() -> String {
    "a".repeat(devicelink_shared::auth_code::AUTH_CODE_LEN)
}

/// Sends a valid request of `rule`'s message with its field set to
/// `probe`; returns the field's path as violations name it and the answer.
/// `None` for a field this test has no call for.
async fn call(
    setup: &Setup,
    rule: &FieldRule,
    probe: &Probe,
) -> Option<(String, Result<(), tonic::Status>)> {
    let env = &setup.env;
    let field = rule.field;
    let name = format!(
        "{}.{}",
        rule.message.trim_start_matches("devicelink.v1."),
        field
    );
    let (path, result) = match rule.message {
        "devicelink.v1.MintAuthCodeRequest" => {
            let mut request = pb::MintAuthCodeRequest {
                external_id: "probe".into(),
                ..Default::default()
            };
            match field {
                "external_id" => request.external_id = probe.text(),
                "app_id" => request.app_id = probe.text(),
                "code_challenge" => request.code_challenge = probe.text(),
                "code_challenge_method" => {
                    // A method means something only with a challenge.
                    request.code_challenge = RFC_CHALLENGE.into();
                    request.code_challenge_method = match probe {
                        Probe::List(texts) => texts.concat(),
                        _ => probe.text(),
                    };
                }
                _ => return None,
            }
            let mut client = env.authcode().await;
            (
                field.to_owned(),
                ok(client
                    .mint_auth_code(authorized(request, &setup.api_key))
                    .await),
            )
        }
        "devicelink.v1.CreateUserRequest"
        | "devicelink.v1.AppInfo"
        | "devicelink.v1.DeviceInfo" => {
            let mut request =
                create_user_request(&fresh_code(), &setup.app_id, phone("probe-device"));
            let app = request.app.as_mut().expect("app");
            let device = request.device.as_mut().expect("device");
            match name.as_str() {
                "CreateUserRequest.auth_code" => request.auth_code = probe.text(),
                "CreateUserRequest.app_id" => request.app_id = probe.text(),
                "CreateUserRequest.app" => request.app = None,
                "CreateUserRequest.device" => request.device = None,
                "CreateUserRequest.code_verifier" => request.code_verifier = probe.text(),
                "AppInfo.app_version" => app.app_version = probe.text(),
                "AppInfo.sdk_version" => app.sdk_version = probe.text(),
                "AppInfo.bundle_id" => app.bundle_id = probe.text(),
                "DeviceInfo.device_id" => device.device_id = probe.text(),
                "DeviceInfo.model" => device.model = probe.text(),
                "DeviceInfo.os_version" => device.os_version = probe.text(),
                "DeviceInfo.platform" => device.platform = probe.enum_value(),
                "DeviceInfo.form_factor" => device.form_factor = probe.enum_value(),
                _ => return None,
            }
            let path = match rule.message {
                "devicelink.v1.AppInfo" => format!("app.{field}"),
                "devicelink.v1.DeviceInfo" => format!("device.{field}"),
                _ => field.to_owned(),
            };
            let mut client = env.registration().await;
            (path, ok(client.create_user(request).await))
        }
        _ => return admin_call(setup, &name, probe).await,
    };
    Some((path, result))
}

/// [`call`] for `AdminService`'s messages.
async fn admin_call(
    setup: &Setup,
    name: &str,
    probe: &Probe,
) -> Option<(String, Result<(), tonic::Status>)> {
    let admin_token = ADMIN_TOKEN;
    let mut admin = setup.env.admin().await;
    let app_id = setup.app_id.clone();
    let field = name.split_once('.').map(|(_, f)| f.to_owned())?;
    let result = match name {
        "CreateAppRequest.name" => ok(admin
            .create_app(authorized(
                pb::CreateAppRequest { name: probe.text() },
                admin_token,
            ))
            .await),
        "CreateApiKeyRequest.app_id"
        | "CreateApiKeyRequest.scopes"
        | "CreateApiKeyRequest.ttl_seconds" => {
            let mut request = pb::CreateApiKeyRequest {
                app_id: app_id.clone(),
                scopes: vec![],
                ttl_seconds: 60,
            };
            match probe {
                Probe::List(scopes) => request.scopes = scopes.clone(),
                Probe::Number(n) => request.ttl_seconds = *n,
                _ => request.app_id = probe.text(),
            }
            let created = admin.create_api_key(authorized(request, admin_token)).await;
            // Keys made by inside probes are revoked: an app holds at
            // most 10 active ones.
            if let Ok(created) = &created {
                let key_id = created.get_ref().key_id.clone();
                let revoke = pb::RevokeApiKeyRequest { key_id };
                // Not asserted: the probes of `key_id` judge revocation.
                if let Err(status) = admin.revoke_api_key(authorized(revoke, admin_token)).await {
                    eprintln!("could not revoke a probe's key: {status:?}");
                }
            }
            ok(created)
        }
        "ListApiKeysRequest.app_id" => ok(admin
            .list_api_keys(authorized(
                pb::ListApiKeysRequest {
                    app_id: probe.text(),
                },
                admin_token,
            ))
            .await),
        "RevokeApiKeyRequest.key_id" => ok(admin
            .revoke_api_key(authorized(
                pb::RevokeApiKeyRequest {
                    key_id: probe.text(),
                },
                admin_token,
            ))
            .await),
        "SetSdkConfigRequest.app_id" | "SetSdkConfigRequest.sdk_config" => {
            let mut request = pb::SetSdkConfigRequest {
                app_id,
                sdk_config: None,
            };
            match probe {
                Probe::JsonBytes(bytes) => request.sdk_config = Some(struct_of_json_bytes(*bytes)),
                Probe::Json(serde_json::Value::Object(object)) => {
                    request.sdk_config = Some(protobuf_struct(object));
                }
                _ => request.app_id = probe.text(),
            }
            ok(admin.set_sdk_config(authorized(request, admin_token)).await)
        }
        "GetAppRequest.app_id" => ok(admin
            .get_app(authorized(
                pb::GetAppRequest {
                    app_id: probe.text(),
                },
                admin_token,
            ))
            .await),
        "SetAppSecurityRequest.app_id" => ok(admin
            .set_app_security(authorized(
                pb::SetAppSecurityRequest {
                    app_id: probe.text(),
                    security: None,
                },
                admin_token,
            ))
            .await),
        "SetAppLimitsRequest.app_id" => ok(admin
            .set_app_limits(authorized(
                pb::SetAppLimitsRequest {
                    app_id: probe.text(),
                    limits: None,
                },
                admin_token,
            ))
            .await),
        "AppLimits.mint_per_key"
        | "AppLimits.mint_per_external_id"
        | "AppLimits.redeem_per_device" => {
            let mut limits = pb::AppLimits::default();
            let value = Some(probe.text());
            match field.as_str() {
                "mint_per_key" => limits.mint_per_key = value,
                "mint_per_external_id" => limits.mint_per_external_id = value,
                _ => limits.redeem_per_device = value,
            }
            let request = pb::SetAppLimitsRequest {
                app_id,
                limits: Some(limits),
            };
            let answer = ok(admin.set_app_limits(authorized(request, admin_token)).await);
            return Some((format!("limits.{field}"), answer));
        }
        "GetUserRequest.app_id" | "GetUserRequest.external_id" => {
            let mut request = pb::GetUserRequest {
                app_id,
                external_id: "probe".into(),
            };
            match field.as_str() {
                "app_id" => request.app_id = probe.text(),
                _ => request.external_id = probe.text(),
            }
            ok(admin.get_user(authorized(request, admin_token)).await)
        }
        "DeleteUserRequest.app_id" | "DeleteUserRequest.external_id" => {
            let mut request = pb::DeleteUserRequest {
                app_id,
                external_id: "probe".into(),
            };
            match field.as_str() {
                "app_id" => request.app_id = probe.text(),
                _ => request.external_id = probe.text(),
            }
            ok(admin.delete_user(authorized(request, admin_token)).await)
        }
        _ => return None,
    };
    Some((field, result))
}

/// The fields `status`'s `BadRequest` detail names.
fn violated_fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|bad_request| {
            bad_request
                .field_violations
                .iter()
                .map(|v| v.field.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `rule`'s field is a message, whose one bound can be REQUIRED;
/// a `Struct` is JSON, with bounds of its own.
fn is_message_field(pool: &DescriptorPool, rule: &FieldRule) -> bool {
    let message = pool
        .get_message_by_name(rule.message)
        .expect("the rule's message");
    let field = message
        .get_field_by_name(rule.field)
        .expect("the rule's field");
    matches!(field.kind(), Kind::Message(m) if m.full_name() != "google.protobuf.Struct")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_declared_bound_holds_in_the_services() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let setup = Setup {
        env,
        app_id,
        api_key,
    };

    let pool = DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("descriptor set");
    let mut disagreements = Vec::new();
    let mut probed = 0;
    for rule in rules::ALL
        .iter()
        .filter(|rule| rule.is_bounded() && !rule.output_only)
    {
        let name = format!("{}.{}", rule.message, rule.field);
        for (what, probe, accepted) in probes(rule, is_message_field(&pool, rule)) {
            let Some((path, answer)) = call(&setup, rule, &probe).await else {
                panic!("{name} declares bounds but this test has no call for it: add it to call()");
            };
            probed += 1;
            let refused = answer
                .as_ref()
                .err()
                .filter(|status| status.code() == Code::InvalidArgument);
            match (accepted, refused) {
                (true, None) => {}
                (true, Some(status)) => disagreements.push(format!(
                    "{name} = {what}: declared valid, refused: {}",
                    status.message()
                )),
                (false, Some(status)) if violated_fields(status).contains(&path) => {}
                (false, other) => disagreements.push(format!(
                    "{name} = {what}: declared invalid, the service answered {:?}",
                    other.map_or_else(
                        || format!(
                            "{:?}",
                            answer
                                .as_ref()
                                .map_err(|s| (s.code(), s.message().to_owned()))
                        ),
                        |status| format!("INVALID_ARGUMENT naming {:?}", violated_fields(status)),
                    )
                )),
            }
        }
    }
    assert!(
        disagreements.is_empty(),
        "the services and the protos disagree on {} of {probed} probes:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
    assert!(probed >= 150, "only {probed} probes ran");
    eprintln!("{probed} probes, each bound held");
}
