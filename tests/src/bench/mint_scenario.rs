//! The `MintAuthCode` scenario: the service and its twins beside floors
//! (a) and (b), each also driven by h2load, the reference client.

use std::net::SocketAddr;
use std::sync::Arc;

use devicelink_shared::pb;
use http::HeaderValue;
use tonic::metadata::{Ascii, MetadataValue};

use super::floor_server;
use super::grpc_load::{self, GrpcCalls};
use super::h2load::{self, H2loadRun};
use super::load::{self, CallError, LoadSpec};
use super::results::{Call, Client, Results, Subject};
use super::scenarios::{Setup, record_median, record_median_by};
use super::{BenchResult, Context};

/// `MintAuthCode` and floors (a) and (b) at each concurrency, `--rounds`
/// times in turns, each also driven by h2load when it is installed.
pub(super) async fn mints(setup: &Setup, results: &mut Results) -> BenchResult<()> {
    let h2load = h2load::available();
    if !h2load {
        eprintln!(
            "devicelink-bench: h2load not found (apt-get install nghttp2-client): no reference rows"
        );
    }
    // The authcodes without mint events and without limits are measured
    // like the others but not driven by h2load: they are compared with the
    // service, not the client with h2load.
    let subjects: Vec<(Subject, SocketAddr)> = [
        Some((Subject::Service, setup.authcode)),
        setup
            .authcode_without_mint_events
            .map(|addr| (Subject::ServiceWithoutMintEvents, addr)),
        setup
            .authcode_without_limits
            .map(|addr| (Subject::ServiceWithoutLimits, addr)),
        Some((Subject::FloorRedisSet, setup.redis_set)),
        Some((Subject::FloorEcho, setup.echo)),
    ]
    .into_iter()
    .flatten()
    .collect();
    for &concurrency in &setup.options.mint_concurrencies() {
        let spec = setup.spec(concurrency, setup.options.mint_requests(concurrency));
        let mut runs: Vec<Vec<load::LoadOutcome>> = vec![Vec::new(); subjects.len()];
        let mut reference_runs: Vec<Vec<load::LoadOutcome>> = vec![Vec::new(); subjects.len()];
        for _ in 0..setup.options.rounds {
            // Each h2load run right after the same subject's: on a shared
            // machine, the pair compared for the headroom should see the
            // same moment.
            for (((subject, addr), runs), reference_runs) in
                subjects.iter().zip(&mut runs).zip(&mut reference_runs)
            {
                runs.push(mint(setup, *subject, *addr, spec).await?);
                if h2load && !subject.is_service_variant() {
                    reference_runs.push(mint_h2load(setup, *subject, *addr, spec).await?);
                }
            }
        }
        let echo = subjects
            .iter()
            .position(|(subject, _)| *subject == Subject::FloorEcho);
        if let Some(echo) = echo
            && h2load
        {
            let (bench, reference) = (&runs[echo], &reference_runs[echo]);
            let mut ratios: Vec<f64> = bench
                .iter()
                .zip(reference)
                .filter(|(_, reference)| reference.throughput() > 0.0)
                .map(|(bench, reference)| bench.throughput() / reference.throughput())
                .collect();
            ratios.sort_by(f64::total_cmp);
            if let Some(median) = ratios.get(ratios.len() / 2) {
                results.client_headroom.insert(concurrency, *median);
            }
        }
        for ((subject, _), runs) in subjects.iter().zip(runs) {
            record_median(results, Call::MintAuthCode, *subject, spec, runs)?;
        }
        if h2load {
            for ((subject, _), runs) in subjects
                .iter()
                .zip(reference_runs)
                .filter(|(_, runs)| !runs.is_empty())
            {
                record_median_by(
                    results,
                    Client::H2load,
                    Call::MintAuthCode,
                    *subject,
                    spec,
                    runs,
                )?;
            }
        }
    }
    Ok(())
}

/// `authorization: Bearer ..` as an HTTP header value.
pub(super) fn header(value: &MetadataValue<Ascii>) -> BenchResult<HeaderValue> {
    HeaderValue::from_bytes(value.as_encoded_bytes()).context("an authorization header")
}

/// Whether a message's first field is field 1, length-delimited: a
/// non-empty code in `MintAuthCodeResponse`, a status in
/// `GetInstallStatusResponse` (prost writes fields in order), checked
/// without decoding.
pub(super) fn starts_with_field_1(message: &[u8]) -> bool {
    message.first() == Some(&0x0a) && message.len() > 1
}

/// `MintAuthCode` against the service or floor (a) or (b): a new external
/// id per request, each answer must carry a code.
pub(super) async fn mint(
    setup: &Setup,
    subject: Subject,
    addr: SocketAddr,
    spec: LoadSpec,
) -> BenchResult<load::LoadOutcome> {
    let bodies = (0..spec.total())
        .map(|index| {
            grpc_load::frame(&pb::MintAuthCodeRequest {
                external_id: format!("mint-{}-c{}-{index}", subject.key(), spec.concurrency),
                app_id: String::new(),
                ..Default::default()
            })
        })
        .collect();
    let check: grpc_load::Check = Arc::new(|_request, message| {
        if starts_with_field_1(message) {
            Ok(())
        } else {
            Err(CallError::new("check", "an answer without a code"))
        }
    });
    let calls = GrpcCalls {
        path: grpc_load::path::MINT_AUTH_CODE,
        authorizations: vec![header(&setup.app.api_key_bearer)?],
        bodies,
        check: Some(check),
    };
    grpc_load::run(
        spec,
        addr,
        Arc::new(calls),
        setup.options.client_threads,
        Some(setup.watch_for(Call::MintAuthCode, subject)),
    )
    .await
}

/// `MintAuthCode` against the service or floor (a) or (b), driven by
/// h2load with one fixed request; what a successful mint or `SET` writes
/// in Redis confirms its answers.
async fn mint_h2load(
    setup: &Setup,
    subject: Subject,
    addr: SocketAddr,
    spec: LoadSpec,
) -> BenchResult<load::LoadOutcome> {
    let calls = GrpcCalls {
        path: grpc_load::path::MINT_AUTH_CODE,
        authorizations: vec![header(&setup.app.api_key_bearer)?],
        bodies: vec![grpc_load::frame(&pb::MintAuthCodeRequest {
            external_id: format!("mint-h2load-{}", subject.key()),
            app_id: String::new(),
            ..Default::default()
        })],
        check: None,
    };
    let pattern = match subject {
        Subject::Service => Some(format!("{}authcode:*", setup.key_prefix)),
        Subject::FloorRedisSet => Some(format!(
            "{}{}*",
            setup.key_prefix,
            floor_server::FLOOR_B_KEYS
        )),
        _ => None,
    };
    let keys = match pattern {
        Some(pattern) => Some(h2load::KeysWritten {
            redis: h2load::redis_for_counting(&setup.redis_url).await?,
            pattern,
        }),
        None => None,
    };
    H2loadRun {
        addr,
        calls: &calls,
        keys,
        scratch_dir: &h2load::scratch_dir(&setup.options.out_dir),
        name: format!("{}-c{}", subject.key(), spec.concurrency),
    }
    .run(spec, Some(setup.watch_for(Call::MintAuthCode, subject)))
    .await
}
