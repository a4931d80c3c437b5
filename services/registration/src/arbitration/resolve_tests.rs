//! [`resolve`]: a redemption's arbitration over the installs it locked.

use uuid::Uuid;

use super::*;
use crate::domain::Platform;

const USER: UserId = UserId(Uuid::from_u128(100));
const OTHER_USER: UserId = UserId(Uuid::from_u128(200));

fn device(device_id: &str, form_factor: FormFactor) -> DeviceInfo {
    DeviceInfo {
        device_id: device_id.to_owned(),
        platform: Platform::Android,
        form_factor,
        model: "model".to_owned(),
        os_version: "15".to_owned(),
    }
}

fn install(
    id: u128,
    user_id: UserId,
    device_id: &str,
    form_factor: FormFactor,
    active: bool,
    epoch: i64,
) -> InstallInPlay {
    InstallInPlay {
        id: InstallId(Uuid::from_u128(id)),
        user_id,
        device_id: device_id.to_owned(),
        form_factor,
        active,
        epoch,
    }
}

#[test]
fn a_device_holding_another_user_is_refused() {
    let held = [install(
        1,
        OTHER_USER,
        "arriving",
        FormFactor::Phone,
        true,
        3,
    )];
    assert_eq!(
        resolve(&held, USER, 4, &device("arriving", FormFactor::Phone)),
        Err(DeviceHeldByAnotherUser)
    );
}

#[test]
fn another_users_install_on_another_device_is_no_obstacle() {
    // INSTALLS_IN_PLAY only returns another user's install for this device,
    // but resolve must not mistake one for the user's own active install.
    let unrelated = [install(
        1,
        OTHER_USER,
        "elsewhere",
        FormFactor::Phone,
        true,
        3,
    )];
    let resolution =
        resolve(&unrelated, USER, 4, &device("arriving", FormFactor::Tablet)).expect("not held");
    assert_eq!(resolution.state, InstallState::Active);
    assert_eq!(resolution.superseded, None);
}

#[test]
fn a_user_without_installs_activates_in_the_next_epoch() {
    let resolution =
        resolve(&[], USER, 4, &device("arriving", FormFactor::Tablet)).expect("not held");
    assert_eq!(
        resolution,
        Resolution {
            state: InstallState::Active,
            reason: None,
            install_epoch: 5,
            user_epoch: 5,
            superseded: None,
            existing: None,
        }
    );
}

#[test]
fn a_new_users_first_install_is_what_resolving_over_nothing_gives() {
    let resolved = resolve(&[], USER, 0, &device("arriving", FormFactor::Phone)).expect("not held");
    assert_eq!(Resolution::first_install(), resolved);
    assert_eq!(
        resolved.user_epoch,
        crate::store::redeem_sql::NEW_USER_EPOCH
    );
}

#[test]
fn a_new_device_supersedes_the_active_one() {
    let in_play = [install(1, USER, "old", FormFactor::Tablet, true, 4)];
    let resolution =
        resolve(&in_play, USER, 4, &device("arriving", FormFactor::Phone)).expect("not held");
    assert_eq!(resolution.state, InstallState::Active);
    assert_eq!((resolution.install_epoch, resolution.user_epoch), (5, 5));
    assert_eq!(resolution.superseded, Some(InstallId(Uuid::from_u128(1))));
    assert_eq!(resolution.existing, None);
}

#[test]
fn a_tablet_arriving_beside_an_active_phone_keeps_its_epoch_and_the_users() {
    let in_play = [
        install(1, USER, "phone", FormFactor::Phone, true, 4),
        install(2, USER, "tablet", FormFactor::Tablet, false, 2),
    ];
    let resolution =
        resolve(&in_play, USER, 4, &device("tablet", FormFactor::Tablet)).expect("not held");
    assert_eq!(
        resolution,
        Resolution {
            state: InstallState::Inactive,
            reason: Some(StateReason::PhonePreferred),
            install_epoch: 2,
            user_epoch: 4,
            superseded: None,
            existing: Some(InstallId(Uuid::from_u128(2))),
        }
    );
}

#[test]
fn a_new_tablet_beside_an_active_phone_has_no_epoch_yet() {
    let in_play = [install(1, USER, "phone", FormFactor::Phone, true, 4)];
    let resolution =
        resolve(&in_play, USER, 4, &device("tablet", FormFactor::Tablet)).expect("not held");
    assert_eq!(resolution.state, InstallState::Inactive);
    assert_eq!((resolution.install_epoch, resolution.user_epoch), (0, 4));
    assert_eq!(resolution.existing, None);
}

#[test]
fn the_active_device_redeeming_again_is_rebound_in_a_new_epoch() {
    let in_play = [install(1, USER, "phone", FormFactor::Phone, true, 4)];
    let resolution =
        resolve(&in_play, USER, 4, &device("phone", FormFactor::Phone)).expect("not held");
    assert_eq!(resolution.state, InstallState::Active);
    assert_eq!((resolution.install_epoch, resolution.user_epoch), (5, 5));
    assert_eq!(resolution.superseded, None, "it does not supersede itself");
    assert_eq!(resolution.existing, Some(InstallId(Uuid::from_u128(1))));
}
