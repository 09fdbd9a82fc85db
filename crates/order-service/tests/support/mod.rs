//! Runs order-service in-process against the real servers, isolated per test: its own database,
//! exchange and queue names and Redis key prefix, all removed by `cleanup`.

#![allow(dead_code)]

use std::time::Duration;

use messaging::rabbitmq::{ExchangeNames, QueueNames};
use order_service::{Application, settings::Settings};
use platform::Shutdown;
use serde_json::Value;
use sqlx::MySqlPool;
pub use test_support::{EventListener, TestDatabase, eventually, unique_name};

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub settings: Settings,
    pub name: String,
    pub pool: MySqlPool,
    shutdown: Shutdown,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    database: TestDatabase,
    extra_queues: Vec<String>,
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
    settings.orders.processed_queue = format!("{name}.orders.processed");
    settings.outbox.poll_interval_ms = 100;
    settings.outbox.retry_base_ms = 100;
    settings.outbox.retry_max_ms = 500;
    settings
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// Starts the service with test settings adjusted by `adjust`.
    pub async fn spawn_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
        let name = unique_name();
        let database = TestDatabase::create().await.expect("create test database");
        let mut settings = test_settings(&name, &database);
        adjust(&mut settings);
        Self::start(name, database, settings).await
    }

    async fn start(name: String, database: TestDatabase, settings: Settings) -> TestApp {
        init_telemetry();
        let application = Application::build(settings.clone()).await.expect("build order-service");
        let base = format!("http://127.0.0.1:{}", application.port());
        let shutdown = application.shutdown();
        let server = tokio::spawn(application.run_until_stopped());
        let pool = MySqlPool::connect(&database.url()).await.expect("connect to the test database");
        TestApp {
            base,
            client: reqwest::Client::new(),
            settings,
            name,
            pool,
            shutdown,
            server,
            database,
            extra_queues: Vec::new(),
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
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.expect("count query")
    }

    /// Declares a queue bound to the events exchange, to see what the service publishes.
    pub async fn listen(&mut self, routing_key: &str) -> EventListener {
        let queue = format!("{}.listener.{}", self.name, self.extra_queues.len());
        self.extra_queues.push(queue.clone());
        EventListener::start(&self.settings.rabbitmq.exchange, &queue, routing_key).await
    }

    /// Stops the service and removes everything the test created.
    pub async fn cleanup(self) {
        self.shutdown.trigger();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.server).await;
        self.pool.close().await;
        let mut queues = self.extra_queues.clone();
        queues.extend(QueueNames::new(&self.settings.orders.processed_queue, &self.settings.rabbitmq).all());
        let exchanges = ExchangeNames::new(&self.settings.rabbitmq).all();
        let _ = test_support::delete_amqp(&queues, &exchanges).await;
        let _ = test_support::delete_redis_prefix(&self.settings.redis.key_prefix).await;
        let _ = self.database.drop().await;
    }
}

/// Real telemetry (trace context flows as in production); logs are shown only with `TEST_LOG=1`.
pub fn init_telemetry() {
    platform::install_crypto_provider();
    let settings = platform::TelemetrySettings { log_level: "info,sqlx=warn".into(), ..Default::default() };
    let _ = if std::env::var_os("TEST_LOG").is_some() {
        platform::telemetry::Telemetry::init_with_writer("order-service", &settings, std::io::stderr)
    } else {
        platform::telemetry::Telemetry::init_with_writer("order-service", &settings, std::io::sink)
    };
}

pub fn order_body(customer: &str, amount: &str) -> Value {
    serde_json::from_str(&format!(
        r#"{{"customer_id": "{customer}", "product_id": "product-456", "quantity": 2, "total_amount": {amount}}}"#
    ))
    .unwrap()
}
