//! The load generator's gRPC client: unary calls over raw HTTP/2 (`h2`),
//! from several threads, each with a current-thread runtime and
//! connections of its own, so that the client is not what a measurement
//! measures.
//!
//! A tonic client costs several times the CPU per call of the bare HTTP/2
//! exchange (tower layers, a buffer task per channel, encoding and
//! decoding each message); with one core left for the client on this
//! machine, it held floor (a) to half of what h2load drives it to. Here,
//! a call is: a request head (a handful of static headers and the
//! caller's `authorization`), a body encoded before the clock starts (the
//! 5-byte gRPC frame and the prost bytes, shared, never copied), the
//! answer's DATA frames handed back to the connection's flow control, and
//! `grpc-status` from the trailers. A call succeeds only with
//! `grpc-status: 0`; its message is decoded only when the scenario checks
//! it ([`GrpcCalls::check`]).
//!
//! Tasks are spread over connections as tonic channels were
//! ([`connection_count`]: one per 16 tasks, at least two), and connections
//! over threads; request numbers come from one counter shared by all
//! ([`super::load::PhaseClock`]), and each task tallies its own calls as in
//! [`super::load`].

use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use h2::client::SendRequest;
use hdrhistogram::Histogram;
use http::header::{AUTHORIZATION, CONTENT_TYPE, TE};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use tokio::net::TcpStream;

use super::cpu::{CpuPerCall, CpuWatch};
use super::load::{
    CallError, LoadOutcome, LoadSpec, PhaseClock, TaskTally, new_histogram, task_loop,
};
use super::{BenchError, BenchResult, Context};

/// Tasks per HTTP/2 connection, as the tonic channels had.
const TASKS_PER_CONNECTION: usize = 16;
/// At least this many connections, so that one connection's ordering is
/// never the whole story.
const MIN_CONNECTIONS: usize = 2;
/// The gRPC frame header: a compression flag and a 4-byte length.
const FRAME_HEADER_LEN: usize = 5;

/// The paths of the calls the benchmark makes.
pub mod path {
    /// `AuthCodeService.MintAuthCode` (the service and floors (a), (b)).
    pub const MINT_AUTH_CODE: &str = "/devicelink.v1.AuthCodeService/MintAuthCode";
    /// `RegistrationService.CreateUser`.
    pub const CREATE_USER: &str = "/devicelink.v1.RegistrationService/CreateUser";
    /// `RegistrationService.GetInstallStatus`.
    pub const GET_INSTALL_STATUS: &str = "/devicelink.v1.RegistrationService/GetInstallStatus";
}

/// Checks one answer's message (without its frame header): request
/// number, message bytes.
pub type Check = Arc<dyn Fn(usize, &[u8]) -> Result<(), CallError> + Send + Sync>;

/// What a scenario sends: request `i` carries `bodies[i % len]` and
/// `authorizations[i % len]` (none when empty).
pub struct GrpcCalls {
    /// The method's path, e.g. [`path::MINT_AUTH_CODE`].
    pub path: &'static str,
    /// `authorization` header values.
    pub authorizations: Vec<HeaderValue>,
    /// Framed request messages ([`frame`]).
    pub bodies: Vec<Bytes>,
    /// Checks each answer's message, when the scenario needs to.
    pub check: Option<Check>,
}

impl GrpcCalls {
    fn authorization(&self, request: usize) -> Option<&HeaderValue> {
        (!self.authorizations.is_empty())
            .then(|| &self.authorizations[request % self.authorizations.len()])
    }

    fn body(&self, request: usize) -> Bytes {
        if self.bodies.is_empty() {
            return frame(&());
        }
        self.bodies[request % self.bodies.len()].clone()
    }
}

/// `message` as a gRPC length-prefixed message, uncompressed.
pub fn frame(message: &impl prost::Message) -> Bytes {
    let len = message.encoded_len();
    let mut body = BytesMut::with_capacity(FRAME_HEADER_LEN + len);
    body.put_u8(0);
    // A request is far below 4 GiB.
    body.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    // Cannot fail: the buffer has room for `len`.
    let _ = message.encode(&mut body);
    body.freeze()
}

/// The HTTP/2 connections for `concurrency` tasks.
pub fn connection_count(concurrency: usize) -> usize {
    concurrency
        .div_ceil(TASKS_PER_CONNECTION)
        .max(MIN_CONNECTIONS)
}

/// Runs `spec` against `addr` with `calls` from `threads` threads,
/// charging the timed phase's CPU to `watch`'s processes.
pub async fn run(
    spec: LoadSpec,
    addr: SocketAddr,
    calls: Arc<GrpcCalls>,
    threads: usize,
    watch: Option<CpuWatch>,
) -> BenchResult<LoadOutcome> {
    let uri: Uri = format!("http://{addr}{}", calls.path)
        .parse()
        .context(format!("the URI of {}", calls.path))?;
    let empty = new_histogram()?;
    tokio::task::spawn_blocking(move || drive(spec, addr, &uri, &calls, threads, watch, &empty))
        .await
        .context("the load generator's threads")?
}

/// One call, on its own: what a test or a check before and after a
/// measurement needs.
pub async fn call_once(addr: SocketAddr, calls: &GrpcCalls, request: usize) -> BenchResult<()> {
    let uri: Uri = format!("http://{addr}{}", calls.path)
        .parse()
        .context(format!("the URI of {}", calls.path))?;
    let sender = connect(addr).await?;
    unary(sender, &uri, calls, request).await.map_err(|error| {
        BenchError::new(format!("{}: {}: {}", calls.path, error.kind, error.message))
    })
}

/// What one client thread did in the timed phase.
struct ThreadOutcome {
    tallies: Vec<TaskTally>,
    started: Instant,
    ended: Instant,
}

/// Starts the threads, lets them connect and warm up, samples CPU, lets
/// them run the timed phase, samples again, and merges their tallies.
fn drive(
    spec: LoadSpec,
    addr: SocketAddr,
    uri: &Uri,
    calls: &GrpcCalls,
    threads: usize,
    watch: Option<CpuWatch>,
    empty: &Histogram<u64>,
) -> BenchResult<LoadOutcome> {
    let connections = connection_count(spec.concurrency);
    let threads = threads.clamp(1, connections);
    // Each thread and this one meet after the warm-up, and again once the
    // CPU has been sampled.
    let barrier = Barrier::new(threads + 1);
    let warmup = PhaseClock::new(&spec, 0..spec.warmup, None);
    let timed = std::sync::OnceLock::new();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let (barrier, warmup, timed) = (&barrier, &warmup, &timed);
                std::thread::Builder::new()
                    .name(format!("bench-client-{thread}"))
                    .spawn_scoped(scope, move || {
                        let job = ThreadJob {
                            spec,
                            addr,
                            uri,
                            calls,
                            thread,
                            threads,
                            connections,
                            empty,
                        };
                        job.run(barrier, warmup, timed)
                    })
            })
            .collect::<Result<_, _>>()
            .context("starting a client thread")?;
        barrier.wait();
        let before = watch.map(|watch| watch.sample());
        // The timed phase's clock starts here, for every thread at once.
        let _ = timed.set(PhaseClock::new(
            &spec,
            spec.warmup..spec.total(),
            Some(spec.deadline),
        ));
        barrier.wait();
        let mut outcome = LoadOutcome::empty(empty);
        let mut span: Option<(Instant, Instant)> = None;
        let mut failure = None;
        for handle in handles {
            match handle.join() {
                Ok(Ok(thread)) => {
                    span = Some(span.map_or((thread.started, thread.ended), |(s, e)| {
                        (s.min(thread.started), e.max(thread.ended))
                    }));
                    for tally in thread.tallies {
                        outcome.merge(tally);
                    }
                }
                Ok(Err(error)) => failure = Some(error),
                Err(_panic) => failure = Some(BenchError::new("a client thread panicked")),
            }
        }
        if let (Some(watch), Some(before)) = (watch, before) {
            outcome.cpu = CpuPerCall::between(&before, &watch.sample(), outcome.answered());
        }
        if let Some(error) = failure {
            return Err(error);
        }
        if let Some((started, ended)) = span {
            outcome.elapsed = ended - started;
        }
        Ok(outcome)
    })
}

/// One client thread's share of a run.
struct ThreadJob<'a> {
    spec: LoadSpec,
    addr: SocketAddr,
    uri: &'a Uri,
    calls: &'a GrpcCalls,
    thread: usize,
    threads: usize,
    connections: usize,
    empty: &'a Histogram<u64>,
}

impl ThreadJob<'_> {
    /// Connects, warms up, meets the others twice, runs the timed phase.
    /// Always meets the others, even when it cannot connect, so that no
    /// thread waits forever.
    fn run(
        &self,
        barrier: &Barrier,
        warmup: &PhaseClock,
        timed: &std::sync::OnceLock<PhaseClock>,
    ) -> BenchResult<ThreadOutcome> {
        let prepared = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("a client thread's runtime")
            .and_then(|runtime| {
                let senders = runtime.block_on(self.connect())?;
                if self.spec.warmup > 0 {
                    runtime.block_on(self.phase(&senders, warmup));
                }
                Ok((runtime, senders))
            });
        barrier.wait();
        barrier.wait();
        let (runtime, senders) = prepared?;
        let clock = timed.get().context("the timed phase's clock was not set")?;
        let tallies = runtime.block_on(self.phase(&senders, clock));
        Ok(ThreadOutcome {
            tallies,
            started: clock.started,
            ended: Instant::now(),
        })
    }

    /// This thread's connections: connection `k` belongs to thread
    /// `k % threads`.
    async fn connect(&self) -> BenchResult<Vec<(usize, SendRequest<Bytes>)>> {
        let mut senders = Vec::new();
        for connection in (self.thread..self.connections).step_by(self.threads) {
            senders.push((connection, connect(self.addr).await?));
        }
        Ok(senders)
    }

    /// This thread's tasks (task `j` uses connection `j % connections`)
    /// until `clock` runs out of requests.
    async fn phase(
        &self,
        senders: &[(usize, SendRequest<Bytes>)],
        clock: &PhaseClock,
    ) -> Vec<TaskTally> {
        let tasks = senders.iter().flat_map(|(connection, sender)| {
            (*connection..self.spec.concurrency.max(1))
                .step_by(self.connections)
                .map(move |_task| {
                    task_loop(clock, self.empty.clone(), move |request| {
                        unary(sender.clone(), self.uri, self.calls, request)
                    })
                })
        });
        // Polled only when woken (`join_all` of a few futures polls every
        // one of them on each wake-up).
        tasks.collect::<FuturesUnordered<_>>().collect().await
    }
}

/// Opens an HTTP/2 connection (prior knowledge, as gRPC clients do) and
/// drives it on the current runtime.
async fn connect(addr: SocketAddr) -> BenchResult<SendRequest<Bytes>> {
    let tcp = TcpStream::connect(addr)
        .await
        .context(format!("connecting to {addr}"))?;
    // As the servers do: without it, Nagle's algorithm and delayed ACKs
    // hold small frames back.
    tcp.set_nodelay(true).context("setting TCP_NODELAY")?;
    let (sender, connection) = h2::client::Builder::new()
        .handshake(tcp)
        .await
        .context(format!("the HTTP/2 handshake with {addr}"))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await
            && !error.is_go_away()
        {
            eprintln!("devicelink-bench: an HTTP/2 connection ended: {error}");
        }
    });
    Ok(sender)
}

fn h2_error(error: h2::Error) -> CallError {
    CallError::new("http2", error.to_string())
}

/// One unary call: request `request` of `calls` on `sender`'s connection.
async fn unary(
    sender: SendRequest<Bytes>,
    uri: &Uri,
    calls: &GrpcCalls,
    request: usize,
) -> Result<(), CallError> {
    let mut head = Request::new(());
    *head.method_mut() = Method::POST;
    *head.uri_mut() = uri.clone();
    let headers = head.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(TE, HeaderValue::from_static("trailers"));
    if let Some(authorization) = calls.authorization(request) {
        headers.insert(AUTHORIZATION, authorization.clone());
    }
    let mut sender = sender.ready().await.map_err(h2_error)?;
    let (response, mut send) = sender.send_request(head, false).map_err(h2_error)?;
    send.send_data(calls.body(request), true)
        .map_err(h2_error)?;
    let (parts, mut body) = response.await.map_err(h2_error)?.into_parts();
    if parts.status != StatusCode::OK {
        return Err(CallError::new(
            format!("http {}", parts.status.as_u16()),
            "the answer is not HTTP 200",
        ));
    }
    // Trailers-only: an error answered in the head.
    if parts.headers.contains_key("grpc-status") {
        return grpc_status(&parts.headers);
    }
    // The message is kept only when it is checked, and copied only when
    // it came in more than one DATA frame.
    let mut message = Bytes::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(h2_error)?;
        let _ = body.flow_control().release_capacity(chunk.len());
        if calls.check.is_some() {
            message = if message.is_empty() {
                chunk
            } else {
                [message, chunk].concat().into()
            };
        }
    }
    let trailers = body
        .trailers()
        .await
        .map_err(h2_error)?
        .ok_or_else(|| CallError::new("no grpc-status", "the answer ended without trailers"))?;
    grpc_status(&trailers)?;
    match &calls.check {
        Some(check) => match message.get(FRAME_HEADER_LEN..) {
            Some(message) => check(request, message),
            None => Err(CallError::new("check", "an answer without a message")),
        },
        None => Ok(()),
    }
}

/// Ok for `grpc-status: 0`; otherwise the code's name as the error's kind,
/// as [`CallError`]'s `From<tonic::Status>` names it, so that tallies
/// read the same whichever client made the call.
fn grpc_status(headers: &http::HeaderMap) -> Result<(), CallError> {
    let Some(status) = headers.get("grpc-status") else {
        return Err(CallError::new(
            "no grpc-status",
            "trailers without grpc-status",
        ));
    };
    if status.as_bytes() == b"0" {
        return Ok(());
    }
    let code = tonic::Code::from_bytes(status.as_bytes());
    let message = headers
        .get("grpc-message")
        .map(|message| percent_decode(message.as_bytes()))
        .unwrap_or_default();
    Err(CallError::new(format!("{code:?}"), message))
}

/// `grpc-message` is percent-encoded; good enough for an error sample.
fn percent_decode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = |at: usize| {
            bytes
                .get(at)
                .and_then(|byte| char::from(*byte).to_digit(16))
        };
        match (bytes[index], hex(index + 1), hex(index + 2)) {
            (b'%', Some(high), Some(low)) => {
                // Two hex digits make a byte.
                out.push(u8::try_from(high * 16 + low).unwrap_or(b'?'));
                index += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use devicelink_shared::pb;
    use prost::Message;

    use super::*;

    #[test]
    fn a_frame_is_the_flag_the_length_and_the_message() {
        let message = pb::MintAuthCodeRequest {
            external_id: "user-1".into(),
            app_id: String::new(),
            ..Default::default()
        };
        let body = frame(&message);
        assert_eq!(&body[..5], &[0, 0, 0, 0, 8]);
        assert_eq!(body.len(), 13);
        assert_eq!(frame(&()).as_ref(), &[0, 0, 0, 0, 0]);
    }

    #[test]
    fn grpc_status_zero_only_is_success() {
        let mut headers = http::HeaderMap::new();
        assert!(grpc_status(&headers).is_err());
        headers.insert("grpc-status", HeaderValue::from_static("0"));
        assert!(grpc_status(&headers).is_ok());
        headers.insert("grpc-status", HeaderValue::from_static("8"));
        headers.insert("grpc-message", HeaderValue::from_static("slow%20down"));
        let error = grpc_status(&headers).expect_err("8 is an error");
        assert_eq!(error.kind, "ResourceExhausted");
        assert_eq!(error.message, "slow down");
    }

    /// Mints a code, or refuses external ids that start with `refuse`.
    struct PickyMinter;

    #[tonic::async_trait]
    impl pb::auth_code_service_server::AuthCodeService for PickyMinter {
        async fn mint_auth_code(
            &self,
            request: tonic::Request<pb::MintAuthCodeRequest>,
        ) -> Result<tonic::Response<pb::MintAuthCodeResponse>, tonic::Status> {
            if request.get_ref().external_id.starts_with("refuse") {
                return Err(tonic::Status::resource_exhausted("slow down"));
            }
            Ok(tonic::Response::new(pb::MintAuthCodeResponse {
                auth_code: "a-code".into(),
                ..Default::default()
            }))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_grpc_status_zero_counts_and_every_request_is_sent_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let addr = listener.local_addr().expect("an address");
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(pb::auth_code_service_server::AuthCodeServiceServer::new(
                    PickyMinter,
                ))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        let body = |external_id: &str| {
            frame(&pb::MintAuthCodeRequest {
                external_id: external_id.into(),
                app_id: String::new(),
                ..Default::default()
            })
        };
        let checked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = Arc::clone(&checked);
        let calls = GrpcCalls {
            path: path::MINT_AUTH_CODE,
            authorizations: vec![HeaderValue::from_static("Bearer x")],
            // Request i sends body i % 4: every fourth is refused.
            bodies: vec![body("a"), body("b"), body("c"), body("refuse")],
            check: Some(Arc::new(move |_request, message| {
                seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let answer = pb::MintAuthCodeResponse::decode(message)
                    .map_err(|error| CallError::new("check", error.to_string()))?;
                assert_eq!(answer.auth_code, "a-code");
                Ok(())
            })),
        };
        let spec = LoadSpec {
            concurrency: 40,
            warmup: 4,
            requests: 400,
            deadline: std::time::Duration::from_secs(20),
            rate: None,
        };
        let outcome = run(spec, addr, Arc::new(calls), 3, Some(CpuWatch::default()))
            .await
            .expect("a run");
        // Requests 4..404: 100 of them are refused.
        assert_eq!(outcome.ok, 300);
        assert_eq!(outcome.errors.get("ResourceExhausted"), Some(&100));
        assert_eq!(outcome.error_count(), 100);
        assert_eq!(outcome.latencies.len(), 300);
        assert_eq!(outcome.not_sent, 0);
        // The warm-up's 3 successes were checked too.
        assert_eq!(checked.load(std::sync::atomic::Ordering::Relaxed), 303);
        assert!(outcome.cpu.is_some_and(|cpu| cpu.client.is_some()));
    }

    #[test]
    fn tasks_spread_over_two_connections_at_least() {
        assert_eq!(connection_count(1), 2);
        assert_eq!(connection_count(16), 2);
        assert_eq!(connection_count(64), 4);
        assert_eq!(connection_count(256), 16);
    }
}
