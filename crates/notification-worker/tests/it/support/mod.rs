//! Runs the worker in-process against the real Redis and RabbitMQ, isolated per test (its own
//! exchange and queue names and Redis key prefix, all removed when the test ends), with a local
//! webhook receiver and a publisher standing in for the other services.

use std::{
    collections::BTreeMap,
    io::Write,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use chrono::Utc;
use contracts::{Envelope, Money, OrderCancelled, OrderCreated, OrderProcessed, routing_key};
use messaging::{
    EventPublisher, MessagingMetrics, OutgoingMessage, ParkedMessage,
    parked::{DeadLetters, Selection},
    rabbitmq::RabbitMq,
};
use notification_worker::{
    Application, SERVICE_NAME,
    settings::{ChannelKind, Settings},
};
use platform::{Health, Shutdown, telemetry::Telemetry};
use serde_json::Value;
use test_support::Cleanup;
pub use test_support::{eventually, unique_name};
use uuid::Uuid;

pub const WAIT: Duration = Duration::from_secs(20);
pub const SECRET: &str = "s3cr3t-for-tests";

/// Settings for one isolated test run: local servers, webhook channel to `webhook_url`, short
/// retry delays.
pub fn test_settings(name: &str, webhook_url: &str) -> Settings {
    let mut settings = Settings::default();
    settings.http.host = "127.0.0.1".into();
    settings.http.port = 0;
    settings.shutdown.grace_period_seconds = 5;
    settings.redis.url = Some(test_support::redis_url());
    settings.redis.key_prefix = format!("{name}:");
    settings.rabbitmq.url = Some(test_support::amqp_url());
    settings.rabbitmq.exchange = format!("{name}.orders");
    settings.rabbitmq.retry_delays_ms = vec![100, 200];
    settings.rabbitmq.reconnect_max_backoff_ms = 500;
    settings.queues = test_support::isolated_queues(name);
    let notifications = &mut settings.notifications;
    notifications.channels = vec![ChannelKind::Webhook];
    notifications.webhook.url = Some(webhook_url.to_owned());
    notifications.webhook.secret = Some(SECRET.into());
    notifications.webhook.timeout_ms = 2_000;
    settings
}

/// A running worker, a broker connection of the test's own, and everything to clean up.
pub struct TestWorker {
    pub base: String,
    pub client: reqwest::Client,
    pub settings: Settings,
    /// Publishes events as the other services do, and inspects the queues.
    pub bus: RabbitMq,
    bus_shutdown: Shutdown,
    shutdown: Shutdown,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestWorker {
    /// Starts the worker with test settings adjusted by `adjust`, and waits until it consumes its
    /// queue.
    pub async fn spawn_with(receiver: &Receiver, adjust: impl FnOnce(&mut Settings)) -> TestWorker {
        init_telemetry();
        let mut settings = test_settings(&unique_name(), &receiver.url);
        adjust(&mut settings);
        let application = Application::build(settings.clone()).await.expect("build notification-worker");
        let base = format!("http://127.0.0.1:{}", application.port());
        let shutdown = application.shutdown();
        let server = tokio::spawn(application.run_until_stopped());

        let bus_shutdown = Shutdown::new();
        let status = Health::new(&mut Default::default()).add_status("rabbitmq", true);
        let bus = RabbitMq::new(
            settings.rabbitmq.clone(),
            Vec::new(),
            status.clone(),
            MessagingMetrics::unregistered(),
            bus_shutdown.clone(),
        )
        .expect("test broker connection");
        let worker = TestWorker {
            base,
            client: reqwest::Client::new(),
            settings,
            bus,
            bus_shutdown,
            shutdown,
            server: Some(server),
        };
        eventually(WAIT, "the test's broker connection", || async { status.is_up().then_some(()) }).await;
        eventually(WAIT, "the worker's queue", || async {
            worker.bus.queue_depths(worker.queue()).await.ok()
        })
        .await;
        // Consuming, whatever its other dependencies say.
        test_support::wait_for_consumer(worker.queue(), WAIT).await;
        worker
    }

    pub async fn spawn(receiver: &Receiver) -> TestWorker {
        Self::spawn_with(receiver, |_| {}).await
    }

    pub fn queue(&self) -> &str {
        &self.settings.queues.notifications
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn readiness(&self) -> (u16, Value) {
        let response = self.client.get(self.url("/readyz")).send().await.expect("GET /readyz");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Publishes `message` on the worker's exchange, confirmed by the broker.
    pub async fn publish(&self, message: &OutgoingMessage) {
        let results = self.bus.publish(std::slice::from_ref(message)).await;
        assert_eq!(results, vec![Ok(())], "publishing {}", message.event_id);
    }

    /// The current value of one series of `/metrics`, e.g.
    /// `notifications_sent_total{channel="webhook",outcome="sent"}`; 0 when it does not exist yet.
    pub async fn metric(&self, series: &str) -> f64 {
        let text =
            self.client.get(self.url("/metrics")).send().await.expect("GET /metrics").text().await.unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    pub async fn webhook_metric(&self, outcome: &str) -> f64 {
        self.metric(&format!("notifications_sent_total{{channel=\"webhook\",outcome=\"{outcome}\"}}")).await
    }

    pub async fn parked(&self) -> Vec<ParkedMessage> {
        self.bus.list_parked(self.queue(), &Selection::first(100)).await.expect("list parked messages")
    }

    /// Waits until `count` messages are parked and returns them.
    pub async fn wait_parked(&self, count: usize) -> Vec<ParkedMessage> {
        eventually(WAIT, &format!("{count} parked messages"), || async {
            let parked = self.parked().await;
            (parked.len() >= count).then_some(parked)
        })
        .await
    }

    /// Waits until the queue has `ready` messages waiting and `parked` in its dead-letter queue.
    pub async fn wait_depths(&self, ready: u32, parked: u32) {
        eventually(WAIT, &format!("{ready} ready and {parked} parked messages"), || async {
            (self.bus.queue_depths(self.queue()).await.ok()? == (ready, parked)).then_some(())
        })
        .await
    }

    /// Stops the worker gracefully; returns what `run_until_stopped` returned.
    pub async fn stop(&mut self) -> std::io::Result<()> {
        self.shutdown.trigger();
        let server = self.server.take().expect("the worker runs");
        tokio::time::timeout(WAIT, server).await.expect("the worker stops in time").expect("server task")
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        self.shutdown.trigger();
        self.bus_shutdown.trigger();
        drop(cleanup_of(&self.settings));
    }
}

/// What one test's settings leave on the shared servers (queues, exchanges, Redis keys), deleted
/// when the returned value is dropped, also when the test fails.
pub fn cleanup_of(settings: &Settings) -> Cleanup {
    test_support::cleanup_of(&settings.queues, &settings.rabbitmq, &settings.redis.key_prefix)
}

/// One request the receiver answered.
#[derive(Debug, Clone)]
pub struct Call {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub status: StatusCode,
}

impl Call {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    pub fn delivered(&self) -> bool {
        self.status.is_success()
    }
}

type Respond = dyn Fn(&str, usize) -> StatusCode + Send + Sync;

struct ReceiverState {
    /// Status to answer, given the event id and the attempt (1 for its first request).
    respond: Box<Respond>,
    delay: Duration,
    /// Requests received, answered or not yet.
    arrived: AtomicUsize,
    calls: Mutex<Vec<Call>>,
}

/// A webhook receiver on `127.0.0.1:<random port>`, recording every request.
pub struct Receiver {
    pub url: String,
    state: Arc<ReceiverState>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Accepts everything.
    pub async fn accepting() -> Receiver {
        Self::start(|_, _| StatusCode::NO_CONTENT).await
    }

    pub async fn start(respond: impl Fn(&str, usize) -> StatusCode + Send + Sync + 'static) -> Receiver {
        Self::start_slow(Duration::ZERO, respond).await
    }

    /// Accepts everything, listening on `address`.
    pub async fn accepting_at(address: &str) -> Receiver {
        Self::start_at(address, Duration::ZERO, |_, _| StatusCode::NO_CONTENT).await
    }

    /// Like [`Receiver::start`], answering each request only after `delay`.
    pub async fn start_slow(
        delay: Duration,
        respond: impl Fn(&str, usize) -> StatusCode + Send + Sync + 'static,
    ) -> Receiver {
        Self::start_at("127.0.0.1:0", delay, respond).await
    }

    async fn start_at(
        address: &str,
        delay: Duration,
        respond: impl Fn(&str, usize) -> StatusCode + Send + Sync + 'static,
    ) -> Receiver {
        let state = Arc::new(ReceiverState {
            respond: Box::new(respond),
            delay,
            arrived: AtomicUsize::new(0),
            calls: Mutex::default(),
        });
        let router = Router::new().route("/hook", post(receive)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind(address).await.expect("bind the receiver");
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Receiver { url, state, task }
    }

    /// Requests received so far, including those not answered yet.
    pub fn arrived(&self) -> usize {
        self.state.arrived.load(Ordering::SeqCst)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().unwrap().clone()
    }

    /// Requests about `event_id`.
    pub fn calls_for(&self, event_id: Uuid) -> Vec<Call> {
        let id = event_id.to_string();
        self.calls().into_iter().filter(|call| call.header("x-orderflow-event-id") == id).collect()
    }

    /// Requests answered with a 2xx, i.e. notifications delivered.
    pub fn delivered(&self) -> Vec<Call> {
        self.calls().into_iter().filter(Call::delivered).collect()
    }

    /// Waits until `count` notifications have been delivered and returns them.
    pub async fn wait_delivered(&self, count: usize) -> Vec<Call> {
        eventually(WAIT, &format!("{count} delivered notifications"), || async {
            let delivered = self.delivered();
            (delivered.len() >= count).then_some(delivered)
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(State(state): State<Arc<ReceiverState>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    state.arrived.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(state.delay).await;
    let event_id = headers.get("x-orderflow-event-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let mut calls = state.calls.lock().unwrap();
    let attempt = 1 + calls.iter().filter(|call| call.header("x-orderflow-event-id") == event_id).count();
    let status = (state.respond)(&event_id, attempt);
    calls.push(Call { headers, body, status });
    status
}

/// An `OrderCreated` event as order-service publishes it, with a trace of its own.
pub fn order_created() -> OutgoingMessage {
    let envelope = Envelope::order_created(
        Uuid::now_v7(),
        Utc::now(),
        OrderCreated {
            order_id: Uuid::now_v7(),
            customer_id: "customer-123".into(),
            product_id: "product-456".into(),
            quantity: 2,
            total_amount: Money::from_minor(9_999),
        },
    );
    message(
        envelope.event_id,
        &envelope.event_type,
        routing_key::ORDER_CREATED,
        serde_json::to_vec(&envelope).unwrap(),
    )
}

/// An `OrderProcessed` event as analytics-service publishes it.
pub fn order_processed(order_id: Uuid) -> OutgoingMessage {
    let envelope = Envelope::order_processed(
        Uuid::now_v7(),
        Utc::now(),
        OrderProcessed { order_id, processed_by: "analytics-service".into(), metrics_updated: true },
    );
    message(
        envelope.event_id,
        &envelope.event_type,
        routing_key::ORDER_PROCESSED,
        serde_json::to_vec(&envelope).unwrap(),
    )
}

pub fn order_cancelled(order_id: Uuid) -> OutgoingMessage {
    let envelope = Envelope::order_cancelled(
        Uuid::now_v7(),
        Utc::now(),
        OrderCancelled { order_id, reason: Some("ordered twice".into()), cancelled_at: Utc::now() },
    );
    message(
        envelope.event_id,
        &envelope.event_type,
        routing_key::ORDER_CANCELLED,
        serde_json::to_vec(&envelope).unwrap(),
    )
}

/// Any payload, published as an event would be.
pub fn message(event_id: Uuid, event_type: &str, routing_key: &str, payload: Vec<u8>) -> OutgoingMessage {
    OutgoingMessage {
        event_id,
        event_type: event_type.into(),
        routing_key: routing_key.into(),
        payload,
        headers: BTreeMap::from([("traceparent".to_owned(), random_traceparent())]),
        timestamp: Utc::now(),
    }
}

fn random_traceparent() -> String {
    let trace = Uuid::new_v4().simple().to_string();
    let span = &Uuid::new_v4().simple().to_string()[..16];
    format!("00-{trace}-{span}-01")
}

/// The trace id of a `traceparent` header.
pub fn trace_id(message: &OutgoingMessage) -> &str {
    message.headers["traceparent"].split('-').nth(1).unwrap()
}

/// Log lines the worker wrote, as JSON objects (logs are also shown on stderr with `TEST_LOG=1`).
pub fn log_lines() -> Vec<Value> {
    let captured = captured().lock().unwrap();
    String::from_utf8_lossy(&captured).lines().filter_map(|line| serde_json::from_str(line).ok()).collect()
}

fn captured() -> &'static Mutex<Vec<u8>> {
    static CAPTURED: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    CAPTURED.get_or_init(Mutex::default)
}

struct CaptureWriter;

impl Write for CaptureWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if std::env::var_os("TEST_LOG").is_some() {
            std::io::stderr().write_all(bytes)?;
        }
        captured().lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Real telemetry, as in production (JSON lines, trace context), captured for assertions.
pub fn init_telemetry() {
    static TELEMETRY: OnceLock<Option<Telemetry>> = OnceLock::new();
    TELEMETRY.get_or_init(|| {
        platform::install_crypto_provider();
        let settings =
            platform::TelemetrySettings { log_level: "info,lapin=warn".into(), ..Default::default() };
        Telemetry::init_with_writer(SERVICE_NAME, &settings, || CaptureWriter).ok()
    });
}
