//! What the rate-limit tests share: a real Redis, a key prefix of their
//! own, and limits built from the operators' syntax.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use devicelink_shared::limits::{Limit, LimitKey, Rate, RateLimiter};
use devicelink_shared::stores::RedisConnection;
use redis::aio::ConnectionLike;
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// The Redis the tests use: `DEVICELINK_TEST_REDIS_URL`, or a local one.
pub fn redis_url() -> String {
    std::env::var("DEVICELINK_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned())
}

/// A fresh connection to the test Redis, as the services make theirs.
pub fn redis() -> RedisConnection {
    devicelink_shared::stores::RedisConnection::new(&redis_url()).expect("a valid Redis URL")
}

/// A key prefix no other test (or run) shares.
pub fn unique_prefix() -> String {
    format!("test-rl-{}:", uuid::Uuid::new_v4().simple())
}

/// A limiter over its own connection, under `prefix`.
pub fn limiter(prefix: &str) -> RateLimiter<RedisConnection> {
    RateLimiter::new(redis(), prefix)
}

/// `rate` (the environment's syntax) for install token `token`.
pub fn per_token(token: &str, rate: &str) -> Limit {
    Limit::new(LimitKey::install_per_token(token.as_bytes()), parse(rate)).expect("not off")
}

/// `rate` (the environment's syntax) for the failed credentials of client
/// address `address`.
pub fn per_address(address: &str, rate: &str) -> Limit {
    let address = address.parse().expect("an address");
    Limit::new(LimitKey::failed_auth_per_address(address), parse(rate)).expect("not off")
}

/// A rate in the environment's syntax that is not `off`.
pub fn parse(rate: &str) -> Option<Rate> {
    Some(
        Rate::parse_setting(rate)
            .expect("the rate parses")
            .expect("not off"),
    )
}

/// Every key under `prefix`.
pub async fn keys_under(prefix: &str) -> Vec<String> {
    let mut redis = redis();
    redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut redis)
        .await
        .expect("KEYS answers")
}

/// A real connection that counts the requests sent through it, to show how
/// many round trips a call takes.
#[derive(Clone)]
pub struct CountingConnection {
    pub inner: RedisConnection,
    pub requests: Arc<AtomicUsize>,
}

impl CountingConnection {
    pub fn new() -> Self {
        Self {
            inner: redis(),
            requests: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl ConnectionLike for CountingConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.inner.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.inner.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}
