use order_service::{Application, SERVICE_NAME, settings::Settings};
use platform::telemetry::Telemetry;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    platform::install_crypto_provider();
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{SERVICE_NAME}: {error}");
            return std::process::ExitCode::from(64);
        }
    };
    let telemetry = match Telemetry::init(SERVICE_NAME, &settings.telemetry) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("{SERVICE_NAME}: {error}");
            return std::process::ExitCode::from(64);
        }
    };
    let code = run(settings).await;
    telemetry.shutdown(std::time::Duration::from_secs(5));
    code
}

async fn run(settings: Settings) -> std::process::ExitCode {
    let drain_delay = settings.shutdown.drain_delay();
    let application = match Application::build(settings).await {
        Ok(application) => application,
        Err(error) => {
            tracing::error!(event = "startup_failed", error = format!("{error:#}"), "could not start");
            return std::process::ExitCode::FAILURE;
        }
    };
    platform::shutdown::trigger_on_signal(application.health(), application.shutdown(), drain_delay);
    tracing::info!(event = "listening", port = application.port(), "{SERVICE_NAME} listening");
    match application.run_until_stopped().await {
        Ok(()) => {
            tracing::info!(event = "stopped", "{SERVICE_NAME} stopped");
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(event = "server_failed", error = %error, "server failed");
            std::process::ExitCode::FAILURE
        }
    }
}
