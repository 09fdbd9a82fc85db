use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    pub channel: &'static str,
    /// `sent`, `duplicate` (it went out before) or `failed` (not sent this time: the channel
    /// failed, the deduplication store was unavailable, or another worker held the claim).
    pub outcome: &'static str,
}

/// `notifications_sent_total{channel, outcome}`: one count per channel per attempt.
#[derive(Clone)]
pub struct NotificationMetrics {
    pub notifications: Family<NotificationLabels, Counter>,
}

impl NotificationMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = NotificationMetrics { notifications: Family::default() };
        registry.register(
            "notifications_sent",
            "Notification attempts per channel, by outcome",
            metrics.notifications.clone(),
        );
        metrics
    }

    pub fn count(&self, channel: &'static str, outcome: &'static str) {
        self.notifications.get_or_create(&NotificationLabels { channel, outcome }).inc();
    }
}
