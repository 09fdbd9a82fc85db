//! [`Dedupe`] on Redis, the production store.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use deadpool_redis::redis;
use platform::redis::{RedisClient, RedisError};
use uuid::Uuid;

use super::{Claim, Dedupe, DedupeError, PENDING, SENT};

/// How often the Redis store re-reads how its server keeps keys.
const STORE_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// [`Dedupe`] on Redis: `<prefix>notified:<channel>:<event_id>` = `pending` | `sent`.
pub struct RedisDedupe {
    client: RedisClient,
    prefix: String,
    claim_ttl: Duration,
    sent_ttl: Duration,
    store: Mutex<StoreCheck>,
}

/// What the last look at the server's configuration found.
#[derive(Default)]
struct StoreCheck {
    at: Option<Instant>,
    /// Why the store must not be used, if it must not.
    unsafe_because: Option<String>,
    /// Warnings already logged, so that each is logged once.
    warned: Vec<String>,
}

impl RedisDedupe {
    pub fn new(client: RedisClient, prefix: &str, claim_ttl: Duration, sent_ttl: Duration) -> Self {
        RedisDedupe { client, prefix: prefix.to_owned(), claim_ttl, sent_ttl, store: Mutex::default() }
    }

    fn lock_store(&self) -> std::sync::MutexGuard<'_, StoreCheck> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads how the server keeps keys: an evicting one makes the store unsafe (nothing is claimed
    /// until it is fixed); one without persistence, or whose configuration cannot be read (a
    /// managed Redis may forbid `CONFIG`), is logged once.
    pub async fn check_store(&self) -> Result<(), DedupeError> {
        let policy = self.config("maxmemory-policy").await?;
        let unsafe_because = match policy.as_deref() {
            Some("noeviction") => None,
            Some(policy) => Some(format!(
                "Redis evicts keys under memory pressure (maxmemory-policy {policy}), so it could forget \
                 that a notification was sent; configure maxmemory-policy noeviction"
            )),
            None => {
                self.warn_once(
                    "cannot read maxmemory-policy; make sure the deduplication Redis uses noeviction",
                );
                None
            }
        };
        let appendonly = self.config("appendonly").await?;
        let save = self.config("save").await?;
        if appendonly.as_deref() == Some("no") && save.as_deref().is_some_and(|save| save.trim().is_empty()) {
            self.warn_once(
                "the deduplication Redis keeps nothing on disk: after it restarts, a redelivered event \
                 is notified again; enable appendonly",
            );
        }
        let mut store = self.lock_store();
        if store.unsafe_because != unsafe_because {
            match &unsafe_because {
                Some(reason) => {
                    tracing::error!(event = "dedupe_store_unsafe", reason = %reason, "not notifying")
                }
                None if store.at.is_some() => {
                    tracing::info!(event = "dedupe_store_safe", "the deduplication store keeps its keys")
                }
                None => {}
            }
        }
        store.at = Some(Instant::now());
        store.unsafe_because = unsafe_because.clone();
        unsafe_because.map_or(Ok(()), |reason| Err(DedupeError::Unsafe(reason)))
    }

    /// Checks the store when it has not been checked for a while; whether it may be used.
    async fn ensure_safe(&self) -> Result<(), DedupeError> {
        let (due, unsafe_because) = {
            let store = self.lock_store();
            (store.at.is_none_or(|at| at.elapsed() >= STORE_CHECK_INTERVAL), store.unsafe_because.clone())
        };
        if due {
            return self.check_store().await;
        }
        unsafe_because.map_or(Ok(()), |reason| Err(DedupeError::Unsafe(reason)))
    }

    /// One configuration value; `None` when the server will not tell.
    async fn config(&self, name: &str) -> Result<Option<String>, DedupeError> {
        let mut get = redis::cmd("CONFIG");
        get.arg("GET").arg(name);
        match self.client.query::<Vec<String>>(&get).await {
            Ok(pair) => Ok(pair.into_iter().nth(1)),
            Err(RedisError::Refused(_)) => Ok(None),
            Err(RedisError::Unavailable(cause)) => Err(DedupeError::Unavailable(cause)),
            Err(RedisError::Timeout(after)) => Err(DedupeError::Timeout(after)),
        }
    }

    fn warn_once(&self, warning: &str) {
        let mut store = self.lock_store();
        if !store.warned.iter().any(|logged| logged == warning) {
            tracing::warn!(event = "dedupe_store_not_durable", "{warning}");
            store.warned.push(warning.to_owned());
        }
    }

    pub fn key(&self, channel: &str, event_id: Uuid) -> String {
        format!("{}notified:{channel}:{event_id}", self.prefix)
    }

    /// Runs `operation`, bounded by the client's timeout.
    async fn run<T, F>(&self, operation: F) -> Result<T, DedupeError>
    where
        F: AsyncFnOnce(&mut redis::aio::MultiplexedConnection) -> redis::RedisResult<T>,
    {
        self.client.run(operation).await.map_err(|error| match error {
            RedisError::Unavailable(cause) | RedisError::Refused(cause) => DedupeError::Unavailable(cause),
            RedisError::Timeout(after) => DedupeError::Timeout(after),
        })
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[async_trait]
impl Dedupe for RedisDedupe {
    /// One pipeline of `SET NX` for the batch; a second one reads the keys that were taken, which
    /// only duplicates and retries have.
    async fn claim(&self, channel: &str, event_ids: &[Uuid]) -> Result<Vec<Claim>, DedupeError> {
        self.ensure_safe().await?;
        if event_ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = event_ids.iter().map(|event_id| self.key(channel, *event_id)).collect();
        let mut claims = redis::pipe();
        for key in &keys {
            claims.cmd("SET").arg(key).arg(PENDING).arg("NX").arg("PX").arg(millis(self.claim_ttl));
        }
        let claimed: Vec<Option<String>> = self.run(async |c| claims.query_async(c).await).await?;
        let taken: Vec<&String> =
            keys.iter().zip(&claimed).filter(|(_, claimed)| claimed.is_none()).map(|(key, _)| key).collect();
        let mut current: Vec<Option<String>> = Vec::new();
        if !taken.is_empty() {
            let mut reads = redis::pipe();
            for key in &taken {
                reads.cmd("GET").arg(*key);
            }
            current = self.run(async |c| reads.query_async(c).await).await?;
        }
        let mut current = current.into_iter();
        Ok(claimed
            .iter()
            .map(|claimed| match claimed {
                Some(_) => Claim::Acquired,
                // Gone in between means a claim just expired: someone may be sending, so try later.
                None if current.next().flatten().as_deref() == Some(SENT) => Claim::AlreadySent,
                None => Claim::InProgress,
            })
            .collect())
    }

    async fn mark_sent(&self, channel: &str, event_ids: &[Uuid]) -> Result<(), DedupeError> {
        if event_ids.is_empty() {
            return Ok(());
        }
        let mut marks = redis::pipe();
        for event_id in event_ids {
            marks
                .cmd("SET")
                .arg(self.key(channel, *event_id))
                .arg(SENT)
                .arg("PX")
                .arg(millis(self.sent_ttl))
                .ignore();
        }
        self.run(async |c| marks.query_async::<()>(c).await).await
    }

    async fn release(&self, channel: &str, event_ids: &[Uuid]) -> Result<(), DedupeError> {
        if event_ids.is_empty() {
            return Ok(());
        }
        let mut del = redis::cmd("DEL");
        for event_id in event_ids {
            del.arg(self.key(channel, *event_id));
        }
        self.run(async |c| del.query_async::<()>(c).await).await
    }

    /// Reachable, and safe to use (the configuration is read again on every call).
    async fn ping(&self) -> Result<(), DedupeError> {
        self.check_store().await
    }
}
