//! Messaging metrics: outbox relay and consumers.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub queue: String,
    /// `ack`, `duplicate`, `retry`, `dead_lettered` or `requeued` (handed back unhandled).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLetterLabels {
    pub queue: String,
    /// `permanent` (the handler said so) or `retries_exhausted`.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoutingLabels {
    pub routing_key: String,
}

#[derive(Clone)]
pub struct MessagingMetrics {
    pub outbox_backlog: Gauge,
    pub outbox_oldest_pending_age_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub outbox_published: Family<RoutingLabels, Counter>,
    pub outbox_publish_failures: Family<RoutingLabels, Counter>,
    pub consumed: Family<OutcomeLabels, Counter>,
    pub retried: Family<QueueLabels, Counter>,
    pub dead_lettered: Family<DeadLetterLabels, Counter>,
    pub processing_duration: Family<QueueLabels, Histogram>,
    /// 1 while the queue's consumer is paused because a dependency is unavailable.
    pub paused: Family<QueueLabels, Gauge>,
    /// Messages waiting in a consumed queue, and parked in its dead-letter queue, as last sampled
    /// from the bus (no series while the bus cannot be asked).
    pub queue_ready: Family<QueueLabels, Gauge>,
    pub queue_parked: Family<QueueLabels, Gauge>,
}

impl MessagingMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = MessagingMetrics {
            outbox_backlog: Gauge::default(),
            outbox_oldest_pending_age_seconds: Gauge::default(),
            outbox_published: Family::default(),
            outbox_publish_failures: Family::default(),
            consumed: Family::default(),
            retried: Family::default(),
            dead_lettered: Family::default(),
            processing_duration: Family::new_with_constructor(platform::metrics::latency_histogram),
            paused: Family::default(),
            queue_ready: Family::default(),
            queue_parked: Family::default(),
        };
        registry.register("outbox_backlog", "Outbox rows not yet published", metrics.outbox_backlog.clone());
        registry.register(
            "outbox_oldest_pending_age_seconds",
            "Age of the oldest outbox row not yet published",
            metrics.outbox_oldest_pending_age_seconds.clone(),
        );
        registry.register(
            "outbox_published",
            "Outbox rows published and confirmed",
            metrics.outbox_published.clone(),
        );
        registry.register(
            "outbox_publish_failures",
            "Outbox publishes that failed and will be retried",
            metrics.outbox_publish_failures.clone(),
        );
        registry.register("messages_consumed", "Deliveries handled, by outcome", metrics.consumed.clone());
        registry.register("messages_retried", "Deliveries sent to a delayed retry", metrics.retried.clone());
        registry.register(
            "messages_dead_lettered",
            "Deliveries parked in the dead-letter queue",
            metrics.dead_lettered.clone(),
        );
        registry.register_with_unit(
            "message_processing_duration",
            "Time to handle a batch of deliveries",
            Unit::Seconds,
            metrics.processing_duration.clone(),
        );
        registry.register(
            "consumer_paused",
            "1 while the consumer is paused because a dependency it needs is unavailable",
            metrics.paused.clone(),
        );
        registry.register(
            "queue_messages_ready",
            "Messages waiting in the queue this service consumes, sampled from the broker",
            metrics.queue_ready.clone(),
        );
        registry.register(
            "queue_messages_parked",
            "Messages parked in the dead-letter queue of the queue this service consumes, sampled from the broker",
            metrics.queue_parked.clone(),
        );
        metrics
    }

    /// Creates every series of a consumed queue at zero, so that dashboards show it and
    /// `increase()` alerts see its first retry or dead letter.
    pub fn init_queue(&self, queue: &str) {
        for outcome in ["ack", "duplicate", "retry", "dead_lettered", "requeued"] {
            self.consumed.get_or_create_owned(&OutcomeLabels { queue: queue.to_owned(), outcome });
        }
        for reason in ["permanent", "retries_exhausted"] {
            self.dead_lettered.get_or_create_owned(&DeadLetterLabels { queue: queue.to_owned(), reason });
        }
        self.retried.get_or_create_owned(&QueueLabels { queue: queue.to_owned() });
        self.paused.get_or_create_owned(&QueueLabels { queue: queue.to_owned() });
    }

    /// Creates the outbox series of a routing key at zero (see [`MessagingMetrics::init_queue`]).
    pub fn init_routing_key(&self, routing_key: &str) {
        let labels = RoutingLabels { routing_key: routing_key.to_owned() };
        self.outbox_published.get_or_create_owned(&labels);
        self.outbox_publish_failures.get_or_create_owned(&labels);
    }

    /// Metrics that go nowhere, for tests and tools.
    pub fn unregistered() -> Self {
        Self::register(&mut Registry::default())
    }
}
