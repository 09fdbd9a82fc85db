//! `analytics-service`                 run the service
//! `analytics-service parked --help`   inspect, replay or discard the messages parked in its dead-letter queue

use std::process::ExitCode;

use analytics_service::{Application, SERVICE_NAME, settings::Settings};
use messaging::{parked::cli::ParkedCommand, rabbitmq};
use platform::{config::EXIT_CONFIG, http::Server};

#[tokio::main]
async fn main() -> ExitCode {
    platform::install_crypto_provider();
    let command = match ParkedCommand::from_process_args(SERVICE_NAME, env!("CARGO_PKG_DESCRIPTION")) {
        Ok(command) => command,
        Err(exit) => return exit,
    };
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{SERVICE_NAME}: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(command) = command {
        return rabbitmq::cli::main(&command, SERVICE_NAME, settings.rabbitmq, &settings.queues.analytics)
            .await;
    }
    let (telemetry, shutdown) = (settings.telemetry.clone(), settings.shutdown.clone());
    let build = Application::build(settings);
    Server::run_service(SERVICE_NAME, &telemetry, &shutdown, build).await
}
