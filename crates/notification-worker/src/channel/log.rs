//! The `log` channel: one structured log line per notification, as the system we replace did.

use async_trait::async_trait;

use super::{Channel, Notification, SendError};

pub struct LogChannel;

#[async_trait]
impl Channel for LogChannel {
    fn name(&self) -> &'static str {
        "log"
    }

    async fn send(&self, notification: &Notification) -> Result<(), SendError> {
        tracing::info!(
            event = "notification_sent",
            channel = "log",
            order_id = %notification.order_id,
            event_type = %notification.event_type,
            event_id = %notification.event_id,
            "notification sent"
        );
        Ok(())
    }
}
