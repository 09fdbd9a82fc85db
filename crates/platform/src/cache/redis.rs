//! [`VersionedCache`] in Redis. Values are stored as `<version>|<body>`; a Lua script compares and
//! writes atomically.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_redis::redis;

use super::{CacheError, VersionedCache};
use crate::{
    config::ConfigError,
    redis::{RedisClient, RedisError, RedisSettings},
};

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
    client: RedisClient,
    prefix: String,
    put_if_newer: redis::Script,
}

impl RedisCache {
    pub fn new(settings: &RedisSettings) -> Result<Self, ConfigError> {
        Ok(RedisCache {
            client: RedisClient::new(settings)?,
            prefix: settings.key_prefix.clone(),
            put_if_newer: redis::Script::new(PUT_IF_NEWER),
        })
    }
}

impl From<RedisError> for CacheError {
    fn from(error: RedisError) -> Self {
        match error {
            RedisError::Unavailable(reason) | RedisError::Refused(reason) => CacheError::Unavailable(reason),
            RedisError::Timeout(after) => CacheError::Timeout(after),
        }
    }
}

#[async_trait]
impl VersionedCache for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        let key = format!("{}{key}", self.prefix);
        let value: Option<Vec<u8>> = self.client.query(redis::cmd("GET").arg(&key)).await?;
        Ok(value.and_then(|raw| {
            let separator = raw.iter().position(|&b| b == b'|')?;
            Some(Bytes::from(raw).slice(separator + 1..))
        }))
    }

    async fn put(&self, key: &str, version: i64, body: Bytes, ttl: Duration) -> Result<(), CacheError> {
        let key = format!("{}{key}", self.prefix);
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let script = &self.put_if_newer;
        self.client
            .run(async |c| {
                script.key(&key).arg(version).arg(body.as_ref()).arg(ttl_ms).invoke_async::<i64>(c).await
            })
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), CacheError> {
        self.client.query::<String>(&redis::cmd("PING")).await?;
        Ok(())
    }
}
