//! `registration-service`: reads its configuration, migrates, serves.

/// mimalloc instead of the system allocator: a call allocates and frees
/// dozens of small buffers (HTTP/2 frames, protobuf, Redis replies), and
/// glibc's malloc spent about a tenth of a mint's CPU doing so.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use devicelink_registration::config::migrate_only_from_env;
use devicelink_registration::{Application, RegistrationConfig, migrate_only};
use devicelink_shared::config::{
    ConfigError, DATABASE_DIRECT_URL, DATABASE_URL, EXIT_BAD_CONFIG, optional, required,
};
use devicelink_shared::status::error_chain;

#[tokio::main]
async fn main() {
    let telemetry = devicelink_shared::telemetry::init_or_exit("registration-service");
    devicelink_shared::metrics_catalog::start_counters(
        devicelink_shared::metrics_catalog::REGISTRATION_COUNTERS,
    );
    if migrate_only_from_env().unwrap_or_else(|error| bad_config(&error)) {
        // The migration step needs the database alone.
        let database_url = required(DATABASE_URL).unwrap_or_else(|error| bad_config(&error));
        let direct_url = optional(DATABASE_DIRECT_URL);
        match migrate_only(&database_url, direct_url.as_deref()).await {
            Ok(()) => {
                tracing::info!("schema is up to date");
                telemetry.shutdown();
                return;
            }
            Err(error) => {
                tracing::error!(error = %error_chain(&error), "migration failed");
                std::process::exit(error.exit_code());
            }
        }
    }
    let config = RegistrationConfig::from_env().unwrap_or_else(|error| bad_config(&error));
    let application = match Application::build(config).await {
        Ok(application) => application,
        Err(error) => {
            tracing::error!(error = %error_chain(&error), "registration-service could not start");
            std::process::exit(error.exit_code());
        }
    };
    tracing::info!(
        addr = %application.local_addr(),
        admin_addr = %application.admin_addr(),
        "registration-service listening"
    );
    if let Err(error) = application
        .run_until_stopped(devicelink_shared::shutdown::signal_then_force())
        .await
    {
        tracing::error!(error = %error_chain(&error), "registration-service stopped with an error");
        std::process::exit(error.exit_code());
    }
    tracing::info!("registration-service stopped");
    telemetry.shutdown();
}

fn bad_config(error: &ConfigError) -> ! {
    eprintln!("registration-service: bad configuration: {error}");
    std::process::exit(EXIT_BAD_CONFIG);
}
