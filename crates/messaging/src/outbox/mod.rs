//! The transactional outbox: events are written in the same database transaction as the change
//! they describe, and a relay publishes them afterwards with broker confirms.
//!
//! The relay leases rows for a short time before publishing them outside any transaction, so
//! several replicas can run it at once: a row is published by one of them, and published again
//! only if that one died before marking it sent (consumers deduplicate on `event_id`).

pub mod mysql;
pub mod sqlite;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::{EventPublisher, MessagingMetrics, OutgoingMessage, PublishError, metrics::RoutingLabels};
use platform::Shutdown;

/// An outbox row leased for publishing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRecord {
    pub id: i64,
    pub message: OutgoingMessage,
    /// Publish attempts so far, this one included.
    pub attempts: u32,
}

/// Rows waiting to be published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    pub pending: u64,
    pub oldest_age: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("outbox row {id} is corrupt: {reason}")]
    Corrupt { id: i64, reason: String },
}

/// Where the outbox rows live: the service's own database.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Leases up to `limit` unpublished rows that are due, oldest first, for `lease`.
    async fn claim(&self, limit: usize, lease: Duration) -> Result<Vec<OutboxRecord>, OutboxError>;
    async fn mark_published(&self, ids: &[i64]) -> Result<(), OutboxError>;
    /// Makes the rows due again after `retry_after`, recording why they failed.
    async fn mark_failed(&self, ids: &[i64], retry_after: Duration, error: &str) -> Result<(), OutboxError>;
    async fn backlog(&self) -> Result<Backlog, OutboxError>;
    /// Deletes up to `limit` rows published more than `older_than` ago; returns how many.
    async fn purge_published(&self, older_than: Duration, limit: u32) -> Result<u64, OutboxError>;
}

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
    /// Published rows are kept this long for inspection, then deleted.
    pub retention_hours: u64,
    /// How often the backlog gauges are refreshed and old rows purged.
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
            retention_hours: 24 * 7,
            housekeeping_interval_ms: 5_000,
        }
    }
}

impl RelaySettings {
    pub fn validate(&self) -> Result<(), platform::ConfigError> {
        let positive = [
            ("outbox.batch_size", self.batch_size as u64),
            ("outbox.lease_ms", self.lease_ms),
            ("outbox.poll_interval_ms", self.poll_interval_ms),
            ("outbox.retry_base_ms", self.retry_base_ms),
            ("outbox.housekeeping_interval_ms", self.housekeeping_interval_ms),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(platform::ConfigError::invalid(key, "must be greater than 0"));
            }
        }
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

/// Wakes the relay right after a transaction that wrote outbox rows has committed.
#[derive(Clone, Default)]
pub struct OutboxWaker(Arc<Notify>);

impl OutboxWaker {
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

/// Publishes outbox rows.
pub struct Relay {
    store: Arc<dyn OutboxStore>,
    publisher: Arc<dyn EventPublisher>,
    waker: OutboxWaker,
    settings: RelaySettings,
    metrics: MessagingMetrics,
}

impl Relay {
    pub fn new(
        store: Arc<dyn OutboxStore>,
        publisher: Arc<dyn EventPublisher>,
        settings: RelaySettings,
        metrics: MessagingMetrics,
    ) -> Self {
        Relay { store, publisher, waker: OutboxWaker::default(), settings, metrics }
    }

    pub fn waker(&self) -> OutboxWaker {
        self.waker.clone()
    }

    /// Publishes until `shutdown`; the batch in hand is finished first.
    pub async fn run(self, shutdown: Shutdown) {
        let poll = Duration::from_millis(self.settings.poll_interval_ms);
        let housekeeping = Duration::from_millis(self.settings.housekeeping_interval_ms);
        let mut next_housekeeping = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_housekeeping {
                self.housekeeping().await;
                next_housekeeping = tokio::time::Instant::now() + housekeeping;
            }
            match self.publish_due().await {
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(event = "outbox_relay_failed", error = %error, "outbox relay pass failed");
                }
            }
            let jitter = Duration::from_millis(rand::random_range(0..=poll.as_millis() as u64 / 4));
            tokio::select! {
                () = self.waker.0.notified() => {}
                () = tokio::time::sleep(poll + jitter) => {}
                () = shutdown.requested() => break,
            }
        }
        // Whatever was committed before the listener closed gets a last chance to go out now.
        if let Err(error) = self.publish_due().await {
            tracing::warn!(event = "outbox_relay_failed", error = %error, "final outbox pass failed");
        }
    }

    /// Publishes every row that is due; returns how many were published. Stops early when the
    /// broker is failing, leaving the rest for the next pass.
    pub async fn publish_due(&self) -> Result<usize, OutboxError> {
        let lease = Duration::from_millis(self.settings.lease_ms);
        let mut published = 0;
        loop {
            let records = self.store.claim(self.settings.batch_size, lease).await?;
            if records.is_empty() {
                return Ok(published);
            }
            let messages: Vec<OutgoingMessage> = records.iter().map(|r| r.message.clone()).collect();
            let results = self.publisher.publish(&messages).await;

            let mut sent = Vec::with_capacity(records.len());
            let mut failed: Vec<(&OutboxRecord, PublishError)> = Vec::new();
            for (record, result) in records.iter().zip(results) {
                let labels = RoutingLabels { routing_key: record.message.routing_key.clone() };
                match result {
                    Ok(()) => {
                        self.metrics.outbox_published.get_or_create(&labels).inc();
                        sent.push(record.id);
                    }
                    Err(error) => {
                        self.metrics.outbox_publish_failures.get_or_create(&labels).inc();
                        failed.push((record, error));
                    }
                }
            }
            if !sent.is_empty() {
                self.store.mark_published(&sent).await?;
                published += sent.len();
            }
            if let Some((_, first_error)) = failed.first() {
                tracing::warn!(
                    event = "outbox_publish_failed",
                    failed = failed.len(),
                    error = %first_error,
                    "events not confirmed by the broker; will retry"
                );
                // Rows with the same attempt count and error back off together.
                let mut groups: std::collections::BTreeMap<(u32, String), Vec<i64>> = Default::default();
                for (record, error) in &failed {
                    groups.entry((record.attempts, error.to_string())).or_default().push(record.id);
                }
                for ((attempts, error), ids) in groups {
                    self.store.mark_failed(&ids, self.settings.backoff(attempts), &error).await?;
                }
                return Ok(published);
            }
            if records.len() < self.settings.batch_size {
                return Ok(published);
            }
        }
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
        let retention = Duration::from_secs(self.settings.retention_hours * 3600);
        if let Err(error) = self.store.purge_published(retention, 1_000).await {
            tracing::warn!(event = "outbox_purge_failed", error = %error, "could not purge published outbox rows");
        }
    }
}
