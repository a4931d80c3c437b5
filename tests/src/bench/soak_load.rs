//! The soak's steady mixed flow: what a fleet of devices does all day,
//! paced at fixed rates so that any drift over time is the services', not
//! the load's.
//!
//! A fixed population of users each has one current install. A *link
//! cycle* takes the next user in turn: `MintAuthCode` for its external id,
//! `CreateUser` on a new phone (which supersedes the user's current
//! install), then `ResetInstall` on the install it superseded one cycle
//! earlier. Two generations are kept so that a status poll that picked a
//! token a moment ago never finds it reset. Polls call `GetInstallStatus` on
//! random users' current installs. Watchers each hold a `WatchInstallStatus`
//! stream open on one user's current install; when the user's next cycle
//! supersedes it, the watcher records how long the change took to arrive
//! (from the `CreateUser` being sent) and opens a stream on the new install.
//!
//! Link cycles and polls are open-loop: a tick starts its call whether or
//! not earlier calls have answered, up to [`MAX_IN_FLIGHT`]; ticks past
//! that are counted as skipped, which a healthy run never shows.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use devicelink_shared::pb;
use devicelink_shared::pb::auth_code_service_client::AuthCodeServiceClient;
use devicelink_shared::pb::registration_service_client::RegistrationServiceClient;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use super::prepare::{BenchApp, authorized, bearer, create_user_requests};
use super::{BenchError, BenchResult, Context};

/// Calls (link cycles and polls) that may be waiting for an answer at
/// once before ticks are skipped.
const MAX_IN_FLIGHT: usize = 256;
/// How long a watcher waits for its user's new install before it looks
/// again: a cycle that failed leaves the old one current.
const NEW_INSTALL_WAIT: Duration = Duration::from_secs(10);
/// How long a watcher waits after a stream failed before opening another.
const WATCH_RETRY: Duration = Duration::from_secs(1);
/// The slowest latency the histograms hold, in microseconds.
const SLOWEST_US: u64 = 120_000_000;

/// What one recorded call was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// `MintAuthCode`.
    Mint,
    /// `CreateUser` on a new device of an existing user.
    Redeem,
    /// `GetInstallStatus`.
    Status,
    /// `ResetInstall` of a superseded install.
    Reset,
    /// `WatchInstallStatus` until its first status.
    WatchOpen,
    /// A change on a held watch stream, from the `CreateUser` that made it.
    WatchChange,
}

impl CallKind {
    /// Every kind, in the report's order.
    pub const ALL: [Self; 6] = [
        Self::Mint,
        Self::Redeem,
        Self::Status,
        Self::Reset,
        Self::WatchOpen,
        Self::WatchChange,
    ];

    /// The kind's name in the table, the CSV and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mint => "mint",
            Self::Redeem => "redeem",
            Self::Status => "status",
            Self::Reset => "reset",
            Self::WatchOpen => "watch_open",
            Self::WatchChange => "watch_change",
        }
    }
}

/// One kind's calls within one sampling interval.
#[derive(Debug, Clone)]
pub struct KindStats {
    /// Which calls.
    pub kind: CallKind,
    /// How many answered.
    pub count: u64,
    /// How many failed.
    pub errors: u64,
    /// The median latency, in milliseconds (0 without calls).
    pub p50_ms: f64,
    /// The 99th percentile, in milliseconds (0 without calls).
    pub p99_ms: f64,
    /// The interval's latencies, in microseconds, so that the verdict can
    /// pool many intervals into one percentile.
    pub latencies: Histogram<u64>,
    /// The last error seen, for the log.
    pub last_error: Option<String>,
}

/// Latencies and errors per kind since the last [`Recorder::take`].
pub struct Recorder {
    windows: Mutex<Vec<Window>>,
}

struct Window {
    histogram: Histogram<u64>,
    errors: u64,
    last_error: Option<String>,
}

impl Window {
    fn new() -> BenchResult<Self> {
        Ok(Self {
            histogram: Histogram::new_with_bounds(1, SLOWEST_US, 3)
                .context("a latency histogram")?,
            errors: 0,
            last_error: None,
        })
    }
}

impl Recorder {
    fn new() -> BenchResult<Self> {
        let windows = CallKind::ALL
            .iter()
            .map(|_| Window::new())
            .collect::<BenchResult<_>>()?;
        Ok(Self {
            windows: Mutex::new(windows),
        })
    }

    fn record(&self, kind: CallKind, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        windows[kind as usize]
            .histogram
            .saturating_record(micros.max(1));
    }

    fn error(&self, kind: CallKind, error: impl std::fmt::Display) {
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let window = &mut windows[kind as usize];
        window.errors += 1;
        window.last_error = Some(error.to_string());
    }

    /// The interval's figures per kind; starts the next interval.
    pub fn take(&self) -> Vec<KindStats> {
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        CallKind::ALL
            .iter()
            .zip(windows.iter_mut())
            .map(|(&kind, window)| {
                let histogram = &window.histogram;
                let quantile = |q: f64| {
                    if histogram.is_empty() {
                        0.0
                    } else {
                        histogram.value_at_quantile(q) as f64 / 1000.0
                    }
                };
                let stats = KindStats {
                    kind,
                    count: histogram.len(),
                    errors: window.errors,
                    p50_ms: quantile(0.5),
                    p99_ms: quantile(0.99),
                    latencies: histogram.clone(),
                    last_error: window.last_error.take(),
                };
                window.histogram.reset();
                window.errors = 0;
                stats
            })
            .collect()
    }
}

/// The rates and sizes of the flow.
#[derive(Debug, Clone, Copy)]
pub struct FlowShape {
    /// Users, each with one current install.
    pub users: usize,
    /// Link cycles (mint, redeem, reset) per second.
    pub link_rate: f64,
    /// `GetInstallStatus` calls per second.
    pub poll_rate: f64,
    /// Watch streams held open, each on one user's current install.
    pub watchers: usize,
}

/// One simulated user.
struct User {
    external_id: String,
    /// The current install's `Bearer <token>`, watched by its watcher.
    current: watch::Sender<Option<MetadataValue<Ascii>>>,
    /// The install superseded by the last cycle, reset by the next one.
    previous: Mutex<Option<MetadataValue<Ascii>>>,
    /// Held by the user's cycle, so that two never overlap.
    cycling: tokio::sync::Mutex<()>,
    /// When the last cycle's `CreateUser` was sent.
    redeem_sent: Mutex<Option<Instant>>,
    devices: AtomicU64,
}

/// The flow's state, shared by its tasks.
pub struct Flow {
    authcode: Vec<AuthCodeServiceClient<Channel>>,
    registration: Vec<RegistrationServiceClient<Channel>>,
    app: BenchApp,
    users: Vec<User>,
    /// What each interval recorded.
    pub recorder: Recorder,
    in_flight: Arc<Semaphore>,
    skipped: AtomicU64,
    open_watches: AtomicUsize,
    picks: AtomicU64,
}

impl Flow {
    /// Links every user (untimed), ready for [`Self::run`].
    pub async fn prepare(
        authcode: Vec<Channel>,
        registration: Vec<Channel>,
        app: BenchApp,
        shape: FlowShape,
    ) -> BenchResult<Arc<Self>> {
        let users = (0..shape.users)
            .map(|index| User {
                external_id: format!("soak-{index}"),
                current: watch::Sender::new(None),
                previous: Mutex::new(None),
                cycling: tokio::sync::Mutex::new(()),
                redeem_sent: Mutex::new(None),
                devices: AtomicU64::new(0),
            })
            .collect();
        let flow = Arc::new(Self {
            authcode: authcode
                .into_iter()
                .map(AuthCodeServiceClient::new)
                .collect(),
            registration: registration
                .into_iter()
                .map(RegistrationServiceClient::new)
                .collect(),
            app,
            users,
            recorder: Recorder::new()?,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            skipped: AtomicU64::new(0),
            open_watches: AtomicUsize::new(0),
            picks: AtomicU64::new(0),
        });
        // Twice, so that every user has an install for its first cycle to
        // reset: the flow is the same from the first minute to the last.
        let linked: Vec<BenchResult<()>> = futures_util::stream::iter(0..shape.users)
            .map(|index| {
                let flow = flow.clone();
                async move {
                    flow.link(index).await?;
                    let superseded = flow.link(index).await?;
                    *flow.users[index]
                        .previous
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = superseded;
                    Ok(())
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        linked.into_iter().collect::<BenchResult<()>>()?;
        flow.recorder.take();
        Ok(flow)
    }

    /// Ticks skipped since the last call, because [`MAX_IN_FLIGHT`] calls
    /// were waiting.
    pub fn take_skipped(&self) -> u64 {
        self.skipped.swap(0, Ordering::Relaxed)
    }

    /// Watch streams open now.
    pub fn open_watches(&self) -> usize {
        self.open_watches.load(Ordering::Relaxed)
    }

    /// Runs the flow until `stop` turns true.
    pub async fn run(self: Arc<Self>, shape: FlowShape, stop: watch::Receiver<bool>) {
        let mut tasks = JoinSet::new();
        // Watched users spread evenly over the population, so that changes
        // reach the watchers at a steady rate as the cycles go round.
        let watchers = shape.watchers.min(self.users.len());
        for watcher in 0..watchers {
            let index = watcher * self.users.len() / watchers;
            tasks.spawn(self.clone().watcher(index, stop.clone()));
        }
        let cycles = AtomicU64::new(0);
        let linker = self.clone();
        tasks.spawn(pace(
            shape.link_rate,
            stop.clone(),
            self.clone(),
            move || {
                let index = cycles.fetch_add(1, Ordering::Relaxed) as usize % linker.users.len();
                let flow = linker.clone();
                async move { flow.cycle(index).await }
            },
        ));
        let poller = self.clone();
        tasks.spawn(pace(
            shape.poll_rate,
            stop.clone(),
            self.clone(),
            move || {
                let flow = poller.clone();
                async move { flow.poll().await }
            },
        ));
        while tasks.join_next().await.is_some() {}
    }

    fn next_pick(&self, range: usize) -> usize {
        // Fibonacci hashing of a counter: spread over the users, no RNG.
        let pick = self.picks.fetch_add(1, Ordering::Relaxed);
        (pick.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % range.max(1)
    }

    fn authcode(&self) -> AuthCodeServiceClient<Channel> {
        self.authcode[self.next_pick(self.authcode.len())].clone()
    }

    fn registration(&self) -> RegistrationServiceClient<Channel> {
        self.registration[self.next_pick(self.registration.len())].clone()
    }

    /// Mints a code for user `index` and redeems it on a new phone; the
    /// new install becomes the user's current one. Returns the install it
    /// superseded.
    async fn link(&self, index: usize) -> BenchResult<Option<MetadataValue<Ascii>>> {
        let user = &self.users[index];
        let started = Instant::now();
        let minted = self
            .authcode()
            .mint_auth_code(authorized(
                pb::MintAuthCodeRequest {
                    external_id: user.external_id.clone(),
                    app_id: String::new(),
                    ..Default::default()
                },
                &self.app.api_key_bearer,
            ))
            .await;
        let code = match minted {
            Ok(response) => response.into_inner().auth_code,
            Err(status) => {
                self.recorder.error(CallKind::Mint, &status);
                return Err(BenchError::new(format!("MintAuthCode: {status}")));
            }
        };
        self.recorder.record(CallKind::Mint, started.elapsed());
        let device = user.devices.fetch_add(1, Ordering::Relaxed);
        let request = create_user_requests(
            &self.app,
            vec![code],
            vec![format!("{}-phone-{device}", user.external_id)],
        )
        .remove(0);
        let sent = Instant::now();
        *user
            .redeem_sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(sent);
        let token = match self.registration().create_user(request).await {
            Ok(response) => response.into_inner().install_token,
            Err(status) => {
                self.recorder.error(CallKind::Redeem, &status);
                return Err(BenchError::new(format!("CreateUser: {status}")));
            }
        };
        self.recorder.record(CallKind::Redeem, sent.elapsed());
        Ok(user.current.send_replace(Some(bearer(&token)?)))
    }

    /// One link cycle of user `index`: link a new phone, then reset the
    /// install superseded one cycle earlier.
    async fn cycle(&self, index: usize) {
        let user = &self.users[index];
        let Ok(_cycling) = user.cycling.try_lock() else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Ok(superseded) = self.link(index).await else {
            return;
        };
        let to_reset = std::mem::replace(
            &mut *user.previous.lock().unwrap_or_else(PoisonError::into_inner),
            superseded,
        );
        let Some(to_reset) = to_reset else {
            return;
        };
        let started = Instant::now();
        let request = authorized(pb::ResetInstallRequest {}, &to_reset);
        match self.registration().reset_install(request).await {
            Ok(_) => self.recorder.record(CallKind::Reset, started.elapsed()),
            Err(status) => self.recorder.error(CallKind::Reset, &status),
        }
    }

    /// One `GetInstallStatus` on a random user's current install.
    async fn poll(&self) {
        let user = &self.users[self.next_pick(self.users.len())];
        let Some(token) = user.current.borrow().clone() else {
            return;
        };
        let started = Instant::now();
        let request = authorized(pb::GetInstallStatusRequest {}, &token);
        match self.registration().get_install_status(request).await {
            Ok(_) => self.recorder.record(CallKind::Status, started.elapsed()),
            Err(status) => self.recorder.error(CallKind::Status, &status),
        }
    }

    /// Holds a watch stream on user `index`'s current install, and a new one
    /// after each change, until `stop`.
    async fn watcher(self: Arc<Self>, index: usize, mut stop: watch::Receiver<bool>) {
        let user = &self.users[index];
        let mut installs = user.current.subscribe();
        while !*stop.borrow() {
            let Some(token) = installs.borrow_and_update().clone() else {
                return;
            };
            tokio::select! {
                () = self.watch_until_changed(user, &token) => {}
                _ = stop.changed() => return,
            }
            // The change arrives about when `CreateUser` commits, before its
            // answer has made the new install current.
            let newer = tokio::time::timeout(
                NEW_INSTALL_WAIT,
                installs.wait_for(|current| current.as_ref() != Some(&token)),
            );
            tokio::select! {
                _ = newer => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// One watch stream on `token`'s install, until it reports that the
    /// install is no longer active, ends or fails.
    async fn watch_until_changed(&self, user: &User, token: &MetadataValue<Ascii>) {
        let started = Instant::now();
        let request = authorized(pb::WatchInstallStatusRequest {}, token);
        let mut stream = match self.registration().watch_install_status(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                self.recorder.error(CallKind::WatchOpen, &status);
                tokio::time::sleep(WATCH_RETRY).await;
                return;
            }
        };
        let mut first = true;
        self.open_watches.fetch_add(1, Ordering::Relaxed);
        loop {
            match stream.message().await {
                Ok(Some(message)) => {
                    let active = message
                        .status
                        .is_some_and(|status| status.state == pb::InstallState::Active as i32);
                    if first {
                        first = false;
                        self.recorder.record(CallKind::WatchOpen, started.elapsed());
                        if active {
                            continue;
                        }
                        // Superseded before the stream opened: no change
                        // to time, only a new install to watch.
                        break;
                    }
                    if active {
                        continue;
                    }
                    let sent = *user
                        .redeem_sent
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    if let Some(sent) = sent {
                        self.recorder.record(CallKind::WatchChange, sent.elapsed());
                    }
                    break;
                }
                Ok(None) => break,
                Err(status) => {
                    let kind = if first {
                        CallKind::WatchOpen
                    } else {
                        CallKind::WatchChange
                    };
                    self.recorder.error(kind, &status);
                    tokio::time::sleep(WATCH_RETRY).await;
                    break;
                }
            }
        }
        self.open_watches.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Calls `start()` `rate` times a second until `stop`, each call on a task
/// of its own while fewer than [`MAX_IN_FLIGHT`] are waiting.
async fn pace<F, Fut>(rate: f64, mut stop: watch::Receiver<bool>, flow: Arc<Flow>, mut start: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    if rate <= 0.0 {
        return;
    }
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => return,
        }
        let Ok(permit) = flow.in_flight.clone().try_acquire_owned() else {
            flow.skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let call = start();
        tokio::spawn(async move {
            call.await;
            drop(permit);
        });
    }
}
