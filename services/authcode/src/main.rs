//! `authcode-service`: reads the environment, binds, serves until SIGTERM.

/// mimalloc instead of the system allocator: a call allocates and frees
/// dozens of small buffers (HTTP/2 frames, protobuf, Redis replies), and
/// glibc's malloc spent about a tenth of a mint's CPU doing so.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use devicelink_authcode::{Application, AuthCodeConfig};
use devicelink_shared::config::EXIT_BAD_CONFIG;
use devicelink_shared::status::error_chain;

#[tokio::main]
async fn main() {
    let telemetry = devicelink_shared::telemetry::init_or_exit("authcode-service");
    devicelink_shared::metrics_catalog::start_counters(
        devicelink_shared::metrics_catalog::AUTHCODE_COUNTERS,
    );
    let config = match AuthCodeConfig::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("authcode-service: bad configuration: {error}");
            std::process::exit(EXIT_BAD_CONFIG);
        }
    };
    let application = match Application::build(config).await {
        Ok(application) => application,
        Err(error) => {
            tracing::error!(error = %error_chain(&error), "authcode-service could not start");
            std::process::exit(error.exit_code());
        }
    };
    tracing::info!(addr = %application.local_addr(), "authcode-service listening");
    if let Err(error) = application
        .run_until_stopped(devicelink_shared::shutdown::signal_then_force())
        .await
    {
        tracing::error!(error = %error_chain(&error), "authcode-service stopped with an error");
        std::process::exit(error.exit_code());
    }
    tracing::info!("authcode-service stopped");
    telemetry.shutdown();
}
