//! gRPC citizenship: health that follows the stores and the drain, server
//! reflection (v1 and v1alpha), and graceful shutdown.

use std::time::Duration;

use devicelink_e2e::pg_activity::await_one_lock_waiter;
use devicelink_e2e::*;
use devicelink_registration::store::redeem_sql;
use devicelink_shared::pb;
use futures_util::StreamExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn health_of(channel: tonic::transport::Channel, service: &str) -> ServingStatus {
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health check")
        .into_inner();
    ServingStatus::try_from(response.status).expect("a known status")
}

/// Polls until `service` reports `wanted`, for at most ten seconds.
async fn await_health(channel: &tonic::transport::Channel, service: &str, wanted: ServingStatus) {
    for _ in 0..100 {
        if health_of(channel.clone(), service).await == wanted {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{service:?} never reported {wanted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_stores() {
    let env = TestEnv::start_with(TestOptions {
        through_proxies: true,
        ..Default::default()
    })
    .await;
    let registration = connect(env.registration_addrs[0]).await;
    let authcode = connect(env.authcode_addr).await;
    for (channel, service) in [
        (&registration, ""),
        (&registration, "devicelink.v1.RegistrationService"),
        (&registration, "devicelink.v1.AdminService"),
        (&authcode, ""),
        (&authcode, "devicelink.v1.AuthCodeService"),
    ] {
        await_health(channel, service, ServingStatus::Serving).await;
    }

    env.redis_proxy.as_ref().expect("proxy").cut();
    await_health(&registration, "", ServingStatus::NotServing).await;
    await_health(
        &authcode,
        "devicelink.v1.AuthCodeService",
        ServingStatus::NotServing,
    )
    .await;
    // A store outage makes replicas unready, never restarts them.
    for channel in [&registration, &authcode] {
        assert_eq!(
            health_of(channel.clone(), "liveness").await,
            ServingStatus::Serving
        );
    }
    env.redis_proxy.as_ref().expect("proxy").restore();
    await_health(&authcode, "", ServingStatus::Serving).await;

    env.postgres_proxy.as_ref().expect("proxy").cut();
    await_health(
        &registration,
        "devicelink.v1.RegistrationService",
        ServingStatus::NotServing,
    )
    .await;
    env.postgres_proxy.as_ref().expect("proxy").restore();
    await_health(
        &registration,
        "devicelink.v1.RegistrationService",
        ServingStatus::Serving,
    )
    .await;
}

/// Whether reflection v1 on `channel` answers `symbol` with its file.
async fn describes(channel: &tonic::transport::Channel, symbol: &str) -> bool {
    use tonic_reflection::pb::v1;
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1::server_reflection_request::MessageRequest::FileContainingSymbol(symbol.into()),
        ),
    };
    let mut responses = v1::server_reflection_client::ServerReflectionClient::new(channel.clone())
        .server_reflection_info(futures_util::stream::iter([request]))
        .await
        .expect("reflection v1")
        .into_inner();
    // An unknown symbol is answered with an error, as a message or as the
    // stream's status.
    match responses.next().await {
        Some(Ok(response)) => matches!(
            response.message_response,
            Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
        ),
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_services_in_both_versions() {
    use tonic_reflection::pb::{v1, v1alpha};
    let env = TestEnv::start().await;
    for (addr, expected, unserved) in [
        (
            env.authcode_addr,
            "devicelink.v1.AuthCodeService",
            "devicelink.v1.RegistrationService",
        ),
        (
            env.registration_addrs[0],
            "devicelink.v1.RegistrationService",
            "devicelink.v1.AdminService",
        ),
        (
            env.registration_admin_addrs[0],
            "devicelink.v1.AdminService",
            "devicelink.v1.RegistrationService",
        ),
    ] {
        let channel = connect(addr).await;
        let request = v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        };
        let mut responses =
            v1::server_reflection_client::ServerReflectionClient::new(channel.clone())
                .server_reflection_info(futures_util::stream::iter([request]))
                .await
                .expect("reflection v1")
                .into_inner();
        let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(listed)) =
            responses
                .next()
                .await
                .expect("a response")
                .expect("ok")
                .message_response
        else {
            panic!("not a service list");
        };
        let names: Vec<_> = listed
            .service
            .into_iter()
            .map(|service| service.name)
            .collect();
        assert!(names.contains(&expected.to_owned()), "{names:?}");
        assert!(
            names.contains(&"grpc.health.v1.Health".to_owned()),
            "{names:?}"
        );
        assert!(
            !names.contains(&unserved.to_owned()),
            "{addr} lists {unserved}, which it does not serve: {names:?}"
        );
        assert!(
            !describes(&channel, unserved).await,
            "{addr} describes {unserved}, which it does not serve"
        );

        let request = v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                    expected.into(),
                ),
            ),
        };
        let mut responses = v1alpha::server_reflection_client::ServerReflectionClient::new(channel)
            .server_reflection_info(futures_util::stream::iter([request]))
            .await
            .expect("reflection v1alpha")
            .into_inner();
        let response = responses.next().await.expect("a response").expect("ok");
        assert!(
            matches!(
                response.message_response,
                Some(
                    v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(_)
                )
            ),
            "{expected} is described"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_flight_at_shutdown_completes_and_health_turns_not_serving() {
    let mut env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let mut registration = env.registration().await;
    let first = registration
        .create_user(create_user_request(
            &env.mint(&api_key, "u").await,
            &app_id,
            phone("a"),
        ))
        .await
        .expect("first")
        .into_inner();
    let mut watch = registration
        .watch_install_status(authorized(
            pb::WatchInstallStatusRequest {},
            &first.install_token,
        ))
        .await
        .expect("watch")
        .into_inner();
    watch.next().await.expect("first status").expect("ok");

    // Hold the user's row so that the next redemption stays in flight, and
    // see it wait there before shutting down.
    let watcher = env.database().await;
    let mut db = env.database().await;
    let lock = db.transaction().await.expect("a transaction");
    lock.execute(
        "SELECT 1 FROM users WHERE external_id = 'u' FOR UPDATE",
        &[],
    )
    .await
    .expect("lock the user");
    let code = env.mint(&api_key, "u").await;
    let mut in_flight_client = registration.clone();
    let in_flight = tokio::spawn(async move {
        in_flight_client
            .create_user(create_user_request(&code, &app_id, phone("b")))
            .await
    });
    let waiter = await_one_lock_waiter(&watcher).await;
    assert!(
        waiter.runs(redeem_sql::UPSERT_USER),
        "the redemption waits on the user's row: {waiter:?}"
    );

    let mut health = HealthClient::new(connect(env.registration_addrs[0]).await)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health watch")
        .into_inner();
    let status = |message: Option<Result<tonic_health::pb::HealthCheckResponse, tonic::Status>>| {
        ServingStatus::try_from(message.expect("a health update").expect("ok").status)
            .expect("known")
    };
    assert_eq!(status(health.next().await), ServingStatus::Serving);
    let serving = env.shut_down_registration(0);
    let update = tokio::time::timeout(Duration::from_secs(5), health.next())
        .await
        .expect("prompt");
    assert_eq!(status(update), ServingStatus::NotServing);
    drop(health);
    assert!(
        tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("the watch stream ends at once")
            .is_none(),
        "the watch stream closes cleanly"
    );
    assert!(
        !serving.is_finished(),
        "still draining while a call is in flight"
    );

    lock.rollback().await.expect("release the user");
    let created = in_flight
        .await
        .expect("the task ran")
        .expect("the call in flight completes");
    assert_eq!(state_of(&created.into_inner().status), ACTIVE);
    tokio::time::timeout(Duration::from_secs(5), serving)
        .await
        .expect("the server stops after draining")
        .expect("the task ran")
        .expect("a clean stop");

    let refused =
        tonic::transport::Channel::from_shared(format!("http://{}", env.registration_addrs[0]))
            .expect("a URI")
            .connect()
            .await;
    assert!(refused.is_err(), "no new connections after shutdown");
}
