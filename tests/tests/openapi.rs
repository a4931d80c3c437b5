//! The descriptor set carries what the gateway needs, and the committed
//! OpenAPI document matches the protos and describes every public method
//! with its credential, body and parameters, and every bound the protos
//! declare.

use std::path::Path;

use devicelink_e2e::openapi::{PACKAGE, generate};
use devicelink_shared::contract::{FieldRule, rules};
use devicelink_shared::pb::FILE_DESCRIPTOR_SET;
use devicelink_shared::validate::Charset;
use prost_reflect::DescriptorPool;
use serde_json::{Value, json};

/// Where the committed document lives, from the repository's root.
const COMMITTED: &str = "deploy/openapi/devicelink.openapi.json";

fn generated() -> Value {
    let text = generate(FILE_DESCRIPTOR_SET).expect("the document generates");
    serde_json::from_str(&text).expect("the document is JSON")
}

/// The drift check: the committed document is what the protos give.
#[test]
fn the_committed_document_matches_the_protos() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let committed_path = root.join(COMMITTED);
    let fresh = generate(FILE_DESCRIPTOR_SET).expect("the document generates");
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    let same = serde_json::from_str::<Value>(&committed)
        .is_ok_and(|committed| committed == serde_json::from_str::<Value>(&fresh).expect("JSON"));
    if !same {
        let dir = std::env::temp_dir().join(format!("devicelink-openapi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        let fresh_path = dir.join("devicelink.openapi.json");
        std::fs::write(&fresh_path, &fresh).expect("write the fresh document");
        panic!(
            "{COMMITTED} does not match proto/ (the fresh document is {}; compare them). \
             Regenerate it with:\n  cargo run -p devicelink-e2e --bin devicelink-openapi -- {COMMITTED}",
            fresh_path.display()
        );
    }
}

#[test]
fn every_method_of_every_service_has_an_operation() {
    let document = generated();
    let pool = DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("descriptor set");
    let mut expected: Vec<String> = pool
        .services()
        .filter(|s| s.package_name() == PACKAGE)
        .flat_map(|s| {
            s.methods()
                .map(|m| format!("{}_{}", s.name(), m.name()))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut found: Vec<String> = document["paths"]
        .as_object()
        .expect("paths")
        .values()
        .flat_map(|operations| operations.as_object().expect("operations").values())
        .map(|operation| operation["operationId"].as_str().expect("an id").to_owned())
        .collect();
    expected.sort();
    found.sort();
    assert_eq!(found, expected);
    assert_eq!(found.len(), 17);
}

#[test]
fn operations_carry_the_contract() {
    let document = generated();
    let paths = &document["paths"];
    let mint = &paths["/v1/auth-codes"]["post"];
    assert_eq!(mint["security"], json!([{"apiKey": []}]));
    assert_eq!(
        mint["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/devicelink.v1.MintAuthCodeRequest"
    );
    let create_user = &paths["/v1/users"]["post"];
    assert_eq!(create_user["security"], json!([]));
    let key = &paths["/v1/admin/apps/{app_id}/api-keys"]["post"];
    assert_eq!(key["parameters"][0]["name"], "app_id");
    assert_eq!(key["parameters"][0]["in"], "path");
    let key_body = &key["requestBody"]["content"]["application/json"]["schema"];
    assert!(key_body["properties"].get("app_id").is_none(), "{key_body}");
    assert!(key_body["properties"].get("ttl_seconds").is_some());
    let sdk_config = &paths["/v1/admin/apps/{app_id}/sdk-config"]["put"];
    assert_eq!(
        sdk_config["requestBody"]["content"]["application/json"]["schema"]["type"],
        json!(["object", "null"]),
        "a null body leaves the configuration empty"
    );
    let watch = &paths["/v1/install/status:watch"]["get"];
    assert_eq!(
        watch["responses"]["200"]["content"]["application/json"]["schema"]["type"],
        "array"
    );
    let schemas = &document["components"]["schemas"];
    let status = &schemas["devicelink.v1.InstallStatus"]["properties"];
    assert_eq!(status["epoch"]["type"], "string", "uint64 is a JSON string");
    assert_eq!(status["changed_at"]["format"], "date-time");
    assert_eq!(
        schemas["devicelink.v1.FormFactor"]["enum"],
        json!([
            "FORM_FACTOR_UNSPECIFIED",
            "FORM_FACTOR_PHONE",
            "FORM_FACTOR_TABLET"
        ])
    );
    assert!(schemas.get("google.rpc.Status").is_some());
}

/// What Envoy's transcoder needs from the descriptor set.
#[test]
fn the_descriptor_set_serves_the_gateway() {
    let pool = DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("the descriptor set decodes");
    for service in [
        "devicelink.v1.AuthCodeService",
        "devicelink.v1.RegistrationService",
        "devicelink.v1.AdminService",
    ] {
        assert!(pool.get_service_by_name(service).is_some(), "{service}");
    }
    // JSON error bodies: the status and the detail the services attach.
    for message in ["google.rpc.Status", "google.rpc.BadRequest"] {
        assert!(pool.get_message_by_name(message).is_some(), "{message}");
    }
    // The http options survived encoding.
    let http = pool
        .get_extension_by_name("google.api.http")
        .expect("google.api.http");
    let create_user = pool
        .get_service_by_name("devicelink.v1.RegistrationService")
        .and_then(|service| service.methods().find(|m| m.name() == "CreateUser"))
        .expect("CreateUser");
    let options = create_user.options();
    let rule = options.get_extension(&http);
    let post = rule
        .as_message()
        .and_then(|rule| rule.get_field_by_name("post"))
        .and_then(|post| post.as_str().map(str::to_owned));
    assert_eq!(post.as_deref(), Some("/v1/users"));
}

/// The schema the document gives the field of `rule`: in the message's
/// component, or, for a request message the document inlines, as a path
/// parameter or a property of the operation's body.
fn schema_of(document: &Value, pool: &DescriptorPool, rule: &FieldRule) -> (Value, bool) {
    let schemas = &document["components"]["schemas"];
    if let Some(message) = schemas.get(rule.message) {
        let required = message["required"]
            .as_array()
            .is_some_and(|names| names.contains(&json!(rule.field)));
        return (message["properties"][rule.field].clone(), required);
    }
    let method = pool
        .services()
        .flat_map(|service| service.methods().collect::<Vec<_>>())
        .find(|method| method.input().full_name() == rule.message)
        .unwrap_or_else(|| panic!("{} is in no component and no request", rule.message));
    let operation_id = format!("{}_{}", method.parent_service().name(), method.name());
    let operation = document["paths"]
        .as_object()
        .expect("paths")
        .values()
        .flat_map(|operations| operations.as_object().expect("operations").values())
        .find(|operation| operation["operationId"] == operation_id.as_str())
        .unwrap_or_else(|| panic!("no operation {operation_id}"));
    if let Some(parameter) = operation["parameters"]
        .as_array()
        .and_then(|parameters| parameters.iter().find(|p| p["name"] == rule.field))
    {
        return (parameter["schema"].clone(), parameter["required"] == true);
    }
    let body = &operation["requestBody"]["content"]["application/json"]["schema"];
    match body["properties"].get(rule.field) {
        Some(property) => {
            let required = body["required"]
                .as_array()
                .is_some_and(|names| names.contains(&json!(rule.field)));
            (property.clone(), required)
        }
        // The body is the field itself (`body: "sdk_config"`).
        None => (body.clone(), false),
    }
}

/// Every bound the protos declare, and every output-only field, is in the
/// document where a client reads it: the document is made from the same
/// rules the services check, and this keeps it so.
#[test]
fn the_document_states_every_declared_bound() {
    let document = generated();
    let pool = DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("descriptor set");
    let mut checked = 0;
    for rule in rules::ALL
        .iter()
        .filter(|r| r.is_bounded() || r.output_only)
    {
        let (schema, required) = schema_of(&document, &pool, rule);
        let name = format!("{}.{}", rule.message, rule.field);
        assert_eq!(required, rule.required, "{name}: required? {schema}");
        if rule.output_only {
            assert_eq!(schema["readOnly"], true, "{name}: readOnly {schema}");
        }
        // `type` is a name, or a name and "null" for a field that takes null;
        // the bounds are on the first alternative of an `anyOf`, and on a
        // list's elements.
        let is_array = schema["type"] == "array" || schema["type"][0] == "array";
        let text = if is_array {
            match schema["items"]["$ref"].as_str() {
                Some(element) => {
                    let element = element.trim_start_matches("#/components/schemas/");
                    document["components"]["schemas"][element]["anyOf"][0].clone()
                }
                None => schema["items"].clone(),
            }
        } else if let Some(first) = schema["anyOf"].get(0) {
            first.clone()
        } else {
            schema.clone()
        };
        if let Some(max) = rule.max_chars {
            assert_eq!(text["maxLength"], json!(max), "{name}: {schema}");
        }
        if rule.required && text["type"] == "string" && rule.accepted_enum_values.is_empty() {
            let min = rule.min_chars.unwrap_or(1).max(1);
            assert_eq!(text["minLength"], json!(min), "{name}: {schema}");
        }
        if let Some(charset) = rule.charset {
            let pattern = text["pattern"].as_str().unwrap_or_default();
            // Or, for a text that may be empty but is longer once set, the
            // class with the length bounds (checked below).
            let max = rule
                .max_chars
                .map(|max| max.to_string())
                .unwrap_or_default();
            let min = rule.min_chars.unwrap_or(0);
            let with_length = charset
                .pattern()
                .replace("*$", &format!("{{{min},{max}}}$"));
            assert!(
                pattern.ends_with(&charset.pattern()) || pattern.ends_with(&with_length),
                "{name}: {schema}"
            );
        }
        if !rule.accepted_enum_values.is_empty() {
            let names: Vec<&str> = rule.accepted_enum_values.iter().map(|(_, n)| *n).collect();
            assert_eq!(text["enum"], json!(names), "{name}: {schema}");
        }
        if !rule.one_of.is_empty() {
            // A singular text that may be left out lists the empty text
            // (and null) too: the service takes both as unset.
            let texts: Vec<&str> = text["enum"]
                .as_array()
                .map(|values| values.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let (empty, set): (Vec<&str>, Vec<&str>) = texts.iter().partition(|t| t.is_empty());
            assert_eq!(set, rule.one_of, "{name}: {schema}");
            assert_eq!(
                empty.is_empty(),
                rule.required || is_array,
                "{name}: {schema}"
            );
        }
        if let Some(max) = rule.max_value {
            assert_eq!(text["maximum"], json!(max), "{name}: {schema}");
            // The number as text, as the transcoder also reads it.
            let pattern = schema["anyOf"][1]["pattern"].as_str().expect("a text form");
            let pattern = regex::Regex::new(pattern).expect("the pattern compiles");
            for n in [
                0,
                1,
                9,
                10,
                99,
                max / 2,
                max - 1,
                max,
                max + 1,
                max * 10,
                u64::MAX,
            ] {
                for text in [n.to_string(), format!("+{n}"), format!("00{n}")] {
                    assert_eq!(pattern.is_match(&text), n <= max, "{name}: {text}");
                }
            }
            assert!(!pattern.is_match("-0") && !pattern.is_match(" 5") && !pattern.is_match("5.0"));
        }
        if let Some(max) = rule.max_json_bytes {
            assert_eq!(text["x-max-json-bytes"], json!(max), "{name}: {schema}");
        }
        if rule.storable_json {
            assert_eq!(text["propertyNames"]["minLength"], 1, "{name}: {schema}");
            let values = text["additionalProperties"]["$ref"]
                .as_str()
                .unwrap_or_default();
            assert!(values.ends_with("StorableJsonValue"), "{name}: {schema}");
        }
        // An empty text the service takes as "unset" must be one the
        // document allows, and then the pattern carries the length.
        if !rule.required && rule.min_chars.unwrap_or(0) > 1 {
            let min = rule.min_chars.unwrap_or(0);
            let pattern = regex::Regex::new(text["pattern"].as_str().unwrap_or("^$"))
                .expect("a pattern Rust's regex reads");
            let seed = match rule.charset {
                Some(Charset::S256Base64Url) => "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
                _ => "a",
            };
            let at = |chars: usize| seed.chars().cycle().take(chars).collect::<String>();
            assert!(pattern.is_match(""), "{name}: {schema}");
            assert!(pattern.is_match(&at(min)), "{name}: {schema}");
            assert!(!pattern.is_match(&at(min - 1)), "{name}: {schema}");
            if let Some(max) = rule.max_chars {
                assert!(pattern.is_match(&at(max)), "{name}: {schema}");
                assert!(!pattern.is_match(&at(max + 1)), "{name}: {schema}");
            }
        }
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} fields checked");
}

/// Each charset's `pattern` accepts exactly what the services' check
/// accepts, over texts at and around every edge of every set.
#[test]
fn patterns_match_what_the_services_accept() {
    let samples = [
        "",
        "a",
        "A-z_0.9",
        "1.2.3",
        "com.example.app",
        "iPhone15,2",
        "Pixel 8",
        "x y",
        "tab\there",
        "line\n",
        "\u{7f}",
        "\u{85}",
        "\u{9f}",
        "\u{a0}",
        "é",
        "日本",
        "~!",
        "a/b",
        "abcdefghijklmnopqrstuvwxyz234567",
        "ABC",
        "a1",
        "a8",
        "{x}",
        "67e55044-10b1-426f-9247-bb680e5fe0c8",
        "67E55044-10B1-426F-9247-BB680E5FE0C8",
        "67e5504410b1426f9247bb680e5fe0c8",
        "{67e55044-10b1-426f-9247-bb680e5fe0c8}",
        "urn:uuid:67e55044-10b1-426f-9247-bb680e5fe0c8",
        "67e55044-10b1-426f-9247-bb680e5fe0c",
        "67e55044_10b1_426f_9247_bb680e5fe0c8",
        "off",
        "OFF",
        " Off ",
        "10/min",
        "50/s,burst=100",
        " 5 / h , burst = 7 ",
        "+5/s",
        "0005/s",
        "0/s",
        "1000000/s",
        "1000001/s",
        "5/s,burst=0",
        "5/day",
        "5/s,",
        "5/s,burst=",
        "5/s,size=3",
        "5",
        "\u{3000}5/s",
        "5/s\u{2028}",
        "-5/s",
        "5/s,burst=1000000",
        "99999999999/s",
    ];
    for charset in [
        Charset::Printable,
        Charset::Token,
        Charset::Identifier,
        Charset::Base32,
        Charset::Uuid,
        Charset::Rate,
    ] {
        let pattern = regex::Regex::new(&charset.pattern()).expect("the pattern compiles");
        for sample in samples {
            assert_eq!(
                pattern.is_match(sample),
                charset.check(sample).is_ok(),
                "{charset:?} on {sample:?}: pattern {}",
                charset.pattern()
            );
        }
    }
}
