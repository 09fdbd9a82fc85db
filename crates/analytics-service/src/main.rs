use std::process::ExitCode;

use analytics_service::{Application, SERVICE_NAME, settings::Settings};
use messaging::rabbitmq::cli::ParkedCommand;
use platform::telemetry::Telemetry;

#[tokio::main]
async fn main() -> ExitCode {
    platform::install_crypto_provider();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match ParkedCommand::parse(&args) {
        Ok(command) => command,
        Err(usage) => {
            eprintln!("{usage}");
            return ExitCode::from(64);
        }
    };
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{SERVICE_NAME}: {error}");
            return ExitCode::from(64);
        }
    };
    if let Some(command) = command {
        return parked(command, settings).await;
    }
    let telemetry = match Telemetry::init(SERVICE_NAME, &settings.telemetry) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("{SERVICE_NAME}: {error}");
            return ExitCode::from(64);
        }
    };
    let code = run(settings).await;
    telemetry.shutdown(std::time::Duration::from_secs(5));
    code
}

async fn run(settings: Settings) -> ExitCode {
    let drain_delay = settings.shutdown.drain_delay();
    let application = match Application::build(settings).await {
        Ok(application) => application,
        Err(error) => {
            tracing::error!(event = "startup_failed", error = format!("{error:#}"), "could not start");
            return ExitCode::FAILURE;
        }
    };
    platform::shutdown::trigger_on_signal(application.health(), application.shutdown(), drain_delay);
    tracing::info!(event = "listening", port = application.port(), "{SERVICE_NAME} listening");
    match application.run_until_stopped().await {
        Ok(()) => {
            tracing::info!(event = "stopped", "{SERVICE_NAME} stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(event = "server_failed", error = %error, "server failed");
            ExitCode::FAILURE
        }
    }
}

/// `analytics-service parked list|replay`: inspect or replay the dead-letter queue.
async fn parked(command: ParkedCommand, settings: Settings) -> ExitCode {
    match command.execute(settings.rabbitmq, &settings.analytics.queue).await {
        Ok(answer) => {
            println!("{}", serde_json::to_string_pretty(&answer).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{SERVICE_NAME}: {error}");
            ExitCode::FAILURE
        }
    }
}
