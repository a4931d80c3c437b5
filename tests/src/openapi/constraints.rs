//! What the document says of each field beyond its type: the bounds the
//! contracts declare (`devicelink_shared::contract`, generated from
//! `google.api.field_behavior` and `devicelink.v1.rules`), the same
//! constants the services validate against.

use devicelink_shared::contract::{FieldRule, rule_of};
use prost_reflect::{FieldDescriptor, Kind};
use serde_json::{Map, Value, json};

/// The declared rule of `field`.
pub(super) fn rule(field: &FieldDescriptor) -> Option<&'static FieldRule> {
    rule_of(field.parent_message().full_name(), field.name())
}

/// `schema` (a field's, not wrapped) with the field's declared bounds.
pub(super) fn constrain(field: &FieldDescriptor, schema: Value) -> Value {
    let Some(rule) = rule(field) else {
        return schema;
    };
    if !rule.accepted_enum_values.is_empty() {
        // The transcoder reads an enum from its name, its number, or its
        // number as text; the names come first for generated clients.
        let names: Vec<&str> = rule.accepted_enum_values.iter().map(|(_, n)| *n).collect();
        let numbers: Vec<i32> = rule.accepted_enum_values.iter().map(|(n, _)| *n).collect();
        let texts: Vec<String> = numbers.iter().map(i32::to_string).collect();
        return json!({"anyOf": [
            {"type": "string", "enum": names},
            {"type": "integer", "enum": numbers},
            {"type": "string", "enum": texts},
        ]});
    }
    let Value::Object(mut object) = schema else {
        return schema;
    };
    if field.is_list() {
        if let Some(Value::Object(items)) = object.get_mut("items") {
            text_bounds(rule, field, items);
        }
    } else if matches!(field.kind(), Kind::String) {
        text_bounds(rule, field, &mut object);
    } else if let Some(max) = rule.max_value {
        // The transcoder reads a 64-bit integer from a JSON number or from
        // its decimal text (`+` and leading zeros allowed).
        return json!({"anyOf": [
            {"type": "integer", "minimum": 0, "maximum": max},
            {"type": "string", "pattern": format!("^\\+?0*(?:{})$", decimal_at_most(max))},
        ]});
    }
    if let Some(max) = rule.max_json_bytes {
        object.insert("x-max-json-bytes".into(), json!(max));
    }
    if rule.storable_json {
        object.insert("propertyNames".into(), storable_key());
        object.insert(
            "additionalProperties".into(),
            json!({"$ref": format!("#/components/schemas/{STORABLE_JSON}")}),
        );
    }
    Value::Object(object)
}

/// A regular expression of the decimal numbers from 0 to `max`, without
/// leading zeros.
pub(super) fn decimal_at_most(max: u64) -> String {
    let digits: Vec<u32> = max
        .to_string()
        .chars()
        .filter_map(|c| c.to_digit(10))
        .collect();
    let mut alternatives = Vec::new();
    if digits.len() > 1 {
        alternatives.push(format!("[0-9]{{1,{}}}", digits.len() - 1));
    }
    for (index, digit) in digits.iter().enumerate() {
        let lowest = u32::from(index == 0 && digits.len() > 1);
        if *digit > lowest {
            let prefix: String = digits[..index].iter().map(u32::to_string).collect();
            let rest = digits.len() - index - 1;
            alternatives.push(format!("{prefix}[{lowest}-{}][0-9]{{{rest}}}", digit - 1));
        }
    }
    alternatives.push(max.to_string());
    alternatives.join("|")
}

/// The component a `storable_json` field's values refer to.
pub(super) const STORABLE_JSON: &str = "devicelink.StorableJsonValue";

fn storable_key() -> Value {
    json!({"minLength": 1, "pattern": "^[^\\u0000]*$"})
}

/// Any JSON value a `storable_json` field may hold, at any depth.
pub(super) fn storable_json_schema() -> Value {
    let this = json!({"$ref": format!("#/components/schemas/{STORABLE_JSON}")});
    json!({
        "description": "Any JSON value whose object keys are not empty and whose keys and texts \
                        hold no U+0000 (`storable_json`): the gateway cannot print an empty key, \
                        Postgres cannot store U+0000.",
        "anyOf": [
            {"type": ["number", "boolean", "null"]},
            {"type": "string", "pattern": "^[^\\u0000]*$"},
            {"type": "array", "items": this},
            {"type": "object", "propertyNames": storable_key(), "additionalProperties": this},
        ],
    })
}

fn text_bounds(rule: &FieldRule, field: &FieldDescriptor, schema: &mut Map<String, Value>) {
    // A text that may be left out may be sent empty, unless the field has
    // presence (`optional`), where an empty text is a value like any other.
    let empty_allowed = !rule.required && !field.supports_presence();
    if !rule.one_of.is_empty() {
        let mut texts = rule.one_of.to_vec();
        // A list's elements are each a value: an empty one is no "unset".
        if empty_allowed && !field.is_list() {
            texts.insert(0, "");
        }
        schema.insert("enum".into(), json!(texts));
        return;
    }
    let min = rule.min_chars.unwrap_or(0).max(usize::from(rule.required));
    if min > 0 && !empty_allowed {
        schema.insert("minLength".into(), json!(min));
    }
    if let Some(max) = rule.max_chars {
        schema.insert("maxLength".into(), json!(max));
    }
    // A field that may be sent empty but, when set, needs more than one
    // character carries its length in the pattern: minLength would refuse
    // the empty text. (tests/tests/openapi.rs checks that each such field
    // has a pattern of one character class, or one that fixes the length.)
    if let Some(pattern) = rule.charset.map(|charset| charset.pattern()) {
        let pattern = match pattern.strip_suffix("*$") {
            Some(class) if empty_allowed && min > 1 && class.starts_with("^[") => {
                let max = rule
                    .max_chars
                    .map(|max| max.to_string())
                    .unwrap_or_default();
                format!("^$|{class}{{{min},{max}}}$")
            }
            // A pattern that is not one class repeated does not match the
            // empty text by itself.
            _ if empty_allowed && !(pattern.starts_with("^[") && pattern.ends_with("]*$")) => {
                format!("^$|{pattern}")
            }
            _ => pattern,
        };
        schema.insert("pattern".into(), json!(pattern));
    }
}

/// The names of `fields` a request must set.
pub(super) fn required<'a>(fields: impl Iterator<Item = &'a FieldDescriptor>) -> Vec<String> {
    fields
        .filter(|field| rule(field).is_some_and(|rule| rule.required && !rule.output_only))
        .map(|field| field.name().to_owned())
        .collect()
}

/// Whether the service sets `field` and ignores it in requests.
pub(super) fn output_only(field: &FieldDescriptor) -> bool {
    rule(field).is_some_and(|rule| rule.output_only)
}

/// The failures an operation can answer, each with the HTTP status the
/// gateway gives its gRPC code (the transcoder's mapping, but for
/// FAILED_PRECONDITION, which deploy/envoy/envoy.yaml answers as 409) and a
/// `google.rpc.Status` body.
pub(super) fn error_responses(credential: Option<&str>) -> Vec<(&'static str, String)> {
    let mut responses = vec![(
        "400",
        "INVALID_ARGUMENT: a field breaks its declared bounds (a `google.rpc.BadRequest` \
         detail names each), or the body is no JSON of the request."
            .to_owned(),
    )];
    if let Some(credential) = credential {
        responses.push((
            "401",
            format!("UNAUTHENTICATED: the {credential} is missing, malformed, unknown or no longer valid."),
        ));
    }
    responses.extend([
        (
            "403",
            "PERMISSION_DENIED: the credential may not do this, or the request names another app."
                .to_owned(),
        ),
        (
            "404",
            "NOT_FOUND: an unknown, expired or used code; an unknown app, key, user or install."
                .to_owned(),
        ),
        (
            "409",
            "FAILED_PRECONDITION: the request conflicts with the current state (say, the \
             device holds another user's install); change that state first. ABORTED: the \
             request collided with a concurrent one; retry it."
                .to_owned(),
        ),
        (
            "429",
            "RESOURCE_EXHAUSTED: a rate limit refused the call; `retry-after` says when to retry."
                .to_owned(),
        ),
        (
            "500",
            "INTERNAL: a bug; nothing of its cause is shown.".to_owned(),
        ),
        (
            "503",
            "UNAVAILABLE: a store or the service is unreachable; nothing was written: retry."
                .to_owned(),
        ),
    ]);
    responses
}
