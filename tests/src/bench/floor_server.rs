//! Floors (a) and (b): tonic servers that do nothing, or one Redis write,
//! run as child processes of the benchmark (`--serve-floor`).
//!
//! They implement devicelink's own `AuthCodeService`, so that the load
//! generator drives them exactly as it drives `MintAuthCode`: the same
//! proto, the same message sizes, the same HTTP/2 channels. What differs
//! from the real service is only the handler, which is the point.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use devicelink_shared::pb;
use devicelink_shared::pb::auth_code_service_server::{AuthCodeService, AuthCodeServiceServer};
use redis::aio::ConnectionManager;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use super::cli::FloorKind;
use super::procs::LISTENING;
use super::{BenchResult, Context};

/// A code-shaped answer: 52 characters, like a real code.
const CONSTANT_CODE: &str = "floorfloorfloorfloorfloorfloorfloorfloorfloorfloor22";
/// What floor (b)'s keys start with, after the run's key prefix.
pub const FLOOR_B_KEYS: &str = "floorb:";
/// How long floor (b)'s keys live, as the benchmark's codes do
/// ([`super::run::BENCH_CODE_TTL_SECS`]).
const KEY_TTL_SECS: u64 = super::run::BENCH_CODE_TTL_SECS;
/// The size of the value floor (b) writes, about that of a code record
/// (app id, external id, key id, time).
const VALUE_LEN: usize = 100;

/// `AuthCodeService` whose `MintAuthCode` does the floor's work and answers
/// a constant.
#[derive(Clone)]
struct FloorService {
    /// `None` for floor (a).
    redis: Option<ConnectionManager>,
    key_prefix: String,
    value: Vec<u8>,
}

#[tonic::async_trait]
impl AuthCodeService for FloorService {
    async fn mint_auth_code(
        &self,
        _request: Request<pb::MintAuthCodeRequest>,
    ) -> Result<Response<pb::MintAuthCodeResponse>, Status> {
        if let Some(redis) = &self.redis {
            // A fresh random key per call, hash-sized like a code's key.
            let key = format!(
                "{}{FLOOR_B_KEYS}{}{}",
                self.key_prefix,
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            );
            redis::cmd("SET")
                .arg(key)
                .arg(&self.value)
                .arg("EX")
                .arg(KEY_TTL_SECS)
                .query_async::<()>(&mut redis.clone())
                .await
                .map_err(|error| Status::unavailable(format!("redis: {error}")))?;
        }
        let expires_at = SystemTime::now() + Duration::from_secs(KEY_TTL_SECS);
        Ok(Response::new(pb::MintAuthCodeResponse {
            auth_code: CONSTANT_CODE.into(),
            expires_at: Some(prost_types::Timestamp::from(expires_at)),
            app_id: String::new(),
        }))
    }
}

/// Serves floor `kind` on `listen`, prints `listening on <addr>`, and
/// serves until its standard input closes (the benchmark went away) or a
/// signal ends the process.
pub async fn serve(kind: FloorKind, listen: SocketAddr) -> BenchResult<()> {
    let redis = match kind {
        FloorKind::Echo => None,
        FloorKind::RedisSet => {
            let url = std::env::var(devicelink_shared::config::REDIS_URL)
                .context("floor redis-set needs REDIS_URL")?;
            let client = redis::Client::open(url).context("REDIS_URL")?;
            Some(
                ConnectionManager::new(client)
                    .await
                    .context("connecting to Redis")?,
            )
        }
    };
    let key_prefix = std::env::var(devicelink_shared::config::REDIS_KEY_PREFIX)
        .unwrap_or_else(|_| "devicelink-bench:".into());
    let service = FloorService {
        redis,
        key_prefix,
        value: vec![b'v'; VALUE_LEN],
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .context(format!("binding {listen}"))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{LISTENING}{addr}").context("printing the address")?;
    stdout.flush().context("printing the address")?;

    let (closed, stdin_closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        // Nothing is ever sent: this returns at end-of-file or error.
        let mut line = String::new();
        while std::io::stdin()
            .lock()
            .read_line(&mut line)
            .is_ok_and(|read| read > 0)
        {
            line.clear();
        }
        let _ = closed.send(());
    });
    tonic::transport::Server::builder()
        .add_service(AuthCodeServiceServer::new(service))
        // As the services accept: without TCP_NODELAY, Nagle's algorithm
        // and delayed ACKs hold some answers back by 40 ms.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async {
                let _ = stdin_closed.await;
            },
        )
        .await
        .context("serving")
}
