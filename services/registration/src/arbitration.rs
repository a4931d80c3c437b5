//! Activation arbitration: which install of a user is active after a device
//! redeems a code.
//!
//! A pure function, so every case is tested here without a database. The
//! database enforces the invariant underneath (`installs_one_active_per_user`,
//! a partial unique index), and the redemption transaction locks the user's
//! row, so concurrent redemptions of one user arbitrate one after another.
//!
//! [`arbitrate`] decides between two devices; [`resolve`] wraps it for a
//! redemption: it reads the installs the redemption locked, refuses a device
//! that holds another user, and says what to write.

use crate::domain::{DeviceInfo, FormFactor, InstallId, InstallState, StateReason, UserId};

/// The user's install that is active when a device redeems a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveInstall {
    /// The active install.
    pub install_id: InstallId,
    /// Its device's form factor.
    pub form_factor: FormFactor,
}

/// What happens to the arriving device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The arriving install becomes active in a new epoch; `supersede` is
    /// the install of another device that was active and is deactivated.
    Activate {
        /// The previously active install of another device, if any.
        supersede: Option<InstallId>,
    },
    /// A phone of the user is active and the arriving device is a tablet:
    /// the phone stays active, the tablet install is inactive (phone
    /// preferred), and the epoch does not move.
    KeepPhone,
}

/// Decides between the user's active install (if any) and the arriving
/// device. `arriving_install` is the device's existing install of this user,
/// when the same device redeems again.
///
/// A phone is kept over an arriving tablet; every other pairing lets the
/// newcomer take over (phone over tablet, phone over phone, tablet over
/// tablet). A device that is already the active one stays active.
pub fn arbitrate(
    active: Option<ActiveInstall>,
    arriving_install: Option<InstallId>,
    arriving_form_factor: FormFactor,
) -> Decision {
    let Some(active) = active else {
        return Decision::Activate { supersede: None };
    };
    if Some(active.install_id) == arriving_install {
        return Decision::Activate { supersede: None };
    }
    match (active.form_factor, arriving_form_factor) {
        (FormFactor::Phone, FormFactor::Tablet) => Decision::KeepPhone,
        _ => Decision::Activate {
            supersede: Some(active.install_id),
        },
    }
}

/// An install a redemption locked: the user's active install, or the
/// arriving device's live install (of this user or another).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallInPlay {
    /// The install.
    pub id: InstallId,
    /// Its user.
    pub user_id: UserId,
    /// Its device.
    pub device_id: String,
    /// Its device's form factor.
    pub form_factor: FormFactor,
    /// Whether it is the user's active install.
    pub active: bool,
    /// The epoch it was last activated in, as stored.
    pub epoch: i64,
}

/// What a redemption writes, once arbitrated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The arriving device's install state.
    pub state: InstallState,
    /// Why it is not active.
    pub reason: Option<StateReason>,
    /// The epoch the arriving install was last activated in.
    pub install_epoch: i64,
    /// The user's epoch afterwards.
    pub user_epoch: i64,
    /// The install of another device deactivated, if any.
    pub superseded: Option<InstallId>,
    /// The device's existing install of this user, re-bound instead of a
    /// new one inserted.
    pub existing: Option<InstallId>,
}

impl Resolution {
    /// A new user's first install: nothing to keep, so it is active in the
    /// user's first epoch.
    pub fn first_install() -> Self {
        Self::activate(0, None, None)
    }

    fn activate(
        user_epoch: i64,
        superseded: Option<InstallId>,
        existing: Option<InstallId>,
    ) -> Self {
        Self {
            state: InstallState::Active,
            reason: None,
            install_epoch: user_epoch + 1,
            user_epoch: user_epoch + 1,
            superseded,
            existing,
        }
    }
}

/// The arriving device holds a live install of another user: it must be
/// reset before it links a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceHeldByAnotherUser;

/// Arbitrates a redemption by `user_id` (whose epoch is `user_epoch`) on
/// `device`, over the installs it locked.
pub fn resolve(
    installs: &[InstallInPlay],
    user_id: UserId,
    user_epoch: i64,
    device: &DeviceInfo,
) -> Result<Resolution, DeviceHeldByAnotherUser> {
    let own = installs
        .iter()
        .find(|install| install.device_id == device.device_id);
    if own.is_some_and(|install| install.user_id != user_id) {
        return Err(DeviceHeldByAnotherUser);
    }
    let active = installs
        .iter()
        .find(|install| install.active && install.user_id == user_id);
    let existing = own.map(|install| install.id);
    let decision = arbitrate(
        active.map(|install| ActiveInstall {
            install_id: install.id,
            form_factor: install.form_factor,
        }),
        existing,
        device.form_factor,
    );
    Ok(match decision {
        Decision::Activate { supersede } => Resolution::activate(user_epoch, supersede, existing),
        Decision::KeepPhone => Resolution {
            state: InstallState::Inactive,
            reason: Some(StateReason::PhonePreferred),
            install_epoch: own.map_or(0, |install| install.epoch),
            user_epoch,
            superseded: None,
            existing,
        },
    })
}

#[cfg(test)]
mod resolve_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use FormFactor::{Phone, Tablet};
    use uuid::Uuid;

    fn install(n: u128) -> InstallId {
        InstallId(Uuid::from_u128(n))
    }

    fn active(n: u128, form_factor: FormFactor) -> Option<ActiveInstall> {
        Some(ActiveInstall {
            install_id: install(n),
            form_factor,
        })
    }

    const OTHER: u128 = 1;
    const OWN: u128 = 2;

    /// Every combination of: no active install / another device's phone or
    /// tablet / this device's own install active; the arriving device new or
    /// known; phone or tablet.
    #[test]
    fn every_case() {
        let cases = [
            // (active, arriving install, arriving form factor, decision)
            (None, None, Phone, Decision::Activate { supersede: None }),
            (None, None, Tablet, Decision::Activate { supersede: None }),
            (
                None,
                Some(OWN),
                Phone,
                Decision::Activate { supersede: None },
            ),
            (
                None,
                Some(OWN),
                Tablet,
                Decision::Activate { supersede: None },
            ),
            (
                active(OTHER, Phone),
                None,
                Phone,
                Decision::Activate {
                    supersede: Some(install(OTHER)),
                },
            ),
            (active(OTHER, Phone), None, Tablet, Decision::KeepPhone),
            (
                active(OTHER, Tablet),
                None,
                Phone,
                Decision::Activate {
                    supersede: Some(install(OTHER)),
                },
            ),
            (
                active(OTHER, Tablet),
                None,
                Tablet,
                Decision::Activate {
                    supersede: Some(install(OTHER)),
                },
            ),
            (
                active(OTHER, Phone),
                Some(OWN),
                Phone,
                Decision::Activate {
                    supersede: Some(install(OTHER)),
                },
            ),
            (active(OTHER, Phone), Some(OWN), Tablet, Decision::KeepPhone),
            (
                active(OTHER, Tablet),
                Some(OWN),
                Phone,
                Decision::Activate {
                    supersede: Some(install(OTHER)),
                },
            ),
            (
                active(OTHER, Tablet),
                Some(OWN),
                Tablet,
                Decision::Activate {
                    supersede: Some(install(OTHER)),
                },
            ),
            (
                active(OWN, Phone),
                Some(OWN),
                Phone,
                Decision::Activate { supersede: None },
            ),
            (
                active(OWN, Phone),
                Some(OWN),
                Tablet,
                Decision::Activate { supersede: None },
            ),
            (
                active(OWN, Tablet),
                Some(OWN),
                Phone,
                Decision::Activate { supersede: None },
            ),
            (
                active(OWN, Tablet),
                Some(OWN),
                Tablet,
                Decision::Activate { supersede: None },
            ),
        ];
        for (active, arriving, form_factor, expected) in cases {
            assert_eq!(
                arbitrate(active, arriving.map(install), form_factor),
                expected,
                "active {active:?}, arriving {arriving:?} {form_factor:?}"
            );
        }
    }

    /// Whatever the case, at most one install ends up active: the decision
    /// never keeps the previous install active while activating another.
    #[test]
    fn never_two_active() {
        for previous in [
            None,
            active(OTHER, Phone),
            active(OTHER, Tablet),
            active(OWN, Phone),
        ] {
            for form_factor in [Phone, Tablet] {
                let decision = arbitrate(previous, Some(install(OWN)), form_factor);
                if let (Some(previous), Decision::Activate { supersede }) = (previous, decision) {
                    let previous_stays = previous.install_id != install(OWN) && supersede.is_none();
                    assert!(!previous_stays, "{previous:?} {form_factor:?}");
                }
            }
        }
    }
}
