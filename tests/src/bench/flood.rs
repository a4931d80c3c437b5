//! The flood scenario: do the rate limits keep legitimate callers whole
//! while another client floods bad credentials?
//!
//! For `MintAuthCode` and `CreateUser` (new users), legitimate calls are
//! paced at a fixed rate from [`Options::flood_concurrency`] tasks (see
//! [`load`]: latency counts from when a call was due), once alone and once
//! while a flood, on a thread and runtime of its own, sends ten times that
//! rate of made-up credentials from another loopback address
//! ([`FLOOD_SOURCE`]): API keys of the right form and checksum but an
//! unknown key id (`MintAuthCode`), codes of the right form that were never
//! minted (`CreateUser`) and install tokens of the right form that no
//! install holds (`GetInstallStatus`), in turn. Legitimate calls come from
//! 127.0.0.1, like every other scenario's, so the services, which see the
//! peer's address (the benchmark sets no `TRUSTED_PROXIES`), count the
//! flood's failures against the flood's address only: after its burst,
//! its calls are refused with `RESOURCE_EXHAUSTED` before any store
//! lookup, and the legitimate calls should neither be refused nor slow
//! down much.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use devicelink_registration::install_token::{InstallToken, new_nonce};
use devicelink_shared::api_key;
use devicelink_shared::auth_code::AuthCode;
use devicelink_shared::pb;
use devicelink_shared::pb::auth_code_service_client::AuthCodeServiceClient;
use devicelink_shared::pb::registration_service_client::RegistrationServiceClient;
use futures_util::future::BoxFuture;
use tokio::sync::{Semaphore, oneshot};
use tokio::time::MissedTickBehavior;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use super::cli::Options;
use super::load::{self, LoadOutcome, LoadSpec};
use super::mint_scenario::mint;
use super::prepare::{BenchApp, authorized, bearer, create_user_requests, identities};
use super::results::{Call, FloodMeasurement, FloodTally, Results, Subject};
use super::scenarios::{Setup, create_user};
use super::{BenchError, BenchResult, Context};

/// The address the flood comes from. The legitimate calls keep the
/// default source, 127.0.0.1; Linux routes all of 127.0.0.0/8 to
/// loopback, so a socket may bind this one without any set-up.
pub const FLOOD_SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// The flood's rate over the legitimate calls' rate.
pub const FLOOD_FACTOR: f64 = 10.0;
/// The flood's calls in flight at most: past it a due call is skipped
/// (and counted), so that a slow answer cannot pile up tasks.
const MAX_IN_FLIGHT: usize = 512;
/// HTTP/2 connections of the flood to each service.
const FLOOD_CHANNELS: usize = 4;
/// Made-up credentials of each kind, used in turn.
const CREDENTIALS: usize = 1_000;
/// How often the flood sends what has come due.
const TICK: Duration = Duration::from_millis(1);
/// How long the flood waits for its last answers when told to stop (the
/// services answer every call within 30 s).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(35);

/// Measures `MintAuthCode`, then `CreateUser` for new users, each alone
/// and flooded, `--rounds` times in turns, and records the median run of
/// each by p99 (paced runs all have the same throughput).
pub async fn run(setup: &Setup, results: &mut Results) -> BenchResult<()> {
    let credentials = Arc::new(Credentials::made_up(&setup.app)?);
    for call in [Call::MintAuthCode, Call::CreateUserNew] {
        let measurement = measure(setup, call, &credentials).await?;
        eprintln!(
            "devicelink-bench: flood {} c={} at {:.0}/s: p99 {:.2} ms alone, {:.2} ms flooded; \
             legitimate refused {}; flood {} sent at {:.0}/s, {} refused, answers {:?}",
            call.label(),
            measurement.concurrency,
            measurement.legit_rate,
            measurement.alone.latency_ms(0.99),
            measurement.flooded.latency_ms(0.99),
            measurement.legit_refused(),
            measurement.flood.sent,
            measurement.flood.rate(),
            measurement.flood.refused(),
            measurement.flood.outcomes,
        );
        for (kind, message) in measurement
            .alone
            .error_samples
            .iter()
            .chain(&measurement.flooded.error_samples)
        {
            eprintln!("devicelink-bench:   legitimate {kind}: {message}");
        }
        results.floods.push(measurement);
    }
    Ok(())
}

async fn measure(
    setup: &Setup,
    call: Call,
    credentials: &Arc<Credentials>,
) -> BenchResult<FloodMeasurement> {
    let options: &Options = &setup.options;
    let legit_rate = options.flood_legit_rate(call);
    let flood_rate = legit_rate * FLOOD_FACTOR;
    let concurrency = options.flood_concurrency();
    // Whole seconds of calls at the pace; at least one per task.
    let requests =
        ((legit_rate * options.flood_run_time().as_secs_f64()) as usize).max(concurrency);
    let spec = LoadSpec {
        concurrency,
        warmup: (requests / 10).max(concurrency),
        requests,
        deadline: options.scenario_timeout,
        rate: Some(legit_rate),
    };
    let mut alone = Vec::new();
    let mut flooded = Vec::new();
    let mut flood = FloodTally::default();
    for round in 0..options.rounds {
        alone.push(legitimate(setup, call, spec, &format!("alone-r{round}")).await?);
        let running = Flood::start(setup, Arc::clone(credentials), flood_rate).await?;
        let outcome = legitimate(setup, call, spec, &format!("flooded-r{round}")).await;
        flood.add(&running.stop().await?);
        let outcome = outcome?;
        eprintln!(
            "devicelink-bench: flood {} round {round}: p99 {:.2} ms alone, {:.2} ms flooded",
            call.label(),
            alone.last().map_or(0.0, |alone| alone.latency_ms(0.99)),
            outcome.latency_ms(0.99),
        );
        flooded.push(outcome);
    }
    let p99 = |outcome: &LoadOutcome| outcome.latency_ms(0.99);
    let no_run = || BenchError::new(format!("no run of the flood scenario ({})", call.label()));
    Ok(FloodMeasurement {
        call,
        concurrency,
        legit_rate,
        flood_rate,
        requests,
        alone: load::median_run_by(alone, p99).ok_or_else(no_run)?,
        flooded: load::median_run_by(flooded, p99).ok_or_else(no_run)?,
        flood,
    })
}

/// One paced run of the legitimate `call`; `tag` keeps `CreateUser`'s new
/// users apart from every other run's.
async fn legitimate(
    setup: &Setup,
    call: Call,
    spec: LoadSpec,
    tag: &str,
) -> BenchResult<LoadOutcome> {
    match call {
        Call::MintAuthCode => mint(setup, Subject::Service, setup.authcode, spec).await,
        _ => {
            let (external_ids, device_ids) =
                identities(&format!("flood-{tag}"), "dev", spec.total());
            create_user(setup, spec, &external_ids, device_ids, false, None).await
        }
    }
}

/// The flood's made-up credentials, made before it starts so that its
/// loop only sends.
struct Credentials {
    /// `Bearer <API key>`: right form and checksum, unknown key id.
    api_keys: Vec<MetadataValue<Ascii>>,
    /// `CreateUser` for the run's app with codes never minted.
    create_users: Vec<pb::CreateUserRequest>,
    /// `Bearer <install token>`: right form, no install holds it.
    install_tokens: Vec<MetadataValue<Ascii>>,
}

impl Credentials {
    fn made_up(app: &BenchApp) -> BenchResult<Self> {
        let api_keys = (0..CREDENTIALS)
            .map(|_| bearer(&api_key::generate().text))
            .collect::<BenchResult<_>>()?;
        let codes = (0..CREDENTIALS)
            .map(|_| AuthCode::generate().expose().to_owned())
            .collect();
        let (_, device_ids) = identities("flood", "dev", CREDENTIALS);
        let install_tokens = (0..CREDENTIALS)
            .map(|_| bearer(InstallToken::derive(&AuthCode::generate(), &new_nonce()).expose()))
            .collect::<BenchResult<_>>()?;
        Ok(Self {
            api_keys,
            create_users: create_user_requests(app, codes, device_ids),
            install_tokens,
        })
    }
}

/// The flood's clients, all over connections from [`FLOOD_SOURCE`].
struct FloodClients {
    authcode: Vec<AuthCodeServiceClient<Channel>>,
    registration: Vec<RegistrationServiceClient<Channel>>,
}

impl FloodClients {
    async fn connect(authcode: SocketAddr, registration: SocketAddr) -> BenchResult<Self> {
        let mut clients = Self {
            authcode: Vec::new(),
            registration: Vec::new(),
        };
        for _ in 0..FLOOD_CHANNELS {
            clients
                .authcode
                .push(AuthCodeServiceClient::new(flood_channel(authcode).await?));
            clients.registration.push(RegistrationServiceClient::new(
                flood_channel(registration).await?,
            ));
        }
        Ok(clients)
    }

    /// Call `number` of the flood: a made-up API key, code or install
    /// token, in turn. Resolves to the answer's gRPC code, or `ok`.
    fn call(&self, credentials: &Credentials, number: u64) -> BoxFuture<'static, String> {
        let index = usize::try_from(number / 3).unwrap_or_default();
        let pick = |count: usize| index % count;
        let answer = |result: Result<(), tonic::Status>| match result {
            Ok(()) => "ok".to_owned(),
            Err(status) => format!("{:?}", status.code()),
        };
        match number % 3 {
            0 => {
                let mut client = self.authcode[pick(self.authcode.len())].clone();
                let request = authorized(
                    pb::MintAuthCodeRequest {
                        external_id: format!("flood-{index}"),
                        app_id: String::new(),
                        ..Default::default()
                    },
                    &credentials.api_keys[pick(credentials.api_keys.len())],
                );
                Box::pin(async move { answer(client.mint_auth_code(request).await.map(drop)) })
            }
            1 => {
                let mut client = self.registration[pick(self.registration.len())].clone();
                let request =
                    credentials.create_users[pick(credentials.create_users.len())].clone();
                Box::pin(async move { answer(client.create_user(request).await.map(drop)) })
            }
            _ => {
                let mut client = self.registration[pick(self.registration.len())].clone();
                let request = authorized(
                    pb::GetInstallStatusRequest {},
                    &credentials.install_tokens[pick(credentials.install_tokens.len())],
                );
                Box::pin(async move { answer(client.get_install_status(request).await.map(drop)) })
            }
        }
    }
}

/// A connection to `addr` whose source address is [`FLOOD_SOURCE`].
async fn flood_channel(addr: SocketAddr) -> BenchResult<Channel> {
    Channel::from_shared(format!("http://{addr}"))
        .context(format!("the address {addr}"))?
        .local_address(Some(FLOOD_SOURCE))
        .connect()
        .await
        .context(format!("connecting to {addr} from {FLOOD_SOURCE}"))
}

/// A flood running on its own thread, with a runtime of its own, so that
/// sending it does not queue behind the legitimate calls' client tasks
/// (the two share only the machine's cores, as two clients would).
struct Flood {
    stop: Arc<AtomicBool>,
    done: oneshot::Receiver<FloodTally>,
}

impl Flood {
    /// Connects and starts sending `rate` calls per second.
    async fn start(setup: &Setup, credentials: Arc<Credentials>, rate: f64) -> BenchResult<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_sender, ready) = oneshot::channel::<BenchResult<()>>();
        let (done_sender, done) = oneshot::channel();
        let (authcode, registration) = (setup.authcode, setup.registration);
        let stopped = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("flood".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                let runtime = match runtime {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready_sender.send(Err(BenchError::new(format!(
                            "no runtime for the flood: {error}"
                        ))));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match FloodClients::connect(authcode, registration).await {
                        Ok(clients) => {
                            let _ = ready_sender.send(Ok(()));
                            let tally = send(&clients, &credentials, rate, &stopped).await;
                            let _ = done_sender.send(tally);
                        }
                        Err(error) => {
                            let _ = ready_sender.send(Err(error));
                        }
                    }
                });
            })
            .context("starting the flood's thread")?;
        ready
            .await
            .context("the flood's thread ended before it connected")??;
        Ok(Self { stop, done })
    }

    /// Stops sending and returns the tally once the calls in flight have
    /// answered.
    async fn stop(self) -> BenchResult<FloodTally> {
        self.stop.store(true, Ordering::Relaxed);
        self.done
            .await
            .context("the flood's thread ended without its tally")
    }
}

/// Sends, every [`TICK`], the calls that have come due at `rate`, until
/// `stop`; then waits for the answers.
async fn send(
    clients: &FloodClients,
    credentials: &Credentials,
    rate: f64,
    stop: &AtomicBool,
) -> FloodTally {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let answers: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let mut tally = FloodTally::default();
    let started = Instant::now();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    while !stop.load(Ordering::Relaxed) {
        ticker.tick().await;
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        while tally.sent + tally.skipped < due {
            let number = tally.sent + tally.skipped;
            let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
                tally.skipped += 1;
                continue;
            };
            tally.sent += 1;
            let call = clients.call(credentials, number);
            let answers = Arc::clone(&answers);
            tokio::spawn(async move {
                let answer = call.await;
                *answers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(answer)
                    .or_default() += 1;
                drop(permit);
            });
        }
    }
    tally.elapsed = started.elapsed();
    let all = u32::try_from(MAX_IN_FLIGHT).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN_TIMEOUT, in_flight.acquire_many(all))
        .await
        .is_err()
    {
        eprintln!("devicelink-bench: WARNING: flood calls still in flight after the drain timeout");
    }
    tally.outcomes = std::mem::take(&mut *answers.lock().unwrap_or_else(PoisonError::into_inner));
    tally
}
