//! Wakes each watch stream for the changes of its own install only.
//!
//! A replica may hold thousands of watch streams while Postgres announces
//! a hundred changes a second. Broadcasting every change to every stream
//! (as this replica once did) costs streams × changes wake-ups, each
//! only to find the change was another install's: at 1,000 streams and
//! 150 changes a second that alone took a fifth of a core. Here a change
//! wakes the streams of its install, found in a map, and a resync (the
//! listener reconnected, changes may have been missed) wakes them all.
//!
//! Each install's signal is a `watch` channel of `()`: it carries no
//! value, only "changed since you last looked", so several changes before
//! a stream gets to them wake it once (it re-reads the status anyway) and
//! no stream can fall behind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;
use uuid::Uuid;

/// The signals of the installs watched on this replica.
#[derive(Debug, Clone)]
pub struct StatusFanout {
    shared: Arc<Signals>,
}

#[derive(Debug)]
struct Signals {
    /// One signal per install with a subscription; an entry lives exactly
    /// as long as its install has one, so the map never outgrows the
    /// streams.
    by_install: Mutex<HashMap<Uuid, watch::Sender<()>>>,
    resync: watch::Sender<()>,
}

impl Default for StatusFanout {
    fn default() -> Self {
        Self {
            shared: Arc::new(Signals {
                by_install: Mutex::new(HashMap::new()),
                resync: watch::Sender::new(()),
            }),
        }
    }
}

impl StatusFanout {
    /// Wakes the subscriptions of `install_id`, if it has any.
    pub fn changed(&self, install_id: Uuid) {
        if let Some(signal) = self.lock().get(&install_id) {
            signal.send_modify(|()| {});
        }
    }

    /// Wakes every subscription: changes may have been missed.
    pub fn resync(&self) {
        self.shared.resync.send_modify(|()| {});
    }

    /// Subscribes to the changes of `install_id` (and resyncs) from now on.
    pub fn subscribe(&self, install_id: Uuid) -> StatusSubscription {
        let changed = self
            .lock()
            .entry(install_id)
            .or_insert_with(|| watch::Sender::new(()))
            .subscribe();
        StatusSubscription {
            fanout: self.clone(),
            install_id,
            changed: Some(changed),
            resync: self.shared.resync.subscribe(),
        }
    }

    /// Installs with a subscription.
    pub fn watched_installs(&self) -> usize {
        self.lock().len()
    }

    /// The map is whole after every change made under the lock, so a
    /// holder that panicked leaves nothing half done.
    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, watch::Sender<()>>> {
        self.shared
            .by_install
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// One watch stream's subscription; dropping it removes its install's
/// signal once no other subscription holds it.
#[derive(Debug)]
pub struct StatusSubscription {
    fanout: StatusFanout,
    install_id: Uuid,
    /// `Some` until dropped: taken first in `drop`, so that the count of
    /// receivers it then reads no longer includes this one.
    changed: Option<watch::Receiver<()>>,
    resync: watch::Receiver<()>,
}

impl StatusSubscription {
    /// Waits until the install changed or a resync was asked for, since
    /// the subscription was made or this last returned.
    pub async fn changed(&mut self) {
        let Some(changed) = self.changed.as_mut() else {
            return;
        };
        // Neither sender is dropped while this subscription lives (the
        // install's is removed only once it has no receiver, the resync's
        // lives as long as the fanout), so neither wait can fail.
        tokio::select! {
            _ = changed.changed() => {}
            _ = self.resync.changed() => {}
        }
        changed.mark_unchanged();
        self.resync.mark_unchanged();
    }
}

impl Drop for StatusSubscription {
    fn drop(&mut self) {
        let mut by_install = self.fanout.lock();
        drop(self.changed.take());
        if by_install
            .get(&self.install_id)
            .is_some_and(|signal| signal.receiver_count() == 0)
        {
            by_install.remove(&self.install_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Whether `subscription` is woken within a moment.
    async fn woken(subscription: &mut StatusSubscription) -> bool {
        tokio::time::timeout(Duration::from_millis(50), subscription.changed())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_change_wakes_the_subscriptions_of_its_install_only() {
        let fanout = StatusFanout::default();
        let (watched, other) = (Uuid::now_v7(), Uuid::now_v7());
        let mut first = fanout.subscribe(watched);
        let mut second = fanout.subscribe(watched);
        let mut elsewhere = fanout.subscribe(other);
        fanout.changed(watched);
        assert!(woken(&mut first).await);
        assert!(woken(&mut second).await);
        assert!(!woken(&mut elsewhere).await, "another install's change");
        assert!(!woken(&mut first).await, "one change wakes once");
    }

    #[tokio::test]
    async fn changes_before_the_wait_wake_it_once_and_none_is_lost() {
        let fanout = StatusFanout::default();
        let watched = Uuid::now_v7();
        let mut subscription = fanout.subscribe(watched);
        fanout.changed(watched);
        fanout.changed(watched);
        assert!(woken(&mut subscription).await);
        assert!(!woken(&mut subscription).await);
    }

    #[tokio::test]
    async fn a_resync_wakes_every_subscription() {
        let fanout = StatusFanout::default();
        let mut subscriptions: Vec<_> = (0..3).map(|_| fanout.subscribe(Uuid::now_v7())).collect();
        fanout.resync();
        for subscription in &mut subscriptions {
            assert!(woken(subscription).await);
            assert!(!woken(subscription).await);
        }
    }

    #[tokio::test]
    async fn an_install_is_forgotten_when_its_last_subscription_ends() {
        let fanout = StatusFanout::default();
        let watched = Uuid::now_v7();
        let first = fanout.subscribe(watched);
        let mut second = fanout.subscribe(watched);
        drop(first);
        assert_eq!(fanout.watched_installs(), 1, "the second still watches");
        fanout.changed(watched);
        assert!(woken(&mut second).await);
        drop(second);
        assert_eq!(fanout.watched_installs(), 0);
        fanout.changed(watched);
        assert_eq!(fanout.watched_installs(), 0, "a change adds no entry");
    }
}
