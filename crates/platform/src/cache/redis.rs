//! [`VersionedCache`] in Redis. Values are stored as `<version>|<body>`; a Lua script compares and
//! writes atomically.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_redis::redis;

use super::{CacheEntry, CacheError, VersionedCache};
use crate::{
    config::ConfigError,
    redis::{RedisClient, RedisError, RedisSettings},
};

/// `KEYS` the keys, `ARGV[1]` the TTL in ms, then a version and a body per key. One round trip
/// for a whole batch of entries.
const PUT_IF_NEWER: &str = r#"
local written = 0
for i, key in ipairs(KEYS) do
  local version = ARGV[2 * i]
  local current = redis.call('GET', key)
  local cached = current and tonumber(string.match(current, '^(%-?%d+)|'))
  if not (cached and cached >= tonumber(version)) then
    redis.call('SET', key, version .. '|' .. ARGV[2 * i + 1], 'PX', ARGV[1])
    written = written + 1
  end
end
return written
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
        CacheError::Unavailable(error)
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

    async fn put_many(&self, entries: Vec<CacheEntry>, ttl: Duration) -> Result<(), CacheError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut invocation = self.put_if_newer.prepare_invoke();
        invocation.arg(ttl.as_millis().max(1) as u64);
        for entry in &entries {
            invocation
                .key(format!("{}{}", self.prefix, entry.key))
                .arg(entry.version)
                .arg(entry.body.as_ref());
        }
        self.client.run(async |c| invocation.invoke_async::<i64>(c).await).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), CacheError> {
        self.client.query::<String>(&redis::cmd("PING")).await?;
        Ok(())
    }
}
