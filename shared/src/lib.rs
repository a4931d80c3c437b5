//! What both devicelink services share, and nothing only one of them needs.
//!
//! - [`pb`]: the `devicelink.v1` contracts generated from `proto/`, and the
//!   descriptor set that reflection and the REST gateway read.
//! - [`secret`]: random bytes from the OS, the text encoding of secrets, and
//!   hashing with constant-time comparison. Every secret devicelink hands out
//!   (API keys, auth codes, install tokens) is stored only as a SHA-256 hash.
//! - [`api_key`]: the API key format, `dlk_<key id>.<secret><checksum>`.
//! - [`auth_code`]: the auth code and the Redis record that authcode writes
//!   and registration redeems.
//! - [`validate`]: field-named validation errors and bounded text checks.
//! - [`status`]: how failures become `tonic::Status` with a readable message,
//!   logging internal causes without ever sending them.
//! - [`limits`]: rate limits in Redis (GCRA), their in-memory fallback,
//!   client addresses behind trusted proxies, RESOURCE_EXHAUSTED replies.
//! - [`rpc`]: a span (W3C trace context honoured) and metrics per call.
//! - [`serving`]: health that follows the stores, reflection, the drain
//!   signal.
//! - [`serve`]: start-up errors and their exit codes, binding, and running
//!   every listener of a service under one drain; [`tls_reload`] and
//!   [`tls_incoming`]: the listeners' TLS, its certificate reloaded when its
//!   files change.
//! - [`hardening`]: HTTP/2 and connection limits, call deadlines, load
//!   shedding, request sizes.
//! - [`config`], [`stores`], [`telemetry`], [`shutdown`]: the plumbing of a
//!   service binary: the environment both services read, connections to
//!   the stores, logs and signals.

pub mod api_key;
pub mod audit;
pub mod audit_pack;
pub mod audit_writer;
pub mod auth_code;
pub mod code_challenge;
pub mod code_record_seal;
pub mod config;
pub mod contract;
pub mod hardening;
pub mod limits;
pub mod metrics_catalog;
pub mod metrics_stores;
pub mod rpc;
pub mod secret;
pub mod serve;
pub mod serving;
pub mod shutdown;
pub mod status;
pub mod stores;
pub mod sweep;
pub mod telemetry;
pub mod tls_incoming;
pub mod tls_reload;
pub mod validate;

/// The generated `devicelink.v1` contracts.
pub mod pb {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("devicelink.v1");

    /// The encoded descriptor set of every devicelink proto and its imports,
    /// with `google.api.http` options kept, for reflection and the gateway.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/devicelink_descriptor.bin"));
}
