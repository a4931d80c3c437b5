//! Periodic clean-up of redemption records that no longer protect
//! anything, and of audit events past their retention
//! (`AUDIT_RETENTION_DAYS`).
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
/// The audit retention of a configuration that names none (90 days, the
/// `AUDIT_RETENTION_DAYS` default).
pub const DEFAULT_AUDIT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// How many audit events one purge statement deletes: small enough to hold
/// its locks briefly, and well under the store deadline.
pub const AUDIT_PURGE_BATCH: i64 = 1000;
/// The most batches one run deletes; the rest waits for the next run, so a
/// backlog (retention shortened, a long outage) drains without a long burst.
const AUDIT_PURGE_BATCHES_PER_RUN: usize = 100;

/// How often the janitor runs.
const INTERVAL: Duration = Duration::from_secs(600);

/// Purges old redemption records every `INTERVAL` (ten minutes) until the service
/// drains.
pub fn spawn_janitor(store: Store, audit_retention: Duration, mut drain: DrainSignal) {
    tokio::spawn(async move {
        loop {
            purge_audit_events(&store, audit_retention).await;
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

/// Deletes audit events older than `retention`, a batch at a time.
async fn purge_audit_events(store: &Store, retention: Duration) {
    let mut purged = 0;
    for _ in 0..AUDIT_PURGE_BATCHES_PER_RUN {
        match store.purge_audit_events(retention, AUDIT_PURGE_BATCH).await {
            Ok(deleted) => {
                purged += deleted;
                if deleted < AUDIT_PURGE_BATCH.unsigned_abs() {
                    break;
                }
            }
            Err(error) => {
                tracing::warn!(error = %devicelink_shared::status::error_chain(&error), "audit event purge failed");
                break;
            }
        }
    }
    if purged > 0 {
        tracing::info!(purged, "audit events past their retention purged");
    }
}
