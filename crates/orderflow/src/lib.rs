//! orderflow in one process: order-service, analytics-service and notification-worker, each
//! assembled from its own library (so the HTTP API, status codes, bodies, health and metrics are
//! the services' own) on embedded backends:
//! - one SQLite file per service (database per service, as in production) under the data
//!   directory, plus the bus's dead-letter store;
//! - an in-memory cache per service in place of Redis;
//! - one in-process bus in place of RabbitMQ, which confirms a publish only once every queue it
//!   reached has handled it, so the outbox relays and the inbox work as they do with a broker.

pub mod settings;

use std::sync::Arc;

use anyhow::Context;
use messaging::{
    MessagingMetrics,
    inprocess::{InProcessBus, ParkedStore},
};
use platform::{Health, Runtime, Shutdown, cache::memory::MemoryCache, http::Server};
use tokio::{runtime::Handle, task::JoinHandle};

pub use settings::Settings;

/// The data files, in the data directory.
pub const ORDER_DB: &str = "order-service.db";
pub const ANALYTICS_DB: &str = "analytics-service.db";
pub const NOTIFICATIONS_DB: &str = "notification-worker.db";
pub const BUS_DB: &str = "bus.db";

/// Where each service's tasks run: in the binary, a runtime of its own per service (its threads
/// mark the log lines with the service's name); in tests, the test's runtime.
#[derive(Clone)]
pub struct Runtimes {
    pub order: Handle,
    pub analytics: Handle,
    pub notifications: Handle,
}

impl Runtimes {
    /// Every service on the caller's runtime.
    pub fn current() -> Runtimes {
        let handle = Handle::current();
        Runtimes { order: handle.clone(), analytics: handle.clone(), notifications: handle }
    }
}

/// The three services, assembled and listening, not serving yet.
pub struct Orderflow {
    order: Server,
    analytics: Server,
    notifications: Server,
    host: String,
}

impl Orderflow {
    /// Opens the data directory and assembles every service on its runtime. The bus is held until
    /// all three have subscribed: nothing pending in an outbox from an earlier run is routed
    /// before every queue that should take it exists.
    pub async fn assemble(settings: &Settings, runtimes: &Runtimes) -> anyhow::Result<Orderflow> {
        std::fs::create_dir_all(settings.data_dir())
            .with_context(|| format!("cannot create the data directory {}", settings.data_dir().display()))?;
        let parked = ParkedStore::open(&settings.data_file(BUS_DB)).await.context("cannot open the bus")?;
        let bus = InProcessBus::new(
            settings.bus.clone(),
            parked,
            MessagingMetrics::unregistered(),
            Shutdown::new(),
        )?;
        bus.hold();
        let notifications =
            runtimes.notifications.spawn(assemble_notifications(settings.clone(), bus.clone())).await??;
        let analytics = runtimes.analytics.spawn(assemble_analytics(settings.clone(), bus.clone())).await??;
        let order = runtimes.order.spawn(assemble_order(settings.clone(), bus.clone())).await??;
        bus.release();
        Ok(Orderflow { order, analytics, notifications, host: settings.host.clone() })
    }

    /// Serves every service on its runtime until [`Running::stop`].
    pub fn run(self, runtimes: &Runtimes) -> Running {
        let service =
            |name, port, health, shutdown, task| RunningService { name, port, health, shutdown, task };
        let order = service(
            order_service::SERVICE_NAME,
            self.order.port(),
            self.order.health(),
            self.order.shutdown(),
            runtimes.order.spawn(self.order.run_until_stopped()),
        );
        let analytics = service(
            analytics_service::SERVICE_NAME,
            self.analytics.port(),
            self.analytics.health(),
            self.analytics.shutdown(),
            runtimes.analytics.spawn(self.analytics.run_until_stopped()),
        );
        let notifications = service(
            notification_worker::SERVICE_NAME,
            self.notifications.port(),
            self.notifications.health(),
            self.notifications.shutdown(),
            runtimes.notifications.spawn(self.notifications.run_until_stopped()),
        );
        Running { services: vec![order, analytics, notifications], host: self.host }
    }
}

async fn assemble_order(settings: Settings, bus: InProcessBus) -> anyhow::Result<Server> {
    let mut runtime = Runtime::new();
    let messaging_metrics = MessagingMetrics::register(&mut runtime.registry);
    let service_settings = settings.order_service();
    let backends = order_service::Backends::embedded(
        &settings.data_file(ORDER_DB),
        &service_settings,
        MemoryCache::new(settings.cache_max_bytes),
        Arc::new(bus.connect(messaging_metrics.clone(), runtime.shutdown.clone())),
    )
    .await?;
    order_service::Application::assemble(service_settings, runtime, messaging_metrics, backends).await
}

async fn assemble_analytics(settings: Settings, bus: InProcessBus) -> anyhow::Result<Server> {
    let mut runtime = Runtime::new();
    let messaging_metrics = MessagingMetrics::register(&mut runtime.registry);
    let backends = analytics_service::Backends::embedded(
        &settings.data_file(ANALYTICS_DB),
        MemoryCache::new(settings.cache_max_bytes),
        Arc::new(bus.connect(messaging_metrics.clone(), runtime.shutdown.clone())),
    )
    .await?;
    analytics_service::Application::assemble(
        settings.analytics_service(),
        runtime,
        messaging_metrics,
        backends,
    )
    .await
}

async fn assemble_notifications(settings: Settings, bus: InProcessBus) -> anyhow::Result<Server> {
    let mut runtime = Runtime::new();
    // The worker's own metrics registry carries the consumer's messaging metrics.
    let messaging_metrics = MessagingMetrics::register(&mut runtime.registry);
    let service_settings = settings.notification_worker();
    let backends = notification_worker::Backends::embedded(
        &settings.data_file(NOTIFICATIONS_DB),
        &service_settings,
        Arc::new(bus.connect(messaging_metrics, runtime.shutdown.clone())),
    )
    .await?;
    notification_worker::Application::assemble(service_settings, runtime, backends).await
}

struct RunningService {
    name: &'static str,
    port: u16,
    health: Health,
    shutdown: Shutdown,
    task: JoinHandle<std::io::Result<()>>,
}

/// The three services, serving.
pub struct Running {
    services: Vec<RunningService>,
    host: String,
}

impl Running {
    /// Each service's name and base URL.
    pub fn addresses(&self) -> Vec<(&'static str, String)> {
        let host = if self.host == "0.0.0.0" { "localhost" } else { self.host.as_str() };
        self.services
            .iter()
            .map(|service| (service.name, format!("http://{host}:{}", service.port)))
            .collect()
    }

    /// The port `service` listens on.
    pub fn port(&self, service: &str) -> Option<u16> {
        self.services.iter().find(|running| running.name == service).map(|running| running.port)
    }

    /// Completes as soon as any service begins to stop (a failed listener stops its service).
    pub async fn any_stopping(&self) {
        let stopping = self.services.iter().map(|service| Box::pin(service.shutdown.requested()));
        futures::future::select_all(stopping).await;
    }

    /// Stops every service gracefully: each reports not ready at once, and after `drain_delay`
    /// stops taking work and finishes what it holds.
    pub async fn stop(&self, drain_delay: std::time::Duration) {
        for service in &self.services {
            service.health.set_shutting_down();
        }
        tokio::time::sleep(drain_delay).await;
        for service in &self.services {
            service.shutdown.trigger();
        }
    }

    /// Waits until every service has stopped; the first failure, if any.
    pub async fn wait(self) -> anyhow::Result<()> {
        let mut result = Ok(());
        for service in self.services {
            let stopped = match service.task.await {
                Ok(served) => served.with_context(|| format!("{} failed", service.name)),
                Err(join_error) => {
                    Err(anyhow::Error::new(join_error).context(format!("{} crashed", service.name)))
                }
            };
            if result.is_ok() {
                result = stopped;
            }
        }
        result
    }
}
