//! Every log line of a test binary, recorded for assertions.
//!
//! A test that asserts on logs (no secret in them; a code path that ran)
//! installs [`recorded_logs`] before any service starts. The subscriber is
//! global and installed once per process, so every test of the binary shares
//! one record; each test asserts on what its own flow must or must not have
//! left there.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// The lines written so far by every service of this test binary.
#[derive(Clone, Default)]
pub struct RecordedLogs(Arc<Mutex<Vec<u8>>>);

impl RecordedLogs {
    /// Everything recorded so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

impl Write for RecordedLogs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs, once per process, a global subscriber that records every line
/// `filter` lets through, and returns the record. The first call's filter
/// wins. Call it before [`crate::TestEnv::start`], whose own quieter
/// subscriber then stays out of the way.
///
/// # Panics
/// When another global subscriber was installed first, since the record
/// would then silently stay empty.
pub fn recorded_logs(filter: &str) -> RecordedLogs {
    static RECORD: OnceLock<RecordedLogs> = OnceLock::new();
    RECORD
        .get_or_init(|| {
            let record = RecordedLogs::default();
            let writer = record.clone();
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(move || writer.clone())
                .try_init()
                .expect("no other subscriber was installed before the recorder");
            record
        })
        .clone()
}
