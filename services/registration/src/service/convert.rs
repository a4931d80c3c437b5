//! Domain values as protobuf messages.

use std::time::SystemTime;

use devicelink_shared::pb;

use crate::domain::{FormFactor, InstallState, InstallStatus, Platform, StateReason};

/// A timestamp as protobuf sends it.
pub fn timestamp(time: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(time)
}

/// An install status as devices see it.
pub fn install_status(status: &InstallStatus) -> pb::InstallStatus {
    pb::InstallStatus {
        install_id: status.install_id.to_string(),
        state: install_state(status.state) as i32,
        reason: status
            .reason
            .map_or(pb::InstallStateReason::Unspecified, state_reason) as i32,
        epoch: status.epoch,
        current_epoch: status.current_epoch,
        changed_at: Some(timestamp(status.changed_at)),
    }
}

fn install_state(state: InstallState) -> pb::InstallState {
    match state {
        InstallState::Active => pb::InstallState::Active,
        InstallState::Inactive => pb::InstallState::Inactive,
        InstallState::Reset => pb::InstallState::Reset,
    }
}

fn state_reason(reason: StateReason) -> pb::InstallStateReason {
    match reason {
        StateReason::Superseded => pb::InstallStateReason::Superseded,
        StateReason::PhonePreferred => pb::InstallStateReason::PhonePreferred,
        StateReason::Reset => pb::InstallStateReason::Reset,
        StateReason::Erased => pb::InstallStateReason::Erased,
    }
}

/// A platform as protobuf sends it.
pub fn platform(platform: Option<Platform>) -> pb::Platform {
    match platform {
        Some(Platform::Ios) => pb::Platform::Ios,
        Some(Platform::Android) => pb::Platform::Android,
        None => pb::Platform::Unspecified,
    }
}

/// A form factor as protobuf sends it.
pub fn form_factor(form_factor: Option<FormFactor>) -> pb::FormFactor {
    match form_factor {
        Some(FormFactor::Phone) => pb::FormFactor::Phone,
        Some(FormFactor::Tablet) => pb::FormFactor::Tablet,
        None => pb::FormFactor::Unspecified,
    }
}
