//! CPU time per call: user + system time of each process that takes part in
//! a call, read from `/proc` before and after a timed phase and divided by
//! the calls answered in it.
//!
//! Throughput on a shared 2-core machine depends on who else is running;
//! the CPU a call costs each process does not, and it is what decides how
//! many cores a deployment needs. The processes:
//! - the subject: the service or floor server answering the calls (none for
//!   floors (c) and (d), which run inside the benchmark's own process);
//! - Redis, found by the `process_id` it reports;
//! - Postgres: the postmaster and all its children (backends, WAL writer,
//!   checkpointer...), plus what children that exited in between had used,
//!   which the kernel adds to the postmaster's `cutime`/`cstime`;
//! - the client: this process, whose figure includes floors (c) and (d),
//!   plus children it reaped in between (h2load).
//!
//! `/proc/<pid>/stat` counts in clock ticks (10 ms): over a 10,000-call
//! phase of floor (a), about 13 ticks, too coarse for a ratio. So the
//! servers, Redis and the Postgres processes are read from each thread's
//! `schedstat` (nanoseconds on the CPU, user and system together); only
//! what `stat` alone knows stays in ticks: this process (its client threads
//! are gone by the second reading, and `stat` keeps their time) and
//! children of the postmaster or of this process that exited in between.
//! A server thread that exits during a phase takes its time with it; the
//! runtimes measured here keep their threads.
//!
//! The stores are shared with whatever else runs on the machine, so their
//! figures include that work too; read them on a quiet machine.

/// Clock ticks per second of `/proc/<pid>/stat`'s times (`USER_HZ`): 100
/// on every Linux architecture this benchmark runs on.
const TICKS_PER_SECOND: u64 = 100;

/// The processes whose CPU a phase is charged with.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuWatch {
    /// The process answering the calls, when it is not this one.
    pub subject: Option<u32>,
    /// redis-server.
    pub redis: Option<u32>,
    /// The Postgres postmaster.
    pub postmaster: Option<u32>,
}

/// Cumulative CPU of each watched process at one moment, in nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    subject: Option<u64>,
    redis: Option<u64>,
    postgres: Option<u64>,
    client: Option<u64>,
}

/// CPU a phase cost each process, per call answered.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuPerCall {
    /// The service or floor server, µs per call.
    pub subject: Option<f64>,
    /// Redis, µs per call.
    pub redis: Option<f64>,
    /// Postgres, all processes, µs per call.
    pub postgres: Option<f64>,
    /// The benchmark process (or h2load), µs per call.
    pub client: Option<f64>,
}

impl CpuWatch {
    /// Reads every watched process now.
    pub fn sample(&self) -> CpuSample {
        CpuSample {
            subject: self.subject.and_then(threads_nanos),
            redis: self.redis.and_then(threads_nanos),
            postgres: self.postmaster.and_then(postgres_nanos),
            client: stat_nanos(std::process::id(), true),
        }
    }

    /// The same processes with another subject.
    pub fn with_subject(self, subject: Option<u32>) -> Self {
        Self { subject, ..self }
    }
}

impl CpuPerCall {
    /// What happened between `before` and `after`, over `calls` calls.
    pub fn between(before: &CpuSample, after: &CpuSample, calls: u64) -> Option<Self> {
        if calls == 0 {
            return None;
        }
        let per_call = |before: Option<u64>, after: Option<u64>| {
            let nanos = after?.checked_sub(before?)?;
            Some(nanos as f64 / 1_000.0 / calls as f64)
        };
        Some(Self {
            subject: per_call(before.subject, after.subject),
            redis: per_call(before.redis, after.redis),
            postgres: per_call(before.postgres, after.postgres),
            client: per_call(before.client, after.client),
        })
    }

    /// Every process together, µs per call (what is known of it).
    pub fn total(&self) -> f64 {
        [self.subject, self.redis, self.postgres, self.client]
            .iter()
            .flatten()
            .sum()
    }
}

const NANOS_PER_TICK: u64 = 1_000_000_000 / TICKS_PER_SECOND;

/// The fields of `/proc/<pid>/stat` after the command name (which may hold
/// spaces and parentheses): index 0 is field 3, `state`.
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    // `state` is a letter: 0 stands in for it so that indexes stay put.
    Some(
        rest.split_whitespace()
            .map(|field| field.parse().unwrap_or(0))
            .collect(),
    )
}

/// Indexes into [`stat_fields`]: fields 4, 14, 15, 16 and 17.
const PPID: usize = 1;
const UTIME: usize = 11;
const STIME: usize = 12;
const CUTIME: usize = 13;
const CSTIME: usize = 14;

/// `utime + stime` of `pid`, with its reaped children's when `children`,
/// in nanoseconds (whole ticks).
fn stat_nanos(pid: u32, children: bool) -> Option<u64> {
    let fields = stat_fields(pid)?;
    let mut ticks = fields.get(UTIME)? + fields.get(STIME)?;
    if children {
        ticks += fields.get(CUTIME)? + fields.get(CSTIME)?;
    }
    Some(ticks * NANOS_PER_TICK)
}

/// Time on the CPU of one thread (`/proc/<pid>/task/<tid>/schedstat`'s
/// first field), in nanoseconds.
fn schedstat_nanos(path: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Time on the CPU of all of `pid`'s live threads, in nanoseconds.
fn threads_nanos(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    for task in tasks.flatten() {
        // A thread that exits while this runs is simply skipped.
        if let Some(tid) = task.file_name().to_str() {
            total += schedstat_nanos(&format!("/proc/{pid}/task/{tid}/schedstat")).unwrap_or(0);
        }
    }
    Some(total)
}

/// The postmaster's and each live child's time (Postgres processes have
/// one thread each), plus the reaped children's, in nanoseconds.
fn postgres_nanos(postmaster: u32) -> Option<u64> {
    let fields = stat_fields(postmaster)?;
    let reaped = (fields.get(CUTIME)? + fields.get(CSTIME)?) * NANOS_PER_TICK;
    let mut total = reaped + threads_nanos(postmaster)?;
    let entries = std::fs::read_dir("/proc").ok()?;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse().ok())
        else {
            continue;
        };
        // A process that exits while this runs is simply skipped.
        if stat_fields(pid).is_some_and(|fields| fields.get(PPID) == Some(&u64::from(postmaster))) {
            total += threads_nanos(pid).unwrap_or(0);
        }
    }
    Some(total)
}

/// The parent of `pid`.
pub fn parent_of(pid: u32) -> Option<u32> {
    stat_fields(pid)?
        .get(PPID)
        .and_then(|ppid| u32::try_from(*ppid).ok())
}

/// `pid` when `/proc/<pid>/comm` starts with one of `names`: a pid a store
/// reported is only watched when it is visible here and is that store
/// (not, say, a pid in another container's namespace).
pub fn visible_as(pid: u32, names: &[&str]) -> Option<u32> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    names
        .iter()
        .any(|name| comm.trim().starts_with(name))
        .then_some(pid)
}

/// The stores' processes, when this machine runs them: Redis by the
/// `process_id` it reports, Postgres by the parent of this session's
/// backend. A store elsewhere (or in another pid namespace) is left out,
/// with a warning, and its columns read `-`.
pub async fn stores_watch(database_url: &str, redis_url: &str) -> CpuWatch {
    let redis = async {
        let mut redis = super::stores::redis(redis_url).await.ok()?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut redis)
            .await
            .ok()?;
        let pid = info
            .lines()
            .find_map(|line| line.strip_prefix("process_id:"))?
            .trim()
            .parse()
            .ok()?;
        visible_as(pid, &["redis"])
    };
    let postmaster = async {
        let client = super::stores::connect(database_url).await.ok()?;
        let row = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .ok()?;
        let backend = u32::try_from(row.get::<_, i32>(0)).ok()?;
        visible_as(parent_of(backend)?, &["postgres", "postmaster"])
    };
    let watch = CpuWatch {
        subject: None,
        redis: redis.await,
        postmaster: postmaster.await,
    };
    for (store, pid) in [("Redis", watch.redis), ("Postgres", watch.postmaster)] {
        if pid.is_none() {
            eprintln!(
                "devicelink-bench: {store}'s process is not visible here: no CPU figures for it"
            );
        }
    }
    watch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_readable_and_burning_cpu_shows() {
        let watch = CpuWatch {
            subject: Some(std::process::id()),
            ..CpuWatch::default()
        };
        let before = watch.sample();
        // 60 ms on the CPU, however long that takes on a busy machine.
        let on_cpu = || schedstat_nanos("/proc/thread-self/schedstat").expect("schedstat");
        let started = on_cpu();
        let mut spin = 0_u64;
        while on_cpu() - started < 60_000_000 {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        let after = watch.sample();
        let per_call = CpuPerCall::between(&before, &after, 10).expect("ten calls");
        // 60 ms of spinning over 10 calls: at least 6,000 µs each (the
        // subject is read in nanoseconds; the client in 10 ms ticks, so a
        // tick less). Other tests run in this process at the same time and
        // add their own CPU, but on two cores not ten times as much: the
        // upper bound catches a unit gone wrong.
        let subject = per_call.subject.expect("this process is visible");
        assert!((5_900.0..=50_000.0).contains(&subject), "{subject}");
        let client = per_call.client.expect("this process is the client");
        assert!((4_900.0..=50_000.0).contains(&client), "{client}");
        assert!(per_call.redis.is_none() && per_call.postgres.is_none());
        assert!(CpuPerCall::between(&before, &after, 0).is_none());
        assert_eq!(
            parent_of(std::process::id()),
            Some(std::os::unix::process::parent_id())
        );
    }
}
