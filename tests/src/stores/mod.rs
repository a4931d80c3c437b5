//! Store servers a test starts for itself, beyond the shared Postgres and
//! Redis of `deploy/local/test.sh`: Redis over TLS, and the Redis Cluster.

pub mod redis_cluster;
pub mod redis_tls;
