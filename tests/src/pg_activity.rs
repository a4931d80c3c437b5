//! What Postgres says its sessions are doing, as barriers for tests.
//!
//! A test that needs a call to be in flight holds a lock in its own session
//! and waits until `pg_stat_activity` shows the call's backend waiting on
//! it: proof, where a sleep would only be a guess. The same view tells when
//! a backend has gone, and which client port is the call's connection, so
//! that a test can see the service close its end while Postgres still
//! waits.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

/// How long a barrier waits before failing the test.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(10);
/// How often `pg_stat_activity` is read while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A backend of the test's database waiting on a heavyweight lock.
#[derive(Debug, Clone)]
pub struct LockWaiter {
    /// The backend's process id.
    pub pid: i32,
    /// What it waits for (`transactionid`, `tuple`, `relation`, `advisory`…).
    pub wait_event: String,
    /// The statement it runs.
    pub query: String,
    /// The service's end of the connection: its local TCP port.
    pub client_port: i32,
}

impl LockWaiter {
    /// Whether it runs `statement` (Postgres may show only its start).
    pub fn runs(&self, statement: &str) -> bool {
        !self.query.is_empty() && statement.starts_with(self.query.as_str())
    }
}

/// The other backends of `client`'s database waiting on a lock now.
pub async fn lock_waiters(client: &Client) -> Vec<LockWaiter> {
    client
        .query(
            "SELECT pid, wait_event, query, client_port FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()
               AND wait_event_type = 'Lock'
             ORDER BY pid",
            &[],
        )
        .await
        .expect("read pg_stat_activity")
        .iter()
        .map(|row| LockWaiter {
            pid: row.get(0),
            wait_event: row.get(1),
            query: row.get(2),
            client_port: row.get(3),
        })
        .collect()
}

/// Waits until at least `count` backends of `client`'s database wait on a
/// lock, and returns them; fails the test after ten seconds.
pub async fn await_lock_waiters(client: &Client, count: usize) -> Vec<LockWaiter> {
    let deadline = Instant::now() + BARRIER_TIMEOUT;
    loop {
        let waiters = lock_waiters(client).await;
        if waiters.len() >= count {
            return waiters;
        }
        assert!(
            Instant::now() < deadline,
            "expected {count} backend(s) waiting on a lock, saw {waiters:?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Waits for exactly one backend waiting on a lock and returns it.
pub async fn await_one_lock_waiter(client: &Client) -> LockWaiter {
    let mut waiters = await_lock_waiters(client, 1).await;
    assert_eq!(waiters.len(), 1, "one call waits on the lock: {waiters:?}");
    waiters.remove(0)
}

/// Whether backend `pid` still exists.
pub async fn backend_exists(client: &Client, pid: i32) -> bool {
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
            &[&pid],
        )
        .await
        .expect("read pg_stat_activity")
        .get::<_, i64>(0)
        > 0
}

/// Waits until backend `pid` has gone; fails the test after ten seconds.
pub async fn await_backend_gone(client: &Client, pid: i32) {
    let deadline = Instant::now() + BARRIER_TIMEOUT;
    while backend_exists(client, pid).await {
        assert!(
            Instant::now() < deadline,
            "backend {pid} is still there: {:?}",
            lock_waiters(client).await
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Waits until this process has closed its end of the TCP connection whose
/// local port is `port` (the services run in the test's process), as
/// Linux's `/proc/net/tcp` shows it; fails the test after ten seconds.
/// Postgres notices a closed client only when it next reads or writes, so
/// this is the way to see that a service gave a connection up while its
/// backend still waits on a lock.
pub async fn await_client_side_closed(port: i32) {
    let deadline = Instant::now() + BARRIER_TIMEOUT;
    while client_side_open(port) {
        assert!(
            Instant::now() < deadline,
            "the connection from local port {port} is still open"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Whether a socket bound to local port `port` is still open on this side:
/// established, or closed by the peer only.
fn client_side_open(port: i32) -> bool {
    const ESTABLISHED: &str = "01";
    const CLOSE_WAIT: &str = "08";
    let port = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|table| table.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1).is_some_and(|local| local.ends_with(&port))
                && fields
                    .get(3)
                    .is_some_and(|state| *state == ESTABLISHED || *state == CLOSE_WAIT)
        })
}
