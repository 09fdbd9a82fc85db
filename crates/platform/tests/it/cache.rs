//! The versioned cache in Redis (the real server) and in memory: a batch of writes keeps, key by
//! key, the newest version.

use std::time::Duration;

use bytes::Bytes;
use platform::{
    cache::{CacheEntry, VersionedCache, memory::MemoryCache, redis::RedisCache},
    redis::RedisSettings,
};

const TTL: Duration = Duration::from_secs(60);

fn entry(key: &str, version: i64, body: &'static str) -> CacheEntry {
    CacheEntry { key: key.to_owned(), version, body: Bytes::from_static(body.as_bytes()) }
}

async fn a_batch_keeps_the_newest_version_of_each_key(cache: &dyn VersionedCache) {
    cache.put("older", 5, Bytes::from_static(b"five"), TTL).await.unwrap();
    cache.put("newer", 5, Bytes::from_static(b"five"), TTL).await.unwrap();
    cache
        .put_many(vec![entry("older", 4, "four"), entry("newer", 6, "six"), entry("fresh", 1, "one")], TTL)
        .await
        .unwrap();
    assert_eq!(cache.get("older").await.unwrap(), Some(Bytes::from_static(b"five")));
    assert_eq!(cache.get("newer").await.unwrap(), Some(Bytes::from_static(b"six")));
    assert_eq!(cache.get("fresh").await.unwrap(), Some(Bytes::from_static(b"one")));
    assert_eq!(cache.get("absent").await.unwrap(), None);
    cache.put_many(Vec::new(), TTL).await.unwrap();
}

#[tokio::test]
async fn redis_keeps_the_newest_version_of_each_key_of_a_batch() {
    let settings = RedisSettings {
        url: Some(std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())),
        // A prefix of the test's own; the entries expire a minute later whatever happens.
        key_prefix: format!(
            "oftest-cache-{}-{}:",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        ),
        timeout_ms: 2_000,
        ..Default::default()
    };
    a_batch_keeps_the_newest_version_of_each_key(&RedisCache::new(&settings).unwrap()).await;
}

#[tokio::test]
async fn memory_keeps_the_newest_version_of_each_key_of_a_batch() {
    a_batch_keeps_the_newest_version_of_each_key(&MemoryCache::default()).await;
}
