//! The Redis Cluster of the test run: 3 masters and 3 replicas on
//! 127.0.0.1:7100-7105, made (or reused, or repaired) by
//! `deploy/local/ensure-redis-cluster.sh`, once per run rather than once
//! per test. `deploy/local/test.sh` sources the script and exports
//! `DEVICELINK_TEST_REDIS_CLUSTER_URLS`; a test run without it (`cargo test
//! --test redis_cluster` alone) runs the script itself.
//!
//! Tests share the cluster, each under its own key prefix; a test that
//! kills a node holds [`exclusive`], the others [`shared`], so that no
//! flow runs into another test's failover by surprise.

use std::path::PathBuf;
use std::sync::OnceLock;

use devicelink_shared::config::{RedisServers, RedisSettings};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

static CLUSTER_USE: RwLock<()> = RwLock::const_new(());

/// Use of the cluster alongside other tests.
pub async fn shared() -> RwLockReadGuard<'static, ()> {
    CLUSTER_USE.read().await
}

/// Use of the cluster alone (failing nodes over).
pub async fn exclusive() -> RwLockWriteGuard<'static, ()> {
    CLUSTER_USE.write().await
}

/// The seed nodes, e.g. `redis://127.0.0.1:7100`.
pub fn urls() -> Vec<String> {
    static URLS: OnceLock<Vec<String>> = OnceLock::new();
    URLS.get_or_init(|| {
        let list = std::env::var("DEVICELINK_TEST_REDIS_CLUSTER_URLS")
            .ok()
            .filter(|list| !list.trim().is_empty())
            .unwrap_or_else(ensure);
        list.split(',').map(|url| url.trim().to_owned()).collect()
    })
    .clone()
}

/// The services' settings for the cluster.
pub fn settings() -> RedisSettings {
    RedisSettings {
        servers: RedisServers::Cluster(urls()),
        ..RedisSettings::single("")
    }
}

/// Runs `deploy/local/ensure-redis-cluster.sh`: starts the cluster, or
/// restarts nodes a test stopped and waits until it is healthy again.
/// Returns the seed nodes it prints.
pub fn ensure() -> String {
    repair().unwrap_or_else(|error| panic!("{error}"))
}

/// [`ensure`], reporting failure instead of panicking (for a guard that
/// runs while a failed test unwinds).
pub fn repair() -> Result<String, String> {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/ensure-redis-cluster.sh");
    let output = std::process::Command::new("bash")
        .arg(&script)
        .output()
        .map_err(|error| format!("bash: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "{} failed:\n{}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Repairs the cluster when dropped, so that a test that kills a node
/// leaves the cluster whole for the tests after it, even when it fails.
#[derive(Debug)]
pub struct RepairOnDrop;

impl Drop for RepairOnDrop {
    fn drop(&mut self) {
        if let Err(error) = repair() {
            eprintln!("the Redis Cluster could not be repaired: {error}");
        }
    }
}

/// One node as `CLUSTER NODES` shows it.
#[derive(Debug, Clone)]
pub struct Node {
    /// Its id.
    pub id: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Whether it is a master (not failed).
    pub master: bool,
    /// For a replica, its master's id.
    pub master_id: Option<String>,
    /// Whether it is marked failed or possibly failed.
    pub failing: bool,
    /// The slot ranges it serves (a master), inclusive.
    pub slots: Vec<(u16, u16)>,
}

impl Node {
    /// Whether it serves `slot`.
    pub fn serves(&self, slot: u16) -> bool {
        self.slots
            .iter()
            .any(|(first, last)| (*first..=*last).contains(&slot))
    }
}

/// The cluster as the node on `port` sees it.
pub async fn nodes(port: u16) -> redis::RedisResult<Vec<Node>> {
    let text: String = node_command(port, &["CLUSTER", "NODES"]).await?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = fields.get(1)?.split(['@', ':']).nth(1)?.parse().ok()?;
            let flags = fields.get(2)?;
            Some(Node {
                id: fields.first()?.to_string(),
                port,
                master: flags.contains("master"),
                master_id: fields
                    .get(3)
                    .filter(|id| **id != "-")
                    .map(|id| id.to_string()),
                failing: flags.contains("fail"),
                slots: fields
                    .iter()
                    .skip(8)
                    .filter_map(|range| {
                        let (first, last) = range.split_once('-').unwrap_or((range, range));
                        Some((first.parse().ok()?, last.parse().ok()?))
                    })
                    .collect(),
            })
        })
        .collect())
}

/// The slot of `key`, as the node at `port` computes it.
pub async fn slot_of(port: u16, key: &str) -> redis::RedisResult<u16> {
    node_command(port, &["CLUSTER", "KEYSLOT", key]).await
}

/// The process id of the node at `port` (from `INFO server`).
pub async fn process_id(port: u16) -> redis::RedisResult<u32> {
    let info: String = node_command(port, &["INFO", "server"]).await?;
    info.lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
        .ok_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "no process_id"))
        })
}

/// Runs one command on the node at `port` itself (no redirection).
pub async fn node_command<T: redis::FromRedisValue>(
    port: u16,
    args: &[&str],
) -> redis::RedisResult<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    command.query_async(&mut connection).await
}
