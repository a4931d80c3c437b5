//! Redis as devicelink reaches it: one multiplexed connection shared by
//! every request, each command bounded.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};

use super::{
    CONNECT_TIMEOUT, PROBE_TIMEOUT, REDIS_RESPONSE_TIMEOUT, STORE_TIMEOUT, StoreSetupError,
};

/// The one multiplexed connection to Redis that every request shares:
/// connects on first use, reconnects by itself, and is cheap to clone (no
/// pool is needed). Commands and scripts run on it as on any redis-rs
/// connection, each bounded by [`STORE_TIMEOUT`]; which kind of Redis is
/// behind it is this module's business alone.
#[derive(Clone)]
pub struct RedisConnection(ConnectionManager);

impl RedisConnection {
    /// Redis at `redis_url`; nothing connects yet.
    pub fn new(redis_url: &str) -> Result<Self, StoreSetupError> {
        let client = redis::Client::open(redis_url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(REDIS_RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(200));
        Ok(Self(ConnectionManager::new_lazy_with_config(
            client, config,
        )?))
    }

    /// Whether Redis answers `PING` within a second.
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
            tokio::time::timeout(STORE_TIMEOUT, self.0.req_packed_command(cmd))
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
            tokio::time::timeout(
                STORE_TIMEOUT,
                self.0.req_packed_commands(pipeline, offset, count),
            )
            .await
            .unwrap_or_else(|_elapsed| Err(redis_timed_out()))
        })
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
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
