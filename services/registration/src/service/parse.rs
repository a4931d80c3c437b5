//! Requests parsed into domain types. Every violation of a request is
//! reported at once, each naming its field.

use devicelink_shared::auth_code::AuthCode;
use devicelink_shared::code_challenge::CodeVerifier;
use devicelink_shared::contract::rules;
use devicelink_shared::pb;
use devicelink_shared::validate::{AppId, FieldViolation};

use crate::domain::{AppInfo, CreateUserInput, DeviceInfo, FormFactor, Platform};
use crate::error::RegistrationError;
use crate::install_token::InstallToken;

/// Keeps a value, or records its violation.
fn collect<T>(
    result: Result<T, FieldViolation>,
    violations: &mut Vec<FieldViolation>,
) -> Option<T> {
    result.map_err(|violation| violations.push(violation)).ok()
}

/// Checks a `CreateUser` request.
pub fn create_user(request: &pb::CreateUserRequest) -> Result<CreateUserInput, RegistrationError> {
    let mut violations = Vec::new();
    let auth_code = collect(auth_code(&request.auth_code), &mut violations);
    let app_id = collect(
        AppId::parse_required(
            &rules::CREATE_USER_REQUEST_APP_ID,
            "app_id",
            &request.app_id,
        ),
        &mut violations,
    );
    let app = match &request.app {
        Some(app) => app_info(app, &mut violations),
        None => {
            violations.push(missing(&rules::CREATE_USER_REQUEST_APP, "app"));
            None
        }
    };
    let device = match &request.device {
        Some(device) => device_info(device, &mut violations),
        None => {
            violations.push(missing(&rules::CREATE_USER_REQUEST_DEVICE, "device"));
            None
        }
    };
    // Absent is a state of its own (the code may not be device-bound);
    // whether that is acceptable is for the code's record to say.
    let code_verifier = if request.code_verifier.is_empty() {
        None
    } else {
        collect(
            CodeVerifier::parse("code_verifier", &request.code_verifier),
            &mut violations,
        )
    };
    match (auth_code, app_id, app, device) {
        (Some(auth_code), Some(app_id), Some(app), Some(device)) if violations.is_empty() => {
            Ok(CreateUserInput {
                auth_code,
                app_id,
                app,
                device,
                code_verifier,
            })
        }
        _ => Err(RegistrationError::InvalidArgument(violations)),
    }
}

/// The violation of a message field left unset, which its declaration
/// requires.
fn missing(rule: &devicelink_shared::contract::FieldRule, path: &str) -> FieldViolation {
    debug_assert!(rule.required, "{path} is not declared REQUIRED");
    FieldViolation::new(path, "is required")
}

/// Checks the declared bounds, then the code's form; either failure reads
/// as one message, which says what a code looks like.
fn auth_code(value: &str) -> Result<AuthCode, FieldViolation> {
    let rule = rules::CREATE_USER_REQUEST_AUTH_CODE;
    let bad_form = || {
        FieldViolation::new(
            "auth_code",
            "must be a code minted by AuthCodeService (52 characters of a-z and 2-7)",
        )
    };
    let text = rule
        .required_text("auth_code", value)
        .map_err(|violation| {
            if value.is_empty() {
                violation
            } else {
                bad_form()
            }
        })?;
    AuthCode::parse(&text).ok_or_else(bad_form)
}

fn app_info(app: &pb::AppInfo, violations: &mut Vec<FieldViolation>) -> Option<AppInfo> {
    let app_version = collect(
        rules::APP_INFO_APP_VERSION.required_text("app.app_version", &app.app_version),
        violations,
    );
    let sdk_version = collect(
        rules::APP_INFO_SDK_VERSION.required_text("app.sdk_version", &app.sdk_version),
        violations,
    );
    let bundle_id = collect(
        rules::APP_INFO_BUNDLE_ID.required_text("app.bundle_id", &app.bundle_id),
        violations,
    );
    Some(AppInfo {
        app_version: app_version?,
        sdk_version: sdk_version?,
        bundle_id: bundle_id?,
    })
}

fn device_info(
    device: &pb::DeviceInfo,
    violations: &mut Vec<FieldViolation>,
) -> Option<DeviceInfo> {
    let device_id = collect(
        rules::DEVICE_INFO_DEVICE_ID.required_text("device.device_id", &device.device_id),
        violations,
    );
    let platform = collect(platform(device.platform), violations);
    let form_factor = collect(form_factor(device.form_factor), violations);
    let model = collect(
        rules::DEVICE_INFO_MODEL.required_text("device.model", &device.model),
        violations,
    );
    let os_version = collect(
        rules::DEVICE_INFO_OS_VERSION.required_text("device.os_version", &device.os_version),
        violations,
    );
    Some(DeviceInfo {
        device_id: device_id?,
        platform: platform?,
        form_factor: form_factor?,
        model: model?,
        os_version: os_version?,
    })
}

/// A declared value the domain has no platform for is refused like an
/// undeclared one: the declaration and this match must grow together.
fn platform(value: i32) -> Result<Platform, FieldViolation> {
    let rule = rules::DEVICE_INFO_PLATFORM;
    match pb::Platform::try_from(rule.enum_value("device.platform", value)?) {
        Ok(pb::Platform::Ios) => Ok(Platform::Ios),
        Ok(pb::Platform::Android) => Ok(Platform::Android),
        _ => Err(rule.enum_violation("device.platform")),
    }
}

/// As [`platform`], for form factors.
fn form_factor(value: i32) -> Result<FormFactor, FieldViolation> {
    let rule = rules::DEVICE_INFO_FORM_FACTOR;
    match pb::FormFactor::try_from(rule.enum_value("device.form_factor", value)?) {
        Ok(pb::FormFactor::Phone) => Ok(FormFactor::Phone),
        Ok(pb::FormFactor::Tablet) => Ok(FormFactor::Tablet),
        _ => Err(rule.enum_violation("device.form_factor")),
    }
}

/// The install token of a request's `authorization: Bearer` metadata.
pub fn install_token(
    metadata: &tonic::metadata::MetadataMap,
) -> Result<InstallToken, RegistrationError> {
    let Some(token) = devicelink_shared::status::bearer_token(metadata) else {
        return Err(RegistrationError::Unauthenticated(
            "missing install token: send `authorization: Bearer <install token>`",
        ));
    };
    InstallToken::parse(token).ok_or(RegistrationError::Unauthenticated(
        "install token is malformed",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> pb::CreateUserRequest {
        pb::CreateUserRequest {
            auth_code: AuthCode::generate().expose().to_owned(),
            app_id: uuid::Uuid::new_v4().to_string(),
            app: Some(pb::AppInfo {
                app_version: "1.2.3".into(),
                sdk_version: "0.9.0".into(),
                bundle_id: "com.example.app".into(),
            }),
            device: Some(pb::DeviceInfo {
                device_id: "device-1".into(),
                platform: pb::Platform::Ios as i32,
                form_factor: pb::FormFactor::Phone as i32,
                model: "iPhone15,2".into(),
                os_version: "17.1".into(),
            }),
            code_verifier: String::new(),
        }
    }

    fn fields(error: RegistrationError) -> Vec<String> {
        match error {
            RegistrationError::InvalidArgument(violations) => {
                violations.into_iter().map(|v| v.field).collect()
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_request_parses() {
        let input = create_user(&valid()).expect("valid");
        assert_eq!(input.device.form_factor, FormFactor::Phone);
        assert_eq!(input.app.bundle_id, "com.example.app");
    }

    #[test]
    fn every_bad_field_is_named() {
        let mut request = valid();
        request.auth_code = "nope".into();
        request.app_id = String::new();
        let device = request.device.as_mut().expect("device");
        device.platform = 0;
        device.form_factor = 99;
        device.model = "x".repeat(129);
        assert_eq!(
            fields(create_user(&request).unwrap_err()),
            [
                "auth_code",
                "app_id",
                "device.platform",
                "device.form_factor",
                "device.model"
            ]
        );
    }

    #[test]
    fn a_verifier_is_optional_and_checked_when_sent() {
        assert!(create_user(&valid()).unwrap().code_verifier.is_none());
        let mut request = valid();
        request.code_verifier = "v".repeat(43);
        assert!(create_user(&request).unwrap().code_verifier.is_some());
        request.code_verifier = "too short".into();
        assert_eq!(
            fields(create_user(&request).unwrap_err()),
            ["code_verifier"]
        );
    }

    #[test]
    fn missing_messages_are_named() {
        let mut request = valid();
        request.app = None;
        request.device = None;
        assert_eq!(
            fields(create_user(&request).unwrap_err()),
            ["app", "device"]
        );
    }
}
