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
        if inner.by_token.len() >= MAX_ENTRIES {
            inner.by_token.clear();
            inner.token_of_install.clear();
        }
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
}
