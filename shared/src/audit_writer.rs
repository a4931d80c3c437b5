//! The audit events of work that changes nothing in Postgres (a refusal, a
//! mint, which lives in Redis), appended off the call's path: a bounded
//! in-process buffer that a background task writes to Postgres in
//! batches, one `INSERT` statement at a time: the events that name a user,
//! install or person as `audit_events` rows, the others (mints, most
//! refusals, rate-limit counts) as one `audit_event_packs` row per app and
//! type ([`crate::audit_pack`]), which costs Postgres about a sixth as much.
//!
//! Delivery is at least once, not exactly once: a batch whose `INSERT`
//! fails is tried again (so one that committed but whose answer was lost is
//! written twice), and a batch still failing after [`WRITE_ATTEMPTS`] is
//! dropped. What a crash loses: the events still in the buffer (at most
//! [`BUFFER`], normally those of the last [`FLUSH_INTERVAL`]), and the
//! current minute's rate-limit counts. A buffer that is full (Postgres
//! down for long) drops new events. Every drop is counted
//! ([`crate::metrics_catalog::AUDIT_EVENTS_DROPPED`]) and logged, in a line
//! a second at most. During a drain the task goes on writing (calls
//! finishing in the grace period still append) until the service's
//! handlers are gone; what was appended in the last [`FLUSH_INTERVAL`]
//! before the process exits may be lost.
//!
//! Rate-limit refusals are not an event each: they are counted per scope,
//! app and minute in memory, and each ended minute becomes one
//! `rate_limited` event per replica with the count.
//!
//! The event id follows Postgres's clock when the batch is written (the
//! audit watch relies on ids following the insert's clock, see
//! [`batch`]); the time the event happened is the service's, kept
//! as the event's `time`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use uuid::Uuid;

use crate::audit::{self, Actor, AuditRow, CallContext};
use crate::metrics_catalog::AUDIT_EVENTS_DROPPED;
use crate::pb;
use crate::pb::audit_event::Payload;
use crate::secret::SecretHash;
use crate::serving::DrainSignal;
use crate::stores::Postgres;

mod batch;
use batch::write_batch;

/// The most events waiting to be written.
pub const BUFFER: usize = 10_000;
/// The most events one `INSERT` writes: four full packs of mints. Each
/// statement costs Postgres a commit and the writer a round trip: at
/// 30,000 to 45,000 mints a second, Postgres spent 0.8 to 1.2 µs of CPU
/// per mint on its event in batches of 1,024, 1.6 to 1.9 µs in batches of
/// 250, for 7 MiB more peak RSS in authcode (30.0 MiB against 22.9; the
/// 15 to 20 MiB that larger batches once cost was transparent huge pages,
/// which the services now run without: see README, "Soak").
const BATCH: usize = 1024;
/// The pause after a write of less than a full batch: a replica with few
/// events writes them at most this often, a batch insert per interval
/// rather than a statement per call. A full batch is followed by the next
/// at once, so a busy replica (tens of thousands of mints a second) writes
/// as fast as events come rather than dropping them.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// How often a failing batch is tried, with a doubling pause between.
pub const WRITE_ATTEMPTS: u32 = 4;
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// An event to append.
#[derive(Debug, Clone)]
pub struct PendingAuditEvent {
    /// When it happened.
    pub occurred_at: SystemTime,
    /// The app it concerns.
    pub app_id: Option<Uuid>,
    /// The user it concerns.
    pub user_id: Option<Uuid>,
    /// The install it concerns.
    pub install_id: Option<Uuid>,
    /// The API key it concerns (public id).
    pub api_key_id: Option<String>,
    /// The external id's keyed hash.
    pub external_id_hash: Option<[u8; 32]>,
    /// The event's type and encoding.
    pub row: AuditRow,
}

impl PendingAuditEvent {
    /// An event of `app_id` happening now, concerning nothing else yet.
    pub fn new(app_id: Option<Uuid>, row: AuditRow) -> Self {
        Self {
            occurred_at: SystemTime::now(),
            app_id,
            user_id: None,
            install_id: None,
            api_key_id: None,
            external_id_hash: None,
            row,
        }
    }
}

/// A mint's event as the call hands it over: plain values it has anyway,
/// built into its row and encoded by the writer, off the call's path (a
/// mint is the busiest call by far).
#[derive(Debug, Clone)]
pub struct MintedEvent {
    /// When the code was minted.
    pub occurred_at: SystemTime,
    /// Its app.
    pub app_id: Uuid,
    /// The public id of the API key that minted it.
    pub api_key_id: String,
    /// When the code stops being redeemable.
    pub expires_at: SystemTime,
    /// The code's hash, of which the event carries a hash
    /// ([`audit::code_id`]).
    pub code_hash: SecretHash,
    /// The call's client address and trace id.
    pub context: CallContext,
}

impl MintedEvent {
    fn into_pending(self) -> PendingAuditEvent {
        let row = audit::change(
            &self.context,
            &Actor::ApiKey(self.api_key_id.clone()),
            Payload::CodeMinted(pb::CodeMinted {
                expires_at: Some(self.expires_at.into()),
                code_id: audit::code_id(&self.code_hash),
            }),
        );
        PendingAuditEvent {
            occurred_at: self.occurred_at,
            api_key_id: Some(self.api_key_id),
            ..PendingAuditEvent::new(Some(self.app_id), row)
        }
    }
}

/// What waits in the buffer.
#[derive(Debug)]
enum Queued {
    /// An event built by its call.
    Built(PendingAuditEvent),
    /// A mint, built by the writer.
    Minted(MintedEvent),
}

impl Queued {
    fn into_pending(self) -> PendingAuditEvent {
        match self {
            Self::Built(event) => event,
            Self::Minted(minted) => minted.into_pending(),
        }
    }
}

/// Rate-limit refusals counted per (scope, app, minute since the epoch).
type RefusalCounts = HashMap<(&'static str, Option<Uuid>, u64), u64>;

/// Appends audit events; cheap to clone. Appending never waits.
#[derive(Clone, Debug)]
pub struct AuditWriter {
    sender: mpsc::Sender<Queued>,
    refusals: Arc<Mutex<RefusalCounts>>,
}

/// The task that writes what an [`AuditWriter`] appends, until it is
/// spawned ([`AuditWriterTask::spawn`]) holding the buffer.
#[derive(Debug)]
pub struct AuditWriterTask {
    receiver: mpsc::Receiver<Queued>,
    refusals: Arc<Mutex<RefusalCounts>>,
}

impl AuditWriterTask {
    /// Writes to `postgres` until `drain` fires, then writes what is left
    /// and ends.
    pub fn spawn(self, postgres: Postgres, drain: DrainSignal) {
        tokio::spawn(write_events(postgres, self.receiver, self.refusals, drain));
    }
}

impl AuditWriter {
    /// A writer, and the task that will write what it appends once
    /// spawned (a service builds its handlers before it serves).
    pub fn new() -> (Self, AuditWriterTask) {
        let (sender, receiver) = mpsc::channel(BUFFER);
        let refusals = Arc::new(Mutex::new(RefusalCounts::new()));
        let task = AuditWriterTask {
            receiver,
            refusals: refusals.clone(),
        };
        (Self { sender, refusals }, task)
    }

    /// A writer whose task writes to `postgres` until `drain` fires, then
    /// writes what is left and ends.
    pub fn spawn(postgres: Postgres, drain: DrainSignal) -> Self {
        let (writer, task) = Self::new();
        task.spawn(postgres, drain);
        writer
    }

    /// Queues `event`; drops it (counted and logged) when the buffer is
    /// full.
    pub fn append(&self, event: PendingAuditEvent) {
        self.queue(Queued::Built(event));
    }

    /// Queues a mint's event, which the writer builds; dropped (counted
    /// and logged) when the buffer is full.
    pub fn minted(&self, event: MintedEvent) {
        self.queue(Queued::Minted(event));
    }

    fn queue(&self, queued: Queued) {
        if self.sender.try_send(queued).is_err() {
            dropped(1, "the audit buffer is full, or closed by a drain");
        }
    }

    /// Counts a call refused by the rate limit of `scope` (its
    /// `RATE_LIMIT_*` name, lower case), for `app_id` when the scope names
    /// an app.
    pub fn rate_limited(&self, scope: &'static str, app_id: Option<Uuid>) {
        let minute = minute_of(SystemTime::now());
        let mut refusals = self
            .refusals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *refusals.entry((scope, app_id, minute)).or_default() += 1;
    }
}

fn minute_of(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        / 60
}

/// Counts dropped events, and warns at most once a second with how many
/// went since the last warning: a full buffer drops tens of thousands of
/// events a second, and a line for each would bury the log (and cost the
/// CPU the buffer lacked). The metric counts every one at once; drops of a
/// last second that no later drop follows are only in the metric.
fn dropped(count: usize, why: &str) {
    static STARTED: LazyLock<Instant> = LazyLock::new(Instant::now);
    static UNLOGGED: AtomicU64 = AtomicU64::new(0);
    static LOGGED_IN_SECOND: AtomicU64 = AtomicU64::new(0);
    metrics::counter!(AUDIT_EVENTS_DROPPED).increment(count as u64);
    UNLOGGED.fetch_add(count as u64, Ordering::Relaxed);
    // Seconds from 1, so that the first drop is always logged.
    let second = STARTED.elapsed().as_secs() + 1;
    let logged = LOGGED_IN_SECOND.load(Ordering::Relaxed);
    if second > logged
        && LOGGED_IN_SECOND
            .compare_exchange(logged, second, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let count = UNLOGGED.swap(0, Ordering::Relaxed);
        tracing::warn!(count, why, "audit events dropped");
    }
}

/// The `rate_limited` events of every minute before `before_minute` (all
/// of them when `None`), taken out of `refusals`.
fn ended_minutes(
    refusals: &Mutex<RefusalCounts>,
    before_minute: Option<u64>,
) -> Vec<PendingAuditEvent> {
    let mut refusals = refusals
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let ended: Vec<_> = refusals
        .keys()
        .filter(|(_, _, minute)| before_minute.is_none_or(|current| *minute < current))
        .copied()
        .collect();
    ended
        .into_iter()
        .filter_map(|key| refusals.remove(&key).map(|count| (key, count)))
        .map(|((scope, app_id, minute), count)| {
            let start = UNIX_EPOCH + Duration::from_secs(minute * 60);
            let payload = Payload::RateLimited(pb::RateLimited {
                scope: scope.to_owned(),
                minute: Some(start.into()),
                refused_calls: count,
            });
            let row = audit::refusal(&CallContext::default(), &Actor::System, scope, payload);
            PendingAuditEvent {
                occurred_at: start + Duration::from_secs(60),
                ..PendingAuditEvent::new(app_id, row)
            }
        })
        .collect()
}

async fn write_events(
    postgres: Postgres,
    mut receiver: mpsc::Receiver<Queued>,
    refusals: Arc<Mutex<RefusalCounts>>,
    mut drain: DrainSignal,
) {
    let mut queued = Vec::with_capacity(BATCH);
    let mut batch = Vec::with_capacity(BATCH);
    let mut draining = false;
    loop {
        // Calls finishing during a drain still append: the task goes on
        // until every writer is gone (the servers have stopped), and from
        // the drain on it writes the current minute's refusals too.
        let closed = tokio::select! {
            received = receiver.recv_many(&mut queued, BATCH) => received == 0,
            () = tokio::time::sleep(FLUSH_INTERVAL) => false,
            () = drain.requested(), if !draining => {
                draining = true;
                false
            }
        };
        let ended_before = (!draining && !closed).then(|| minute_of(SystemTime::now()));
        batch.extend(queued.drain(..).map(Queued::into_pending));
        batch.extend(ended_minutes(&refusals, ended_before));
        let full = batch.len() >= BATCH;
        for chunk in batch.chunks(BATCH) {
            write_with_retries(&postgres, chunk).await;
        }
        batch.clear();
        if closed {
            return;
        }
        if !full {
            tokio::time::sleep(FLUSH_INTERVAL).await;
        }
    }
}

async fn write_with_retries(postgres: &Postgres, batch: &[PendingAuditEvent]) {
    let mut pause = FIRST_RETRY_PAUSE;
    for attempt in 1..=WRITE_ATTEMPTS {
        match write_batch(postgres, batch).await {
            Ok(()) => return,
            Err(error) if attempt < WRITE_ATTEMPTS => {
                tracing::debug!(attempt, error = %error, "audit batch not written; trying again");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            Err(error) => {
                tracing::warn!(error = %error, "audit batch not written");
            }
        }
    }
    dropped(batch.len(), "Postgres did not take the batch");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_become_one_event_per_scope_app_and_ended_minute() {
        let refusals = Mutex::new(RefusalCounts::new());
        let app = Some(Uuid::now_v7());
        {
            let mut counts = refusals.lock().unwrap();
            counts.insert(("mint_per_key", app, 10), 3);
            counts.insert(("mint_per_key", app, 11), 1);
            counts.insert(("redeem_per_device", None, 10), 2);
        }
        let mut ended = ended_minutes(&refusals, Some(11));
        ended.sort_by_key(|event| event.row.type_name.clone() + &format!("{:?}", event.app_id));
        assert_eq!(ended.len(), 2, "minute 11 has not ended");
        let counted: u64 = ended
            .iter()
            .map(|event| {
                match prost::Message::decode(event.row.event.as_slice())
                    .map(|event: pb::AuditEvent| event.payload)
                {
                    Ok(Some(Payload::RateLimited(limited))) => limited.refused_calls,
                    other => panic!("not a rate_limited event: {other:?}"),
                }
            })
            .sum();
        assert_eq!(counted, 5);
        assert_eq!(
            ended_minutes(&refusals, None).len(),
            1,
            "the rest on a drain"
        );
        assert!(ended_minutes(&refusals, None).is_empty());
    }
}
