//! Periodic clean-up of redemption records that no longer protect anything.
//!
//! A `redeemed_codes` row keeps a code single-use and, until the code's own
//! expiry, answers a retry from the redeeming device. Once
//! the code can no longer be live in Redis (its TTL is at most an hour, and
//! the `DEL` after a redemption may have failed), the row has done its job.
//! Rows are kept for a day, far past that, then deleted in small batches so
//! the purge never holds long locks. A code's replays (`code_replays`) go
//! with its row (`ON DELETE CASCADE`). Each batch is a call under the store
//! deadline; a purge that fails is logged and tried again next interval.
//! Every replica runs the janitor; the deletes are idempotent, so that is
//! harmless.

use std::time::Duration;

use devicelink_shared::serving::DrainSignal;

use crate::store::Store;

/// How long a redemption record is kept.
pub const REDEMPTION_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How often the janitor runs.
const INTERVAL: Duration = Duration::from_secs(600);

/// Purges old redemption records every `INTERVAL` (ten minutes) until the service
/// drains.
pub fn spawn_janitor(store: Store, mut drain: DrainSignal) {
    tokio::spawn(async move {
        loop {
            match store.purge_redemptions(REDEMPTION_RETENTION).await {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "old redemption records purged"),
                Err(error) => {
                    tracing::warn!(error = %devicelink_shared::status::error_chain(&error), "redemption purge failed")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(INTERVAL) => {}
                () = drain.requested() => return,
            }
        }
    });
}
