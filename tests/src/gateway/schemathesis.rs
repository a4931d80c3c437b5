//! schemathesis (the pinned 4.x CLI, `st`) run against the gateway: one run
//! per credential kind, every check, the phases that apply, a fixed seed and
//! example count so that a run is repeatable. The binary comes from
//! `DEVICELINK_SCHEMATHESIS_BIN`, which `deploy/gateway/install-tools.sh`
//! sets after installing it; without it the test fails and says so.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

/// Fixed, so that a failure found once is found again.
pub const SEED: u64 = 20261130;
/// Test cases per operation and phase (the coverage phase adds its own
/// boundary cases): about 3 minutes for every run on 2 cores.
pub const MAX_EXAMPLES: u32 = 100;

/// The `st` binary, or a failure that says how to install it.
fn schemathesis_binary() -> PathBuf {
    let how = "`source deploy/gateway/install-tools.sh` installs the pinned schemathesis and sets \
               DEVICELINK_SCHEMATHESIS_BIN (deploy/local/test.sh does this)";
    let path = std::env::var_os("DEVICELINK_SCHEMATHESIS_BIN")
        .filter(|path| !path.is_empty())
        .unwrap_or_else(|| {
            panic!("schemathesis not found: DEVICELINK_SCHEMATHESIS_BIN is unset; {how}")
        });
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "DEVICELINK_SCHEMATHESIS_BIN is {}, which is not a file; {how}",
        path.display()
    );
    path
}

/// One schemathesis run: some operations of the document, one credential.
pub struct Run<'a> {
    /// What the run is, for its report: "API key (minting)".
    pub name: &'a str,
    /// The listener the operations are served on.
    pub listener: SocketAddr,
    /// The document's `operationId`s to test.
    pub operation_ids: &'a [&'a str],
    /// The credential, if any: the document's security scheme
    /// (`apiKey`, `installToken`, `adminToken`) and its bearer token.
    /// schemathesis sends it, and also leaves it out or spoils it to check
    /// that it is required.
    pub credential: Option<(&'a str, &'a str)>,
    /// The phases to run: `examples,coverage,fuzzing,stateful` for the
    /// runs of one credential, `stateful` for a run that follows the
    /// document's links across credentials.
    pub phases: &'a str,
    /// Real values for parameters (`"path.app_id"`) and body fields
    /// (`"body.auth_code"`), so that requests reach real resources.
    pub parameters: Vec<(&'a str, String)>,
}

/// What a run printed, and whether every check passed.
pub struct Outcome {
    pub passed: bool,
    pub output: String,
}

impl Run<'_> {
    /// Runs schemathesis against `document` with every check, writing its
    /// configuration and a HAR of every request into `work_dir`.
    pub async fn run(&self, document: &Path, work_dir: &Path) -> Outcome {
        let binary = schemathesis_binary();
        std::fs::create_dir_all(work_dir).expect("create schemathesis's directory");
        let config_path = work_dir.join("schemathesis.toml");
        std::fs::write(&config_path, self.config()).expect("write schemathesis.toml");
        let mut command = Command::new(&binary);
        command
            .arg("--config-file")
            .arg(&config_path)
            .arg("--no-color")
            .arg("run")
            .arg(document)
            .args(["--url", &format!("http://{}", self.listener)])
            .args(["--checks", "all"])
            .args(["--phases", self.phases])
            .args(["--max-examples", &MAX_EXAMPLES.to_string()])
            .args(["--seed", &SEED.to_string()])
            // No example database between runs: the same seed, the same
            // cases.
            .args(["--generation-database", "none"])
            .args(["--workers", "1"])
            .args(["--request-timeout", "10"])
            // Every request and answer, for a failure's investigation.
            .args(["--report", "har"])
            .arg("--report-har-path")
            .arg(work_dir.join("requests.har"));
        for operation_id in self.operation_ids {
            command.args(["--include-operation-id", operation_id]);
        }
        let output = command
            .current_dir(work_dir)
            .stdin(Stdio::null())
            .env("NO_COLOR", "1")
            .output()
            .await
            .unwrap_or_else(|error| panic!("run {}: {error}", binary.display()));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Outcome {
            passed: output.status.success(),
            output: text,
        }
    }

    fn config(&self) -> String {
        // Nothing kept between runs (a cache would change what the next run
        // generates).
        let mut config = String::from("[cache]\nenabled = false\n\n");
        // The coverage phase's undeclared methods, QUERY aside: Envoy
        // refuses a QUERY without a content-type (the QUERY method's
        // request has content) with 400 before any route, where a 405
        // would be; schemathesis sends it bare. Every other method gets
        // its 405.
        config.push_str(
            "[phases.coverage]\nunexpected-methods = \
             [\"get\", \"put\", \"post\", \"delete\", \"options\", \"patch\", \"trace\"]\n\n",
        );
        // A path parameter is always the real value; a body field is the
        // real value in most cases (a dictionary of one), so that other
        // cases still try what the document allows there.
        let mut dictionaries = String::new();
        config.push_str("[parameters]\n");
        for (name, value) in &self.parameters {
            match name.strip_prefix("body.") {
                Some(field) => {
                    let dictionary = format!("body_{}", field.replace('.', "_"));
                    config.push_str(&format!(
                        "{name:?} = {{ dictionary = {dictionary:?}, probability = 0.8 }}\n"
                    ));
                    dictionaries.push_str(&format!(
                        "[dictionaries.{dictionary}]\nvalues = [{value:?}]\n\n"
                    ));
                }
                None => config.push_str(&format!("{name:?} = {value:?}\n")),
            }
        }
        config.push('\n');
        config.push_str(&dictionaries);
        if let Some((scheme, token)) = self.credential {
            config.push_str(&format!("\n[auth.openapi.{scheme}]\nbearer = {token:?}\n"));
        }
        config
    }
}
