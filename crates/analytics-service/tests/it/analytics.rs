//! analytics-service, black-box: the behaviour tests run against the real MariaDB, Redis and
//! RabbitMQ (`real::…`) and against the embedded backends (`embedded::…`), from the same code.
//! The outage test needs the fault proxy in front of a real server, so it runs on the real ones.

use std::time::Duration;

use crate::support::{
    Backend, TestApp, eventually, on_both_backends, order_cancelled, order_created, parked_command,
};
use serde_json::{Value, json};
use test_support::{FaultProxy, host_port};

on_both_backends!(
    counts_orders_exactly_and_serves_every_read_model,
    a_redelivered_event_is_counted_once,
    bad_messages_are_parked_and_never_block_the_queue,
    the_summary_is_never_stale_after_a_commit,
    the_service_serves_its_openapi_document,
    cancellations_count_once_whatever_order_the_events_arrive_in,
);

async fn the_service_serves_its_openapi_document(backend: Backend) {
    let app = TestApp::start(backend).await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let served: serde_json::Value = response.json().await.unwrap();
    let generated: serde_json::Value =
        serde_json::from_str(&analytics_service::http::openapi().to_json().unwrap()).unwrap();
    assert_eq!(served, generated);
    let paths: Vec<&String> = served["paths"].as_object().unwrap().keys().collect();
    assert_eq!(
        paths,
        [
            "/analytics/customers/{customer_id}",
            "/analytics/products/top",
            "/analytics/summary",
            "/analytics/timeseries",
            "/livez",
            "/metrics",
            "/readyz"
        ]
    );
    app.cleanup().await;
}

async fn counts_orders_exactly_and_serves_every_read_model(backend: Backend) {
    let mut app = TestApp::start(backend).await;
    let mut processed = app.listen("order.processed").await;
    let empty = app.summary().await;
    assert_eq!(
        empty,
        json!({"total_orders": 0, "total_revenue": 0, "average_order_value": 0, "total_quantity": 0, "cancelled_orders": 0,
            "last_updated": null})
    );

    let events = [
        order_created("alice", "widget", 2, "10.10", "2026-01-09T10:15:00Z"),
        order_created("alice", "gadget", 1, "0.20", "2026-01-09T10:45:00Z"),
        order_created("bob", "widget", 5, "99.99", "2026-01-09T11:05:00Z"),
        order_created("carol", "gizmo", 7, "0.01", "2026-01-10T08:00:00Z"),
    ];
    for event in &events {
        app.publish_created(event).await;
    }
    let summary = app.wait_for_orders(4).await;
    // 10.10 + 0.20 + 99.99 + 0.01 = 110.30, exactly (0.1 + 0.2 style float drift would show here).
    assert_eq!(summary["total_revenue"].to_string(), "110.3");
    assert_eq!(summary["average_order_value"].to_string(), "27.58");
    assert_eq!(summary["total_quantity"], 15);
    assert!(summary["last_updated"].is_string());

    let top = app.get_json("/analytics/products/top?by=revenue&limit=2").await;
    assert_eq!(top["by"], "revenue");
    assert_eq!(
        top["products"],
        json!([
            {"product_id": "widget", "orders": 2, "quantity": 7, "revenue": 110.09},
            {"product_id": "gadget", "orders": 1, "quantity": 1, "revenue": 0.2},
        ])
    );
    let by_quantity = app.get_json("/analytics/products/top?by=quantity").await;
    let names: Vec<&str> = by_quantity["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["product_id"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["widget", "gizmo", "gadget"]);

    let alice = app.get_json("/analytics/customers/alice").await;
    assert_eq!(alice["total_orders"], 2);
    assert_eq!(alice["total_quantity"], 3);
    assert_eq!(alice["total_revenue"].to_string(), "10.3");
    assert_eq!(alice["average_order_value"].to_string(), "5.15");
    assert_eq!(alice["first_order_at"], "2026-01-09T10:15:00Z");
    assert_eq!(alice["last_order_at"], "2026-01-09T10:45:00Z");
    let nobody = app.get("/analytics/customers/nobody").await;
    assert_eq!(nobody.status(), 404);
    assert_eq!(nobody.json::<Value>().await.unwrap()["error"], "not_found");

    let hours = app
        .get_json("/analytics/timeseries?interval=hour&from=2026-01-09T00:00:00Z&to=2026-01-10T00:00:00Z")
        .await;
    assert_eq!(
        hours["buckets"],
        json!([
            {"bucket_start": "2026-01-09T10:00:00Z", "orders": 2, "revenue": 10.3},
            {"bucket_start": "2026-01-09T11:00:00Z", "orders": 1, "revenue": 99.99},
        ])
    );
    let days = app
        .get_json("/analytics/timeseries?interval=day&from=2026-01-01T00:00:00Z&to=2026-01-31T00:00:00Z")
        .await;
    assert_eq!(
        days["buckets"],
        json!([
            {"bucket_start": "2026-01-09T00:00:00Z", "orders": 3, "revenue": 110.29},
            {"bucket_start": "2026-01-10T00:00:00Z", "orders": 1, "revenue": 0.01},
        ])
    );
    for bad in [
        "/analytics/timeseries?interval=week",
        "/analytics/timeseries?from=yesterday",
        "/analytics/timeseries?interval=hour&from=2026-01-09T00:00:00Z&to=2026-01-08T00:00:00Z",
        "/analytics/timeseries?interval=hour&from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
        "/analytics/products/top?by=price",
        "/analytics/products/top?limit=0",
        "/analytics/summary?x=1",
    ] {
        let response = app.get(bad).await;
        if bad.ends_with("x=1") {
            assert_eq!(response.status(), 200, "the summary takes no parameters and ignores them");
            continue;
        }
        assert_eq!(response.status(), 400, "{bad}");
        assert_eq!(response.json::<Value>().await.unwrap()["error"], "invalid_request");
    }

    // Each counted order is announced as OrderProcessed.
    let announced = processed.collect(4, Duration::from_secs(10)).await;
    assert_eq!(announced.len(), 4);
    for event in &announced {
        assert_eq!(event.body["event_type"], "OrderProcessed");
        assert_eq!(event.body["data"]["processed_by"], "analytics-service");
        assert_eq!(event.body["data"]["metrics_updated"], true);
        assert_eq!(event.message_id.as_deref(), event.body["event_id"].as_str());
    }
    let mut order_ids: Vec<String> =
        announced.iter().map(|e| e.body["data"]["order_id"].as_str().unwrap().to_owned()).collect();
    let mut expected: Vec<String> =
        events.iter().map(|e| e["data"]["order_id"].as_str().unwrap().to_owned()).collect();
    order_ids.sort();
    expected.sort();
    assert_eq!(order_ids, expected);
    app.cleanup().await;
}

async fn a_redelivered_event_is_counted_once(backend: Backend) {
    let mut app = TestApp::start(backend).await;
    let mut processed = app.listen("order.processed").await;
    let event = order_created("dave", "widget", 1, "5", "2026-01-09T10:00:00Z");
    for _ in 0..3 {
        app.publish_created(&event).await;
    }
    let other = order_created("dave", "widget", 1, "7", "2026-01-09T10:00:00Z");
    app.publish_created(&other).await;
    let summary = app.wait_for_orders(2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.summary().await, summary, "the duplicates change nothing");
    assert_eq!(summary["total_revenue"], 12);
    assert_eq!(processed.collect(2, Duration::from_secs(10)).await.len(), 2);
    assert!(processed.next(Duration::from_millis(500)).await.is_none(), "one OrderProcessed per order");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        test_support::metric_sum(&metrics, "messages_consumed_total", "outcome=\"duplicate\"") > 0.0,
        "{metrics}"
    );
    app.cleanup().await;
}

/// Every interleaving of an order's creation and cancellation, through the queue: the figures
/// end as the orders that stand, and `OrderProcessed` goes out once per counted order.
async fn cancellations_count_once_whatever_order_the_events_arrive_in(backend: Backend) {
    let mut app = TestApp::start(backend).await;
    let mut processed = app.listen("order.processed").await;
    let order =
        |customer: &str, amount: &str| order_created(customer, "widget", 1, amount, "2026-01-09T10:15:00Z");
    let stands = order("sam", "1.00");
    app.publish_created(&stands).await;

    // created → cancelled
    let a = order("ann", "2.00");
    app.publish_created(&a).await;
    app.wait_for_orders(2).await;
    app.publish_cancelled(&order_cancelled(&a)).await;
    app.wait_for_summary("cancelled_orders", 1).await;

    // cancelled → created: never counted
    let b = order("bob", "3.00");
    app.publish_cancelled(&order_cancelled(&b)).await;
    app.wait_for_summary("cancelled_orders", 2).await;
    app.publish_created(&b).await;

    // created → cancelled → created again, and a cancellation delivered twice
    let c = order("cat", "4.00");
    app.publish_created(&c).await;
    let cancel_c = order_cancelled(&c);
    for _ in 0..2 {
        app.publish_cancelled(&cancel_c).await;
    }
    app.publish_created(&c).await;

    // A cancellation parked (the database refusing it) and replayed after the order was counted.
    let e = order("eve", "5.00");
    app.publish_created(&e).await;
    app.wait_for_summary("cancelled_orders", 3).await;
    app.wait_for_orders(2).await;
    app.refuse_cancellations(true).await;
    app.publish_cancelled(&order_cancelled(&e)).await;
    eventually(Duration::from_secs(20), "the cancellation parked", || async {
        (app.queue_depths().await == (0, 1)).then_some(())
    })
    .await;
    app.refuse_cancellations(false).await;
    assert_eq!(app.summary().await["total_orders"], 2, "eve still counted while her cancellation is parked");
    let replayed = app.parked(parked_command("parked replay")).await;
    assert_eq!(replayed["queues"][0]["replayed"], 1);

    let summary = app.wait_for_summary("cancelled_orders", 4).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.summary().await, summary, "nothing more changes");
    assert_eq!(
        (&summary["total_orders"], &summary["total_revenue"], &summary["total_quantity"]),
        (&json!(1), &json!(1), &json!(1)),
        "only sam's order stands: {summary}"
    );
    for customer in ["ann", "bob", "cat", "eve"] {
        assert_eq!(app.get(&format!("/analytics/customers/{customer}")).await.status(), 404, "{customer}");
    }
    let products = app.get_json("/analytics/products/top").await;
    assert_eq!(products["products"][0]["orders"], 1, "{products}");
    // sam, ann, cat and eve were counted (bob never was): one OrderProcessed each.
    assert_eq!(processed.collect(4, Duration::from_secs(10)).await.len(), 4);
    assert!(
        processed.next(Duration::from_millis(500)).await.is_none(),
        "one OrderProcessed per counted order"
    );
    app.cleanup().await;
}

async fn bad_messages_are_parked_and_never_block_the_queue(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.publish_raw(b"this is not json").await;
    let mut unprocessable = order_created("erin", "widget", 1, "5", "2026-01-09T10:00:00Z");
    unprocessable["data"]["quantity"] = json!(0);
    app.publish_created(&unprocessable).await;
    let mut shipped = order_created("erin", "widget", 1, "5", "2026-01-09T10:00:00Z");
    shipped["event_type"] = json!("OrderShipped");
    app.publish_created(&shipped).await;
    app.publish_created(&order_created("erin", "widget", 1, "5", "2026-01-09T10:00:00Z")).await;

    app.wait_for_orders(1).await;
    let parked = eventually(Duration::from_secs(10), "three parked messages", || async {
        let listed = app.parked(parked_command("parked list --limit 10")).await;
        (listed["queues"][0]["messages"].as_array()?.len() == 3).then_some(listed["queues"][0].clone())
    })
    .await;
    let reasons: Vec<String> = parked["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["reason"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(reasons.iter().any(|r| r.contains("not a valid event envelope")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("quantity")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("OrderShipped")), "{reasons:?}");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(test_support::metric_sum(&metrics, "messages_dead_lettered_total", "") > 0.0, "{metrics}");

    // Replayed, they fail again and are parked again: nothing is lost, nothing counted.
    let replayed = app.parked(parked_command("parked replay")).await;
    assert_eq!(replayed["queues"][0]["replayed"], 3);
    eventually(Duration::from_secs(10), "parked again", || async {
        (app.queue_depths().await == (0, 3)).then_some(())
    })
    .await;
    assert_eq!(app.summary().await["total_orders"], 1);
    app.cleanup().await;
}

#[tokio::test]
async fn events_arriving_while_the_database_is_down_are_counted_once_it_returns() {
    let database_proxy = FaultProxy::start(host_port(&test_support::mysql_admin_url(), 3306)).await.unwrap();
    let port = database_proxy.port();
    let app = TestApp::spawn_with(|s| {
        let name = s.database.url.clone().unwrap().rsplit('/').next().unwrap().to_owned();
        s.database.url = Some(format!("mysql://root@127.0.0.1:{port}/{name}"));
        s.database.acquire_timeout_ms = 500;
    })
    .await;
    app.publish_created(&order_created("frank", "widget", 1, "1.5", "2026-01-09T10:00:00Z")).await;
    app.wait_for_orders(1).await;

    database_proxy.cut();
    for i in 0..5 {
        app.publish_created(&order_created(
            "frank",
            "widget",
            1,
            &format!("{}", i + 1),
            "2026-01-09T10:00:00Z",
        ))
        .await;
    }
    // Ten times the whole retry schedule (100 + 200 ms): the consumer waits, it does not retry.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 503);
    let checks: Value = ready.json().await.unwrap();
    assert_eq!(checks["checks"]["consumer"]["status"], "down", "{checks}");
    assert!(checks["checks"]["consumer"]["error"].as_str().unwrap().starts_with("paused"), "{checks}");
    database_proxy.restore();

    let summary = app.wait_for_orders(6).await;
    assert_eq!(summary["total_revenue"].to_string(), "16.5");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert_eq!(test_support::metric_sum(&metrics, "messages_retried_total", ""), 0.0, "{metrics}");
    assert_eq!(test_support::metric_sum(&metrics, "messages_dead_lettered_total", ""), 0.0, "{metrics}");
    assert_eq!(app.queue_depths().await, (0, 0));
    app.cleanup().await;
}

/// The cached summary lives an hour here: only the refresh after each commit can make a read
/// see the new order within the wait.
async fn the_summary_is_never_stale_after_a_commit(backend: Backend) {
    let app =
        TestApp::start_with(backend, |settings| settings.analytics.summary_cache_ttl_seconds = 3600).await;
    for round in 1..=5 {
        app.publish_created(&order_created("gina", "widget", 1, "1", "2026-01-09T10:00:00Z")).await;
        let summary = app.wait_for_orders(round).await;
        assert_eq!(summary["total_revenue"], round);
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        test_support::metric_value(&metrics, r#"cache_requests_total{cache="summary",result="hit"}"#) > 0.0,
        "{metrics}"
    );
    app.cleanup().await;
}

/// Publishes nowhere: the handler tests below only need the outbox handoff to exist.
struct Nowhere;

#[async_trait::async_trait]
impl messaging::EventPublisher for Nowhere {
    async fn publish(
        &self,
        messages: &[messaging::OutgoingMessage],
    ) -> Vec<Result<(), messaging::PublishError>> {
        vec![Err(messaging::PublishError::Unavailable("nowhere".into())); messages.len()]
    }
}

fn delivery(event: &Value) -> messaging::Delivery {
    messaging::Delivery {
        message_id: event["event_id"].as_str().map(str::to_owned),
        event_type: Some("OrderCreated".into()),
        routing_key: "order.created".into(),
        headers: Default::default(),
        payload: event.to_string().into_bytes(),
        attempt: 1,
        redelivered: false,
    }
}

#[tokio::test]
async fn an_event_that_overflows_an_aggregate_fails_alone_and_its_batch_is_counted_once() {
    use analytics_service::{
        consumer::OrderEventsHandler, service::AnalyticsService, store::sql::SqlAnalyticsStore,
    };
    use messaging::{
        EventHandler, HandleError, Handled,
        outbox::{Relay, store::SqlOutbox},
    };
    use std::sync::Arc;

    let database = test_support::TestDatabase::create().await.unwrap();
    let pool = sqlx::MySqlPool::connect(&database.url()).await.unwrap();
    analytics_service::MIGRATOR.run(&pool).await.unwrap();
    // A product whose revenue is a cent short of what its BIGINT column holds.
    sqlx::query(
        "INSERT INTO product_totals (product_id, orders, quantity, revenue_minor) VALUES ('full', 1, 1, ?)",
    )
    .bind(i64::MAX - 1)
    .execute(&pool)
    .await
    .unwrap();
    let relay = Relay::new(
        Arc::new(SqlOutbox::new(pool.clone())),
        Arc::new(Nowhere),
        Default::default(),
        messaging::MessagingMetrics::unregistered(),
    );
    let service = AnalyticsService::new(
        Arc::new(SqlAnalyticsStore::new(pool.clone())),
        Arc::new(platform::cache::memory::MemoryCache::default()),
        Duration::from_secs(10),
        relay.handoff(),
        platform::cache::CacheMetrics::register(&mut Default::default(), "summary"),
    );
    let handler = OrderEventsHandler::new(service.clone(), "analytics.orders".into());

    let mut events: Vec<Value> =
        (1..=9).map(|i| order_created("ivy", &format!("p{i}"), 1, "2", "2026-01-09T10:00:00Z")).collect();
    events.insert(4, order_created("ivy", "full", 1, "1", "2026-01-09T10:00:00Z"));
    let batch: Vec<messaging::Delivery> = events.iter().map(delivery).collect();

    let outcomes = handler.handle(&batch).await;
    for (position, outcome) in outcomes.iter().enumerate() {
        if position == 4 {
            assert!(
                matches!(outcome, Err(HandleError::Permanent(_))),
                "the overflow is refused for good: {outcome:?}"
            );
        } else {
            assert_eq!(outcome, &Ok(Handled::Processed), "delivery {position}");
        }
    }
    let summary = service.store().summary().await.unwrap();
    assert_eq!((summary.summary.total_orders, summary.summary.total_revenue.minor()), (9, 1_800));

    // Delivered again, the nine are duplicates and the tenth fails the same way.
    let again = handler.handle(&batch).await;
    assert_eq!(again.iter().filter(|outcome| outcome == &&Ok(Handled::Duplicate)).count(), 9);
    assert!(matches!(again[4], Err(HandleError::Permanent(_))));
    assert_eq!(service.store().summary().await.unwrap().summary.total_orders, 9);
    pool.close().await;
    drop(database);
}

/// With API keys configured, every analytics read needs `analytics:read`; probes stay open.
#[tokio::test]
async fn the_analytics_api_needs_the_analytics_read_scope() {
    use platform::access::{ApiKey, Scope};
    let app = TestApp::spawn_with(|settings| {
        settings.auth.api_keys = vec![
            ApiKey::for_key("analyst", &[Scope::AnalyticsRead]),
            ApiKey::for_key("order-desk", &[Scope::OrdersRead, Scope::OrdersWrite]),
        ];
    })
    .await;
    let client = reqwest::Client::new();
    for path in
        ["/analytics/summary", "/analytics/products/top", "/analytics/customers/c-1", "/analytics/timeseries"]
    {
        let response = client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer realm=\"orderflow\"");
        let response = client.get(app.url(path)).bearer_auth("order-desk").send().await.unwrap();
        assert_eq!(response.status(), 403, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["details"]["scope"], "analytics:read");
        let response = client.get(app.url(path)).bearer_auth("analyst").send().await.unwrap();
        assert_ne!(response.status(), 401, "{path}");
        assert_ne!(response.status(), 403, "{path}");
    }
    assert_eq!(app.get("/readyz").await.status(), 200);
    app.cleanup().await;
}
