//! Who consumes what: the queues of the whole system and the routing keys bound to each.
//!
//! Every service declares all of them, not only its own, before it publishes anything: a broker
//! drops an event routed to no queue, so an event published while its consumer's queue does not
//! exist yet (a fresh install, a consumer still pending) would be lost to that consumer. The names
//! are configuration (section `queues`), shared by every service.

use serde::{Deserialize, Serialize};

use crate::routing_key;

/// The names of the system's consumer queues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Queues {
    /// analytics-service's queue: `order.created`, `order.cancelled`.
    pub analytics: String,
    /// notification-worker's queue: `order.created`, `order.processed`, `order.cancelled`.
    pub notifications: String,
    /// order-service's queue: `order.processed`.
    pub order_processed: String,
}

impl Default for Queues {
    fn default() -> Self {
        Queues {
            analytics: "analytics.orders".into(),
            notifications: "notifications.orders".into(),
            order_processed: "orders.processed".into(),
        }
    }
}

/// One consumer queue: its configuration key, its name, the routing keys bound to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueBinding {
    /// Where the name is configured, e.g. `queues.analytics`.
    pub key: &'static str,
    pub queue: String,
    pub routing_keys: Vec<String>,
}

impl Queues {
    pub const ANALYTICS_KEYS: &'static [&'static str] =
        &[routing_key::ORDER_CREATED, routing_key::ORDER_CANCELLED];
    pub const NOTIFICATIONS_KEYS: &'static [&'static str] =
        &[routing_key::ORDER_CREATED, routing_key::ORDER_PROCESSED, routing_key::ORDER_CANCELLED];
    pub const ORDER_PROCESSED_KEYS: &'static [&'static str] = &[routing_key::ORDER_PROCESSED];

    /// Every consumer queue of the system with its bindings.
    pub fn bindings(&self) -> Vec<QueueBinding> {
        let binding = |key, queue: &String, keys: &[&str]| QueueBinding {
            key,
            queue: queue.clone(),
            routing_keys: keys.iter().map(|key| (*key).to_owned()).collect(),
        };
        vec![
            binding("queues.analytics", &self.analytics, Self::ANALYTICS_KEYS),
            binding("queues.notifications", &self.notifications, Self::NOTIFICATIONS_KEYS),
            binding("queues.order_processed", &self.order_processed, Self::ORDER_PROCESSED_KEYS),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_reaches_its_consumers() {
        let bindings = Queues::default().bindings();
        let consumers = |routing_key: &str| -> Vec<String> {
            bindings
                .iter()
                .filter(|binding| binding.routing_keys.iter().any(|key| key == routing_key))
                .map(|binding| binding.queue.clone())
                .collect()
        };
        assert_eq!(consumers(routing_key::ORDER_CREATED), ["analytics.orders", "notifications.orders"]);
        assert_eq!(consumers(routing_key::ORDER_PROCESSED), ["notifications.orders", "orders.processed"]);
        assert_eq!(consumers(routing_key::ORDER_CANCELLED), ["analytics.orders", "notifications.orders"]);
    }
}
