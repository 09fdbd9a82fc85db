//! Where the aggregates live.

pub mod mysql;
pub mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use messaging::OutgoingMessage;

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
    /// Unreachable, overloaded, deadlock, or another consumer counted one of these events at the
    /// same moment: trying again later will work.
    #[error("analytics database unavailable: {0}")]
    Unavailable(String),
    #[error("analytics database error: {0}")]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if is_transient(&error) {
            StoreError::Unavailable(error.to_string())
        } else {
            StoreError::Database(error)
        }
    }
}

/// Transient database errors, and a unique violation: another consumer recorded one of the
/// batch's events at the same moment, so the batch is retried and then seen as a duplicate.
fn is_transient(error: &sqlx::Error) -> bool {
    platform::database::is_transient(error)
        || error.as_database_error().is_some_and(|db| db.is_unique_violation())
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
