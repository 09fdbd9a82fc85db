//! [`VersionedCache`] in Redis. Values are stored as `<version>|<body>`; a Lua script compares and
//! writes atomically.

use std::{sync::Mutex, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_redis::{Pool, redis, redis::aio::MultiplexedConnection};

use super::{CacheError, VersionedCache};
use crate::{config::ConfigError, redis::RedisSettings};

/// `KEYS[1]` key, `ARGV[1]` version, `ARGV[2]` body, `ARGV[3]` TTL in ms.
const PUT_IF_NEWER: &str = r#"
local current = redis.call('GET', KEYS[1])
if current then
  local version = tonumber(string.match(current, '^(%-?%d+)|'))
  if version and version >= tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 'PX', ARGV[3])
return 1
"#;

pub struct RedisCache {
    pool: Pool,
    /// One multiplexed connection shared by all requests: concurrent commands are pipelined on
    /// it, and no per-request pool checkout (which costs a PING round trip) is paid. Cleared on
    /// error, so the next call takes a fresh, checked connection from the pool.
    shared: Mutex<Option<MultiplexedConnection>>,
    prefix: String,
    timeout: Duration,
    put_if_newer: redis::Script,
}

impl RedisCache {
    pub fn new(settings: &RedisSettings) -> Result<Self, ConfigError> {
        Ok(RedisCache {
            pool: settings.pool()?,
            shared: Mutex::new(None),
            prefix: settings.key_prefix.clone(),
            timeout: settings.timeout(),
            put_if_newer: redis::Script::new(PUT_IF_NEWER),
        })
    }

    async fn connection(&self) -> Result<MultiplexedConnection, CacheError> {
        if let Some(connection) = self.shared.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(connection);
        }
        let pooled = self.pool.get().await.map_err(|e| CacheError::Unavailable(e.to_string()))?;
        let connection = MultiplexedConnection::clone(&pooled);
        *self.shared.lock().unwrap_or_else(|e| e.into_inner()) = Some(connection.clone());
        Ok(connection)
    }

    /// Runs `operation` within the time budget.
    async fn with_connection<T, F>(&self, operation: F) -> Result<T, CacheError>
    where
        F: AsyncFnOnce(&mut MultiplexedConnection) -> redis::RedisResult<T>,
    {
        let work = async {
            let mut connection = self.connection().await?;
            operation(&mut connection).await.map_err(|e| CacheError::Unavailable(e.to_string()))
        };
        let result = match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(CacheError::Timeout(self.timeout)),
        };
        if result.is_err() {
            *self.shared.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        result
    }
}

#[async_trait]
impl VersionedCache for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        let key = format!("{}{key}", self.prefix);
        let value: Option<Vec<u8>> =
            self.with_connection(async |c| redis::cmd("GET").arg(&key).query_async(c).await).await?;
        Ok(value.and_then(|raw| {
            let separator = raw.iter().position(|&b| b == b'|')?;
            Some(Bytes::from(raw).slice(separator + 1..))
        }))
    }

    async fn put(&self, key: &str, version: i64, body: Bytes, ttl: Duration) -> Result<(), CacheError> {
        let key = format!("{}{key}", self.prefix);
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let script = &self.put_if_newer;
        self.with_connection(async |c| {
            script.key(&key).arg(version).arg(body.as_ref()).arg(ttl_ms).invoke_async::<i64>(c).await
        })
        .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), CacheError> {
        self.with_connection(async |c| redis::cmd("PING").query_async::<String>(c).await).await?;
        Ok(())
    }
}
