//! Feeding one `WatchInstallStatus` stream: the current status, then each
//! change announced for its install, until the install ends, the client
//! goes away or the server drains.
//!
//! Announcements only say which install changed ([`crate::notify`]), and
//! wake only that install's streams ([`crate::status_fanout`]); the
//! watcher re-reads the status from Postgres and sends it when it differs
//! from what the client last saw. A resync (the listener reconnected)
//! re-reads it too, so nothing is missed.
//!
//! Open streams are capped per install and per replica ([`WatchSlots`]):
//! each holds a task, a channel and an HTTP/2 stream, and a client could
//! otherwise open them until the replica runs out of memory. The feeding
//! task holds its stream's [`WatchSlot`], so the slot is given back however
//! the stream ends: client gone, install reset or erased, store error,
//! drain.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use devicelink_shared::pb;
use devicelink_shared::serving::DrainSignal;
use tokio::sync::mpsc;
use tonic::Status;
use uuid::Uuid;

use super::convert::install_status;
use crate::config::{WATCH_STREAMS_PER_INSTALL, WATCH_STREAMS_PER_REPLICA, WatchCaps};
use crate::domain::{InstallId, InstallState, InstallStatus};
use crate::error::RegistrationError;
use crate::status_fanout::StatusSubscription;
use crate::store::Store;

/// Where a watch stream's messages go.
pub type WatchSender = mpsc::Sender<Result<pb::WatchInstallStatusResponse, Status>>;

/// The watch streams open on this replica, counted against [`WatchCaps`].
#[derive(Debug)]
pub struct WatchSlots {
    caps: WatchCaps,
    open: Mutex<OpenStreams>,
}

/// Open streams, in all and by install. An install appears only while it
/// has a stream open, so the map never outgrows the streams themselves.
#[derive(Debug, Default)]
struct OpenStreams {
    total: usize,
    by_install: HashMap<Uuid, usize>,
}

impl WatchSlots {
    /// No stream open yet.
    pub fn new(caps: WatchCaps) -> Arc<Self> {
        Arc::new(Self {
            caps,
            open: Mutex::new(OpenStreams::default()),
        })
    }

    /// A slot for one more stream of `install_id`, or the refusal naming
    /// the cap it would pass.
    pub fn claim(self: &Arc<Self>, install_id: InstallId) -> Result<WatchSlot, RegistrationError> {
        let mut open = self.lock();
        if open.total >= self.caps.per_replica {
            return Err(RegistrationError::TooManyWatchStreams(format!(
                "this server has {} status watch streams open, its limit ({WATCH_STREAMS_PER_REPLICA}); retry later or on another server",
                self.caps.per_replica
            )));
        }
        let of_install = open.by_install.entry(install_id.0).or_default();
        if *of_install >= self.caps.per_install {
            return Err(RegistrationError::TooManyWatchStreams(format!(
                "this install already has {} status watch streams open, its limit ({WATCH_STREAMS_PER_INSTALL}); close one first",
                self.caps.per_install
            )));
        }
        *of_install += 1;
        open.total += 1;
        open_streams_gauge().increment(1.0);
        Ok(WatchSlot {
            slots: Arc::clone(self),
            install_id,
        })
    }

    fn release(&self, install_id: InstallId) {
        let mut open = self.lock();
        if let Some(of_install) = open.by_install.get_mut(&install_id.0) {
            *of_install -= 1;
            if *of_install == 0 {
                open.by_install.remove(&install_id.0);
            }
            open.total -= 1;
            open_streams_gauge().decrement(1.0);
        }
    }

    /// The counts stay right even if a holder panicked: each change is
    /// made whole under the lock.
    fn lock(&self) -> std::sync::MutexGuard<'_, OpenStreams> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Open watch streams. Moved by each claim and release rather than set, so
/// that replicas sharing a process (as in tests) add up.
fn open_streams_gauge() -> metrics::Gauge {
    metrics::gauge!(devicelink_shared::metrics_catalog::WATCH_STREAMS)
}

/// One open stream's place under the caps, given back when dropped.
#[derive(Debug)]
pub struct WatchSlot {
    slots: Arc<WatchSlots>,
    install_id: InstallId,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        self.slots.release(self.install_id);
    }
}

/// Feeds one watch stream.
pub struct Watcher {
    store: Store,
    install_id: InstallId,
    sender: WatchSender,
    drain: DrainSignal,
    /// Held for as long as the stream is fed: dropping the watcher, however
    /// `run` ends, frees the stream's place under the caps.
    _slot: WatchSlot,
}

impl Watcher {
    /// A watcher of `install_id`, sending on `sender` until `drain` fires,
    /// holding `slot` until it ends.
    pub fn new(
        store: Store,
        install_id: InstallId,
        sender: WatchSender,
        drain: DrainSignal,
        slot: WatchSlot,
    ) -> Self {
        Self {
            store,
            install_id,
            sender,
            drain,
            _slot: slot,
        }
    }

    /// Sends `last` (the status just read), then each change, until the
    /// install ends, the client goes away or the server drains.
    /// `subscription` was made after `last` was read (the install is known
    /// only then), so the status is read once more before the first wait:
    /// a change in between is not missed.
    pub async fn run(mut self, mut last: InstallStatus, mut subscription: StatusSubscription) {
        if !self.send(&last).await {
            return;
        }
        loop {
            let current = match self.store.status_by_id(self.install_id).await {
                Ok(Some(status)) => status,
                Ok(None) => InstallStatus::erased(self.install_id, SystemTime::now()),
                Err(error) => {
                    let _ = self
                        .sender
                        .send(Err(RegistrationError::from(error).into()))
                        .await;
                    return;
                }
            };
            if current != last {
                if !self.send(&current).await {
                    return;
                }
                last = current;
            }
            if last.state == InstallState::Reset {
                return;
            }
            tokio::select! {
                () = subscription.changed() => {}
                () = self.drain.requested() => return,
                () = self.sender.closed() => return,
            }
        }
    }

    async fn send(&self, status: &InstallStatus) -> bool {
        let message = pb::WatchInstallStatusResponse {
            status: Some(install_status(status)),
        };
        self.sender.send(Ok(message)).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(per_install: usize, per_replica: usize) -> WatchCaps {
        WatchCaps {
            per_install,
            per_replica,
        }
    }

    fn install() -> InstallId {
        InstallId(Uuid::now_v7())
    }

    fn open_streams(slots: &WatchSlots) -> (usize, usize) {
        let open = slots.lock();
        (open.total, open.by_install.len())
    }

    #[test]
    fn an_install_past_its_cap_is_refused_naming_the_cap() {
        let slots = WatchSlots::new(caps(2, 100));
        let watched = install();
        let _first = slots.claim(watched).expect("first");
        let _second = slots.claim(watched).expect("second");
        let refused = slots.claim(watched).expect_err("third");
        assert!(
            refused.to_string().contains(WATCH_STREAMS_PER_INSTALL),
            "{refused}"
        );
        // Another install is not held back by this one's cap.
        let _other = slots.claim(install()).expect("another install");
    }

    #[test]
    fn the_replica_past_its_cap_is_refused_naming_the_cap() {
        let slots = WatchSlots::new(caps(2, 3));
        let held: Vec<WatchSlot> = (0..3)
            .map(|_| slots.claim(install()).expect("under the cap"))
            .collect();
        let refused = slots.claim(install()).expect_err("past the replica's cap");
        assert!(
            refused.to_string().contains(WATCH_STREAMS_PER_REPLICA),
            "{refused}"
        );
        assert_eq!(open_streams(&slots), (3, 3), "a refusal takes no place");
        drop(held);
        slots.claim(install()).expect("room again");
    }

    #[test]
    fn dropped_slots_are_given_back_and_leave_no_entry() {
        let slots = WatchSlots::new(caps(2, 100));
        let watched = install();
        let first = slots.claim(watched).expect("first");
        let second = slots.claim(watched).expect("second");
        drop(first);
        assert_eq!(open_streams(&slots), (1, 1));
        let third = slots.claim(watched).expect("a place was freed");
        drop(second);
        drop(third);
        assert_eq!(open_streams(&slots), (0, 0), "no entry is kept at zero");
    }
}
