//! The order cache in Redis. Values are `<version>|<json>`; a Lua script writes only when the
//! cached version is older, atomically.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_redis::{Pool, redis};
use uuid::Uuid;

use super::{CacheError, OrderCache};

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

pub struct RedisOrderCache {
    pool: Pool,
    prefix: String,
    ttl: Duration,
    timeout: Duration,
    put_if_newer: redis::Script,
}

impl RedisOrderCache {
    pub fn new(pool: Pool, key_prefix: &str, ttl: Duration, timeout: Duration) -> Self {
        RedisOrderCache {
            pool,
            prefix: format!("{key_prefix}order:"),
            ttl,
            timeout,
            put_if_newer: redis::Script::new(PUT_IF_NEWER),
        }
    }

    fn key(&self, id: Uuid) -> String {
        format!("{}{}", self.prefix, id.hyphenated())
    }

    /// Runs `operation` with a pooled connection, within the time budget.
    async fn with_connection<T, F>(&self, operation: F) -> Result<T, CacheError>
    where
        F: AsyncFnOnce(&mut deadpool_redis::Connection) -> redis::RedisResult<T>,
    {
        let work = async {
            let mut connection = self.pool.get().await.map_err(|e| CacheError::Unavailable(e.to_string()))?;
            operation(&mut connection).await.map_err(|e| CacheError::Unavailable(e.to_string()))
        };
        tokio::time::timeout(self.timeout, work).await.map_err(|_| CacheError::Timeout)?
    }
}

#[async_trait]
impl OrderCache for RedisOrderCache {
    async fn get(&self, id: Uuid) -> Result<Option<Bytes>, CacheError> {
        let key = self.key(id);
        let value: Option<Vec<u8>> =
            self.with_connection(async |c| redis::cmd("GET").arg(&key).query_async(c).await).await?;
        Ok(value.and_then(|raw| {
            let separator = raw.iter().position(|&b| b == b'|')?;
            Some(Bytes::from(raw).slice(separator + 1..))
        }))
    }

    async fn put(&self, id: Uuid, version: i64, body: Bytes) -> Result<(), CacheError> {
        let key = self.key(id);
        let ttl_ms = self.ttl.as_millis() as u64;
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
