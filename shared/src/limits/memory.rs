//! The same GCRA in this replica's memory, for when Redis cannot answer.
//!
//! Each replica then enforces every limit on its own, so N replicas allow
//! up to N times the rate: looser than Redis, far better than refusing
//! everyone or limiting no one. `governor` 0.10 was not used: its keyed
//! limiter holds one quota for all keys, where ours differ per call (per
//! app, later), and it bounds memory only when told to shrink.
//!
//! Memory is bounded: at most [`MAX_ENTRIES`] subjects. An entry whose TAT
//! has passed means nothing (a fresh subject behaves the same), so the
//! table drops those whenever it has doubled since it last did: it stays
//! within about twice the subjects seen within a limit's window, rather
//! than filling up with every device and token that ever called (which
//! made a 30-minute soak's RSS climb until the table was full, and then a
//! sweep of all of it pause calls for milliseconds). If callers flood it
//! with live subjects faster than they expire, a full table drops the half
//! closest to expiring, which at worst forgets some limits early rather
//! than growing without end.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::keys::{Limit, LimitKey};
use super::script::{Decision, Refusal};
use crate::sweep::SweepSchedule;

/// The most subjects one replica remembers while Redis is away.
pub const MAX_ENTRIES: usize = 100_000;

/// What [`MemoryLimiter::first_look`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstLook {
    /// Counted here, and far enough below every limit to be allowed
    /// without asking Redis.
    FarBelow {
        /// The limits whose subject this replica had no entry for before
        /// the call (never seen, or dropped since its TAT passed).
        fresh: FreshSubjects,
    },
    /// Counted here, but close enough to a limit that Redis must decide.
    Near,
    /// This replica alone has used up a limit: refused, nothing counted.
    Refused(Refusal),
}

/// Which of a call's limits (by position) were fresh to this replica: it
/// had no entry for their subject before the call. A subject it keeps
/// seeing (an API key) has one, even between calls further apart than its
/// emission interval, until a sweep drops it. Limits past the 64th are
/// never marked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FreshSubjects(u64);

impl FreshSubjects {
    /// Whether the limit at `index` was fresh.
    pub fn contains(self, index: usize) -> bool {
        index < 64 && self.0 & (1 << index) != 0
    }

    fn insert(&mut self, index: usize) {
        if index < 64 {
            self.0 |= 1 << index;
        }
    }
}

/// A bounded map from subject to theoretical arrival time.
#[derive(Debug)]
pub struct MemoryLimiter {
    /// Instants are kept as offsets from this one, in a `Duration`.
    epoch: Instant,
    max_entries: usize,
    tats: Mutex<Table>,
}

/// The subjects' TATs, and when expired ones are next dropped.
#[derive(Debug)]
struct Table {
    tats: HashMap<LimitKey, Duration>,
    /// When the next new subject first drops the expired ones.
    sweeps: SweepSchedule,
}

impl Table {
    /// Makes room for one more subject, as the module says.
    fn make_room(&mut self, max_entries: usize, now: Duration) {
        let full = self.tats.len();
        if full >= max_entries {
            make_room(&mut self.tats, now);
        } else if self.sweeps.due(full) {
            self.tats.retain(|_, tat| *tat > now);
        } else {
            return;
        }
        if let Some(capacity) = self.sweeps.swept(self.tats.len(), self.tats.capacity()) {
            self.tats.shrink_to(capacity);
        }
    }
}

/// An allowed call, as [`MemoryLimiter::count`] saw it.
struct Counted {
    /// Every limit within half its burst window after the call.
    far_below: bool,
    fresh: FreshSubjects,
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        Self::with_capacity(MAX_ENTRIES)
    }
}

impl MemoryLimiter {
    /// A limiter remembering at most `max_entries` subjects (at least 2).
    pub fn with_capacity(max_entries: usize) -> Self {
        Self {
            epoch: Instant::now(),
            max_entries: max_entries.max(2),
            tats: Mutex::new(Table {
                tats: HashMap::new(),
                sweeps: SweepSchedule::default(),
            }),
        }
    }

    /// Decides as the Redis script does: the call counts against
    /// `consumed` and is refused if one more call would exceed `peeked`;
    /// when one limit refuses, none is consumed.
    pub fn decide(&self, consumed: &[Limit], peeked: &[Limit]) -> Decision {
        match self.count(consumed, peeked) {
            Ok(_) => Decision::Allowed,
            Err(refusal) => Decision::Limited(refusal),
        }
    }

    /// The replica's own first look at a call limited in memory first
    /// ([`super::RateLimiter::check_in_memory_first`]): refused when this
    /// replica alone has used up a limit (nothing counted); otherwise
    /// counted here, and [`FirstLook::FarBelow`] while every limit stays
    /// within half its burst window, so that the caller may skip Redis.
    pub fn first_look(&self, consumed: &[Limit]) -> FirstLook {
        match self.count(consumed, &[]) {
            Err(refusal) => FirstLook::Refused(refusal),
            Ok(counted) if counted.far_below => FirstLook::FarBelow {
                fresh: counted.fresh,
            },
            Ok(_) => FirstLook::Near,
        }
    }

    /// [`decide`](Self::decide), under one lock, telling an allowed call
    /// how far below its limits it is and which subjects were fresh.
    fn count(&self, consumed: &[Limit], peeked: &[Limit]) -> Result<Counted, Refusal> {
        let now = self.epoch.elapsed();
        // A poisoned lock only means another call panicked mid-update of a
        // number; the map itself is still sound.
        let mut table = self
            .tats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut refusal: Option<Refusal> = None;
        let mut counted = Counted {
            far_below: true,
            fresh: FreshSubjects::default(),
        };
        let mut new_tats = Vec::with_capacity(consumed.len());
        for (index, limit) in consumed.iter().chain(peeked).enumerate() {
            let known = table.tats.get(&limit.key).copied();
            if known.is_none() {
                counted.fresh.insert(index);
            }
            let new_tat = known.unwrap_or(now).max(now) + limit.rate.emission_interval();
            let ahead = new_tat - now;
            let wait = ahead.saturating_sub(limit.rate.burst_window());
            if !wait.is_zero() && refusal.is_none_or(|worst| wait > worst.retry_after) {
                refusal = Some(Refusal {
                    scope: limit.key.scope(),
                    retry_after: wait,
                });
            }
            counted.far_below &= ahead <= limit.rate.burst_window() / 2;
            new_tats.push(new_tat);
        }
        if let Some(refusal) = refusal {
            return Err(refusal);
        }
        for (limit, new_tat) in consumed.iter().zip(new_tats) {
            if let Some(tat) = table.tats.get_mut(&limit.key) {
                *tat = new_tat;
            } else {
                table.make_room(self.max_entries, now);
                table.tats.insert(limit.key.clone(), new_tat);
            }
        }
        Ok(counted)
    }

    /// How many subjects are remembered.
    pub fn len(&self) -> usize {
        self.tats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .tats
            .len()
    }

    /// Whether no subject is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drops every entry of a full table whose TAT has passed; if that frees
/// less than a quarter of the table, keeps only the half furthest from
/// expiring. Either way the next quarter of inserts need no sweep, so the
/// cost is amortised.
fn make_room(tats: &mut HashMap<LimitKey, Duration>, now: Duration) {
    let full = tats.len();
    tats.retain(|_, tat| *tat > now);
    if tats.len() > full - full / 4 {
        let mut by_tat: Vec<Duration> = tats.values().copied().collect();
        let half = by_tat.len() / 2;
        let (_, median, _) = by_tat.select_nth_unstable(half);
        let median = *median;
        tats.retain(|_, tat| *tat > median);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{Rate, Scope};
    use crate::sweep::SWEEP_FLOOR;

    fn limit(token: &str, rate: &str) -> Limit {
        Limit::new(
            LimitKey::install_per_token(token.as_bytes()),
            Rate::parse_setting(rate).expect("parses"),
        )
        .expect("not off")
    }

    #[test]
    fn a_burst_is_allowed_then_refused_with_the_wait() {
        let limiter = MemoryLimiter::default();
        let per_minute = limit("a", "60/min,burst=3");
        for _ in 0..3 {
            assert!(
                limiter
                    .decide(std::slice::from_ref(&per_minute), &[])
                    .is_allowed()
            );
        }
        let Decision::Limited(refusal) = limiter.decide(&[per_minute], &[]) else {
            panic!("the fourth call is refused");
        };
        assert_eq!(refusal.scope, Scope::InstallPerToken);
        assert!(refusal.retry_after <= Duration::from_secs(1));
        assert!(refusal.retry_after > Duration::from_millis(900));
    }

    #[test]
    fn a_refused_scope_consumes_none_of_the_others() {
        let limiter = MemoryLimiter::default();
        let tight = limit("tight", "1/h,burst=1");
        let loose = limit("loose", "2/h,burst=2");
        assert!(
            limiter
                .decide(&[tight.clone(), loose.clone()], &[])
                .is_allowed()
        );
        assert!(
            !limiter
                .decide(&[tight.clone(), loose.clone()], &[])
                .is_allowed()
        );
        assert!(!limiter.decide(&[tight, loose.clone()], &[]).is_allowed());
        // `loose` was consumed once only: one call of its two is left.
        assert!(
            limiter
                .decide(std::slice::from_ref(&loose), &[])
                .is_allowed()
        );
        assert!(!limiter.decide(&[loose], &[]).is_allowed());
    }

    #[test]
    fn looking_consumes_nothing() {
        let limiter = MemoryLimiter::default();
        let once = limit("once", "1/h,burst=1");
        for _ in 0..5 {
            assert!(
                limiter
                    .decide(&[], std::slice::from_ref(&once))
                    .is_allowed()
            );
        }
        assert!(limiter.is_empty());
    }

    #[test]
    fn the_table_never_outgrows_its_capacity() {
        let limiter = MemoryLimiter::with_capacity(64);
        for n in 0..10_000 {
            let subject = limit(&n.to_string(), "1/h,burst=1");
            assert!(limiter.decide(&[subject], &[]).is_allowed());
            assert!(limiter.len() <= 64, "{} entries", limiter.len());
        }
        // The latest subjects are still limited.
        assert!(
            !limiter
                .decide(&[limit("9999", "1/h,burst=1")], &[])
                .is_allowed()
        );
    }

    #[test]
    fn expired_subjects_are_dropped_long_before_the_table_is_full() {
        let limiter = MemoryLimiter::default();
        // Every subject calls once and expires at once (a window of a
        // millisecond), as devices and tokens seen once do after theirs.
        for n in 0..20_000 {
            let subject = limit(&n.to_string(), "1000/s,burst=1");
            assert!(limiter.decide(&[subject], &[]).is_allowed());
            if n % 1000 == 999 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        assert!(
            limiter.len() <= 2 * SWEEP_FLOOR,
            "{} subjects remembered of 20,000 long expired",
            limiter.len()
        );
    }

    #[test]
    fn live_subjects_survive_the_sweeps() {
        let limiter = MemoryLimiter::default();
        for n in 0..5_000 {
            assert!(
                limiter
                    .decide(&[limit(&n.to_string(), "1/h,burst=1")], &[])
                    .is_allowed()
            );
        }
        for n in 0..5_000 {
            assert!(
                !limiter
                    .decide(&[limit(&n.to_string(), "1/h,burst=1")], &[])
                    .is_allowed(),
                "subject {n} was forgotten while still limited"
            );
        }
    }
}
