//! `registration-service`: reads its configuration, migrates, serves.

use devicelink_registration::{Application, RegistrationConfig, migrate_only};
use devicelink_shared::config::{ConfigError, DATABASE_URL, EXIT_BAD_CONFIG, optional, required};
use devicelink_shared::status::error_chain;

/// Set to `1` to migrate the schema and exit: the migration step of a
/// rollout, run once before the new replicas start.
const MIGRATE_ONLY: &str = "DEVICELINK_MIGRATE_ONLY";

#[tokio::main]
async fn main() {
    let telemetry = devicelink_shared::telemetry::init_or_exit("registration-service");
    if optional(MIGRATE_ONLY).is_some_and(|value| value == "1" || value == "true") {
        // The migration step needs the database alone.
        let database_url = required(DATABASE_URL).unwrap_or_else(|error| bad_config(&error));
        match migrate_only(&database_url).await {
            Ok(()) => {
                tracing::info!("schema is up to date");
                telemetry.shutdown();
                return;
            }
            Err(error) => {
                tracing::error!(error = %error_chain(&error), "migration failed");
                std::process::exit(1);
            }
        }
    }
    let config = RegistrationConfig::from_env().unwrap_or_else(|error| bad_config(&error));
    let application = match Application::build(config).await {
        Ok(application) => application,
        Err(error) => {
            tracing::error!(error = %error_chain(&error), "registration-service could not start");
            std::process::exit(1);
        }
    };
    tracing::info!(addr = %application.local_addr(), "registration-service listening");
    if let Err(error) = application
        .run_until_stopped(devicelink_shared::shutdown::signal_then_force())
        .await
    {
        tracing::error!(error = %error_chain(&error), "registration-service stopped with an error");
        std::process::exit(1);
    }
    tracing::info!("registration-service stopped");
    telemetry.shutdown();
}

fn bad_config(error: &ConfigError) -> ! {
    eprintln!("registration-service: bad configuration: {error}");
    std::process::exit(EXIT_BAD_CONFIG);
}
