//! The in-process adapter of the event bus, for running every service in one process.
//!
//! It behaves like the RabbitMQ adapter where the services can tell:
//! - routing is a topic exchange: each subscription is a queue bound with its routing keys, and
//!   a message reaches every queue whose binding matches (none: `PublishError::Unroutable`);
//! - each queue has one consumer that hands the handler batches of what has arrived, and acts on
//!   each outcome as the broker adapter does: acked, retried after the configured delays (attempt
//!   numbers as with the broker's retry queues), or parked (permanent failure, panic after the
//!   last retry, retries exhausted) in a dead-letter store that survives restarts
//!   ([`ParkedStore`], listed and replayed like the broker's dead-letter queues);
//! - the same messaging metrics, counted in the consuming service's registry.
//!
//! The queues themselves are in memory. What makes delivery as safe as with a broker is the
//! confirmation: a publish is confirmed only once every queue it reached has handled the message
//! to a final outcome (acked, duplicate, or durably parked). Until then the producer's outbox row
//! stays unpublished, so a message in a queue when the process stops is published again after the
//! restart, and consumers deduplicate it as they do redeliveries from a broker.
//!
//! Because a publish waits for the consumers, delayed retries hold up the publishing outbox relay
//! for as long as they last: the default delays are short (see [`InProcessSettings`]).

mod consumer;
pub mod parked;
mod topic;

use std::{
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use futures::future::join_all;
use platform::{ConfigError, Shutdown};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, oneshot, watch};

pub use parked::ParkedStore;

use crate::{
    Delivery, EventBus, EventPublisher, MessagingMetrics, OutgoingMessage, PublishError, SubscribeError,
    Subscription,
    parked::{DeadLetters, ParkedMessage, Selection},
};

/// Settings of the in-process bus (configuration section `bus` of the one-process binary).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct InProcessSettings {
    /// Most deliveries handed to a handler at once; a batch holds what has already arrived.
    pub batch_size: usize,
    /// Delay before each retry of a delivery that failed transiently; after the last one it is
    /// parked. The publisher waits through them, so keep their sum to a few seconds. Also read
    /// from a comma-separated string (`"100,500"`).
    #[serde(deserialize_with = "platform::settings::list_or_comma_separated")]
    pub retry_delays_ms: Vec<u64>,
    /// Longest a publish waits for its consumers; past it the message counts as not confirmed
    /// (the outbox publishes it again later). Must exceed the sum of the retry delays.
    pub confirm_timeout_ms: u64,
    /// How often each consumer looks for parked messages an operator replayed from elsewhere
    /// (e.g. `orderflow parked replay` while the system runs).
    pub replay_poll_interval_ms: u64,
}

impl Default for InProcessSettings {
    fn default() -> Self {
        InProcessSettings {
            batch_size: 128,
            retry_delays_ms: vec![100, 500, 2_000],
            confirm_timeout_ms: 30_000,
            replay_poll_interval_ms: 1_000,
        }
    }
}

impl InProcessSettings {
    /// Checks every value; the error names the offending key (under `bus.`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        platform::config::require_positive(&[
            ("bus.batch_size", self.batch_size as u64),
            ("bus.replay_poll_interval_ms", self.replay_poll_interval_ms),
        ])?;
        if self.retry_delays_ms.contains(&0) {
            return Err(ConfigError::invalid("bus.retry_delays_ms", "every delay must be greater than 0"));
        }
        let retrying: u64 = self.retry_delays_ms.iter().fold(0u64, |sum, &delay| sum.saturating_add(delay));
        if self.confirm_timeout_ms <= retrying {
            return Err(ConfigError::invalid(
                "bus.confirm_timeout_ms",
                format!("must exceed the sum of bus.retry_delays_ms ({retrying} ms)"),
            ));
        }
        Ok(())
    }

    pub fn retry_delays(&self) -> Vec<Duration> {
        self.retry_delays_ms.iter().map(|&ms| Duration::from_millis(ms)).collect()
    }

    pub fn confirm_timeout(&self) -> Duration {
        Duration::from_millis(self.confirm_timeout_ms)
    }

    pub fn replay_poll_interval(&self) -> Duration {
        Duration::from_millis(self.replay_poll_interval_ms)
    }
}

/// Why an operator command on parked messages failed.
#[derive(Debug, thiserror::Error)]
pub enum InProcessError {
    #[error("dead-letter store error: {0}")]
    Store(#[from] sqlx::Error),
}

/// A delivery on its way to a queue's consumer, and who waits for its final outcome.
struct Pending {
    delivery: Delivery,
    /// The parked row this is a replay of.
    replay_of: Option<i64>,
    /// Answered once the delivery is acked or parked; `Err` when the outcome could not be stored.
    reply: oneshot::Sender<Result<(), String>>,
}

/// A subscription's queue, as the router sees it.
struct Queue {
    name: String,
    routing_keys: Vec<String>,
    sender: mpsc::UnboundedSender<Pending>,
    /// Deliveries sent and not yet taken by the consumer.
    ready: Arc<AtomicUsize>,
    /// Wakes the consumer's replayer when an operator replays parked messages.
    replays: Arc<Notify>,
}

impl Queue {
    /// Hands `pending` to the consumer; false if it no longer consumes (shut down).
    fn send(&self, pending: Pending) -> bool {
        self.ready.fetch_add(1, Ordering::SeqCst);
        if self.sender.send(pending).is_err() {
            self.ready.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }
}

/// What every connection to one bus shares.
struct Hub {
    settings: InProcessSettings,
    parked: ParkedStore,
    queues: Mutex<Vec<Arc<Queue>>>,
    /// False while publishing is held (see [`InProcessBus::hold`]).
    open: watch::Sender<bool>,
}

impl Hub {
    fn lock_queues(&self) -> MutexGuard<'_, Vec<Arc<Queue>>> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The queues a message published with `routing_key` reaches.
    fn route(&self, routing_key: &str) -> Vec<Arc<Queue>> {
        self.lock_queues()
            .iter()
            .filter(|queue| queue.routing_keys.iter().any(|pattern| topic::matches(pattern, routing_key)))
            .cloned()
            .collect()
    }

    fn queue(&self, name: &str) -> Option<Arc<Queue>> {
        self.lock_queues().iter().find(|queue| queue.name == name).cloned()
    }
}

/// One service's connection to the in-process bus; cheap to clone. Consumers it starts count in
/// its metrics and stop with its shutdown, as they would on the service's own broker connection.
#[derive(Clone)]
pub struct InProcessBus {
    hub: Arc<Hub>,
    metrics: MessagingMetrics,
    shutdown: Shutdown,
}

impl InProcessBus {
    /// A new bus, parking failed messages in `parked`.
    pub fn new(
        settings: InProcessSettings,
        parked: ParkedStore,
        metrics: MessagingMetrics,
        shutdown: Shutdown,
    ) -> Result<InProcessBus, ConfigError> {
        settings.validate()?;
        let hub = Hub { settings, parked, queues: Mutex::default(), open: watch::Sender::new(true) };
        Ok(InProcessBus { hub: Arc::new(hub), metrics, shutdown })
    }

    /// Another service's connection to the same bus.
    pub fn connect(&self, metrics: MessagingMetrics, shutdown: Shutdown) -> InProcessBus {
        InProcessBus { hub: self.hub.clone(), metrics, shutdown }
    }

    /// Makes publishes wait (within the confirm timeout) until [`InProcessBus::release`]. A
    /// broker's queues outlive their consumers, these do not: a system whose services start one
    /// after the other holds the bus until every service has subscribed, so that no message is
    /// routed while a queue that should take it is still missing.
    pub fn hold(&self) {
        self.hub.open.send_replace(false);
    }

    /// Lets held and new publishes through.
    pub fn release(&self) {
        self.hub.open.send_replace(true);
    }

    pub fn settings(&self) -> &InProcessSettings {
        &self.hub.settings
    }

    pub fn parked_store(&self) -> &ParkedStore {
        &self.hub.parked
    }

    /// Messages waiting for `queue`'s consumer (replays included), and messages parked.
    async fn depths(&self, queue: &str) -> Result<(u32, u32), InProcessError> {
        let (replaying, parked) = self.hub.parked.counts(queue).await?;
        let waiting = self.hub.queue(queue).map_or(0, |queue| queue.ready.load(Ordering::SeqCst));
        Ok((replaying.saturating_add(u32::try_from(waiting).unwrap_or(u32::MAX)), parked))
    }
}

#[async_trait]
impl DeadLetters for InProcessBus {
    type Error = InProcessError;

    async fn queue_depths(&self, queue: &str) -> Result<(u32, u32), InProcessError> {
        self.depths(queue).await
    }

    async fn list_parked(
        &self,
        queue: &str,
        selection: &Selection,
    ) -> Result<Vec<ParkedMessage>, InProcessError> {
        Ok(self.hub.parked.list(queue, selection).await?)
    }

    /// A consumer in another process picks the replayed messages up within its poll interval.
    async fn replay_parked(
        &self,
        queue: &str,
        selection: &Selection,
        progress: &(dyn Fn(usize, usize) + Send + Sync),
    ) -> Result<usize, InProcessError> {
        let replayed = self.hub.parked.request_replay(queue, selection).await?;
        if let Some(queue) = self.hub.queue(queue) {
            queue.replays.notify_one();
        }
        progress(replayed, replayed);
        Ok(replayed)
    }

    async fn discard_parked(&self, queue: &str, selection: &Selection) -> Result<usize, InProcessError> {
        Ok(self.hub.parked.discard(queue, selection).await?)
    }
}

fn to_delivery(message: &OutgoingMessage) -> Delivery {
    Delivery {
        message_id: Some(message.event_id.to_string()),
        event_type: Some(message.event_type.clone()),
        routing_key: message.routing_key.clone(),
        headers: message.headers.clone(),
        payload: message.payload.clone(),
        attempt: 1,
        redelivered: false,
    }
}

#[async_trait]
impl EventPublisher for InProcessBus {
    /// Confirms each message once every queue it reached has acked or parked it.
    async fn publish(&self, messages: &[OutgoingMessage]) -> Vec<Result<(), PublishError>> {
        let timeout = self.hub.settings.confirm_timeout();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut open = self.hub.open.subscribe();
        if tokio::time::timeout_at(deadline, open.wait_for(|open| *open)).await.is_err() {
            return vec![Err(PublishError::Timeout(timeout)); messages.len()];
        }
        // Hand everything over before waiting, so that consumers see whole batches.
        let sent: Vec<Result<Vec<oneshot::Receiver<Result<(), String>>>, PublishError>> = messages
            .iter()
            .map(|message| {
                let queues = self.hub.route(&message.routing_key);
                if queues.is_empty() {
                    return Err(PublishError::Unroutable(message.routing_key.clone()));
                }
                let mut replies = Vec::with_capacity(queues.len());
                for queue in queues {
                    let (reply, answer) = oneshot::channel();
                    let pending = Pending { delivery: to_delivery(message), replay_of: None, reply };
                    if !queue.send(pending) {
                        return Err(PublishError::Unavailable(format!(
                            "queue {} is not consumed",
                            queue.name
                        )));
                    }
                    replies.push(answer);
                }
                Ok(replies)
            })
            .collect();

        join_all(sent.into_iter().map(|replies| async move {
            for answer in replies? {
                match tokio::time::timeout_at(deadline, answer).await {
                    Ok(Ok(Ok(()))) => {}
                    Ok(Ok(Err(reason))) => return Err(PublishError::Unavailable(reason)),
                    Ok(Err(_)) => {
                        return Err(PublishError::Unavailable(
                            "the consumer stopped before handling it".into(),
                        ));
                    }
                    Err(_) => return Err(PublishError::Timeout(timeout)),
                }
            }
            Ok(())
        }))
        .await
    }
}

#[async_trait]
impl EventBus for InProcessBus {
    /// Starts the queue's consumer now, under this connection's shutdown.
    async fn subscribe(&self, subscription: Subscription) -> Result<(), SubscribeError> {
        if subscription.queue.is_empty() {
            return Err(SubscribeError("the queue name is empty".into()));
        }
        if self.shutdown.is_triggered() {
            return Err(SubscribeError("shutting down".into()));
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        let queue = Arc::new(Queue {
            name: subscription.queue.clone(),
            routing_keys: subscription.routing_keys.clone(),
            sender,
            ready: Arc::default(),
            replays: Arc::default(),
        });
        {
            let mut queues = self.hub.lock_queues();
            // A queue whose consumer has stopped may be consumed again (a service restarted).
            queues.retain(|existing| existing.name != queue.name || !existing.sender.is_closed());
            if queues.iter().any(|existing| existing.name == queue.name) {
                return Err(SubscribeError(format!("queue {:?} is already consumed", queue.name)));
            }
            queues.push(queue.clone());
        }
        let pipeline = crate::consume::Pipeline::new(
            &queue.name,
            subscription.handler,
            self.hub.settings.retry_delays_ms.len(),
            self.metrics.clone(),
            subscription.readiness,
            // Nothing here closes a consumer that holds deliveries for long.
            None,
        );
        let consumer = consumer::Consumer {
            queue: queue.clone(),
            pipeline,
            hub: self.hub.clone(),
            shutdown: self.shutdown.clone(),
        };
        consumer.start(receiver);
        crate::parked::sample_queue_depths(
            self.clone(),
            queue.name.clone(),
            self.metrics.clone(),
            self.shutdown.clone(),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests;
