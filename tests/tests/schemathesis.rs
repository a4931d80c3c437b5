//! The REST contract, fuzzed: schemathesis (pinned 4.x, with every check)
//! against the real Envoy of deploy/envoy/envoy.yaml in front of the real
//! services, with deploy/openapi/devicelink.openapi.json as the contract.
//! One run per credential kind, each with real credentials and real
//! resources to aim at:
//!
//! - an API key, for minting (`POST /v1/auth-codes`);
//! - none, for redemption (`POST /v1/users`), with a freshly minted code;
//! - an install token, for the status (`GET /v1/install/status`), and
//!   another for reset (`POST /v1/install:reset`), which ends its install;
//! - the admin token, for every admin operation, on the admin listener;
//! - and, stateful only, the API key with minting and none with
//!   redemption, following the document's links from a minted code to
//!   `POST /v1/users` (it fails while the document declares none).
//!
//! `GET /v1/install/status:watch` is left out: it is a stream that stays
//! open until the install is reset, which schemathesis can only time out
//! on; tests/tests/rest_gateway.rs covers it.
//!
//! `DEVICELINK_SCHEMATHESIS_DOCUMENT` names another document to test the
//! gateway with (a draft of the contract, say).
//!
//! schemathesis comes from `DEVICELINK_SCHEMATHESIS_BIN`
//! (`deploy/gateway/install-tools.sh` installs it); without it the test
//! fails, saying how to install it.

use std::path::{Path, PathBuf};

use devicelink_e2e::gateway::schemathesis::{MAX_EXAMPLES, Run, SEED};

/// The phases of a run over several operations. `stateful` follows the
/// links between its operations where the document declares (or
/// schemathesis infers) them.
const EVERY_PHASE: &str = "examples,coverage,fuzzing,stateful";
/// The phases of a run over one operation: no link can start or end there
/// but at another operation, so `stateful` has nothing to chain (the
/// mint-then-redeem run chains the public operations).
const ONE_OPERATION_PHASES: &str = "examples,coverage,fuzzing";
use devicelink_e2e::gateway::*;
use devicelink_e2e::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_contract_holds_under_schemathesis() {
    let env = TestEnv::start().await;
    let mut gateway = Gateway::start(&env).await;
    // Another document (a draft, say) by DEVICELINK_SCHEMATHESIS_DOCUMENT.
    let document = std::env::var_os("DEVICELINK_SCHEMATHESIS_DOCUMENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/openapi/devicelink.openapi.json")
        })
        .canonicalize()
        .expect("the OpenAPI document");
    let work_dir = std::env::temp_dir().join(format!(
        "devicelink-schemathesis-{}",
        uuid::Uuid::new_v4().simple()
    ));

    let (app_id, api_key) = env.app_with_key().await;
    let fresh_code = env.mint(&api_key, "st-redeemer").await;
    let status_token = env
        .link(&app_id, &api_key, "st-status", phone("st-status-phone"))
        .await
        .install_token;
    let reset_token = env
        .link(&app_id, &api_key, "st-reset", phone("st-reset-phone"))
        .await
        .install_token;
    // The admin run revokes a key of its own, and looks up a real user.
    let admin_key = env
        .admin()
        .await
        .create_api_key(authorized(
            devicelink_shared::pb::CreateApiKeyRequest {
                app_id: app_id.clone(),
                scopes: vec![],
                ttl_seconds: 0,
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("an API key for the admin run")
        .into_inner()
        .key_id;

    let runs = [
        Run {
            name: "API key (minting)",
            listener: gateway.addr,
            operation_ids: &["AuthCodeService_MintAuthCode"],
            credential: Some(("apiKey", &api_key)),
            phases: ONE_OPERATION_PHASES,
            parameters: vec![],
        },
        Run {
            name: "no credential (redemption, a freshly minted code)",
            listener: gateway.addr,
            operation_ids: &["RegistrationService_CreateUser"],
            credential: None,
            phases: ONE_OPERATION_PHASES,
            parameters: vec![
                ("body.auth_code", fresh_code.clone()),
                ("body.app_id", app_id.clone()),
            ],
        },
        // The document's links from a minted code to its redemption: the
        // API key goes with minting only (its security scheme's), the
        // redemption has no credential.
        Run {
            name: "API key, then none (stateful: minting, then redeeming)",
            listener: gateway.addr,
            operation_ids: &[
                "AuthCodeService_MintAuthCode",
                "RegistrationService_CreateUser",
            ],
            credential: Some(("apiKey", &api_key)),
            phases: "stateful",
            parameters: vec![("body.app_id", app_id.clone())],
        },
        Run {
            name: "install token (status)",
            listener: gateway.addr,
            operation_ids: &["RegistrationService_GetInstallStatus"],
            credential: Some(("installToken", &status_token)),
            phases: ONE_OPERATION_PHASES,
            parameters: vec![],
        },
        Run {
            name: "install token (reset)",
            listener: gateway.addr,
            operation_ids: &["RegistrationService_ResetInstall"],
            credential: Some(("installToken", &reset_token)),
            phases: ONE_OPERATION_PHASES,
            parameters: vec![],
        },
        Run {
            name: "admin token (admin listener)",
            listener: gateway.admin_addr,
            operation_ids: &[
                "AdminService_CreateApp",
                "AdminService_CreateApiKey",
                "AdminService_ListApiKeys",
                "AdminService_RevokeApiKey",
                "AdminService_SetSdkConfig",
                "AdminService_GetApp",
                "AdminService_SetAppLimits",
                "AdminService_GetUser",
                "AdminService_DeleteUser",
            ],
            credential: Some(("adminToken", ADMIN_TOKEN)),
            phases: EVERY_PHASE,
            parameters: vec![
                ("path.app_id", app_id.clone()),
                ("path.key_id", admin_key.clone()),
                ("path.external_id", "st-status".to_owned()),
            ],
        },
    ];

    let mut failed = Vec::new();
    for (index, run) in runs.iter().enumerate() {
        let run_dir = work_dir.join(format!("run-{index}"));
        let outcome = run.run(&document, &run_dir).await;
        println!(
            "=== schemathesis, {} (seed {SEED}, {MAX_EXAMPLES} examples) ===\n{}",
            run.name, outcome.output
        );
        if !outcome.passed {
            failed.push(format!(
                "--- {} (every request in {}) ---\n{}",
                run.name,
                run_dir.join("requests.har").display(),
                outcome.output
            ));
        }
    }
    // Kept when something failed: the HAR files say what was sent.
    if failed.is_empty() {
        let _ = std::fs::remove_dir_all(&work_dir);
    }
    assert!(
        failed.is_empty(),
        "schemathesis found failures:\n{}\n--- Envoy's log ---\n{}",
        failed.join("\n"),
        gateway.log()
    );
}
