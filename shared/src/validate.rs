//! Validation at the edge: every request field is checked once, turned into a
//! domain type, and a failure names the field it is about.

use uuid::Uuid;

use crate::contract::{FieldRule, rules};
use crate::limits::Rate;

/// One field that failed validation, named as in the proto (`device.model`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field's path in the request.
    pub field: String,
    /// What is wrong, readable by a person.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

impl std::fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

/// What a text field may hold: the meaning of each `devicelink.v1.Charset`
/// of proto/devicelink/v1/field_rules.proto, as the services check it
/// ([`Charset::check`]) and as the OpenAPI document states it
/// ([`Charset::pattern`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// Any character but control characters; spaces allowed.
    Printable,
    /// Printable ASCII without spaces, such as versions and device ids.
    Token,
    /// Letters, digits, `.`, `-` and `_`, such as bundle ids.
    Identifier,
    /// Lower-case base32 (`a-z`, `2-7`), as codes and key ids are written.
    Base32,
    /// A UUID in any form [`Uuid::try_parse`] reads.
    Uuid,
    /// A rate in the operators' syntax, or `off` ([`Rate::parse_setting`]).
    Rate,
    /// A SHA-256 as canonical unpadded base64url: a `code_challenge`
    /// ([`crate::code_challenge::CodeChallenge`]).
    S256Base64Url,
    /// RFC 7636's unreserved characters (`A-Z a-z 0-9 - . _ ~`): a
    /// `code_verifier`.
    PkceUnreserved,
}

/// Unicode White_Space, what `str::trim` removes around a rate's parts.
const WHITE_SPACE: &str = r"[\t-\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*";
/// A rate's count or burst as `u32::from_str` reads it, 1 to 1000000
/// ([`crate::limits::MAX_COUNT`]).
const COUNT: &str = r"\+?0*(?:[1-9][0-9]{0,5}|1000000)";
/// Hex digits of a UUID.
const HEX: &str = "[0-9A-Fa-f]";

impl Charset {
    /// Whether `value` is of this set; if not, what it must be, readable by
    /// a person.
    pub fn check(self, value: &str) -> Result<(), String> {
        let allowed = match self {
            Self::Printable => value.chars().all(|c| !c.is_control()),
            Self::Token => value.chars().all(|c| c.is_ascii_graphic()),
            Self::Identifier => value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')),
            Self::Base32 => crate::secret::is_base32(value),
            Self::Uuid => Uuid::try_parse(value).is_ok(),
            Self::Rate => return Rate::parse_setting(value).map(drop),
            Self::S256Base64Url => crate::code_challenge::decode_base64url_32(value).is_some(),
            Self::PkceUnreserved => value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')),
        };
        if allowed {
            Ok(())
        } else {
            Err(self.describe().to_owned())
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Printable => "must not contain control characters",
            Self::Token => "must be printable ASCII without spaces",
            Self::Identifier => "may only contain letters, digits, '.', '-' and '_'",
            Self::Base32 => "may only contain a-z and 2-7",
            Self::Uuid => "must be a UUID",
            Self::Rate => "expected `<count>/<s|min|h>[,burst=<n>]` or `off`",
            Self::S256Base64Url => {
                "must be BASE64URL(SHA256(code_verifier)) without padding: \
                 43 characters of A-Z, a-z, 0-9, '-' and '_'"
            }
            Self::PkceUnreserved => {
                "may only contain A-Z, a-z, 0-9, '-', '.', '_' and '~' (RFC 7636)"
            }
        }
    }

    /// An ECMA-262 regular expression (as OpenAPI's `pattern` is) that
    /// matches exactly the texts [`Charset::check`] accepts. Written with
    /// `\uXXXX` escapes and no flags, so Python's `re` and Rust's `regex`
    /// read it the same way.
    pub fn pattern(self) -> String {
        match self {
            Self::Printable => r"^[^\u0000-\u001F\u007F-\u009F]*$".to_owned(),
            Self::Token => "^[!-~]*$".to_owned(),
            Self::Identifier => "^[A-Za-z0-9._-]*$".to_owned(),
            Self::Base32 => "^[a-z2-7]*$".to_owned(),
            // 42 characters of 6 bits, then one whose 2 low bits are spare.
            Self::S256Base64Url => "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$".to_owned(),
            Self::PkceUnreserved => "^[A-Za-z0-9._~-]*$".to_owned(),
            Self::Uuid => {
                let hyphenated = format!("{HEX}{{8}}-{HEX}{{4}}-{HEX}{{4}}-{HEX}{{4}}-{HEX}{{12}}");
                format!(r"^(?:{HEX}{{32}}|{hyphenated}|\{{{hyphenated}\}}|urn:uuid:{hyphenated})$")
            }
            Self::Rate => {
                let ws = WHITE_SPACE;
                format!(
                    "^{ws}(?:[oO][fF][fF]|{COUNT}{ws}/{ws}(?:s|min|h){ws}\
                     (?:,{ws}burst{ws}={ws}{COUNT})?){ws}$"
                )
            }
        }
    }
}

/// Checks a required text field: non-empty, at most `max_chars` characters,
/// every character allowed by `charset`. Request fields are checked by
/// their declared rule ([`crate::contract::FieldRule::text`]) instead.
pub fn text(
    field: &str,
    value: &str,
    max_chars: usize,
    charset: Charset,
) -> Result<String, FieldViolation> {
    if value.is_empty() {
        return Err(FieldViolation::new(field, "is required"));
    }
    if value.chars().count() > max_chars {
        return Err(FieldViolation::new(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    charset
        .check(value)
        .map_err(|description| FieldViolation::new(field, description))?;
    Ok(value.to_owned())
}

/// Checks a required UUID field.
pub fn uuid(field: &str, value: &str) -> Result<Uuid, FieldViolation> {
    if value.is_empty() {
        return Err(FieldViolation::new(field, "is required"));
    }
    Uuid::try_parse(value).map_err(|_| FieldViolation::new(field, "must be a UUID"))
}

/// An app's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AppId(pub Uuid);

impl AppId {
    /// Parses the app id field named `field`.
    pub fn parse(field: &str, value: &str) -> Result<Self, FieldViolation> {
        uuid(field, value).map(Self)
    }

    /// Parses the request field at `path` by its declared `rule`:
    /// `Ok(None)` when it may be and is left empty.
    pub fn parse_declared(
        rule: &FieldRule,
        path: &str,
        value: &str,
    ) -> Result<Option<Self>, FieldViolation> {
        rule.text(path, value)?
            .map(|text| Self::parse(path, text))
            .transpose()
    }

    /// Parses the required request field at `path` by its declared `rule`.
    pub fn parse_required(
        rule: &FieldRule,
        path: &str,
        value: &str,
    ) -> Result<Self, FieldViolation> {
        Self::parse(path, &rule.required_text(path, value)?)
    }
}

impl std::fmt::Display for AppId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The customer's own identifier of a user: 1 to 256 characters, no control
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExternalId(String);

impl ExternalId {
    /// The longest external id accepted, in characters: as
    /// `MintAuthCodeRequest.external_id`, where external ids come in,
    /// declares it.
    pub const MAX_CHARS: usize = match rules::MINT_AUTH_CODE_REQUEST_EXTERNAL_ID.max_chars {
        Some(max) => max,
        None => usize::MAX,
    };

    /// Parses the external id field named `field`, by the rule of
    /// `MintAuthCodeRequest.external_id`.
    pub fn parse(field: &str, value: &str) -> Result<Self, FieldViolation> {
        Self::parse_declared(&rules::MINT_AUTH_CODE_REQUEST_EXTERNAL_ID, field, value)
    }

    /// Parses the request field at `path` by its declared `rule`.
    pub fn parse_declared(
        rule: &FieldRule,
        path: &str,
        value: &str,
    ) -> Result<Self, FieldViolation> {
        rule.required_text(path, value).map(Self)
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_names_the_field_in_each_failure() {
        let empty = text("app.app_version", "", 8, Charset::Token).unwrap_err();
        assert_eq!(empty.to_string(), "app.app_version: is required");
        let long = text("f", "123456789", 8, Charset::Token).unwrap_err();
        assert!(long.description.contains("at most 8"));
        let spaced = text("f", "1 2", 8, Charset::Token).unwrap_err();
        assert!(spaced.description.contains("without spaces"));
        let bundle = text("f", "com/evil", 8, Charset::Identifier).unwrap_err();
        assert!(bundle.description.contains("letters"));
        assert_eq!(
            text("f", "Pixel 8", 8, Charset::Printable).as_deref(),
            Ok("Pixel 8")
        );
    }

    #[test]
    fn limits_count_characters_not_bytes() {
        assert!(text("f", "ééé", 3, Charset::Printable).is_ok());
    }

    #[test]
    fn external_ids_refuse_control_characters() {
        assert!(ExternalId::parse("external_id", "user\n1").is_err());
        assert!(ExternalId::parse("external_id", &"x".repeat(257)).is_err());
        assert!(ExternalId::parse("external_id", "user 1").is_ok());
    }

    #[test]
    fn app_ids_must_be_uuids() {
        assert_eq!(
            AppId::parse("app_id", "nope").unwrap_err().description,
            "must be a UUID"
        );
        assert!(AppId::parse("app_id", &Uuid::new_v4().to_string()).is_ok());
    }
}
