//! Where orders live. The write that accepts an order also records its `OrderCreated` event
//! (transactional outbox), so the two can never disagree.

pub mod sql;
pub mod sqlite;
pub mod writer;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use messaging::OutgoingMessage;
use platform::database::Failure;
use uuid::Uuid;

use contracts::OrderStatus;

use crate::domain::Order;

/// Everything one accepted order writes.
#[derive(Debug, Clone)]
pub struct CreateCommand {
    pub order: Order,
    /// The `OrderCreated` event, stored in the outbox in the same transaction.
    pub event: OutgoingMessage,
    pub idempotency: Option<IdempotencyClaim>,
    /// The write begins before this or never.
    pub deadline: tokio::time::Instant,
    pub gate: writer::WriteGate,
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

/// A cancellation to store, with its `OrderCancelled` event.
#[derive(Debug, Clone)]
pub struct CancelCommand {
    pub order_id: Uuid,
    pub at: DateTime<Utc>,
    /// Stored in the outbox in the same transaction, if the order is cancelled now.
    pub event: OutgoingMessage,
    pub idempotency: Option<IdempotencyClaim>,
}

/// What a cancellation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancelled {
    /// The order is cancelled now.
    Now(Order),
    /// It had been cancelled before: unchanged.
    Before(Order),
    /// The idempotency key had been used for the same request: the order as it is.
    Replayed(Order),
}

/// A page of orders, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub customer_id: Option<String>,
    pub status: Option<OrderStatus>,
    /// Only orders older than this one (keyset pagination).
    pub before: Option<Uuid>,
    pub limit: u32,
}

/// Why a store operation failed. Database errors keep the driver's error as their source, shared
/// (`Arc`) so that every order of a failed write batch carries it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database serves nothing right now (unreachable, out of connections, failing over);
    /// the caller may retry once it is back.
    #[error("the order database is unavailable")]
    Unavailable(#[source] Arc<sqlx::Error>),
    /// A passing conflict (deadlock, lock timeout); the caller may retry.
    #[error("conflict in the order database")]
    Conflict(#[source] Arc<sqlx::Error>),
    /// The task storing the request stopped before answering (the process is shutting down).
    #[error("the order writer stopped")]
    WriterStopped,
    /// Too many writes are waiting; this one was not queued, nothing was written.
    #[error("too many writes are waiting")]
    Busy,
    /// Its deadline passed before the write began: nothing was written, nor will be.
    #[error("the write could not begin in time")]
    Expired,
    /// The write had begun when its deadline passed: it may or may not commit.
    #[error("the write was still in progress at its deadline")]
    OutcomeUnknown,
    /// The key was used before for a request with another body.
    #[error("the idempotency key was used for a different request")]
    IdempotencyKeyReused,
    /// A request with this key is still being stored by this process.
    #[error("a request with this idempotency key is still in progress")]
    IdempotencyKeyInProgress,
    /// The database refused the statement or returned what the store cannot read.
    #[error("the order database failed")]
    Database(#[source] Arc<sqlx::Error>),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        let failure = platform::database::failure(&error);
        let error = Arc::new(error);
        match failure {
            Failure::Outage => StoreError::Unavailable(error),
            Failure::Conflict => StoreError::Conflict(error),
            Failure::Rejected | Failure::Other => StoreError::Database(error),
        }
    }
}

#[async_trait]
pub trait OrderStore: Send + Sync {
    /// Stores the order and its event atomically, honouring the idempotency key.
    async fn create(&self, command: CreateCommand) -> Result<Created, StoreError>;
    async fn get(&self, id: Uuid) -> Result<Option<Order>, StoreError>;
    async fn list(&self, query: &ListQuery) -> Result<Vec<Order>, StoreError>;
    /// Cancels the order unless it is cancelled already, and records its event, atomically,
    /// honouring the idempotency key; `None` if there is no such order.
    async fn cancel(&self, command: CancelCommand) -> Result<Option<Cancelled>, StoreError>;
    /// Moves the orders among `ids` that are still `created` to `processed`, in one transaction;
    /// returns those it changed, as they are now. Orders already processed, or unknown, are left
    /// alone, so a redelivered event changes nothing.
    async fn mark_processed(&self, ids: &[Uuid], at: DateTime<Utc>) -> Result<Vec<Order>, StoreError>;
    /// Forgets up to `limit` idempotency keys used before `before`; returns how many.
    async fn purge_idempotency_keys(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
}
