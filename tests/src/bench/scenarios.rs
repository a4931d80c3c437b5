//! The plan of a run: each call at each concurrency, each beside its floor,
//! in an order that keeps the data-growth comparison honest (the 1,000-user
//! measurement runs first on a nearly empty database, the large one last),
//! with the flood scenario ([`flood`]) before the large load.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use devicelink_shared::pb;
use prost::Message;
use tonic::metadata::{Ascii, MetadataValue};

use super::cli::{Only, Options};
use super::cpu::CpuWatch;
use super::flood;
use super::grpc_load::{self, GrpcCalls};
use super::load::{self, CallError, LoadSpec};
use super::mint_scenario::{header, mints, starts_with_field_1};
use super::prepare::{BenchApp, bearer, create_user_requests, identities, mint_codes};
use super::results::{Call, Client, Results, Subject};
use super::sql_floor::SqlFloor;
use super::stores::{self, BulkIds};
use super::{BenchError, BenchResult, Context};

/// The users of the first data-growth measurement.
const SMALL_USER_COUNT: u64 = 1_000;

/// Everything the scenarios run against.
pub struct Setup {
    /// The options of the run.
    pub options: Options,
    /// authcode.
    pub authcode: SocketAddr,
    /// A second authcode that records no mint as an audit event, when the
    /// run started the services.
    pub authcode_without_mint_events: Option<SocketAddr>,
    /// A third authcode with every rate limit off, when the run started
    /// the services.
    pub authcode_without_limits: Option<SocketAddr>,
    /// registration.
    pub registration: SocketAddr,
    /// Floor (a).
    pub echo: SocketAddr,
    /// Floor (b).
    pub redis_set: SocketAddr,
    /// The database the services use.
    pub database_url: String,
    /// `DATABASE_URL` as given: a role that may create databases.
    pub admin_database_url: String,
    /// The Redis the services use.
    pub redis_url: String,
    /// The run's Redis key prefix.
    pub key_prefix: String,
    /// The app and its API key.
    pub app: BenchApp,
    /// Where bulk-loaded users take their ids from.
    pub bulk_ids: BulkIds,
    /// The stores' processes, whose CPU each measurement is charged with.
    pub watch: CpuWatch,
    /// The processes answering the calls, when the run started them.
    pub pids: SubjectPids,
}

/// The process ids of the servers a run started (none when it measures
/// running services).
#[derive(Debug, Clone, Copy, Default)]
pub struct SubjectPids {
    /// authcode-service.
    pub authcode: Option<u32>,
    /// The authcode-service that records no mint events.
    pub authcode_without_mint_events: Option<u32>,
    /// The authcode-service without rate limits.
    pub authcode_without_limits: Option<u32>,
    /// registration-service.
    pub registration: Option<u32>,
    /// Floor (a).
    pub echo: Option<u32>,
    /// Floor (b).
    pub redis_set: Option<u32>,
}

impl Setup {
    /// The processes charged for calls to `subject`'s server of `call`.
    pub(super) fn watch_for(&self, call: Call, subject: Subject) -> CpuWatch {
        let pid = match (call, subject) {
            (Call::MintAuthCode, Subject::Service) => self.pids.authcode,
            (_, Subject::ServiceWithoutMintEvents) => self.pids.authcode_without_mint_events,
            (_, Subject::ServiceWithoutLimits) => self.pids.authcode_without_limits,
            (_, Subject::Service) => self.pids.registration,
            (_, Subject::FloorEcho) => self.pids.echo,
            (_, Subject::FloorRedisSet) => self.pids.redis_set,
            // In this process: charged to the client.
            (_, Subject::FloorSql | Subject::FloorPrimaryKey) => None,
        };
        self.watch.with_subject(pid)
    }

    pub(super) fn spec(&self, concurrency: usize, requests: usize) -> LoadSpec {
        LoadSpec {
            concurrency,
            warmup: self.options.warmup_requests(requests, concurrency),
            requests,
            deadline: self.options.scenario_timeout,
            rate: None,
        }
    }
}

/// Runs every scenario, adding each measurement to `results` as it ends.
pub async fn run_all(setup: &Setup, results: &mut Results) -> BenchResult<()> {
    match setup.options.only {
        Some(Only::CreateUser) => {
            let floor = sql_floor(setup).await?;
            create_users(setup, &floor, results).await?;
            return Ok(());
        }
        Some(Only::Flood) => return flood::run(setup, results).await,
        Some(Only::Mint) => return mints(setup, results).await,
        None => {}
    }
    mints(setup, results).await?;

    load_users(setup, results, 1, SMALL_USER_COUNT).await?;
    growth(setup, results, "g1k").await?;

    let floor = sql_floor(setup).await?;
    let tokens = create_users(setup, &floor, results).await?;
    settle(setup).await;
    statuses(setup, &floor, &tokens, results).await?;
    drop(floor);
    flood::run(setup, results).await?;

    if let Some(large) = setup.options.large_user_count {
        load_users(setup, results, SMALL_USER_COUNT + 1, large).await?;
        growth(setup, results, "g1m").await?;
    }
    Ok(())
}

/// Floors (c) and (d) over the run's database, Redis and app.
async fn sql_floor(setup: &Setup) -> BenchResult<SqlFloor> {
    let redis = stores::redis(&setup.redis_url).await?;
    SqlFloor::connect(
        &setup.database_url,
        redis,
        setup.options.pool_size,
        setup.app.app_id,
        &setup.key_prefix,
    )
    .await
}

/// Lets Postgres catch up on what the `CreateUser` scenarios wrote (vacuum,
/// statistics, a checkpoint), so that autovacuum and the checkpointer do not
/// take the cores in the middle of the next measurement. Failing only costs
/// comparability, so it warns.
async fn settle(setup: &Setup) {
    let settled = async {
        let client = stores::connect(&setup.database_url).await?;
        client
            .batch_execute("VACUUM ANALYZE users, installs, redeemed_codes")
            .await
            .context("VACUUM ANALYZE")?;
        let scratch = format!("bench_{}_checkpoint", std::process::id());
        stores::checkpoint(&setup.admin_database_url, &scratch).await
    };
    if let Err(error) = settled.await {
        eprintln!(
            "devicelink-bench: WARNING: Postgres not settled before GetInstallStatus: {error}"
        );
    }
}

/// Loads users `first..=last` straight into Postgres.
async fn load_users(
    setup: &Setup,
    results: &mut Results,
    first: u64,
    last: u64,
) -> BenchResult<()> {
    eprintln!("devicelink-bench: loading users {first}..={last} into Postgres");
    let took = stores::bulk_load_users(
        &setup.database_url,
        setup.app.app_id,
        &setup.bulk_ids,
        first,
        last,
        setup.options.running.is_none(),
    )
    .await?;
    let scratch = format!("bench_{}_checkpoint", std::process::id());
    let settled = stores::checkpoint(&setup.admin_database_url, &scratch).await;
    eprintln!(
        "devicelink-bench: {} users loaded in {:.1} s; {}",
        (last + 1).saturating_sub(first),
        took.as_secs_f64(),
        match &settled {
            Ok(checkpoint) => format!("checkpoint in {:.1} s", checkpoint.as_secs_f64()),
            Err(error) => format!("no checkpoint ({error}): one may overlap what follows"),
        }
    );
    results.bulk_loads.push((last, took));
    Ok(())
}

/// `CreateUser` for new users at the growth concurrency, with however many
/// users the database holds now: the median of `--rounds` runs, since the
/// two states it compares cannot be measured in turns.
async fn growth(setup: &Setup, results: &mut Results, tag: &str) -> BenchResult<()> {
    let users = stores::count_users(&setup.database_url).await?;
    let concurrency = setup.options.growth_concurrency();
    let spec = setup.spec(concurrency, setup.options.create_requests(concurrency));
    let mut runs = Vec::new();
    for round in 0..setup.options.rounds {
        let (external_ids, device_ids) =
            identities(&format!("{tag}-r{round}"), "dev", spec.total());
        runs.push(create_user(setup, spec, &external_ids, device_ids, false, None).await?);
    }
    let median = load::median_run(runs)
        .ok_or_else(|| BenchError::new("no run of the data-growth measurement"))?;
    results.record(
        Call::CreateUserGrowth,
        Subject::Service,
        spec,
        Some(users),
        median,
    );
    Ok(())
}

/// `CreateUser` for new users, then restorations of the same users on new
/// phones, each beside floor (c). Returns the install tokens the
/// restorations handed out.
async fn create_users(
    setup: &Setup,
    floor: &SqlFloor,
    results: &mut Results,
) -> BenchResult<Vec<String>> {
    let tokens = Arc::new(Mutex::new(Vec::new()));
    for &concurrency in &setup.options.create_concurrencies() {
        let spec = setup.spec(concurrency, setup.options.create_requests(concurrency));
        // Service new, floor new, service restore, floor restore.
        let mut runs: [Vec<load::LoadOutcome>; 4] = Default::default();
        for round in 0..setup.options.rounds {
            let service_tag = format!("new-c{concurrency}-r{round}");
            let floor_tag = format!("floor-c{concurrency}-r{round}");
            let (external_ids, first_phones) = identities(&service_tag, "dev", spec.total());
            let (floor_ids, floor_first_phones) = identities(&floor_tag, "dev", spec.total());
            let (_, second_phones) = identities(&service_tag, "dev2", spec.total());
            let (_, floor_second_phones) = identities(&floor_tag, "dev2", spec.total());

            runs[0].push(create_user(setup, spec, &external_ids, first_phones, false, None).await?);
            let redemptions = floor
                .prepare_redemptions(floor_ids.clone(), floor_first_phones)
                .await?;
            runs[1].push(floor_redeem(setup, floor, spec, redemptions).await?);
            runs[2].push(
                create_user(
                    setup,
                    spec,
                    &external_ids,
                    second_phones,
                    true,
                    Some(Arc::clone(&tokens)),
                )
                .await?,
            );
            let redemptions = floor
                .prepare_redemptions(floor_ids, floor_second_phones)
                .await?;
            runs[3].push(floor_redeem(setup, floor, spec, redemptions).await?);
        }
        let [new, floor_new, restore, floor_restore] = runs;
        record_median(results, Call::CreateUserNew, Subject::Service, spec, new)?;
        record_median(
            results,
            Call::CreateUserNew,
            Subject::FloorSql,
            spec,
            floor_new,
        )?;
        record_median(
            results,
            Call::CreateUserRestore,
            Subject::Service,
            spec,
            restore,
        )?;
        record_median(
            results,
            Call::CreateUserRestore,
            Subject::FloorSql,
            spec,
            floor_restore,
        )?;
    }
    let tokens = std::mem::take(&mut *tokens.lock().unwrap_or_else(PoisonError::into_inner));
    Ok(tokens)
}

/// Mints a code per external id (untimed), then redeems them on
/// `device_ids` under load. Each answer must say `restored` as expected;
/// the install tokens go to `tokens` when given.
pub(super) async fn create_user(
    setup: &Setup,
    spec: LoadSpec,
    external_ids: &[String],
    device_ids: Vec<String>,
    restored: bool,
    tokens: Option<Arc<Mutex<Vec<String>>>>,
) -> BenchResult<load::LoadOutcome> {
    let codes = mint_codes(setup.authcode, &setup.app, external_ids).await?;
    let bodies = create_user_requests(&setup.app, codes, device_ids)
        .iter()
        .map(grpc_load::frame)
        .collect();
    let check: grpc_load::Check = Arc::new(move |_request, message| {
        let response = pb::CreateUserResponse::decode(message)
            .map_err(|error| CallError::new("check", format!("an undecodable answer: {error}")))?;
        if response.restored != restored || response.status.is_none() {
            return Err(CallError::new(
                "check",
                format!(
                    "expected restored={restored} with a status, got restored={} status={:?}",
                    response.restored, response.status
                ),
            ));
        }
        if let Some(tokens) = &tokens {
            tokens
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(response.install_token);
        }
        Ok(())
    });
    let calls = GrpcCalls {
        path: grpc_load::path::CREATE_USER,
        authorizations: Vec::new(),
        bodies,
        check: Some(check),
    };
    grpc_load::run(
        spec,
        setup.registration,
        Arc::new(calls),
        setup.options.client_threads,
        Some(setup.watch_for(Call::CreateUserNew, Subject::Service)),
    )
    .await
}

/// Floor (c) over prepared redemptions.
async fn floor_redeem(
    setup: &Setup,
    floor: &SqlFloor,
    spec: LoadSpec,
    redemptions: Vec<super::sql_floor::Redemption>,
) -> BenchResult<load::LoadOutcome> {
    let redemptions = Arc::new(redemptions);
    let floor = floor.clone();
    let watch = setup.watch_for(Call::CreateUserNew, Subject::FloorSql);
    load::run_watched(spec, Some(watch), move |_task, index| {
        let floor = floor.clone();
        let redemptions = Arc::clone(&redemptions);
        async move {
            let redemption = redemptions
                .get(index)
                .ok_or_else(|| CallError::new("check", "no such redemption"))?;
            floor.redeem(redemption).await
        }
    })
    .await
}

/// How many devices poll their status in the `GetInstallStatus` scenario.
/// Each is asked about first in the warm-up, then again and again, as an
/// SDK does.
const POLLING_DEVICES: usize = 1_000;

/// `GetInstallStatus` with the tokens restorations handed out, beside
/// floor (d) looking up installs by token: first as devices poll (a set of
/// [`POLLING_DEVICES`] tokens asked in turn), then the first poll of each
/// of the other tokens, every request a token not asked about before.
async fn statuses(
    setup: &Setup,
    floor: &SqlFloor,
    tokens: &[String],
    results: &mut Results,
) -> BenchResult<()> {
    if tokens.is_empty() {
        return Err(BenchError::new(
            "no install token to ask GetInstallStatus with: every restoration failed",
        ));
    }
    let bearers = tokens
        .iter()
        .map(|token| bearer(token))
        .collect::<BenchResult<Vec<_>>>()?;
    let token_hashes = floor.token_hashes(tokens.len()).await?;
    if token_hashes.is_empty() {
        return Err(BenchError::new("no install token hash in the database"));
    }
    let split = POLLING_DEVICES.min(bearers.len() / 2).max(1);
    let polling = Arc::new(bearers[..split].to_vec());
    let polling_hashes = Arc::new(token_hashes[..split.min(token_hashes.len())].to_vec());
    for &concurrency in &setup.options.status_concurrencies() {
        let spec = setup.spec(concurrency, setup.options.mint_requests(concurrency));
        status_pair(
            setup,
            floor,
            Call::GetInstallStatus,
            spec,
            StatusTokens {
                bearers: Arc::clone(&polling),
                token_hashes: Arc::clone(&polling_hashes),
            },
            setup.options.rounds,
            results,
        )
        .await?;
    }

    let first = Arc::new(bearers[split..].to_vec());
    let first_hashes = Arc::new(token_hashes[split.min(token_hashes.len())..].to_vec());
    let concurrency = setup.options.growth_concurrency();
    let mut spec = setup.spec(concurrency, setup.options.mint_requests(concurrency));
    spec.warmup = spec.warmup.min(first.len() / 10);
    spec.requests = spec
        .requests
        .min(first.len().saturating_sub(spec.warmup))
        .min(first_hashes.len().saturating_sub(spec.warmup));
    if spec.requests > 0 {
        status_pair(
            setup,
            floor,
            Call::GetInstallStatusFirstPoll,
            spec,
            StatusTokens {
                bearers: first,
                token_hashes: first_hashes,
            },
            1,
            results,
        )
        .await?;
    }
    Ok(())
}

/// What a `GetInstallStatus` measurement asks with: the service the install
/// tokens as bearers, floor (d) the token hashes.
struct StatusTokens {
    bearers: Arc<Vec<MetadataValue<Ascii>>>,
    token_hashes: Arc<Vec<Vec<u8>>>,
}

/// One `GetInstallStatus` measurement and its floor (d): request `i` asks
/// with bearer `i` (mod their count), the floor looks up hash `i`.
async fn status_pair(
    setup: &Setup,
    floor: &SqlFloor,
    call: Call,
    spec: LoadSpec,
    StatusTokens {
        bearers,
        token_hashes,
    }: StatusTokens,
    rounds: usize,
    results: &mut Results,
) -> BenchResult<()> {
    let check: grpc_load::Check = Arc::new(|_request, message| {
        if starts_with_field_1(message) {
            Ok(())
        } else {
            Err(CallError::new("check", "no status in the answer"))
        }
    });
    let calls = Arc::new(GrpcCalls {
        path: grpc_load::path::GET_INSTALL_STATUS,
        authorizations: bearers.iter().map(header).collect::<BenchResult<_>>()?,
        bodies: vec![grpc_load::frame(&pb::GetInstallStatusRequest {})],
        check: Some(check),
    });
    let mut service_runs = Vec::new();
    let mut floor_runs = Vec::new();
    for _ in 0..rounds {
        service_runs.push(
            grpc_load::run(
                spec,
                setup.registration,
                Arc::clone(&calls),
                setup.options.client_threads,
                Some(setup.watch_for(call, Subject::Service)),
            )
            .await?,
        );
        let floor = floor.clone();
        let token_hashes = Arc::clone(&token_hashes);
        let watch = setup.watch_for(call, Subject::FloorPrimaryKey);
        floor_runs.push(
            load::run_watched(spec, Some(watch), move |_task, index| {
                let floor = floor.clone();
                let token_hashes = Arc::clone(&token_hashes);
                async move {
                    let token_hash = &token_hashes[index % token_hashes.len()];
                    floor.lookup_status(token_hash).await
                }
            })
            .await?,
        );
    }
    record_median(results, call, Subject::Service, spec, service_runs)?;
    record_median(results, call, Subject::FloorPrimaryKey, spec, floor_runs)
}

/// Records the median of `runs` (see [`load::median_run`]).
pub(super) fn record_median(
    results: &mut Results,
    call: Call,
    subject: Subject,
    spec: LoadSpec,
    runs: Vec<load::LoadOutcome>,
) -> BenchResult<()> {
    record_median_by(results, Client::Bench, call, subject, spec, runs)
}

/// [`record_median`] of runs driven by `client`.
pub(super) fn record_median_by(
    results: &mut Results,
    client: Client,
    call: Call,
    subject: Subject,
    spec: LoadSpec,
    runs: Vec<load::LoadOutcome>,
) -> BenchResult<()> {
    if runs.len() > 1 {
        let rates: Vec<String> = runs
            .iter()
            .map(|run| format!("{:.0}", run.throughput()))
            .collect();
        eprintln!(
            "devicelink-bench: {} c={} {}{}: rounds at {} req/s",
            call.label(),
            spec.concurrency,
            subject.label(),
            match client {
                Client::Bench => "",
                Client::H2load => " (h2load)",
            },
            rates.join(", ")
        );
    }
    let median = load::median_run(runs).ok_or_else(|| {
        BenchError::new(format!("no run of {} ({})", call.label(), subject.label()))
    })?;
    results.record_by(client, call, subject, spec, None, median);
    Ok(())
}
