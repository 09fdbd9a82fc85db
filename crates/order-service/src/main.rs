use order_service::{Application, SERVICE_NAME, settings::Settings};
use platform::{config::EXIT_CONFIG, http::Server};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    platform::install_crypto_provider();
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{SERVICE_NAME}: {error}");
            return std::process::ExitCode::from(EXIT_CONFIG);
        }
    };
    let (telemetry, shutdown) = (settings.telemetry.clone(), settings.shutdown.clone());
    let build = Application::build(settings);
    Server::run_service(SERVICE_NAME, &telemetry, &shutdown, build).await
}
