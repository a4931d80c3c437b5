//! authcode: mints short-lived, single-use authentication codes for the
//! holders of an API key.
//!
//! A customer's backend calls `AuthCodeService.MintAuthCode` with its API key
//! (`authorization: Bearer dlk_…`) and one of its own user identifiers, the
//! *external id*. It gets back a random code that it forwards to its app; the
//! app redeems the code with the registration service, which links the
//! external id to an SDK user. authcode never talks to registration: the two
//! meet only in Redis, through the record defined in
//! [`devicelink_shared::auth_code`].
//!
//! # A request, step by step
//!
//! 1. [`service`] receives the call. Authentication comes first:
//!    [`api_keys::ApiKeyVerifier`] reads the bearer key, checks its form and
//!    checksum offline, finds the stored key by its public id in Postgres
//!    (`api_keys`), compares the secret's hash in constant time, and refuses
//!    revoked and expired keys. The key must carry the `user_link` scope.
//!    An unknown, revoked or expired key counts against the client
//!    address's failed credentials; an address past that limit is refused
//!    (RESOURCE_EXHAUSTED) before its key is read from Postgres.
//! 2. The request is parsed into domain types ([`ExternalId`], [`AppId`]);
//!    every bad field is reported at once. An `app_id` in the request, when
//!    given, must be the key's app: a key acts only for its own app. A
//!    `code_challenge` binds the code to the device that holds its verifier
//!    ([`devicelink_shared::code_challenge`]); an app whose operator set
//!    `require_code_challenge` (read with the key) gets no code without
//!    one.
//! 3. [`codes::CodeMinter`] generates 256 random bits and stores the record
//!    (app, external id, key id, time, challenge) under the *hash* of the
//!    code with
//!    `SET NX PX <ttl>`: Redis expires the code by itself, and a Redis dump
//!    holds nothing redeemable. The `SET` runs in the rate limiter's script,
//!    which first decides the mint's limits ([`limits`]): per API key and
//!    per (app, external id), and the client address's failed credentials.
//!    One round trip decides and stores; a refused mint is
//!    RESOURCE_EXHAUSTED and stores nothing.
//! 4. The code goes back in the response and nowhere else: it is not logged,
//!    and neither are the key or the external id.
//!
//! # Stores and their failures
//!
//! Both clients connect lazily and reconnect by themselves
//! ([`devicelink_shared::stores`]), so the service starts while a store is
//! down. Connecting and waiting for a pooled connection are bounded by the
//! clients' own timeouts, each store command by [`error::STORE_TIMEOUT`]
//! (Redis commands inside the shared connection itself); a
//! store that is down or silent becomes UNAVAILABLE, which the client may
//! retry since nothing was written.
//!
//! Verified keys are cached in memory for [`api_keys::KEY_CACHE_TTL`] (two
//! seconds): a busy backend costs one Postgres query per key every two
//! seconds rather than one per mint, a revoked key stops working on every
//! replica within the product's five seconds, and a short Postgres outage
//! does not stop keys that were just used. The key's `last_used_at` is
//! written at most once a minute, in the background.
//!
//! # Errors
//!
//! Every failure is an [`error::AuthCodeError`], turned into a
//! `tonic::Status` in exactly one place. Internal causes are logged with
//! their chain and never sent to the client.
//!
//! # Modules
//!
//! - [`config`]: settings from the environment.
//! - [`server`]: [`Application`], which binds, serves and stops.
//! - [`service`]: the gRPC handler.
//! - [`api_keys`]: API key verification and its cache.
//! - [`codes`]: minting codes into Redis.
//! - [`limits`]: the mint's rate limits and which failures count.
//! - [`error`]: the error type and its status mapping.
//!
//! [`ExternalId`]: devicelink_shared::validate::ExternalId
//! [`AppId`]: devicelink_shared::validate::AppId

pub mod api_keys;
pub mod codes;
pub mod config;
pub mod error;
pub mod limits;
pub mod server;
pub mod service;

pub use config::AuthCodeConfig;
pub use error::AuthCodeError;
pub use server::{Application, StartupError};
