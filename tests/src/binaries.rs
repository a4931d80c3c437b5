//! The services' real binaries, for tests of what only a process shows:
//! exit codes, signals, start-up messages.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

/// The path of `bin` of `package`, built by the cargo running this test: an
/// integration test of another package gets no `CARGO_BIN_EXE_*`, and
/// `cargo test --workspace` does not build other packages' binaries. Cargo
/// holds no build lock while tests run, so this nested build cannot
/// deadlock; when the binary is current it takes a fraction of a second.
/// Built once per test process.
pub fn service_binary(package: &str, bin: &'static str) -> PathBuf {
    static BUILT: Mutex<Option<HashMap<&'static str, PathBuf>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    built
        .get_or_insert_with(HashMap::new)
        .entry(bin)
        .or_insert_with(|| build(package, bin))
        .clone()
}

fn build(package: &str, bin: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let target_dir = profile_dir.parent().expect("target/");
    let mut build = std::process::Command::new(env!("CARGO"));
    build.args(["build", "--package", package, "--bin", bin, "--target-dir"]);
    build.arg(target_dir);
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    let status = build.status().expect("cargo runs");
    assert!(status.success(), "building {bin} failed");
    let binary = profile_dir.join(bin);
    assert!(binary.exists(), "{} was not built", binary.display());
    binary
}
