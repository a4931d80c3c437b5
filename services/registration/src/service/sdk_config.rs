//! SDK configuration travels as `google.protobuf.Struct` and is stored as
//! JSON (`jsonb`), so that operators can read it in the database too.

use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value};

/// The largest configuration accepted, once encoded as JSON.
pub const MAX_SDK_CONFIG_BYTES: usize = 64 * 1024;

/// Why `config` (a configuration as JSON) cannot be stored and served, if
/// it cannot: an empty key anywhere (Envoy's gRPC-JSON transcoder, as of
/// 1.40, crashes printing a `Struct` with one: every `CreateUser` of the
/// app through the REST gateway would take the gateway down), or a NUL
/// character in a key or a string (Postgres' `jsonb` refuses `\u0000`).
pub fn unservable_reason(config: &serde_json::Value) -> Option<&'static str> {
    const NUL: char = '\0';
    match config {
        serde_json::Value::Object(fields) => fields.iter().find_map(|(name, value)| {
            if name.is_empty() {
                Some("keys must not be empty")
            } else if name.contains(NUL) {
                Some("keys must not contain NUL characters")
            } else {
                unservable_reason(value)
            }
        }),
        serde_json::Value::Array(items) => items.iter().find_map(unservable_reason),
        serde_json::Value::String(text) if text.contains(NUL) => {
            Some("strings must not contain NUL characters")
        }
        _ => None,
    }
}

/// A `Struct` as a JSON object.
pub fn struct_to_json(config: &Struct) -> serde_json::Value {
    serde_json::Value::Object(
        config
            .fields
            .iter()
            .map(|(name, value)| (name.clone(), value_to_json(value)))
            .collect(),
    )
}

fn value_to_json(value: &Value) -> serde_json::Value {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(flag)) => serde_json::Value::Bool(*flag),
        Some(Kind::NumberValue(number)) => serde_json::Number::from_f64(*number)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        Some(Kind::StringValue(text)) => serde_json::Value::String(text.clone()),
        Some(Kind::StructValue(object)) => struct_to_json(object),
        Some(Kind::ListValue(list)) => {
            serde_json::Value::Array(list.values.iter().map(value_to_json).collect())
        }
    }
}

/// A JSON value as a `Struct`; anything but an object becomes an empty one
/// (the store only ever holds objects).
pub fn json_to_struct(json: &serde_json::Value) -> Struct {
    match json {
        serde_json::Value::Object(fields) => Struct {
            fields: fields
                .iter()
                .map(|(name, value)| (name.clone(), json_to_value(value)))
                .collect(),
        },
        _ => Struct::default(),
    }
}

/// A JSON value as a protobuf `Value`.
pub fn json_to_value(json: &serde_json::Value) -> Value {
    let kind = match json {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(flag) => Kind::BoolValue(*flag),
        serde_json::Value::Number(number) => Kind::NumberValue(number.as_f64().unwrap_or_default()),
        serde_json::Value::String(text) => Kind::StringValue(text.clone()),
        serde_json::Value::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(_) => Kind::StructValue(json_to_struct(json)),
    };
    Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_through_struct() {
        let json = serde_json::json!({
            "feature_flags": {"dark_mode": true, "beta": false},
            "poll_seconds": 30.0,
            "endpoints": ["a", "b"],
            "note": null,
        });
        assert_eq!(struct_to_json(&json_to_struct(&json)), json);
    }

    #[test]
    fn empty_keys_and_nul_characters_are_unservable_at_any_depth() {
        use serde_json::json;
        assert_eq!(unservable_reason(&json!({"a": [{"b": "c"}], "d": 1})), None);
        for config in [json!({"": 1}), json!({"a": [{"": true}]})] {
            assert_eq!(unservable_reason(&config), Some("keys must not be empty"));
        }
        assert!(unservable_reason(&json!({"a\0": 1})).is_some());
        assert!(unservable_reason(&json!({"a": {"b": ["x\0"]}})).is_some());
    }

    #[test]
    fn non_objects_become_empty() {
        assert!(json_to_struct(&serde_json::json!([1, 2])).fields.is_empty());
    }
}
