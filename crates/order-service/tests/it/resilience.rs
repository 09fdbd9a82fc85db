//! What happens when a server goes away: outages are simulated with a fault-injecting proxy
//! between the service and the real server, never by stopping the shared servers.

use std::{collections::HashSet, sync::Arc, time::Duration};

use crate::support::{TestApp, eventually, order_body};
use messaging::{
    MessagingMetrics, OutgoingMessage,
    outbox::{OutboxStore, Relay, RelaySettings, enqueue_reserved, store::SqlOutbox},
    rabbitmq::RabbitMq,
};
use serde_json::Value;
use sqlx::{Connection, MySqlConnection};
use test_support::{FaultProxy, host_port, metric_value};

async fn readiness(app: &TestApp) -> (u16, Value) {
    let response = app.get("/readyz").await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn orders_accepted_while_the_broker_is_down_are_published_when_it_returns() {
    let broker = FaultProxy::start(host_port(&test_support::amqp_url(), 5672)).await.unwrap();
    let port = broker.port();
    let mut app =
        TestApp::spawn_with(|s| s.rabbitmq.url = Some(format!("amqp://guest:guest@127.0.0.1:{port}/%2f")))
            .await;
    let mut listener = app.listen("order.created").await;
    eventually(Duration::from_secs(10), "rabbitmq connected", || async {
        (readiness(&app).await.1["checks"]["rabbitmq"]["status"] == "up").then_some(())
    })
    .await;

    broker.cut();
    let mut ids = HashSet::new();
    for i in 0..20 {
        let response = app.post_order(&order_body("outage", &format!("{}", i + 1))).await;
        assert_eq!(response.status(), 201, "orders are still accepted while the broker is down");
        ids.insert(response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    let (status, ready) = readiness(&app).await;
    assert_eq!(status, 200, "the broker is not critical for taking orders: {ready}");
    assert_eq!(ready["checks"]["rabbitmq"]["status"], "down");
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox").await, 20);

    broker.restore();
    let events = listener.collect(20, Duration::from_secs(30)).await;
    let published: HashSet<String> =
        events.iter().map(|e| e.body["data"]["order_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(published, ids, "every order accepted during the outage is published");
    assert!(listener.next(Duration::from_millis(500)).await.is_none(), "and only once");
    eventually(Duration::from_secs(10), "outbox drained", || async {
        (app.count("SELECT COUNT(*) FROM outbox").await == 0).then_some(())
    })
    .await;
    app.cleanup().await;
}

#[tokio::test]
async fn an_order_committed_after_its_client_hung_up_is_published_at_once() {
    let mut app = TestApp::spawn().await;
    let mut listener = app.listen("order.created").await;
    // Hold the write back so that the client gives up while its order waits to be stored.
    let database_url = app.settings.database.url.clone().unwrap();
    let mut blocker = MySqlConnection::connect(&database_url).await.unwrap();
    sqlx::query("LOCK TABLES orders WRITE").execute(&mut blocker).await.unwrap();
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(300)).build().unwrap();
    let abandoned = impatient.post(app.url("/orders")).json(&order_body("gone", "5.00")).send().await;
    assert!(abandoned.is_err(), "the client hung up before an answer");
    sqlx::query("UNLOCK TABLES").execute(&mut blocker).await.unwrap();

    // Not after the handoff reservation (10 s) has run out: the relay gets it straight away.
    let event =
        listener.next(Duration::from_secs(5)).await.expect("the committed order is published at once");
    assert_eq!(event.body["data"]["customer_id"], "gone");
    assert_eq!(app.count("SELECT COUNT(*) FROM orders").await, 1);
    app.cleanup().await;
}

/// The Idempotency-Key draft's three outcomes: a repeat while the first request is still being
/// stored is refused with 409, a repeat after it returns the original, and the key with another
/// body is refused with 422.
#[tokio::test]
async fn a_repeat_while_the_first_is_in_progress_is_refused_then_replayed() {
    let app = TestApp::spawn().await;
    let post = |body: Value| {
        app.client.post(app.url("/orders")).header("idempotency-key", "key-held").json(&body).send()
    };
    // Hold the write back: the first request stays in progress.
    let database_url = app.settings.database.url.clone().unwrap();
    let mut blocker = MySqlConnection::connect(&database_url).await.unwrap();
    sqlx::query("LOCK TABLES orders WRITE").execute(&mut blocker).await.unwrap();
    let first = tokio::spawn(post(order_body("held", "7.00")));
    tokio::time::sleep(Duration::from_millis(500)).await;

    for body in [order_body("held", "7.00"), order_body("held", "8.00")] {
        let repeat = post(body).await.unwrap();
        assert_eq!(repeat.status(), 409, "in progress");
        assert_eq!(repeat.json::<Value>().await.unwrap()["error"], "idempotency_key_in_progress");
    }
    sqlx::query("UNLOCK TABLES").execute(&mut blocker).await.unwrap();
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();

    let again = post(order_body("held", "7.00")).await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    let other = post(order_body("held", "8.00")).await.unwrap();
    assert_eq!(other.status(), 422);
    assert_eq!(other.json::<Value>().await.unwrap()["error"], "idempotency_key_reused");
    assert_eq!(app.count("SELECT COUNT(*) FROM orders").await, 1);
    app.cleanup().await;
}

#[tokio::test]
async fn reads_fall_back_to_the_database_when_redis_is_down() {
    let redis = FaultProxy::start(host_port(&test_support::redis_url(), 6379)).await.unwrap();
    let port = redis.port();
    let app = TestApp::spawn_with(|s| s.redis.url = Some(format!("redis://127.0.0.1:{port}"))).await;
    let order: Value = app.post_order(&order_body("cache", "12.34")).await.json().await.unwrap();
    let path = format!("/orders/{}", order["id"].as_str().unwrap());
    assert_eq!(app.get(&path).await.status(), 200);

    redis.cut();
    for _ in 0..3 {
        let response = app.get(&path).await;
        assert_eq!(response.status(), 200, "a cache outage never fails a read");
        assert_eq!(response.json::<Value>().await.unwrap(), order);
    }
    let created = app.post_order(&order_body("cache", "1")).await;
    assert_eq!(created.status(), 201);
    let (status, ready) = readiness(&app).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["checks"]["redis"]["status"], "down");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metric_value(&metrics, r#"cache_requests_total{cache="orders",result="error"}"#) > 0.0,
        "{metrics}"
    );
    assert!(metrics.contains(r#"dependency_up{dependency="redis"} 0"#), "{metrics}");

    let hit = r#"cache_requests_total{cache="orders",result="hit"}"#;
    let hits_before = metric_value(&app.get("/metrics").await.text().await.unwrap(), hit);
    redis.restore();
    eventually(Duration::from_secs(10), "cache hits again", || async {
        app.get(&path).await;
        let metrics = app.get("/metrics").await.text().await.unwrap();
        (metric_value(&metrics, hit) > hits_before).then_some(())
    })
    .await;
    app.cleanup().await;
}

#[tokio::test]
async fn writes_answer_503_while_the_database_is_down_and_recover_by_themselves() {
    let database_proxy = FaultProxy::start(host_port(&test_support::mysql_admin_url(), 3306)).await.unwrap();
    let port = database_proxy.port();
    let app = TestApp::spawn_with(|s| {
        let url = s.database.url.clone().unwrap();
        let name = url.rsplit('/').next().unwrap().to_owned();
        s.database.url = Some(format!("mysql://root@127.0.0.1:{port}/{name}"));
        s.database.acquire_timeout_ms = 1000;
    })
    .await;
    assert_eq!(app.post_order(&order_body("db", "1")).await.status(), 201);

    database_proxy.cut();
    let response = app.post_order(&order_body("db", "2")).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"], "service_unavailable");
    let (status, ready) = readiness(&app).await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["checks"]["mysql"]["status"], "down");
    assert_eq!(app.get("/livez").await.status(), 200, "the process itself is alive");

    database_proxy.restore();
    eventually(Duration::from_secs(15), "writes recover", || async {
        (app.post_order(&order_body("db", "3")).await.status() == 201).then_some(())
    })
    .await;
    assert_eq!(readiness(&app).await.0, 200);
    // Only the two acknowledged orders exist: nothing half-written.
    assert_eq!(app.count("SELECT COUNT(*) FROM orders").await, 2);
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox").await, 2);
    app.cleanup().await;
}

#[tokio::test]
async fn two_relays_publish_every_row_once() {
    let name = test_support::unique_name();
    let database = test_support::TestDatabase::create().await.unwrap();
    let pool = sqlx::MySqlPool::connect(&database.url()).await.unwrap();
    order_service::MIGRATOR.run(&pool).await.unwrap();
    let mut rabbit_settings = crate::support::test_settings(&name, &database).rabbitmq;
    rabbit_settings.exchange = format!("{name}.orders");
    let listener_queue = format!("{name}.listener");
    let _cleanup = test_support::Cleanup {
        queues: vec![listener_queue.clone()],
        exchanges: messaging::rabbitmq::ExchangeNames::new(&rabbit_settings).all(),
        redis_prefix: None,
    };
    let listener =
        crate::support::EventListener::start(&rabbit_settings.exchange, &listener_queue, "order.created");
    let mut listener = crate::support::Listener::Broker(Box::new(listener.await));

    let messages: Vec<OutgoingMessage> = (0..300)
        .map(|i| OutgoingMessage {
            event_id: uuid::Uuid::now_v7(),
            event_type: "OrderCreated".into(),
            routing_key: "order.created".into(),
            payload: format!(r#"{{"n": {i}}}"#).into_bytes(),
            headers: Default::default(),
            timestamp: chrono::Utc::now(),
        })
        .collect();
    let mut tx = pool.begin().await.unwrap();
    enqueue_reserved(&mut *tx, &messages, Duration::ZERO).await.unwrap();
    tx.commit().await.unwrap();

    let shutdown = platform::Shutdown::new();
    let settings = RelaySettings { batch_size: 10, ..RelaySettings::default() };
    let relay = || {
        let status = platform::Health::new(&mut Default::default()).add_status("rabbitmq", false);
        let rabbit = RabbitMq::new(
            rabbit_settings.clone(),
            Vec::new(),
            status,
            MessagingMetrics::unregistered(),
            shutdown.clone(),
        )
        .unwrap();
        Relay::new(
            Arc::new(SqlOutbox::new(pool.clone())),
            Arc::new(rabbit),
            settings.clone(),
            MessagingMetrics::unregistered(),
        )
    };
    let (first, second) = (relay(), relay());
    let outbox = SqlOutbox::new(pool.clone());
    let (a, b) = tokio::join!(publish_all(&first, &outbox), publish_all(&second, &outbox));
    assert_eq!(a + b, 300, "each row is marked published by exactly one relay");

    let events = listener.collect(300, Duration::from_secs(10)).await;
    let unique: HashSet<_> = events.iter().map(|e| e.message_id.clone().unwrap()).collect();
    assert_eq!(unique.len(), 300, "every row is published");
    assert!(listener.next(Duration::from_millis(500)).await.is_none(), "no row is published twice");

    shutdown.trigger();
    pool.close().await;
}

/// Publishes until the outbox is empty (the broker connection may take a moment).
async fn publish_all(relay: &Relay, outbox: &SqlOutbox) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut total = 0;
    loop {
        total += relay.publish_due().await.unwrap().confirmed;
        if outbox.backlog().await.unwrap().pending == 0 || tokio::time::Instant::now() > deadline {
            return total;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A write that can only begin and finish as the test says: `orders` locked by another session.
async fn lock_orders(app: &TestApp) -> MySqlConnection {
    let mut blocker = MySqlConnection::connect(app.settings.database.url.as_deref().unwrap()).await.unwrap();
    sqlx::query("LOCK TABLES orders WRITE").execute(&mut blocker).await.unwrap();
    blocker
}

async fn unlock(mut blocker: MySqlConnection) {
    sqlx::query("UNLOCK TABLES").execute(&mut blocker).await.unwrap();
}

/// POSTs in the background; its status, `Retry-After` and body.
fn post_in_background(
    app: &TestApp,
    body: Value,
    key: Option<&str>,
) -> tokio::task::JoinHandle<(u16, Option<String>, Value)> {
    let mut request = reqwest::Client::new().post(app.url("/orders")).json(&body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    tokio::spawn(async move {
        let response = request.send().await.expect("POST /orders");
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
        (status, retry_after, response.json().await.unwrap_or(Value::Null))
    })
}

#[tokio::test]
async fn a_write_still_running_at_its_deadline_is_answered_504_and_its_key_tells_the_outcome() {
    let app = TestApp::spawn_with(|s| {
        s.orders.write_timeout_ms = 1_000;
        s.orders.writers = 1;
    })
    .await;
    let blocker = lock_orders(&app).await;
    let body = order_body("unsure", "7.00");
    let started = std::time::Instant::now();
    let (status, retry_after, error) =
        post_in_background(&app, body.clone(), Some("unsure-1")).await.unwrap();
    assert_eq!(status, 504, "{error}");
    assert!(started.elapsed() < Duration::from_secs(5), "answered at the write deadline");
    assert_eq!(error["error"], "outcome_unknown");
    assert_eq!(retry_after, None, "never told to retry blindly");

    // The write was under way: it commits once the lock goes, exactly once.
    unlock(blocker).await;
    eventually(Duration::from_secs(10), "the order committed", || async {
        (app.count("SELECT COUNT(*) FROM orders").await == 1).then_some(())
    })
    .await;
    let (status, _, order) = post_in_background(&app, body, Some("unsure-1")).await.unwrap();
    assert_eq!(status, 201, "the same key returns the order: {order}");
    assert_eq!(order["customer_id"], "unsure");
    assert_eq!(app.count("SELECT COUNT(*) FROM orders").await, 1);
    app.cleanup().await;
}

#[tokio::test]
async fn writes_that_cannot_begin_before_their_deadline_are_never_written() {
    let app = TestApp::spawn_with(|s| {
        s.orders.write_timeout_ms = 1_000;
        s.orders.writers = 1;
        s.orders.write_batch_size = 1;
    })
    .await;
    let blocker = lock_orders(&app).await;
    let first = post_in_background(&app, order_body("first", "1.00"), None);
    // The one writer is held by the first order: these wait behind it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let late: Vec<_> = (0..3).map(|_| post_in_background(&app, order_body("late", "2.00"), None)).collect();
    for waiting in late {
        let (status, retry_after, error) = waiting.await.unwrap();
        assert_eq!(status, 503, "{error}");
        assert_eq!(retry_after.as_deref(), Some("1"), "nothing was written: retrying is safe");
    }
    assert_eq!(first.await.unwrap().0, 504);

    unlock(blocker).await;
    eventually(Duration::from_secs(10), "the first order committed", || async {
        (app.count("SELECT COUNT(*) FROM orders").await == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.count("SELECT COUNT(*) FROM orders WHERE customer_id = 'late'").await, 0);
    app.cleanup().await;
}

#[tokio::test]
async fn a_full_write_queue_answers_503_at_once() {
    let app = TestApp::spawn_with(|s| {
        s.orders.write_timeout_ms = 5_000;
        s.orders.writers = 1;
        s.orders.write_batch_size = 1;
        s.orders.max_waiting_writes = 1;
    })
    .await;
    let blocker = lock_orders(&app).await;
    let writing = post_in_background(&app, order_body("writing", "1.00"), None);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waiting = post_in_background(&app, order_body("waiting", "1.00"), None);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = std::time::Instant::now();
    let (status, retry_after, error) =
        post_in_background(&app, order_body("refused", "1.00"), None).await.unwrap();
    assert_eq!(status, 503, "{error}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert!(started.elapsed() < Duration::from_secs(1), "refused without waiting");

    unlock(blocker).await;
    assert_eq!(writing.await.unwrap().0, 201);
    assert_eq!(waiting.await.unwrap().0, 201);
    assert_eq!(app.count("SELECT COUNT(*) FROM orders WHERE customer_id = 'refused'").await, 0);
    app.cleanup().await;
}

/// An `OrderProcessed` message order-service cannot read is parked, and `order-service parked`
/// lists and replays it like the other services' commands.
#[tokio::test]
async fn parked_processed_events_can_be_listed_and_replayed_from_the_command_line() {
    let app = TestApp::spawn().await;
    let malformed = serde_json::json!({ "event_id": uuid::Uuid::now_v7().to_string(), "not": "an event" });
    app.publish(contracts::routing_key::ORDER_PROCESSED, &malformed).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let listed = parked_cli(&app, &["parked", "list", "--limit", "10", "--json"]).await;
        let listed = listed["queues"][0].clone();
        if listed["parked"] == 1 || tokio::time::Instant::now() > deadline {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(listed["parked"], 1, "{listed}");
    assert_eq!(listed["queue"], app.settings.queues.order_processed);
    assert_eq!(listed["messages"][0]["message_id"], malformed["event_id"], "{listed}");

    let replayed = parked_cli(&app, &["parked", "replay", "--json"]).await;
    assert_eq!(replayed["queues"][0]["replayed"], 1, "{replayed}");
    app.cleanup().await;
}

/// Runs the order-service binary with the test's broker settings; what it printed, as JSON.
async fn parked_cli(app: &TestApp, args: &[&str]) -> Value {
    let settings = &app.settings;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_order-service"))
        .args(args)
        .env_clear()
        .env("RABBITMQ_URL", settings.rabbitmq.url.as_deref().unwrap())
        .env("ORDERFLOW_RABBITMQ__EXCHANGE", &settings.rabbitmq.exchange)
        .env("ORDERFLOW_QUEUES__ORDER_PROCESSED", &settings.queues.order_processed)
        .output()
        .await
        .expect("run order-service");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {stdout}"))
}
