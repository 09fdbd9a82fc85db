//! The RabbitMQ adapter against the real broker. Every test declares its own exchanges and queues
//! (unique names) and deletes them at the end; outages go through a `FaultProxy`.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use contracts::QueueBinding;
use lapin::{
    BasicProperties, Confirmation, Connection, ConnectionProperties,
    options::{
        BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions,
        QueueBindOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
};
use messaging::{
    Delivery, EventHandler, EventPublisher, HandleError, Handled, MessagingMetrics, OutgoingMessage,
    PublishError, Subscription,
    metrics::{DeadLetterLabels, OutcomeLabels, QueueLabels},
    parked::{
        DeadLetters, Selection,
        cli::{ParkedCommand, Unattended},
    },
    rabbitmq::{QueueNames, RabbitError, RabbitMq, RabbitSettings, headers},
};
use platform::{DependencyStatus, Health, Shutdown};
use test_support::{Cleanup, FaultProxy, amqp_url, eventually, host_port, unique_name};
use tokio::sync::Notify;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(15);
const ROUTING_KEY: &str = "order.created";

/// One adapter instance on its own exchange, with everything needed to stop and clean it up.
struct Harness {
    rabbit: RabbitMq,
    status: DependencyStatus,
    shutdown: Shutdown,
    metrics: MessagingMetrics,
    /// Deletes what the test declared when the harness is dropped, also when the test fails.
    cleanup: Cleanup,
}

fn settings(url: String) -> RabbitSettings {
    RabbitSettings {
        url: Some(url),
        exchange: unique_name(),
        retry_delays_ms: vec![100, 200],
        delivery_limit: 5,
        publish_timeout_ms: 5_000,
        reconnect_max_backoff_ms: 500,
        ..RabbitSettings::default()
    }
}

impl Harness {
    async fn start(settings: RabbitSettings) -> Harness {
        // Shown for failing tests only.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("messaging=debug,lapin=warn")
            .try_init();
        Self::start_with_topology(settings, Vec::new()).await
    }

    /// An adapter that declares `topology` on every connection.
    async fn start_with_topology(settings: RabbitSettings, topology: Vec<QueueBinding>) -> Harness {
        let health = Health::new(&mut prometheus_client::registry::Registry::default());
        let status = health.add_status("rabbitmq", true);
        let shutdown = Shutdown::new();
        let metrics = MessagingMetrics::unregistered();
        let mut queues = Vec::new();
        for binding in &topology {
            queues.extend(QueueNames::new(&binding.queue, &settings).all());
        }
        let rabbit =
            RabbitMq::new(settings, topology, status.clone(), metrics.clone(), shutdown.clone()).unwrap();
        let cleanup = Cleanup { queues, exchanges: rabbit.exchanges().all(), redis_prefix: None };
        let harness = Harness { rabbit, status, shutdown, metrics, cleanup };
        harness.wait_until_up().await;
        harness
    }

    async fn wait_until_up(&self) {
        eventually(WAIT, "the broker connection", || async { self.status.is_up().then_some(()) }).await;
    }

    /// A new queue bound to [`ROUTING_KEY`], consumed by `handler`.
    async fn consume(&mut self, handler: Arc<dyn EventHandler>) -> String {
        let queue = format!("{}.orders", unique_name());
        self.cleanup.queues.extend(self.rabbit.queue_names(&queue).all());
        self.consume_queue(&queue, handler).await;
        queue
    }

    /// Consumes `queue` (bound to [`ROUTING_KEY`]) with `handler`; the queue is not deleted by
    /// this harness.
    async fn consume_queue(&self, queue: &str, handler: Arc<dyn EventHandler>) {
        self.consume_subscription(Subscription::new(queue, &[ROUTING_KEY], handler)).await;
    }

    async fn consume_subscription(&self, subscription: Subscription) {
        self.rabbit.consume(subscription).await.unwrap();
    }

    async fn publish_one(&self, message: &OutgoingMessage) {
        let results = self.rabbit.publish(std::slice::from_ref(message)).await;
        assert_eq!(results, vec![Ok(())]);
    }

    async fn parked(&self, queue: &str) -> u32 {
        self.rabbit.queue_depths(queue).await.unwrap().1
    }

    fn consumed(&self, queue: &str, outcome: &'static str) -> u64 {
        self.metrics.consumed.get_or_create(&OutcomeLabels { queue: queue.into(), outcome }).get()
    }

    /// Shuts the adapter down; dropping the harness then deletes what the test declared.
    async fn stop(self) {
        self.shutdown.trigger();
        assert!(self.shutdown.wait_for_tasks(WAIT).await, "consumers did not stop");
    }
}

fn message(payload: &str) -> OutgoingMessage {
    OutgoingMessage {
        event_id: Uuid::new_v4(),
        event_type: "OrderCreated".into(),
        routing_key: ROUTING_KEY.into(),
        payload: payload.as_bytes().to_vec(),
        headers: BTreeMap::from([
            ("traceparent".to_owned(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned()),
            ("tenant".to_owned(), "acme".to_owned()),
        ]),
        timestamp: Utc.with_ymd_and_hms(2026, 3, 1, 12, 30, 0).unwrap(),
    }
}

type Behaviour = dyn Fn(&Delivery) -> Result<Handled, HandleError> + Send + Sync;

/// Records every delivery and batch it sees and answers as `behaviour` says.
struct Recorder {
    seen: Mutex<Vec<Delivery>>,
    batch_sizes: Mutex<Vec<usize>>,
    behaviour: Box<Behaviour>,
    /// When set, the first batch waits for it to be notified.
    gate: Option<Arc<Notify>>,
}

impl Recorder {
    fn new(
        behaviour: impl Fn(&Delivery) -> Result<Handled, HandleError> + Send + Sync + 'static,
    ) -> Arc<Recorder> {
        Arc::new(Recorder {
            seen: Mutex::default(),
            batch_sizes: Mutex::default(),
            behaviour: Box::new(behaviour),
            gate: None,
        })
    }

    fn gated(gate: Arc<Notify>) -> Arc<Recorder> {
        Arc::new(Recorder {
            seen: Mutex::default(),
            batch_sizes: Mutex::default(),
            behaviour: Box::new(|_| Ok(Handled::Processed)),
            gate: Some(gate),
        })
    }

    fn seen(&self) -> Vec<Delivery> {
        self.seen.lock().unwrap().clone()
    }

    fn seen_payload(&self, payload: &str) -> Vec<Delivery> {
        self.seen().into_iter().filter(|delivery| delivery.payload == payload.as_bytes()).collect()
    }

    fn batch_sizes(&self) -> Vec<usize> {
        self.batch_sizes.lock().unwrap().clone()
    }
}

#[async_trait]
impl EventHandler for Recorder {
    async fn handle(&self, batch: &[Delivery]) -> Vec<Result<Handled, HandleError>> {
        let first_batch = {
            let mut sizes = self.batch_sizes.lock().unwrap();
            sizes.push(batch.len());
            sizes.len() == 1
        };
        if first_batch && let Some(gate) = &self.gate {
            gate.notified().await;
        }
        self.seen.lock().unwrap().extend(batch.iter().cloned());
        batch.iter().map(|delivery| (self.behaviour)(delivery)).collect()
    }
}

async fn raw_connection() -> Connection {
    Connection::connect(&amqp_url(), ConnectionProperties::default()).await.unwrap()
}

/// Messages ready in `queue`, seen from a connection of its own.
async fn ready_messages(queue: &str) -> u32 {
    let connection = raw_connection().await;
    let channel = connection.create_channel().await.unwrap();
    let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    let declared = channel.queue_declare(queue.into(), options, FieldTable::default()).await.unwrap();
    let _ = connection.close(200, "done".into()).await;
    declared.message_count()
}

#[tokio::test]
async fn round_trip_carries_all_properties_and_headers() {
    let mut harness = Harness::start(settings(amqp_url())).await;
    let recorder = Recorder::new(|_| Ok(Handled::Processed));
    let queue = harness.consume(recorder.clone()).await;

    // A plain queue on the same exchange shows the message exactly as the broker stored it.
    let connection = raw_connection().await;
    let channel = connection.create_channel().await.unwrap();
    let probe = format!("{}.probe", unique_name());
    channel
        .queue_declare(probe.as_str().into(), QueueDeclareOptions::durable(), FieldTable::default())
        .await
        .unwrap();
    channel
        .queue_bind(
            probe.as_str().into(),
            harness.rabbit.exchanges().events.as_str().into(),
            ROUTING_KEY.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    harness.cleanup.queues.push(probe.clone());

    let sent = message(r#"{"event_type":"OrderCreated"}"#);
    harness.publish_one(&sent).await;

    let received = eventually(WAIT, "the delivery", || async { recorder.seen().into_iter().next() }).await;
    assert_eq!(received.message_id, Some(sent.event_id.to_string()));
    assert_eq!(received.event_type.as_deref(), Some("OrderCreated"));
    assert_eq!(received.routing_key, ROUTING_KEY);
    assert_eq!(received.payload, sent.payload);
    assert_eq!(received.headers, sent.headers);
    assert_eq!(received.attempt, 1);
    assert!(!received.redelivered);
    eventually(WAIT, "the ack to be counted", || async {
        (harness.consumed(&queue, "ack") == 1).then_some(())
    })
    .await;

    let stored =
        channel.basic_get(probe.as_str().into(), BasicGetOptions { no_ack: true }).await.unwrap().unwrap();
    let properties = &stored.delivery.properties;
    assert_eq!(
        properties.message_id().as_ref().map(|id| id.as_str()),
        Some(sent.event_id.to_string().as_str())
    );
    assert_eq!(properties.kind().as_ref().map(|kind| kind.as_str()), Some("OrderCreated"));
    assert_eq!(properties.content_type().as_ref().map(|kind| kind.as_str()), Some("application/json"));
    assert_eq!(*properties.delivery_mode(), Some(2));
    assert_eq!(*properties.timestamp(), Some(sent.timestamp.timestamp() as u64));
    let stored_headers = properties.headers().as_ref().unwrap().inner();
    assert_eq!(stored_headers.get("tenant"), Some(&AMQPValue::LongString("acme".into())));
    let _ = connection.close(200, "done".into()).await;

    harness.stop().await;
}

#[tokio::test]
async fn unroutable_messages_are_reported_per_message_even_with_concurrent_publishers() {
    let mut harness = Harness::start(settings(amqp_url())).await;
    harness.consume(Recorder::new(|_| Ok(Handled::Processed))).await;

    let alone = harness
        .rabbit
        .publish(&[OutgoingMessage { routing_key: "nobody.listens".into(), ..message("{}") }])
        .await;
    assert_eq!(alone, vec![Err(PublishError::Unroutable("nobody.listens".into()))]);

    let publishers = (0..8).map(|_| {
        let rabbit = harness.rabbit.clone();
        tokio::spawn(async move {
            let batch = vec![
                message("{}"),
                OutgoingMessage { routing_key: "nobody.listens".into(), ..message("{}") },
                message("{}"),
            ];
            rabbit.publish(&batch).await
        })
    });
    for results in futures::future::join_all(publishers).await {
        assert_eq!(
            results.unwrap(),
            vec![Ok(()), Err(PublishError::Unroutable("nobody.listens".into())), Ok(())]
        );
    }

    harness.stop().await;
}

#[tokio::test]
async fn publishing_during_an_outage_fails_fast_and_recovers_by_itself() {
    let proxy = FaultProxy::start(host_port(&amqp_url(), 5672)).await.unwrap();
    let harness =
        Harness::start(settings(format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port()))).await;
    // Something must be bound for publishes to be routable.
    let mut harness = harness;
    harness.consume(Recorder::new(|_| Ok(Handled::Processed))).await;
    harness.publish_one(&message("{}")).await;

    proxy.cut();
    eventually(WAIT, "readiness to go down", || async { (!harness.status.is_up()).then_some(()) }).await;
    let results = harness.rabbit.publish(&[message("{}"), message("{}")]).await;
    assert!(
        results.iter().all(|result| matches!(result, Err(PublishError::Unavailable(_)))),
        "expected Unavailable, got {results:?}"
    );
    assert!(!harness.rabbit.is_available());

    proxy.restore();
    harness.wait_until_up().await;
    harness.publish_one(&message("{}")).await;
    assert!(harness.rabbit.connections_established() >= 2);

    harness.stop().await;
}

#[tokio::test]
async fn a_consumer_survives_a_connection_cut() {
    let proxy = FaultProxy::start(host_port(&amqp_url(), 5672)).await.unwrap();
    let mut harness =
        Harness::start(settings(format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port()))).await;
    let recorder = Recorder::new(|_| Ok(Handled::Processed));
    harness.consume(recorder.clone()).await;
    harness.publish_one(&message("before")).await;
    eventually(WAIT, "the first delivery", || async {
        (!recorder.seen_payload("before").is_empty()).then_some(())
    })
    .await;

    proxy.cut();
    eventually(WAIT, "readiness to go down", || async { (!harness.status.is_up()).then_some(()) }).await;
    proxy.restore();
    harness.wait_until_up().await;

    // The publish may race the consumer's restart, but the queue holds the message until then.
    let after = message("after");
    eventually(WAIT, "a publish after the outage", || async {
        (harness.rabbit.publish(std::slice::from_ref(&after)).await == vec![Ok(())]).then_some(())
    })
    .await;
    eventually(WAIT, "the delivery after the outage", || async {
        (!recorder.seen_payload("after").is_empty()).then_some(())
    })
    .await;

    harness.stop().await;
}

/// Two addresses of one broker, each behind its own proxy: losing the node in use moves the
/// adapter to the other address at once, and consuming and publishing go on there.
#[tokio::test]
async fn a_lost_node_is_replaced_by_the_next_address() {
    let broker = host_port(&amqp_url(), 5672);
    let first = FaultProxy::start(broker.clone()).await.unwrap();
    let second = FaultProxy::start(broker).await.unwrap();
    let mut settings = settings(amqp_url());
    settings.addresses = vec![format!("127.0.0.1:{}", first.port()), format!("127.0.0.1:{}", second.port())];
    let mut harness = Harness::start(settings).await;
    let recorder = Recorder::new(|_| Ok(Handled::Processed));
    harness.consume(recorder.clone()).await;
    harness.publish_one(&message("on the first node")).await;
    eventually(WAIT, "the first delivery", || async {
        (!recorder.seen_payload("on the first node").is_empty()).then_some(())
    })
    .await;

    first.cut();
    let after = message("on the second node");
    eventually(WAIT, "a publish through the second address", || async {
        (harness.rabbit.publish(std::slice::from_ref(&after)).await == vec![Ok(())]).then_some(())
    })
    .await;
    eventually(WAIT, "the delivery through the second address", || async {
        (!recorder.seen_payload("on the second node").is_empty()).then_some(())
    })
    .await;
    assert_eq!(harness.rabbit.connections_established(), 2, "one failover");

    // The second node goes too while the first is back: the adapter returns to the first.
    first.restore();
    second.cut();
    let back = message("back on the first node");
    eventually(WAIT, "a publish through the first address again", || async {
        (harness.rabbit.publish(std::slice::from_ref(&back)).await == vec![Ok(())]).then_some(())
    })
    .await;
    eventually(WAIT, "the delivery through the first address again", || async {
        (!recorder.seen_payload("back on the first node").is_empty()).then_some(())
    })
    .await;

    harness.stop().await;
}

#[tokio::test]
async fn transient_failures_are_retried_with_growing_attempts_then_parked() {
    let mut harness = Harness::start(settings(amqp_url())).await;
    let recorder = Recorder::new(|_| Err(HandleError::Transient("database unavailable".into())));
    let queue = harness.consume(recorder.clone()).await;
    let sent = message("{}");
    harness.publish_one(&sent).await;

    eventually(WAIT, "the message to be parked", || async {
        (harness.parked(&queue).await == 1).then_some(())
    })
    .await;
    let attempts: Vec<u32> = recorder.seen().iter().map(|delivery| delivery.attempt).collect();
    assert_eq!(attempts, [1, 2, 3], "one first try and one per retry delay");
    assert!(recorder.seen().iter().all(|delivery| delivery.routing_key == ROUTING_KEY));
    // The adapter's own bookkeeping headers stay out of the handler's sight.
    assert!(recorder.seen().iter().all(|delivery| delivery.headers == sent.headers));
    assert!(recorder.seen().iter().all(|delivery| delivery.message_id == Some(sent.event_id.to_string())));

    let parked = harness.rabbit.list_parked(&queue, &Selection::first(10)).await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].message_id, Some(sent.event_id.to_string()));
    assert_eq!(parked[0].reason.as_deref(), Some("database unavailable"));
    assert_eq!(parked[0].routing_key, ROUTING_KEY);
    assert_eq!(parked[0].headers.get("traceparent"), sent.headers.get("traceparent"));
    assert!(parked[0].headers.contains_key(headers::FAILED_AT));

    let metrics = &harness.metrics;
    assert_eq!(metrics.retried.get_or_create(&QueueLabels { queue: queue.clone() }).get(), 2);
    let exhausted = DeadLetterLabels { queue: queue.clone(), reason: "retries_exhausted" };
    assert_eq!(metrics.dead_lettered.get_or_create(&exhausted).get(), 1);
    assert_eq!(harness.consumed(&queue, "retry"), 2);
    assert_eq!(harness.consumed(&queue, "dead_lettered"), 1);

    harness.stop().await;
}

#[tokio::test]
async fn a_permanent_failure_is_parked_at_once_and_does_not_block_the_queue() {
    let mut harness = Harness::start(settings(amqp_url())).await;
    let recorder = Recorder::new(|delivery| {
        if delivery.payload == b"poison" {
            Err(HandleError::Permanent("not an order".into()))
        } else {
            Ok(Handled::Processed)
        }
    });
    let queue = harness.consume(recorder.clone()).await;
    harness.publish_one(&message("poison")).await;
    harness.publish_one(&message("good")).await;

    eventually(WAIT, "the good message", || async {
        (!recorder.seen_payload("good").is_empty()).then_some(())
    })
    .await;
    eventually(WAIT, "the poison to be parked", || async {
        (harness.parked(&queue).await == 1).then_some(())
    })
    .await;
    let poison = recorder.seen_payload("poison");
    assert_eq!(poison.len(), 1, "a permanent failure is never retried");
    let parked = harness.rabbit.list_parked(&queue, &Selection::first(10)).await.unwrap();
    assert_eq!(parked[0].reason.as_deref(), Some("not an order"));
    assert_eq!(parked[0].payload, "poison");
    let permanent = DeadLetterLabels { queue: queue.clone(), reason: "permanent" };
    assert_eq!(harness.metrics.dead_lettered.get_or_create(&permanent).get(), 1);

    harness.stop().await;
}

#[tokio::test]
async fn a_delivery_whose_retry_copy_cannot_be_stored_is_not_acked() {
    let mut harness = Harness::start(settings(amqp_url())).await;
    let recorder = Recorder::new(|delivery| {
        if delivery.attempt == 1 {
            Err(HandleError::Transient("lock timeout".into()))
        } else {
            Ok(Handled::Processed)
        }
    });
    let queue = harness.consume(recorder.clone()).await;
    // Without its retry exchange, the broker refuses the retry copy (and closes the channel).
    let connection = raw_connection().await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .exchange_delete(harness.rabbit.exchanges().retry.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .unwrap();
    let _ = connection.close(200, "done".into()).await;

    harness.publish_one(&message("unlucky")).await;
    // The delivery comes back (the topology is declared again on reconnection), is retried, and
    // succeeds on its second attempt.
    eventually(WAIT, "the second attempt", || async {
        recorder.seen_payload("unlucky").iter().any(|delivery| delivery.attempt == 2).then_some(())
    })
    .await;
    let first_attempts: Vec<bool> = recorder
        .seen_payload("unlucky")
        .iter()
        .filter(|delivery| delivery.attempt == 1)
        .map(|delivery| delivery.redelivered)
        .collect();
    assert_eq!(first_attempts, [false, true], "redelivered, not acked, after the failed copy");
    eventually(WAIT, "the ack", || async { (harness.consumed(&queue, "ack") == 1).then_some(()) }).await;
    assert_eq!(harness.parked(&queue).await, 0);

    harness.stop().await;
}

#[tokio::test]
async fn a_handler_panic_is_retried_and_the_consumer_lives_on() {
    let mut harness = Harness::start(settings(amqp_url())).await;
    let recorder = Recorder::new(|delivery| {
        if delivery.payload == b"explosive" && delivery.attempt == 1 {
            panic!("handler bug");
        }
        Ok(Handled::Processed)
    });
    let queue = harness.consume(recorder.clone()).await;
    harness.publish_one(&message("explosive")).await;

    eventually(WAIT, "the retry after the panic", || async {
        recorder.seen_payload("explosive").iter().any(|delivery| delivery.attempt == 2).then_some(())
    })
    .await;
    harness.publish_one(&message("calm")).await;
    eventually(WAIT, "a later message", || async {
        (!recorder.seen_payload("calm").is_empty()).then_some(())
    })
    .await;
    eventually(WAIT, "both acks", || async { (harness.consumed(&queue, "ack") == 2).then_some(()) }).await;
    assert_eq!(harness.parked(&queue).await, 0);

    harness.stop().await;
}

#[tokio::test]
async fn deliveries_come_in_batches_and_are_acked_exactly_once() {
    let mut harness = Harness::start(settings(amqp_url())).await;
    let gate = Arc::new(Notify::new());
    let recorder = Recorder::gated(gate.clone());
    let queue = harness.consume(recorder.clone()).await;

    let messages: Vec<OutgoingMessage> = (0..500).map(|i| message(&format!("{{\"n\":{i}}}"))).collect();
    for chunk in messages.chunks(100) {
        assert!(harness.rabbit.publish(chunk).await.iter().all(Result::is_ok));
    }
    // The first batch is held until everything is published, so the rest queues up behind it.
    eventually(WAIT, "the first batch", || async { (!recorder.batch_sizes().is_empty()).then_some(()) })
        .await;
    gate.notify_one();

    eventually(WAIT, "all 500 acks", || async { (harness.consumed(&queue, "ack") == 500).then_some(()) })
        .await;
    let ids: HashSet<Option<String>> =
        recorder.seen().into_iter().map(|delivery| delivery.message_id).collect();
    assert_eq!(ids.len(), 500);
    let sizes = recorder.batch_sizes();
    assert!(sizes.iter().any(|&size| size > 1), "batch sizes {sizes:?}");
    assert!(sizes.iter().all(|&size| size <= harness.rabbit.settings().batch_size), "batch sizes {sizes:?}");

    // After the consumer's channel is closed, anything unacknowledged would be back in the queue.
    harness.shutdown.trigger();
    assert!(harness.shutdown.wait_for_tasks(WAIT).await);
    assert_eq!(ready_messages(&queue).await, 0);
    assert_eq!(recorder.seen().len(), 500, "no delivery was handled twice");

    harness.stop().await;
}

#[tokio::test]
async fn parked_messages_can_be_listed_without_loss_and_replayed() {
    let mut harness = Harness::start(settings(amqp_url())).await;
    let fixed = Arc::new(AtomicBool::new(false));
    let recorder = Recorder::new({
        let fixed = fixed.clone();
        move |_| {
            if fixed.load(Ordering::SeqCst) {
                Ok(Handled::Processed)
            } else {
                Err(HandleError::Permanent("unknown currency".into()))
            }
        }
    });
    let queue = harness.consume(recorder.clone()).await;
    let sent: Vec<OutgoingMessage> = (0..3).map(|i| message(&format!("order {i}"))).collect();
    for message in &sent {
        harness.publish_one(message).await;
    }
    eventually(WAIT, "three parked messages", || async { (harness.parked(&queue).await == 3).then_some(()) })
        .await;

    let expected_ids: Vec<Option<String>> =
        sent.iter().map(|message| Some(message.event_id.to_string())).collect();
    for _ in 0..3 {
        let listed = harness.rabbit.list_parked(&queue, &Selection::first(10)).await.unwrap();
        let ids: Vec<Option<String>> = listed.iter().map(|parked| parked.message_id.clone()).collect();
        assert_eq!(ids, expected_ids, "listing keeps every message, in order");
        assert!(listed.iter().all(|parked| parked.reason.as_deref() == Some("unknown currency")));
    }
    let first_two = harness.rabbit.list_parked(&queue, &Selection::first(2)).await.unwrap();
    assert_eq!(
        first_two.iter().map(|parked| parked.message_id.clone()).collect::<Vec<_>>(),
        expected_ids[..2]
    );
    // Given back, not consumed: the dead-letter queue still holds all three.
    eventually(WAIT, "three parked messages after listing", || async {
        (harness.parked(&queue).await == 3).then_some(())
    })
    .await;

    fixed.store(true, Ordering::SeqCst);
    assert_eq!(harness.rabbit.replay_parked(&queue, &Selection::first(10), &|_, _| {}).await.unwrap(), 3);
    eventually(WAIT, "the replayed messages to be processed", || async {
        (harness.consumed(&queue, "ack") == 3).then_some(())
    })
    .await;
    let replayed: Vec<Delivery> = recorder.seen().into_iter().skip(3).collect();
    assert_eq!(replayed.iter().map(|delivery| delivery.message_id.clone()).collect::<Vec<_>>(), expected_ids);
    assert!(replayed.iter().all(|delivery| delivery.attempt == 1 && delivery.routing_key == ROUTING_KEY));
    // The originals' acknowledgements are applied by the queue after the replay returns.
    wait_until_drained(&harness, &queue).await;

    harness.stop().await;
}

/// Runs a parked command as an operator types it; its JSON answer and the progress reported.
async fn operator(rabbit: &RabbitMq, queue: &str, line: &str) -> (serde_json::Value, Vec<(usize, usize)>) {
    let command = ParkedCommand::parse("analytics-service", "", line.split_whitespace().map(str::to_owned))
        .unwrap()
        .unwrap();
    let console = Unattended::answering(true);
    let answer = command.run(rabbit, &[queue], &console).await.unwrap().to_json();
    (answer, console.progress_reports().into_iter().map(|(_, done, total)| (done, total)).collect())
}

/// Waits until `queue` and its dead-letter queue are empty; says what they hold if they stay not.
async fn wait_until_drained(harness: &Harness, queue: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let depths = harness.rabbit.queue_depths(queue).await.unwrap();
        if depths == (0, 0) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the queue and its dead-letter queue still hold (ready, parked) = {depths:?} after {WAIT:?}; \
             {} acknowledged",
            harness.consumed(queue, "ack")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn operators_act_only_on_what_they_select_oldest_first_and_the_rest_stays() {
    let mut harness = Harness::start(settings(amqp_url())).await;
    let fixed = Arc::new(AtomicBool::new(false));
    let recorder = Recorder::new({
        let fixed = fixed.clone();
        move |delivery| {
            if delivery.payload.starts_with(b"gone") {
                Err(HandleError::Permanent("webhook answered 410 Gone".into()))
            } else if fixed.load(Ordering::SeqCst) {
                Ok(Handled::Processed)
            } else {
                Err(HandleError::Permanent("unknown currency".into()))
            }
        }
    });
    let queue = harness.consume(recorder.clone()).await;
    // More than one round of replay confirms, with a few to discard among them.
    let sent: Vec<OutgoingMessage> = (0..300)
        .map(|i| message(&if i % 60 == 7 { format!("gone {i}") } else { format!("keep {i}") }))
        .collect();
    assert!(harness.rabbit.publish(&sent).await.iter().all(Result::is_ok));
    eventually(WAIT, "every message parked", || async {
        (harness.parked(&queue).await == 300).then_some(())
    })
    .await;
    let listed_ids = |answer: &serde_json::Value| -> Vec<String> {
        let messages = answer["queues"][0]["messages"].as_array().unwrap();
        messages.iter().map(|message| message["message_id"].as_str().unwrap().to_owned()).collect()
    };
    // The order they were parked in (consumers park a batch concurrently), as listed.
    let (everything, _) = operator(&harness.rabbit, &queue, "parked list --limit 1000").await;
    let ids_of = |prefix: &str| -> Vec<String> {
        let messages = everything["queues"][0]["messages"].as_array().unwrap();
        messages
            .iter()
            .filter(|message| message["payload"].as_str().unwrap().starts_with(prefix))
            .map(|message| message["message_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (gone, mut keep) = (ids_of("gone"), ids_of("keep"));
    assert_eq!((gone.len(), keep.len()), (5, 295));
    let (by_reason, _) = operator(&harness.rabbit, &queue, "parked list --reason 410").await;
    assert_eq!(listed_ids(&by_reason), gone);
    let (dry_run, _) =
        operator(&harness.rabbit, &queue, "parked discard --reason 410 --dry-run --json").await;
    assert_eq!(listed_ids(&dry_run), gone);
    assert_eq!(harness.parked(&queue).await, 300, "a dry run changes nothing");
    let (discarded, _) = operator(&harness.rabbit, &queue, "parked discard --reason 410").await;
    assert_eq!(discarded["queues"][0]["discarded"], gone.len());
    let (left, _) = operator(&harness.rabbit, &queue, "parked list --limit 1000").await;
    assert_eq!(listed_ids(&left), keep, "the rest stays parked");

    fixed.store(true, Ordering::SeqCst);
    let one = keep.remove(1);
    let (replayed, _) = operator(&harness.rabbit, &queue, &format!("parked replay --id {one}")).await;
    assert_eq!(replayed["queues"][0]["replayed"], 1);
    eventually(WAIT, "the one replayed message", || async {
        (harness.consumed(&queue, "ack") == 1).then_some(())
    })
    .await;
    let (left, _) = operator(&harness.rabbit, &queue, "parked list --limit 1000").await;
    assert_eq!(listed_ids(&left), keep);

    let (replayed, progress) = operator(&harness.rabbit, &queue, "parked replay").await;
    assert_eq!(replayed["queues"][0]["replayed"], keep.len());
    assert_eq!(progress, [(200, keep.len()), (keep.len(), keep.len())], "one report per round of confirms");
    eventually(WAIT, "every replayed message handled", || async {
        (harness.consumed(&queue, "ack") == 1 + keep.len() as u64).then_some(())
    })
    .await;
    // The originals' acknowledgements are applied by the queue after the replay returns.
    wait_until_drained(&harness, &queue).await;
    harness.stop().await;
}

/// A dead-letter queue deeper than the broker's default consumer window, and a thousand
/// acknowledgements in one operation: every one sticks, none of the rest is touched.
#[tokio::test]
async fn replaying_a_deep_dead_letter_queue_leaves_no_original_parked() {
    let mut harness = Harness::start(settings(amqp_url())).await;
    let fixed = Arc::new(AtomicBool::new(false));
    let recorder = Recorder::new({
        let fixed = fixed.clone();
        move |_| {
            if fixed.load(Ordering::SeqCst) {
                Ok(Handled::Processed)
            } else {
                Err(HandleError::Permanent("unknown currency".into()))
            }
        }
    });
    let queue = harness.consume(recorder).await;
    let sent: Vec<OutgoingMessage> = (0..2000).map(|i| message(&format!("deep {i}"))).collect();
    assert!(harness.rabbit.publish(&sent).await.iter().all(Result::is_ok));
    eventually(WAIT, "every message parked", || async {
        (harness.parked(&queue).await == 2000).then_some(())
    })
    .await;
    fixed.store(true, Ordering::SeqCst);
    let (discarded, _) = operator(&harness.rabbit, &queue, "parked discard --limit 1000").await;
    assert_eq!(discarded["queues"][0]["discarded"], 1000);
    assert_eq!(harness.parked(&queue).await, 1000, "the discarded stay discarded");
    let (replayed, _) = operator(&harness.rabbit, &queue, "parked replay").await;
    assert_eq!(replayed["queues"][0]["replayed"], 1000);
    eventually(WAIT, "every replayed message handled", || async {
        (harness.consumed(&queue, "ack") == 1000).then_some(())
    })
    .await;
    wait_until_drained(&harness, &queue).await;
    harness.stop().await;
}

#[tokio::test]
async fn asking_about_a_missing_queue_is_an_error_not_an_outage() {
    let mut harness = Harness::start(settings(amqp_url())).await;
    let recorder = Recorder::new(|_| Ok(Handled::Processed));
    harness.consume(recorder.clone()).await;

    assert!(matches!(harness.rabbit.queue_depths("no.such.queue").await, Err(RabbitError::QueueNotFound(_))));
    assert!(matches!(
        harness.rabbit.list_parked("no.such.queue", &Selection::first(5)).await,
        Err(RabbitError::QueueNotFound(_))
    ));
    assert!(matches!(
        harness.rabbit.replay_parked("no.such.queue", &Selection::first(5), &|_, _| {}).await,
        Err(RabbitError::QueueNotFound(_))
    ));

    harness.publish_one(&message("still here")).await;
    eventually(WAIT, "the delivery", || async {
        (!recorder.seen_payload("still here").is_empty()).then_some(())
    })
    .await;
    assert!(harness.status.is_up());
    assert_eq!(harness.rabbit.connections_established(), 1, "the connection was kept");

    harness.stop().await;
}

#[tokio::test]
async fn the_broker_parks_a_message_redelivered_beyond_the_delivery_limit() {
    let settings = settings(amqp_url());
    let delivery_limit = settings.delivery_limit;
    let mut declared = Harness::start(settings.clone()).await;
    let queue = declared.consume(Recorder::new(|_| Ok(Handled::Processed))).await;
    declared.shutdown.trigger();
    assert!(declared.shutdown.wait_for_tasks(WAIT).await);

    // A consumer that crashes on a message over and over looks, to the broker, like requeues.
    let connection = raw_connection().await;
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let sent = message("crashes the consumer");
    let properties =
        BasicProperties::default().with_message_id(sent.event_id.to_string().into()).with_delivery_mode(2);
    let confirm = channel
        .basic_publish(
            declared.rabbit.exchanges().events.as_str().into(),
            ROUTING_KEY.into(),
            BasicPublishOptions::default(),
            &sent.payload,
            properties,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(confirm, Confirmation::Ack(None));
    let deliveries = std::sync::atomic::AtomicU32::new(0);
    let dead_letter = declared.rabbit.queue_names(&queue).dead_letter;
    eventually(WAIT, "the broker to dead-letter the message", || async {
        if let Some(message) =
            channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false }).await.unwrap()
        {
            deliveries.fetch_add(1, Ordering::SeqCst);
            message.delivery.acker.nack(BasicNackOptions { multiple: false, requeue: true }).await.unwrap();
        }
        (ready_messages(&dead_letter).await == 1).then_some(())
    })
    .await;
    assert_eq!(deliveries.load(Ordering::SeqCst), delivery_limit + 1);
    let _ = connection.close(200, "done".into()).await;

    let inspector = Harness::start(settings).await;
    let parked = inspector.rabbit.list_parked(&queue, &Selection::first(10)).await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].message_id, Some(sent.event_id.to_string()));
    assert_eq!(parked[0].reason.as_deref(), Some("delivery_limit"));
    assert_eq!(parked[0].routing_key, ROUTING_KEY);
    inspector.stop().await;
    declared.stop().await;
}

#[tokio::test]
async fn shutdown_finishes_the_batch_in_hand_and_leaves_the_rest_queued() {
    let mut harness = Harness::start(settings(amqp_url())).await;
    let gate = Arc::new(Notify::new());
    let recorder = Recorder::gated(gate.clone());
    let queue = harness.consume(recorder.clone()).await;
    let messages: Vec<OutgoingMessage> = (0..50).map(|i| message(&format!("{i}"))).collect();
    assert!(harness.rabbit.publish(&messages).await.iter().all(Result::is_ok));

    eventually(WAIT, "the first batch", || async { (!recorder.batch_sizes().is_empty()).then_some(()) })
        .await;
    harness.shutdown.trigger();
    gate.notify_one();
    assert!(harness.shutdown.wait_for_tasks(WAIT).await, "shutdown waited for the consumer");

    let in_hand = recorder.batch_sizes()[0];
    assert_eq!(recorder.batch_sizes().len(), 1, "no batch is taken after shutdown begins");
    assert_eq!(harness.consumed(&queue, "ack") as usize, in_hand, "the batch in hand was acked");
    assert_eq!(ready_messages(&queue).await as usize, 50 - in_hand, "the rest waits in the queue");
    assert!(!harness.status.is_up());

    harness.stop().await;
}

#[tokio::test]
async fn the_service_starts_without_the_broker_and_connects_when_it_comes() {
    let proxy = FaultProxy::start(host_port(&amqp_url(), 5672)).await.unwrap();
    proxy.cut();
    let health = Health::new(&mut prometheus_client::registry::Registry::default());
    let status = health.add_status("rabbitmq", true);
    let shutdown = Shutdown::new();
    let metrics = MessagingMetrics::unregistered();
    let settings = settings(format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port()));
    let rabbit =
        RabbitMq::new(settings, Vec::new(), status.clone(), metrics.clone(), shutdown.clone()).unwrap();
    let cleanup = Cleanup { queues: Vec::new(), exchanges: rabbit.exchanges().all(), redis_prefix: None };
    let mut harness = Harness { rabbit, status, shutdown, metrics, cleanup };

    let results = harness.rabbit.publish(&[message("{}")]).await;
    assert!(matches!(results[0], Err(PublishError::Unavailable(_))));
    assert!(matches!(harness.rabbit.queue_depths("anything").await, Err(RabbitError::Unavailable(_))));
    // A consumer registered now starts once the broker is reachable.
    let recorder = Recorder::new(|_| Ok(Handled::Processed));
    harness.consume(recorder.clone()).await;
    assert!(!harness.status.is_up());

    proxy.restore();
    harness.wait_until_up().await;
    let sent = message("first contact");
    eventually(WAIT, "a routable publish", || async {
        (harness.rabbit.publish(std::slice::from_ref(&sent)).await == vec![Ok(())]).then_some(())
    })
    .await;
    eventually(WAIT, "the delivery", || async {
        (!recorder.seen_payload("first contact").is_empty()).then_some(())
    })
    .await;
    harness.stop().await;
}

/// Answers `HandleError::Unavailable` until `available` is set, like a handler whose database is
/// down.
fn unavailable_until(available: Arc<AtomicBool>) -> Arc<Recorder> {
    Recorder::new(move |_| {
        if available.load(Ordering::SeqCst) {
            Ok(Handled::Processed)
        } else {
            Err(HandleError::Unavailable("database unreachable".into()))
        }
    })
}

#[tokio::test]
async fn restarts_during_a_backlog_never_park_a_healthy_message() {
    let settings = RabbitSettings { delivery_limit: 2, prefetch: 50, batch_size: 1, ..settings(amqp_url()) };
    let mut owner = Harness::start(settings.clone()).await;
    let queue = owner.consume(Recorder::new(|_| Ok(Handled::Processed))).await;
    owner.shutdown.trigger();
    assert!(owner.shutdown.wait_for_tasks(WAIT).await);
    let messages: Vec<OutgoingMessage> = (0..100).map(|i| message(&format!("backlog {i}"))).collect();
    let publisher = Harness::start(settings.clone()).await;
    assert!(publisher.rabbit.publish(&messages).await.iter().all(Result::is_ok));

    // Each run takes a full prefetch, handles one delivery and is stopped: more runs than the
    // delivery limit allows returns.
    for _ in 0..5 {
        let run = Harness::start(settings.clone()).await;
        let gate = Arc::new(Notify::new());
        let recorder = Recorder::gated(gate.clone());
        run.consume_queue(&queue, recorder.clone()).await;
        eventually(WAIT, "the first batch", || async { (!recorder.batch_sizes().is_empty()).then_some(()) })
            .await;
        run.shutdown.trigger();
        gate.notify_one();
        assert!(run.shutdown.wait_for_tasks(WAIT).await);
    }

    let last = Harness::start(settings.clone()).await;
    let recorder = Recorder::new(|_| Ok(Handled::Processed));
    last.consume_queue(&queue, recorder.clone()).await;
    eventually(WAIT, "every message handled", || async {
        let handled: HashSet<Vec<u8>> =
            recorder.seen().into_iter().map(|delivery| delivery.payload).collect();
        (handled.len() == 95).then_some(())
    })
    .await;
    assert_eq!(last.parked(&queue).await, 0, "restarts parked nothing");
    assert!(recorder.seen().iter().all(|delivery| delivery.attempt == 1), "no retry was spent");
    last.stop().await;
    publisher.stop().await;
}

#[tokio::test]
async fn parked_messages_survive_fifty_listings_and_failed_replays() {
    let settings = settings(amqp_url());
    let mut consumer = Harness::start(settings.clone()).await;
    let queue =
        consumer.consume(Recorder::new(|_| Err(HandleError::Permanent("unknown currency".into())))).await;
    let sent: Vec<OutgoingMessage> = (0..3).map(|i| message(&format!("parked {i}"))).collect();
    assert!(consumer.rabbit.publish(&sent).await.iter().all(Result::is_ok));
    eventually(WAIT, "three parked messages", || async {
        (consumer.parked(&queue).await == 3).then_some(())
    })
    .await;
    consumer.shutdown.trigger();
    assert!(consumer.shutdown.wait_for_tasks(WAIT).await);

    let operator = Harness::start(settings).await;
    for listing in 0..50 {
        let listed = operator.rabbit.list_parked(&queue, &Selection::first(10)).await.unwrap();
        assert_eq!(listed.len(), 3, "listing {listing} saw every parked message");
    }
    // A replay that cannot deliver (the queue is gone) keeps every message parked.
    let connection = raw_connection().await;
    let channel = connection.create_channel().await.unwrap();
    channel.queue_delete(queue.as_str().into(), Default::default()).await.unwrap();
    let _ = connection.close(200, "done".into()).await;
    for _ in 0..25 {
        assert_eq!(
            operator.rabbit.replay_parked(&queue, &Selection::first(10), &|_, _| {}).await.unwrap(),
            0
        );
    }
    let listed = operator.rabbit.list_parked(&queue, &Selection::first(10)).await.unwrap();
    let ids: HashSet<String> = listed.into_iter().filter_map(|parked| parked.message_id).collect();
    assert_eq!(ids, sent.iter().map(|message| message.event_id.to_string()).collect());
    operator.stop().await;
    consumer.stop().await;
}

/// A consumer reports its queue's depths itself (`queue_messages_ready`, `queue_messages_parked`),
/// sampled from the broker when it starts consuming and periodically after.
#[tokio::test]
async fn a_consumer_reports_what_waits_in_its_queue_and_what_is_parked() {
    let settings = settings(amqp_url());
    let mut first = Harness::start(settings.clone()).await;
    let queue = first
        .consume(Recorder::new(|delivery| {
            if delivery.payload == b"poison" {
                Err(HandleError::Permanent("not an order".into()))
            } else {
                Ok(Handled::Processed)
            }
        }))
        .await;
    first.publish_one(&message("poison")).await;
    eventually(WAIT, "the poison to be parked", || async { (first.parked(&queue).await == 1).then_some(()) })
        .await;
    first.shutdown.trigger();
    assert!(first.shutdown.wait_for_tasks(WAIT).await);
    // Two messages wait while nobody consumes.
    let publisher = Harness::start(settings.clone()).await;
    for payload in ["waiting 1", "waiting 2"] {
        publisher.publish_one(&message(payload)).await;
    }

    // A consumer that takes one message at a time and holds the first: one message at least
    // stays ready.
    let second = Harness::start(RabbitSettings { prefetch: 1, ..settings }).await;
    let release = Arc::new(Notify::new());
    second.consume_queue(&queue, Recorder::gated(release.clone())).await;
    let labels = QueueLabels { queue: queue.clone() };
    let (ready, parked) = eventually(WAIT, "the depth gauges", || async {
        let ready = second.metrics.queue_ready.get_or_create(&labels).get();
        let parked = second.metrics.queue_parked.get_or_create(&labels).get();
        (parked == 1).then_some((ready, parked))
    })
    .await;
    assert_eq!(parked, 1, "the parked message");
    assert!((1..=2).contains(&ready), "one or both waiting messages are ready: {ready}");
    // A permit, kept if the held batch is not waiting yet: it must not wait for ever.
    release.notify_one();
    publisher.stop().await;
    second.stop().await;
    first.stop().await;
}

#[tokio::test]
async fn every_queue_of_the_topology_exists_before_the_first_publish() {
    let name = unique_name();
    let topology = vec![
        QueueBinding { key: "queues.a", queue: format!("{name}.a"), routing_keys: vec![ROUTING_KEY.into()] },
        QueueBinding {
            key: "queues.b",
            queue: format!("{name}.b"),
            routing_keys: vec![ROUTING_KEY.into(), "order.processed".into()],
        },
    ];
    let harness = Harness::start_with_topology(settings(amqp_url()), topology).await;
    // Nobody consumes yet: the events wait in both queues.
    harness.publish_one(&message("early")).await;
    let processed = OutgoingMessage { routing_key: "order.processed".into(), ..message("early processed") };
    harness.publish_one(&processed).await;
    eventually(WAIT, "the events in their queues", || async {
        let a = ready_messages(&format!("{name}.a")).await;
        let b = ready_messages(&format!("{name}.b")).await;
        (a == 1 && b == 2).then_some(())
    })
    .await;
    // A consumer started later finds them.
    let recorder = Recorder::new(|_| Ok(Handled::Processed));
    harness.consume_queue(&format!("{name}.a"), recorder.clone()).await;
    eventually(WAIT, "the early event delivered", || async {
        (!recorder.seen_payload("early").is_empty()).then_some(())
    })
    .await;
    harness.stop().await;
}

#[tokio::test]
async fn an_outage_longer_than_every_retry_pauses_the_consumer_and_parks_nothing() {
    let mut harness = Harness::start(settings(amqp_url())).await;
    let available = Arc::new(AtomicBool::new(false));
    let recorder = unavailable_until(available.clone());
    let readiness =
        Health::new(&mut prometheus_client::registry::Registry::default()).add_status("consumer", false);
    let queue = format!("{}.orders", unique_name());
    harness.cleanup.queues.extend(harness.rabbit.queue_names(&queue).all());
    harness
        .consume_subscription(
            Subscription::new(queue.clone(), &[ROUTING_KEY], recorder.clone())
                .with_readiness(readiness.clone()),
        )
        .await;
    let messages: Vec<OutgoingMessage> = (0..20).map(|i| message(&format!("during outage {i}"))).collect();
    assert!(harness.rabbit.publish(&messages).await.iter().all(Result::is_ok));

    eventually(WAIT, "the consumer to pause", || async { (!readiness.is_up()).then_some(()) }).await;
    let paused = harness.metrics.paused.get_or_create(&QueueLabels { queue: queue.clone() }).get();
    assert_eq!(paused, 1);
    // Ten times the whole retry schedule (100 + 200 ms).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(harness.consumed(&queue, "retry"), 0);
    assert_eq!(harness.parked(&queue).await, 0);

    available.store(true, Ordering::SeqCst);
    eventually(WAIT, "every message handled", || async {
        (harness.consumed(&queue, "ack") == 20).then_some(())
    })
    .await;
    assert!(readiness.is_up());
    assert_eq!(harness.metrics.paused.get_or_create(&QueueLabels { queue: queue.clone() }).get(), 0);
    assert!(recorder.seen().iter().all(|delivery| delivery.attempt == 1), "the pause spent no attempt");
    assert_eq!(harness.parked(&queue).await, 0);
    assert_eq!(harness.consumed(&queue, "retry"), 0);
    harness.stop().await;
}

#[tokio::test]
async fn a_paused_consumer_hands_back_what_it_held_too_long_without_ageing_it() {
    // A delivery limit of 1: a single counted return would park a message.
    let settings = RabbitSettings { paused_hold_ms: 300, delivery_limit: 1, ..settings(amqp_url()) };
    let mut harness = Harness::start(settings).await;
    let available = Arc::new(AtomicBool::new(false));
    let queue = harness.consume(unavailable_until(available.clone())).await;
    let messages: Vec<OutgoingMessage> = (0..10).map(|i| message(&format!("held {i}"))).collect();
    assert!(harness.rabbit.publish(&messages).await.iter().all(Result::is_ok));

    eventually(WAIT, "the held batch handed back", || async {
        (harness.consumed(&queue, "requeued") >= 10).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    available.store(true, Ordering::SeqCst);
    eventually(WAIT, "every message handled", || async {
        (harness.consumed(&queue, "ack") == 10).then_some(())
    })
    .await;
    assert_eq!(harness.parked(&queue).await, 0);
    assert_eq!(ready_messages(&queue).await, 0);
    harness.stop().await;
}

#[tokio::test]
async fn shutdown_while_paused_leaves_every_message_queued_and_unaged() {
    let settings = RabbitSettings { delivery_limit: 1, ..settings(amqp_url()) };
    let mut harness = Harness::start(settings.clone()).await;
    let queue = harness.consume(unavailable_until(Arc::new(AtomicBool::new(false)))).await;
    let messages: Vec<OutgoingMessage> = (0..10).map(|i| message(&format!("paused {i}"))).collect();
    assert!(harness.rabbit.publish(&messages).await.iter().all(Result::is_ok));
    eventually(WAIT, "the consumer to pause", || async {
        let paused = harness.metrics.paused.get_or_create(&QueueLabels { queue: queue.clone() }).get();
        (paused == 1).then_some(())
    })
    .await;
    harness.shutdown.trigger();
    assert!(harness.shutdown.wait_for_tasks(WAIT).await);

    let next = Harness::start(settings).await;
    let recorder = Recorder::new(|_| Ok(Handled::Processed));
    next.consume_queue(&queue, recorder.clone()).await;
    eventually(WAIT, "every message handled", || async {
        let handled: HashSet<Vec<u8>> =
            recorder.seen().into_iter().map(|delivery| delivery.payload).collect();
        (handled.len() == 10).then_some(())
    })
    .await;
    assert_eq!(next.parked(&queue).await, 0);
    next.stop().await;
    harness.stop().await;
}
