//! The worker against the real Redis and RabbitMQ, with a webhook receiver of the test's own.
//! Outages go through a fault-injecting proxy, never by stopping the shared servers.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use crate::support::{
    Receiver, SECRET, TestWorker, WAIT, eventually, log_lines, message, order_cancelled, order_created,
    order_processed, trace_id,
};
use axum::http::StatusCode;
use hmac::{Hmac, Mac};
use messaging::parked::DeadLetters;
use notification_worker::{
    channel::webhook::{DEFAULT_TOLERANCE, SignatureError, verify_signature},
    settings::ChannelKind,
};
use serde_json::Value;
use sha2::Sha256;
use test_support::{FaultProxy, PrivateRedis, host_port};
use uuid::Uuid;

/// Long enough to see that nothing more happens, for assertions of "exactly once".
const SETTLE: Duration = Duration::from_millis(700);

#[tokio::test]
async fn every_event_notifies_once_through_every_channel() {
    let receiver = Receiver::accepting().await;
    let worker = TestWorker::spawn_with(&receiver, |s| {
        s.notifications.channels = vec![ChannelKind::Log, ChannelKind::Webhook]
    })
    .await;
    let created = order_created();
    let order_id: Uuid = serde_json::from_slice::<Value>(&created.payload).unwrap()["data"]["order_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let processed = order_processed(order_id);
    let cancelled = order_cancelled(order_id);
    worker.publish(&created).await;
    worker.publish(&processed).await;
    worker.publish(&cancelled).await;
    worker.publish(&cancelled).await;

    receiver.wait_delivered(3).await;
    tokio::time::sleep(SETTLE).await;
    let calls = receiver.calls();
    assert_eq!(calls.len(), 3, "one request per event");
    let events = [(&created, "OrderCreated"), (&processed, "OrderProcessed"), (&cancelled, "OrderCancelled")];
    for (message, event_type) in events {
        let call = &receiver.calls_for(message.event_id)[0];
        assert_eq!(call.body.as_ref(), message.payload.as_slice(), "the body is the envelope as published");
        assert_eq!(call.header("content-type"), "application/json");
        assert_eq!(call.header("x-orderflow-event-type"), event_type);
        assert!(call.header("traceparent").contains(trace_id(message)), "the receiver can join the trace");
    }

    // The log channel: one line per notification, in the order's trace.
    let lines = eventually(WAIT, "three notification log lines", || async {
        let lines: Vec<Value> = log_lines()
            .into_iter()
            .filter(|line| line["event"] == "notification_sent" && line["order_id"] == order_id.to_string())
            .collect();
        (lines.len() >= 3).then_some(lines)
    })
    .await;
    assert_eq!(lines.len(), 3, "{lines:#?}");
    for (message, event_type) in events {
        let line = lines.iter().find(|line| line["event_id"] == message.event_id.to_string()).unwrap();
        assert_eq!(line["channel"], "log");
        assert_eq!(line["event_type"], event_type);
        assert_eq!(line["level"], "info");
        assert_eq!(line["service"], "notification-worker");
        assert_eq!(line["trace_id"], trace_id(message), "the notification carries the order's trace id");
    }

    assert_eq!(worker.webhook_metric("sent").await, 3.0);
    assert_eq!(worker.metric(r#"notifications_sent_total{channel="log",outcome="sent"}"#).await, 3.0);
    eventually(WAIT, "the second copy of the cancellation recognised", || async {
        (worker.webhook_metric("duplicate").await >= 1.0).then_some(())
    })
    .await;
    assert_eq!(receiver.calls().len(), 3);
    assert!(worker.parked().await.is_empty());
}

#[tokio::test]
async fn the_same_event_published_twice_is_notified_once() {
    let receiver = Receiver::accepting().await;
    let worker = TestWorker::spawn(&receiver).await;
    let event = order_created();
    worker.publish(&event).await;
    worker.publish(&event).await;

    eventually(WAIT, "the second copy to be recognised", || async {
        (worker.webhook_metric("duplicate").await >= 1.0).then_some(())
    })
    .await;
    tokio::time::sleep(SETTLE).await;
    assert_eq!(receiver.calls().len(), 1, "notified once");
    assert_eq!(worker.webhook_metric("sent").await, 1.0);
    assert!(worker.parked().await.is_empty(), "a duplicate is not a failure");
}

#[tokio::test]
async fn the_webhook_signature_verifies_over_the_raw_body() {
    let receiver = Receiver::accepting().await;
    let worker = TestWorker::spawn(&receiver).await;
    let event = order_created();
    worker.publish(&event).await;

    let call = receiver.wait_delivered(1).await.remove(0);
    let signature = call.header("x-orderflow-signature");
    let now = chrono::Utc::now().timestamp();
    assert_eq!(verify_signature(SECRET.as_bytes(), signature, &call.body, now, DEFAULT_TOLERANCE), Ok(()));

    // The scheme itself, computed independently: HMAC-SHA256 of "<t>.<raw body>".
    let (timestamp, hex) = signature
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
        .expect("t=<unix seconds>,v1=<hex>");
    let expected = {
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(format!("{timestamp}.").as_bytes());
        mac.update(&call.body);
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    assert_eq!(hex, expected);
    assert!(now.abs_diff(timestamp.parse().unwrap()) <= 60, "signed when sent: t={timestamp}, now={now}");

    assert_eq!(
        verify_signature(b"another secret", signature, &call.body, now, DEFAULT_TOLERANCE),
        Err(SignatureError::NoMatchingSignature),
        "another secret does not verify"
    );
    assert_eq!(call.header("x-orderflow-event-id"), event.event_id.to_string());
}

#[tokio::test]
async fn a_failing_receiver_is_retried_then_notified_exactly_once() {
    // Two retries are configured: failing twice leaves the last try to succeed.
    let receiver =
        Receiver::start(
            |_, attempt| {
                if attempt <= 2 { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK }
            },
        )
        .await;
    let worker = TestWorker::spawn(&receiver).await;
    let event = order_created();
    worker.publish(&event).await;

    receiver.wait_delivered(1).await;
    tokio::time::sleep(SETTLE).await;
    let statuses: Vec<u16> = receiver.calls_for(event.event_id).iter().map(|c| c.status.as_u16()).collect();
    assert_eq!(statuses, [500, 500, 200]);
    assert_eq!(worker.webhook_metric("sent").await, 1.0);
    assert_eq!(worker.webhook_metric("failed").await, 2.0);
    assert!(worker.parked().await.is_empty());
}

#[tokio::test]
async fn a_receiver_that_keeps_failing_parks_the_event_and_later_events_still_go_out() {
    let doomed = order_created();
    let doomed_id = doomed.event_id.to_string();
    let receiver =
        Receiver::start(
            move |event_id, _| {
                if event_id == doomed_id { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK }
            },
        )
        .await;
    let worker = TestWorker::spawn(&receiver).await;
    worker.publish(&doomed).await;

    let parked = worker.wait_parked(1).await;
    assert_eq!(parked[0].message_id.as_deref(), Some(doomed.event_id.to_string().as_str()));
    let reason = parked[0].reason.clone().unwrap_or_default();
    assert!(reason.contains("503"), "the reason says why: {reason}");
    assert_eq!(receiver.calls_for(doomed.event_id).len(), 3, "the first try and two retries");

    let later = order_created();
    worker.publish(&later).await;
    let delivered = receiver.wait_delivered(1).await;
    assert_eq!(delivered[0].header("x-orderflow-event-id"), later.event_id.to_string());
    worker.wait_depths(0, 1).await;
}

#[tokio::test]
async fn a_receiver_refusing_the_event_parks_it_at_once() {
    let receiver = Receiver::start(|_, _| StatusCode::UNPROCESSABLE_ENTITY).await;
    let worker = TestWorker::spawn(&receiver).await;
    let event = order_created();
    worker.publish(&event).await;

    let parked = worker.wait_parked(1).await;
    assert!(parked[0].reason.as_deref().unwrap_or_default().contains("422"));
    tokio::time::sleep(SETTLE).await;
    assert_eq!(receiver.calls().len(), 1, "a 4xx is not retried");
}

#[tokio::test]
async fn malformed_messages_are_parked_at_once_and_do_not_block_the_queue() {
    let receiver = Receiver::accepting().await;
    let worker = TestWorker::spawn(&receiver).await;
    let not_json = message(Uuid::new_v4(), "OrderCreated", "order.created", b"not json".to_vec());
    let unknown = message(
        Uuid::new_v4(),
        "OrderShipped",
        "order.created",
        serde_json::to_vec(&serde_json::json!({
            "event_type": "OrderShipped",
            "event_id": Uuid::new_v4(),
            "timestamp": "2026-01-09T12:34:56Z",
            "data": {"order_id": Uuid::new_v4()},
        }))
        .unwrap(),
    );
    worker.publish(&not_json).await;
    worker.publish(&unknown).await;
    let valid = order_created();
    worker.publish(&valid).await;

    let parked = worker.wait_parked(2).await;
    let reasons: Vec<String> = parked.iter().map(|p| p.reason.clone().unwrap_or_default()).collect();
    assert!(reasons.iter().any(|r| r.contains("not a valid event envelope")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("unknown event_type \"OrderShipped\"")), "{reasons:?}");
    let delivered = receiver.wait_delivered(1).await;
    assert_eq!(delivered[0].header("x-orderflow-event-id"), valid.event_id.to_string());
    tokio::time::sleep(SETTLE).await;
    assert_eq!(receiver.calls().len(), 1, "nothing was sent for the malformed ones");
    assert_eq!(worker.parked().await.len(), 2, "parked at once, never retried");
}

#[tokio::test]
async fn nothing_is_sent_while_redis_is_unreachable_and_it_goes_out_once_when_it_returns() {
    let redis = FaultProxy::start(host_port(&test_support::redis_url(), 6379)).await.unwrap();
    let port = redis.port();
    let receiver = Receiver::accepting().await;
    let worker = TestWorker::spawn_with(&receiver, |s| {
        s.redis.url = Some(format!("redis://127.0.0.1:{port}"));
    })
    .await;

    redis.cut();
    let event = order_created();
    worker.publish(&event).await;
    eventually(WAIT, "a try while Redis is away", || async {
        (worker.webhook_metric("failed").await >= 1.0).then_some(())
    })
    .await;
    // Ten times the whole retry schedule (100 + 200 ms): the worker waits, it does not retry.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, readiness) = worker.readiness().await;
    assert_eq!(status, 503, "Redis is critical: {readiness}");
    assert_eq!(readiness["checks"]["redis"]["status"], "down");
    assert_eq!(readiness["checks"]["consumer"]["status"], "down", "the consumer is paused: {readiness}");
    assert!(receiver.calls().is_empty(), "never notify without deduplication");

    redis.restore();
    receiver.wait_delivered(1).await;
    tokio::time::sleep(SETTLE).await;
    assert_eq!(receiver.calls().len(), 1, "sent once");
    assert!(worker.parked().await.is_empty());
    assert_eq!(worker.metric(&format!("messages_retried_total{{queue=\"{}\"}}", worker.queue())).await, 0.0);
    assert_eq!(worker.readiness().await.0, 200);
}

#[tokio::test]
async fn an_unreachable_receiver_pauses_the_worker_until_it_answers() {
    // Nothing listens on the receiver's address yet.
    let address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let placeholder = Receiver::accepting().await;
    let worker = TestWorker::spawn_with(&placeholder, |s| {
        s.notifications.webhook.url = Some(format!("http://{address}/hook"));
    })
    .await;
    let event = order_created();
    worker.publish(&event).await;
    eventually(WAIT, "the consumer to pause", || async {
        let (_, readiness) = worker.readiness().await;
        (readiness["checks"]["consumer"]["status"] == "down").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(worker.parked().await.is_empty(), "nothing parked while the receiver is away");

    let receiver = Receiver::accepting_at(&address).await;
    receiver.wait_delivered(1).await;
    tokio::time::sleep(SETTLE).await;
    assert_eq!(receiver.calls().len(), 1, "sent once");
    assert_eq!(worker.metric(&format!("messages_retried_total{{queue=\"{}\"}}", worker.queue())).await, 0.0);
    assert!(worker.parked().await.is_empty());
    assert!(placeholder.calls().is_empty());
}

#[tokio::test]
async fn shutdown_lets_the_notification_in_hand_finish() {
    let receiver = Receiver::start_slow(Duration::from_millis(1_500), |_, _| StatusCode::OK).await;
    let mut worker = TestWorker::spawn(&receiver).await;
    worker.publish(&order_created()).await;
    eventually(WAIT, "the webhook request in flight", || async { (receiver.arrived() == 1).then_some(()) })
        .await;

    worker.stop().await.expect("stops cleanly");
    assert_eq!(receiver.delivered().len(), 1, "the notification in hand was finished");
    assert_eq!(worker.bus.queue_depths(worker.queue()).await.unwrap(), (0, 0), "and acknowledged");
}

#[tokio::test]
async fn parked_messages_can_be_listed_and_replayed_from_the_command_line() {
    let accept = Arc::new(AtomicBool::new(false));
    let receiver = {
        let accept = accept.clone();
        Receiver::start(
            move |_, _| if accept.load(Ordering::SeqCst) { StatusCode::OK } else { StatusCode::GONE },
        )
        .await
    };
    let worker = TestWorker::spawn(&receiver).await;
    let event = order_created();
    worker.publish(&event).await;
    // Counted, not listed: listing puts messages back, and the count lags behind for a moment.
    worker.wait_depths(0, 1).await;

    let listed = cli(&worker, &["parked", "list", "--limit", "10", "--json"]).await;
    let queue = &listed["queues"][0];
    assert_eq!(queue["parked"], 1, "{listed}");
    assert_eq!(queue["queue"], worker.queue());
    assert_eq!(queue["messages"][0]["message_id"], event.event_id.to_string());
    assert!(queue["messages"][0]["reason"].as_str().unwrap().contains("410"), "{listed}");

    accept.store(true, Ordering::SeqCst);
    let replayed = cli(&worker, &["parked", "replay", "--reason", "410", "--json"]).await;
    assert_eq!(replayed["queues"][0]["replayed"], 1);
    let delivered = receiver.wait_delivered(1).await;
    assert_eq!(delivered[0].header("x-orderflow-event-id"), event.event_id.to_string());
    assert!(worker.parked().await.is_empty());
}

/// Runs the worker binary with the test's configuration and returns what it printed.
async fn cli(worker: &TestWorker, args: &[&str]) -> Value {
    let settings = &worker.settings;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_notification-worker"))
        .args(args)
        .env_clear()
        .env("RABBITMQ_URL", settings.rabbitmq.url.as_deref().unwrap())
        .env("ORDERFLOW_RABBITMQ__EXCHANGE", &settings.rabbitmq.exchange)
        .env("ORDERFLOW_QUEUES__NOTIFICATIONS", worker.queue())
        .output()
        .await
        .expect("run notification-worker");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {stdout}"))
}

#[tokio::test]
async fn an_evicting_redis_is_refused_until_it_keeps_its_keys() {
    let redis =
        PrivateRedis::start(&["--maxmemory-policy", "allkeys-lru", "--save", "", "--appendonly", "no"]);
    let url = redis.url();
    let receiver = Receiver::accepting().await;
    let worker = TestWorker::spawn_with(&receiver, |s| s.redis.url = Some(url)).await;
    worker.publish(&order_created()).await;
    eventually(WAIT, "the consumer to pause", || async {
        let (_, readiness) = worker.readiness().await;
        (readiness["checks"]["consumer"]["status"] == "down").then_some(())
    })
    .await;
    let (status, readiness) = worker.readiness().await;
    assert_eq!(status, 503, "{readiness}");
    let reason = readiness["checks"]["redis"]["error"].as_str().unwrap_or_default();
    assert!(reason.contains("allkeys-lru"), "the reason names the policy: {readiness}");
    tokio::time::sleep(SETTLE).await;
    assert!(receiver.calls().is_empty(), "nothing is sent that the store could forget");

    redis.cli(&["config", "set", "maxmemory-policy", "noeviction"]);
    // Readiness reads the configuration again; the paused consumer's next try finds it safe.
    assert_eq!(worker.readiness().await.0, 200);
    receiver.wait_delivered(1).await;
    tokio::time::sleep(SETTLE).await;
    assert_eq!(receiver.calls().len(), 1);
    assert!(worker.parked().await.is_empty());
}

#[tokio::test]
async fn a_redis_restart_does_not_make_a_redelivered_event_notify_twice() {
    let mut redis = PrivateRedis::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let url = redis.url();
    let receiver = Receiver::accepting().await;
    let worker = TestWorker::spawn_with(&receiver, |s| s.redis.url = Some(url)).await;
    let event = order_created();
    worker.publish(&event).await;
    receiver.wait_delivered(1).await;

    redis.restart();
    worker.publish(&event).await;
    eventually(WAIT, "the redelivery recognised", || async {
        (worker.webhook_metric("duplicate").await >= 1.0).then_some(())
    })
    .await;
    tokio::time::sleep(SETTLE).await;
    assert_eq!(receiver.calls().len(), 1, "sent once across the restart");
}

/// The Redis store answers a batch event by event, in one round trip per step.
#[tokio::test]
async fn the_redis_store_answers_a_batch_of_claims_event_by_event() {
    use notification_worker::dedupe::{Claim, Dedupe, RedisDedupe};
    let mut settings = platform::redis::RedisSettings {
        url: Some(test_support::redis_url()),
        key_prefix: format!("oftest-dedupe-{}:", Uuid::new_v4().simple()),
        ..Default::default()
    };
    settings.timeout_ms = 2_000;
    // Short TTLs: whatever this test leaves behind is gone a minute later.
    let ttl = Duration::from_secs(60);
    let client = platform::redis::RedisClient::new(&settings).unwrap();
    let dedupe = RedisDedupe::new(client, &settings.key_prefix, ttl, ttl);
    let (sent, pending, fresh) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());

    assert_eq!(dedupe.claim("log", &[sent, pending]).await.unwrap(), [Claim::Acquired, Claim::Acquired]);
    dedupe.mark_sent("log", &[sent]).await.unwrap();
    assert_eq!(
        dedupe.claim("log", &[fresh, sent, pending, fresh]).await.unwrap(),
        [Claim::Acquired, Claim::AlreadySent, Claim::InProgress, Claim::InProgress],
        "a repeat within the batch finds the claim its first copy took"
    );
    assert_eq!(dedupe.claim("webhook", &[sent]).await.unwrap(), [Claim::Acquired], "per channel");
    dedupe.release("log", &[pending, fresh]).await.unwrap();
    assert_eq!(dedupe.claim("log", &[pending, fresh]).await.unwrap(), [Claim::Acquired, Claim::Acquired]);
    assert_eq!(dedupe.claim("log", &[]).await.unwrap(), []);

    dedupe.release("log", &[sent, pending, fresh]).await.unwrap();
    dedupe.release("webhook", &[sent]).await.unwrap();
}
