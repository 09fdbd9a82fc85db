//! The order API, black-box: every test runs against the real MariaDB, Redis and RabbitMQ
//! (`real::…`) and against the embedded backends (`embedded::…`), from the same code.

use std::{collections::HashSet, time::Duration};

use crate::support::{Backend, TestApp, on_both_backends, order_body};
use serde_json::{Value, json};

on_both_backends!(
    create_then_get_returns_the_same_order,
    money_is_exact_at_every_scale,
    bad_input_gets_a_clear_error_and_changes_nothing,
    unknown_and_malformed_ids_are_not_found,
    idempotency_key_replays_the_original_order,
    concurrent_orders_are_all_stored_with_their_events,
    lists_orders_newest_first_with_a_cursor,
    an_accepted_order_is_published_as_order_created,
    an_order_processed_event_moves_the_order_to_processed,
    the_service_serves_its_openapi_document,
    a_quantity_is_any_whole_json_number,
    cancelling_an_order_emits_order_cancelled_once,
    a_cancelled_order_stays_cancelled_when_analytics_reports_it,
);

async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.expect("JSON body")
}

/// `2.0` is the integer 2 to JSON Schema, so the API takes it as such; `2.5` and `"2"` stay
/// refused (see `bad_input_gets_a_clear_error_and_changes_nothing`).
async fn a_quantity_is_any_whole_json_number(backend: Backend) {
    let app = TestApp::start(backend).await;
    let body = json!({"customer_id": "c", "product_id": "p", "quantity": 2.0, "total_amount": 1});
    let response = app.post_order(&body).await;
    assert_eq!(response.status(), 201);
    assert_eq!(json_of(response).await["quantity"], 2);
    let huge = json!({"customer_id": "c", "product_id": "p", "quantity": 1e30, "total_amount": 1});
    let response = app.post_order(&huge).await;
    assert_eq!(response.status(), 400);
    assert_eq!(json_of(response).await["details"]["field"], "quantity");
    app.cleanup().await;
}

async fn the_service_serves_its_openapi_document(backend: Backend) {
    let app = TestApp::start(backend).await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let served = json_of(response).await;
    let generated: Value = serde_json::from_str(&order_service::http::openapi().to_json().unwrap()).unwrap();
    assert_eq!(served, generated);
    assert_eq!(served["openapi"], "3.1.0");
    let paths: Vec<&String> = served["paths"].as_object().unwrap().keys().collect();
    assert_eq!(paths, ["/livez", "/metrics", "/orders", "/orders/{id}", "/orders/{id}/cancel", "/readyz"]);
    app.cleanup().await;
}

async fn create_then_get_returns_the_same_order(backend: Backend) {
    let app = TestApp::start(backend).await;

    let response = app.post_order(&order_body("customer-123", "99.99")).await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created = json_of(response).await;
    assert_eq!(created["customer_id"], "customer-123");
    assert_eq!(created["product_id"], "product-456");
    assert_eq!(created["quantity"], 2);
    assert_eq!(created["status"], "created");
    assert_eq!(created["created_at"], created["updated_at"]);
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/orders/{id}"));
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);

    // The amount comes back as the number that was sent, to the cent.
    let first = app.get(&format!("/orders/{id}")).await;
    assert_eq!(first.status(), 200);
    let text = first.text().await.unwrap();
    assert!(text.contains(r#""total_amount":99.99"#), "{text}");
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), created);

    // The second read is served from the cache.
    let second = json_of(app.get(&format!("/orders/{id}")).await).await;
    assert_eq!(second, created);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains(r#"cache_requests_total{cache="orders",result="hit"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"cache_requests_total{cache="orders",result="miss"} 1"#), "{metrics}");
    for name in [
        "orders_created_total 1",
        "orders_created_duration_seconds_count 1",
        "http_requests_total{",
        "http_request_duration_seconds_bucket{",
    ] {
        assert!(metrics.contains(name), "missing {name} in {metrics}");
    }
    assert!(metrics.contains(r#"route="/orders/{id}""#), "{metrics}");

    app.cleanup().await;
}

async fn money_is_exact_at_every_scale(backend: Backend) {
    let app = TestApp::start(backend).await;
    for (sent, returned, minor) in [
        ("0.01", "0.01", 1),
        ("100", "100", 10000),
        ("19.90", "19.9", 1990),
        ("99999999.99", "99999999.99", 9999999999i64),
    ] {
        let response = app.post_order(&order_body("money", sent)).await;
        assert_eq!(response.status(), 201, "{sent}");
        let text = response.text().await.unwrap();
        assert!(text.contains(&format!(r#""total_amount":{returned}"#)), "{sent}: {text}");
        let id: String = serde_json::from_str::<Value>(&text).unwrap()["id"].as_str().unwrap().into();
        let stored = app
            .db
            .scalar_for("SELECT total_minor FROM orders WHERE id = ?", uuid::Uuid::parse_str(&id).unwrap())
            .await;
        assert_eq!(stored, minor);
    }
    app.cleanup().await;
}

async fn bad_input_gets_a_clear_error_and_changes_nothing(backend: Backend) {
    let app = TestApp::start(backend).await;
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "empty customer",
            json!({"customer_id": "", "product_id": "p", "quantity": 1, "total_amount": 1}),
            "customer_id",
        ),
        ("missing customer", json!({"product_id": "p", "quantity": 1, "total_amount": 1}), "customer_id"),
        (
            "blank product",
            json!({"customer_id": "c", "product_id": "  ", "quantity": 1, "total_amount": 1}),
            "product_id",
        ),
        (
            "long product",
            json!({"customer_id": "c", "product_id": "x".repeat(129), "quantity": 1, "total_amount": 1}),
            "product_id",
        ),
        (
            "zero quantity",
            json!({"customer_id": "c", "product_id": "p", "quantity": 0, "total_amount": 1}),
            "quantity",
        ),
        (
            "negative quantity",
            json!({"customer_id": "c", "product_id": "p", "quantity": -1, "total_amount": 1}),
            "quantity",
        ),
        (
            "fractional quantity",
            json!({"customer_id": "c", "product_id": "p", "quantity": 1.5, "total_amount": 1}),
            "quantity",
        ),
        (
            "string quantity",
            json!({"customer_id": "c", "product_id": "p", "quantity": "2", "total_amount": 1}),
            "quantity",
        ),
        (
            "zero amount",
            json!({"customer_id": "c", "product_id": "p", "quantity": 1, "total_amount": 0}),
            "total_amount",
        ),
        (
            "negative amount",
            json!({"customer_id": "c", "product_id": "p", "quantity": 1, "total_amount": -5}),
            "total_amount",
        ),
        (
            "three decimals",
            json!({"customer_id": "c", "product_id": "p", "quantity": 1, "total_amount": 1.005}),
            "total_amount",
        ),
        (
            "huge amount",
            json!({"customer_id": "c", "product_id": "p", "quantity": 1, "total_amount": 1e12}),
            "total_amount",
        ),
        ("missing amount", json!({"customer_id": "c", "product_id": "p", "quantity": 1}), "total_amount"),
        (
            "amount as words",
            json!({"customer_id": "c", "product_id": "p", "quantity": 1, "total_amount": "ten"}),
            "total_amount",
        ),
    ];
    for (what, body, field) in cases {
        let response = app.post_order(&body).await;
        assert_eq!(response.status(), 400, "{what}");
        let error = json_of(response).await;
        assert_eq!(error["error"], "invalid_request", "{what}");
        assert_eq!(error["details"]["field"], field, "{what}: {error}");
        assert!(error["message"].as_str().unwrap().contains(field), "{what}: {error}");
    }
    // The message the reference documents, word for word.
    let error = json_of(
        app.post_order(&json!({"customer_id": "c", "product_id": "p", "quantity": 1, "total_amount": 0}))
            .await,
    )
    .await;
    assert_eq!(error["message"], "total_amount must be greater than 0");

    let not_json = app
        .client
        .post(app.url("/orders"))
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    assert_eq!(json_of(not_json).await["error"], "invalid_request");

    let array = app.client.post(app.url("/orders")).json(&json!([1, 2])).send().await.unwrap();
    assert_eq!(array.status(), 400);

    let wrong_type = app
        .client
        .post(app.url("/orders"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), 415);
    assert_eq!(json_of(wrong_type).await["error"], "unsupported_media_type");

    let no_type =
        app.client.post(app.url("/orders")).body(order_body("c", "1").to_string()).send().await.unwrap();
    assert_eq!(no_type.status(), 415);

    let huge = json!({"customer_id": "c", "product_id": "p", "quantity": 1, "total_amount": 1, "note": "x".repeat(100_000)});
    let too_large = app.post_order(&huge).await;
    assert_eq!(too_large.status(), 413);
    assert_eq!(json_of(too_large).await["error"], "payload_too_large");

    let bad_key = app
        .client
        .post(app.url("/orders"))
        .header("idempotency-key", "has space")
        .json(&order_body("c", "1"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_key.status(), 400);
    assert_eq!(json_of(bad_key).await["details"]["field"], "Idempotency-Key");

    assert_eq!(app.count("SELECT COUNT(*) FROM orders").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox").await, 0);
    app.cleanup().await;
}

async fn unknown_and_malformed_ids_are_not_found(backend: Backend) {
    let app = TestApp::start(backend).await;
    for path in ["/orders/0192f5c4-8a2b-7c3d-9e4f-5a6b7c8d9e0f", "/orders/not-a-uuid", "/orders/%20"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 404, "{path}");
        let error = json_of(response).await;
        assert_eq!(error, json!({"error": "not_found", "message": "order not found", "details": {}}));
    }
    let unknown_route = app.get("/nope").await;
    assert_eq!(unknown_route.status(), 404);
    assert_eq!(json_of(unknown_route).await["error"], "not_found");
    let wrong_method = app.client.delete(app.url("/orders")).send().await.unwrap();
    assert_eq!(wrong_method.status(), 405);
    app.cleanup().await;
}

async fn idempotency_key_replays_the_original_order(backend: Backend) {
    let app = TestApp::start(backend).await;
    let post = |key: &str, body: Value| {
        app.client.post(app.url("/orders")).header("idempotency-key", key).json(&body).send()
    };

    let first = post("key-1", order_body("c1", "10")).await.unwrap();
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first = json_of(first).await;

    let again = post("key-1", order_body("c1", "10.00")).await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(json_of(again).await, first);

    let reused = post("key-1", order_body("c1", "11")).await.unwrap();
    assert_eq!(reused.status(), 422);
    assert_eq!(json_of(reused).await["error"], "idempotency_key_reused");

    // Many concurrent requests with one key create one order: each is answered with it (201),
    // or refused while it is being stored (409).
    let racers = (0..20).map(|_| post("key-2", order_body("c2", "5")));
    let answers = futures::future::join_all(racers).await;
    let mut ids = HashSet::new();
    for answer in answers {
        let answer = answer.unwrap();
        match answer.status().as_u16() {
            201 => {
                ids.insert(json_of(answer).await["id"].as_str().unwrap().to_owned());
            }
            409 => assert_eq!(json_of(answer).await["error"], "idempotency_key_in_progress"),
            status => panic!("unexpected {status}"),
        }
    }
    assert_eq!(ids.len(), 1);

    assert_eq!(app.count("SELECT COUNT(*) FROM orders").await, 2);
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox").await, 2);
    app.cleanup().await;
}

async fn concurrent_orders_are_all_stored_with_their_events(backend: Backend) {
    let app = TestApp::start(backend).await;
    let bodies: Vec<Value> = (0..200)
        .map(|i| order_body(&format!("burst-{}", i % 7), &format!("{}.{:02}", i + 1, i % 100)))
        .collect();
    let posts = bodies.iter().map(|body| app.post_order(body));
    let mut ids = HashSet::new();
    for response in futures::future::join_all(posts).await {
        assert_eq!(response.status(), 201);
        ids.insert(json_of(response).await["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 200);
    assert_eq!(app.count("SELECT COUNT(*) FROM orders").await, 200);
    assert_eq!(app.count("SELECT COUNT(DISTINCT event_id) FROM outbox").await, 200);
    app.cleanup().await;
}

async fn lists_orders_newest_first_with_a_cursor(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut created = Vec::new();
    for i in 0..5 {
        let order = json_of(app.post_order(&order_body("alice", &format!("{}", i + 1))).await).await;
        created.push(order["id"].as_str().unwrap().to_owned());
    }
    app.post_order(&order_body("bob", "1")).await;

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/orders?customer_id=alice&limit=2&cursor={c}"),
            None => "/orders?customer_id=alice&limit=2".to_owned(),
        };
        let page = json_of(app.get(&path).await).await;
        for order in page["orders"].as_array().unwrap() {
            assert_eq!(order["customer_id"], "alice");
            seen.push(order["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    created.reverse();
    assert_eq!(seen, created);

    let everyone = json_of(app.get("/orders").await).await;
    assert_eq!(everyone["orders"].as_array().unwrap().len(), 6);
    assert_eq!(everyone["next_cursor"], Value::Null);

    for bad in [
        "/orders?limit=0",
        "/orders?limit=101",
        "/orders?limit=abc",
        "/orders?cursor=zzz",
        "/orders?customer_id=",
        "/orders?color=red",
    ] {
        let response = app.get(bad).await;
        assert_eq!(response.status(), 400, "{bad}");
        assert_eq!(json_of(response).await["error"], "invalid_request");
    }
    app.cleanup().await;
}

async fn an_accepted_order_is_published_as_order_created(backend: Backend) {
    let mut app = TestApp::start(backend).await;
    let mut listener = app.listen("order.created").await;

    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let order = json_of(
        app.client
            .post(app.url("/orders"))
            .header("traceparent", traceparent)
            .json(&order_body("customer-123", "99.99"))
            .send()
            .await
            .unwrap(),
    )
    .await;

    let event = listener.next(Duration::from_secs(10)).await.expect("OrderCreated published");
    assert_eq!(event.body["event_type"], "OrderCreated");
    assert_eq!(event.message_id.as_deref(), event.body["event_id"].as_str());
    assert_eq!(event.body["data"]["order_id"], order["id"]);
    assert_eq!(event.body["data"]["customer_id"], "customer-123");
    assert_eq!(event.body["data"]["quantity"], 2);
    assert_eq!(event.body["data"]["total_amount"].to_string(), "99.99");
    assert!(event.body["timestamp"].is_string());
    // The caller's trace continues through the event.
    assert!(
        event.headers["traceparent"].starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{:?}",
        event.headers
    );

    // Confirmed by the broker, the row leaves the outbox.
    crate::support::eventually(Duration::from_secs(5), "the outbox row removed", || async {
        (app.count("SELECT COUNT(*) FROM outbox").await == 0).then_some(())
    })
    .await;
    app.cleanup().await;
}

async fn an_order_processed_event_moves_the_order_to_processed(backend: Backend) {
    let app = TestApp::start(backend).await;
    let order = json_of(app.post_order(&order_body("customer-123", "99.99")).await).await;
    let path = format!("/orders/{}", order["id"].as_str().unwrap());
    // Cached as `created` first: the change must replace the cached body.
    assert_eq!(json_of(app.get(&path).await).await["status"], "created");

    let event = json!({
        "event_type": "OrderProcessed",
        "event_id": uuid::Uuid::now_v7().to_string(),
        "timestamp": "2026-01-09T10:15:00Z",
        "data": {"order_id": order["id"], "processed_by": "analytics-service", "metrics_updated": true}
    });
    app.publish("order.processed", &event).await;
    let processed = crate::support::eventually(Duration::from_secs(10), "the order processed", || async {
        let current = json_of(app.get(&path).await).await;
        (current["status"] == "processed").then_some(current)
    })
    .await;
    assert_eq!(processed["created_at"], order["created_at"]);
    assert_ne!(processed["updated_at"], order["updated_at"]);

    // A redelivery changes nothing and counts as a duplicate.
    app.publish("order.processed", &event).await;
    let queue = &app.settings.queues.order_processed;
    let duplicate = format!(r#"messages_consumed_total{{queue="{queue}",outcome="duplicate"}} 1"#);
    crate::support::eventually(Duration::from_secs(10), "the duplicate counted", || async {
        app.get("/metrics").await.text().await.unwrap().contains(&duplicate).then_some(())
    })
    .await;
    assert_eq!(json_of(app.get(&path).await).await, processed);
    assert_eq!(app.count("SELECT COUNT(*) FROM orders WHERE status = 'processed'").await, 1);
    app.cleanup().await;
}

/// A created or processed order is cancelled once: one `OrderCancelled` in the outbox and on
/// the bus, the cached body replaced, the list filtered by status; a second cancellation answers
/// the same order and emits nothing; bad input and unknown ids change nothing.
async fn cancelling_an_order_emits_order_cancelled_once(backend: Backend) {
    let mut app = TestApp::start(backend).await;
    let mut cancelled_events = app.listen("order.cancelled").await;
    // The in-process bus refuses an event no queue takes (so that none is lost): take them.
    let _created_events = app.listen("order.created").await;
    let order = json_of(app.post_order(&order_body("customer-c", "12.50")).await).await;
    let other = json_of(app.post_order(&order_body("customer-c", "1.00")).await).await;
    let id = order["id"].as_str().unwrap();
    let path = format!("/orders/{id}");
    let cancel = |path: String| app.client.post(app.url(&format!("{path}/cancel")));
    assert_eq!(json_of(app.get(&path).await).await["status"], "created", "cached as created first");

    // Refused: nothing changes.
    let too_long = cancel(path.clone()).json(&json!({"reason": "r".repeat(501)})).send().await.unwrap();
    assert_eq!(too_long.status(), 400);
    assert_eq!(json_of(too_long).await["details"]["field"], "reason");
    let control = cancel(path.clone()).json(&json!({"reason": "a\u{0}b"})).send().await.unwrap();
    assert_eq!(control.status(), 400);
    let not_json =
        cancel(path.clone()).header("content-type", "text/plain").body("why").send().await.unwrap();
    assert_eq!(not_json.status(), 415);
    let malformed =
        cancel(path.clone()).header("content-type", "application/json").body("{").send().await.unwrap();
    assert_eq!(malformed.status(), 400);
    for unknown in [format!("/orders/{}", uuid::Uuid::now_v7()), "/orders/not-a-uuid".to_owned()] {
        assert_eq!(cancel(unknown).send().await.unwrap().status(), 404);
    }
    assert_eq!(json_of(app.get(&path).await).await["status"], "created");

    let response = cancel(path.clone()).json(&json!({"reason": "  ordered twice  "})).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let cancelled = json_of(response).await;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!((&cancelled["id"], &cancelled["created_at"]), (&order["id"], &order["created_at"]));
    assert!(cancelled["updated_at"].as_str() > order["updated_at"].as_str(), "{cancelled}");
    assert_eq!(json_of(app.get(&path).await).await, cancelled, "the cached body is replaced");

    let event = cancelled_events.next(Duration::from_secs(10)).await.expect("OrderCancelled published");
    assert_eq!(event.body["event_type"], "OrderCancelled");
    assert_eq!(event.message_id.as_deref(), event.body["event_id"].as_str());
    assert_eq!(event.body["data"]["order_id"], order["id"]);
    assert_eq!(event.body["data"]["reason"], "ordered twice");
    assert!(event.body["data"]["cancelled_at"].is_string());

    // Again, without a body: the same order, unchanged, and no second event.
    let again = cancel(path.clone()).send().await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(json_of(again).await, cancelled);
    assert!(
        cancelled_events.next(Duration::from_millis(500)).await.is_none(),
        "one OrderCancelled per order"
    );

    let listed = json_of(app.get("/orders?status=cancelled").await).await;
    assert_eq!(listed["orders"].as_array().unwrap().len(), 1);
    assert_eq!(listed["orders"][0]["id"], order["id"]);
    let created = json_of(app.get("/orders?status=created&customer_id=customer-c").await).await;
    assert_eq!(created["orders"][0]["id"], other["id"]);
    let bad = app.get("/orders?status=shipped").await;
    assert_eq!(bad.status(), 400);
    assert_eq!(json_of(bad).await["details"]["field"], "status");

    // With an Idempotency-Key: the repeat is replayed; the key with another request is refused.
    let other_path = format!("/orders/{}", other["id"].as_str().unwrap());
    let keyed = || cancel(other_path.clone()).header("idempotency-key", "cancel-key-1");
    let first = keyed().send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let repeat = keyed().send().await.unwrap();
    assert_eq!(repeat.headers()["idempotent-replayed"], "true");
    assert_eq!(json_of(repeat).await["status"], "cancelled");
    let reused = keyed().json(&json!({"reason": "another"})).send().await.unwrap();
    assert_eq!(reused.status(), 422);
    let created_with_key = app
        .client
        .post(app.url("/orders"))
        .header("idempotency-key", "cancel-key-1")
        .json(&order_body("customer-c", "1.00"))
        .send()
        .await
        .unwrap();
    assert_eq!(created_with_key.status(), 422, "a cancellation's key does not create an order");

    assert_eq!(app.count("SELECT COUNT(*) FROM orders WHERE status = 'cancelled'").await, 2);
    crate::support::eventually(Duration::from_secs(5), "the outbox emptied", || async {
        (app.count("SELECT COUNT(*) FROM outbox").await == 0).then_some(())
    })
    .await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("orders_cancelled_total 2"), "{metrics}");
    app.cleanup().await;
}

/// Analytics may report an order processed after it was cancelled: it stays cancelled.
async fn a_cancelled_order_stays_cancelled_when_analytics_reports_it(backend: Backend) {
    let app = TestApp::start(backend).await;
    let order = json_of(app.post_order(&order_body("customer-p", "3.00")).await).await;
    let path = format!("/orders/{}", order["id"].as_str().unwrap());
    let cancelled = json_of(app.client.post(app.url(&format!("{path}/cancel"))).send().await.unwrap()).await;
    let event = json!({
        "event_type": "OrderProcessed",
        "event_id": uuid::Uuid::now_v7().to_string(),
        "timestamp": "2026-01-09T10:15:00Z",
        "data": {"order_id": order["id"], "processed_by": "analytics-service", "metrics_updated": true}
    });
    app.publish("order.processed", &event).await;
    let queue = &app.settings.queues.order_processed;
    let duplicate = format!(r#"messages_consumed_total{{queue="{queue}",outcome="duplicate"}} 1"#);
    crate::support::eventually(Duration::from_secs(10), "the event consumed", || async {
        app.get("/metrics").await.text().await.unwrap().contains(&duplicate).then_some(())
    })
    .await;
    assert_eq!(json_of(app.get(&path).await).await, cancelled);

    // A processed order can be cancelled too.
    let processed = json_of(app.post_order(&order_body("customer-p", "4.00")).await).await;
    let processed_path = format!("/orders/{}", processed["id"].as_str().unwrap());
    let mut event = event.clone();
    event["event_id"] = json!(uuid::Uuid::now_v7().to_string());
    event["data"]["order_id"] = processed["id"].clone();
    app.publish("order.processed", &event).await;
    crate::support::eventually(Duration::from_secs(10), "the order processed", || async {
        (json_of(app.get(&processed_path).await).await["status"] == "processed").then_some(())
    })
    .await;
    let response = app.client.post(app.url(&format!("{processed_path}/cancel"))).send().await.unwrap();
    assert_eq!(json_of(response).await["status"], "cancelled");
    assert_eq!(json_of(app.get(&processed_path).await).await["status"], "cancelled");
    app.cleanup().await;
}

/// With API keys configured: no key or an unknown one is 401, a key without the operation's
/// scope 403 (both with `WWW-Authenticate`, both changing nothing); probes, metrics and the
/// documentation stay open.
#[tokio::test]
async fn api_keys_guard_every_order_operation() {
    use platform::access::{ApiKey, Scope};
    let app = TestApp::spawn_with(|settings| {
        settings.auth.api_keys = vec![
            ApiKey::for_key("writer-key", &[Scope::OrdersWrite]),
            ApiKey::for_key("reader-key", &[Scope::OrdersRead]),
            ApiKey::for_key("analytics-key", &[Scope::AnalyticsRead]),
        ];
    })
    .await;
    let client = reqwest::Client::new();
    let post = |key: Option<&str>| {
        let request = client.post(app.url("/orders")).json(&order_body("c-auth", "10.00"));
        match key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    };

    let response = post(None).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer realm=\"orderflow\"");
    assert_eq!(json_of(response).await["error"], "unauthorized");

    let response = post(Some("not-a-key")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer realm=\"orderflow\", error=\"invalid_token\"");

    for key in ["reader-key", "analytics-key"] {
        let response = post(Some(key)).send().await.unwrap();
        assert_eq!(response.status(), 403, "{key}");
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer realm=\"orderflow\", error=\"insufficient_scope\", scope=\"orders:write\""
        );
        let body = json_of(response).await;
        assert_eq!(body["error"], "forbidden");
        assert_eq!(body["details"]["scope"], "orders:write");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM orders").await, 0, "a refused request stores nothing");

    let response = post(Some("writer-key")).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let id = json_of(response).await["id"].as_str().unwrap().to_owned();

    for path in [format!("/orders/{id}"), "/orders".to_owned()] {
        let read = |key: &'static str| client.get(app.url(&path)).bearer_auth(key).send();
        assert_eq!(read("writer-key").await.unwrap().status(), 403, "{path}");
        assert_eq!(read("reader-key").await.unwrap().status(), 200, "{path}");
        assert_eq!(client.get(app.url(&path)).send().await.unwrap().status(), 401, "{path}");
    }
    // The scheme's name is case-insensitive (RFC 9110).
    let response =
        client.get(app.url("/orders")).header("authorization", "bearer reader-key").send().await.unwrap();
    assert_eq!(response.status(), 200);

    for open in ["/livez", "/readyz", "/metrics", "/openapi.json", "/docs/"] {
        assert_eq!(client.get(app.url(open)).send().await.unwrap().status(), 200, "{open}");
    }
    // The document served says what this deployment needs: a key, no keyless alternative.
    let document = json_of(app.get("/openapi.json").await).await;
    assert_eq!(document["paths"]["/orders"]["post"]["security"], json!([{"apiKey": ["orders:write"]}]));
    assert_eq!(document["paths"]["/orders/{id}"]["get"]["security"], json!([{"apiKey": ["orders:read"]}]));
    let committed: Value = serde_json::from_str(&order_service::http::openapi().to_json().unwrap()).unwrap();
    assert_eq!(committed["paths"]["/orders"]["post"]["security"], json!([{"apiKey": ["orders:write"]}, {}]));
    assert_eq!(client.get(app.url("/no-such-path")).send().await.unwrap().status(), 404);
    app.cleanup().await;
}

/// Each client has its own token bucket: past it, 429 with `Retry-After` and nothing done; every
/// admitted answer says how much is left.
#[tokio::test]
async fn a_client_past_its_rate_limit_is_answered_429_and_others_are_not() {
    use platform::access::{ApiKey, Scope};
    let app = TestApp::spawn_with(|settings| {
        settings.auth.api_keys = vec![
            ApiKey::for_key("busy-client", &[Scope::OrdersWrite, Scope::OrdersRead]),
            ApiKey::for_key("quiet-client", &[Scope::OrdersRead]),
        ];
        // A token every 100 s after a burst of 3: the bucket cannot refill during the test.
        settings.rate_limit.requests_per_second = 0.01;
        settings.rate_limit.burst = 3;
    })
    .await;
    let client = reqwest::Client::new();
    let post =
        || client.post(app.url("/orders")).bearer_auth("busy-client").json(&order_body("c-rate", "1.00"));

    for remaining in [2, 1] {
        let response = post().send().await.unwrap();
        assert_eq!(response.status(), 201);
        assert_eq!(response.headers()["ratelimit-limit"], "3");
        assert_eq!(response.headers()["ratelimit-remaining"], remaining.to_string().as_str());
    }
    let response = client.get(app.url("/orders")).bearer_auth("busy-client").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["ratelimit-remaining"], "0");

    let response = post().send().await.unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1, "Retry-After {retry_after}");
    assert_eq!(response.headers()["ratelimit-remaining"], "0");
    assert_eq!(json_of(response).await["error"], "rate_limited");
    assert_eq!(app.count("SELECT COUNT(*) FROM orders").await, 2, "a refused request stores nothing");

    let response = client.get(app.url("/orders")).bearer_auth("quiet-client").send().await.unwrap();
    assert_eq!(response.status(), 200, "another key has its own bucket");
    // Probes and metrics are never limited.
    for _ in 0..5 {
        assert_eq!(app.get("/livez").await.status(), 200);
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("http_requests_rate_limited_total{route=\"/orders\"} 1"),
        "the refusal is counted:\n{metrics}"
    );
    app.cleanup().await;
}

/// Without API keys, the bucket is the client address's.
#[tokio::test]
async fn without_keys_the_rate_limit_is_per_client_address() {
    let app = TestApp::spawn_with(|settings| {
        settings.rate_limit.requests_per_second = 0.01;
        settings.rate_limit.burst = 2;
    })
    .await;
    assert_eq!(app.get("/orders").await.status(), 200);
    assert_eq!(app.get("/orders").await.status(), 200);
    let response = app.get("/orders").await;
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    // What a client claims is ignored unless it comes through a trusted proxy.
    let claimed =
        app.client.get(app.url("/orders")).header("x-forwarded-for", "203.0.113.1").send().await.unwrap();
    assert_eq!(claimed.status(), 429);
    app.cleanup().await;
}

/// Behind a trusted proxy (here the loopback address the test connects from), each client
/// `X-Forwarded-For` names has its own bucket.
#[tokio::test]
async fn behind_a_trusted_proxy_the_rate_limit_is_per_forwarded_client() {
    let app = TestApp::spawn_with(|settings| {
        settings.rate_limit.requests_per_second = 0.01;
        settings.rate_limit.burst = 1;
        settings.rate_limit.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let get = |forwarded: &'static str| {
        app.client.get(app.url("/orders")).header("x-forwarded-for", forwarded).send()
    };
    assert_eq!(get("203.0.113.1").await.unwrap().status(), 200);
    assert_eq!(get("203.0.113.1").await.unwrap().status(), 429);
    // A client writing another address first changes nothing: the proxy's entry is the last.
    assert_eq!(get("198.51.100.7, 203.0.113.1").await.unwrap().status(), 429);
    assert_eq!(get("203.0.113.2").await.unwrap().status(), 200);
    app.cleanup().await;
}
