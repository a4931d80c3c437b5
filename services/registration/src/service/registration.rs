//! `RegistrationService`: redeeming codes on devices, and what a device asks
//! about its own install.

use std::pin::Pin;
use std::sync::Arc;

use devicelink_shared::code_challenge::{CodeChallenge, check_possession};
use devicelink_shared::metrics_catalog::{
    ACTIVATIONS, AUTH_CODES_REDEEMED, DEACTIVATIONS, count_redemption,
    redemption_outcome as outcome,
};
use devicelink_shared::pb;
use devicelink_shared::pb::registration_service_server::RegistrationService;
use devicelink_shared::serving::DrainSignal;
use devicelink_shared::validate::{AppId, ExternalId};
use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::convert::install_status;
use super::limits::{Caller, RequestLimits};
use super::parse;
use super::sdk_config::json_to_struct;
use super::watch::{WatchSlots, Watcher};
use crate::audit::{self, Actor, CallContext};
use crate::codes::CodeStore;
use crate::domain::{CreateUserInput, InstallState, InstallStatus, StateReason};
use crate::error::{RegistrationError, StoreError};
use crate::install_token::{InstallToken, new_nonce};
use crate::notify::StatusNotifier;
use crate::status_cache::StatusCache;
use crate::store::{NewRedemption, RedeemOutcome, Redeemed, Store};
use devicelink_shared::audit_writer::PendingAuditEvent;
use devicelink_shared::pb::RedemptionRefusal as Refusal;
use devicelink_shared::pb::audit_event::Payload;

/// Handles `RegistrationService`.
#[derive(Clone)]
pub struct RegistrationHandler {
    store: Store,
    codes: CodeStore,
    /// Install statuses by token, for `GetInstallStatus`; kept fresh by the
    /// listener behind `notifier`.
    statuses: Arc<StatusCache>,
    notifier: StatusNotifier,
    /// Fires when the server drains: open watch streams end cleanly.
    drain: DrainSignal,
    /// Rate limits per device, per install token and per client address.
    limits: RequestLimits,
    /// The watch streams open on this replica, under their caps.
    watch_slots: Arc<WatchSlots>,
}

impl RegistrationHandler {
    /// A handler over the stores.
    pub fn new(
        store: Store,
        codes: CodeStore,
        statuses: Arc<StatusCache>,
        notifier: StatusNotifier,
        drain: DrainSignal,
        limits: RequestLimits,
        watch_slots: Arc<WatchSlots>,
    ) -> Self {
        Self {
            store,
            codes,
            statuses,
            notifier,
            drain,
            limits,
            watch_slots,
        }
    }

    /// Redeems a code, or answers a retry of an earlier redemption by the
    /// same device.
    async fn create_user(
        &self,
        input: CreateUserInput,
        caller: Caller,
        context: &CallContext,
    ) -> Result<pb::CreateUserResponse, RegistrationError> {
        let code_hash = input.auth_code.hash();
        // The limit and the code's read go out together (one round trip on
        // the multiplexed connection); a refusal wins over what was read.
        let (limited, record) = tokio::join!(
            self.limits
                .redeem(caller, input.app_id, &input.device.device_id),
            self.codes.fetch(input.app_id, &code_hash)
        );
        limited?;
        if let Some(record) = record? {
            if record.app_id != input.app_id.to_string() {
                count_redemption(outcome::OTHER_APP);
                self.refused(context, input.app_id, Refusal::OtherApp, None);
                return Err(RegistrationError::PermissionDenied(
                    "the auth code was minted for another app",
                ));
            }
            // Before anything is written: a refused proof consumes nothing,
            // so the device holding the verifier can still redeem the code.
            let code_challenge =
                CodeChallenge::from_stored(&record.code_challenge).map_err(|error| {
                    StoreError::internal(format!("stored auth code record: {error}"))
                })?;
            self.prove_possession(code_challenge.as_ref(), &input, caller, context)
                .await?;
            let external_id =
                ExternalId::parse("external_id", &record.external_id).map_err(|violation| {
                    StoreError::internal(format!("stored auth code record: {violation}"))
                })?;
            let token_nonce = new_nonce();
            let token = InstallToken::derive(&input.auth_code, &token_nonce);
            let external_id_hash = self
                .codes
                .audit_subject_hash(input.app_id, external_id.as_str());
            let redemption = NewRedemption {
                code_hash,
                app_id: input.app_id,
                external_id: &external_id,
                app: &input.app,
                device: &input.device,
                token_nonce,
                token_hash: token.hash(),
                code_expires_at: record.expires_at(),
                code_challenge,
                external_id_hash,
                context,
            };
            let redeemed = match self.store.redeem(&redemption).await? {
                RedeemOutcome::Redeemed(redeemed) => redeemed,
                RedeemOutcome::AlreadyRedeemed => {
                    return self.answer_used_code(&input, caller, context).await;
                }
                RedeemOutcome::DeviceHeldByAnotherUser => {
                    count_redemption(outcome::DEVICE_HELD);
                    self.refused(
                        context,
                        input.app_id,
                        Refusal::DeviceHoldsAnotherUser,
                        Some(external_id_hash),
                    );
                    return Err(device_held());
                }
                RedeemOutcome::AppNotFound => {
                    count_redemption(outcome::APP_NOT_FOUND);
                    return Err(RegistrationError::app_not_found(input.app_id));
                }
            };
            self.codes.retire(input.app_id, code_hash);
            record_redemption(&redeemed);
            // This replica's own readers see the change at once, before
            // its announcement comes back from Postgres.
            self.statuses.evict(redeemed.install_id.0);
            if let Some(superseded) = redeemed.superseded {
                self.statuses.evict(superseded.0);
            }
            // Per-call detail is debug, as for a mint: redemption is the
            // hot path, and its `code_redeemed` audit event and
            // `devicelink_redemptions_total` already record each one. A line
            // per call cost CreateUser a formatted write to the log.
            tracing::debug!(
                app_id = %input.app_id,
                user_id = %redeemed.user_id.0,
                install_id = %redeemed.install_id,
                restored = redeemed.restored,
                "auth code redeemed"
            );
            return Ok(response(redeemed, &token));
        }
        self.answer_used_code(&input, caller, context).await
    }

    /// Appends the event of a refused redemption (off the call's path).
    fn refused(
        &self,
        context: &CallContext,
        app_id: AppId,
        refusal: Refusal,
        external_id_hash: Option<[u8; 32]>,
    ) {
        let reason = refusal
            .as_str_name()
            .trim_start_matches("REDEMPTION_REFUSAL_")
            .to_ascii_lowercase();
        let payload = Payload::RedemptionRefused(pb::RedemptionRefused {
            refusal: refusal as i32,
        });
        let row = audit::refusal(context, &Actor::Device, &reason, payload);
        self.limits.audit().append(PendingAuditEvent {
            external_id_hash,
            ..PendingAuditEvent::new(Some(app_id.0), row)
        });
    }

    /// The code is not live: a retry from the device that redeemed it gets
    /// the same answer; any other device is refused and recorded as a replay.
    async fn answer_used_code(
        &self,
        input: &CreateUserInput,
        caller: Caller,
        context: &CallContext,
    ) -> Result<pb::CreateUserResponse, RegistrationError> {
        let code_hash = input.auth_code.hash();
        let Some(past) = self.store.find_redemption(&code_hash).await? else {
            count_redemption(outcome::UNKNOWN_CODE);
            self.refused(context, input.app_id, Refusal::UnknownOrExpired, None);
            self.limits.failed(caller).await;
            return Err(RegistrationError::NotFound(
                "auth code is unknown or expired".into(),
            ));
        };
        // A device-bound code tells nothing more, not even that it was
        // used, to a caller without its verifier: the same rule as for a
        // live code, checked first.
        self.prove_possession(past.code_challenge.as_ref(), input, caller, context)
            .await?;
        let same_device = past.app_id == input.app_id && past.device_id == input.device.device_id;
        if !same_device {
            self.limits.failed(caller).await;
            let replay = audit::refusal(
                context,
                &Actor::Device,
                "replay",
                Payload::ReplayRefused(pb::ReplayRefused {}),
            );
            self.store
                .record_replay(&code_hash, input.app_id, &input.device.device_id, &replay)
                .await?;
            tracing::warn!(app_id = %input.app_id, "used auth code presented by another device; recorded as a replay");
            count_redemption(outcome::REPLAY);
            return Err(RegistrationError::NotFound(
                "auth code has already been used".into(),
            ));
        }
        let Some(redeemed) = self.store.redemption_result(&past).await? else {
            count_redemption(outcome::RETRY_TOO_LATE);
            return Err(RegistrationError::NotFound(
                "auth code has already been used".into(),
            ));
        };
        count_redemption(outcome::RETRY);
        let token = InstallToken::derive(&input.auth_code, &past.token_nonce);
        Ok(response(redeemed, &token))
    }

    /// Whether the request proves possession of a device-bound code: the
    /// one place where a verifier mismatch is decided (through
    /// [`check_possession`]) and answered, for a live code and for a
    /// retry alike. A mismatch is a failed credential of the caller's
    /// address, is logged without the verifier, and writes nothing: the
    /// code stays redeemable by the device that holds the verifier. It is
    /// audited as a refused redemption (`verifier_mismatch`).
    async fn prove_possession(
        &self,
        code_challenge: Option<&CodeChallenge>,
        input: &CreateUserInput,
        caller: Caller,
        context: &CallContext,
    ) -> Result<(), RegistrationError> {
        let Err(mismatch) = check_possession(code_challenge, input.code_verifier.as_ref()) else {
            return Ok(());
        };
        self.limits.failed(caller).await;
        count_redemption(outcome::VERIFIER_MISMATCH);
        self.refused(context, input.app_id, Refusal::VerifierMismatch, None);
        tracing::warn!(
            app_id = %input.app_id,
            verifier = mismatch.as_str(),
            "auth code refused: the code_verifier does not prove possession; the code stays redeemable"
        );
        Err(RegistrationError::PermissionDenied(mismatch.message()))
    }

    /// The status of the install holding the request's token.
    async fn authenticated_status<T>(
        &self,
        request: &Request<T>,
    ) -> Result<InstallStatus, RegistrationError> {
        let caller = self.caller(request);
        let token = parse::install_token(request.metadata())?;
        let token_hash = token.hash();
        self.limits.install(caller, &token_hash).await?;
        let ticket = match self.statuses.get(token_hash.as_bytes()) {
            Ok(status) => return Ok(status),
            Err(ticket) => ticket,
        };
        self.limits.admit(caller).await?;
        let Some(status) = self.store.status_by_token(&token_hash).await? else {
            self.limits.failed(caller).await;
            return Err(RegistrationError::Unauthenticated(
                "install token is unknown or its install was reset",
            ));
        };
        if let Some(ticket) = ticket {
            self.statuses
                .insert(ticket, *token_hash.as_bytes(), &status);
        }
        Ok(status)
    }

    /// Ends the install holding the request's token.
    async fn reset<T>(&self, request: &Request<T>) -> Result<(), RegistrationError> {
        let caller = self.caller(request);
        let token = parse::install_token(request.metadata())?;
        let token_hash = token.hash();
        self.limits.install(caller, &token_hash).await?;
        self.limits.admit(caller).await?;
        let context = CallContext::new(caller.address(), request.metadata());
        let Some(install_id) = self.store.reset_by_token(&token_hash, &context).await? else {
            self.limits.failed(caller).await;
            return Err(RegistrationError::Unauthenticated(
                "install token is unknown or its install was reset",
            ));
        };
        self.statuses.evict(install_id.0);
        tracing::info!(%install_id, "install reset");
        metrics::counter!(DEACTIVATIONS, "reason" => StateReason::Reset.as_db()).increment(1);
        Ok(())
    }

    /// Who `request` comes from, for the limits per client address.
    fn caller<T>(&self, request: &Request<T>) -> Caller {
        self.limits
            .caller(request.remote_addr(), request.metadata())
    }
}

/// The device holds a live install of another user.
fn device_held() -> RegistrationError {
    RegistrationError::FailedPrecondition(
        "this device holds an install of another user; reset that install (ResetInstall) before linking a new user"
            .into(),
    )
}

/// Counts a redemption and the activation changes it made.
fn record_redemption(redeemed: &Redeemed) {
    metrics::counter!(AUTH_CODES_REDEEMED).increment(1);
    count_redemption(if redeemed.restored {
        outcome::RESTORED
    } else {
        outcome::CREATED
    });
    if redeemed.status.state == InstallState::Active {
        metrics::counter!(ACTIVATIONS).increment(1);
    } else if let Some(reason) = redeemed.status.reason {
        metrics::counter!(DEACTIVATIONS, "reason" => reason.as_db()).increment(1);
    }
    if redeemed.superseded.is_some() {
        metrics::counter!(DEACTIVATIONS, "reason" => StateReason::Superseded.as_db()).increment(1);
    }
}

fn response(redeemed: Redeemed, token: &InstallToken) -> pb::CreateUserResponse {
    pb::CreateUserResponse {
        user_id: redeemed.user_id.0.to_string(),
        install_id: redeemed.install_id.to_string(),
        install_token: token.expose().to_owned(),
        restored: redeemed.restored,
        status: Some(install_status(&redeemed.status)),
        sdk_config: Some(json_to_struct(&redeemed.sdk_config)),
    }
}

type StatusStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchInstallStatusResponse, Status>> + Send>>;

#[tonic::async_trait]
impl RegistrationService for RegistrationHandler {
    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        let caller = self.caller(&request);
        let input = parse::create_user(request.get_ref())?;
        let context = CallContext::new(caller.address(), request.metadata())
            .with_sdk_version(&input.app.sdk_version);
        Ok(Response::new(
            RegistrationHandler::create_user(self, input, caller, &context).await?,
        ))
    }

    async fn get_install_status(
        &self,
        request: Request<pb::GetInstallStatusRequest>,
    ) -> Result<Response<pb::GetInstallStatusResponse>, Status> {
        let status = self.authenticated_status(&request).await?;
        Ok(Response::new(pb::GetInstallStatusResponse {
            status: Some(install_status(&status)),
        }))
    }

    type WatchInstallStatusStream = StatusStream;

    async fn watch_install_status(
        &self,
        request: Request<pb::WatchInstallStatusRequest>,
    ) -> Result<Response<Self::WatchInstallStatusStream>, Status> {
        let status = self.authenticated_status(&request).await?;
        let slot = self.watch_slots.claim(status.install_id)?;
        // The install is known only now: the watcher reads its status once
        // more before it waits, so a change since the read is not missed.
        let subscription = self.notifier.subscribe(status.install_id.0);
        let (sender, receiver) = mpsc::channel(8);
        let watcher = Watcher::new(
            self.store.clone(),
            status.install_id,
            sender,
            self.drain.clone(),
            slot,
        );
        tokio::spawn(watcher.run(status, subscription));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn reset_install(
        &self,
        request: Request<pb::ResetInstallRequest>,
    ) -> Result<Response<pb::ResetInstallResponse>, Status> {
        self.reset(&request).await?;
        Ok(Response::new(pb::ResetInstallResponse {}))
    }
}
