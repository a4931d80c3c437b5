//! Audit events as registration records them: the common builders of
//! [`devicelink_shared::audit`], and the deactivation of an install in
//! domain terms.

pub use devicelink_shared::audit::{
    Actor, AuditRow, AuditRows, CallContext, ChangePack, change, code_id, refusal, type_from_name,
    type_name,
};
use devicelink_shared::pb;

use crate::domain::{InstallId, StateReason};

/// An install that stopped being active, for `reason`, replaced by
/// `superseded_by` when superseded.
pub fn deactivation(
    context: &CallContext,
    actor: &Actor,
    reason: StateReason,
    superseded_by: Option<InstallId>,
) -> AuditRow {
    let reason = match reason {
        StateReason::Superseded => pb::DeactivationReason::Superseded,
        StateReason::PhonePreferred => pb::DeactivationReason::PhonePreferred,
        StateReason::Reset => pb::DeactivationReason::Reset,
        StateReason::Erased => pb::DeactivationReason::Erased,
    };
    devicelink_shared::audit::deactivation(
        context,
        actor,
        reason,
        superseded_by.map(|install| install.to_string()),
    )
}

/// A device acting as `install`.
pub fn install_actor(install: InstallId) -> Actor {
    Actor::Install(install.to_string())
}
