//! Messaging: the event-bus port, its RabbitMQ and in-process adapters, and the transactional
//! outbox relay.

pub mod bus;
pub mod consume;
pub mod inprocess;
pub mod metrics;
pub mod outbox;
pub mod parked;
pub mod rabbitmq;

pub use bus::{
    Delivery, EventBus, EventHandler, EventPublisher, HandleError, Handled, OutgoingMessage, PublishError,
    SubscribeError, Subscription, validate_queues,
};
pub use metrics::MessagingMetrics;
pub use parked::ParkedMessage;
