//! The event-bus port: what services need from a message broker, and nothing more.
//!
//! Delivery is at least once on both sides: a publish counts only once the broker has confirmed
//! it, and a consumer's deliveries are acknowledged only after its handler has finished. Consumers
//! must therefore be idempotent (they deduplicate on `event_id`).

use std::{collections::BTreeMap, sync::Arc};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use platform::DependencyStatus;
use uuid::Uuid;

/// A message ready to be published: an event envelope and its routing data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// Becomes the AMQP `message_id`; consumers deduplicate on it.
    pub event_id: Uuid,
    /// `OrderCreated`, `OrderProcessed`, … (the AMQP `type` property).
    pub event_type: String,
    /// Routing key on the events exchange, e.g. `order.created`.
    pub routing_key: String,
    /// The JSON envelope.
    pub payload: Vec<u8>,
    /// Text headers carried along, e.g. the W3C `traceparent`.
    pub headers: BTreeMap<String, String>,
    pub timestamp: DateTime<Utc>,
}

impl OutgoingMessage {
    /// `envelope`, to be published on `routing_key`, carrying the current span's trace (call it
    /// inside the span of the work that emits the event, so that the event continues its trace).
    pub fn from_envelope<T: serde::Serialize>(envelope: &contracts::Envelope<T>, routing_key: &str) -> Self {
        OutgoingMessage {
            event_id: envelope.event_id,
            event_type: envelope.event_type.clone(),
            routing_key: routing_key.to_owned(),
            payload: serde_json::to_vec(envelope).expect("an event always serialises"),
            headers: platform::telemetry::current_trace_headers().into_iter().collect(),
            timestamp: envelope.timestamp,
        }
    }
}

/// Why a message was not confirmed by the broker. Every variant means "try again later".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    #[error("broker refused the message")]
    Nacked,
    #[error("no queue is bound for routing key {0:?}")]
    Unroutable(String),
    #[error("no confirmation within {0:?}")]
    Timeout(std::time::Duration),
}

#[async_trait]
pub trait EventPublisher: Send + Sync {
    /// Publishes `messages` and waits for the broker to confirm each one (persisted and routed to
    /// at least one queue). Returns one result per message, in order.
    async fn publish(&self, messages: &[OutgoingMessage]) -> Vec<Result<(), PublishError>>;
}

/// A message handed to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub message_id: Option<String>,
    pub event_type: Option<String>,
    pub routing_key: String,
    /// Text-valued headers (e.g. `traceparent`).
    pub headers: BTreeMap<String, String>,
    pub payload: Vec<u8>,
    /// 1 on the first try, n on the n-th (after n − 1 delayed retries).
    pub attempt: u32,
    /// The broker delivered it before without an acknowledgement (e.g. a consumer crashed).
    pub redelivered: bool,
}

impl Delivery {
    /// The span of this delivery's handling on `queue`: a consumer span that continues the trace
    /// of the work that published it (its `traceparent` header), so an order's trace spans the
    /// services it passes through.
    pub fn span(&self, queue: &str) -> tracing::Span {
        let span = tracing::info_span!(
            "consume",
            otel.kind = "consumer",
            queue = %queue,
            message_id = self.message_id.as_deref().unwrap_or(""),
            attempt = self.attempt,
        );
        platform::telemetry::set_parent_from_headers(&span, |name| self.headers.get(name).cloned());
        span
    }
}

/// What went wrong while handling a delivery, and therefore what to do with it. The reason is
/// what a parked message says: built from an error, it carries the error's causes
/// (`platform::ErrorChain`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// It can never succeed (malformed, violates the contract): dead-letter it at once.
    #[error("permanent failure: {0}")]
    Permanent(String),
    /// It may succeed later (deadlock, lock timeout, a receiver refusing it for now): retry it
    /// after a growing delay, and dead-letter it after the last retry.
    #[error("transient failure: {0}")]
    Transient(String),
    /// A dependency the consumer needs is down (database unreachable, pool exhausted, Redis
    /// down): nothing is wrong with the delivery. The consumer pauses and handles it again when
    /// the dependency is back, however long that takes; no attempt is counted.
    #[error("dependency unavailable: {0}")]
    Unavailable(String),
}

impl HandleError {
    pub fn reason(&self) -> &str {
        match self {
            HandleError::Permanent(reason)
            | HandleError::Transient(reason)
            | HandleError::Unavailable(reason) => reason,
        }
    }
}

/// A delivery handled successfully.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Its effect has been applied.
    Processed,
    /// Its effect had been applied before (same `event_id`); nothing was done.
    Duplicate,
}

#[async_trait]
pub trait EventHandler: Send + Sync {
    /// Handles deliveries that arrived together; returns one outcome per delivery, in order.
    /// Handling a batch in one database transaction is what lets a consumer keep up under load.
    async fn handle(&self, batch: &[Delivery]) -> Vec<Result<Handled, HandleError>>;
}

/// Checks the system's queue names (section `queues`); the error names the offending key.
pub fn validate_queues(queues: &contracts::Queues) -> Result<(), platform::ConfigError> {
    for binding in queues.bindings() {
        if binding.queue.trim().is_empty() {
            return Err(platform::ConfigError::invalid(binding.key, "must not be empty"));
        }
    }
    Ok(())
}

/// A queue to consume, the routing keys it receives, and who handles its deliveries.
#[derive(Clone)]
pub struct Subscription {
    /// Queue name, e.g. `analytics.orders`. Its retry queues and dead-letter queue derive from it.
    pub queue: String,
    /// Routing keys bound from the events exchange, e.g. `order.created`.
    pub routing_keys: Vec<String>,
    pub handler: Arc<dyn EventHandler>,
    /// Down while the consumer is paused (a dependency is unavailable), for readiness.
    pub readiness: Option<DependencyStatus>,
}

impl Subscription {
    pub fn new(queue: impl Into<String>, routing_keys: &[&str], handler: Arc<dyn EventHandler>) -> Self {
        Subscription {
            queue: queue.into(),
            routing_keys: routing_keys.iter().map(|key| (*key).to_owned()).collect(),
            handler,
            readiness: None,
        }
    }

    /// Reports the consumer's pauses through `status`.
    pub fn with_readiness(mut self, status: DependencyStatus) -> Self {
        self.readiness = Some(status);
        self
    }
}

/// Why a subscription could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot subscribe: {0}")]
pub struct SubscribeError(pub String);

/// A broker: publishes, and runs consumers.
#[async_trait]
pub trait EventBus: EventPublisher {
    /// Starts consuming `subscription` now (or as soon as the broker is reachable) and keeps
    /// consuming, across reconnections, until shutdown.
    async fn subscribe(&self, subscription: Subscription) -> Result<(), SubscribeError>;
}
