//! The OpenAPI 3 document of devicelink's REST API (the one Envoy's
//! gRPC-JSON transcoder serves, deploy/envoy/envoy.yaml), generated from the
//! `google.api.http` annotations and comments of `proto/devicelink/v1`, read
//! from the compiled descriptor set. No `protoc` and no plugin: it runs
//! wherever the workspace builds.
//!
//! The document is committed as deploy/openapi/devicelink.openapi.json; the
//! test `tests/tests/openapi.rs` fails when it no longer matches the protos.
//! Regenerate it with
//!
//! ```text
//! cargo run -p devicelink-e2e --bin devicelink-openapi -- deploy/openapi/devicelink.openapi.json
//! ```
//!
//! The JSON it describes is the transcoder's as configured in envoy.yaml:
//! proto field names (`preserve_proto_field_names`), enums as their names,
//! 64-bit integers as strings, timestamps as RFC 3339 text, and errors as a
//! `google.rpc.Status` body (`convert_grpc_status`).

mod comments;
mod constraints;
mod generator;
mod links;

use prost_reflect::DescriptorPool;
use serde_json::{Map, Value, json};

use generator::Generator;

/// The package whose services make the REST API.
pub const PACKAGE: &str = "devicelink.v1";

/// The OpenAPI document of every service of [`PACKAGE`] in `descriptor_set`,
/// as pretty JSON ending in a newline.
pub fn generate(descriptor_set: &[u8]) -> Result<String, String> {
    let pool = DescriptorPool::decode(descriptor_set)
        .map_err(|error| format!("the descriptor set does not decode: {error}"))?;
    let mut generator = Generator::new(&pool)?;
    let mut tags = Vec::new();
    for service in pool.services().filter(|s| s.package_name() == PACKAGE) {
        tags.push(json!({
            "name": service.name(),
            "description": generator.comments.of(&service.parent_file(), service.path()),
        }));
        for method in service.methods() {
            generator.add_method(&service, &method)?;
        }
    }
    if generator.paths.is_empty() {
        return Err(format!("no service of {PACKAGE} in the descriptor set"));
    }
    for linked in links::linked_operations() {
        let exists = generator
            .paths
            .values()
            .flat_map(|ops| ops.values())
            .any(|op| op["operationId"] == linked);
        if !exists {
            return Err(format!(
                "a link names {linked}, which is no operation: fix tests/src/openapi/links.rs"
            ));
        }
    }
    // Every failure's body, and the detail that names bad fields.
    for name in ["google.rpc.Status", "google.rpc.BadRequest"] {
        let message = pool.get_message_by_name(name).ok_or_else(|| {
            format!("{name} is not in the descriptor set (shared/build.rs compiles it)")
        })?;
        generator.message_ref(&message);
    }
    let mut schemas = generator.schemas()?;
    schemas.extend(std::mem::take(&mut generator.own_schemas));
    let storable = format!("#/components/schemas/{}", constraints::STORABLE_JSON);
    if serde_json::to_string(&generator.paths).is_ok_and(|text| text.contains(&storable)) {
        schemas.insert(
            constraints::STORABLE_JSON.to_owned(),
            constraints::storable_json_schema(),
        );
    }
    let paths: Map<String, Value> = std::mem::take(&mut generator.paths)
        .into_iter()
        .map(|(path, operations)| (path, Value::Object(operations)))
        .collect();
    let document = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "devicelink REST API",
            "version": "v1",
            "description": INFO_DESCRIPTION,
        },
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key of the app (`dlk_<key id>.<secret><checksum>`), as `authorization: Bearer <api key>`. Held by the customer's backend, never by an app.",
                },
                "installToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The install token `POST /v1/users` returned to the device, as `authorization: Bearer <install token>`.",
                },
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The operator credential (`DEVICELINK_ADMIN_TOKEN`), as `authorization: Bearer <admin token>`.",
                },
            },
        },
    });
    let mut text = serde_json::to_string_pretty(&document)
        .map_err(|error| format!("cannot encode the document: {error}"))?;
    text.push('\n');
    Ok(text)
}

const INFO_DESCRIPTION: &str = "\
REST/JSON face of devicelink's gRPC services, served by Envoy's gRPC-JSON \
transcoder (deploy/envoy/envoy.yaml). Generated from proto/devicelink/v1 by \
`devicelink-openapi`: do not edit by hand.

JSON follows the protobuf JSON mapping with proto field names: enums are \
their names, 64-bit integers are strings, timestamps are RFC 3339 text. \
Every field is present in responses, defaults included.

A failure is a `google.rpc.Status` body (`code`, `message`, `details`) with \
the HTTP status of its gRPC code: INVALID_ARGUMENT 400 (a \
`google.rpc.BadRequest` detail names each bad field), UNAUTHENTICATED 401, \
PERMISSION_DENIED 403, NOT_FOUND 404, FAILED_PRECONDITION 409 (change the \
state the request conflicts with first), ABORTED 409 (retry), \
RESOURCE_EXHAUSTED 429, INTERNAL 500, UNAVAILABLE 503 (nothing was written: \
retry).

Request fields carry their bounds as the services check them, declared once \
in the protos (`google.api.field_behavior`, `devicelink.v1.rules`): \
`required`, `minLength`/`maxLength` in characters, `pattern`, `enum`, \
`maximum`; `readOnly` marks what only the service sets.";

/// Which credential a method takes. A new service must be placed here.
pub(crate) fn security_scheme(service: &str, method: &str) -> Result<Option<&'static str>, String> {
    match (service, method) {
        ("AuthCodeService", _) => Ok(Some("apiKey")),
        ("RegistrationService", "CreateUser") => Ok(None),
        ("RegistrationService", _) => Ok(Some("installToken")),
        ("AdminService", _) => Ok(Some("adminToken")),
        _ => Err(format!(
            "no credential known for {service}: add it to security_scheme() in {}",
            file!()
        )),
    }
}

/// One variable of a path template: `{name}` or `{name=pattern}`.
pub(crate) fn template_variables(template: &str) -> Result<(String, Vec<String>), String> {
    let mut path = String::new();
    let mut variables = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .map(|close| open + close)
            .ok_or_else(|| format!("unclosed variable in {template:?}"))?;
        let variable = &rest[open + 1..close];
        let name = variable.split('=').next().unwrap_or(variable).trim();
        path.push_str(&rest[..open]);
        path.push('{');
        path.push_str(name);
        path.push('}');
        variables.push(name.to_owned());
        rest = &rest[close + 1..];
    }
    path.push_str(rest);
    Ok((path, variables))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_name_their_variables() {
        assert_eq!(
            template_variables("/v1/a/{app_id}/b/{key_id}:revoke").expect("template"),
            (
                "/v1/a/{app_id}/b/{key_id}:revoke".to_owned(),
                vec!["app_id".to_owned(), "key_id".to_owned()]
            )
        );
        assert_eq!(
            template_variables("/v1/{name=apps/*}").expect("template"),
            ("/v1/{name}".to_owned(), vec!["name".to_owned()])
        );
        assert!(template_variables("/v1/{broken").is_err());
    }
}
