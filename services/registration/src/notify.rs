//! Install status changes, fanned out to the watch streams of this replica.
//!
//! Every change to an install's status is announced with `pg_notify` inside
//! the transaction that makes it, so Postgres delivers it when, and only
//! when, the change commits, to every replica. Each replica keeps one
//! dedicated connection that `LISTEN`s and republishes the install ids on a
//! broadcast channel; each watch stream filters for its own install. After
//! (re)connecting, the listener publishes [`StatusEvent::Resync`] so that
//! streams re-read their status and nothing that happened while the
//! connection was down is missed.

use std::sync::Arc;
use std::time::Duration;

use devicelink_shared::serving::DrainSignal;
use devicelink_shared::stores::Postgres;
use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio_postgres::AsyncMessage;
use uuid::Uuid;

use crate::status_cache::StatusCache;
use crate::store::STATUS_CHANNEL;

/// How many events a slow watcher may fall behind before it resyncs.
const CHANNEL_CAPACITY: usize = 4096;
/// How long to wait before reconnecting a lost listener connection.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// What a watch stream is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusEvent {
    /// The status of this install changed.
    Changed(Uuid),
    /// Changes may have been missed: every stream re-reads its status.
    Resync,
}

/// The fan-out of status changes on this replica.
#[derive(Clone)]
pub struct StatusNotifier {
    events: broadcast::Sender<StatusEvent>,
}

impl StatusNotifier {
    /// Subscribes to every status change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<StatusEvent> {
        self.events.subscribe()
    }
}

/// Starts listening for status changes until the service drains; each
/// change evicts its install from `cache`, which is bypassed while the
/// listener is not connected.
pub fn spawn_listener(
    postgres: Postgres,
    cache: Arc<StatusCache>,
    mut drain: DrainSignal,
) -> StatusNotifier {
    let (events, _) = broadcast::channel(CHANNEL_CAPACITY);
    let notifier = StatusNotifier {
        events: events.clone(),
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                outcome = listen_once(&postgres, &events, &cache) => {
                    cache.set_listening(false);
                    if let Err(error) = outcome {
                        tracing::warn!(error = %devicelink_shared::status::error_chain(&error), "status listener disconnected; reconnecting");
                    }
                }
                () = drain.requested() => return,
            }
            tokio::select! {
                () = tokio::time::sleep(RECONNECT_DELAY) => {}
                () = drain.requested() => return,
            }
        }
    });
    notifier
}

/// Listens on one connection until it breaks.
async fn listen_once(
    postgres: &Postgres,
    events: &broadcast::Sender<StatusEvent>,
    cache: &StatusCache,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = postgres.connect_session().await?;
    let mut messages =
        futures_util::stream::poll_fn(move |context| connection.poll_message(context));
    {
        // The connection must be polled for the LISTEN to complete.
        let statement = format!("LISTEN {STATUS_CHANNEL}");
        let listen = client.batch_execute(&statement);
        let mut listen = std::pin::pin!(listen);
        loop {
            tokio::select! {
                outcome = &mut listen => { outcome?; break; }
                message = messages.next() => match message {
                    Some(Ok(_)) => {}
                    Some(Err(error)) => return Err(error),
                    None => return Ok(()),
                },
            }
        }
    }
    cache.set_listening(true);
    let _ = events.send(StatusEvent::Resync);
    tracing::debug!("listening for install status changes");
    while let Some(message) = messages.next().await {
        if let AsyncMessage::Notification(notification) = message? {
            match Uuid::try_parse(notification.payload()) {
                Ok(install_id) => {
                    cache.evict(install_id);
                    let _ = events.send(StatusEvent::Changed(install_id));
                }
                Err(_) => tracing::warn!(
                    payload = notification.payload(),
                    "ignoring a malformed status notification"
                ),
            }
        }
    }
    drop(client);
    Ok(())
}
