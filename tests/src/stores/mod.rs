//! Stores of a test's own, started on loopback for the tests that need a
//! server set up otherwise than the shared one: a Postgres that speaks only
//! TLS ([`postgres_tls`]), a PgBouncer in transaction pooling mode
//! ([`pgbouncer`]), Redis over TLS ([`redis_tls`]) and the Redis Cluster
//! ([`redis_cluster`]).
//!
//! Both refuse to run as root, so when the tests run as root (as CI does)
//! their files belong to, and their processes run as, the `postgres` user
//! that Debian's `postgresql` package creates.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

pub mod flow;
pub mod pgbouncer;
pub mod postgres_tls;
pub mod redis_cluster;
pub mod redis_tls;

/// Whether this process runs as root.
fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// `program args...`, as the `postgres` user when running as root, from `/`
/// (which that user can read, unlike root's home).
fn server_command(program: &Path) -> Command {
    if running_as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command.current_dir("/");
        command
    } else {
        Command::new(program)
    }
}

/// Runs `command`, panicking with its output if it fails.
fn run(mut command: Command, what: &str) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{what}: cannot run {command:?}: {error}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A directory of the test's own under the temporary directory, owned by
/// the user the servers run as; removed when dropped.
pub struct ScratchDir(PathBuf);

static SCRATCH_COUNTER: AtomicU32 = AtomicU32::new(0);

impl ScratchDir {
    /// A new, empty directory named after `what`.
    pub fn new(what: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "devicelink-{what}-{}-{}",
            std::process::id(),
            SCRATCH_COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a scratch directory");
        Self(path)
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `name` in it, readable by its owner alone (server keys must
    /// be: Postgres refuses a key others can read).
    pub fn write_private(&self, name: &str, contents: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write a scratch file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .expect("restrict a scratch file");
        path
    }

    /// Hands everything in it to the user the servers run as.
    pub fn hand_to_server_user(&self) {
        if running_as_root() {
            let mut chown = Command::new("chown");
            chown.arg("-R").arg("postgres:postgres").arg(&self.0);
            run(chown, "chown the scratch directory");
        }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Waits up to thirty seconds for something to accept connections on
/// loopback `port`.
pub fn wait_for_port(port: u16, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} does not listen on port {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
