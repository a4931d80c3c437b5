//! RESOURCE_EXHAUSTED as clients and the gateway read it.

use std::time::Duration;

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::script::Refusal;

/// RESOURCE_EXHAUSTED for a refused call: a message naming the limit, a
/// `google.rpc.RetryInfo` detail with the exact delay, a
/// `google.rpc.QuotaFailure` detail naming the scope, and `retry-after`
/// metadata in whole seconds (rounded up, at least 1), which the gateway
/// turns into HTTP 429's `Retry-After`.
pub fn rate_limited(refusal: &Refusal) -> Status {
    let seconds = retry_after_seconds(refusal.retry_after);
    let message = format!(
        "rate limited: {}; retry in {seconds} s",
        refusal.scope.description()
    );
    let mut details = ErrorDetails::with_retry_info(Some(refusal.retry_after));
    details.add_quota_failure_violation(refusal.scope.name(), refusal.scope.description());
    let mut metadata = MetadataMap::new();
    metadata.insert("retry-after", MetadataValue::from(seconds));
    Status::with_error_details_and_metadata(Code::ResourceExhausted, message, details, metadata)
}

/// A delay as HTTP's `Retry-After` counts it: whole seconds, rounded up,
/// never 0 (which would invite an immediate retry that is refused again).
pub fn retry_after_seconds(delay: Duration) -> u64 {
    let whole = delay.as_secs();
    let rounded = if delay.subsec_nanos() > 0 {
        whole + 1
    } else {
        whole
    };
    rounded.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Scope;

    #[test]
    fn the_status_carries_retry_info_quota_failure_and_retry_after() {
        let status = rate_limited(&Refusal {
            scope: Scope::MintPerExternalId,
            retry_after: Duration::from_millis(5_200),
        });
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(
            status.message().contains("external id"),
            "{}",
            status.message()
        );
        assert!(status.message().contains("6 s"), "{}", status.message());
        assert_eq!(
            status
                .metadata()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("6")
        );
        let details = status.get_error_details();
        let retry = details.retry_info().expect("a RetryInfo detail");
        assert_eq!(retry.retry_delay, Some(Duration::from_millis(5_200)));
        let quota = details.quota_failure().expect("a QuotaFailure detail");
        assert_eq!(quota.violations.len(), 1);
        assert_eq!(quota.violations[0].subject, "mint_per_external_id");
    }

    #[test]
    fn retry_after_rounds_up_to_a_whole_second_and_never_says_zero() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_micros(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1_001)), 2);
        assert_eq!(retry_after_seconds(Duration::from_secs(60)), 60);
    }
}
