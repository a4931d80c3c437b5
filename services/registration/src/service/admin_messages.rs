//! `AdminService`'s requests parsed into domain values, and its answers
//! built from stored records: the edge of [`super::admin`], kept apart
//! from its calls.

use std::time::Duration;

use devicelink_shared::api_key::SCOPE_USER_LINK;
use devicelink_shared::config::LimitsConfig;
use devicelink_shared::contract::{FieldRule, rules};
use devicelink_shared::limits::Scope;
use devicelink_shared::pb;
use devicelink_shared::validate::{AppId, ExternalId, FieldViolation};

use super::admin::DEFAULT_KEY_TTL;
use super::convert::{form_factor, install_status, platform, timestamp};
use super::sdk_config::json_to_struct;
use crate::error::RegistrationError;
use crate::store::{ApiKeyRecord, AppLimits, AppRecord, LimitOverride, UserRecord};

pub(super) fn invalid(violation: FieldViolation) -> RegistrationError {
    RegistrationError::InvalidArgument(vec![violation])
}

/// The request's `app_id`, by the field's declared `rule`.
pub(super) fn app_id(rule: &FieldRule, value: &str) -> Result<AppId, RegistrationError> {
    AppId::parse_required(rule, "app_id", value).map_err(invalid)
}

/// The request's `external_id`, by the field's declared `rule`.
pub(super) fn external_id(rule: &FieldRule, value: &str) -> Result<ExternalId, RegistrationError> {
    ExternalId::parse_declared(rule, "external_id", value).map_err(invalid)
}

pub(super) fn scopes(requested: &[String]) -> Result<Vec<String>, RegistrationError> {
    if requested.is_empty() {
        return Ok(vec![SCOPE_USER_LINK.to_owned()]);
    }
    let known = rules::CREATE_API_KEY_REQUEST_SCOPES.one_of;
    let mut scopes = Vec::new();
    for scope in requested {
        if !known.contains(&scope.as_str()) {
            return Err(RegistrationError::invalid(
                "scopes",
                &format!(
                    "unknown scope {scope:?}; known scopes: {}",
                    known.join(", ")
                ),
            ));
        }
        if !scopes.contains(scope) {
            scopes.push(scope.clone());
        }
    }
    Ok(scopes)
}

pub(super) fn key_ttl(ttl_seconds: u64) -> Result<Duration, RegistrationError> {
    rules::CREATE_API_KEY_REQUEST_TTL_SECONDS
        .number("ttl_seconds", ttl_seconds)
        .map_err(|violation| {
            invalid(FieldViolation::new(
                violation.field,
                format!("{} (two years)", violation.description),
            ))
        })?;
    match Duration::from_secs(ttl_seconds) {
        ttl if ttl.is_zero() => Ok(DEFAULT_KEY_TTL),
        ttl => Ok(ttl),
    }
}

pub(super) fn key_state(key: &ApiKeyRecord) -> pb::ApiKeyState {
    if key.revoked_at.is_some() {
        pb::ApiKeyState::Revoked
    } else if key.expires_at <= std::time::SystemTime::now() {
        pb::ApiKeyState::Expired
    } else {
        pb::ApiKeyState::Active
    }
}

pub(super) fn api_key_message(key: ApiKeyRecord) -> pb::ApiKey {
    pb::ApiKey {
        state: key_state(&key) as i32,
        key_id: key.key_id,
        app_id: key.app_id.to_string(),
        scopes: key.scopes,
        created_at: Some(timestamp(key.created_at)),
        expires_at: Some(timestamp(key.expires_at)),
        last_used_at: key.last_used_at.map(timestamp),
        revoked_at: key.revoked_at.map(timestamp),
    }
}

pub(super) fn user_message(user: UserRecord) -> pb::User {
    pb::User {
        user_id: user.user_id.to_string(),
        app_id: user.app_id.to_string(),
        external_id: user.external_id,
        epoch: user.epoch,
        created_at: Some(timestamp(user.created_at)),
        installs: user
            .installs
            .into_iter()
            .map(|install| pb::InstallSummary {
                status: Some(install_status(&install.status)),
                device_id: install.device_id,
                platform: platform(install.platform) as i32,
                form_factor: form_factor(install.form_factor) as i32,
                model: install.model,
                os_version: install.os_version,
                app_version: install.app_version,
                sdk_version: install.sdk_version,
                created_at: Some(timestamp(install.created_at)),
            })
            .collect(),
    }
}

/// Parses an app's limits, each field in the operators' syntax, reporting
/// every bad field at once.
pub(super) fn app_limits(request: Option<&pb::AppLimits>) -> Result<AppLimits, RegistrationError> {
    let Some(request) = request else {
        return Ok(AppLimits::default());
    };
    let mut violations = Vec::new();
    // The declared rate syntax first, then the parse that yields the value;
    // both refuse the same texts with the parser's own words.
    let mut parse = |rule: FieldRule, text: &Option<String>| {
        let path = format!("limits.{}", rule.field);
        let parsed = text
            .as_deref()
            .map(|text| {
                rule.text(&path, text)
                    .map_err(|violation| violation.description)
                    .and_then(|_| LimitOverride::parse(text))
            })
            .transpose();
        parsed.unwrap_or_else(|error| {
            violations.push(FieldViolation::new(path, error));
            None
        })
    };
    let limits = AppLimits {
        mint_per_key: parse(rules::APP_LIMITS_MINT_PER_KEY, &request.mint_per_key),
        mint_per_external_id: parse(
            rules::APP_LIMITS_MINT_PER_EXTERNAL_ID,
            &request.mint_per_external_id,
        ),
        redeem_per_device: parse(
            rules::APP_LIMITS_REDEEM_PER_DEVICE,
            &request.redeem_per_device,
        ),
    };
    if violations.is_empty() {
        Ok(limits)
    } else {
        Err(RegistrationError::InvalidArgument(violations))
    }
}

/// An app's own limits as sent back: unset where it keeps the default.
pub(super) fn app_limits_message(limits: &AppLimits) -> pb::AppLimits {
    let text = |setting: Option<LimitOverride>| setting.map(|setting| setting.to_string());
    pb::AppLimits {
        mint_per_key: text(limits.mint_per_key),
        mint_per_external_id: text(limits.mint_per_external_id),
        redeem_per_device: text(limits.redeem_per_device),
    }
}

/// The rates an app is held to, every field set (`off` where none is).
pub(super) fn effective_limits_message(
    limits: &AppLimits,
    defaults: &LimitsConfig,
) -> pb::AppLimits {
    let effective = |scope| {
        Some(
            limits
                .rate(scope, defaults)
                .map_or(LimitOverride::Off, LimitOverride::Rate)
                .to_string(),
        )
    };
    pb::AppLimits {
        mint_per_key: effective(Scope::MintPerKey),
        mint_per_external_id: effective(Scope::MintPerExternalId),
        redeem_per_device: effective(Scope::RedeemPerDevice),
    }
}

pub(super) fn app_message(app: AppRecord, defaults: &LimitsConfig) -> pb::App {
    pb::App {
        app_id: app.app_id.to_string(),
        name: app.name,
        created_at: Some(timestamp(app.created_at)),
        sdk_config: Some(json_to_struct(&app.sdk_config)),
        limits: Some(app_limits_message(&app.limits)),
        effective_limits: Some(effective_limits_message(&app.limits, defaults)),
        security: Some(pb::AppSecurity {
            require_code_challenge: app.require_code_challenge,
        }),
    }
}

pub(super) fn user_not_found() -> RegistrationError {
    RegistrationError::NotFound("no user with this external id in this app".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::admin::MAX_KEY_TTL;

    #[test]
    fn scopes_default_to_user_link_and_refuse_unknown_ones() {
        assert_eq!(scopes(&[]).expect("default"), ["user_link"]);
        assert!(scopes(&["admin".into()]).is_err());
        assert_eq!(
            scopes(&["user_link".into(), "user_link".into()]).expect("dedup"),
            ["user_link"]
        );
    }

    #[test]
    fn app_limits_report_every_bad_field_and_keep_unset_ones_default() {
        let request = pb::AppLimits {
            mint_per_key: Some("50/s,burst=100".into()),
            mint_per_external_id: Some("ten a minute".into()),
            redeem_per_device: Some("10/fortnight".into()),
        };
        let Err(RegistrationError::InvalidArgument(violations)) = app_limits(Some(&request)) else {
            panic!("bad limits were accepted");
        };
        let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            ["limits.mint_per_external_id", "limits.redeem_per_device"]
        );

        let request = pb::AppLimits {
            mint_per_key: Some("off".into()),
            mint_per_external_id: Some("5/min".into()),
            redeem_per_device: None,
        };
        let limits = app_limits(Some(&request)).expect("valid limits");
        assert_eq!(limits.mint_per_key, Some(LimitOverride::Off));
        assert_eq!(limits.redeem_per_device, None);
        assert_eq!(
            app_limits_message(&limits).mint_per_external_id.as_deref(),
            Some("5/min,burst=5")
        );
    }

    #[test]
    fn key_ttl_defaults_to_a_year_and_is_bounded() {
        assert_eq!(key_ttl(0).expect("default"), DEFAULT_KEY_TTL);
        assert_eq!(key_ttl(60).expect("short"), Duration::from_secs(60));
        assert!(key_ttl(MAX_KEY_TTL.as_secs() + 1).is_err());
    }
}
