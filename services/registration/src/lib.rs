//! registration: redeems auth codes on devices, links users and arbitrates
//! which of a user's devices is active.
//!
//! # How a redemption flows
//!
//! 1. [`service::parse`] turns the `CreateUser` request into domain types
//!    ([`domain`]); every bad field is reported at once, by name.
//! 2. [`codes`] reads the code's record from Redis (`GET`, not `GETDEL`: a
//!    request that fails must not consume the code). A device-bound code
//!    (minted with a `code_challenge`) must come with its `code_verifier`;
//!    the handler decides that in one place
//!    (`RegistrationHandler::prove_possession`) before anything is
//!    written, so a refused proof consumes nothing, and the challenge is
//!    kept with the claim so a retry must prove possession too.
//! 3. [`store`] writes the redemption in one Postgres transaction. A user
//!    that does not exist yet needs no arbitration: one statement creates
//!    it, binds its first install as active and claims the code (the
//!    `redeemed_codes` primary key makes it single-use across replicas), in
//!    one round trip. Otherwise two pipelined round trips restore the user
//!    (locking its row, so one user's redemptions arbitrate one at a time),
//!    ask [`arbitration`] which install is active, write the outcome with
//!    the code's claim and announce status changes with `pg_notify`. The
//!    database holds the invariants itself: one user per (app, external
//!    id), at most one active install per user, one live install per
//!    device. The store answers in domain terms
//!    ([`store::RedeemOutcome`]: redeemed, already redeemed, device held by
//!    another user, app gone); [`service`] alone turns that, and
//!    [`error::RegistrationError`], into gRPC codes and messages.
//! 4. After commit the code is queued for deletion from Redis (batched,
//!    off the response path), and the device gets its install token
//!    ([`install_token`]), derived from the code and a stored nonce so that
//!    a retry from the same device gets the same answer, for as long as
//!    the code would have lived.
//!
//! Every change also writes its audit events ([`audit`]) in the same
//! statement or transaction (the redemption's is a CTE of its one
//! statement, no extra round trip); refusals go through a buffered writer
//! (`devicelink_shared::audit_writer`). Operators read them with
//! `AdminService.ListAuditEvents` and `WatchAuditEvents`
//! ([`service::audit_events`]; why a watch waits before sending an event is
//! in `store/audit.rs`), and the [`janitor`] purges them after
//! `AUDIT_RETENTION_DAYS`.
//!
//! Devices then ask for their status with that token. [`notify`] listens
//! for the announcements on every replica: each one evicts the install
//! from the [`status_cache`] that answers `GetInstallStatus`, and wakes the
//! [`service::watch`] tasks that feed `WatchInstallStatus` streams (capped
//! per install and per replica).
//!
//! # When Postgres does not answer
//!
//! Every Postgres call of the store (a statement, a transaction's round
//! trip, a batch of the [`janitor`]'s purge) runs under
//! [`devicelink_shared::stores::STORE_TIMEOUT`] and fails with UNAVAILABLE
//! past it. A call abandoned so, or by a client that went away, is
//! cancelled in Postgres and its connection closed, never returned to the
//! pool with work outstanding (see `store/connection.rs`). Postgres bounds
//! each statement itself too (see [`devicelink_shared::stores`]).
//!
//! A Postgres that stops answering without closing the connection (a
//! partition) would leave the listener waiting for announcements that
//! never come. So [`notify`] sends a heartbeat every 500 ms that must be
//! answered within a second, or it reconnects and resyncs the watch
//! streams; and the [`status_cache`] is trusted only for 1.5 s after the
//! listener's last sign of life, and the health service reports
//! NOT_SERVING while the listener is not alive.

pub mod arbitration;
pub mod audit;
pub mod codes;
pub mod config;
pub mod domain;
pub mod error;
pub mod install_token;
pub mod janitor;
pub mod migrate;
pub mod notify;
pub mod operators;
pub mod server;
pub mod service;
pub mod status_cache;
pub mod status_fanout;
pub mod store;

pub use config::RegistrationConfig;
pub use server::{Application, StartupError, migrate_only};
