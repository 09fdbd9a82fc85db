//! The use cases of analytics-service, independent of HTTP and of the concrete backends.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use chrono::Utc;
use contracts::{Envelope, OrderProcessed, routing_key};
use messaging::{OutgoingMessage, outbox::OutboxHandoff};
use platform::cache::{CacheMetrics, VersionedCache};
use uuid::Uuid;

use crate::{
    domain::Effect,
    domain::OrderFact,
    store::{AnalyticsStore, Applied, Incoming, StoreError, VersionedSummary},
};

pub const PROCESSED_BY: &str = "analytics-service";
const SUMMARY_KEY: &str = "analytics:summary";

#[derive(Clone)]
pub struct AnalyticsService {
    store: Arc<dyn AnalyticsStore>,
    cache: Arc<dyn VersionedCache>,
    summary_ttl: Duration,
    outbox: OutboxHandoff,
    cache_metrics: CacheMetrics,
}

impl AnalyticsService {
    pub fn new(
        store: Arc<dyn AnalyticsStore>,
        cache: Arc<dyn VersionedCache>,
        summary_ttl: Duration,
        outbox: OutboxHandoff,
        cache_metrics: CacheMetrics,
    ) -> Self {
        AnalyticsService { store, cache, summary_ttl, outbox, cache_metrics }
    }

    pub fn store(&self) -> &dyn AnalyticsStore {
        self.store.as_ref()
    }

    /// Applies each event once, however often it arrives and in whatever order an order's
    /// events come; then refreshes the cached summary so that readers see the new figures at once.
    pub async fn apply(&self, batch: &[Incoming]) -> Result<Applied, StoreError> {
        let applied = self.store.apply(batch).await?;
        self.outbox.publish_committed(applied.emitted.iter().cloned());
        if applied.effects.iter().any(|effect| matches!(effect, Effect::Counted | Effect::Cancelled)) {
            self.cache_summary(&applied.summary).await;
        }
        Ok(applied)
    }

    /// The summary's JSON body, from the cache when it has it.
    pub async fn summary_json(&self) -> Result<Bytes, StoreError> {
        match self.cache.get(SUMMARY_KEY).await {
            Ok(Some(body)) => {
                self.cache_metrics.hit();
                return Ok(body);
            }
            Ok(None) => self.cache_metrics.miss(),
            Err(error) => {
                self.cache_metrics.error();
                tracing::debug!(event = "cache_failed", error = %error, "summary cache unavailable; reading the database");
            }
        }
        let summary = self.store.summary().await?;
        Ok(self.cache_summary(&summary).await)
    }

    /// Caches `summary` unless a newer one (of a later revision) is cached. Returns its JSON body.
    async fn cache_summary(&self, summary: &VersionedSummary) -> Bytes {
        let body = Bytes::from(serde_json::to_vec(&summary.summary).expect("a summary always serialises"));
        if let Err(error) =
            self.cache.put(SUMMARY_KEY, summary.revision, body.clone(), self.summary_ttl).await
        {
            self.cache_metrics.error();
            tracing::warn!(event = "cache_failed", error = %error, "could not refresh the cached summary");
        }
        body
    }

    pub async fn ping_cache(&self) -> Result<(), String> {
        self.cache.ping().await.map_err(|e| e.to_string())
    }
}

/// The `OrderProcessed` event announcing that `fact` has been counted. Call it inside the
/// delivery's span so that the event continues the order's trace.
pub fn processed_event(fact: &OrderFact) -> OutgoingMessage {
    let envelope = Envelope::order_processed(
        Uuid::now_v7(),
        Utc::now(),
        OrderProcessed {
            order_id: fact.order_id,
            processed_by: PROCESSED_BY.to_owned(),
            metrics_updated: true,
        },
    );
    OutgoingMessage::from_envelope(&envelope, routing_key::ORDER_PROCESSED)
}
