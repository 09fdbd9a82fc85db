//! `orderflow`                          the whole system in one process, data under `./data`
//! `orderflow parked --help`             inspect, replay or discard the messages parked on every
//!                                      queue (also while the system runs)
//!
//! Each service runs on a Tokio runtime of its own, whose threads mark every log line with the
//! service's name; one JSON log stream for the process.

use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use messaging::{
    MessagingMetrics,
    inprocess::{InProcessBus, ParkedStore},
    parked::cli::ParkedCommand,
};
use orderflow::{BUS_DB, Orderflow, Runtimes, Settings};
use platform::{Shutdown, config::EXIT_CONFIG, telemetry::Telemetry};
use tokio::runtime::Runtime;

const NAME: &str = "orderflow";

fn main() -> ExitCode {
    let started = Instant::now();
    platform::install_crypto_provider();
    let command = match ParkedCommand::from_process_args(NAME, env!("CARGO_PKG_DESCRIPTION")) {
        Ok(command) => command,
        Err(exit) => return exit,
    };
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => return fail(&error.to_string(), EXIT_CONFIG),
    };
    let coordinator = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return fail(&format!("cannot start a runtime: {error}"), 1),
    };
    if let Some(command) = command {
        return coordinator.block_on(parked(&command, &settings));
    }
    let services = match ServiceRuntimes::start() {
        Ok(services) => services,
        Err(error) => return fail(&format!("cannot start a runtime: {error}"), 1),
    };
    let code = coordinator.block_on(run(settings, services.handles(), started));
    services.stop();
    code
}

fn fail(message: &str, code: u8) -> ExitCode {
    eprintln!("{NAME}: {message}");
    ExitCode::from(code)
}

/// One multi-threaded runtime per service.
struct ServiceRuntimes {
    order: Runtime,
    analytics: Runtime,
    notifications: Runtime,
}

impl ServiceRuntimes {
    fn start() -> std::io::Result<ServiceRuntimes> {
        Ok(ServiceRuntimes {
            order: service_runtime(order_service::SERVICE_NAME)?,
            analytics: service_runtime(analytics_service::SERVICE_NAME)?,
            notifications: service_runtime(notification_worker::SERVICE_NAME)?,
        })
    }

    fn handles(&self) -> Runtimes {
        Runtimes {
            order: self.order.handle().clone(),
            analytics: self.analytics.handle().clone(),
            notifications: self.notifications.handle().clone(),
        }
    }

    /// The services have stopped by now; this ends what little may linger (idle pool tasks).
    fn stop(self) {
        for runtime in [self.order, self.analytics, self.notifications] {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

fn service_runtime(service: &'static str) -> std::io::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .thread_name(service)
        .on_thread_start(move || platform::telemetry::set_thread_service(service))
        .enable_all()
        .build()
}

async fn run(settings: Settings, runtimes: Runtimes, started: Instant) -> ExitCode {
    let telemetry = match Telemetry::init(NAME, &settings.telemetry) {
        Ok(telemetry) => telemetry,
        Err(error) => return fail(&error.to_string(), EXIT_CONFIG),
    };
    let code = serve(settings, runtimes, started).await;
    telemetry.shutdown(Duration::from_secs(5));
    code
}

async fn serve(settings: Settings, runtimes: Runtimes, started: Instant) -> ExitCode {
    let system = match Orderflow::assemble(&settings, &runtimes).await {
        Ok(system) => system,
        Err(error) => {
            tracing::error!(event = "startup_failed", error = format!("{error:#}"), "could not start");
            eprintln!("{NAME}: could not start: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let running = system.run(&runtimes);
    let ready_in = started.elapsed();
    let addresses = running.addresses();
    for (service, url) in &addresses {
        tracing::info!(event = "listening", service = *service, url = %url, "{service} listening on {url}");
    }
    tracing::info!(
        event = "ready",
        startup_ms = u64::try_from(ready_in.as_millis()).unwrap_or(u64::MAX),
        data_dir = %settings.data_dir().display(),
        "orderflow ready"
    );
    let data_dir =
        std::path::absolute(settings.data_dir()).unwrap_or_else(|_| settings.data_dir().to_owned());
    eprintln!("\norderflow is ready in {} ms; data in {}", ready_in.as_millis(), data_dir.display());
    for (service, url) in &addresses {
        eprintln!("  {service:<20} {url}");
    }
    eprintln!("Ctrl-C stops it.\n");

    tokio::select! {
        () = platform::shutdown::signal() => {
            tracing::info!(event = "shutdown_requested", "shutdown requested, draining");
        }
        () = running.any_stopping() => {
            tracing::error!(event = "service_stopped", "a service stopped on its own; stopping the others");
        }
    }
    running.stop(settings.shutdown.drain_delay()).await;
    match running.wait().await {
        Ok(()) => {
            tracing::info!(event = "stopped", "orderflow stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(event = "server_failed", error = format!("{error:#}"), "a service failed");
            ExitCode::FAILURE
        }
    }
}

/// `parked …` on every queue of the system.
async fn parked(command: &ParkedCommand, settings: &Settings) -> ExitCode {
    let store = match ParkedStore::open(&settings.data_file(BUS_DB)).await {
        Ok(store) => store,
        Err(error) => return fail(&error.to_string(), 1),
    };
    let bus = match InProcessBus::new(
        settings.bus.clone(),
        store,
        MessagingMetrics::unregistered(),
        Shutdown::new(),
    ) {
        Ok(bus) => bus,
        Err(error) => return fail(&error.to_string(), EXIT_CONFIG),
    };
    let queues =
        [&settings.queues.analytics, &settings.queues.notifications, &settings.queues.order_processed];
    let queues = queues.map(String::as_str);
    let code = command.main(NAME, &bus, &queues).await;
    bus.parked_store().close().await;
    code
}
