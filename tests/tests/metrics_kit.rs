//! The operator's kit against the real service binaries, each serving its
//! own `/metrics` as in production: after a full flow (mint, a new user and
//! a restored one, a retry, a replay, an unknown code, status, watch,
//! reset, a rate-limited mint), each service's metrics pass
//! `promtool check metrics` with nothing to say, the new metrics moved as
//! the flow says they should, and every metric the alert rules and the
//! dashboard (`deploy/observability/`) query is one the services export or
//! the rules record.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use devicelink_e2e::binaries::service_binary;
use devicelink_e2e::prometheus::{
    body, counter, dashboard_queries, free_metrics_addr, lint, metric_names_in, promtool,
    recorded_names, repo_root, rule_exprs, sample_names, scrape,
};
use devicelink_e2e::*;
use devicelink_shared::pb;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::Code;

/// A service binary running against the test's stores.
struct ServiceProcess {
    /// Killed when the test ends.
    _child: Child,
    addr: SocketAddr,
    metrics_addr: SocketAddr,
}

impl ServiceProcess {
    /// Starts `bin` of `package` with `settings` on top of the test's
    /// stores, and waits for its `<bin> listening addr=…` log line (it binds
    /// port 0; the line says where).
    async fn start(
        env: &TestEnv,
        package: &str,
        bin: &'static str,
        settings: &[(&str, &str)],
    ) -> Self {
        let binary: PathBuf = service_binary(package, bin);
        let metrics_addr = free_metrics_addr();
        let mut command = Command::new(binary);
        command
            .env("DATABASE_URL", &env.database_url)
            .env(
                "REDIS_URL",
                std::env::var("DEVICELINK_TEST_REDIS_URL")
                    .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into()),
            )
            .env("REDIS_KEY_PREFIX", &env.redis_key_prefix)
            .env("AUTH_CODE_RECORD_KEY", RECORD_KEY)
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("METRICS_ADDR", metrics_addr.to_string())
            .env(
                "RUST_LOG",
                "warn,authcode_service=info,registration_service=info",
            )
            .envs(settings.iter().copied())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("start the service binary");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let marker = format!("{bin} listening");
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            let mut log = Vec::new();
            while let Some(line) = lines.next_line().await.expect("read the log") {
                if line.contains(&marker)
                    && let Some((_, rest)) = line.split_once("addr=")
                    && let Some(Ok(addr)) = rest.split_whitespace().next().map(str::parse)
                {
                    return addr;
                }
                log.push(line);
            }
            panic!("{bin} exited before listening:\n{}", log.join("\n"));
        })
        .await
        .unwrap_or_else(|_| panic!("{bin} listens within 30 s"));
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            _child: child,
            addr,
            metrics_addr,
        }
    }

    /// The metrics the service serves now (the body alone).
    async fn metrics(&self) -> String {
        body(&scrape(self.metrics_addr).await).to_owned()
    }
}

/// Mints a code for `external_id`.
async fn mint(
    authcode: &ServiceProcess,
    api_key: &str,
    external_id: &str,
) -> Result<String, tonic::Status> {
    let mut client =
        pb::auth_code_service_client::AuthCodeServiceClient::new(connect(authcode.addr).await);
    let request = pb::MintAuthCodeRequest {
        external_id: external_id.into(),
        app_id: String::new(),
        ..Default::default()
    };
    Ok(client
        .mint_auth_code(authorized(request, api_key))
        .await?
        .into_inner()
        .auth_code)
}

/// The value of the sample `series` (`name{labels}` as the exporter writes
/// it) in `metrics`, 0 when absent.
fn value(metrics: &str, series: &str) -> f64 {
    counter(metrics, series)
}

/// Waits (up to 5 s) until registration's open watch streams read `open`.
async fn await_watch_streams(registration: &ServiceProcess, open: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = registration.metrics().await;
        if value(&metrics, "devicelink_watch_streams") == open {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "watch streams never read {open}:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kit_matches_what_the_services_export() {
    let promtool = tokio::task::spawn_blocking(promtool)
        .await
        .expect("promtool");
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    let registration = ServiceProcess::start(
        &env,
        "devicelink-registration",
        "registration-service",
        &[
            ("ADMIN_LISTEN_ADDR", "127.0.0.1:0"),
            ("DEVICELINK_ADMIN_TOKEN", ADMIN_TOKEN),
        ],
    )
    .await;
    // Two codes an hour per external id: the third mint is refused.
    let authcode = ServiceProcess::start(
        &env,
        "devicelink-authcode",
        "authcode-service",
        &[("RATE_LIMIT_MINT_PER_EXTERNAL_ID", "2/h")],
    )
    .await;
    let mut devices = pb::registration_service_client::RegistrationServiceClient::new(
        connect(registration.addr).await,
    );

    // A new user on one phone, restored on another.
    let first_code = mint(&authcode, &api_key, "user-1").await.expect("mint");
    let created = devices
        .create_user(create_user_request(&first_code, &app_id, phone("phone-1")))
        .await
        .expect("a new user")
        .into_inner();
    assert!(!created.restored);
    let second_code = mint(&authcode, &api_key, "user-1").await.expect("mint");
    let restored = devices
        .create_user(create_user_request(&second_code, &app_id, phone("phone-2")))
        .await
        .expect("the user restored")
        .into_inner();
    assert!(restored.restored);
    let limited = mint(&authcode, &api_key, "user-1")
        .await
        .expect_err("limited");
    assert_eq!(limited.code(), Code::ResourceExhausted, "{limited:?}");
    // The first phone asks again: the same answer. Another device presents
    // the used code: a replay. A code nobody minted: unknown.
    devices
        .create_user(create_user_request(&first_code, &app_id, phone("phone-1")))
        .await
        .expect("a retry");
    for (code, device) in [
        (first_code.clone(), "phone-3"),
        (
            devicelink_shared::auth_code::AuthCode::generate()
                .expose()
                .to_owned(),
            "phone-4",
        ),
    ] {
        let refused = devices
            .create_user(create_user_request(&code, &app_id, phone(device)))
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
    }
    // Status, a watch, a reset.
    status_of_token(&mut devices, &restored.install_token)
        .await
        .expect("status");
    let mut watch = devices
        .watch_install_status(authorized(
            pb::WatchInstallStatusRequest {},
            &restored.install_token,
        ))
        .await
        .expect("watch")
        .into_inner();
    next_status(&mut watch).await.expect("the current status");
    await_watch_streams(&registration, 1.0).await;
    drop(watch);
    await_watch_streams(&registration, 0.0).await;
    devices
        .reset_install(authorized(
            pb::ResetInstallRequest {},
            &restored.install_token,
        ))
        .await
        .expect("reset");

    let authcode_metrics = authcode.metrics().await;
    let registration_metrics = registration.metrics().await;

    // Each service's metrics pass the linter, with nothing to say.
    for (service, metrics) in [
        ("authcode", &authcode_metrics),
        ("registration", &registration_metrics),
    ] {
        let (passed, said) = lint(&promtool, metrics);
        assert!(
            passed && said.is_empty(),
            "promtool check metrics on {service}:\n{said}\n\n{metrics}"
        );
    }

    // The new metrics moved as the flow says.
    let mint_call = "method=\"devicelink.v1.AuthCodeService/MintAuthCode\"";
    for (series, expected) in [
        ("devicelink_auth_codes_minted_total", 2.0),
        (
            "devicelink_rate_limited_total{scope=\"mint_per_external_id\"}",
            1.0,
        ),
        (
            &format!("devicelink_grpc_requests_total{{{mint_call},code=\"ResourceExhausted\"}}"),
            1.0,
        ),
        ("devicelink_store_errors_total{store=\"redis\"}", 0.0),
        ("devicelink_serving", 1.0),
    ] {
        assert_eq!(
            value(&authcode_metrics, series),
            expected,
            "{series}:\n{authcode_metrics}"
        );
    }
    assert!(
        value(
            &authcode_metrics,
            "devicelink_store_operation_duration_seconds_count{store=\"redis\",operation=\"store_auth_code\"}"
        ) >= 2.0,
        "{authcode_metrics}"
    );
    for (series, expected) in [
        ("devicelink_auth_codes_redeemed_total", 2.0),
        ("devicelink_redemptions_total{outcome=\"created\"}", 1.0),
        ("devicelink_redemptions_total{outcome=\"restored\"}", 1.0),
        ("devicelink_redemptions_total{outcome=\"retry\"}", 1.0),
        ("devicelink_redemptions_total{outcome=\"replay\"}", 1.0),
        (
            "devicelink_redemptions_total{outcome=\"unknown_code\"}",
            1.0,
        ),
        ("devicelink_activations_total", 2.0),
        ("devicelink_deactivations_total{reason=\"superseded\"}", 1.0),
        ("devicelink_deactivations_total{reason=\"reset\"}", 1.0),
        ("devicelink_status_listener_connected", 1.0),
        ("devicelink_serving", 1.0),
    ] {
        assert_eq!(
            value(&registration_metrics, series),
            expected,
            "{series}:\n{registration_metrics}"
        );
    }
    assert!(
        value(
            &registration_metrics,
            "devicelink_store_operation_duration_seconds_count{store=\"postgres\",operation=\"redeem\"}"
        ) >= 2.0,
        "{registration_metrics}"
    );
    assert!(
        value(
            &registration_metrics,
            "devicelink_status_listener_heartbeat_seconds_count"
        ) >= 1.0,
        "{registration_metrics}"
    );
    for metrics in [&authcode_metrics, &registration_metrics] {
        let build = metrics
            .lines()
            .find(|line| line.starts_with("devicelink_build_info{"))
            .unwrap_or_else(|| panic!("no build info:\n{metrics}"));
        assert!(
            build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
                && build.contains("commit=\""),
            "{build}"
        );
    }

    // Every metric the rules and the dashboard query exists.
    let kit = repo_root().join("deploy/observability");
    let rules = std::fs::read_to_string(kit.join("devicelink.rules.yml")).expect("the rules");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(kit.join("devicelink.dashboard.json")).expect("the dashboard"),
    )
    .expect("the dashboard is JSON");
    let mut known = sample_names(&authcode_metrics);
    known.extend(sample_names(&registration_metrics));
    known.extend(recorded_names(&rules));
    let queries: Vec<(&str, String)> = rule_exprs(&rules)
        .into_iter()
        .map(|expr| ("rules", expr))
        .chain(
            dashboard_queries(&dashboard)
                .into_iter()
                .map(|query| ("dashboard", query)),
        )
        .collect();
    let mut named = BTreeSet::new();
    let mut unknown = Vec::new();
    for (source, query) in &queries {
        for name in metric_names_in(query) {
            if !known.contains(&name) {
                unknown.push(format!("{source}: {name} in {query}"));
            }
            named.insert(name);
        }
    }
    assert!(
        unknown.is_empty(),
        "queries name metrics no service exports:\n{}\n\nexported: {known:#?}",
        unknown.join("\n")
    );
    // The readers found the queries: the kit names far more than a few.
    assert!(
        queries.len() >= 40 && named.len() >= 20,
        "{} queries naming {named:?}",
        queries.len()
    );
}
