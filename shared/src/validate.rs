//! Validation at the edge: every request field is checked once, turned into a
//! domain type, and a failure names the field it is about.

use uuid::Uuid;

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

/// Which characters a text field may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// Any character but control characters; spaces allowed.
    Printable,
    /// Printable ASCII without spaces, such as versions and device ids.
    Token,
    /// Letters, digits, `.`, `-` and `_`, such as bundle ids.
    Identifier,
}

impl Charset {
    fn allows(self, c: char) -> bool {
        match self {
            Self::Printable => !c.is_control(),
            Self::Token => c.is_ascii_graphic(),
            Self::Identifier => c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Printable => "must not contain control characters",
            Self::Token => "must be printable ASCII without spaces",
            Self::Identifier => "may only contain letters, digits, '.', '-' and '_'",
        }
    }
}

/// Checks a required text field: non-empty, at most `max_chars` characters,
/// every character allowed by `charset`.
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
    if !value.chars().all(|c| charset.allows(c)) {
        return Err(FieldViolation::new(field, charset.describe()));
    }
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
    /// The longest external id accepted, in characters.
    pub const MAX_CHARS: usize = 256;

    /// Parses the external id field named `field`.
    pub fn parse(field: &str, value: &str) -> Result<Self, FieldViolation> {
        text(field, value, Self::MAX_CHARS, Charset::Printable).map(Self)
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
