//! The bounds of every request field, as the contracts declare them
//! (`google.api.field_behavior` and `devicelink.v1.rules`, see
//! proto/devicelink/v1/field_rules.proto): one source of truth for the
//! services' validation, the OpenAPI document's schemas
//! (tests/src/openapi) and the test that probes each bound
//! (tests/tests/contract_bounds.rs).
//!
//! The constants in [`rules`] are generated from the compiled descriptor
//! set by build.rs; a bound changed in a proto changes what the services
//! accept with the next build.

use crate::validate::{Charset, FieldViolation};

/// The rules of one field, as its proto declares them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldRule {
    /// The message's full name, such as `devicelink.v1.AppInfo`.
    pub message: &'static str,
    /// The field's name in the message.
    pub field: &'static str,
    /// `field_behavior = REQUIRED`: an empty or unset value is refused.
    pub required: bool,
    /// `field_behavior = OUTPUT_ONLY`: set by the service, ignored in
    /// requests.
    pub output_only: bool,
    /// The fewest characters of a set text.
    pub min_chars: Option<usize>,
    /// The most characters of a text.
    pub max_chars: Option<usize>,
    /// What a set text may hold.
    pub charset: Option<Charset>,
    /// The largest number.
    pub max_value: Option<u64>,
    /// An enum's accepted values (number, name); empty when the field is no
    /// enum with `specified_enum`.
    pub accepted_enum_values: &'static [(i32, &'static str)],
    /// The only texts the field (each element) may hold; empty when any.
    pub one_of: &'static [&'static str],
    /// The most bytes of a `Struct` once encoded as compact JSON.
    pub max_json_bytes: Option<usize>,
    /// A `Struct` whose keys, however deep, are not empty, and whose keys
    /// and texts hold no U+0000 (see [`FieldRule::storable_json`]).
    pub storable_json: bool,
}

/// The generated constants, one per field: `APP_INFO_APP_VERSION` is
/// `devicelink.v1.AppInfo.app_version`; [`rules::ALL`] lists them all.
pub mod rules {
    use super::FieldRule;
    use crate::validate::Charset;

    include!(concat!(env!("OUT_DIR"), "/field_rules.rs"));
}

/// The rule of `message` (full name) `field`, if the field exists.
pub fn rule_of(message: &str, field: &str) -> Option<&'static FieldRule> {
    rules::ALL
        .iter()
        .copied()
        .find(|rule| rule.message == message && rule.field == field)
}

impl FieldRule {
    /// Whether anything is declared that a request can break.
    pub fn is_bounded(&self) -> bool {
        self.required
            || self.min_chars.is_some()
            || self.max_chars.is_some()
            || self.charset.is_some()
            || self.max_value.is_some()
            || !self.accepted_enum_values.is_empty()
            || !self.one_of.is_empty()
            || self.max_json_bytes.is_some()
            || self.storable_json
    }

    /// Checks a text field named `path` in the request (`device.model`):
    /// `Ok(None)` when it is empty and not required, else the text if it
    /// keeps the declared length and characters.
    pub fn text<'a>(&self, path: &str, value: &'a str) -> Result<Option<&'a str>, FieldViolation> {
        if value.is_empty() {
            return if self.required {
                Err(FieldViolation::new(path, "is required"))
            } else {
                Ok(None)
            };
        }
        let chars = value.chars().count();
        if let Some(max) = self.max_chars
            && chars > max
        {
            return Err(FieldViolation::new(
                path,
                format!("must be at most {max} characters"),
            ));
        }
        if let Some(min) = self.min_chars
            && chars < min
        {
            return Err(FieldViolation::new(
                path,
                format!("must be at least {min} characters"),
            ));
        }
        if let Some(charset) = self.charset {
            charset
                .check(value)
                .map_err(|description| FieldViolation::new(path, description))?;
        }
        if !self.one_of.is_empty() && !self.one_of.contains(&value) {
            return Err(FieldViolation::new(
                path,
                format!("must be one of: {}", self.one_of.join(", ")),
            ));
        }
        Ok(Some(value))
    }

    /// Checks a required text field: the text, or why it is refused.
    pub fn required_text(&self, path: &str, value: &str) -> Result<String, FieldViolation> {
        match self.text(path, value)? {
            Some(text) => Ok(text.to_owned()),
            None => Err(FieldViolation::new(path, "is required")),
        }
    }

    /// Checks a number field against its declared maximum.
    pub fn number(&self, path: &str, value: u64) -> Result<u64, FieldViolation> {
        match self.max_value {
            Some(max) if value > max => {
                Err(FieldViolation::new(path, format!("must be at most {max}")))
            }
            _ => Ok(value),
        }
    }

    /// Checks an enum field: one of its accepted values.
    pub fn enum_value(&self, path: &str, value: i32) -> Result<i32, FieldViolation> {
        if self.accepted_enum_values.is_empty()
            || self.accepted_enum_values.iter().any(|(n, _)| *n == value)
        {
            return Ok(value);
        }
        Err(self.enum_violation(path))
    }

    /// The violation of an enum field set to a value it does not accept:
    /// it names the ones it does.
    pub fn enum_violation(&self, path: &str) -> FieldViolation {
        let names: Vec<&str> = self.accepted_enum_values.iter().map(|(_, n)| *n).collect();
        let listed = match names.split_last() {
            Some((last, [])) => (*last).to_owned(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        };
        FieldViolation::new(path, format!("must be {listed}"))
    }

    /// Checks the encoded size of a `Struct` field, `json_bytes` long as
    /// compact JSON.
    pub fn json_size(&self, path: &str, json_bytes: usize) -> Result<(), FieldViolation> {
        match self.max_json_bytes {
            Some(max) if json_bytes > max => Err(FieldViolation::new(
                path,
                format!(
                    "must be at most {} once encoded as JSON",
                    describe_bytes(max)
                ),
            )),
            _ => Ok(()),
        }
    }
}

impl FieldRule {
    /// Checks a `Struct` field, given as JSON, against `storable_json`:
    /// Envoy's transcoder cannot print an object with an empty key (it
    /// fails on every response that would carry it), and Postgres's `jsonb`
    /// cannot store U+0000.
    pub fn storable_json(
        &self,
        path: &str,
        json: &serde_json::Value,
    ) -> Result<(), FieldViolation> {
        if !self.storable_json {
            return Ok(());
        }
        match unstorable(json) {
            Some(problem) => Err(FieldViolation::new(path, problem)),
            None => Ok(()),
        }
    }
}

/// What makes `json` unstorable, if anything.
fn unstorable(json: &serde_json::Value) -> Option<&'static str> {
    const NUL: &str = "must not contain U+0000";
    match json {
        serde_json::Value::String(text) if text.contains('\0') => Some(NUL),
        serde_json::Value::Array(values) => values.iter().find_map(unstorable),
        serde_json::Value::Object(object) => object.iter().find_map(|(key, value)| {
            if key.is_empty() {
                Some("must not have an empty key")
            } else if key.contains('\0') {
                Some(NUL)
            } else {
                unstorable(value)
            }
        }),
        _ => None,
    }
}

/// `65536` → `64 KiB`; other sizes in bytes.
fn describe_bytes(bytes: usize) -> String {
    if bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_reach_the_rules() {
        let version = rule_of("devicelink.v1.AppInfo", "app_version").expect("declared");
        assert!(version.required && !version.output_only);
        assert_eq!(version.max_chars, Some(64));
        assert_eq!(version.charset, Some(Charset::Token));
        assert_eq!(
            rules::DEVICE_INFO_PLATFORM.accepted_enum_values,
            [(1, "PLATFORM_IOS"), (2, "PLATFORM_ANDROID")]
        );
        let token = rule_of("devicelink.v1.CreateUserResponse", "install_token").expect("declared");
        assert!(token.output_only && !token.required);
        assert_eq!(
            rule_of("devicelink.v1.MintAuthCodeRequest", "external_id"),
            Some(&rules::MINT_AUTH_CODE_REQUEST_EXTERNAL_ID)
        );
    }

    #[test]
    fn sdk_configs_must_be_storable_and_printable() {
        let rule = rules::SET_SDK_CONFIG_REQUEST_SDK_CONFIG;
        let check = |json: serde_json::Value| rule.storable_json("sdk_config", &json);
        assert!(check(serde_json::json!({"a": {"b": [1, "é", null]}})).is_ok());
        for bad in [
            serde_json::json!({"": 1}),
            serde_json::json!({"a": [{"": 1}]}),
            serde_json::json!({"a": "x\u{0}"}),
            serde_json::json!({"a\u{0}": 1}),
        ] {
            assert!(check(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn violations_read_as_before() {
        let rule = rules::DEVICE_INFO_FORM_FACTOR;
        assert_eq!(
            rule.enum_value("device.form_factor", 0)
                .unwrap_err()
                .to_string(),
            "device.form_factor: must be FORM_FACTOR_PHONE or FORM_FACTOR_TABLET"
        );
        let config = rules::SET_SDK_CONFIG_REQUEST_SDK_CONFIG;
        assert_eq!(
            config
                .json_size("sdk_config", 65_537)
                .unwrap_err()
                .description,
            "must be at most 64 KiB once encoded as JSON"
        );
        assert_eq!(
            rules::APP_INFO_APP_VERSION
                .text("app.app_version", "")
                .unwrap_err()
                .to_string(),
            "app.app_version: is required"
        );
        assert_eq!(
            rules::MINT_AUTH_CODE_REQUEST_APP_ID.text("app_id", ""),
            Ok(None)
        );
    }
}
