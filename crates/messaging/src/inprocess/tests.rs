use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use chrono::Utc;
use uuid::Uuid;

use super::*;
use crate::{
    EventHandler, HandleError, Handled,
    metrics::{DeadLetterLabels, OutcomeLabels},
    parked::cli::{ParkedCommand, Unattended},
};
use serde_json::json;

/// A dead-letter store in a directory of its own, removed on drop.
struct TempStore {
    directory: PathBuf,
    store: ParkedStore,
}

impl TempStore {
    async fn new() -> TempStore {
        let directory = std::env::temp_dir().join(format!("inprocess-bus-{}", Uuid::new_v4().simple()));
        let store = ParkedStore::open(&directory.join("bus.db")).await.unwrap();
        TempStore { directory, store }
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

fn settings() -> InProcessSettings {
    InProcessSettings {
        retry_delays_ms: vec![20, 40],
        confirm_timeout_ms: 2_000,
        replay_poll_interval_ms: 50,
        ..InProcessSettings::default()
    }
}

async fn bus() -> (InProcessBus, TempStore, MessagingMetrics) {
    let store = TempStore::new().await;
    let metrics = MessagingMetrics::unregistered();
    let bus = InProcessBus::new(settings(), store.store.clone(), metrics.clone(), Shutdown::new()).unwrap();
    (bus, store, metrics)
}

fn message(routing_key: &str, body: &str) -> OutgoingMessage {
    OutgoingMessage {
        event_id: Uuid::now_v7(),
        event_type: "OrderCreated".into(),
        routing_key: routing_key.into(),
        payload: body.as_bytes().to_vec(),
        headers: BTreeMap::from([("traceparent".to_owned(), "00-abc-def-01".to_owned())]),
        timestamp: Utc::now(),
    }
}

/// Records what it is handed and answers from a script: the outcome for a payload's n-th try.
#[derive(Default)]
struct Recorder {
    batches: Mutex<Vec<Vec<Delivery>>>,
    script: Mutex<BTreeMap<String, Vec<Result<Handled, HandleError>>>>,
    delay: Duration,
}

impl Recorder {
    fn failing(payload: &str, outcomes: Vec<Result<Handled, HandleError>>) -> Arc<Recorder> {
        let recorder = Recorder::default();
        recorder.script.lock().unwrap().insert(payload.to_owned(), outcomes);
        Arc::new(recorder)
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.batches.lock().unwrap().iter().flatten().cloned().collect()
    }
}

#[async_trait]
impl EventHandler for Recorder {
    async fn handle(&self, batch: &[Delivery]) -> Vec<Result<Handled, HandleError>> {
        tokio::time::sleep(self.delay).await;
        self.batches.lock().unwrap().push(batch.to_vec());
        let mut script = self.script.lock().unwrap();
        batch
            .iter()
            .map(|delivery| {
                let payload = String::from_utf8_lossy(&delivery.payload).into_owned();
                match script.get_mut(&payload) {
                    Some(outcomes) if !outcomes.is_empty() => outcomes.remove(0),
                    _ => Ok(Handled::Processed),
                }
            })
            .collect()
    }
}

fn subscription(queue: &str, keys: &[&str], handler: Arc<dyn EventHandler>) -> Subscription {
    Subscription::new(queue, keys, handler)
}

fn consumed(metrics: &MessagingMetrics, queue: &str, outcome: &'static str) -> u64 {
    metrics.consumed.get_or_create(&OutcomeLabels { queue: queue.into(), outcome }).get()
}

#[tokio::test]
async fn a_publish_is_confirmed_once_every_bound_queue_has_handled_it() {
    let (bus, _store, metrics) = bus().await;
    let slow = Arc::new(Recorder { delay: Duration::from_millis(100), ..Recorder::default() });
    let other = Arc::new(Recorder::default());
    bus.subscribe(subscription("analytics", &["order.created"], slow.clone())).await.unwrap();
    bus.subscribe(subscription("notifications", &["order.*"], other.clone())).await.unwrap();

    let created = message("order.created", "one");
    let results = bus.publish(&[created.clone(), message("order.processed", "two")]).await;
    assert_eq!(results, vec![Ok(()), Ok(())]);
    // Confirmed means handled, by both queues the first message reached.
    let seen = slow.deliveries();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].message_id, Some(created.event_id.to_string()));
    assert_eq!(seen[0].event_type.as_deref(), Some("OrderCreated"));
    assert_eq!(seen[0].routing_key, "order.created");
    assert_eq!(seen[0].headers["traceparent"], "00-abc-def-01");
    assert_eq!((seen[0].attempt, seen[0].redelivered), (1, false));
    assert_eq!(other.deliveries().len(), 2);
    assert_eq!(consumed(&metrics, "analytics", "ack"), 1);
    assert_eq!(consumed(&metrics, "notifications", "ack"), 2);

    let unroutable = bus.publish(&[message("order.shipped.v2", "x")]).await;
    assert_eq!(unroutable, vec![Err(PublishError::Unroutable("order.shipped.v2".into()))]);
}

#[tokio::test]
async fn deliveries_that_arrive_together_are_handled_as_one_batch() {
    let (bus, _store, _) = bus().await;
    let recorder = Arc::new(Recorder { delay: Duration::from_millis(50), ..Recorder::default() });
    bus.subscribe(subscription("analytics", &["order.created"], recorder.clone())).await.unwrap();
    let messages: Vec<_> = (0..10).map(|i| message("order.created", &i.to_string())).collect();
    assert!(bus.publish(&messages).await.iter().all(Result::is_ok));
    assert_eq!(recorder.batches.lock().unwrap().len(), 1);
    assert_eq!(recorder.deliveries().len(), 10);
}

#[tokio::test]
async fn transient_failures_are_retried_then_parked() {
    let (bus, _store, metrics) = bus().await;
    let transient = || Err(HandleError::Transient("database down".into()));
    let recorder = Recorder::failing("flaky", vec![transient(), transient()]);
    recorder.script.lock().unwrap().insert("broken".into(), vec![transient(), transient(), transient()]);
    bus.subscribe(subscription("analytics", &["order.created"], recorder.clone())).await.unwrap();

    let results = bus.publish(&[message("order.created", "flaky"), message("order.created", "broken")]).await;
    assert_eq!(results, vec![Ok(()), Ok(())], "parked counts as a final outcome");
    let attempts = |payload: &str| -> Vec<u32> {
        recorder.deliveries().iter().filter(|d| d.payload == payload.as_bytes()).map(|d| d.attempt).collect()
    };
    assert_eq!(attempts("flaky"), [1, 2, 3], "succeeded on the last retry");
    assert_eq!(attempts("broken"), [1, 2, 3]);

    let parked = bus.list_parked("analytics", &Selection::first(10)).await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].payload, "broken");
    assert_eq!(parked[0].reason.as_deref(), Some("database down"));
    assert_eq!(parked[0].headers["traceparent"], "00-abc-def-01");
    assert_eq!(consumed(&metrics, "analytics", "retry"), 4);
    assert_eq!(consumed(&metrics, "analytics", "ack"), 1);
    assert_eq!(consumed(&metrics, "analytics", "dead_lettered"), 1);
    let exhausted = DeadLetterLabels { queue: "analytics".into(), reason: "retries_exhausted" };
    assert_eq!(metrics.dead_lettered.get_or_create(&exhausted).get(), 1);
}

#[tokio::test]
async fn permanent_failures_are_parked_at_once_and_can_be_replayed() {
    let (bus, _store, _) = bus().await;
    let recorder = Recorder::failing("poison", vec![Err(HandleError::Permanent("not an envelope".into()))]);
    bus.subscribe(subscription("analytics", &["order.created"], recorder.clone())).await.unwrap();
    assert_eq!(bus.publish(&[message("order.created", "poison")]).await, vec![Ok(())]);
    assert_eq!(recorder.deliveries().len(), 1, "no retries");

    let listed = operator(&bus, "parked list").await;
    assert_eq!(listed["queues"][0]["parked"], 1);
    let parked = &listed["queues"][0]["messages"][0];
    assert_eq!(parked["reason"], "not an envelope");
    assert_eq!(parked["headers"][crate::parked::headers::DEATH_REASON], "not an envelope");

    // The script is used up: replayed, it succeeds and leaves the dead-letter store.
    let replayed = operator(&bus, "parked replay").await;
    assert_eq!(
        replayed,
        json!({"dry_run": false, "queues": [{"queue": "analytics", "selected": 1, "replayed": 1, "still_parked": 0}]})
    );
    tokio::time::timeout(Duration::from_secs(5), async {
        while bus.queue_depths("analytics").await.unwrap() != (0, 0) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the replayed message is handled");
    let deliveries = recorder.deliveries();
    assert_eq!(deliveries.len(), 2);
    assert_eq!(deliveries[1].attempt, 1, "a replay starts a fresh round");
}

/// Runs a parked command as an operator types it, on the `analytics` queue; its JSON answer.
async fn operator(bus: &InProcessBus, line: &str) -> serde_json::Value {
    let command =
        ParkedCommand::parse("orderflow", "", line.split_whitespace().map(str::to_owned)).unwrap().unwrap();
    command.run(bus, &["analytics"], &Unattended::answering(true)).await.unwrap().to_json()
}

#[tokio::test]
async fn operators_select_parked_messages_by_id_reason_and_count() {
    let (bus, _store, _) = bus().await;
    let reasons = ["webhook answered 410", "not an envelope", "webhook answered 410", "quantity 0"];
    let mut script = BTreeMap::new();
    for (index, reason) in reasons.iter().enumerate() {
        script.insert(format!("m{index}"), vec![Err(HandleError::Permanent((*reason).into()))]);
    }
    let recorder = Arc::new(Recorder { script: Mutex::new(script), ..Recorder::default() });
    bus.subscribe(subscription("analytics", &["order.created"], recorder.clone())).await.unwrap();
    let messages: Vec<_> = (0..4).map(|index| message("order.created", &format!("m{index}"))).collect();
    bus.publish(&messages).await;
    let ids: Vec<String> = messages.iter().map(|message| message.event_id.to_string()).collect();
    let listed_ids = |answer: &serde_json::Value, key: &str| -> Vec<String> {
        answer["queues"][0][key]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["message_id"].as_str().unwrap().to_owned())
            .collect()
    };

    let by_reason = operator(&bus, "parked list --reason 410").await;
    assert_eq!(listed_ids(&by_reason, "messages"), [ids[0].clone(), ids[2].clone()], "oldest first");
    assert_eq!(listed_ids(&operator(&bus, "parked list --limit 1").await, "messages"), [ids[0].clone()]);
    let shown = operator(&bus, &format!("parked show {}", ids[1])).await;
    assert_eq!(shown["message"]["payload"], "m1");

    // A dry run names what would go and changes nothing.
    let dry = operator(&bus, "parked discard --reason 410 --dry-run").await;
    assert_eq!(listed_ids(&dry, "messages"), [ids[0].clone(), ids[2].clone()]);
    assert_eq!(bus.queue_depths("analytics").await.unwrap(), (0, 4));
    // Not confirmed: nothing goes.
    let command =
        ParkedCommand::parse("orderflow", "", ["parked", "discard"].map(String::from)).unwrap().unwrap();
    assert!(command.run(&bus, &["analytics"], &Unattended::answering(false)).await.is_err());
    assert_eq!(bus.queue_depths("analytics").await.unwrap(), (0, 4));

    let discarded = operator(&bus, "parked discard --reason 410").await;
    assert_eq!(discarded["queues"][0]["discarded"], 2);
    let replayed = operator(&bus, &format!("parked replay --id {} --id unknown", ids[3])).await;
    assert_eq!(replayed["queues"][0]["replayed"], 1);
    tokio::time::timeout(Duration::from_secs(5), async {
        while bus.queue_depths("analytics").await.unwrap() != (0, 1) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the replayed message is handled");
    let left = operator(&bus, "parked list").await;
    assert_eq!(listed_ids(&left, "messages"), [ids[1].clone()]);
    let not_found =
        ParkedCommand::parse("orderflow", "", ["parked", "show", "nope"].map(String::from)).unwrap().unwrap();
    assert!(not_found.run(&bus, &["analytics"], &Unattended::answering(true)).await.is_err());
}

#[tokio::test]
async fn a_replay_that_fails_again_is_parked_again() {
    let (bus, store, _) = bus().await;
    let permanent = || Err(HandleError::Permanent("still broken".into()));
    let recorder = Recorder::failing("poison", vec![permanent(), permanent()]);
    bus.subscribe(subscription("analytics", &["order.created"], recorder.clone())).await.unwrap();
    bus.publish(&[message("order.created", "poison")]).await;
    assert_eq!(bus.replay_parked("analytics", &Selection::first(10), &|_, _| {}).await.unwrap(), 1);
    tokio::time::timeout(Duration::from_secs(5), async {
        while recorder.deliveries().len() < 2 || bus.queue_depths("analytics").await.unwrap() != (0, 1) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("parked again");
    assert_eq!(
        store.store.list("analytics", &Selection::first(10)).await.unwrap().len(),
        1,
        "one row, not two"
    );
}

#[tokio::test]
async fn replays_asked_while_the_consumer_was_away_are_delivered_when_it_comes_back() {
    let store = TempStore::new().await;
    let first_run = Shutdown::new();
    let bus = InProcessBus::new(
        settings(),
        store.store.clone(),
        MessagingMetrics::unregistered(),
        first_run.clone(),
    )
    .unwrap();
    let poison = Recorder::failing("poison", vec![Err(HandleError::Permanent("bad".into()))]);
    bus.subscribe(subscription("analytics", &["order.created"], poison)).await.unwrap();
    bus.publish(&[message("order.created", "poison")]).await;
    first_run.trigger();
    assert!(first_run.wait_for_tasks(Duration::from_secs(5)).await);

    // An operator replays it while nothing consumes the queue (another process, say).
    let operator =
        InProcessBus::new(settings(), store.store.clone(), MessagingMetrics::unregistered(), Shutdown::new())
            .unwrap();
    assert_eq!(operator.replay_parked("analytics", &Selection::first(10), &|_, _| {}).await.unwrap(), 1);

    let second_run = bus.connect(MessagingMetrics::unregistered(), Shutdown::new());
    let recorder = Arc::new(Recorder::default());
    second_run.subscribe(subscription("analytics", &["order.created"], recorder.clone())).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while recorder.deliveries().is_empty()
            || second_run.queue_depths("analytics").await.unwrap() != (0, 0)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the replay reaches the new consumer");
}

struct Panicking;

#[async_trait]
impl EventHandler for Panicking {
    async fn handle(&self, _batch: &[Delivery]) -> Vec<Result<Handled, HandleError>> {
        panic!("boom");
    }
}

#[tokio::test]
async fn a_panicking_handler_counts_as_a_transient_failure() {
    let (bus, _store, metrics) = bus().await;
    bus.subscribe(subscription("analytics", &["order.created"], Arc::new(Panicking))).await.unwrap();
    assert_eq!(bus.publish(&[message("order.created", "x")]).await, vec![Ok(())]);
    let parked = bus.list_parked("analytics", &Selection::first(10)).await.unwrap();
    assert_eq!(parked.len(), 1);
    assert!(parked[0].reason.as_deref().unwrap().contains("boom"), "{parked:?}");
    assert_eq!(consumed(&metrics, "analytics", "retry"), 2);
}

#[tokio::test]
async fn at_shutdown_the_batch_in_hand_is_finished_and_the_rest_left_unconfirmed() {
    let store = TempStore::new().await;
    let shutdown = Shutdown::new();
    let bus = InProcessBus::new(
        settings(),
        store.store.clone(),
        MessagingMetrics::unregistered(),
        shutdown.clone(),
    )
    .unwrap();
    let slow = Arc::new(Recorder { delay: Duration::from_millis(300), ..Recorder::default() });
    bus.subscribe(subscription("analytics", &["order.created"], slow.clone())).await.unwrap();

    let publisher = bus.clone();
    let in_hand = tokio::spawn(async move { publisher.publish(&[message("order.created", "x")]).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let publisher = bus.clone();
    let behind = tokio::spawn(async move { publisher.publish(&[message("order.created", "y")]).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    shutdown.trigger();

    assert_eq!(in_hand.await.unwrap(), vec![Ok(())]);
    let behind = behind.await.unwrap();
    assert!(matches!(behind[0], Err(PublishError::Unavailable(_))), "{behind:?}");
    let after = bus.publish(&[message("order.created", "z")]).await;
    assert!(matches!(after[0], Err(PublishError::Unavailable(_))), "{after:?}");
    assert_eq!(slow.deliveries().len(), 1);
    assert!(shutdown.wait_for_tasks(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn a_consumer_that_never_answers_leaves_the_publish_unconfirmed() {
    let (bus, _store, _) = bus().await;
    let hanging = Arc::new(Recorder { delay: Duration::from_secs(3600), ..Recorder::default() });
    bus.subscribe(subscription("analytics", &["order.created"], hanging)).await.unwrap();
    let results = bus.publish(&[message("order.created", "x")]).await;
    assert_eq!(results, vec![Err(PublishError::Timeout(Duration::from_millis(2_000)))]);
}

#[tokio::test]
async fn a_held_bus_routes_nothing_until_released() {
    let (bus, _store, _) = bus().await;
    bus.hold();
    let publisher = bus.clone();
    let held = tokio::spawn(async move { publisher.publish(&[message("order.created", "early")]).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Subscribed after the publish began, before the release: the queue still gets it.
    let recorder = Arc::new(Recorder::default());
    bus.subscribe(subscription("analytics", &["order.created"], recorder.clone())).await.unwrap();
    assert!(!held.is_finished());
    bus.release();
    assert_eq!(held.await.unwrap(), vec![Ok(())]);
    assert_eq!(recorder.deliveries().len(), 1);
}

#[tokio::test]
async fn a_queue_is_consumed_once() {
    let (bus, _store, _) = bus().await;
    let recorder = Arc::new(Recorder::default());
    bus.subscribe(subscription("analytics", &["order.created"], recorder.clone())).await.unwrap();
    assert!(bus.subscribe(subscription("analytics", &["order.created"], recorder.clone())).await.is_err());
    assert!(bus.subscribe(subscription("", &["order.created"], recorder)).await.is_err());
}

#[test]
fn settings_are_checked() {
    InProcessSettings::default().validate().unwrap();
    let invalid = [
        (InProcessSettings { batch_size: 0, ..Default::default() }, "bus.batch_size"),
        (InProcessSettings { retry_delays_ms: vec![0], ..Default::default() }, "bus.retry_delays_ms"),
        (
            InProcessSettings {
                retry_delays_ms: vec![1_000, 2_000],
                confirm_timeout_ms: 3_000,
                ..Default::default()
            },
            "bus.confirm_timeout_ms",
        ),
    ];
    for (settings, key) in invalid {
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains(key), "{error} should name {key}");
    }
    let from_env: InProcessSettings = serde_json::from_str(r#"{"retry_delays_ms": "50, 250"}"#).unwrap();
    assert_eq!(from_env.retry_delays_ms, vec![50, 250]);
}

#[tokio::test]
async fn an_outage_longer_than_every_retry_pauses_the_consumer_and_parks_nothing() {
    let (bus, _store, metrics) = bus().await;
    let unavailable = || Err(HandleError::Unavailable("database unreachable".into()));
    // Three unavailable answers: the pause (0.25 + 0.5 + 1 s) outlasts the retry schedule (20 +
    // 40 ms) many times.
    let recorder = Recorder::failing("during outage", (0..3).map(|_| unavailable()).collect());
    let readiness = platform::Health::new(&mut prometheus_client::registry::Registry::default())
        .add_status("consumer", false);
    bus.subscribe(
        subscription("analytics", &["order.created"], recorder.clone()).with_readiness(readiness.clone()),
    )
    .await
    .unwrap();

    let publishing = tokio::spawn({
        let bus = bus.clone();
        async move { bus.publish(&[message("order.created", "during outage")]).await }
    });
    tokio::time::timeout(Duration::from_secs(5), async {
        while readiness.is_up() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the consumer pauses");
    let paused =
        metrics.paused.get_or_create(&crate::metrics::QueueLabels { queue: "analytics".into() }).get();
    assert_eq!(paused, 1);

    assert_eq!(publishing.await.unwrap(), vec![Ok(())], "confirmed once the dependency is back");
    assert!(readiness.is_up());
    assert_eq!(recorder.deliveries().len(), 4);
    assert!(recorder.deliveries().iter().all(|delivery| delivery.attempt == 1), "no attempt was spent");
    assert_eq!(consumed(&metrics, "analytics", "ack"), 1);
    assert_eq!(consumed(&metrics, "analytics", "retry"), 0);
    assert!(bus.list_parked("analytics", &Selection::first(10)).await.unwrap().is_empty());
}
