//! Activation arbitration: which install of a user is active after a device
//! redeems a code.
//!
//! A pure function, so every case is tested here without a database. The
//! database enforces the invariant underneath (`installs_one_active_per_user`,
//! a partial unique index), and the redemption transaction locks the user's
//! row, so concurrent redemptions of one user arbitrate one after another.

use crate::domain::{FormFactor, InstallId};

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
