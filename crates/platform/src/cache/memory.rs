//! [`VersionedCache`] in process memory, for the embedded mode: entries expire after their own
//! TTL, and the whole cache is bounded in bytes (least recently used entries go first).

use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use moka::{Expiry, future::Cache, ops::compute::Op};

use super::{CacheEntry, CacheError, VersionedCache};

/// Bound used by [`MemoryCache::default`].
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Clone)]
struct Entry {
    version: i64,
    body: Bytes,
    ttl: Duration,
}

/// Each entry lives for the TTL it was written with.
struct EntryTtl;

impl Expiry<String, Entry> for EntryTtl {
    fn expire_after_create(&self, _key: &String, entry: &Entry, _created_at: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        entry: &Entry,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

pub struct MemoryCache {
    entries: Cache<String, Entry>,
}

impl MemoryCache {
    /// A cache holding at most about `max_bytes` of keys and bodies.
    pub fn new(max_bytes: u64) -> Self {
        let entries = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, entry: &Entry| {
                u32::try_from(key.len() + entry.body.len()).unwrap_or(u32::MAX)
            })
            .expire_after(EntryTtl)
            .build();
        MemoryCache { entries }
    }
}

impl Default for MemoryCache {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_BYTES)
    }
}

#[async_trait]
impl VersionedCache for MemoryCache {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        Ok(self.entries.get(key).await.map(|entry| entry.body))
    }

    async fn put_many(&self, entries: Vec<CacheEntry>, ttl: Duration) -> Result<(), CacheError> {
        let ttl = ttl.max(Duration::from_millis(1));
        for CacheEntry { key, version, body } in entries {
            // Compare and write under the key's lock: a concurrent older write cannot slip in between.
            self.entries
                .entry(key)
                .and_compute_with(|current| async move {
                    match current {
                        Some(current) if current.value().version >= version => Op::Nop,
                        _ => Op::Put(Entry { version, body, ttl }),
                    }
                })
                .await;
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), CacheError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn keeps_the_newest_version() {
        let cache = MemoryCache::default();
        assert_eq!(cache.get("k").await.unwrap(), None);
        cache.put("k", 2, Bytes::from_static(b"two"), TTL).await.unwrap();
        cache.put("k", 1, Bytes::from_static(b"one"), TTL).await.unwrap();
        assert_eq!(cache.get("k").await.unwrap(), Some(Bytes::from_static(b"two")));
        cache.put("k", 2, Bytes::from_static(b"again"), TTL).await.unwrap();
        assert_eq!(cache.get("k").await.unwrap(), Some(Bytes::from_static(b"two")));
        cache.put("k", 3, Bytes::from_static(b"three"), TTL).await.unwrap();
        assert_eq!(cache.get("k").await.unwrap(), Some(Bytes::from_static(b"three")));
        cache.ping().await.unwrap();
    }

    #[tokio::test]
    async fn concurrent_writers_leave_the_newest_version() {
        let cache = std::sync::Arc::new(MemoryCache::default());
        let writers = (0..50i64).map(|version| {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache.put("k", version, Bytes::from(version.to_string()), TTL).await.unwrap();
            })
        });
        futures::future::join_all(writers).await;
        assert_eq!(cache.get("k").await.unwrap(), Some(Bytes::from_static(b"49")));
    }

    #[tokio::test]
    async fn entries_expire_after_their_ttl() {
        let cache = MemoryCache::default();
        cache.put("short", 1, Bytes::from_static(b"x"), Duration::from_millis(50)).await.unwrap();
        cache.put("long", 1, Bytes::from_static(b"y"), TTL).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(cache.get("short").await.unwrap(), None);
        assert_eq!(cache.get("long").await.unwrap(), Some(Bytes::from_static(b"y")));
        // An expired entry no longer blocks an older version.
        cache.put("short", 0, Bytes::from_static(b"z"), TTL).await.unwrap();
        assert_eq!(cache.get("short").await.unwrap(), Some(Bytes::from_static(b"z")));
    }
}
