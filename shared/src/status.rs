//! How failures become `tonic::Status`.
//!
//! Clients get a code they can act on and a message a person can read.
//! Internal causes are logged here with their whole chain and never sent:
//! they can name hosts, queries or (in a driver's message) values.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::validate::FieldViolation;

/// INVALID_ARGUMENT naming each bad field, with a `BadRequest` detail that
/// gateways and SDKs can read field by field.
pub fn invalid_argument(violations: &[FieldViolation]) -> Status {
    let message = violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    let mut details = ErrorDetails::new();
    for violation in violations {
        details.add_bad_request_violation(violation.field.clone(), violation.description.clone());
    }
    Status::with_error_details(Code::InvalidArgument, message, details)
}

/// UNAVAILABLE: a store could not be reached. Nothing was written, so the
/// client may retry.
pub fn unavailable(store: &str, cause: &dyn std::error::Error) -> Status {
    tracing::warn!(store, error = %error_chain(cause), "store unavailable");
    Status::unavailable(format!("{store} is unavailable; retry the request"))
}

/// INTERNAL: a bug or an unexpected store answer. Logged in full, reported
/// without detail.
pub fn internal(cause: &dyn std::error::Error) -> Status {
    tracing::error!(error = %error_chain(cause), "internal error");
    Status::internal("internal error")
}

/// An error and its sources, joined with `: `.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The bearer credential of a request, from `authorization: Bearer <token>`.
/// `None` when the header is missing or not a bearer credential.
pub fn bearer_token(metadata: &tonic::metadata::MetadataMap) -> Option<&str> {
    let value = metadata.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_lists_every_field() {
        let status = invalid_argument(&[
            FieldViolation::new("auth_code", "is required"),
            FieldViolation::new("device.model", "must be at most 128 characters"),
        ]);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("auth_code: is required"));
        assert!(status.message().contains("device.model"));
        let details = status.get_error_details();
        let bad_request = details.bad_request().expect("a BadRequest detail");
        assert_eq!(bad_request.field_violations.len(), 2);
    }

    #[test]
    fn bearer_tokens_are_read_from_authorization() {
        let mut metadata = tonic::metadata::MetadataMap::new();
        assert_eq!(bearer_token(&metadata), None);
        metadata.insert("authorization", "Bearer abc".parse().expect("ascii"));
        assert_eq!(bearer_token(&metadata), Some("abc"));
        metadata.insert("authorization", "Basic abc".parse().expect("ascii"));
        assert_eq!(bearer_token(&metadata), None);
        metadata.insert("authorization", "bearer  ".parse().expect("ascii"));
        assert_eq!(bearer_token(&metadata), None);
    }
}
