//! `devicelinkctl audit list` and `audit tail`, the real binary against a
//! registration replica's admin listener.

use std::process::Stdio;
use std::time::Duration;

use devicelink_e2e::binaries::service_binary;
use devicelink_e2e::*;
use tokio::io::{AsyncBufReadExt, BufReader};

fn devicelinkctl(env: &TestEnv, args: &[&str]) -> tokio::process::Command {
    let mut command =
        tokio::process::Command::new(service_binary("devicelink-registration", "devicelinkctl"));
    command
        .arg("--addr")
        .arg(env.registration_admin_addrs[0].to_string())
        .args(args)
        .env("DEVICELINK_ADMIN_TOKEN", ADMIN_TOKEN)
        .kill_on_drop(true);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_list_pages_and_audit_tail_resumes_from_a_cursor() {
    let env = TestEnv::start().await;
    let (app_id, api_key) = env.app_with_key().await;
    for n in 0..2 {
        env.link(
            &app_id,
            &api_key,
            &format!("cli-{n}"),
            phone(&format!("d-{n}")),
        )
        .await;
    }

    let listed = devicelinkctl(
        &env,
        &[
            "audit",
            "list",
            "--app",
            &app_id,
            "--type",
            "code_redeemed",
            "--limit",
            "1",
        ],
    )
    .output()
    .await
    .expect("devicelinkctl runs");
    assert!(listed.status.success(), "{listed:?}");
    let text = String::from_utf8(listed.stdout).expect("UTF-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "one event and the next cursor: {text}");
    assert!(lines[0].contains(" code_redeemed ") && lines[0].contains(&format!("app={app_id}")));
    let cursor = lines[1]
        .strip_prefix("next_cursor: ")
        .expect("a next cursor");

    // Tail from the beginning: both redemptions come once settled, oldest
    // first, each with its id (its cursor) last on its line: the second is
    // the one the list showed first.
    let mut tail = devicelinkctl(
        &env,
        &[
            "audit",
            "tail",
            "--app",
            &app_id,
            "--type",
            "code_redeemed",
            "--cursor",
            "00000000-0000-7000-8000-000000000000",
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .expect("devicelinkctl tails");
    let mut lines = BufReader::new(tail.stdout.take().expect("stdout")).lines();
    let mut tailed = Vec::new();
    for _ in 0..2 {
        tailed.push(
            tokio::time::timeout(Duration::from_secs(60), lines.next_line())
                .await
                .expect("a line within the settle time")
                .expect("stdout reads")
                .expect("a line"),
        );
    }
    assert!(
        tailed.iter().all(|line| line.contains(" code_redeemed ")),
        "{tailed:?}"
    );
    assert!(!tailed[0].ends_with(&format!("id={cursor}")), "{tailed:?}");
    assert!(tailed[1].ends_with(&format!("id={cursor}")), "{tailed:?}");
    tail.kill().await.expect("stop tailing");

    let bad = devicelinkctl(&env, &["audit", "list", "--type", "nonsense"])
        .output()
        .await
        .expect("devicelinkctl runs");
    assert_eq!(bad.status.code(), Some(64), "a usage error");
}

/// A reader that goes away early (`devicelinkctl ... | head -1`) ends the
/// command quietly, with success, not with a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_into_a_closed_pipe_ends_quietly() {
    let env = TestEnv::start().await;
    let mut child = devicelinkctl(&env, &["help"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("devicelinkctl starts");
    // The reader goes away before anything is written.
    drop(child.stdout.take());
    let output = child.wait_with_output().await.expect("devicelinkctl ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
