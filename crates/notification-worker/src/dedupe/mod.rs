//! Remembers which notifications went out, so that a redelivered event does not notify twice.
//!
//! One entry per (channel, event id): a worker first *claims* it (`pending`, short TTL), sends,
//! then marks it `sent` (long TTL). A failed send deletes the claim so that a retry can try again.
//! A worker that dies mid-send leaves its claim behind until the TTL ends it; meanwhile the event
//! is retried later rather than sent twice.
//!
//! Without the store nothing is sent: a notification that cannot be deduplicated could go out
//! twice, so the worker waits until the store is back.
//!
//! "Once" lasts only as long as the store keeps its keys. A Redis that evicts keys under memory
//! pressure (any `maxmemory-policy` but `noeviction`) would forget that a notification went out,
//! so the Redis store refuses to claim anything while its server is configured that way; and a
//! Redis that keeps nothing on disk forgets everything when it restarts, which is logged.

pub mod redis;
pub mod sqlite;

use std::time::Duration;

use async_trait::async_trait;
use platform::error::Cause;
use uuid::Uuid;

pub use redis::RedisDedupe;
pub use sqlite::SqliteDedupe;

/// Claim states, in both stores.
const PENDING: &str = "pending";
const SENT: &str = "sent";

/// The outcome of claiming one (channel, event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Ours: send it, then [`Dedupe::mark_sent`] or [`Dedupe::release`].
    Acquired,
    /// It went out before.
    AlreadySent,
    /// Another worker is sending it right now, or died doing so and its claim has not expired.
    InProgress,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum DedupeError {
    #[error("deduplication store unavailable: {0}")]
    Unavailable(#[source] Cause),
    #[error("deduplication store did not answer within {0:?}")]
    Timeout(Duration),
    /// The store answers but would not keep what it is told.
    #[error("deduplication store unsafe: {0}")]
    Unsafe(String),
}

/// The store works on the events of a batch at once: one round trip per step, not per event.
#[async_trait]
pub trait Dedupe: Send + Sync {
    /// Claims (channel, event) for each of `event_ids`: one answer per id, in their order.
    async fn claim(&self, channel: &str, event_ids: &[Uuid]) -> Result<Vec<Claim>, DedupeError>;
    async fn mark_sent(&self, channel: &str, event_ids: &[Uuid]) -> Result<(), DedupeError>;
    /// Gives claims up after failed sends.
    async fn release(&self, channel: &str, event_ids: &[Uuid]) -> Result<(), DedupeError>;
    async fn ping(&self) -> Result<(), DedupeError>;
}
