//! Every metric devicelink exports, named once, with its help text and unit.
//!
//! The emit sites use these constants, so a metric's name exists in one
//! place, and [`describe_all`] gives each its `# HELP` line, which
//! `promtool check metrics` asks for. Names follow the Prometheus
//! conventions: `devicelink_` first, the base unit in the name
//! (`_seconds`), `_total` on counters and only on counters. Every label
//! takes values from a fixed set (a served method, a scope, a reason, an
//! operation named in the code), never from a request.
//!
//! The operator's kit in `deploy/observability/` (SLOs, alert rules, the
//! dashboard) names these metrics; `tests/tests/metrics_kit.rs` fails when
//! it names one that a service does not export.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Calls by method (`package.Service/Method`, or `unknown`) and gRPC status
/// code name (`Ok`, `NotFound`, ...).
pub const GRPC_REQUESTS: &str = "devicelink_grpc_requests_total";
/// Time to answer a call, by method.
pub const GRPC_REQUEST_DURATION: &str = "devicelink_grpc_request_duration_seconds";
/// 1 with the build's `version` and `commit` as labels.
pub const BUILD_INFO: &str = "devicelink_build_info";
/// 1 while this replica reports SERVING to health checks, 0 while
/// NOT_SERVING (a store unreachable, the listener lost, draining).
pub const SERVING: &str = "devicelink_serving";
/// Calls refused at once because the replica was at its concurrency limit.
pub const CALLS_SHED: &str = "devicelink_calls_shed_total";

/// Pooled Postgres connections by `state` (`in_use`, `idle`).
pub const DB_POOL_CONNECTIONS: &str = "devicelink_db_pool_connections";
/// The most connections the Postgres pool may hold (`DATABASE_POOL_SIZE`).
pub const DB_POOL_MAX_CONNECTIONS: &str = "devicelink_db_pool_max_connections";
/// Requests queued for a pooled Postgres connection.
pub const DB_POOL_WAITING: &str = "devicelink_db_pool_waiting";
/// Time of one store operation, by `store` (`postgres`, `redis`) and
/// `operation` (the name of the function that talks to the store).
pub const STORE_OPERATION_DURATION: &str = "devicelink_store_operation_duration_seconds";
/// Calls that failed UNAVAILABLE because a store (`store` label) could not
/// be reached or did not answer in time.
pub const STORE_ERRORS: &str = "devicelink_store_errors_total";

/// Auth codes minted.
pub const AUTH_CODES_MINTED: &str = "devicelink_auth_codes_minted_total";
/// Auth codes redeemed for the first time (a new user or a restored one).
pub const AUTH_CODES_REDEEMED: &str = "devicelink_auth_codes_redeemed_total";
/// `CreateUser` calls that reached the code, by `outcome` (see
/// [`redemption_outcome`]).
pub const REDEMPTIONS: &str = "devicelink_redemptions_total";
/// Installs made active.
pub const ACTIVATIONS: &str = "devicelink_activations_total";
/// Installs made inactive, by `reason` (`superseded`, `reset`, ...).
pub const DEACTIVATIONS: &str = "devicelink_deactivations_total";
/// Users erased through `AdminService.DeleteUser`.
pub const USERS_ERASED: &str = "devicelink_users_erased_total";

/// Audit events of refusals and mints dropped instead of written: the
/// buffer was full, or Postgres refused a batch after every attempt (see
/// `audit_writer`).
pub const AUDIT_EVENTS_DROPPED: &str = "devicelink_audit_events_dropped_total";

/// Open `WatchInstallStatus` streams.
pub const WATCH_STREAMS: &str = "devicelink_watch_streams";
/// 1 while the change listener is connected and `LISTEN`ing, 0 otherwise.
pub const STATUS_LISTENER_CONNECTED: &str = "devicelink_status_listener_connected";
/// Round trip of the change listener's heartbeat query: how late a change
/// notification can be on this connection, at least.
pub const STATUS_LISTENER_HEARTBEAT: &str = "devicelink_status_listener_heartbeat_seconds";
/// `GetInstallStatus` answers served from the status cache.
pub const STATUS_CACHE_HITS: &str = "devicelink_status_cache_hits_total";

/// Calls refused by a rate limit, by `scope`.
pub const RATE_LIMITED: &str = "devicelink_rate_limited_total";
/// Rate-limit decisions made in this replica's memory because Redis could
/// not be asked.
pub const RATE_LIMIT_FALLBACK: &str = "devicelink_rate_limit_fallback_total";
/// Code records in Redis refused because their seal did not verify
/// (forged, altered, moved, or sealed with a key no longer held).
pub const CODE_RECORDS_REFUSED: &str = "devicelink_code_records_refused_total";

/// The `outcome` label values of [`REDEMPTIONS`].
pub mod redemption_outcome {
    /// A new user was created and its install bound.
    pub const CREATED: &str = "created";
    /// An existing user was restored on this device.
    pub const RESTORED: &str = "restored";
    /// The device that redeemed the code asked again and got the same answer.
    pub const RETRY: &str = "retry";
    /// The code is not live and was never redeemed (made up, mistyped, or
    /// expired).
    pub const UNKNOWN_CODE: &str = "unknown_code";
    /// The redeeming device asked again after the code's life: refused.
    pub const RETRY_TOO_LATE: &str = "retry_too_late";
    /// A used code presented by another device: refused and recorded.
    pub const REPLAY: &str = "replay";
    /// The code was minted for another app.
    pub const OTHER_APP: &str = "other_app";
    /// The device holds a live install of another user.
    pub const DEVICE_HELD: &str = "device_held";
    /// The app the request names does not exist.
    pub const APP_NOT_FOUND: &str = "app_not_found";
    /// A device-bound code without its verifier, with a wrong one, or a
    /// verifier for a code not bound to a device: refused, not consumed.
    pub const VERIFIER_MISMATCH: &str = "verifier_mismatch";
}

/// The `store` label values.
pub mod store {
    /// Postgres.
    pub const POSTGRES: &str = "postgres";
    /// Redis.
    pub const REDIS: &str = "redis";
}

/// Gives every metric its help text and unit. Called once the recorder is
/// installed; a metric shows its description when it first has a value.
pub fn describe_all() {
    describe_counter!(
        GRPC_REQUESTS,
        Unit::Count,
        "gRPC calls answered, by method and status code."
    );
    describe_histogram!(
        GRPC_REQUEST_DURATION,
        Unit::Seconds,
        "Time from a gRPC call's arrival to its answer, by method."
    );
    describe_gauge!(
        BUILD_INFO,
        Unit::Count,
        "Always 1; the labels name the running build's version and git commit."
    );
    describe_gauge!(
        SERVING,
        Unit::Count,
        "1 while this replica reports SERVING to health checks, 0 while NOT_SERVING."
    );
    describe_counter!(
        CALLS_SHED,
        Unit::Count,
        "Calls refused UNAVAILABLE because the replica was at its concurrency limit."
    );
    describe_gauge!(
        DB_POOL_CONNECTIONS,
        Unit::Count,
        "Pooled Postgres connections, by state (in_use, idle)."
    );
    describe_gauge!(
        DB_POOL_MAX_CONNECTIONS,
        Unit::Count,
        "The most connections the Postgres pool may hold."
    );
    describe_gauge!(
        DB_POOL_WAITING,
        Unit::Count,
        "Requests waiting for a pooled Postgres connection."
    );
    describe_histogram!(
        STORE_OPERATION_DURATION,
        Unit::Seconds,
        "Time of one store operation (pool wait included), by store and operation."
    );
    describe_counter!(
        STORE_ERRORS,
        Unit::Count,
        "Calls failed UNAVAILABLE because a store could not be reached or did not answer in time, by store."
    );
    describe_counter!(AUTH_CODES_MINTED, Unit::Count, "Auth codes minted.");
    describe_counter!(
        AUTH_CODES_REDEEMED,
        Unit::Count,
        "Auth codes redeemed for the first time (new or restored user)."
    );
    describe_counter!(
        REDEMPTIONS,
        Unit::Count,
        "CreateUser calls that reached the code, by outcome (created, restored, retry, or why refused)."
    );
    describe_counter!(ACTIVATIONS, Unit::Count, "Installs made active.");
    describe_counter!(
        DEACTIVATIONS,
        Unit::Count,
        "Installs made inactive, by reason."
    );
    describe_counter!(
        USERS_ERASED,
        Unit::Count,
        "Users erased through AdminService.DeleteUser."
    );
    describe_counter!(
        AUDIT_EVENTS_DROPPED,
        Unit::Count,
        "Audit events of refusals and mints dropped: the buffer was full, or Postgres refused their batch after every attempt."
    );
    describe_gauge!(
        WATCH_STREAMS,
        Unit::Count,
        "Open WatchInstallStatus streams."
    );
    describe_gauge!(
        STATUS_LISTENER_CONNECTED,
        Unit::Count,
        "1 while the install status change listener is connected and listening, 0 otherwise."
    );
    describe_histogram!(
        STATUS_LISTENER_HEARTBEAT,
        Unit::Seconds,
        "Round trip of the change listener's heartbeat query on its Postgres connection."
    );
    describe_counter!(
        STATUS_CACHE_HITS,
        Unit::Count,
        "GetInstallStatus answers served from the status cache."
    );
    describe_counter!(
        RATE_LIMITED,
        Unit::Count,
        "Calls refused RESOURCE_EXHAUSTED by a rate limit, by scope."
    );
    describe_counter!(
        RATE_LIMIT_FALLBACK,
        Unit::Count,
        "Rate-limit decisions made in this replica's memory because Redis could not be asked."
    );
    describe_counter!(
        CODE_RECORDS_REFUSED,
        Unit::Count,
        "Code records in Redis refused because their seal did not verify: forged, altered, moved to another code, or sealed with a key this replica does not hold."
    );
}

/// The counters of authcode, shown at 0 from start-up, so that a rate over
/// them is defined before the first event.
pub const AUTHCODE_COUNTERS: &[(&str, &[(&str, &str)])] = &[
    (AUTH_CODES_MINTED, &[]),
    (AUDIT_EVENTS_DROPPED, &[]),
    (CALLS_SHED, &[]),
    (RATE_LIMIT_FALLBACK, &[]),
    (STORE_ERRORS, &[("store", store::POSTGRES)]),
    (STORE_ERRORS, &[("store", store::REDIS)]),
];

/// The counters of registration, shown at 0 from start-up.
pub const REGISTRATION_COUNTERS: &[(&str, &[(&str, &str)])] = &[
    (AUTH_CODES_REDEEMED, &[]),
    (ACTIVATIONS, &[]),
    (USERS_ERASED, &[]),
    (AUDIT_EVENTS_DROPPED, &[]),
    (STATUS_CACHE_HITS, &[]),
    (CALLS_SHED, &[]),
    (RATE_LIMIT_FALLBACK, &[]),
    (CODE_RECORDS_REFUSED, &[]),
    (STORE_ERRORS, &[("store", store::POSTGRES)]),
    (STORE_ERRORS, &[("store", store::REDIS)]),
    (REDEMPTIONS, &[("outcome", redemption_outcome::REPLAY)]),
    (
        REDEMPTIONS,
        &[("outcome", redemption_outcome::UNKNOWN_CODE)],
    ),
];

/// Shows each of `counters` (a name and its labels) at 0 until it moves.
pub fn start_counters(counters: &[(&'static str, &'static [(&'static str, &'static str)])]) {
    for (name, labels) in counters {
        let labels: Vec<metrics::Label> = labels
            .iter()
            .map(|(key, value)| metrics::Label::from_static_parts(key, value))
            .collect();
        metrics::counter!(*name, labels).increment(0);
    }
}

/// Counts a redemption attempt's `outcome` (one of [`redemption_outcome`]).
pub fn count_redemption(outcome: &'static str) {
    metrics::counter!(REDEMPTIONS, "outcome" => outcome).increment(1);
}

/// Counts a call failed by an unreachable or silent `store` (one of
/// [`store`]).
pub fn count_store_error(store: &'static str) {
    metrics::counter!(STORE_ERRORS, "store" => store).increment(1);
}

/// The running build: the crate version, and the git commit it was built
/// from (`unknown` when built outside a git checkout without
/// `DEVICELINK_GIT_COMMIT`; see `shared/build.rs`).
pub const BUILD_VERSION: &str = env!("CARGO_PKG_VERSION");
/// See [`BUILD_VERSION`].
pub const BUILD_COMMIT: &str = env!("DEVICELINK_BUILD_COMMIT");

/// Publishes [`BUILD_INFO`].
pub fn record_build_info() {
    metrics::gauge!(BUILD_INFO, "version" => BUILD_VERSION, "commit" => BUILD_COMMIT).set(1.0);
}
