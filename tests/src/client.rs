//! Client-side helpers: channels, credentials, typical requests.

use std::net::SocketAddr;

use devicelink_shared::pb;
use devicelink_shared::pb::admin_service_client::AdminServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

/// A channel to a service on this machine.
pub async fn connect(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("a valid URI")
        .connect()
        .await
        .expect("connect to the service")
}

/// `Bearer <token>`, as an `authorization` value.
pub fn bearer(token: &str) -> MetadataValue<Ascii> {
    format!("Bearer {token}").parse().expect("an ASCII token")
}

/// `message` with `authorization: Bearer <token>`.
pub fn authorized<T>(message: T, token: &str) -> tonic::Request<T> {
    with_bearer(message, &bearer(token))
}

/// `message` with `authorization` set to `bearer` (`Bearer <token>`,
/// parsed once by the caller).
pub fn with_bearer<T>(message: T, bearer: &MetadataValue<Ascii>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", bearer.clone());
    request
}

/// Creates an app named `name` and an API key for it over AdminService;
/// returns the app's id and the key. Tests and the benchmark start this way.
pub async fn create_app_with_key(
    admin: &mut AdminServiceClient<Channel>,
    admin_bearer: &MetadataValue<Ascii>,
    name: &str,
) -> Result<(String, String), tonic::Status> {
    let app_id = admin
        .create_app(with_bearer(
            pb::CreateAppRequest { name: name.into() },
            admin_bearer,
        ))
        .await?
        .into_inner()
        .app_id;
    let key = admin
        .create_api_key(with_bearer(
            pb::CreateApiKeyRequest {
                app_id: app_id.clone(),
                ..Default::default()
            },
            admin_bearer,
        ))
        .await?
        .into_inner();
    Ok((app_id, key.api_key))
}

/// A device's description.
pub fn device(device_id: &str, form_factor: pb::FormFactor) -> pb::DeviceInfo {
    pb::DeviceInfo {
        device_id: device_id.into(),
        platform: pb::Platform::Android as i32,
        form_factor: form_factor as i32,
        model: "Pixel 8".into(),
        os_version: "15".into(),
    }
}

/// A phone.
pub fn phone(device_id: &str) -> pb::DeviceInfo {
    device(device_id, pb::FormFactor::Phone)
}

/// A tablet.
pub fn tablet(device_id: &str) -> pb::DeviceInfo {
    device(device_id, pb::FormFactor::Tablet)
}

/// A `CreateUser` request redeeming `code` for `app_id` on `device`.
pub fn create_user_request(
    code: &str,
    app_id: &str,
    device: pb::DeviceInfo,
) -> pb::CreateUserRequest {
    pb::CreateUserRequest {
        auth_code: code.into(),
        app_id: app_id.into(),
        app: Some(pb::AppInfo {
            app_version: "1.4.0".into(),
            sdk_version: "2.0.1".into(),
            bundle_id: "com.example.app".into(),
        }),
        device: Some(device),
        ..Default::default()
    }
}

/// The state and reason of a status, for compact assertions.
pub fn state_of(status: &Option<pb::InstallStatus>) -> (pb::InstallState, pb::InstallStateReason) {
    let status = status.as_ref().expect("a status");
    (
        pb::InstallState::try_from(status.state).expect("a known state"),
        pb::InstallStateReason::try_from(status.reason).expect("a known reason"),
    )
}

/// `(ACTIVE, UNSPECIFIED)`.
pub const ACTIVE: (pb::InstallState, pb::InstallStateReason) = (
    pb::InstallState::Active,
    pb::InstallStateReason::Unspecified,
);
/// `(INACTIVE, SUPERSEDED)`.
pub const SUPERSEDED: (pb::InstallState, pb::InstallStateReason) = (
    pb::InstallState::Inactive,
    pb::InstallStateReason::Superseded,
);
/// `(INACTIVE, PHONE_PREFERRED)`.
pub const PHONE_PREFERRED: (pb::InstallState, pb::InstallStateReason) = (
    pb::InstallState::Inactive,
    pb::InstallStateReason::PhonePreferred,
);

/// The next status on a watch stream, within five seconds; `None` when the
/// stream ended.
pub async fn next_status(
    stream: &mut tonic::Streaming<pb::WatchInstallStatusResponse>,
) -> Option<pb::InstallStatus> {
    let message = tokio::time::timeout(std::time::Duration::from_secs(5), stream.message())
        .await
        .expect("the watch stream answers within five seconds")
        .expect("the watch stream stays healthy")?;
    Some(message.status.expect("a status"))
}

/// The status an install token reads.
pub async fn status_of_token(
    client: &mut pb::registration_service_client::RegistrationServiceClient<Channel>,
    install_token: &str,
) -> Result<pb::InstallStatus, tonic::Status> {
    let response = client
        .get_install_status(authorized(pb::GetInstallStatusRequest {}, install_token))
        .await?;
    Ok(response.into_inner().status.expect("a status"))
}

/// The state and reason of a status that is surely there.
pub fn state(status: &pb::InstallStatus) -> (pb::InstallState, pb::InstallStateReason) {
    state_of(&Some(status.clone()))
}
