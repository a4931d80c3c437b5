//! authcode's errors and their one mapping to `tonic::Status`.
//!
//! Every variant says what the client can do: fix its credential
//! (UNAUTHENTICATED), use another key (PERMISSION_DENIED), fix a field
//! (INVALID_ARGUMENT), retry (UNAVAILABLE), slow down and retry later
//! (RESOURCE_EXHAUSTED), or report a bug (INTERNAL).
//! No message carries a secret: variants hold fixed texts, field
//! violations and error sources that are logged, never sent.

use devicelink_shared::limits::{Refusal, rate_limited};
use devicelink_shared::metrics_catalog::{count_store_error, store as metrics_store};
use devicelink_shared::status::{internal, invalid_argument, unavailable};
pub use devicelink_shared::stores::STORE_TIMEOUT;
use devicelink_shared::stores::{CallError, is_unreachable};
use devicelink_shared::validate::FieldViolation;
use tonic::Status;

/// Why an API key was refused. Each text is safe to show: it names the
/// problem, never the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyRejection {
    /// No `authorization: Bearer` metadata.
    #[error("missing API key: send it as `authorization: Bearer <api key>` metadata")]
    Missing,
    /// Not of the API key form.
    #[error("not a devicelink API key")]
    Malformed,
    /// Of the right form but with a wrong checksum: a typo or a truncation.
    #[error("API key checksum does not match; check that the key was copied whole")]
    BadChecksum,
    /// No stored key has this id, or its secret differs.
    #[error("API key is not recognised")]
    Unknown,
    /// The key was revoked.
    #[error("API key is revoked")]
    Revoked,
    /// The key is past its expiry.
    #[error("API key has expired")]
    Expired,
}

/// Which store failed, as named in UNAVAILABLE messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// Postgres, where API keys live.
    Postgres,
    /// Redis, where codes live.
    Redis,
}

impl StoreKind {
    fn name(self) -> &'static str {
        match self {
            Self::Postgres => "Postgres",
            Self::Redis => "Redis",
        }
    }
}

/// A boxed cause, kept for the logs.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why a mint request failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthCodeError {
    /// The API key is missing or not valid.
    #[error("{0}")]
    Unauthenticated(KeyRejection),
    /// The key is valid but lacks the scope the call needs.
    #[error("API key lacks the `{0}` scope")]
    MissingScope(&'static str),
    /// The request names an app other than the key's.
    #[error("app_id is not the app of the API key")]
    WrongApp,
    /// Fields that failed validation.
    #[error("invalid request")]
    InvalidArgument(Vec<FieldViolation>),
    /// A store cannot be reached or did not answer in time; nothing was
    /// written and the request can be retried.
    #[error("{} unavailable", .store.name())]
    Unavailable {
        /// The store at fault.
        store: StoreKind,
        /// What the client reported.
        #[source]
        cause: Cause,
    },
    /// A rate limit refused the call (see [`crate::limits`]); nothing was
    /// stored.
    #[error("rate limited")]
    RateLimited(Refusal),
    /// Anything else: a bug or an unexpected store answer.
    #[error("unexpected error")]
    Internal(#[source] Cause),
}

impl AuthCodeError {
    /// A store call that ran out of [`STORE_TIMEOUT`].
    pub fn timed_out(store: StoreKind) -> Self {
        Self::Unavailable {
            store,
            cause: format!("no answer within {STORE_TIMEOUT:?}").into(),
        }
    }

    /// A Redis failure. Every Redis error authcode can meet (connection
    /// refused, dropped, timed out, a read-only replica, out of memory) is
    /// one the client can retry.
    pub fn redis(error: redis::RedisError) -> Self {
        Self::Unavailable {
            store: StoreKind::Redis,
            cause: Box::new(error),
        }
    }

    /// A Postgres failure: an outage when the connection broke or the
    /// server is going away, a bug otherwise.
    pub fn postgres(error: tokio_postgres::Error) -> Self {
        if is_unreachable(&error) {
            Self::Unavailable {
                store: StoreKind::Postgres,
                cause: Box::new(error),
            }
        } else {
            Self::Internal(Box::new(error))
        }
    }

    /// A Postgres call that returned no answer: out of time (the statement
    /// was cancelled, worth a retry), or sent on a retired connection (a
    /// bug).
    pub fn postgres_call(error: CallError) -> Self {
        match error {
            CallError::TimedOut(_) => Self::Unavailable {
                store: StoreKind::Postgres,
                cause: Box::new(error),
            },
            CallError::Retired => Self::Internal(Box::new(error)),
        }
    }

    /// A failure to get a pooled connection: a full pool or a server that
    /// does not accept connections, both worth a retry.
    pub fn pool(error: deadpool_postgres::PoolError) -> Self {
        match error {
            deadpool_postgres::PoolError::Backend(error) => Self::postgres(error),
            other => Self::Unavailable {
                store: StoreKind::Postgres,
                cause: Box::new(other),
            },
        }
    }

    /// An unexpected condition described in words.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::Internal(message.into().into())
    }
}

impl From<FieldViolation> for AuthCodeError {
    fn from(violation: FieldViolation) -> Self {
        Self::InvalidArgument(vec![violation])
    }
}

impl From<AuthCodeError> for Status {
    fn from(error: AuthCodeError) -> Self {
        match error {
            AuthCodeError::Unauthenticated(rejection) => {
                Status::unauthenticated(rejection.to_string())
            }
            error @ (AuthCodeError::MissingScope(_) | AuthCodeError::WrongApp) => {
                Status::permission_denied(error.to_string())
            }
            AuthCodeError::InvalidArgument(violations) => invalid_argument(&violations),
            AuthCodeError::Unavailable { store, cause } => {
                count_store_error(match store {
                    StoreKind::Postgres => metrics_store::POSTGRES,
                    StoreKind::Redis => metrics_store::REDIS,
                });
                unavailable(store.name(), &*cause)
            }
            AuthCodeError::RateLimited(refusal) => rate_limited(&refusal),
            error @ AuthCodeError::Internal(_) => internal(&error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    const SECRET: &str =
        "dlk_aaaaaaaaaaaaaaaa.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbcccccc";

    fn status_of(error: AuthCodeError) -> Status {
        Status::from(error)
    }

    #[test]
    fn key_rejections_are_unauthenticated_and_readable() {
        for rejection in [
            KeyRejection::Missing,
            KeyRejection::Malformed,
            KeyRejection::BadChecksum,
            KeyRejection::Unknown,
            KeyRejection::Revoked,
            KeyRejection::Expired,
        ] {
            let status = status_of(AuthCodeError::Unauthenticated(rejection));
            assert_eq!(status.code(), Code::Unauthenticated);
            assert!(status.message().contains("API key"), "{}", status.message());
        }
        let revoked = status_of(AuthCodeError::Unauthenticated(KeyRejection::Revoked));
        assert_eq!(revoked.message(), "API key is revoked");
    }

    #[test]
    fn scope_and_app_mismatches_are_permission_denied() {
        let scope = status_of(AuthCodeError::MissingScope("user_link"));
        assert_eq!(scope.code(), Code::PermissionDenied);
        assert!(scope.message().contains("user_link"));
        let app = status_of(AuthCodeError::WrongApp);
        assert_eq!(app.code(), Code::PermissionDenied);
        assert!(app.message().contains("app_id"));
    }

    #[test]
    fn bad_fields_are_invalid_argument_naming_the_field() {
        let status = status_of(FieldViolation::new("external_id", "is required").into());
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().contains("external_id"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn store_failures_are_unavailable_without_their_cause() {
        let redis = redis::RedisError::from(std::io::Error::other(format!("refused {SECRET}")));
        let status = status_of(AuthCodeError::redis(redis));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().contains("Redis"), "{}", status.message());
        assert!(!status.message().contains(SECRET));

        let status = status_of(AuthCodeError::timed_out(StoreKind::Postgres));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            status.message().contains("Postgres"),
            "{}",
            status.message()
        );

        let status = status_of(AuthCodeError::pool(deadpool_postgres::PoolError::Closed));
        assert_eq!(status.code(), Code::Unavailable);
    }

    #[test]
    fn rate_limited_is_resource_exhausted_with_its_retry_after() {
        use devicelink_shared::limits::Scope;
        let status = status_of(AuthCodeError::RateLimited(Refusal {
            scope: Scope::MintPerKey,
            retry_after: std::time::Duration::from_millis(1_500),
        }));
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status
                .metadata()
                .get("retry-after")
                .and_then(|value| value.to_str().ok()),
            Some("2")
        );
    }

    #[test]
    fn internal_errors_say_nothing_of_their_cause() {
        let status = status_of(AuthCodeError::internal(format!("broke on {SECRET}")));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }
}
