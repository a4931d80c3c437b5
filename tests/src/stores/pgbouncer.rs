//! A PgBouncer of a test's own, in transaction pooling mode, in front of
//! the shared test Postgres.
//!
//! Debian's pgbouncer (1.18, installed by `deploy/local/test.sh`) keeps no
//! prepared statement across transactions, as most production poolers in
//! transaction mode do not. Its pools are kept smaller than the services'
//! (four server connections per database and user) and used in turn
//! (`server_round_robin`), so that even one client's successive statements
//! land on different server connections, and anything that relies on a
//! session (a named statement, LISTEN, a session lock) breaks as it would
//! in production under load. Stopped when dropped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::{ScratchDir, free_port, running_as_root, wait_for_port};

/// Server connections per (database, user) pair: fewer than the services
/// hold, so that their connections share them.
pub const SERVER_POOL_SIZE: u32 = 4;

/// A running pgbouncer; stopped when dropped.
pub struct PgBouncer {
    process: Child,
    addr: SocketAddr,
    // Last: removed once the process has stopped.
    dir: ScratchDir,
}

impl PgBouncer {
    /// Starts one on a free loopback port, pooling every database of the
    /// Postgres `upstream_url` names (any database name is passed through),
    /// for that URL's role and password.
    pub fn start(upstream_url: &str) -> Self {
        let upstream: tokio_postgres::Config =
            upstream_url.parse().expect("the test Postgres URL parses");
        let user = upstream
            .get_user()
            .expect("the test Postgres URL names a role");
        let password = String::from_utf8_lossy(
            upstream
                .get_password()
                .expect("the test Postgres URL has a password"),
        )
        .into_owned();
        let host = match upstream.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            _ => "127.0.0.1".to_owned(),
        };
        let upstream_port = upstream.get_ports().first().copied().unwrap_or(5432);

        let dir = ScratchDir::new("pgbouncer");
        let port = free_port();
        dir.write_private("userlist.txt", &format!("\"{user}\" \"{password}\"\n"));
        // `options` carries the services' server-side timeouts, which
        // pgbouncer 1.18 cannot pass on: it is ignored here, as a
        // deployment must (see the README's "PgBouncer").
        let ini = format!(
            "[databases]\n\
             * = host={host} port={upstream_port}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = scram-sha-256\n\
             auth_file = {dir}/userlist.txt\n\
             pool_mode = transaction\n\
             default_pool_size = {SERVER_POOL_SIZE}\n\
             server_round_robin = 1\n\
             max_client_conn = 1000\n\
             ignore_startup_parameters = extra_float_digits,options\n\
             server_tls_sslmode = disable\n\
             logfile = {dir}/pgbouncer.log\n",
            dir = dir.path().display(),
        );
        let ini_file = dir.write_private("pgbouncer.ini", &ini);
        dir.hand_to_server_user();

        let mut command = Command::new(pgbouncer_binary());
        if running_as_root() {
            // pgbouncer refuses to run as root; it drops to this user itself.
            command.args(["-u", "postgres"]);
        }
        let process = command
            .arg(&ini_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgbouncer");
        let pgbouncer = Self {
            process,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        };
        wait_for_port(port, "pgbouncer");
        pgbouncer
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its log so far, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Debian's `/usr/sbin/pgbouncer`, or one on the `PATH`.
fn pgbouncer_binary() -> PathBuf {
    let debian = PathBuf::from("/usr/sbin/pgbouncer");
    if debian.exists() {
        return debian;
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("pgbouncer"))
        .find(|candidate| candidate.exists())
        .expect("pgbouncer is not installed: run deploy/local/test.sh, which installs it")
}
