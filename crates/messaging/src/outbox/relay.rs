//! The relay: publishes outbox rows with broker confirms and removes them once confirmed, both
//! the rows its own producer hands over right after their commit and, by polling, any row due.

use std::{sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};
use uuid::Uuid;

use super::store::{OutboxError, OutboxStore};
use crate::{EventPublisher, MessagingMetrics, OutgoingMessage, PublishError, metrics::RoutingLabels};
use platform::Shutdown;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RelaySettings {
    /// Rows leased and published together.
    pub batch_size: usize,
    /// How long a leased row stays reserved for the relay that took it.
    pub lease_ms: u64,
    /// Fallback poll, for rows written by other replicas and rows whose retry is due.
    pub poll_interval_ms: u64,
    /// Backoff after a failed publish: `retry_base_ms × 2^(attempts − 1)`, at most `retry_max_ms`.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// How often the backlog gauges are refreshed.
    pub housekeeping_interval_ms: u64,
}

impl Default for RelaySettings {
    fn default() -> Self {
        RelaySettings {
            batch_size: 256,
            lease_ms: 30_000,
            poll_interval_ms: 1_000,
            retry_base_ms: 500,
            retry_max_ms: 30_000,
            housekeeping_interval_ms: 5_000,
        }
    }
}

impl RelaySettings {
    pub fn validate(&self) -> Result<(), platform::ConfigError> {
        platform::config::require_positive(&[
            ("outbox.batch_size", self.batch_size as u64),
            ("outbox.lease_ms", self.lease_ms),
            ("outbox.poll_interval_ms", self.poll_interval_ms),
            ("outbox.retry_base_ms", self.retry_base_ms),
            ("outbox.housekeeping_interval_ms", self.housekeeping_interval_ms),
        ])?;
        if self.retry_max_ms < self.retry_base_ms {
            return Err(platform::ConfigError::invalid(
                "outbox.retry_max_ms",
                "must be at least outbox.retry_base_ms",
            ));
        }
        Ok(())
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let exponent = attempts.saturating_sub(1).min(20);
        Duration::from_millis(self.retry_base_ms.saturating_mul(1 << exponent).min(self.retry_max_ms))
    }
}

/// How long rows handed to the local relay stay out of reach of the polling relays: long enough
/// for a normal publish, short enough that the rows of a process that died go out soon.
pub const HANDOFF_RESERVATION: Duration = Duration::from_secs(10);

/// Events handed from the producer to its relay without a round trip through the table.
const HANDOFF_CAPACITY: usize = 16_384;

/// Gives events the producer has just committed to the outbox (written with
/// [`HANDOFF_RESERVATION`]) to the relay, which publishes them at once.
#[derive(Clone)]
pub struct OutboxHandoff {
    events: mpsc::Sender<OutgoingMessage>,
    wake: Arc<Notify>,
}

impl OutboxHandoff {
    /// Call after the commit. Should the relay be too far behind to take them, the events are
    /// published by polling once their reservation ends.
    pub fn publish_committed(&self, events: impl IntoIterator<Item = OutgoingMessage>) {
        for event in events {
            if self.events.try_send(event).is_err() {
                tracing::debug!(event = "outbox_handoff_full", "relay busy; the event will be polled");
                self.wake.notify_one();
                return;
            }
        }
    }
}

/// Publishes outbox rows.
pub struct Relay {
    store: Arc<dyn OutboxStore>,
    publisher: Arc<dyn EventPublisher>,
    handoff: OutboxHandoff,
    handed_off: tokio::sync::Mutex<mpsc::Receiver<OutgoingMessage>>,
    settings: RelaySettings,
    metrics: MessagingMetrics,
}

/// What came of publishing a set of rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Published {
    /// Confirmed by the broker and marked sent.
    pub confirmed: usize,
    /// Some were not confirmed; they are due again after a backoff.
    pub failed: bool,
}

impl Relay {
    pub fn new(
        store: Arc<dyn OutboxStore>,
        publisher: Arc<dyn EventPublisher>,
        settings: RelaySettings,
        metrics: MessagingMetrics,
    ) -> Self {
        let (events, handed_off) = mpsc::channel(HANDOFF_CAPACITY);
        Relay {
            store,
            publisher,
            handoff: OutboxHandoff { events, wake: Arc::default() },
            handed_off: tokio::sync::Mutex::new(handed_off),
            settings,
            metrics,
        }
    }

    pub fn handoff(&self) -> OutboxHandoff {
        self.handoff.clone()
    }

    /// Publishes until `shutdown`; what is in hand is finished first.
    pub async fn run(self, shutdown: Shutdown) {
        let poll = Duration::from_millis(self.settings.poll_interval_ms);
        let housekeeping = Duration::from_millis(self.settings.housekeeping_interval_ms);
        let mut next_housekeeping = tokio::time::Instant::now();
        let mut next_poll = tokio::time::Instant::now();
        let mut handed_off = self.handed_off.lock().await;
        let mut batch = Vec::with_capacity(self.settings.batch_size);
        loop {
            let now = tokio::time::Instant::now();
            if now >= next_housekeeping {
                self.housekeeping().await;
                next_housekeeping = now + housekeeping;
            }
            if now >= next_poll {
                let failing = match self.publish_due().await {
                    Ok(published) => published.failed,
                    Err(error) => {
                        tracing::warn!(event = "outbox_relay_failed", error = %error, "outbox relay pass failed");
                        true
                    }
                };
                // While the broker or the database fails, poll at the normal pace only, whatever
                // wakes the relay meanwhile.
                let jitter = Duration::from_millis(rand::random_range(0..=poll.as_millis() as u64 / 4));
                next_poll = if failing {
                    tokio::time::Instant::now() + poll + jitter
                } else {
                    tokio::time::Instant::now() + poll
                };
            }
            tokio::select! {
                received = handed_off.recv_many(&mut batch, self.settings.batch_size) => {
                    if received == 0 {
                        break; // every handoff is gone: the service is being torn down
                    }
                    let messages = std::mem::take(&mut batch);
                    if let Err(error) = self.publish_handed_off(messages).await {
                        tracing::warn!(event = "outbox_relay_failed", error = %error, "outbox relay pass failed");
                    }
                }
                () = self.handoff.wake.notified() => next_poll = tokio::time::Instant::now(),
                () = tokio::time::sleep_until(next_poll.min(next_housekeeping)) => {}
                () = shutdown.requested() => break,
            }
        }
        // What was committed before the listener closed gets a last chance to go out now.
        while let Ok(message) = handed_off.try_recv() {
            batch.push(message);
        }
        if let Err(error) = self.publish_handed_off(batch).await {
            tracing::warn!(event = "outbox_relay_failed", error = %error, "final outbox pass failed");
        }
        if let Err(error) = self.publish_due().await {
            tracing::warn!(event = "outbox_relay_failed", error = %error, "final outbox pass failed");
        }
    }

    /// Publishes events handed over by the producer (their rows are committed and reserved).
    async fn publish_handed_off(&self, messages: Vec<OutgoingMessage>) -> Result<Published, OutboxError> {
        if messages.is_empty() {
            return Ok(Published::default());
        }
        let attempts = vec![1; messages.len()];
        self.publish(&messages, &attempts).await
    }

    /// Publishes every row that is due; stops early when the broker is failing, leaving the
    /// rest for the next pass.
    pub async fn publish_due(&self) -> Result<Published, OutboxError> {
        let lease = Duration::from_millis(self.settings.lease_ms);
        let mut total = Published::default();
        loop {
            let records = self.store.claim(self.settings.batch_size, lease).await?;
            if records.is_empty() {
                return Ok(total);
            }
            let messages: Vec<OutgoingMessage> = records.iter().map(|r| r.message.clone()).collect();
            let attempts: Vec<u32> = records.iter().map(|r| r.attempts).collect();
            let published = self.publish(&messages, &attempts).await?;
            total.confirmed += published.confirmed;
            if published.failed {
                total.failed = true;
                return Ok(total);
            }
            if records.len() < self.settings.batch_size {
                return Ok(total);
            }
        }
    }

    /// Publishes `messages` (the `attempts`-th try of each), then records what became of them.
    async fn publish(
        &self,
        messages: &[OutgoingMessage],
        attempts: &[u32],
    ) -> Result<Published, OutboxError> {
        let results = self.publisher.publish(messages).await;
        let mut sent = Vec::with_capacity(messages.len());
        let mut failed: Vec<(&OutgoingMessage, u32, PublishError)> = Vec::new();
        for ((message, attempt), result) in messages.iter().zip(attempts).zip(results) {
            let labels = RoutingLabels { routing_key: message.routing_key.clone() };
            match result {
                Ok(()) => {
                    self.metrics.outbox_published.get_or_create(&labels).inc();
                    sent.push(message.event_id);
                }
                Err(error) => {
                    self.metrics.outbox_publish_failures.get_or_create(&labels).inc();
                    failed.push((message, *attempt, error));
                }
            }
        }
        self.store.remove_published(&sent).await?;
        let confirmed = sent.len();
        let Some((_, _, first_error)) = failed.first() else {
            return Ok(Published { confirmed, failed: false });
        };
        tracing::warn!(
            event = "outbox_publish_failed",
            failed = failed.len(),
            error = %first_error,
            "events not confirmed by the broker; will retry"
        );
        // Rows with the same attempt count and error back off together.
        let mut groups: std::collections::BTreeMap<(u32, String), Vec<Uuid>> = Default::default();
        for (message, attempt, error) in &failed {
            groups.entry((*attempt, error.to_string())).or_default().push(message.event_id);
        }
        for ((attempt, error), event_ids) in groups {
            self.store.mark_failed(&event_ids, self.settings.backoff(attempt), &error).await?;
        }
        Ok(Published { confirmed, failed: true })
    }
    async fn housekeeping(&self) {
        match self.store.backlog().await {
            Ok(backlog) => {
                self.metrics.outbox_backlog.set(backlog.pending as i64);
                self.metrics
                    .outbox_oldest_pending_age_seconds
                    .set(backlog.oldest_age.map_or(0.0, |age| age.as_secs_f64()));
            }
            Err(error) => {
                tracing::warn!(event = "outbox_backlog_failed", error = %error, "could not measure the outbox backlog")
            }
        }
    }
}
