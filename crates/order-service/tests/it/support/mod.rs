//! Runs order-service in-process on either backend, isolated per test:
//! - `Real`: the real servers, with its own database, exchange and queue names and Redis key
//!   prefix, all removed when the app is dropped (also when the test fails);
//! - `Embedded`: SQLite files in a temporary directory of its own, an in-memory cache and an
//!   in-process bus, as the one-process binary runs it; the directory is removed when dropped.
//!
//! Both go through `Application::assemble`, so the HTTP code under test is the same.

use std::{sync::Arc, time::Duration};

use messaging::{
    MessagingMetrics,
    inprocess::{InProcessBus, InProcessSettings, ParkedStore},
};
use order_service::{Application, Backends, settings::Settings, store::sqlite};
use platform::{Runtime, Shutdown, cache::memory::MemoryCache, http::Server};
use serde_json::Value;
use sqlx::{MySqlPool, SqlitePool};
pub use test_support::{
    Backend, EventListener, Isolation, Listener, TempDir, TestDatabase, eventually, on_both_backends,
    unique_name,
};

/// The service's database, to look behind the API.
pub enum TestDb {
    MySql(MySqlPool),
    Sqlite(SqlitePool),
}

impl TestDb {
    /// The single integer `sql` selects (written to run on both dialects).
    pub async fn scalar(&self, sql: &'static str) -> i64 {
        match self {
            TestDb::MySql(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
            TestDb::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
        }
        .expect("scalar query")
    }

    /// The single integer `sql` selects for the row with id `id` (bound to its one `?`).
    pub async fn scalar_for(&self, sql: &'static str, id: uuid::Uuid) -> i64 {
        match self {
            TestDb::MySql(pool) => sqlx::query_scalar(sql).bind(id).fetch_one(pool).await,
            TestDb::Sqlite(pool) => sqlx::query_scalar(sql).bind(id).fetch_one(pool).await,
        }
        .expect("scalar query")
    }

    async fn close(&self) {
        match self {
            TestDb::MySql(pool) => pool.close().await,
            TestDb::Sqlite(pool) => pool.close().await,
        }
    }
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub settings: Settings,
    pub name: String,
    pub db: TestDb,
    shutdown: Shutdown,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    /// Removes what the test created when dropped, also when the test fails.
    isolation: Isolation,
    listeners: usize,
}

/// Settings for one isolated test run, pointed at the local servers.
pub fn test_settings(name: &str, database: &TestDatabase) -> Settings {
    let mut settings = Settings::default();
    settings.http.host = "127.0.0.1".into();
    settings.http.port = 0;
    settings.shutdown.grace_period_seconds = 5;
    settings.database.url = Some(database.url());
    settings.redis.url = Some(test_support::redis_url());
    settings.redis.key_prefix = format!("{name}:");
    settings.rabbitmq.url = Some(test_support::amqp_url());
    settings.rabbitmq.exchange = format!("{name}.orders");
    settings.rabbitmq.retry_delays_ms = vec![100, 200];
    settings.queues = test_support::isolated_queues(name);
    settings.outbox.poll_interval_ms = 100;
    settings.outbox.retry_base_ms = 100;
    settings.outbox.retry_max_ms = 500;
    settings
}

/// The in-process bus as the tests run it: retries as short as the real tests' retry queues.
pub fn bus_settings() -> InProcessSettings {
    InProcessSettings { retry_delays_ms: vec![100, 200], ..InProcessSettings::default() }
}

impl TestApp {
    /// On the real servers.
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// On the real servers, with test settings adjusted by `adjust`.
    pub async fn spawn_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
        let name = unique_name();
        let database = TestDatabase::create().await.expect("create test database");
        let mut settings = test_settings(&name, &database);
        adjust(&mut settings);
        let pool = MySqlPool::connect(&database.url()).await.expect("connect to the test database");
        let isolation =
            Isolation::real(database, &settings.queues, &settings.rabbitmq, &settings.redis.key_prefix).await;
        init_telemetry();
        let application = Application::build(settings.clone()).await.expect("build order-service");
        Self::run(name, settings, application, TestDb::MySql(pool), isolation)
    }

    /// On `backend`, with the test settings.
    pub async fn start(backend: Backend) -> TestApp {
        match backend {
            Backend::Real => Self::spawn().await,
            Backend::Embedded => Self::embedded().await,
        }
    }

    /// On SQLite, memory and the in-process bus, in a temporary directory of its own.
    async fn embedded() -> TestApp {
        init_telemetry();
        let name = unique_name();
        let directory = TempDir(std::env::temp_dir().join(&name));
        let mut settings = Settings::default();
        settings.http.host = "127.0.0.1".into();
        settings.http.port = 0;
        settings.shutdown.grace_period_seconds = 5;
        settings.outbox.poll_interval_ms = 100;
        settings.outbox.retry_base_ms = 100;
        settings.outbox.retry_max_ms = 500;

        let database = directory.0.join("orders.db");
        let parked = ParkedStore::open(&directory.0.join("bus.db")).await.expect("open the bus database");
        let mut runtime = Runtime::new();
        let messaging_metrics = MessagingMetrics::register(&mut runtime.registry);
        let bus =
            InProcessBus::new(bus_settings(), parked, messaging_metrics.clone(), runtime.shutdown.clone())
                .expect("bus settings");
        let backends =
            Backends::embedded(&database, &settings, MemoryCache::default(), Arc::new(bus.clone()))
                .await
                .expect("the embedded backends");
        // The test's own connections, to look at what the service stored.
        let pool = sqlite::open(&database).await.expect("open the order database");
        let application = Application::assemble(settings.clone(), runtime, messaging_metrics, backends)
            .await
            .expect("assemble order-service");
        let isolation = Isolation::embedded(directory, bus);
        Self::run(name, settings, application, TestDb::Sqlite(pool), isolation)
    }

    fn run(
        name: String,
        settings: Settings,
        application: Server,
        db: TestDb,
        isolation: Isolation,
    ) -> TestApp {
        let base = format!("http://127.0.0.1:{}", application.port());
        let shutdown = application.shutdown();
        let server = tokio::spawn(application.run_until_stopped());
        TestApp {
            base,
            client: reqwest::Client::new(),
            settings,
            name,
            db,
            shutdown,
            server,
            isolation,
            listeners: 0,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn post_order(&self, body: &Value) -> reqwest::Response {
        self.client.post(self.url("/orders")).json(body).send().await.expect("POST /orders")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        self.db.scalar(sql).await
    }

    /// A queue bound to `routing_key`, to see what the service publishes.
    pub async fn listen(&mut self, routing_key: &str) -> Listener {
        let queue = format!("{}.listener.{}", self.name, self.listeners);
        self.listeners += 1;
        self.isolation.listen(queue, routing_key).await
    }

    /// Publishes an event envelope to the service's exchange (or bus), as another service would;
    /// on the real broker, once the service consumes (a message no queue takes is dropped).
    pub async fn publish(&self, routing_key: &str, event: &Value) {
        if let Isolation::Real { .. } = self.isolation {
            test_support::wait_for_consumer(&self.settings.queues.order_processed, Duration::from_secs(20))
                .await;
        }
        self.isolation.publish_event(routing_key, event).await;
    }

    /// Stops the service and removes everything the test created.
    pub async fn cleanup(self) {
        self.shutdown.trigger();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.server).await;
        self.db.close().await;
        self.isolation.close().await;
    }
}

pub fn init_telemetry() {
    test_support::init_quiet_telemetry("order-service", "info,sqlx=warn");
}

pub fn order_body(customer: &str, amount: &str) -> Value {
    serde_json::from_str(&format!(
        r#"{{"customer_id": "{customer}", "product_id": "product-456", "quantity": 2, "total_amount": {amount}}}"#
    ))
    .unwrap()
}
