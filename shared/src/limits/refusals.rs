//! Refusals this replica already knows, so that a subject over its limit
//! is refused again without asking Redis until its retry time.
//!
//! GCRA only ever moves a subject's theoretical arrival time later: once
//! Redis says a subject may not call for `retry_after`, no call before then
//! can be allowed, whichever replica counts it. So a replica may answer
//! those calls itself. This is what keeps a flood cheap: an address blocked
//! by its failed credentials, or a key over its mint rate, costs a hash
//! lookup per call instead of a Redis round trip, and legitimate callers
//! keep the connection to Redis to themselves. The first call after the
//! retry time asks Redis again, which may extend the refusal (other
//! replicas counted failures meanwhile).
//!
//! Memory is bounded by [`MAX_ENTRIES`]: a full table drops the refusals
//! that have ended and, if that is not enough, stops remembering new ones
//! (those subjects are then decided in Redis, as before), so a flood of
//! ever-new subjects cannot grow it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::keys::{Limit, LimitKey};
use super::script::Refusal;

/// The most refusals one replica remembers.
pub const MAX_ENTRIES: usize = 50_000;

/// Subjects refused until an instant.
#[derive(Debug)]
pub struct KnownRefusals {
    max_entries: usize,
    /// Whether the table may hold anything: the common case (nobody over a
    /// limit) then takes no lock.
    occupied: AtomicBool,
    until: Mutex<HashMap<LimitKey, (Instant, Refusal)>>,
}

impl Default for KnownRefusals {
    fn default() -> Self {
        Self::with_capacity(MAX_ENTRIES)
    }
}

impl KnownRefusals {
    /// A table of at most `max_entries` refusals.
    pub fn with_capacity(max_entries: usize) -> Self {
        Self {
            max_entries,
            occupied: AtomicBool::new(false),
            until: Mutex::new(HashMap::new()),
        }
    }

    /// The refusal still in force for one of `limits` (the longest when
    /// several are), with the wait that remains.
    pub fn refusal<'a>(&self, limits: impl IntoIterator<Item = &'a Limit>) -> Option<Refusal> {
        if !self.occupied.load(Ordering::Relaxed) {
            return None;
        }
        let now = Instant::now();
        let table = self.lock();
        limits
            .into_iter()
            .filter_map(|limit| table.get(&limit.key))
            .filter(|(until, _)| *until > now)
            .map(|(until, refusal)| Refusal {
                scope: refusal.scope,
                retry_after: *until - now,
            })
            .max_by_key(|refusal| refusal.retry_after)
    }

    /// Remembers that Redis refused `key`'s subject for `refusal`'s retry
    /// time (or that it would refuse its next call).
    pub fn remember(&self, key: &LimitKey, refusal: Refusal) {
        let now = Instant::now();
        let mut table = self.lock();
        if table.len() >= self.max_entries && !table.contains_key(key) {
            table.retain(|_, (until, _)| *until > now);
            if table.len() >= self.max_entries {
                return;
            }
        }
        table.insert(key.clone(), (now + refusal.retry_after, refusal));
        self.occupied.store(true, Ordering::Relaxed);
    }

    /// How many refusals are remembered, ended ones included.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LimitKey, (Instant, Refusal)>> {
        // A poisoned lock only means another call panicked mid-insert; the
        // map itself is still sound.
        self.until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    use super::*;
    use crate::limits::{Rate, Scope};

    fn address_limit(last_octet: u8) -> Limit {
        Limit::new(
            LimitKey::failed_auth_per_address(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last_octet))),
            Rate::parse_setting("1/min").expect("a rate"),
        )
        .expect("a limit")
    }

    fn refused_for(retry_after: Duration) -> Refusal {
        Refusal {
            scope: Scope::FailedAuthPerAddress,
            retry_after,
        }
    }

    #[test]
    fn a_refusal_holds_until_its_retry_time_and_not_after() {
        let refusals = KnownRefusals::default();
        let blocked = address_limit(1);
        assert!(refusals.refusal([&blocked]).is_none());
        refusals.remember(&blocked.key, refused_for(Duration::from_millis(80)));
        let known = refusals.refusal([&blocked]).expect("still refused");
        assert_eq!(known.scope, Scope::FailedAuthPerAddress);
        assert!(known.retry_after <= Duration::from_millis(80));
        assert!(
            refusals.refusal([&address_limit(2)]).is_none(),
            "another address"
        );
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            refusals.refusal([&blocked]).is_none(),
            "the retry time passed"
        );
    }

    #[test]
    fn a_full_table_makes_room_from_ended_refusals_or_stops_growing() {
        let refusals = KnownRefusals::with_capacity(2);
        refusals.remember(&address_limit(1).key, refused_for(Duration::from_millis(1)));
        refusals.remember(&address_limit(2).key, refused_for(Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(5));
        refusals.remember(&address_limit(3).key, refused_for(Duration::from_secs(60)));
        assert_eq!(refusals.len(), 2, "the ended refusal made room");
        refusals.remember(&address_limit(4).key, refused_for(Duration::from_secs(60)));
        assert_eq!(refusals.len(), 2);
        assert!(
            refusals.refusal([&address_limit(4)]).is_none(),
            "not remembered"
        );
        assert!(refusals.refusal([&address_limit(3)]).is_some());
    }
}
