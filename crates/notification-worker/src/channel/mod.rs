//! Notification channels: the ways a notification goes out. Each one is told about every event
//! and says whether it got through; deduplication and retries happen around it.

pub mod log;
pub mod webhook;

use std::sync::Arc;

use async_trait::async_trait;
use contracts::Event;
use platform::ConfigError;
use uuid::Uuid;

use crate::settings::{ChannelKind, NotificationSettings};

/// What one notification is about.
#[derive(Debug, Clone)]
pub struct Notification {
    pub event_id: Uuid,
    pub event_type: String,
    pub order_id: Uuid,
    /// The event envelope exactly as received.
    pub envelope: Vec<u8>,
}

impl Notification {
    pub fn new(event: &Event, envelope: &[u8]) -> Self {
        Notification {
            event_id: event.event_id(),
            event_type: event.event_type().to_owned(),
            order_id: event.order_id(),
            envelope: envelope.to_vec(),
        }
    }
}

/// Why a notification did not get through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// It may get through later (receiver down, overloaded, too slow).
    #[error("{0}")]
    Transient(String),
    /// It never will as it is (the receiver refuses it).
    #[error("{0}")]
    Permanent(String),
    /// The receiver cannot be reached at all (connection refused, no route): nothing to do with
    /// this notification; the worker pauses until it is back.
    #[error("{0}")]
    Unavailable(String),
}

#[async_trait]
pub trait Channel: Send + Sync {
    /// Short, stable name: the `channel` label of metrics and part of the deduplication key.
    fn name(&self) -> &'static str;

    async fn send(&self, notification: &Notification) -> Result<(), SendError>;
}

/// The channels `settings` turn on, in the order listed.
pub fn from_settings(settings: &NotificationSettings) -> Result<Vec<Arc<dyn Channel>>, ConfigError> {
    settings
        .channels
        .iter()
        .map(|kind| -> Result<Arc<dyn Channel>, ConfigError> {
            Ok(match kind {
                ChannelKind::Log => Arc::new(log::LogChannel),
                ChannelKind::Webhook => Arc::new(webhook::WebhookChannel::new(&settings.webhook)?),
            })
        })
        .collect()
}
