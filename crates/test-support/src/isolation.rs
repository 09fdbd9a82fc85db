//! Where a service under test keeps its data and exchanges its events, for one test: the real
//! servers under names of the test's own, or SQLite files and an in-process bus. Everything is
//! removed when the value is dropped, also when the test fails.

use std::sync::Arc;

use async_trait::async_trait;
use messaging::{
    Delivery, EventBus, EventHandler, EventPublisher, HandleError, Handled, MessagingMetrics,
    OutgoingMessage, Subscription,
    inprocess::InProcessBus,
    rabbitmq::{ExchangeNames, RabbitSettings, queue_names_of},
};
use platform::Shutdown;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::{Cleanup, EventListener, Listener, ReceivedEvent, TempDir, TestDatabase, TestPublisher};

pub enum Isolation {
    /// The real servers: a database, queues, exchanges and Redis keys of the test's own.
    Real { database: TestDatabase, exchange: String, publisher: Box<TestPublisher>, cleanup: Cleanup },
    /// SQLite files in a directory of the test's own, and an in-process bus.
    Embedded { directory: TempDir, bus: InProcessBus, listeners: Shutdown },
}

impl Isolation {
    /// On the real servers, for a service with these queues and RabbitMQ settings, keeping its
    /// Redis keys under `redis_prefix`.
    pub async fn real(
        database: TestDatabase,
        queues: &contracts::Queues,
        rabbit: &RabbitSettings,
        redis_prefix: &str,
    ) -> Isolation {
        let cleanup = cleanup_of(queues, rabbit, redis_prefix);
        let publisher = TestPublisher::connect(&rabbit.exchange).await.expect("test publisher");
        Isolation::Real {
            database,
            exchange: rabbit.exchange.clone(),
            publisher: Box::new(publisher),
            cleanup,
        }
    }

    /// On SQLite files in `directory` and `bus`.
    pub fn embedded(directory: TempDir, bus: InProcessBus) -> Isolation {
        Isolation::Embedded { directory, bus, listeners: Shutdown::new() }
    }

    /// A queue `queue` bound to `routing_key`, to see what the service publishes.
    pub async fn listen(&mut self, queue: String, routing_key: &str) -> Listener {
        match self {
            Isolation::Real { exchange, cleanup, .. } => {
                cleanup.queues.push(queue.clone());
                Listener::Broker(Box::new(EventListener::start(exchange, &queue, routing_key).await))
            }
            Isolation::Embedded { bus, listeners, .. } => {
                let (events, received) = mpsc::unbounded_channel();
                let connection = bus.connect(MessagingMetrics::unregistered(), listeners.clone());
                connection
                    .subscribe(Subscription::new(queue, &[routing_key], Arc::new(Recorder { events })))
                    .await
                    .expect("subscribe a listener");
                Listener::Bus(received)
            }
        }
    }

    /// Publishes `body` on `routing_key` as another service would, and waits for its confirm. On
    /// the real broker, a message no queue takes is dropped: publish once the service consumes.
    pub async fn publish(&self, message_id: Option<&str>, event_type: &str, routing_key: &str, body: &[u8]) {
        match self {
            Isolation::Real { publisher, .. } => {
                publisher.publish(routing_key, message_id, body).await.expect("publish");
            }
            Isolation::Embedded { bus, .. } => {
                let message = OutgoingMessage {
                    event_id: message_id.and_then(|id| id.parse().ok()).unwrap_or_else(uuid::Uuid::now_v7),
                    event_type: event_type.to_owned(),
                    routing_key: routing_key.to_owned(),
                    payload: body.to_vec(),
                    headers: Default::default(),
                    timestamp: chrono::Utc::now(),
                };
                let confirmed = bus.publish(&[message]).await;
                assert!(confirmed.iter().all(Result::is_ok), "{confirmed:?}");
            }
        }
    }

    /// Publishes an event envelope (its `event_id` and `event_type` taken from it).
    pub async fn publish_event(&self, routing_key: &str, event: &Value) {
        let body = event.to_string().into_bytes();
        let event_type = event["event_type"].as_str().unwrap_or_default();
        self.publish(event["event_id"].as_str(), event_type, routing_key, &body).await;
    }

    /// Stops the in-process listeners and closes the bus's files; dropping removes the rest.
    pub async fn close(self) {
        if let Isolation::Embedded { bus, listeners, .. } = &self {
            listeners.trigger();
            bus.parked_store().close().await;
        }
    }
}

/// What a service with these queues and RabbitMQ settings leaves on the shared servers: its
/// queues (with their retry and dead-letter queues), exchanges and Redis keys under `redis_prefix`.
pub fn cleanup_of(queues: &contracts::Queues, rabbit: &RabbitSettings, redis_prefix: &str) -> Cleanup {
    Cleanup {
        queues: queue_names_of(queues, rabbit),
        exchanges: ExchangeNames::new(rabbit).all(),
        redis_prefix: Some(redis_prefix.to_owned()),
    }
}

/// A consumer on the in-process bus that hands every delivery to the test.
struct Recorder {
    events: mpsc::UnboundedSender<ReceivedEvent>,
}

#[async_trait]
impl EventHandler for Recorder {
    async fn handle(&self, batch: &[Delivery]) -> Vec<Result<Handled, HandleError>> {
        for delivery in batch {
            let _ = self.events.send(ReceivedEvent {
                body: serde_json::from_slice(&delivery.payload).unwrap_or(Value::Null),
                message_id: delivery.message_id.clone(),
                headers: delivery.headers.clone(),
                routing_key: delivery.routing_key.clone(),
            });
        }
        vec![Ok(Handled::Processed); batch.len()]
    }
}
