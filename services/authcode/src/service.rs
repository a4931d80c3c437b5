//! The `AuthCodeService` gRPC handler: transport at the edge, domain below.
//!
//! The handler authenticates the key, parses the request into domain types,
//! checks that the key may act for the request's app, mints within the rate
//! limits ([`crate::limits`]), and answers. Nothing below it sees a raw
//! request field.

use std::time::SystemTime;

use devicelink_shared::api_key::SCOPE_USER_LINK;
use devicelink_shared::audit::CallContext;
use devicelink_shared::audit_writer::{AuditWriter, MintedEvent};
use devicelink_shared::code_challenge::CodeChallenge;
use devicelink_shared::contract::rules;
use devicelink_shared::limits::Scope;
use devicelink_shared::pb::auth_code_service_server::AuthCodeService;
use devicelink_shared::pb::{MintAuthCodeRequest, MintAuthCodeResponse};
use devicelink_shared::validate::{AppId, ExternalId, FieldViolation};
use tonic::{Request, Response, Status};

use crate::api_keys::{ApiKeyVerifier, VerifiedKey};
use crate::codes::{CodeMinter, MintedCode};
use crate::error::AuthCodeError;
use crate::limits::MintLimits;

/// A validated mint request.
#[derive(Debug)]
struct MintRequest {
    external_id: ExternalId,
    /// The app the caller expects the code to be bound to, if it said.
    app_id: Option<AppId>,
    /// The device the code is bound to, if the backend bound it.
    code_challenge: Option<CodeChallenge>,
}

impl MintRequest {
    /// Checks every field and reports all violations at once.
    fn parse(request: MintAuthCodeRequest) -> Result<Self, AuthCodeError> {
        let mut violations = Vec::new();
        let external_id = ExternalId::parse_declared(
            &rules::MINT_AUTH_CODE_REQUEST_EXTERNAL_ID,
            "external_id",
            &request.external_id,
        )
        .map_err(|violation| violations.push(violation))
        .ok();
        // Not required: an empty app id means the key's app.
        let app_id = AppId::parse_declared(
            &rules::MINT_AUTH_CODE_REQUEST_APP_ID,
            "app_id",
            &request.app_id,
        )
        .map_err(|violation| violations.push(violation))
        .ok()
        .flatten();
        let code_challenge = match (
            request.code_challenge.as_str(),
            request.code_challenge_method.as_str(),
        ) {
            // A method alone describes no challenge: checked, then moot.
            ("", method) => {
                let rule = &rules::MINT_AUTH_CODE_REQUEST_CODE_CHALLENGE_METHOD;
                if let Err(violation) = rule.text("code_challenge_method", method) {
                    violations.push(violation);
                }
                None
            }
            (challenge, method) => CodeChallenge::parse("code_challenge", challenge, method)
                .map_err(|violation| violations.push(violation))
                .ok(),
        };
        match external_id {
            Some(external_id) if violations.is_empty() => Ok(Self {
                external_id,
                app_id,
                code_challenge,
            }),
            _ => Err(AuthCodeError::InvalidArgument(violations)),
        }
    }

    /// Refuses a code without a challenge for an app that binds every code
    /// to a device. INVALID_ARGUMENT rather than FAILED_PRECONDITION: the
    /// request is what must change, and retrying it as it is never helps.
    fn check_app_security(&self, key: &VerifiedKey) -> Result<(), AuthCodeError> {
        if key.require_code_challenge && self.code_challenge.is_none() {
            return Err(FieldViolation::new(
                "code_challenge",
                "this app requires code_challenge: send BASE64URL(SHA256(code_verifier)) \
                 made by the app on the device",
            )
            .into());
        }
        Ok(())
    }
}

/// Serves `AuthCodeService`: one per replica, shared by every request.
pub struct AuthCodeHandler {
    verifier: ApiKeyVerifier,
    minter: CodeMinter,
    limits: MintLimits,
    /// Where mints and rate-limit refusals are audited, off the call's
    /// path (a buffer written in batches: no Postgres round trip per mint).
    audit: AuditWriter,
    /// Whether each mint is a `code_minted` event (`AUDIT_MINT_EVENTS`).
    audit_mints: bool,
}

impl AuthCodeHandler {
    /// A handler checking keys with `verifier`, storing codes with `minter`
    /// and limiting callers with `limits`, auditing to `audit`.
    pub fn new(
        verifier: ApiKeyVerifier,
        minter: CodeMinter,
        limits: MintLimits,
        audit: AuditWriter,
    ) -> Self {
        Self {
            verifier,
            minter,
            limits,
            audit,
            audit_mints: true,
        }
    }

    /// The same, recording mints as audit events only when `audit_mints`
    /// (refusals are recorded either way).
    pub fn auditing_mints(mut self, audit_mints: bool) -> Self {
        self.audit_mints = audit_mints;
        self
    }

    /// Counts a rate-limit refusal for the audit log, with the app when the
    /// refusing scope names one.
    fn audit_limited(&self, error: &AuthCodeError, app_id: Option<AppId>) {
        if let AuthCodeError::RateLimited(refusal) = error {
            let app_id = app_id.filter(|_| refusal.scope != Scope::FailedAuthPerAddress);
            self.audit
                .rate_limited(refusal.scope.name(), app_id.map(|app| app.0));
        }
    }

    /// Appends the `code_minted` event of `minted`, naming the code by its
    /// public id and the person not at all: the event ties to the code's
    /// redemption, which names the user.
    fn audit_mint(&self, context: CallContext, key: &VerifiedKey, minted: &MintedCode) {
        self.audit.minted(MintedEvent {
            occurred_at: SystemTime::now(),
            app_id: key.app_id.0,
            api_key_id: key.key_id.to_string(),
            expires_at: minted.expires_at,
            code_hash: minted.code_hash,
            context,
        });
    }

    async fn mint(
        &self,
        request: Request<MintAuthCodeRequest>,
    ) -> Result<MintAuthCodeResponse, AuthCodeError> {
        // Who is calling comes first: an unauthenticated caller learns
        // nothing about its request. A client address blocked by its failed
        // credentials is refused before its key is looked up.
        let limits = self
            .limits
            .for_call(request.remote_addr(), request.metadata());
        let key = match self.verifier.verify(request.metadata(), &limits).await {
            Ok(key) => key,
            Err(error) => {
                self.audit_limited(&error, None);
                return Err(limits.failed(error).await);
            }
        };
        let context = CallContext::new(limits.client_address(), request.metadata());
        key.require_scope(SCOPE_USER_LINK)?;
        let request = MintRequest::parse(request.into_inner())?;
        if request.app_id.is_some_and(|app_id| app_id != key.app_id) {
            return Err(AuthCodeError::WrongApp);
        }
        request.check_app_security(&key)?;

        let minted = self
            .minter
            .mint(
                key.app_id,
                &request.external_id,
                request.code_challenge.as_ref(),
                &key.key_id,
                &key.app_limits,
                &limits,
            )
            .await
            .inspect_err(|error| self.audit_limited(error, Some(key.app_id)))?;
        if self.audit_mints {
            self.audit_mint(context, &key, &minted);
        }
        // The external id is the customer's identifier of a person and the
        // code is a secret: neither is logged.
        // Per-call detail is debug: minting is the hot path, and
        // `devicelink_auth_codes_minted_total` and the key's `last_used_at`
        // already account for it.
        tracing::debug!(
            app_id = %key.app_id,
            key_id = %key.key_id,
            device_bound = request.code_challenge.is_some(),
            "auth code minted"
        );
        metrics::counter!(devicelink_shared::metrics_catalog::AUTH_CODES_MINTED).increment(1);
        Ok(MintAuthCodeResponse {
            auth_code: minted.code.expose().to_owned(),
            expires_at: Some(minted.expires_at.into()),
            app_id: key.app_id.to_string(),
        })
    }
}

#[tonic::async_trait]
impl AuthCodeService for AuthCodeHandler {
    async fn mint_auth_code(
        &self,
        request: Request<MintAuthCodeRequest>,
    ) -> Result<Response<MintAuthCodeResponse>, Status> {
        self.mint(request)
            .await
            .map(Response::new)
            .map_err(Status::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(external_id: &str, app_id: &str) -> MintAuthCodeRequest {
        MintAuthCodeRequest {
            external_id: external_id.into(),
            app_id: app_id.into(),
            ..Default::default()
        }
    }

    /// RFC 7636, appendix B.
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn bound(challenge: &str, method: &str) -> MintAuthCodeRequest {
        MintAuthCodeRequest {
            code_challenge: challenge.into(),
            code_challenge_method: method.into(),
            ..request("user-1", "")
        }
    }

    fn fields(result: Result<MintRequest, AuthCodeError>) -> Vec<String> {
        let Err(AuthCodeError::InvalidArgument(violations)) = result else {
            panic!("expected INVALID_ARGUMENT");
        };
        violations
            .into_iter()
            .map(|violation| violation.field)
            .collect()
    }

    #[test]
    fn a_challenge_is_optional_and_only_s256() {
        assert!(
            MintRequest::parse(bound("", ""))
                .unwrap()
                .code_challenge
                .is_none()
        );
        for method in ["", "S256"] {
            let parsed = MintRequest::parse(bound(CHALLENGE, method)).expect("valid");
            assert_eq!(parsed.code_challenge.unwrap().to_text(), CHALLENGE);
        }
        assert_eq!(
            fields(MintRequest::parse(bound(CHALLENGE, "plain"))),
            ["code_challenge_method"]
        );
        // A method alone binds nothing, but is still checked.
        let unbound = MintRequest::parse(bound("", "S256")).expect("valid");
        assert!(unbound.code_challenge.is_none());
        assert_eq!(
            fields(MintRequest::parse(bound("", "plain"))),
            ["code_challenge_method"]
        );
        assert_eq!(
            fields(MintRequest::parse(bound("not-a-hash", ""))),
            ["code_challenge"]
        );
    }

    #[test]
    fn app_id_is_optional() {
        let parsed = MintRequest::parse(request("user-1", "")).expect("valid");
        assert_eq!(parsed.external_id.as_str(), "user-1");
        assert_eq!(parsed.app_id, None);
        let app_id = uuid::Uuid::new_v4();
        let parsed = MintRequest::parse(request("user-1", &app_id.to_string())).expect("valid");
        assert_eq!(parsed.app_id, Some(AppId(app_id)));
    }

    #[test]
    fn every_bad_field_is_named() {
        let Err(AuthCodeError::InvalidArgument(violations)) =
            MintRequest::parse(request("", "nope"))
        else {
            panic!("expected INVALID_ARGUMENT");
        };
        let fields: Vec<&str> = violations
            .iter()
            .map(|violation| violation.field.as_str())
            .collect();
        assert_eq!(fields, ["external_id", "app_id"]);
        let status = Status::from(AuthCodeError::InvalidArgument(violations));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().contains("external_id: is required"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn control_characters_in_external_ids_are_refused() {
        assert!(matches!(
            MintRequest::parse(request("user\n1", "")),
            Err(AuthCodeError::InvalidArgument(_))
        ));
    }
}
