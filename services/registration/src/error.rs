//! registration's errors and their one mapping to `tonic::Status`.

use devicelink_shared::limits::{Refusal, rate_limited};
use devicelink_shared::metrics_catalog::{count_store_error, store as metrics_store};
use devicelink_shared::status::{internal, invalid_argument, unavailable};
use devicelink_shared::stores::is_unreachable;
use devicelink_shared::validate::{AppId, FieldViolation};
use tokio_postgres::error::SqlState;
use tonic::Status;

/// A store failure, classified by what the client can do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or is shutting down; nothing was written
    /// and the request can be retried.
    #[error("store unreachable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Transactions collided (deadlock or serialization failure); the
    /// transaction rolled back and may be run again.
    #[error("transaction conflict")]
    Conflict(#[source] tokio_postgres::Error),
    /// Anything else: a bug or an unexpected answer.
    #[error("unexpected store error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// A Redis failure: every Redis error devicelink can meet is an outage
    /// or a timeout.
    pub fn redis(error: redis::RedisError) -> Self {
        Self::Unavailable(Box::new(error))
    }

    /// An error that is not the store's but happened while using it.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::Internal(message.into().into())
    }

    /// A Postgres call that got no answer within its `deadline`
    /// (`DATABASE_CALL_TIMEOUT_MS`): the server may be stalled or waiting on
    /// a lock, and the call was abandoned (see [`crate::store`]).
    pub fn timed_out(deadline: std::time::Duration) -> Self {
        Self::Unavailable(format!("no answer from Postgres within {deadline:?}").into())
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> Self {
        let code = error.code();
        if code == Some(&SqlState::T_R_DEADLOCK_DETECTED)
            || code == Some(&SqlState::T_R_SERIALIZATION_FAILURE)
        {
            return Self::Conflict(error);
        }
        if is_unreachable(&error) {
            Self::Unavailable(Box::new(error))
        } else {
            Self::Internal(Box::new(error))
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        match error {
            deadpool_postgres::PoolError::Backend(error) => error.into(),
            other => Self::Unavailable(Box::new(other)),
        }
    }
}

/// Why a registration request failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    /// Fields that failed validation.
    #[error("invalid request")]
    InvalidArgument(Vec<FieldViolation>),
    /// No credential, or one that is malformed, unknown or no longer valid.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// A credential or code of another app.
    #[error("{0}")]
    PermissionDenied(&'static str),
    /// An unknown, expired or used code; an unknown app, key or user.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state, such as a device that
    /// still holds another user.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A rate limit refused the call (see [`crate::service::limits`]).
    #[error("rate limited")]
    RateLimited(Refusal),
    /// Too many watch streams are open (per install or per replica); the
    /// message names the cap.
    #[error("{0}")]
    TooManyWatchStreams(String),
    /// Postgres or Redis failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RegistrationError {
    /// One invalid field.
    pub fn invalid(field: &str, description: &str) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// No app with this id: a redemption's or an operator's.
    pub fn app_not_found(app_id: AppId) -> Self {
        Self::NotFound(format!("app {app_id} does not exist"))
    }
}

impl From<RegistrationError> for Status {
    fn from(error: RegistrationError) -> Self {
        match error {
            RegistrationError::InvalidArgument(violations) => invalid_argument(&violations),
            RegistrationError::Unauthenticated(message) => Status::unauthenticated(message),
            RegistrationError::PermissionDenied(message) => Status::permission_denied(message),
            RegistrationError::NotFound(message) => Status::not_found(message),
            RegistrationError::FailedPrecondition(message) => Status::failed_precondition(message),
            RegistrationError::RateLimited(refusal) => rate_limited(&refusal),
            RegistrationError::TooManyWatchStreams(message) => Status::resource_exhausted(message),
            RegistrationError::Store(StoreError::Unavailable(cause)) => {
                count_store_error(if cause.is::<redis::RedisError>() {
                    metrics_store::REDIS
                } else {
                    metrics_store::POSTGRES
                });
                unavailable("storage", &*cause)
            }
            RegistrationError::Store(StoreError::Conflict(cause)) => {
                tracing::warn!(error = %devicelink_shared::status::error_chain(&cause), "transaction conflict persisted");
                Status::aborted("the request collided with a concurrent one; retry it")
            }
            RegistrationError::Store(StoreError::Internal(cause)) => internal(&*cause),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn each_class_has_its_code() {
        let cases = [
            (
                RegistrationError::invalid("app_id", "must be a UUID"),
                Code::InvalidArgument,
            ),
            (
                RegistrationError::Unauthenticated("install token is unknown"),
                Code::Unauthenticated,
            ),
            (
                RegistrationError::PermissionDenied("another app"),
                Code::PermissionDenied,
            ),
            (
                RegistrationError::NotFound("auth code is unknown".into()),
                Code::NotFound,
            ),
            (
                RegistrationError::FailedPrecondition("device".into()),
                Code::FailedPrecondition,
            ),
            (
                StoreError::Unavailable("down".into()).into(),
                Code::Unavailable,
            ),
            (
                StoreError::timed_out(std::time::Duration::from_secs(2)).into(),
                Code::Unavailable,
            ),
            (
                RegistrationError::RateLimited(Refusal {
                    scope: devicelink_shared::limits::Scope::InstallPerToken,
                    retry_after: std::time::Duration::from_secs(3),
                }),
                Code::ResourceExhausted,
            ),
            (
                StoreError::internal("bug with secret-ish detail").into(),
                Code::Internal,
            ),
        ];
        for (error, code) in cases {
            let status = Status::from(error);
            assert_eq!(status.code(), code);
            assert!(!status.message().contains("secret-ish"));
        }
    }
}
