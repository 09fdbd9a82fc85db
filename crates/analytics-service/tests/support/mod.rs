//! Runs analytics-service in-process against the real servers, isolated per test.

#![allow(dead_code)]

use std::time::Duration;

use analytics_service::{Application, settings::Settings};
use messaging::rabbitmq::{ExchangeNames, QueueNames};
use platform::Shutdown;
use serde_json::{Value, json};
use sqlx::MySqlPool;
pub use test_support::{EventListener, TestDatabase, TestPublisher, eventually, unique_name};

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub settings: Settings,
    pub name: String,
    pub pool: MySqlPool,
    pub publisher: TestPublisher,
    shutdown: Shutdown,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    database: TestDatabase,
    extra_queues: Vec<String>,
}

pub fn init_telemetry() {
    platform::install_crypto_provider();
    let settings = platform::TelemetrySettings { log_level: "info,sqlx=warn".into(), ..Default::default() };
    let _ = if std::env::var_os("TEST_LOG").is_some() {
        platform::telemetry::Telemetry::init_with_writer("analytics-service", &settings, std::io::stderr)
    } else {
        platform::telemetry::Telemetry::init_with_writer("analytics-service", &settings, std::io::sink)
    };
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
        init_telemetry();
        let name = unique_name();
        let database = TestDatabase::create().await.expect("create test database");
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
        settings.analytics.queue = format!("{name}.analytics.orders");
        settings.outbox.poll_interval_ms = 100;
        settings.outbox.retry_base_ms = 100;
        settings.outbox.retry_max_ms = 500;
        adjust(&mut settings);

        let application = Application::build(settings.clone()).await.expect("build analytics-service");
        let base = format!("http://127.0.0.1:{}", application.port());
        let shutdown = application.shutdown();
        let server = tokio::spawn(application.run_until_stopped());
        let pool = MySqlPool::connect(&database.url()).await.expect("connect to the test database");
        let publisher = TestPublisher::connect(&settings.rabbitmq.exchange).await.expect("test publisher");
        let app = TestApp {
            base,
            client: reqwest::Client::new(),
            settings,
            name,
            pool,
            publisher,
            shutdown,
            server,
            database,
            extra_queues: Vec::new(),
        };
        app.wait_until_consuming().await;
        app
    }

    async fn wait_until_consuming(&self) {
        test_support::wait_for_consumer(&self.settings.analytics.queue, Duration::from_secs(20)).await;
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
        let id = event["event_id"].as_str();
        self.publisher.publish("order.created", id, event.to_string().as_bytes()).await.expect("publish");
    }

    pub async fn publish_raw(&self, body: &[u8]) {
        self.publisher.publish("order.created", None, body).await.expect("publish");
    }

    pub async fn listen(&mut self, routing_key: &str) -> EventListener {
        let queue = format!("{}.listener.{}", self.name, self.extra_queues.len());
        self.extra_queues.push(queue.clone());
        EventListener::start(&self.settings.rabbitmq.exchange, &queue, routing_key).await
    }

    /// Waits until the summary counts `orders` orders.
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
        self.pool.close().await;
        let mut queues = self.extra_queues.clone();
        queues.extend(QueueNames::new(&self.settings.analytics.queue, &self.settings.rabbitmq).all());
        let _ = test_support::delete_amqp(&queues, &ExchangeNames::new(&self.settings.rabbitmq).all()).await;
        let _ = test_support::delete_redis_prefix(&self.settings.redis.key_prefix).await;
        let _ = self.database.drop().await;
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
