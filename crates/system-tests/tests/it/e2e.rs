//! The whole system, as separate processes, against the real servers.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use serde_json::{Value, json};
use system_tests::{Options, System, cents_text, order, sum_cents};
use test_support::{FaultProxy, TestPublisher, eventually, host_port};

const QUIET: Duration = Duration::from_secs(60);

/// Waits until every order reads back as `processed`.
async fn wait_all_processed(system: &System, ids: &[String]) {
    for id in ids {
        eventually(QUIET, &format!("order {id} processed"), || async {
            let order = system.get(system.order.url(&format!("/orders/{id}"))).await;
            (order["status"] == "processed").then_some(())
        })
        .await;
    }
}

/// Waits until the webhook has seen `count` notifications; fails on duplicates.
async fn wait_notifications(system: &System, count: usize) -> Vec<system_tests::WebhookCall> {
    eventually(QUIET, &format!("{count} notifications"), || async {
        (system.webhook.calls().len() >= count).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let calls = system.webhook.calls();
    let mut per_event: HashMap<&str, usize> = HashMap::new();
    for call in &calls {
        *per_event.entry(call.event_id.as_str()).or_default() += 1;
    }
    assert!(per_event.values().all(|&n| n == 1), "one notification per event: {per_event:?}");
    assert_eq!(calls.len(), count);
    calls
}

#[tokio::test]
async fn orders_flow_through_every_service_exactly_once() {
    let system = System::start(None).await;
    let amounts: Vec<String> = (0..40).map(|i| format!("{}.{:02}", i * 7 % 50 + 1, (i * 13) % 100)).collect();
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    let posts = amounts.iter().enumerate().map(|(i, amount)| {
        let body =
            order(&format!("customer-{}", i % 5), &format!("product-{}", i % 3), (i % 4 + 1) as u32, amount);
        let system = &system;
        async move {
            let headers: Vec<(&str, &str)> = if i == 0 { vec![("traceparent", traceparent)] } else { vec![] };
            system.post_order(&body, &headers).await
        }
    });
    let mut ids = Vec::new();
    for (status, created) in futures::future::join_all(posts).await {
        assert_eq!(status, 201, "{created}");
        ids.push(created["id"].as_str().unwrap().to_owned());
    }

    let summary = system.wait_for_summary(40, QUIET).await;
    let expected = sum_cents(&amounts);
    assert_eq!(summary["total_revenue"].to_string(), cents_text(expected), "revenue is exact");
    wait_all_processed(&system, &ids).await;
    let calls = wait_notifications(&system, 80).await;
    assert!(calls.iter().all(|c| c.signature_valid), "every webhook is signed");
    assert_eq!(calls.iter().filter(|c| c.event_type == "OrderCreated").count(), 40);
    assert_eq!(calls.iter().filter(|c| c.event_type == "OrderProcessed").count(), 40);

    // One trace from the HTTP request through every service.
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let order_id = ids[0].as_str();
    for (process, event) in [
        (&system.order, "order_created"),
        (system.analytics(), "order_counted"),
        (&system.notifications, "notification_sent"),
    ] {
        let lines = process.logs();
        let line = lines
            .iter()
            .find(|l| l["event"] == event && l["order_id"] == order_id)
            .unwrap_or_else(|| panic!("{} logged no {event} for {order_id}", process.name));
        assert_eq!(line["trace_id"], trace_id, "{}: {line}", process.name);
        assert_eq!(line["service"], process.name);
    }
    system.cleanup().await;
}

#[tokio::test]
async fn the_same_event_injected_twice_is_counted_and_notified_once() {
    let system = System::start(None).await;
    let publisher = TestPublisher::connect(&system.env["ORDERFLOW_RABBITMQ__EXCHANGE"]).await.unwrap();
    let event_id = uuid::Uuid::now_v7().to_string();
    let event = json!({
        "event_type": "OrderCreated", "event_id": event_id, "timestamp": "2026-01-09T12:00:00Z",
        "data": {"order_id": uuid::Uuid::now_v7().to_string(), "customer_id": "c", "product_id": "p", "quantity": 1, "total_amount": 12.34}
    });
    for _ in 0..2 {
        publisher.publish("order.created", Some(&event_id), event.to_string().as_bytes()).await.unwrap();
    }
    let summary = system.wait_for_summary(1, QUIET).await;
    assert_eq!(summary["total_revenue"].to_string(), "12.34");
    // OrderCreated once, and the OrderProcessed it caused once.
    let calls = wait_notifications(&system, 2).await;
    assert_eq!(calls.iter().filter(|c| c.event_id == event_id).count(), 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(system.summary().await["total_orders"], 1);
    system.cleanup().await;
}

/// A service binary run as an operator runs it: `<binary> parked <args>` with the service's
/// environment, `stdin` as the operator's answers.
struct Operator<'a> {
    binary: &'static str,
    env: &'a BTreeMap<String, String>,
}

impl Operator<'_> {
    /// Its stdout when it succeeds, else its stderr.
    async fn run(&self, args: &[&str], stdin: &str) -> Result<Vec<u8>, String> {
        use tokio::io::AsyncWriteExt;
        let mut child = tokio::process::Command::new(system_tests::binary(self.binary))
            .arg("parked")
            .args(args)
            .env_clear()
            .envs(self.env)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|error| error.to_string())?;
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).await.map_err(|error| error.to_string())?;
        drop(input);
        let output = child.wait_with_output().await.map_err(|error| error.to_string())?;
        if output.status.success() {
            Ok(output.stdout)
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }
}

#[tokio::test]
async fn bad_messages_are_parked_and_later_orders_still_flow() {
    let system = System::start(None).await;
    let publisher = TestPublisher::connect(&system.env["ORDERFLOW_RABBITMQ__EXCHANGE"]).await.unwrap();
    publisher.publish("order.created", Some("malformed-message"), b"{malformed").await.unwrap();
    let unprocessable = json!({
        "event_type": "OrderCreated", "event_id": uuid::Uuid::now_v7().to_string(), "timestamp": "2026-01-09T12:00:00Z",
        "data": {"order_id": uuid::Uuid::now_v7().to_string(), "customer_id": "c", "product_id": "p", "quantity": 1, "total_amount": -5}
    });
    publisher.publish("order.created", None, unprocessable.to_string().as_bytes()).await.unwrap();

    let (status, created) = system.post_order(&order("after", "p", 1, "3.5"), &[]).await;
    assert_eq!(status, 201);
    system.wait_for_summary(1, QUIET).await;
    wait_all_processed(&system, &[created["id"].as_str().unwrap().to_owned()]).await;

    // The operator commands see both, with their reasons, in each consumer's dead-letter queue.
    for (binary, env) in
        [("analytics-service", system.analytics_env()), ("notification-worker", system.env.clone())]
    {
        let operator = Operator { binary, env: &env };
        let listed = eventually(QUIET, &format!("{binary} parked two messages"), || async {
            let listed: Value =
                serde_json::from_slice(&operator.run(&["list", "--json"], "").await.ok()?).ok()?;
            (listed["queues"][0]["messages"].as_array()?.len() == 2).then_some(listed)
        })
        .await;
        let messages = listed["queues"][0]["messages"].as_array().unwrap().clone();
        let reasons: Vec<&str> = messages.iter().filter_map(|m| m["reason"].as_str()).collect();
        assert!(reasons.iter().any(|r| r.contains("not a valid event envelope")), "{binary}: {reasons:?}");
        assert!(reasons.iter().any(|r| r.contains("total_amount")), "{binary}: {reasons:?}");
        let malformed_id = "malformed-message";
        assert!(messages.iter().any(|m| m["message_id"] == malformed_id), "{binary}: {messages:?}");

        // People get a table; one message whole on request.
        let table = String::from_utf8(operator.run(&["list"], "").await.unwrap()).unwrap();
        assert!(table.contains("2 parked") && table.contains("MESSAGE ID"), "{table}");
        let shown = String::from_utf8(operator.run(&["show", malformed_id], "").await.unwrap()).unwrap();
        assert!(shown.contains("payload:\n{malformed"), "{shown}");

        // A discard shows what it would delete and asks: "no" keeps everything.
        let declined = operator.run(&["discard", "--id", malformed_id], "n\n").await;
        assert!(declined.is_err(), "{binary}: a declined discard is a failure");
        let confirmed = operator.run(&["discard", "--id", malformed_id, "--json"], "y\n").await.unwrap();
        let discarded: Value = serde_json::from_slice(&confirmed).unwrap();
        assert_eq!(discarded["queues"][0]["discarded"], 1, "{binary}: {discarded}");
        assert_eq!(discarded["queues"][0]["still_parked"], 1, "{binary}: {discarded}");
    }
    system.cleanup().await;
}

#[tokio::test]
async fn a_broker_outage_during_a_stream_of_orders_loses_nothing() {
    let broker = FaultProxy::start(host_port(&test_support::amqp_url(), 5672)).await.unwrap();
    let system = System::start(Some(format!("amqp://guest:guest@127.0.0.1:{}/%2f", broker.port()))).await;
    let mut ids = Vec::new();
    let mut amounts = Vec::new();
    for i in 0..60 {
        if i == 20 {
            broker.cut();
        }
        if i == 45 {
            broker.restore();
        }
        let amount = format!("{}.{:02}", i + 1, i % 100);
        let (status, created) = system.post_order(&order("outage", "p", 1, &amount), &[]).await;
        assert_eq!(status, 201, "orders are accepted while the broker is away");
        ids.push(created["id"].as_str().unwrap().to_owned());
        amounts.push(amount);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let summary = system.wait_for_summary(60, QUIET).await;
    assert_eq!(summary["total_revenue"].to_string(), cents_text(sum_cents(&amounts)));
    wait_all_processed(&system, &ids).await;
    wait_notifications(&system, 120).await;
    system.cleanup().await;
}

#[tokio::test]
async fn killing_analytics_mid_stream_loses_and_double_counts_nothing() {
    let mut system = System::start(None).await;
    let mut ids = Vec::new();
    let mut amounts = Vec::new();
    for i in 0..120 {
        // Crash it while events are flowing, and bring it back a little later.
        if i == 40 {
            system.crash_analytics().await;
        }
        if i == 80 {
            system.start_analytics().await;
        }
        let amount = format!("{}.{:02}", i % 30 + 1, i % 100);
        let (status, created) = system.post_order(&order(&format!("k{}", i % 7), "p", 1, &amount), &[]).await;
        assert_eq!(status, 201);
        ids.push(created["id"].as_str().unwrap().to_owned());
        amounts.push(amount);
    }
    let summary = system.wait_for_summary(120, QUIET).await;
    assert_eq!(summary["total_revenue"].to_string(), cents_text(sum_cents(&amounts)));
    wait_all_processed(&system, &ids).await;

    let analytics_db = sqlx::MySqlPool::connect(&system.analytics_db_url()).await.unwrap();
    let counted: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM processed_events").fetch_one(&analytics_db).await.unwrap();
    assert_eq!(counted, 120, "each event counted once");
    analytics_db.close().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(system.summary().await["total_orders"], 120, "and nothing more arrives later");
    system.cleanup().await;
}

/// A share of the orders is cancelled while they stream in, some at once, some later, some while
/// analytics is down (it is killed and started again in the middle): in the end the summary is
/// what the order database says stands, exactly, and every event is notified once.
#[tokio::test]
async fn cancelling_orders_under_load_with_analytics_restarted_ends_exact() {
    let mut system = System::start(None).await;
    let mut ids = Vec::new();
    let mut cancelled = 0;
    for i in 0..150 {
        if i == 50 {
            system.crash_analytics().await;
        }
        if i == 100 {
            system.start_analytics().await;
        }
        let amount = format!("{}.{:02}", i % 40 + 1, i * 7 % 100);
        let (status, created) =
            system.post_order(&order(&format!("x{}", i % 9), &format!("p{}", i % 4), 1, &amount), &[]).await;
        assert_eq!(status, 201, "{created}");
        ids.push(created["id"].as_str().unwrap().to_owned());
        // Every third order: this one at once, or one from a while ago (likely counted by then).
        let victim = match i % 6 {
            0 => Some(i),
            3 if i >= 20 => Some(i - 20),
            _ => None,
        };
        if let Some(victim) = victim {
            let (status, answer) = system.cancel_order(&ids[victim], "changed my mind").await;
            assert_eq!((status, answer["status"].as_str()), (200, Some("cancelled")), "{answer}");
            cancelled += 1;
        }
    }

    let order_db = sqlx::MySqlPool::connect(&system.order_db_url()).await.unwrap();
    let (standing, revenue): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), CAST(COALESCE(SUM(total_minor), 0) AS SIGNED) FROM orders WHERE status <> 'cancelled'",
    )
    .fetch_one(&order_db)
    .await
    .unwrap();
    let in_db: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE status = 'cancelled'")
        .fetch_one(&order_db)
        .await
        .unwrap();
    order_db.close().await;
    assert_eq!((standing + in_db, in_db), (150, cancelled));

    let summary = eventually(QUIET, "the summary net of every cancellation", || async {
        let summary = system.summary().await;
        (summary["total_orders"] == standing && summary["cancelled_orders"] == cancelled).then_some(summary)
    })
    .await;
    assert_eq!(summary["total_revenue"].to_string(), cents_text(revenue), "{summary}");
    system.wait_until_every_order_processed(QUIET).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(system.summary().await, summary, "and nothing changes later");

    // Every event notified once: 150 creations, the cancellations, and an OrderProcessed for each
    // order analytics counted (every standing one, and the cancelled ones it counted before
    // their cancellation arrived).
    eventually(QUIET, "every creation and cancellation notified", || async {
        let calls = system.webhook.calls();
        let of = |kind: &str| calls.iter().filter(|c| c.event_type == kind).count() as i64;
        (of("OrderCreated") == 150 && of("OrderCancelled") == cancelled && of("OrderProcessed") >= standing)
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let calls = system.webhook.calls();
    let distinct: std::collections::HashSet<&str> = calls.iter().map(|c| c.event_id.as_str()).collect();
    assert_eq!(distinct.len(), calls.len(), "one notification per event");
    assert_eq!(system.parked_messages().await, 0, "nothing parked");
    system.cleanup().await;
}

#[tokio::test]
async fn orders_accepted_before_analytics_first_starts_are_all_counted() {
    // A fresh install where analytics-service comes up last: its queue must already exist.
    let mut system = System::start_with(Options { analytics: false, ..Options::default() }).await;
    let mut ids = Vec::new();
    let mut amounts = Vec::new();
    for i in 0..100 {
        let amount = format!("{}.{:02}", i % 20 + 1, i % 100);
        let (status, created) = system.post_order(&order("early", "p", 1, &amount), &[]).await;
        assert_eq!(status, 201, "{created}");
        ids.push(created["id"].as_str().unwrap().to_owned());
        amounts.push(amount);
    }
    // Every OrderCreated is out (notified) before analytics exists.
    wait_notifications(&system, 100).await;
    system.start_analytics().await;
    let summary = system.wait_for_summary(100, QUIET).await;
    assert_eq!(summary["total_revenue"].to_string(), cents_text(sum_cents(&amounts)));
    wait_all_processed(&system, &ids).await;
    wait_notifications(&system, 200).await;
    system.cleanup().await;
}

#[tokio::test]
async fn outages_longer_than_every_retry_pause_the_consumers_and_lose_nothing() {
    let system = System::start_with(Options { faults: true, ..Options::default() }).await;
    let faults = system.faults.as_ref().expect("fault proxies");
    let mut ids = Vec::new();
    let mut amounts = Vec::new();
    let mut post = async |i: usize| {
        let amount = format!("{}.{:02}", i % 40 + 1, i % 100);
        let (status, created) = system.post_order(&order(&format!("o{}", i % 9), "p", 1, &amount), &[]).await;
        assert_eq!(status, 201, "orders are accepted throughout: {created}");
        ids.push(created["id"].as_str().unwrap().to_owned());
        amounts.push(amount);
    };
    // The retry schedule is 0.2 + 0.5 + 1 + 2 s; each outage lasts about three times as long.
    let outage = Duration::from_secs(11);
    let mut i = 0;
    for phase in 0..3 {
        match phase {
            // analytics' database and Redis (the worker's deduplication store, the caches) down
            1 => {
                faults.analytics_db.cut();
                faults.redis.cut();
            }
            // order-service's database down: nothing to post meanwhile, OrderProcessed waits
            2 => faults.order_db.cut(),
            _ => {}
        }
        let started = tokio::time::Instant::now();
        while started.elapsed() < outage {
            if phase != 2 {
                post(i).await;
                i += 1;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if phase == 1 {
            let ready = system.get(system.analytics().url("/readyz")).await;
            assert_eq!(ready["checks"]["consumer"]["status"], "down", "{ready}");
            let ready = system.get(system.notifications.url("/readyz")).await;
            assert_eq!(ready["checks"]["consumer"]["status"], "down", "{ready}");
        }
        faults.analytics_db.restore();
        faults.redis.restore();
        faults.order_db.restore();
    }
    let count = ids.len();
    let summary = system.wait_for_summary(count as u64, QUIET).await;
    assert_eq!(summary["total_revenue"].to_string(), cents_text(sum_cents(&amounts)));
    wait_all_processed(&system, &ids).await;
    wait_notifications(&system, 2 * count).await;
    for service in [&system.order, system.analytics(), &system.notifications] {
        let metrics = system.client.get(service.url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert_eq!(
            test_support::metric_sum(&metrics, "messages_dead_lettered_total", ""),
            0.0,
            "{}",
            service.name
        );
        assert_eq!(test_support::metric_sum(&metrics, "messages_retried_total", ""), 0.0, "{}", service.name);
    }
    system.cleanup().await;
}
