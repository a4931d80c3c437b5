//! SDK configuration travels as `google.protobuf.Struct` and is stored as
//! JSON (`jsonb`), so that operators can read it in the database too. Its
//! size bound is declared on `SetSdkConfigRequest.sdk_config`.

use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value};

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
    fn non_objects_become_empty() {
        assert!(json_to_struct(&serde_json::json!([1, 2])).fields.is_empty());
    }
}
