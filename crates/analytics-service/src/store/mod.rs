//! Where the aggregates live.

pub mod sql;
pub mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use messaging::{HandleError, OutgoingMessage};
use platform::ErrorChain;
use uuid::Uuid;

use crate::domain::{Bucket, CustomerTotal, Effect, Interval, OrderChange, ProductTotal, Ranking, Summary};

/// An event for the store to apply.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub event_id: Uuid,
    pub change: OrderChange,
    /// For a creation: the `OrderProcessed` event to emit if the order is counted now.
    pub processed_event: Option<OutgoingMessage>,
}

/// What applying a batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Per input, in order ([`Effect::NoChange`] for an event applied before).
    pub effects: Vec<Effect>,
    /// The `OrderProcessed` events written to the outbox, for the relay.
    pub emitted: Vec<OutgoingMessage>,
    /// The summary as of the commit.
    pub summary: VersionedSummary,
}

/// The summary with its revision, which grows with every change of the figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionedSummary {
    pub summary: Summary,
    pub revision: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database serves nothing right now (unreachable, out of connections, failing over):
    /// wait for it.
    #[error("analytics database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// A passing conflict (deadlock, lock timeout), or another consumer counted one of these
    /// events at the same moment: trying again will work (and then see a duplicate).
    #[error("analytics database conflict: {0}")]
    Conflict(#[source] sqlx::Error),
    /// The database refused the data (too long, out of range): it never will take it.
    #[error("analytics database refused the data: {0}")]
    Rejected(#[source] sqlx::Error),
    #[error("analytics database error: {0}")]
    Database(#[source] sqlx::Error),
    /// Another consumer changed an order of the batch between reading and writing it: trying
    /// again sees the change.
    #[error("another consumer changed an order of this batch at the same moment")]
    Raced,
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        use platform::database::Failure;
        if error.as_database_error().is_some_and(|db| db.is_unique_violation()) {
            return StoreError::Conflict(error);
        }
        match platform::database::failure(&error) {
            Failure::Outage => StoreError::Unavailable(error),
            Failure::Conflict => StoreError::Conflict(error),
            Failure::Rejected => StoreError::Rejected(error),
            Failure::Other => StoreError::Database(error),
        }
    }
}

impl StoreError {
    /// What a consumer does about it: wait out an outage, retry a conflict or an unknown error
    /// later, park what the database refuses.
    pub fn into_handle_error(self) -> HandleError {
        let reason = ErrorChain(&self).to_string();
        match self {
            StoreError::Unavailable(_) => HandleError::Unavailable(reason),
            StoreError::Conflict(_) | StoreError::Raced | StoreError::Database(_) => {
                HandleError::Transient(reason)
            }
            StoreError::Rejected(_) => HandleError::Permanent(reason),
        }
    }
}

#[async_trait]
pub trait AnalyticsStore: Send + Sync {
    /// Applies the events not applied before, records their ids and the `OrderProcessed` events
    /// of the orders counted, all in one transaction.
    async fn apply(&self, batch: &[Incoming]) -> Result<Applied, StoreError>;
    async fn summary(&self) -> Result<VersionedSummary, StoreError>;
    async fn top_products(&self, ranking: Ranking, limit: u32) -> Result<Vec<ProductTotal>, StoreError>;
    async fn customer(&self, customer_id: &str) -> Result<Option<CustomerTotal>, StoreError>;
    /// Buckets with at least one order in `[from, to)`, oldest first.
    async fn series(
        &self,
        interval: Interval,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Bucket>, StoreError>;
    /// Forgets up to `limit` inbox entries recorded before `before`; returns how many. An event
    /// redelivered after its entry is gone would be counted again, so keep them far longer than
    /// any redelivery or replay can take.
    async fn purge_inbox(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
}
