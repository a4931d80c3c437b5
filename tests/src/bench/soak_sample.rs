//! What the soak records of each service every interval: resident memory,
//! descriptors held and CPU used from `/proc`, and the Postgres pool's use
//! from the service's own metrics endpoint.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::cpu::CpuPerCall;
use super::soak_load::KindStats;
use super::{BenchError, BenchResult, Context};

/// How long a metrics scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// One service as the soak watches it.
#[derive(Debug, Clone)]
pub struct Watched {
    /// `authcode` or `registration`.
    pub name: &'static str,
    /// Its process id.
    pub pid: u32,
    /// Where it serves Prometheus text (`METRICS_ADDR`).
    pub metrics: SocketAddr,
}

/// One service at one sample. A figure that could not be read is `None`
/// (and says so in the table) rather than failing the soak.
#[derive(Debug, Clone)]
pub struct ServiceSample {
    /// The service's name.
    pub name: &'static str,
    /// Resident memory (`VmRSS`), in KiB.
    pub rss_kib: Option<u64>,
    /// Of it, anonymous memory (`RssAnon`: the heap and stacks) and mapped
    /// files (`RssFile`: the binary and libraries), in KiB: which of the
    /// two a step in RSS is.
    pub rss_anon_kib: Option<u64>,
    /// See [`Self::rss_anon_kib`].
    pub rss_file_kib: Option<u64>,
    /// Entries of `/proc/<pid>/fd`.
    pub fds: Option<u64>,
    /// The most `devicelink_db_pool_connections{state="in_use"}` read
    /// in the interval.
    pub pool_in_use: Option<f64>,
    /// `devicelink_db_pool_connections{state="idle"}` at the sample.
    pub pool_idle: Option<f64>,
    /// The most `devicelink_db_pool_waiting` read in the interval.
    pub pool_waiting: Option<f64>,
    /// CPU the service used in the interval, µs per call of the interval
    /// (of every kind: the mix is the same in every interval).
    pub cpu_us_per_call: Option<f64>,
}

/// Everything recorded at the end of one interval.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Seconds since the flow started, at the sample.
    pub elapsed_s: u64,
    /// Each service.
    pub services: Vec<ServiceSample>,
    /// Each kind of call within the interval.
    pub calls: Vec<KindStats>,
    /// Ticks skipped within the interval (see `soak_load`).
    pub skipped: u64,
    /// Watch streams open at the sample.
    pub open_watches: usize,
    /// CPU Postgres, Redis and the load generator (this process) used in
    /// the interval, µs per call; `subject` is not used (each service's
    /// is in its [`ServiceSample`]). The load generator's work per call
    /// is fixed, so its figure moves only with the machine's own speed:
    /// the yardstick for latency that moved with it.
    pub cpu: CpuPerCall,
}

/// The pool's gauges as one scrape read them.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolUse {
    /// Connections in use.
    pub in_use: Option<f64>,
    /// Connections open and idle.
    pub idle: Option<f64>,
    /// Requests waiting for a connection.
    pub waiting: Option<f64>,
}

impl PoolUse {
    /// The higher of each figure: the pool at its busiest in an interval
    /// (idle: the latest).
    pub fn busiest(self, later: Self) -> Self {
        let max = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        Self {
            in_use: max(self.in_use, later.in_use),
            idle: later.idle.or(self.idle),
            waiting: max(self.waiting, later.waiting),
        }
    }
}

/// Reads `service`'s pool gauges now. The services update them with each
/// health probe (every second), so the soak reads them about as often and
/// keeps the busiest ([`PoolUse::busiest`]): one read a minute would
/// nearly always find an idle pool.
pub async fn pool_use(service: &Watched) -> PoolUse {
    let Ok(metrics) = scrape(service.metrics).await else {
        return PoolUse::default();
    };
    PoolUse {
        in_use: gauge_value(
            &metrics,
            "devicelink_db_pool_connections",
            Some("state=\"in_use\""),
        ),
        idle: gauge_value(
            &metrics,
            "devicelink_db_pool_connections",
            Some("state=\"idle\""),
        ),
        waiting: gauge_value(&metrics, "devicelink_db_pool_waiting", None),
    }
}

/// `service`'s figures now, with the pool at its busiest over the interval
/// and the CPU it used per call.
pub async fn sample_service(
    service: &Watched,
    pool: PoolUse,
    cpu_us_per_call: Option<f64>,
) -> ServiceSample {
    // One read, so that the figures add up.
    let status = std::fs::read_to_string(format!("/proc/{}/status", service.pid));
    let status = status.as_deref().unwrap_or_default();
    ServiceSample {
        name: service.name,
        rss_kib: kib(status, "VmRSS:"),
        rss_anon_kib: kib(status, "RssAnon:"),
        rss_file_kib: kib(status, "RssFile:"),
        fds: held_fds(service.pid).await,
        pool_in_use: pool.in_use,
        pool_idle: pool.idle,
        pool_waiting: pool.waiting,
        cpu_us_per_call,
    }
}

/// The figure `field` (`VmRSS:`, `RssAnon:`, ...) of a process's
/// `/proc/<pid>/status`, in KiB.
fn kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// How many reads [`held_fds`] takes, and how far apart.
const FD_READS: usize = 5;
const FD_READ_GAP: std::time::Duration = std::time::Duration::from_millis(20);

/// The descriptors process `pid` holds, rather than has open in passing:
/// the fewest of a few reads over 80 ms. A connection that comes and goes
/// (the soak's own scrape of the metrics endpoint, every second) is not
/// counted, and a descriptor that leaked is in every read.
async fn held_fds(pid: u32) -> Option<u64> {
    let mut fewest = open_fds(pid)?;
    for _ in 1..FD_READS {
        tokio::time::sleep(FD_READ_GAP).await;
        fewest = fewest.min(open_fds(pid)?);
    }
    Some(fewest)
}

/// How many file descriptors process `pid` holds open.
fn open_fds(pid: u32) -> Option<u64> {
    let entries = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(entries.count() as u64)
}

/// The Prometheus text served on `addr`.
async fn scrape(addr: SocketAddr) -> BenchResult<String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .context(format!("connecting to the metrics endpoint {addr}"))?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .context("sending a metrics request")?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .context("reading the metrics")?;
        if !response.starts_with("HTTP/1.1 200") {
            return Err(BenchError::new(format!(
                "{addr} answered {:?}",
                response.lines().next()
            )));
        }
        Ok(response)
    };
    tokio::time::timeout(SCRAPE_TIMEOUT, exchange)
        .await
        .context(format!("no metrics from {addr} within {SCRAPE_TIMEOUT:?}"))?
}

/// The value of gauge `name` whose labels include `label` (any labels when
/// `None`).
fn gauge_value(text: &str, name: &str, label: Option<&str>) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .find(|line| label.is_none_or(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_are_read_by_name_and_label() {
        let text = "# TYPE devicelink_db_pool_connections gauge\n\
            devicelink_db_pool_connections{state=\"in_use\"} 3\n\
            devicelink_db_pool_connections{state=\"idle\"} 13\n\
            devicelink_db_pool_waiting 0\n\
            devicelink_db_pool_waiting_more 7\n";
        let in_use = gauge_value(
            text,
            "devicelink_db_pool_connections",
            Some("state=\"in_use\""),
        );
        assert_eq!(in_use, Some(3.0));
        assert_eq!(
            gauge_value(text, "devicelink_db_pool_waiting", None),
            Some(0.0)
        );
        assert_eq!(gauge_value(text, "devicelink_db_pool_size", None), None);
    }

    #[test]
    fn this_process_has_memory_and_descriptors() {
        let pid = std::process::id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let rss = kib(&status, "VmRSS:").expect("VmRSS");
        let anon = kib(&status, "RssAnon:").expect("RssAnon");
        let file = kib(&status, "RssFile:").expect("RssFile");
        assert!(rss > 0 && anon > 0 && file > 0);
        assert!(anon + file <= rss, "RssShmem makes up the rest");
        assert!(open_fds(pid).is_some_and(|fds| fds >= 3));
    }
}
