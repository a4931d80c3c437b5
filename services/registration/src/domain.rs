//! The registration domain: validated requests and the states an install can
//! be in. Handlers parse protobuf messages into these types once; nothing
//! below the handlers sees an unchecked string.

use std::time::SystemTime;

use devicelink_shared::auth_code::AuthCode;
use devicelink_shared::code_challenge::CodeVerifier;
use devicelink_shared::validate::AppId;
use uuid::Uuid;

/// The most active (neither revoked nor expired) API keys an app may hold:
/// enough to rotate keys across several backends, few enough that a leaked
/// admin token cannot mint keys without bound.
pub const MAX_ACTIVE_KEYS_PER_APP: i64 = 10;

/// A device's shape; arbitration keeps a phone over an arriving tablet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormFactor {
    /// A phone.
    Phone,
    /// A tablet.
    Tablet,
}

/// A device's operating system family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// iOS or iPadOS.
    Ios,
    /// Android.
    Android,
}

/// Where an install stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallState {
    /// The user's one active install.
    Active,
    /// Bound to its user but not active.
    Inactive,
    /// Ended; its token no longer works.
    Reset,
}

/// Why an install is not active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateReason {
    /// Another device of the user was activated after this one.
    Superseded,
    /// This tablet arrived while a phone of the user was active.
    PhonePreferred,
    /// The device reset the install.
    Reset,
    /// The user was erased.
    Erased,
}

/// Maps an enum to the text stored in Postgres and back. The `CHECK`
/// constraints of the schema list the same texts.
macro_rules! stored_as_text {
    ($type:ty { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $type {
            /// The value's text in Postgres.
            pub fn as_db(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            /// Reads a value stored by [`Self::as_db`].
            pub fn from_db(text: &str) -> Option<Self> {
                match text { $($text => Some(Self::$variant),)+ _ => None }
            }
        }
    };
}

stored_as_text!(FormFactor { Phone => "phone", Tablet => "tablet" });
stored_as_text!(Platform { Ios => "ios", Android => "android" });
stored_as_text!(InstallState { Active => "active", Inactive => "inactive", Reset => "reset" });
stored_as_text!(StateReason {
    Superseded => "superseded",
    PhonePreferred => "phone_preferred",
    Reset => "reset",
    Erased => "erased",
});

/// A user's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserId(pub Uuid);

/// An install's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InstallId(pub Uuid);

impl std::fmt::Display for InstallId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The status of one install: what a device reads, watches and is told
/// after a redemption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallStatus {
    /// The install.
    pub install_id: InstallId,
    /// Active, inactive or reset.
    pub state: InstallState,
    /// Why it is not active.
    pub reason: Option<StateReason>,
    /// The epoch it was last activated in.
    pub epoch: u64,
    /// The user's current epoch.
    pub current_epoch: u64,
    /// When state or reason last changed.
    pub changed_at: SystemTime,
}

impl InstallStatus {
    /// What a device whose install was erased (at `erased_at`) is told: its
    /// install is gone with the user, so there is nothing left to read but
    /// the fact. Epochs are zero: the user they counted no longer exists.
    pub fn erased(install_id: InstallId, erased_at: SystemTime) -> Self {
        Self {
            install_id,
            state: InstallState::Reset,
            reason: Some(StateReason::Erased),
            epoch: 0,
            current_epoch: 0,
            changed_at: erased_at,
        }
    }
}

/// The app on the device, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppInfo {
    /// The app's version.
    pub app_version: String,
    /// The SDK's version.
    pub sdk_version: String,
    /// The bundle or package id.
    pub bundle_id: String,
}

/// The device, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The device's identifier within the app.
    pub device_id: String,
    /// iOS or Android.
    pub platform: Platform,
    /// Phone or tablet.
    pub form_factor: FormFactor,
    /// The model.
    pub model: String,
    /// The OS version.
    pub os_version: String,
}

/// A `CreateUser` request that passed validation.
#[derive(Debug, Clone)]
pub struct CreateUserInput {
    /// The code to redeem.
    pub auth_code: AuthCode,
    /// The app the caller says the code belongs to.
    pub app_id: AppId,
    /// The app on the device.
    pub app: AppInfo,
    /// The device.
    pub device: DeviceInfo,
    /// The device's proof of possession of a device-bound code, if sent.
    pub code_verifier: Option<CodeVerifier>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_texts_round_trip() {
        for reason in [
            StateReason::Superseded,
            StateReason::PhonePreferred,
            StateReason::Reset,
            StateReason::Erased,
        ] {
            assert_eq!(StateReason::from_db(reason.as_db()), Some(reason));
        }
        assert_eq!(FormFactor::from_db("watch"), None);
    }

    #[test]
    fn an_erased_install_reads_as_reset_because_erased() {
        let install_id = InstallId(Uuid::from_u128(5));
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(7);
        let status = InstallStatus::erased(install_id, at);
        assert_eq!(status.install_id, install_id);
        assert_eq!(status.state, InstallState::Reset);
        assert_eq!(status.reason, Some(StateReason::Erased));
        assert_eq!((status.epoch, status.current_epoch), (0, 0));
        assert_eq!(status.changed_at, at);
    }
}
