//! The end-to-end test harness: both services started in-process on port 0
//! against real Postgres and Redis, each test with its own freshly migrated
//! database and its own Redis key space.
//!
//! Where the stores are comes from `DEVICELINK_TEST_DATABASE_URL` (a role
//! that may `CREATE DATABASE`) and `DEVICELINK_TEST_REDIS_URL`;
//! `deploy/local/test.sh` sets both after making sure the stores run.

pub mod audit_events;
pub mod bench;
pub mod binaries;
pub mod client;
pub mod credentials;
pub mod env;
pub mod gateway;
pub mod logs;
pub mod openapi;
pub mod pg_activity;
pub mod prometheus;
pub mod proxy;
pub mod raw_h2;
pub mod rows;
pub mod stores;

pub use client::*;
pub use env::{ADMIN_TOKEN, RECORD_KEY, TestEnv, TestOptions, operator_line};
