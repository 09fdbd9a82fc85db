//! Runs analytics-service in-process on either backend, isolated per test:
//! - `Real`: the real servers, with its own database, exchange and queue names and Redis key
//!   prefix, all removed when the app is dropped (also when the test fails);
//! - `Embedded`: SQLite files in a temporary directory of its own, an in-memory cache and an
//!   in-process bus, as the one-process binary runs it; the directory is removed when dropped.
//!
//! Both go through `Application::assemble`, so the code under test is the same.

use std::{sync::Arc, time::Duration};

use analytics_service::{Application, Backends, settings::Settings};
use messaging::{
    MessagingMetrics,
    inprocess::{InProcessBus, InProcessSettings, ParkedStore},
    parked::{
        DeadLetters,
        cli::{ParkedCommand, Unattended},
    },
    rabbitmq,
};
use platform::{Runtime, Shutdown, cache::memory::MemoryCache, http::Server};
use serde_json::{Value, json};
pub use test_support::{
    Backend, Isolation, Listener, TempDir, TestDatabase, eventually, on_both_backends, unique_name,
};

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub settings: Settings,
    pub name: String,
    shutdown: Shutdown,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    /// Removes what the test created when dropped, also when the test fails.
    isolation: Isolation,
    listeners: usize,
}

pub fn init_telemetry() {
    test_support::init_quiet_telemetry("analytics-service", "info,sqlx=warn");
}

/// Test settings shared by both backends.
fn base_settings() -> Settings {
    let mut settings = Settings::default();
    settings.http.host = "127.0.0.1".into();
    settings.http.port = 0;
    settings.shutdown.grace_period_seconds = 5;
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
    /// On the real servers, with test settings adjusted by `adjust`.
    pub async fn spawn_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
        init_telemetry();
        let name = unique_name();
        let database = TestDatabase::create().await.expect("create test database");
        let mut settings = base_settings();
        settings.database.url = Some(database.url());
        settings.redis.url = Some(test_support::redis_url());
        settings.redis.key_prefix = format!("{name}:");
        settings.rabbitmq.url = Some(test_support::amqp_url());
        settings.rabbitmq.exchange = format!("{name}.orders");
        settings.rabbitmq.retry_delays_ms = vec![100, 200];
        settings.queues = test_support::isolated_queues(&name);
        adjust(&mut settings);
        let isolation =
            Isolation::real(database, &settings.queues, &settings.rabbitmq, &settings.redis.key_prefix).await;
        let application = Application::build(settings.clone()).await.expect("build analytics-service");
        let app = Self::run(name, settings, application, isolation);
        test_support::wait_for_consumer(&app.settings.queues.analytics, Duration::from_secs(20)).await;
        app
    }

    /// On `backend`, with the test settings.
    pub async fn start(backend: Backend) -> TestApp {
        Self::start_with(backend, |_| {}).await
    }

    /// On `backend`, with the test settings adjusted by `adjust`.
    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut Settings)) -> TestApp {
        match backend {
            Backend::Real => Self::spawn_with(adjust).await,
            Backend::Embedded => Self::embedded(adjust).await,
        }
    }

    /// On SQLite, memory and the in-process bus, in a temporary directory of its own.
    async fn embedded(adjust: impl FnOnce(&mut Settings)) -> TestApp {
        init_telemetry();
        let name = unique_name();
        let directory = TempDir(std::env::temp_dir().join(&name));
        let mut settings = base_settings();
        adjust(&mut settings);
        let parked = ParkedStore::open(&directory.0.join("bus.db")).await.expect("open the bus database");
        let mut runtime = Runtime::new();
        let messaging_metrics = MessagingMetrics::register(&mut runtime.registry);
        let bus =
            InProcessBus::new(bus_settings(), parked, messaging_metrics.clone(), runtime.shutdown.clone())
                .expect("bus settings");
        let backends = Backends::embedded(
            &directory.0.join("analytics.db"),
            MemoryCache::default(),
            Arc::new(bus.clone()),
        )
        .await
        .expect("the embedded backends");
        let application = Application::assemble(settings.clone(), runtime, messaging_metrics, backends)
            .await
            .expect("assemble analytics-service");
        let isolation = Isolation::embedded(directory, bus);
        Self::run(name, settings, application, isolation)
    }

    fn run(name: String, settings: Settings, application: Server, isolation: Isolation) -> TestApp {
        let base = format!("http://127.0.0.1:{}", application.port());
        let shutdown = application.shutdown();
        let server = tokio::spawn(application.run_until_stopped());
        TestApp {
            base,
            client: reqwest::Client::new(),
            settings,
            name,
            shutdown,
            server,
            isolation,
            listeners: 0,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert!(response.status().is_success(), "GET {path}: {}", response.status());
        response.json().await.expect("JSON body")
    }

    pub async fn summary(&self) -> Value {
        self.get_json("/analytics/summary").await
    }

    /// Publishes an `OrderCreated` envelope as order-service would.
    pub async fn publish_created(&self, event: &Value) {
        self.publish(
            event["event_id"].as_str(),
            "OrderCreated",
            "order.created",
            event.to_string().as_bytes(),
        )
        .await;
    }

    /// Publishes an `OrderCancelled` envelope as order-service would.
    pub async fn publish_cancelled(&self, event: &Value) {
        let body = event.to_string();
        self.publish(event["event_id"].as_str(), "OrderCancelled", "order.cancelled", body.as_bytes()).await;
    }

    /// Publishes anything on `order.created`, as a misbehaving producer could.
    pub async fn publish_raw(&self, body: &[u8]) {
        self.publish(None, "", "order.created", body).await;
    }

    async fn publish(&self, message_id: Option<&str>, event_type: &str, routing_key: &str, body: &[u8]) {
        self.isolation.publish(message_id, event_type, routing_key, body).await;
    }

    /// A queue bound to `routing_key`, to see what the service publishes.
    pub async fn listen(&mut self, routing_key: &str) -> Listener {
        let queue = format!("{}.listener.{}", self.name, self.listeners);
        self.listeners += 1;
        self.isolation.listen(queue, routing_key).await
    }

    /// Runs a parked command (`parked_command`) on the service's queue, as an operator would; its
    /// JSON answer.
    pub async fn parked(&self, command: ParkedCommand) -> Value {
        let queue = &self.settings.queues.analytics;
        let console = Unattended::answering(true);
        let report = match &self.isolation {
            Isolation::Real { .. } => {
                rabbitmq::cli::execute(&command, self.settings.rabbitmq.clone(), queue, &console).await
            }
            Isolation::Embedded { bus, .. } => command.run(bus, &[queue], &console).await,
        };
        report.expect("parked command").to_json()
    }

    /// Messages ready in the service's queue, and messages parked.
    pub async fn queue_depths(&self) -> (u32, u32) {
        let queue = &self.settings.queues.analytics;
        match &self.isolation {
            Isolation::Real { .. } => {
                let listed = self.parked(parked_command("parked list --limit 1")).await;
                let depth =
                    |key: &str| u32::try_from(listed["queues"][0][key].as_u64().unwrap_or_default()).unwrap();
                (depth("ready"), depth("parked"))
            }
            Isolation::Embedded { bus, .. } => bus.queue_depths(queue).await.expect("queue depths"),
        }
    }

    /// Waits until the summary counts `orders` orders.
    /// Runs `mysql` or `sqlite` (by backend) on the service's database, as an operator (or a
    /// failure) could.
    pub async fn execute_sql(&self, mysql: &'static str, sqlite: &'static str) {
        use sqlx::Connection;
        match &self.isolation {
            Isolation::Real { database, .. } => {
                let mut connection = sqlx::MySqlConnection::connect(&database.url()).await.expect("connect");
                sqlx::query(mysql).execute(&mut connection).await.expect("run the statement");
            }
            Isolation::Embedded { directory, .. } => {
                let url = format!("sqlite://{}", directory.path().join("analytics.db").display());
                let mut connection = sqlx::SqliteConnection::connect(&url).await.expect("connect");
                sqlx::query(sqlite).execute(&mut connection).await.expect("run the statement");
            }
        }
    }

    /// Makes the database refuse (or accept again) every cancellation of a counted order.
    pub async fn refuse_cancellations(&self, refuse: bool) {
        if refuse {
            self.execute_sql(
                "CREATE TRIGGER refuse_cancellations BEFORE UPDATE ON order_ledger FOR EACH ROW \
                 SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'cancellations refused'",
                "CREATE TRIGGER refuse_cancellations BEFORE UPDATE ON order_ledger \
                 BEGIN SELECT RAISE(ABORT, 'cancellations refused'); END",
            )
            .await;
        } else {
            self.execute_sql("DROP TRIGGER refuse_cancellations", "DROP TRIGGER refuse_cancellations").await;
        }
    }

    /// Waits until the summary's `field` is `value`; returns the summary.
    pub async fn wait_for_summary(&self, field: &str, value: i64) -> Value {
        eventually(Duration::from_secs(30), &format!("{field} = {value}"), || async {
            let summary = self.summary().await;
            (summary[field] == value).then_some(summary)
        })
        .await
    }

    pub async fn wait_for_orders(&self, orders: i64) -> Value {
        eventually(Duration::from_secs(30), &format!("{orders} orders counted"), || async {
            let summary = self.summary().await;
            (summary["total_orders"] == orders).then_some(summary)
        })
        .await
    }

    pub async fn cleanup(self) {
        self.shutdown.trigger();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.server).await;
        self.isolation.close().await;
    }
}

/// An `OrderCreated` envelope.
pub fn order_created(customer: &str, product: &str, quantity: u32, amount: &str, at: &str) -> Value {
    let amount: Value = serde_json::from_str(amount).unwrap();
    json!({
        "event_type": "OrderCreated",
        "event_id": uuid::Uuid::now_v7().to_string(),
        "timestamp": at,
        "data": {
            "order_id": uuid::Uuid::now_v7().to_string(),
            "customer_id": customer,
            "product_id": product,
            "quantity": quantity,
            "total_amount": amount,
        }
    })
}

/// The `OrderCancelled` envelope of the order `created` announced.
pub fn order_cancelled(created: &Value) -> Value {
    json!({
        "event_type": "OrderCancelled",
        "event_id": uuid::Uuid::now_v7().to_string(),
        "timestamp": chrono::Utc::now(),
        "data": {"order_id": created["data"]["order_id"], "reason": "changed my mind", "cancelled_at": chrono::Utc::now()}
    })
}

/// A parked command as an operator types it (`"parked list --limit 10"`).
pub fn parked_command(line: &str) -> ParkedCommand {
    ParkedCommand::parse("analytics-service", "", line.split_whitespace().map(str::to_owned))
        .expect("a valid command")
        .expect("a parked command")
}
