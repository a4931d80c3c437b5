//! Log set-up: readable lines for people, JSON lines in production
//! (`LOG_FORMAT=json`), filtered by `RUST_LOG`.

use tracing_subscriber::EnvFilter;

use crate::config::{LOG_FORMAT, optional};

/// The filter used when `RUST_LOG` is unset: the services at `info`, the
/// HTTP/2 stack quiet.
const DEFAULT_FILTER: &str = "info,h2=warn,hyper=warn,tower=warn";

/// Installs the global subscriber. Safe to call more than once (tests start
/// several services in one process): later calls do nothing.
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let json = optional(LOG_FORMAT).is_some_and(|format| format.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let _already_set = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
