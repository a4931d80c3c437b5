//! The `set-sdk-config` argument, turned into a `google.protobuf.Struct`
//! with the same conversion the service uses to store it.

use std::io::Read;

use devicelink_registration::service::sdk_config::json_to_struct;

/// Protobuf's `Value` holds numbers as doubles, exact up to 2^53.
const MAX_EXACT_INTEGER: u64 = 1 << 53;

/// The `set-sdk-config` argument: JSON text, `@path` or `@-` (stdin).
pub(crate) fn read_sdk_config(argument: &str) -> Result<prost_types::Struct, String> {
    let text = match argument.strip_prefix('@') {
        Some("-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|error| format!("cannot read standard input: {error}"))?;
            text
        }
        Some(path) => {
            std::fs::read_to_string(path).map_err(|error| format!("cannot read {path}: {error}"))?
        }
        None => argument.to_owned(),
    };
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|error| format!("the SDK configuration is not JSON: {error}"))?;
    if !json.is_object() {
        return Err("the SDK configuration must be a JSON object".into());
    }
    check_exact_numbers(&json, "sdk_config")?;
    Ok(json_to_struct(&json))
}

/// Refuses integers a double cannot hold exactly, naming where they are,
/// rather than letting them be rounded silently.
fn check_exact_numbers(json: &serde_json::Value, path: &str) -> Result<(), String> {
    match json {
        serde_json::Value::Number(number) => {
            let exact = match (number.as_u64(), number.as_i64()) {
                (Some(value), _) => value <= MAX_EXACT_INTEGER,
                (None, Some(value)) => value.unsigned_abs() <= MAX_EXACT_INTEGER,
                (None, None) => true, // already a double
            };
            if exact {
                Ok(())
            } else {
                Err(format!(
                    "{path}: {number} does not fit a double exactly; send it as a string"
                ))
            }
        }
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(index, item)| check_exact_numbers(item, &format!("{path}[{index}]"))),
        serde_json::Value::Object(object) => object
            .iter()
            .try_for_each(|(name, value)| check_exact_numbers(value, &format!("{path}.{name}"))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::value::Kind;

    #[test]
    fn json_objects_become_structs() {
        let config =
            read_sdk_config(r#"{"flag": true, "nested": {"n": 9007199254740992}}"#).unwrap();
        assert_eq!(config.fields["flag"].kind, Some(Kind::BoolValue(true)));
        let Some(Kind::StructValue(nested)) = config.fields["nested"].kind.clone() else {
            panic!("not a struct")
        };
        assert_eq!(
            nested.fields["n"].kind,
            Some(Kind::NumberValue(9_007_199_254_740_992.0))
        );
    }

    #[test]
    fn only_objects_and_exact_numbers_are_accepted() {
        for text in [
            "[1]",
            "\"x\"",
            "null",
            "{not json",
            "@/nonexistent/devicelink.json",
        ] {
            assert!(read_sdk_config(text).is_err(), "{text}");
        }
        let error = read_sdk_config(r#"{"a": [0, {"big": 9007199254740993}]}"#).unwrap_err();
        assert!(error.starts_with("sdk_config.a[1].big:"), "{error}");
        assert!(read_sdk_config(r#"{"small": -9007199254740993}"#).is_err());
        assert!(read_sdk_config(r#"{"theme": "dark"}"#).is_ok());
    }
}
