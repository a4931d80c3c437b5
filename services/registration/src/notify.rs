//! Install status changes, fanned out to the watch streams of this replica.
//!
//! Every change to an install's status is announced with `pg_notify` inside
//! the transaction that makes it, so Postgres delivers it when, and only
//! when, the change commits, to every replica. Each replica keeps one
//! dedicated connection that `LISTEN`s and wakes the watch streams of the
//! install each announcement names ([`StatusFanout`]). After (re)connecting,
//! the listener wakes every stream (a resync) so that streams re-read their
//! status and nothing that happened while the connection was down is
//! missed.
//!
//! A connection can also go silent without breaking (a partition): the
//! listener then proves it is alive with a heartbeat query that must be
//! answered in time, treats a missed one as a lost connection, and reports
//! every sign of life to the [`StatusCache`], which is trusted only while
//! those are recent. Whether it is connected, and its heartbeat's round
//! trip, are metrics: an operator's view of how late a change can be.

use std::sync::Arc;
use std::time::Duration;

use devicelink_shared::metrics_catalog::{STATUS_LISTENER_CONNECTED, STATUS_LISTENER_HEARTBEAT};
use devicelink_shared::serving::DrainSignal;
use devicelink_shared::stores::Postgres;
use futures_util::{Stream, StreamExt};
use tokio_postgres::AsyncMessage;
use uuid::Uuid;

use crate::status_cache::StatusCache;
use crate::status_fanout::{StatusFanout, StatusSubscription};
use crate::store::STATUS_CHANNEL;

/// How often the listener proves its connection is alive. A partition
/// keeps the socket open and silent, which neither TCP keepalive nor an
/// idle LISTEN can tell from a quiet night; an unanswered query can.
const HEARTBEAT_EVERY: Duration = Duration::from_millis(500);
/// How long a heartbeat (or connecting and `LISTEN`ing) may go unanswered
/// before the connection counts as lost. With [`HEARTBEAT_EVERY`] it makes
/// [`crate::status_cache::TRUSTED_FOR`]: a silent listener is given up
/// on when the cache stops trusting it.
const HEARTBEAT_DEADLINE: Duration = Duration::from_secs(1);
/// How long connecting and `LISTEN`ing may take.
const CONNECT_DEADLINE: Duration = Duration::from_secs(2);
/// The first pause before reconnecting a lost listener, doubled after each
/// failed attempt up to [`RECONNECT_DELAY_MAX`]: quick to come back, gentle
/// on a Postgres that is struggling.
const RECONNECT_DELAY_MIN: Duration = Duration::from_millis(250);
/// The longest pause between two reconnection attempts: a listener is back
/// within about a second of Postgres.
const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(1);

/// Why the listener's connection was given up.
#[derive(Debug, thiserror::Error)]
enum ListenerLost {
    #[error("the listener connection failed")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("the listener connection was closed")]
    Closed,
    #[error("no answer on the listener connection within {0:?}")]
    Silent(Duration),
}

/// The fan-out of status changes on this replica.
#[derive(Clone)]
pub struct StatusNotifier {
    fanout: StatusFanout,
}

impl StatusNotifier {
    /// Subscribes to the changes of `install_id` from now on.
    pub fn subscribe(&self, install_id: Uuid) -> StatusSubscription {
        self.fanout.subscribe(install_id)
    }
}

/// Starts listening for status changes until the service drains; each
/// change evicts its install from `cache`, which is bypassed while the
/// listener is not connected or has not proved alive lately.
pub fn spawn_listener(
    postgres: Postgres,
    cache: Arc<StatusCache>,
    mut drain: DrainSignal,
) -> StatusNotifier {
    let fanout = StatusFanout::default();
    let notifier = StatusNotifier {
        fanout: fanout.clone(),
    };
    metrics::gauge!(STATUS_LISTENER_CONNECTED).set(0.0);
    tokio::spawn(async move {
        let mut reconnect_delay = RECONNECT_DELAY_MIN;
        loop {
            tokio::select! {
                lost = listen_once(&postgres, &fanout, &cache) => {
                    if cache.is_listening() {
                        // It had come back: a new outage starts the backoff over.
                        reconnect_delay = RECONNECT_DELAY_MIN;
                    }
                    cache.set_listening(false);
                    metrics::gauge!(STATUS_LISTENER_CONNECTED).set(0.0);
                    tracing::warn!(error = %devicelink_shared::status::error_chain(&lost), "status listener lost; reconnecting");
                }
                () = drain.requested() => return,
            }
            tokio::select! {
                () = tokio::time::sleep(reconnect_delay) => {}
                () = drain.requested() => return,
            }
            reconnect_delay = (reconnect_delay * 2).min(RECONNECT_DELAY_MAX);
        }
    });
    notifier
}

/// Listens on one connection until it breaks or goes silent: it must
/// answer a heartbeat every [`HEARTBEAT_EVERY`], within
/// [`HEARTBEAT_DEADLINE`].
async fn listen_once(
    postgres: &Postgres,
    fanout: &StatusFanout,
    cache: &StatusCache,
) -> ListenerLost {
    let connected = tokio::time::timeout(CONNECT_DEADLINE, postgres.connect_session()).await;
    let (client, mut connection) = match connected {
        Ok(Ok(session)) => session,
        Ok(Err(error)) => return error.into(),
        Err(_elapsed) => return ListenerLost::Silent(CONNECT_DEADLINE),
    };
    let mut messages =
        futures_util::stream::poll_fn(move |context| connection.poll_message(context));
    let listen = format!("LISTEN {STATUS_CHANNEL}");
    let listened = answered(
        client.batch_execute(&listen),
        CONNECT_DEADLINE,
        &mut messages,
        fanout,
        cache,
    );
    if let Err(lost) = listened.await {
        return lost;
    }
    cache.set_listening(true);
    metrics::gauge!(STATUS_LISTENER_CONNECTED).set(1.0);
    fanout.resync();
    tracing::debug!("listening for install status changes");
    loop {
        let heartbeat = async {
            tokio::time::sleep(HEARTBEAT_EVERY).await;
            let sent = std::time::Instant::now();
            let answer = client.simple_query("SELECT 1").await;
            metrics::histogram!(STATUS_LISTENER_HEARTBEAT).record(sent.elapsed().as_secs_f64());
            answer
        };
        let answer = answered(
            heartbeat,
            HEARTBEAT_EVERY + HEARTBEAT_DEADLINE,
            &mut messages,
            fanout,
            cache,
        );
        if let Err(lost) = answer.await {
            return lost;
        }
        cache.mark_alive();
    }
}

/// Waits up to `deadline` for `query` to be answered on the listener's
/// connection, passing on the notifications that arrive meanwhile (polling
/// `messages` is what drives the connection, the query's answer included).
async fn answered<T>(
    query: impl Future<Output = Result<T, tokio_postgres::Error>>,
    deadline: Duration,
    messages: &mut (impl Stream<Item = Result<AsyncMessage, tokio_postgres::Error>> + Unpin),
    fanout: &StatusFanout,
    cache: &StatusCache,
) -> Result<T, ListenerLost> {
    let work = async {
        let mut query = std::pin::pin!(query);
        loop {
            tokio::select! {
                answer = &mut query => return Ok(answer?),
                message = messages.next() => match message {
                    Some(Ok(AsyncMessage::Notification(notification))) => {
                        publish(notification.payload(), fanout, cache);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(error)) => return Err(error.into()),
                    None => return Err(ListenerLost::Closed),
                },
            }
        }
    };
    tokio::time::timeout(deadline, work)
        .await
        .unwrap_or(Err(ListenerLost::Silent(deadline)))
}

/// Evicts and announces the install a notification names.
fn publish(payload: &str, fanout: &StatusFanout, cache: &StatusCache) {
    match Uuid::try_parse(payload) {
        Ok(install_id) => {
            cache.evict(install_id);
            cache.mark_alive();
            fanout.changed(install_id);
        }
        Err(_) => tracing::warn!(payload, "ignoring a malformed status notification"),
    }
}
