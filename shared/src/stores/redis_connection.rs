//! Redis as devicelink reaches it: one multiplexed connection shared by
//! every request, each command bounded, whether one server or a cluster is
//! behind it.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterConfig;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};

use super::redis_settings::{RedisClient, RedisSettings};
use super::{
    CONNECT_TIMEOUT, PROBE_TIMEOUT, REDIS_RESPONSE_TIMEOUT, STORE_TIMEOUT, StoreSetupError,
};

/// The one multiplexed connection to Redis that every request shares:
/// connects on first use, reconnects by itself, and is cheap to clone (no
/// pool is needed). Commands and scripts run on it as on any redis-rs
/// connection, each bounded by [`STORE_TIMEOUT`]; which kind of Redis is
/// behind it is this module's business alone.
///
/// Against a Redis Cluster, every command goes to the master of its key's
/// slot (never a replica: a replica may not hold a code just minted, or may
/// still hold one just redeemed), following MOVED and ASK and refreshing
/// the topology after a failover. Every key one command, script or
/// pipeline touches must share a slot (a hash tag): see
/// [`crate::limits::app_hash_tag`].
#[derive(Clone)]
pub struct RedisConnection(Connection);

#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl RedisConnection {
    /// Redis at `redis_url` (`redis://` or `rediss://` with the system's
    /// roots); nothing connects yet.
    pub fn new(redis_url: &str) -> Result<Self, StoreSetupError> {
        Self::connect(&RedisSettings::single(redis_url))
    }

    /// Redis as `settings` describe it, its files read now; nothing
    /// connects yet. A cluster's connection task is spawned here, so this
    /// runs inside a Tokio runtime.
    pub fn connect(settings: &RedisSettings) -> Result<Self, StoreSetupError> {
        let connection = match settings.client()? {
            RedisClient::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(REDIS_RESPONSE_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_millis(200));
                let manager =
                    ConnectionManager::new_lazy_with_config(client, config).map_err(|source| {
                        StoreSetupError::Redis {
                            variable: settings.url_variable(),
                            source,
                        }
                    })?;
                Connection::Single(manager)
            }
            RedisClient::Cluster(client) => Connection::Cluster(
                client.get_pending_async_connection_with_config(ClusterConfig::new()),
            ),
        };
        Ok(Self(connection))
    }

    /// Whether a Redis Cluster is behind this connection: then every key
    /// one script touches must share a hash slot.
    pub fn is_cluster(&self) -> bool {
        matches!(self.0, Connection::Cluster(_))
    }

    /// Whether Redis answers `PING` within a second (for a cluster: the
    /// node the client picks; every command then finds its own master).
    pub async fn reachable(&self) -> bool {
        let mut redis = self.clone();
        let command = redis::cmd("PING");
        let ping = command.query_async::<String>(&mut redis);
        matches!(tokio::time::timeout(PROBE_TIMEOUT, ping).await, Ok(Ok(_)))
    }
}

/// The error of a Redis call that ran out of [`STORE_TIMEOUT`]: a timeout,
/// as redis-rs reports its own.
fn redis_timed_out() -> RedisError {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("Redis did not answer within {STORE_TIMEOUT:?}"),
    )
    .into()
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let reply = match &mut self.0 {
                Connection::Single(manager) => manager.req_packed_command(cmd),
                Connection::Cluster(cluster) => cluster.req_packed_command(cmd),
            };
            tokio::time::timeout(STORE_TIMEOUT, reply)
                .await
                .unwrap_or_else(|_elapsed| Err(redis_timed_out()))
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let replies = match &mut self.0 {
                Connection::Single(manager) => manager.req_packed_commands(pipeline, offset, count),
                Connection::Cluster(cluster) => {
                    cluster.req_packed_commands(pipeline, offset, count)
                }
            };
            tokio::time::timeout(STORE_TIMEOUT, replies)
                .await
                .unwrap_or_else(|_elapsed| Err(redis_timed_out()))
        })
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Connection::Single(manager) => manager.get_db(),
            Connection::Cluster(cluster) => cluster.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[tokio::test]
    async fn a_redis_that_never_answers_fails_the_command_within_the_store_timeout() {
        // Accepts connections and holds them open, answering nothing: a
        // Redis that hangs, which refusing connections would not show.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let mut redis = RedisConnection::new(&format!("redis://{addr}/0")).unwrap();
        let started = Instant::now();
        let mut command = redis::cmd("GET");
        let get = command
            .arg("some-key")
            .query_async::<Option<String>>(&mut redis);
        let reply = tokio::time::timeout(STORE_TIMEOUT * 5, get)
            .await
            .expect("the command gave up by itself");
        assert!(reply.is_err(), "{reply:?}");
        assert!(
            started.elapsed() < STORE_TIMEOUT + Duration::from_millis(500),
            "took {:?}",
            started.elapsed()
        );
    }
}
