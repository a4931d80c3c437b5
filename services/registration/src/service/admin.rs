//! `AdminService`: apps, API keys, SDK configuration and users, for
//! named operators, each call authenticated by [`super::admin_guard`].

use std::time::Duration;

use devicelink_shared::api_key::{self, KNOWN_SCOPES, KeyId, SCOPE_USER_LINK};
use devicelink_shared::config::LimitsConfig;
use devicelink_shared::limits::Scope;
use devicelink_shared::pb;
use devicelink_shared::pb::admin_service_server::AdminService;
use devicelink_shared::validate::{AppId, Charset, ExternalId, FieldViolation, text};
use tonic::{Request, Response, Status};

use super::convert::{form_factor, install_status, platform, timestamp};
use super::sdk_config::{MAX_SDK_CONFIG_BYTES, json_to_struct, struct_to_json, unservable_reason};
use crate::domain::MAX_ACTIVE_KEYS_PER_APP;
use crate::error::RegistrationError;
use crate::operators::OperatorName;
use crate::store::{
    ApiKeyRecord, AppLimits, AppRecord, CreateKeyOutcome, LimitOverride, NewApiKeyRecord, Store,
    UserRecord,
};

/// How long a key lives unless its creator says otherwise.
pub const DEFAULT_KEY_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// The longest life a key may be given.
pub const MAX_KEY_TTL: Duration = Duration::from_secs(2 * 365 * 24 * 3600);
/// The longest app name.
const MAX_APP_NAME_CHARS: usize = 128;

/// Handles `AdminService`.
#[derive(Clone)]
pub struct AdminHandler {
    store: Store,
    /// The deployment's limits, which `GetApp` shows where an app keeps
    /// them.
    default_limits: LimitsConfig,
}

impl AdminHandler {
    /// A handler over the store; `default_limits` are the deployment's
    /// (`RATE_LIMIT_*`).
    pub fn new(store: Store, default_limits: LimitsConfig) -> Self {
        Self {
            store,
            default_limits,
        }
    }
}

/// The operator [`super::admin_guard::AdminGuard`] authenticated. Without
/// one (the handler served without its guard) the call is refused: the
/// admin API fails closed.
pub fn operator<T>(request: &Request<T>) -> Result<OperatorName, Status> {
    request
        .extensions()
        .get::<OperatorName>()
        .cloned()
        .ok_or_else(|| {
            Status::unauthenticated("AdminService is served only behind its operator guard")
        })
}

fn invalid(violation: FieldViolation) -> RegistrationError {
    RegistrationError::InvalidArgument(vec![violation])
}

fn app_id(value: &str) -> Result<AppId, RegistrationError> {
    AppId::parse("app_id", value).map_err(invalid)
}

fn scopes(requested: &[String]) -> Result<Vec<String>, RegistrationError> {
    if requested.is_empty() {
        return Ok(vec![SCOPE_USER_LINK.to_owned()]);
    }
    let mut scopes = Vec::new();
    for scope in requested {
        if !KNOWN_SCOPES.contains(&scope.as_str()) {
            return Err(RegistrationError::invalid(
                "scopes",
                &format!(
                    "unknown scope {scope:?}; known scopes: {}",
                    KNOWN_SCOPES.join(", ")
                ),
            ));
        }
        if !scopes.contains(scope) {
            scopes.push(scope.clone());
        }
    }
    Ok(scopes)
}

fn key_ttl(ttl_seconds: u64) -> Result<Duration, RegistrationError> {
    match Duration::from_secs(ttl_seconds) {
        ttl if ttl.is_zero() => Ok(DEFAULT_KEY_TTL),
        ttl if ttl <= MAX_KEY_TTL => Ok(ttl),
        _ => Err(RegistrationError::invalid(
            "ttl_seconds",
            &format!("must be at most {} (two years)", MAX_KEY_TTL.as_secs()),
        )),
    }
}

fn key_state(key: &ApiKeyRecord) -> pb::ApiKeyState {
    if key.revoked_at.is_some() {
        pb::ApiKeyState::Revoked
    } else if key.expires_at <= std::time::SystemTime::now() {
        pb::ApiKeyState::Expired
    } else {
        pb::ApiKeyState::Active
    }
}

fn api_key_message(key: ApiKeyRecord) -> pb::ApiKey {
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

fn user_message(user: UserRecord) -> pb::User {
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
fn app_limits(request: Option<&pb::AppLimits>) -> Result<AppLimits, RegistrationError> {
    let Some(request) = request else {
        return Ok(AppLimits::default());
    };
    let mut violations = Vec::new();
    let mut parse = |field: &str, text: &Option<String>| {
        let parsed = text.as_deref().map(LimitOverride::parse).transpose();
        parsed.unwrap_or_else(|error| {
            violations.push(FieldViolation::new(format!("limits.{field}"), error));
            None
        })
    };
    let limits = AppLimits {
        mint_per_key: parse("mint_per_key", &request.mint_per_key),
        mint_per_external_id: parse("mint_per_external_id", &request.mint_per_external_id),
        redeem_per_device: parse("redeem_per_device", &request.redeem_per_device),
    };
    if violations.is_empty() {
        Ok(limits)
    } else {
        Err(RegistrationError::InvalidArgument(violations))
    }
}

/// An app's own limits as sent back: unset where it keeps the default.
fn app_limits_message(limits: &AppLimits) -> pb::AppLimits {
    let text = |setting: Option<LimitOverride>| setting.map(|setting| setting.to_string());
    pb::AppLimits {
        mint_per_key: text(limits.mint_per_key),
        mint_per_external_id: text(limits.mint_per_external_id),
        redeem_per_device: text(limits.redeem_per_device),
    }
}

/// The rates an app is held to, every field set (`off` where none is).
fn effective_limits_message(limits: &AppLimits, defaults: &LimitsConfig) -> pb::AppLimits {
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

fn app_message(app: AppRecord, defaults: &LimitsConfig) -> pb::App {
    pb::App {
        app_id: app.app_id.to_string(),
        name: app.name,
        created_at: Some(timestamp(app.created_at)),
        sdk_config: Some(json_to_struct(&app.sdk_config)),
        limits: Some(app_limits_message(&app.limits)),
        effective_limits: Some(effective_limits_message(&app.limits, defaults)),
    }
}

fn user_not_found() -> RegistrationError {
    RegistrationError::NotFound("no user with this external id in this app".into())
}

fn app_not_found(app_id: AppId) -> RegistrationError {
    RegistrationError::NotFound(format!("app {app_id} does not exist"))
}

/// The calls, each answering in [`RegistrationError`]; the trait below
/// turns that into a `Status` once per call.
impl AdminHandler {
    async fn create_app(
        &self,
        operator: &OperatorName,
        request: &pb::CreateAppRequest,
    ) -> Result<pb::CreateAppResponse, RegistrationError> {
        let name = text(
            "name",
            &request.name,
            MAX_APP_NAME_CHARS,
            Charset::Printable,
        )
        .map_err(invalid)?;
        let app_id = self.store.create_app(&name).await?;
        tracing::info!(%operator, %app_id, "app created");
        Ok(pb::CreateAppResponse {
            app_id: app_id.to_string(),
        })
    }

    async fn create_api_key(
        &self,
        operator: &OperatorName,
        request: &pb::CreateApiKeyRequest,
    ) -> Result<pb::CreateApiKeyResponse, RegistrationError> {
        let app_id = app_id(&request.app_id)?;
        let scopes = scopes(&request.scopes)?;
        let ttl = key_ttl(request.ttl_seconds)?;
        let key = api_key::generate();
        let record = NewApiKeyRecord {
            key_id: key.key_id.clone(),
            app_id,
            secret_hash: key.secret_hash,
            scopes,
            ttl,
        };
        let expires_at = match self.store.create_api_key(&record).await? {
            CreateKeyOutcome::Created { expires_at } => expires_at,
            CreateKeyOutcome::TooManyActiveKeys => {
                return Err(RegistrationError::FailedPrecondition(format!(
                    "app {app_id} already holds {MAX_ACTIVE_KEYS_PER_APP} active API keys; revoke one first"
                )));
            }
            CreateKeyOutcome::AppNotFound => return Err(app_not_found(app_id)),
        };
        tracing::info!(%operator, %app_id, key_id = %key.key_id, "API key created");
        Ok(pb::CreateApiKeyResponse {
            api_key: key.text,
            key_id: key.key_id.to_string(),
            expires_at: Some(timestamp(expires_at)),
        })
    }

    async fn list_api_keys(
        &self,
        request: &pb::ListApiKeysRequest,
    ) -> Result<pb::ListApiKeysResponse, RegistrationError> {
        let app_id = app_id(&request.app_id)?;
        let keys = self
            .store
            .list_api_keys(app_id)
            .await?
            .ok_or_else(|| app_not_found(app_id))?;
        Ok(pb::ListApiKeysResponse {
            api_keys: keys.into_iter().map(api_key_message).collect(),
        })
    }

    async fn revoke_api_key(
        &self,
        operator: &OperatorName,
        request: &pb::RevokeApiKeyRequest,
    ) -> Result<pb::RevokeApiKeyResponse, RegistrationError> {
        let key_id = KeyId::parse(&request.key_id).ok_or_else(|| {
            RegistrationError::invalid("key_id", "must be a key id as shown by ListApiKeys")
        })?;
        let Some(revoked_at) = self.store.revoke_api_key(&key_id).await? else {
            return Err(RegistrationError::NotFound(format!(
                "API key {key_id} does not exist"
            )));
        };
        tracing::info!(%operator, %key_id, "API key revoked");
        Ok(pb::RevokeApiKeyResponse {
            revoked_at: Some(timestamp(revoked_at)),
        })
    }

    async fn set_sdk_config(
        &self,
        operator: &OperatorName,
        request: &pb::SetSdkConfigRequest,
    ) -> Result<pb::SetSdkConfigResponse, RegistrationError> {
        let app_id = app_id(&request.app_id)?;
        let config = struct_to_json(&request.sdk_config.clone().unwrap_or_default());
        let encoded_len = serde_json::to_vec(&config).map_or(usize::MAX, |bytes| bytes.len());
        if encoded_len > MAX_SDK_CONFIG_BYTES {
            return Err(RegistrationError::invalid(
                "sdk_config",
                "must be at most 64 KiB once encoded as JSON",
            ));
        }
        if let Some(reason) = unservable_reason(&config) {
            return Err(RegistrationError::invalid("sdk_config", reason));
        }
        if !self.store.set_sdk_config(app_id, &config).await? {
            return Err(app_not_found(app_id));
        }
        tracing::info!(%operator, %app_id, "SDK configuration set");
        Ok(pb::SetSdkConfigResponse {})
    }

    async fn get_app(
        &self,
        request: &pb::GetAppRequest,
    ) -> Result<pb::GetAppResponse, RegistrationError> {
        let app_id = app_id(&request.app_id)?;
        let app = self
            .store
            .get_app(app_id)
            .await?
            .ok_or_else(|| app_not_found(app_id))?;
        Ok(pb::GetAppResponse {
            app: Some(app_message(app, &self.default_limits)),
        })
    }

    async fn set_app_limits(
        &self,
        operator: &OperatorName,
        request: &pb::SetAppLimitsRequest,
    ) -> Result<pb::SetAppLimitsResponse, RegistrationError> {
        let app_id = app_id(&request.app_id)?;
        let limits = app_limits(request.limits.as_ref())?;
        if !self.store.set_app_limits(app_id, limits).await? {
            return Err(app_not_found(app_id));
        }
        let stored = app_limits_message(&limits);
        tracing::info!(
            %operator,
            %app_id,
            mint_per_key = stored.mint_per_key.as_deref().unwrap_or("default"),
            mint_per_external_id = stored.mint_per_external_id.as_deref().unwrap_or("default"),
            redeem_per_device = stored.redeem_per_device.as_deref().unwrap_or("default"),
            "app limits set"
        );
        Ok(pb::SetAppLimitsResponse {
            limits: Some(stored),
        })
    }

    async fn get_user(
        &self,
        request: &pb::GetUserRequest,
    ) -> Result<pb::GetUserResponse, RegistrationError> {
        let app_id = app_id(&request.app_id)?;
        let external_id =
            ExternalId::parse("external_id", &request.external_id).map_err(invalid)?;
        let user = self
            .store
            .get_user(app_id, &external_id)
            .await?
            .ok_or_else(user_not_found)?;
        Ok(pb::GetUserResponse {
            user: Some(user_message(user)),
        })
    }

    async fn delete_user(
        &self,
        operator: &OperatorName,
        request: &pb::DeleteUserRequest,
    ) -> Result<pb::DeleteUserResponse, RegistrationError> {
        let app_id = app_id(&request.app_id)?;
        let external_id =
            ExternalId::parse("external_id", &request.external_id).map_err(invalid)?;
        if !self.store.delete_user(app_id, &external_id).await? {
            return Err(user_not_found());
        }
        tracing::info!(%operator, %app_id, "user erased");
        metrics::counter!(devicelink_shared::metrics_catalog::USERS_ERASED).increment(1);
        Ok(pb::DeleteUserResponse {})
    }
}

#[tonic::async_trait]
impl AdminService for AdminHandler {
    async fn create_app(
        &self,
        request: Request<pb::CreateAppRequest>,
    ) -> Result<Response<pb::CreateAppResponse>, Status> {
        Ok(Response::new(
            AdminHandler::create_app(self, &operator(&request)?, request.get_ref()).await?,
        ))
    }

    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        Ok(Response::new(
            AdminHandler::create_api_key(self, &operator(&request)?, request.get_ref()).await?,
        ))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        operator(&request)?;
        Ok(Response::new(
            AdminHandler::list_api_keys(self, request.get_ref()).await?,
        ))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::RevokeApiKeyResponse>, Status> {
        Ok(Response::new(
            AdminHandler::revoke_api_key(self, &operator(&request)?, request.get_ref()).await?,
        ))
    }

    async fn set_sdk_config(
        &self,
        request: Request<pb::SetSdkConfigRequest>,
    ) -> Result<Response<pb::SetSdkConfigResponse>, Status> {
        Ok(Response::new(
            AdminHandler::set_sdk_config(self, &operator(&request)?, request.get_ref()).await?,
        ))
    }

    async fn get_app(
        &self,
        request: Request<pb::GetAppRequest>,
    ) -> Result<Response<pb::GetAppResponse>, Status> {
        operator(&request)?;
        Ok(Response::new(
            AdminHandler::get_app(self, request.get_ref()).await?,
        ))
    }

    async fn set_app_limits(
        &self,
        request: Request<pb::SetAppLimitsRequest>,
    ) -> Result<Response<pb::SetAppLimitsResponse>, Status> {
        Ok(Response::new(
            AdminHandler::set_app_limits(self, &operator(&request)?, request.get_ref()).await?,
        ))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        operator(&request)?;
        Ok(Response::new(
            AdminHandler::get_user(self, request.get_ref()).await?,
        ))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        Ok(Response::new(
            AdminHandler::delete_user(self, &operator(&request)?, request.get_ref()).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
