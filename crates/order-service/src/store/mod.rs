//! Where orders live. The write that accepts an order also records its `OrderCreated` event
//! (transactional outbox), so the two can never disagree.

pub mod mysql;
pub mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use messaging::OutgoingMessage;
use uuid::Uuid;

use crate::domain::Order;

/// Everything one accepted order writes.
#[derive(Debug, Clone)]
pub struct CreateCommand {
    pub order: Order,
    /// The `OrderCreated` event, stored in the outbox in the same transaction.
    pub event: OutgoingMessage,
    pub idempotency: Option<IdempotencyClaim>,
}

/// An `Idempotency-Key` and the fingerprint of the request that carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyClaim {
    pub key: String,
    pub fingerprint: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The order was stored now.
    New(Order),
    /// The idempotency key had been used for the same request: this is the order it created.
    Existing(Order),
}

/// A page of orders, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub customer_id: Option<String>,
    /// Only orders older than this one (keyset pagination).
    pub before: Option<Uuid>,
    pub limit: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is overloaded; the caller may retry.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("the idempotency key was used for a different request")]
    IdempotencyConflict,
    #[error("stored order is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if is_unavailable(&error) {
            StoreError::Unavailable(error.to_string())
        } else {
            StoreError::Database(error)
        }
    }
}

/// Errors that say "the database is not there right now" rather than "this request is wrong".
fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            platform::sqlite::is_unavailable(db.as_ref())
                || db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>().is_some_and(|e| {
                    // Server shutting down, too many connections, lock wait timeout, deadlock,
                    // read-only (during a failover), query interrupted.
                    matches!(e.number(), 1053 | 1040 | 1205 | 1213 | 1290 | 1317 | 1927)
                })
        }
        _ => false,
    }
}

#[async_trait]
pub trait OrderStore: Send + Sync {
    /// Stores the order and its event atomically, honouring the idempotency key.
    async fn create(&self, command: CreateCommand) -> Result<Created, StoreError>;
    async fn get(&self, id: Uuid) -> Result<Option<Order>, StoreError>;
    async fn list(&self, query: &ListQuery) -> Result<Vec<Order>, StoreError>;
    /// Moves the orders among `ids` that are still `created` to `processed`, in one transaction;
    /// returns those it changed, as they are now. Orders already processed, or unknown, are left
    /// alone, so a redelivered event changes nothing.
    async fn mark_processed(&self, ids: &[Uuid], at: DateTime<Utc>) -> Result<Vec<Order>, StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
}
