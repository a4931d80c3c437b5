//! `AdminService`: apps, API keys, SDK configuration and users, for
//! named operators, each call authenticated by [`super::admin_guard`].

use std::time::Duration;

use devicelink_shared::api_key::{self, KeyId};
use devicelink_shared::config::LimitsConfig;
use devicelink_shared::contract::rules;
use devicelink_shared::pb;
use devicelink_shared::pb::admin_service_server::AdminService;
use devicelink_shared::serving::DrainSignal;
use tonic::{Request, Response, Status};

use super::admin_messages::{
    api_key_message, app_id, app_limits, app_limits_message, app_message, external_id, invalid,
    key_ttl, scopes, user_message, user_not_found,
};
use super::audit_events;
use super::convert::timestamp;
use super::sdk_config::struct_to_json;
use crate::audit::{Actor, CallContext};
use crate::domain::MAX_ACTIVE_KEYS_PER_APP;
use crate::error::RegistrationError;
use crate::operators::OperatorName;
use crate::store::{Attribution, CreateKeyOutcome, NewApiKeyRecord, Store};

/// How long a key lives unless its creator says otherwise.
pub const DEFAULT_KEY_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// The longest life a key may be given, as `CreateApiKeyRequest.ttl_seconds`
/// declares it.
pub const MAX_KEY_TTL: Duration =
    Duration::from_secs(match rules::CREATE_API_KEY_REQUEST_TTL_SECONDS.max_value {
        Some(max) => max,
        None => u64::MAX,
    });

/// Handles `AdminService`.
#[derive(Clone)]
pub struct AdminHandler {
    store: Store,
    /// The deployment's limits, which `GetApp` shows where an app keeps
    /// them.
    default_limits: LimitsConfig,
    /// Fires when the server drains: open audit watches end.
    drain: DrainSignal,
}

impl AdminHandler {
    /// A handler over the store; `default_limits` are the deployment's
    /// (`RATE_LIMIT_*`).
    pub fn new(store: Store, default_limits: LimitsConfig, drain: DrainSignal) -> Self {
        Self {
            store,
            default_limits,
            drain,
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

/// The operator and the call, as the events of an admin change record
/// them.
fn attribution<T>(request: &Request<T>) -> Result<Attribution, Status> {
    Ok(Attribution {
        context: CallContext::new(
            request.remote_addr().map(|peer| peer.ip()),
            request.metadata(),
        ),
        actor: Actor::Operator(operator(request)?.as_str().to_owned()),
    })
}

/// The calls, each answering in [`RegistrationError`]; the trait below
/// turns that into a `Status` once per call.
impl AdminHandler {
    async fn create_app(
        &self,
        operator: &OperatorName,
        request: &pb::CreateAppRequest,
    ) -> Result<pb::CreateAppResponse, RegistrationError> {
        let name = rules::CREATE_APP_REQUEST_NAME
            .required_text("name", &request.name)
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
        by: &Attribution,
        request: &pb::CreateApiKeyRequest,
    ) -> Result<pb::CreateApiKeyResponse, RegistrationError> {
        let app_id = app_id(&rules::CREATE_API_KEY_REQUEST_APP_ID, &request.app_id)?;
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
        let expires_at = match self.store.create_api_key(&record, by).await? {
            CreateKeyOutcome::Created { expires_at } => expires_at,
            CreateKeyOutcome::TooManyActiveKeys => {
                return Err(RegistrationError::FailedPrecondition(format!(
                    "app {app_id} already holds {MAX_ACTIVE_KEYS_PER_APP} active API keys; revoke one first"
                )));
            }
            CreateKeyOutcome::AppNotFound => return Err(RegistrationError::app_not_found(app_id)),
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
        let app_id = app_id(&rules::LIST_API_KEYS_REQUEST_APP_ID, &request.app_id)?;
        let keys = self
            .store
            .list_api_keys(app_id)
            .await?
            .ok_or_else(|| RegistrationError::app_not_found(app_id))?;
        Ok(pb::ListApiKeysResponse {
            api_keys: keys.into_iter().map(api_key_message).collect(),
        })
    }

    async fn revoke_api_key(
        &self,
        operator: &OperatorName,
        by: &Attribution,
        request: &pb::RevokeApiKeyRequest,
    ) -> Result<pb::RevokeApiKeyResponse, RegistrationError> {
        // The declared bounds, then the id's form; either failure reads as
        // one message.
        let bad_form =
            || RegistrationError::invalid("key_id", "must be a key id as shown by ListApiKeys");
        let key_id = rules::REVOKE_API_KEY_REQUEST_KEY_ID
            .required_text("key_id", &request.key_id)
            .map_err(|violation| {
                if request.key_id.is_empty() {
                    invalid(violation)
                } else {
                    bad_form()
                }
            })?;
        let key_id = KeyId::parse(&key_id).ok_or_else(bad_form)?;
        let Some(revoked_at) = self.store.revoke_api_key(&key_id, by).await? else {
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
        by: &Attribution,
        request: &pb::SetSdkConfigRequest,
    ) -> Result<pb::SetSdkConfigResponse, RegistrationError> {
        let app_id = app_id(&rules::SET_SDK_CONFIG_REQUEST_APP_ID, &request.app_id)?;
        let config = struct_to_json(&request.sdk_config.clone().unwrap_or_default());
        let rule = rules::SET_SDK_CONFIG_REQUEST_SDK_CONFIG;
        let encoded_len = serde_json::to_vec(&config).map_or(usize::MAX, |bytes| bytes.len());
        rule.json_size("sdk_config", encoded_len).map_err(invalid)?;
        rule.storable_json("sdk_config", &config).map_err(invalid)?;
        if !self
            .store
            .set_sdk_config(app_id, &config, encoded_len, by)
            .await?
        {
            return Err(RegistrationError::app_not_found(app_id));
        }
        tracing::info!(%operator, %app_id, "SDK configuration set");
        Ok(pb::SetSdkConfigResponse {})
    }

    async fn get_app(
        &self,
        request: &pb::GetAppRequest,
    ) -> Result<pb::GetAppResponse, RegistrationError> {
        let app_id = app_id(&rules::GET_APP_REQUEST_APP_ID, &request.app_id)?;
        let app = self
            .store
            .get_app(app_id)
            .await?
            .ok_or_else(|| RegistrationError::app_not_found(app_id))?;
        Ok(pb::GetAppResponse {
            app: Some(app_message(app, &self.default_limits)),
        })
    }

    async fn set_app_limits(
        &self,
        operator: &OperatorName,
        request: &pb::SetAppLimitsRequest,
    ) -> Result<pb::SetAppLimitsResponse, RegistrationError> {
        let app_id = app_id(&rules::SET_APP_LIMITS_REQUEST_APP_ID, &request.app_id)?;
        let limits = app_limits(request.limits.as_ref())?;
        if !self.store.set_app_limits(app_id, limits).await? {
            return Err(RegistrationError::app_not_found(app_id));
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

    async fn set_app_security(
        &self,
        operator: &OperatorName,
        request: &pb::SetAppSecurityRequest,
    ) -> Result<pb::SetAppSecurityResponse, RegistrationError> {
        let app_id = app_id(&rules::SET_APP_SECURITY_REQUEST_APP_ID, &request.app_id)?;
        // Every field of `AppSecurity` has a default, so a request without
        // one sets the defaults, as a request without `limits` does.
        let security = request.security.unwrap_or_default();
        if !self
            .store
            .set_app_security(app_id, security.require_code_challenge)
            .await?
        {
            return Err(RegistrationError::app_not_found(app_id));
        }
        tracing::info!(
            %operator,
            %app_id,
            require_code_challenge = security.require_code_challenge,
            "app security set"
        );
        Ok(pb::SetAppSecurityResponse {
            security: Some(security),
        })
    }

    async fn get_user(
        &self,
        request: &pb::GetUserRequest,
    ) -> Result<pb::GetUserResponse, RegistrationError> {
        let app_id = app_id(&rules::GET_USER_REQUEST_APP_ID, &request.app_id)?;
        let external_id = external_id(&rules::GET_USER_REQUEST_EXTERNAL_ID, &request.external_id)?;
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
        by: &Attribution,
        request: &pb::DeleteUserRequest,
    ) -> Result<pb::DeleteUserResponse, RegistrationError> {
        let app_id = app_id(&rules::DELETE_USER_REQUEST_APP_ID, &request.app_id)?;
        let external_id = external_id(
            &rules::DELETE_USER_REQUEST_EXTERNAL_ID,
            &request.external_id,
        )?;
        if !self.store.delete_user(app_id, &external_id, by).await? {
            return Err(user_not_found());
        }
        tracing::info!(%operator, %app_id, "user erased");
        metrics::counter!(devicelink_shared::metrics_catalog::USERS_ERASED).increment(1);
        Ok(pb::DeleteUserResponse {})
    }
}

#[tonic::async_trait]
impl AdminService for AdminHandler {
    type WatchAuditEventsStream = audit_events::AuditEventStream;

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        operator(&request)?;
        Ok(Response::new(
            audit_events::list(&self.store, request.get_ref()).await?,
        ))
    }

    async fn watch_audit_events(
        &self,
        request: Request<pb::WatchAuditEventsRequest>,
    ) -> Result<Response<Self::WatchAuditEventsStream>, Status> {
        operator(&request)?;
        Ok(Response::new(
            audit_events::watch(&self.store, request.get_ref(), self.drain.clone()).await?,
        ))
    }

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
            AdminHandler::create_api_key(
                self,
                &operator(&request)?,
                &attribution(&request)?,
                request.get_ref(),
            )
            .await?,
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
            AdminHandler::revoke_api_key(
                self,
                &operator(&request)?,
                &attribution(&request)?,
                request.get_ref(),
            )
            .await?,
        ))
    }

    async fn set_sdk_config(
        &self,
        request: Request<pb::SetSdkConfigRequest>,
    ) -> Result<Response<pb::SetSdkConfigResponse>, Status> {
        Ok(Response::new(
            AdminHandler::set_sdk_config(
                self,
                &operator(&request)?,
                &attribution(&request)?,
                request.get_ref(),
            )
            .await?,
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

    async fn set_app_security(
        &self,
        request: Request<pb::SetAppSecurityRequest>,
    ) -> Result<Response<pb::SetAppSecurityResponse>, Status> {
        Ok(Response::new(
            AdminHandler::set_app_security(self, &operator(&request)?, request.get_ref()).await?,
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
            AdminHandler::delete_user(
                self,
                &operator(&request)?,
                &attribution(&request)?,
                request.get_ref(),
            )
            .await?,
        ))
    }
}
