//! Where the aggregates live.

pub mod mysql;
pub mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use messaging::{HandleError, OutgoingMessage};

use crate::domain::{Bucket, CustomerTotal, Interval, OrderFact, ProductTotal, Ranking, Summary};

/// A new order to count, and the `OrderProcessed` event to emit once it is counted.
#[derive(Debug, Clone)]
pub struct Counted {
    pub fact: OrderFact,
    pub processed_event: OutgoingMessage,
}

/// What applying a batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Per input, in order: true if counted now, false if it had been counted before.
    pub new: Vec<bool>,
    /// The summary as of the commit.
    pub summary: Summary,
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
        match self {
            StoreError::Unavailable(_) => HandleError::Unavailable(self.to_string()),
            StoreError::Conflict(_) | StoreError::Database(_) => HandleError::Transient(self.to_string()),
            StoreError::Rejected(_) => HandleError::Permanent(self.to_string()),
        }
    }
}

#[async_trait]
pub trait AnalyticsStore: Send + Sync {
    /// Counts the orders not counted before, records their event ids and their `OrderProcessed`
    /// events, all in one transaction.
    async fn apply(&self, batch: &[Counted]) -> Result<Applied, StoreError>;
    async fn summary(&self) -> Result<Summary, StoreError>;
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
