//! Feeding one `WatchInstallStatus` stream: the current status, then each
//! change announced for its install, until the install ends, the client
//! goes away or the server drains.
//!
//! Announcements only say which install changed ([`crate::notify`]); the
//! watcher re-reads the status from Postgres and sends it when it differs
//! from what the client last saw. A resync (the listener reconnected, or
//! this watcher fell behind) re-reads it too, so nothing is missed.

use devicelink_shared::pb;
use devicelink_shared::serving::DrainSignal;
use std::time::SystemTime;
use tokio::sync::{broadcast, mpsc};
use tonic::Status;

use super::convert::install_status;
use crate::domain::{InstallId, InstallState, InstallStatus};
use crate::error::RegistrationError;
use crate::notify::StatusEvent;
use crate::store::Store;

/// Where a watch stream's messages go.
pub type WatchSender = mpsc::Sender<Result<pb::WatchInstallStatusResponse, Status>>;

/// Feeds one watch stream.
pub struct Watcher {
    store: Store,
    install_id: InstallId,
    sender: WatchSender,
    drain: DrainSignal,
}

impl Watcher {
    /// A watcher of `install_id`, sending on `sender` until `drain` fires.
    pub fn new(
        store: Store,
        install_id: InstallId,
        sender: WatchSender,
        drain: DrainSignal,
    ) -> Self {
        Self {
            store,
            install_id,
            sender,
            drain,
        }
    }

    /// Sends `last` (the status just read), then each change, until the
    /// install ends, the client goes away or the server drains. `events`
    /// must be subscribed before `last` was read, so no change between the
    /// read and the subscription can be missed.
    pub async fn run(
        mut self,
        mut last: InstallStatus,
        mut events: broadcast::Receiver<StatusEvent>,
    ) {
        if !self.send(&last).await {
            return;
        }
        loop {
            let event = tokio::select! {
                event = events.recv() => event,
                () = self.drain.requested() => return,
                () = self.sender.closed() => return,
            };
            let relevant = match event {
                Ok(StatusEvent::Changed(install_id)) => install_id == self.install_id.0,
                Ok(StatusEvent::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => true,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if !relevant {
                continue;
            }
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
        }
    }

    async fn send(&self, status: &InstallStatus) -> bool {
        let message = pb::WatchInstallStatusResponse {
            status: Some(install_status(status)),
        };
        self.sender.send(Ok(message)).await.is_ok()
    }
}
