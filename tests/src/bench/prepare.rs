//! Data the timed runs need, made before the clock starts: an app with an
//! API key through the admin API, codes minted through `MintAuthCode`,
//! requests built in advance, and the HTTP/2 channels they go over.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use devicelink_shared::pb;
use devicelink_shared::pb::admin_service_client::AdminServiceClient;
use devicelink_shared::pb::auth_code_service_client::AuthCodeServiceClient;
use futures_util::StreamExt;
use prost_types::value::Kind;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use uuid::Uuid;

use super::procs::channel;
use super::{BenchResult, Context};

/// Load-generator tasks per HTTP/2 connection.
const TASKS_PER_CHANNEL: usize = 16;
/// At least this many connections, so that one connection's ordering is
/// never the whole story.
const MIN_CHANNELS: usize = 2;
/// How many untimed mints run at once while preparing codes.
const MINT_PARALLELISM: usize = 64;

/// The app a run creates and the key it mints with.
#[derive(Debug, Clone)]
pub struct BenchApp {
    /// The app's id.
    pub app_id: Uuid,
    /// `authorization: Bearer <api key>`, parsed once.
    pub api_key_bearer: MetadataValue<Ascii>,
}

/// `Bearer <token>` as a metadata value.
pub fn bearer(token: &str) -> BenchResult<MetadataValue<Ascii>> {
    MetadataValue::try_from(format!("Bearer {token}")).context("a bearer token that is not ASCII")
}

pub use crate::client::with_bearer as authorized;

/// The HTTP/2 connections for `concurrency` tasks: one per
/// [`TASKS_PER_CHANNEL`], at least [`MIN_CHANNELS`].
pub async fn channels(addr: SocketAddr, concurrency: usize) -> BenchResult<Vec<Channel>> {
    let count = concurrency.div_ceil(TASKS_PER_CHANNEL).max(MIN_CHANNELS);
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count {
        channels.push(channel(addr).await?);
    }
    Ok(channels)
}

/// Creates an app with an API key and a small SDK configuration (returned
/// by every `CreateUser`, so it should not be empty), through
/// registration's admin listener at `admin_addr`.
pub async fn create_app(admin_addr: SocketAddr, admin_token: &str) -> BenchResult<BenchApp> {
    let admin_bearer = bearer(admin_token)?;
    let mut admin = AdminServiceClient::new(channel(admin_addr).await?);
    let (app_id, api_key) =
        crate::client::create_app_with_key(&mut admin, &admin_bearer, "devicelink-bench")
            .await
            .context("CreateApp and CreateApiKey")?;
    admin
        .set_sdk_config(authorized(
            pb::SetSdkConfigRequest {
                app_id: app_id.clone(),
                sdk_config: Some(sdk_config()),
            },
            &admin_bearer,
        ))
        .await
        .context("SetSdkConfig")?;
    Ok(BenchApp {
        app_id: app_id
            .parse()
            .context("CreateApp answered an app id that is not a UUID")?,
        api_key_bearer: bearer(&api_key)?,
    })
}

fn sdk_config() -> prost_types::Struct {
    let value = |kind| prost_types::Value { kind: Some(kind) };
    let features = BTreeMap::from([
        ("chat".to_owned(), value(Kind::BoolValue(true))),
        ("beta_banner".to_owned(), value(Kind::BoolValue(false))),
    ]);
    prost_types::Struct {
        fields: BTreeMap::from([
            (
                "poll_interval_s".to_owned(),
                value(Kind::NumberValue(300.0)),
            ),
            (
                "endpoint".to_owned(),
                value(Kind::StringValue("https://api.example.com".into())),
            ),
            (
                "features".to_owned(),
                value(Kind::StructValue(prost_types::Struct { fields: features })),
            ),
        ]),
    }
}

/// Mints one code per external id through `authcode`, untimed; the codes
/// come back in the order of `external_ids`.
pub async fn mint_codes(
    authcode: SocketAddr,
    app: &BenchApp,
    external_ids: &[String],
) -> BenchResult<Vec<String>> {
    let clients: Vec<_> = channels(authcode, MINT_PARALLELISM)
        .await?
        .into_iter()
        .map(AuthCodeServiceClient::new)
        .collect();
    let minted: Vec<BenchResult<String>> =
        futures_util::stream::iter(external_ids.iter().enumerate())
            .map(|(index, external_id)| {
                let mut client = clients[index % clients.len()].clone();
                let request = authorized(
                    pb::MintAuthCodeRequest {
                        external_id: external_id.clone(),
                        app_id: String::new(),
                        ..Default::default()
                    },
                    &app.api_key_bearer,
                );
                async move {
                    let response = client
                        .mint_auth_code(request)
                        .await
                        .context("minting a code for a scenario")?;
                    Ok(response.into_inner().auth_code)
                }
            })
            .buffered(MINT_PARALLELISM)
            .collect()
            .await;
    minted.into_iter().collect()
}

/// The external ids and device ids of one `CreateUser` scenario: `tag`
/// names the scenario's users, `device` their devices.
pub fn identities(tag: &str, device: &str, count: usize) -> (Vec<String>, Vec<String>) {
    (0..count)
        .map(|index| (format!("{tag}-{index}"), format!("{tag}-{device}-{index}")))
        .unzip()
}

/// `CreateUser` requests redeeming `codes` on phones `device_ids`.
pub fn create_user_requests(
    app: &BenchApp,
    codes: Vec<String>,
    device_ids: Vec<String>,
) -> Vec<pb::CreateUserRequest> {
    let app_id = app.app_id.to_string();
    codes
        .into_iter()
        .zip(device_ids)
        .map(|(auth_code, device_id)| pb::CreateUserRequest {
            auth_code,
            app_id: app_id.clone(),
            app: Some(pb::AppInfo {
                app_version: "1.4.0".into(),
                sdk_version: "2.0.1".into(),
                bundle_id: "com.example.app".into(),
            }),
            device: Some(pb::DeviceInfo {
                device_id,
                platform: pb::Platform::Android as i32,
                form_factor: pb::FormFactor::Phone as i32,
                model: "Pixel 8".into(),
                os_version: "15".into(),
            }),
            ..Default::default()
        })
        .collect()
}
