//! The processes a run starts: the two services and the floor servers, each
//! on a free loopback port, with its output in a log file, stopped with
//! SIGTERM at the end (and killed if the run itself fails).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::cli::FloorKind;
use super::{BenchError, BenchResult, Context};

/// How long a process may take to listen (a debug registration migrates
/// first).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a process may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The line a floor server prints once it listens, followed by its address.
pub const LISTENING: &str = "listening on ";

/// Environment variables a service must not inherit from the shell that
/// runs the benchmark: metrics and trace export would add work the
/// benchmark does not mean to measure, and the bench speaks plaintext.
const NOT_INHERITED: &[&str] = &[
    "METRICS_ADDR",
    "TLS_CERT_FILE",
    "TLS_KEY_FILE",
    "LISTEN_ADDR",
    "TOKIO_WORKER_THREADS",
    "DEVICELINK_MIGRATE_ONLY",
];

/// The rate limits the services run with: every limit ON, so that the
/// benchmark measures what a limit costs a call (the mint's script, the
/// extra round trip of `GetInstallStatus`), but at rates no scenario can
/// reach (one API key mints every code, an external id is minted for more
/// than once, 1,000 polling devices ask for their status again and again),
/// so that nothing is ever refused. Failed credentials keep their default:
/// the benchmark presents none, yet every call still checks its address.
/// Set explicitly, so that a shell's own `RATE_LIMIT_*` cannot change what
/// is measured.
const BENCH_RATE_LIMITS: &[(&str, &str)] = &[
    (
        devicelink_shared::config::RATE_LIMIT_MINT_PER_KEY,
        "1000000/s",
    ),
    (
        devicelink_shared::config::RATE_LIMIT_MINT_PER_EXTERNAL_ID,
        "1000000/s",
    ),
    (
        devicelink_shared::config::RATE_LIMIT_REDEEM_PER_DEVICE,
        "1000000/s",
    ),
    (
        devicelink_shared::config::RATE_LIMIT_INSTALL_PER_TOKEN,
        "1000000/s",
    ),
    (
        devicelink_shared::config::RATE_LIMIT_FAILED_AUTH_PER_ADDRESS,
        "30/min,burst=10",
    ),
    (devicelink_shared::config::TRUSTED_PROXIES, ""),
];

/// A process started by the benchmark. Dropping it kills the process.
pub struct ChildProcess {
    /// A name for the table and the logs, e.g. `registration-service`.
    pub name: String,
    /// Where it serves gRPC.
    pub addr: SocketAddr,
    /// Its stdout and stderr.
    pub log_path: PathBuf,
    child: Option<Child>,
    /// Held open so that a floor server sees end-of-file, and exits, when
    /// the benchmark dies without stopping it.
    _stdin: Option<ChildStdin>,
    _stdout: Option<ChildStdout>,
}

/// A process's memory, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy)]
pub struct MemoryUse {
    /// Peak resident set size (`VmHWM`), in KiB.
    pub peak_rss_kib: u64,
    /// Resident set size now (`VmRSS`), in KiB.
    pub rss_kib: u64,
}

impl ChildProcess {
    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Peak and current resident memory.
    pub fn memory(&self) -> BenchResult<MemoryUse> {
        let pid = self
            .pid()
            .context(format!("{} is not running", self.name))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .context(format!("reading /proc/{pid}/status of {}", self.name))?;
        let field = |name: &str| -> BenchResult<u64> {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                .context(format!("no {name} in /proc/{pid}/status"))
        };
        Ok(MemoryUse {
            peak_rss_kib: field("VmHWM:")?,
            rss_kib: field("VmRSS:")?,
        })
    }

    /// Fails with the end of the log when the process has exited.
    fn ensure_running(&mut self) -> BenchResult<()> {
        let Some(child) = self.child.as_mut() else {
            return Err(BenchError::new(format!("{} was stopped", self.name)));
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(BenchError::new(format!(
                "{} exited ({status}); the end of {}:\n{}",
                self.name,
                self.log_path.display(),
                log_tail(&self.log_path)
            ))),
            Err(error) => Err(BenchError::new(format!(
                "checking on {}: {error}",
                self.name
            ))),
        }
    }

    /// Asks the process to stop with SIGTERM; kills it if it is still there
    /// after [`STOP_TIMEOUT`].
    pub async fn stop(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let terminated = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        let deadline = Instant::now() + STOP_TIMEOUT;
        while terminated && Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "devicelink-bench: {} did not stop on SIGTERM; killing it",
            self.name
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The last lines of a log, to say why a process died.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A loopback address with a port nobody listens on right now.
pub fn free_port() -> BenchResult<SocketAddr> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free loopback port")?;
    listener.local_addr().context("reading a free port")
}

/// Removes what a server must not inherit and sets `vars`, and
/// `TOKIO_WORKER_THREADS` when `threads` is given.
fn configure(command: &mut Command, vars: &[(&str, String)], threads: Option<usize>) {
    for name in NOT_INHERITED {
        command.env_remove(name);
    }
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("OTEL_") {
            command.env_remove(name);
        }
    }
    for (name, value) in vars {
        command.env(name, value);
    }
    if let Some(threads) = threads {
        command.env("TOKIO_WORKER_THREADS", threads.to_string());
    }
}

/// A channel to a server on this machine.
pub async fn channel(addr: SocketAddr) -> BenchResult<Channel> {
    Channel::from_shared(format!("http://{addr}"))
        .context(format!("the address {addr}"))?
        .connect()
        .await
        .context(format!("connecting to {addr}"))
}

/// Starts the service binary `binary` from `bin_dir` as the process the
/// run calls `name` (its log is `<name>.log`), on a free port with `vars`,
/// and waits until its health check says SERVING.
pub async fn start_service(
    bin_dir: &Path,
    (binary, name): (&str, &str),
    vars: &[(&str, String)],
    threads: Option<usize>,
    log_dir: &Path,
) -> BenchResult<ChildProcess> {
    let binary = bin_dir.join(binary);
    if !binary.is_file() {
        return Err(BenchError::new(format!(
            "{} not found: build it (cargo build --release --bins -p devicelink-authcode -p devicelink-registration) or give --bin-dir",
            binary.display()
        )));
    }
    let addr = free_port()?;
    let log_path = log_dir.join(format!("{name}.log"));
    let log = File::create(&log_path).context(format!("creating {}", log_path.display()))?;
    let mut command = Command::new(&binary);
    // The run's limits first, so that a service's own `vars` may override
    // them (the authcode that runs without limits).
    command.envs(BENCH_RATE_LIMITS.iter().copied());
    configure(&mut command, vars, threads);
    command
        .env("LISTEN_ADDR", addr.to_string())
        // As the container images run them (deploy/docker), unless the
        // bench's own environment says otherwise.
        .env(
            "MIMALLOC_ALLOW_THP",
            std::env::var("MIMALLOC_ALLOW_THP").unwrap_or_else(|_| "0".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("sharing a log file")?)
        .stderr(log);
    let child = command
        .spawn()
        .context(format!("starting {}", binary.display()))?;
    let mut process = ChildProcess {
        name: name.to_owned(),
        addr,
        log_path,
        child: Some(child),
        _stdin: None,
        _stdout: None,
    };
    wait_serving(&mut process).await?;
    Ok(process)
}

/// Polls the gRPC health check until SERVING, the process exits, or
/// [`START_TIMEOUT`] passes.
async fn wait_serving(process: &mut ChildProcess) -> BenchResult<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        process.ensure_running()?;
        if let Ok(channel) = channel(process.addr).await {
            let answer = HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await;
            if answer.is_ok_and(|answer| answer.get_ref().status == ServingStatus::Serving as i32) {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(BenchError::new(format!(
                "{} is not SERVING after {} s; the end of {}:\n{}",
                process.name,
                START_TIMEOUT.as_secs(),
                process.log_path.display(),
                log_tail(&process.log_path)
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts this binary as floor server `kind` on a free port and reads the
/// address it prints.
pub async fn start_floor(
    kind: FloorKind,
    vars: &[(&str, String)],
    threads: Option<usize>,
    log_dir: &Path,
) -> BenchResult<ChildProcess> {
    let binary = std::env::current_exe().context("finding this binary to start a floor")?;
    let name = format!("floor-{}", kind.as_arg());
    let log_path = log_dir.join(format!("{name}.log"));
    let log = File::create(&log_path).context(format!("creating {}", log_path.display()))?;
    let mut command = Command::new(&binary);
    configure(&mut command, vars, threads);
    command
        .args(["--serve-floor", kind.as_arg(), "--listen", "127.0.0.1:0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log);
    let mut child = command.spawn().context(format!("starting {name}"))?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().context("a floor's stdout")?;
    let mut process = ChildProcess {
        name: name.clone(),
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        log_path,
        child: Some(child),
        _stdin: stdin,
        _stdout: None,
    };
    let read = tokio::task::spawn_blocking(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let read = reader.read_line(&mut line);
        (read, line, reader.into_inner())
    });
    let (read, line, stdout) = match tokio::time::timeout(START_TIMEOUT, read).await {
        Ok(Ok(result)) => result,
        Ok(Err(error)) => {
            return Err(BenchError::new(format!(
                "reading {name}'s address: {error}"
            )));
        }
        Err(_elapsed) => {
            return Err(BenchError::new(format!(
                "{name} printed no address in {} s",
                START_TIMEOUT.as_secs()
            )));
        }
    };
    process._stdout = Some(stdout);
    if read.is_err() || !line.starts_with(LISTENING) {
        process.ensure_running()?;
        return Err(BenchError::new(format!(
            "{name} printed {line:?} instead of its address"
        )));
    }
    process.addr = line[LISTENING.len()..]
        .trim()
        .parse()
        .context(format!("{name}'s address {line:?}"))?;
    Ok(process)
}
