//! Remembers which notifications went out, so that a redelivered event does not notify twice.
//!
//! One entry per (channel, event id): a worker first *claims* it (`pending`, short TTL), sends,
//! then marks it `sent` (long TTL). A failed send deletes the claim so that a retry can try again.
//! A worker that dies mid-send leaves its claim behind until the TTL ends it; meanwhile the event
//! is retried later rather than sent twice.
//!
//! Without the store nothing is sent: a notification that cannot be deduplicated could go out
//! twice, so the delivery is retried until the store is back.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::redis;
use platform::redis::{RedisClient, RedisError};
use uuid::Uuid;

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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DedupeError {
    #[error("deduplication store unavailable: {0}")]
    Unavailable(String),
    #[error("deduplication store did not answer within {0:?}")]
    Timeout(Duration),
}

#[async_trait]
pub trait Dedupe: Send + Sync {
    async fn claim(&self, channel: &str, event_id: Uuid) -> Result<Claim, DedupeError>;
    async fn mark_sent(&self, channel: &str, event_id: Uuid) -> Result<(), DedupeError>;
    /// Gives a claim up after a failed send.
    async fn release(&self, channel: &str, event_id: Uuid) -> Result<(), DedupeError>;
    async fn ping(&self) -> Result<(), DedupeError>;
}

/// [`Dedupe`] on Redis: `<prefix>notified:<channel>:<event_id>` = `pending` | `sent`.
pub struct RedisDedupe {
    client: RedisClient,
    prefix: String,
    claim_ttl: Duration,
    sent_ttl: Duration,
}

impl RedisDedupe {
    pub fn new(client: RedisClient, prefix: &str, claim_ttl: Duration, sent_ttl: Duration) -> Self {
        RedisDedupe { client, prefix: prefix.to_owned(), claim_ttl, sent_ttl }
    }

    pub fn key(&self, channel: &str, event_id: Uuid) -> String {
        format!("{}notified:{channel}:{event_id}", self.prefix)
    }

    /// Runs `command`, bounded by the client's timeout.
    async fn query<T: redis::FromRedisValue>(&self, command: redis::Cmd) -> Result<T, DedupeError> {
        self.client.query(&command).await.map_err(|error| match error {
            RedisError::Unavailable(reason) => DedupeError::Unavailable(reason),
            RedisError::Timeout(after) => DedupeError::Timeout(after),
        })
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[async_trait]
impl Dedupe for RedisDedupe {
    async fn claim(&self, channel: &str, event_id: Uuid) -> Result<Claim, DedupeError> {
        let key = self.key(channel, event_id);
        let mut set = redis::cmd("SET");
        set.arg(&key).arg(PENDING).arg("NX").arg("PX").arg(millis(self.claim_ttl));
        let claimed: Option<String> = self.query(set).await?;
        if claimed.is_some() {
            return Ok(Claim::Acquired);
        }
        let mut get = redis::cmd("GET");
        get.arg(&key);
        let current: Option<String> = self.query(get).await?;
        // Gone in between means a claim just expired: someone may be sending, so try later.
        Ok(if current.as_deref() == Some(SENT) { Claim::AlreadySent } else { Claim::InProgress })
    }

    async fn mark_sent(&self, channel: &str, event_id: Uuid) -> Result<(), DedupeError> {
        let mut set = redis::cmd("SET");
        set.arg(self.key(channel, event_id)).arg(SENT).arg("PX").arg(millis(self.sent_ttl));
        self.query::<()>(set).await
    }

    async fn release(&self, channel: &str, event_id: Uuid) -> Result<(), DedupeError> {
        let mut del = redis::cmd("DEL");
        del.arg(self.key(channel, event_id));
        self.query::<()>(del).await
    }

    async fn ping(&self) -> Result<(), DedupeError> {
        self.query::<()>(redis::cmd("PING")).await
    }
}
