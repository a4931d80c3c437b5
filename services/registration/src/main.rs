//! `registration-service`: reads its configuration, migrates, serves.

use devicelink_registration::{Application, RegistrationConfig};
use devicelink_shared::config::EXIT_BAD_CONFIG;
use devicelink_shared::status::error_chain;

#[tokio::main]
async fn main() {
    devicelink_shared::telemetry::init();
    let config = match RegistrationConfig::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("registration-service: bad configuration: {error}");
            std::process::exit(EXIT_BAD_CONFIG);
        }
    };
    let application = match Application::build(config).await {
        Ok(application) => application,
        Err(error) => {
            tracing::error!(error = %error_chain(&error), "registration-service could not start");
            std::process::exit(1);
        }
    };
    tracing::info!(addr = %application.local_addr(), "registration-service listening");
    if let Err(error) = application
        .run_until_stopped(devicelink_shared::shutdown::signal())
        .await
    {
        tracing::error!(error = %error_chain(&error), "registration-service stopped with an error");
        std::process::exit(1);
    }
    tracing::info!("registration-service stopped");
}
