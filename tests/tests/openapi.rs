//! The descriptor set carries what the gateway needs, and the committed
//! OpenAPI document matches the protos and describes every public method
//! with its credential, body and parameters.

use std::path::Path;

use devicelink_e2e::openapi::{PACKAGE, generate};
use devicelink_shared::pb::FILE_DESCRIPTOR_SET;
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
    assert_eq!(found.len(), 16);
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
        "object"
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
