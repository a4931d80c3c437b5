//! An in-memory cache of install statuses by token, for `GetInstallStatus`,
//! the call every SDK makes most often.
//!
//! It is only as fresh as the change notifications make it: every status
//! change is announced with `pg_notify` in its own transaction (see
//! [`crate::notify`]), and each announcement evicts that install here. So
//! that a read racing a change can never put a stale status back, every
//! eviction bumps a generation, and a status read from Postgres is cached
//! only if no eviction happened since the read began. While the listener is
//! disconnected, announcements may be missed: the cache is then emptied and
//! bypassed until the listener is back. A replica evicts its own changes at
//! once, without waiting for its own announcement.
//!
//! A listener can also go silent without disconnecting (a partition: the
//! socket stays open, nothing arrives), and it then misses announcements
//! without knowing it. So the listener reports every sign of life (a
//! heartbeat answered, a notification received), and the cache is trusted
//! only for [`TRUSTED_FOR`] after the last one: past that it is bypassed,
//! as if the listener were disconnected, until the listener proves itself
//! again. A replica therefore never answers from its cache more than
//! [`TRUSTED_FOR`] (plus the time to send the answer) after its listener
//! last proved it received what Postgres sent.
//!
//! One cache per replica, shared (`Arc`) by the listener that evicts and
//! the handler that reads, evicts its own changes and fills it.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use devicelink_shared::sweep::SweepSchedule;
use uuid::Uuid;

use crate::domain::InstallStatus;

/// How long an entry is trusted at most, whatever the notifications say.
const MAX_AGE: Duration = Duration::from_secs(30);
/// How long after the listener's last sign of life the cache is trusted:
/// longer than one heartbeat period and its deadline together
/// ([`crate::notify`]), so that a healthy listener never lets it lapse,
/// and short enough that the bound stated in the README (two seconds)
/// holds with room for the answer to be sent.
pub const TRUSTED_FOR: Duration = Duration::from_millis(1500);
/// The most entries kept; past that the cache starts over.
const MAX_ENTRIES: usize = 100_000;

/// A token's hash, as stored.
type TokenHash = [u8; 32];

/// Install statuses by token hash, evicted by change notifications.
#[derive(Debug, Default)]
pub struct StatusCache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Whether change notifications are being received.
    listening: bool,
    /// When the listener last proved its connection delivers.
    alive_at: Option<Instant>,
    /// Bumped by every eviction.
    generation: u64,
    by_token: HashMap<TokenHash, (InstallStatus, Instant)>,
    token_of_install: HashMap<Uuid, TokenHash>,
    /// When the next insert first drops the entries past [`MAX_AGE`].
    /// Without it, statuses
    /// read once and never changed again (a superseded install an SDK
    /// still polls) stayed until the cache was full, and a replica's
    /// memory grew for as long as its traffic brought new tokens.
    sweeps: SweepSchedule,
}

/// Where a read started, to cache its result only if nothing changed since.
#[derive(Debug, Clone, Copy)]
pub struct ReadTicket(u64);

impl StatusCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached status of the install holding `token_hash`, if fresh; else
    /// a ticket for caching what Postgres will say (`None` while
    /// notifications are not being received).
    pub fn get(&self, token_hash: &TokenHash) -> Result<InstallStatus, Option<ReadTicket>> {
        let inner = self.lock();
        if !inner.trusted() {
            return Err(None);
        }
        match inner.by_token.get(token_hash) {
            Some((status, cached_at)) if cached_at.elapsed() < MAX_AGE => {
                metrics::counter!(devicelink_shared::metrics_catalog::STATUS_CACHE_HITS)
                    .increment(1);
                Ok(status.clone())
            }
            _ => Err(Some(ReadTicket(inner.generation))),
        }
    }

    /// Caches a status read from Postgres, unless anything was evicted since
    /// `ticket` was taken.
    pub fn insert(&self, ticket: ReadTicket, token_hash: TokenHash, status: &InstallStatus) {
        let mut inner = self.lock();
        if !inner.trusted() || inner.generation != ticket.0 {
            return;
        }
        inner.make_room();
        inner
            .token_of_install
            .insert(status.install_id.0, token_hash);
        inner
            .by_token
            .insert(token_hash, (status.clone(), Instant::now()));
    }

    /// Forgets the status of an install whose status changed.
    pub fn evict(&self, install_id: Uuid) {
        let mut inner = self.lock();
        inner.generation += 1;
        if let Some(token_hash) = inner.token_of_install.remove(&install_id) {
            inner.by_token.remove(&token_hash);
        }
    }

    /// Notifications are (again) being received, or have stopped: either
    /// way, what is cached may have missed changes.
    pub fn set_listening(&self, listening: bool) {
        let mut inner = self.lock();
        inner.listening = listening;
        inner.alive_at = listening.then(Instant::now);
        inner.generation += 1;
        inner.by_token.clear();
        inner.token_of_install.clear();
    }

    /// The listener's connection just proved it delivers (a heartbeat was
    /// answered, a notification arrived): the cache is trusted for another
    /// [`TRUSTED_FOR`].
    pub fn mark_alive(&self) {
        let mut inner = self.lock();
        if inner.listening {
            inner.alive_at = Some(Instant::now());
        }
    }

    /// Whether the listener got as far as listening on its connection
    /// (which may have gone silent since).
    pub fn is_listening(&self) -> bool {
        self.lock().listening
    }

    /// Whether the listener is connected and proved it within
    /// [`TRUSTED_FOR`]: what the health service reports on.
    pub fn listener_alive(&self) -> bool {
        self.lock().trusted()
    }
}

impl Inner {
    /// Drops the entries no read would use any more once the cache has
    /// doubled since the last sweep, and starts over when it is full.
    fn make_room(&mut self) {
        let size = self.by_token.len();
        if size >= MAX_ENTRIES {
            self.by_token.clear();
            self.token_of_install.clear();
        } else if self.sweeps.due(size) {
            let now = Instant::now();
            let token_of_install = &mut self.token_of_install;
            self.by_token.retain(|_, (status, cached_at)| {
                let fresh = now.duration_since(*cached_at) < MAX_AGE;
                if !fresh {
                    token_of_install.remove(&status.install_id.0);
                }
                fresh
            });
        } else {
            return;
        }
        if let Some(capacity) = self
            .sweeps
            .swept(self.by_token.len(), self.by_token.capacity())
        {
            self.by_token.shrink_to(capacity);
            self.token_of_install.shrink_to(capacity);
        }
    }

    /// Whether what is cached can be believed now.
    fn trusted(&self) -> bool {
        self.listening
            && self
                .alive_at
                .is_some_and(|alive_at| alive_at.elapsed() < TRUSTED_FOR)
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use devicelink_shared::sweep::SWEEP_FLOOR;

    use super::*;
    use crate::domain::{InstallId, InstallState};

    fn status(install: u128) -> InstallStatus {
        InstallStatus {
            install_id: InstallId(Uuid::from_u128(install)),
            state: InstallState::Active,
            reason: None,
            epoch: 1,
            current_epoch: 1,
            changed_at: SystemTime::now(),
        }
    }

    /// A distinct token hash for each number.
    fn token(n: u128) -> TokenHash {
        let half = n.to_be_bytes();
        let mut token = [0; 32];
        token[..16].copy_from_slice(&half);
        token[16..].copy_from_slice(&half);
        token
    }

    #[test]
    fn nothing_is_cached_while_not_listening() {
        let cache = StatusCache::default();
        assert!(matches!(cache.get(&[1; 32]), Err(None)));
        cache.set_listening(true);
        let Err(Some(ticket)) = cache.get(&[1; 32]) else {
            panic!("a ticket")
        };
        cache.insert(ticket, [1; 32], &status(7));
        let cached = cache.get(&[1; 32]).expect("cached");
        assert_eq!(cached.install_id, InstallId(Uuid::from_u128(7)));
        cache.set_listening(false);
        assert!(matches!(cache.get(&[1; 32]), Err(None)));
    }

    #[test]
    fn a_silent_listener_is_trusted_no_longer_than_the_window() {
        let cache = StatusCache::default();
        cache.set_listening(true);
        let Err(Some(ticket)) = cache.get(&[4; 32]) else {
            panic!("a ticket")
        };
        cache.insert(ticket, [4; 32], &status(10));
        assert!(cache.get(&[4; 32]).is_ok());
        assert!(cache.listener_alive());
        std::thread::sleep(TRUSTED_FOR + Duration::from_millis(50));
        assert!(
            matches!(cache.get(&[4; 32]), Err(None)),
            "a listener silent for longer than the window is not believed"
        );
        assert!(!cache.listener_alive());
        cache.mark_alive();
        assert!(cache.get(&[4; 32]).is_ok(), "believed again once it speaks");
    }

    #[test]
    fn an_eviction_during_a_read_keeps_the_read_out() {
        let cache = StatusCache::default();
        cache.set_listening(true);
        let Err(Some(ticket)) = cache.get(&[2; 32]) else {
            panic!("a ticket")
        };
        cache.evict(Uuid::from_u128(99));
        cache.insert(ticket, [2; 32], &status(8));
        assert!(
            cache.get(&[2; 32]).is_err(),
            "a read that raced a change is not cached"
        );
    }

    #[test]
    fn evicting_an_install_forgets_its_token() {
        let cache = StatusCache::default();
        cache.set_listening(true);
        let Err(Some(ticket)) = cache.get(&[3; 32]) else {
            panic!("a ticket")
        };
        cache.insert(ticket, [3; 32], &status(9));
        assert!(cache.get(&[3; 32]).is_ok());
        cache.evict(Uuid::from_u128(9));
        assert!(cache.get(&[3; 32]).is_err());
    }

    #[test]
    fn statuses_too_old_to_answer_are_dropped_long_before_the_cache_is_full() {
        let cache = StatusCache::default();
        cache.set_listening(true);
        let long_ago = Instant::now()
            .checked_sub(MAX_AGE + Duration::from_secs(1))
            .expect("the clock is past its first minute");
        {
            let mut inner = cache.lock();
            for install in 0..SWEEP_FLOOR as u128 {
                inner
                    .token_of_install
                    .insert(Uuid::from_u128(install), token(install));
                inner
                    .by_token
                    .insert(token(install), (status(install), long_ago));
            }
        }
        let fresh_token = [0xff; 32];
        let Err(Some(ticket)) = cache.get(&fresh_token) else {
            panic!("a ticket")
        };
        cache.insert(ticket, fresh_token, &status(u128::MAX));

        let inner = cache.lock();
        assert_eq!(inner.by_token.len(), 1, "only the fresh status is left");
        assert_eq!(inner.token_of_install.len(), 1);
        assert!(inner.by_token.contains_key(&fresh_token));
    }

    #[test]
    fn fresh_statuses_survive_the_sweeps() {
        let cache = StatusCache::default();
        cache.set_listening(true);
        for install in 0..(3 * SWEEP_FLOOR) as u128 {
            let Err(Some(ticket)) = cache.get(&token(install)) else {
                panic!("a ticket")
            };
            cache.insert(ticket, token(install), &status(install));
        }
        assert_eq!(cache.lock().by_token.len(), 3 * SWEEP_FLOOR);
        assert!(
            cache.get(&token(0)).is_ok(),
            "still answered from the cache"
        );
    }
}
