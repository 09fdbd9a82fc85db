//! Versioned cache-aside for JSON bodies, shared by the services.
//!
//! Each entry is a body tagged with a version that only grows (an order's update time, the number
//! of orders counted). A write never replaces a newer version, so a slow reader that loaded old
//! data cannot overwrite what a writer has just refreshed.

pub mod memory;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache unavailable: {0}")]
    Unavailable(#[source] crate::redis::RedisError),
}

/// A body to cache under `key`, tagged with its version.
#[derive(Debug, Clone)]
pub struct CacheEntry {
    pub key: String,
    pub version: i64,
    pub body: Bytes,
}

#[async_trait]
pub trait VersionedCache: Send + Sync {
    /// The cached body under `key`, if any.
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError>;
    /// Caches `body` as version `version` under `key` for `ttl`, unless a newer version is cached.
    async fn put(&self, key: &str, version: i64, body: Bytes, ttl: Duration) -> Result<(), CacheError> {
        self.put_many(vec![CacheEntry { key: key.to_owned(), version, body }], ttl).await
    }
    /// [`VersionedCache::put`] for several entries at once (one round trip to a remote cache).
    async fn put_many(&self, entries: Vec<CacheEntry>, ttl: Duration) -> Result<(), CacheError>;
    async fn ping(&self) -> Result<(), CacheError>;
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct CacheLabels {
    cache: &'static str,
    /// `hit`, `miss` or `error`.
    result: &'static str,
}

/// `cache_requests_total{cache, result}` of one named cache.
#[derive(Clone)]
pub struct CacheMetrics {
    cache: &'static str,
    requests:
        prometheus_client::metrics::family::Family<CacheLabels, prometheus_client::metrics::counter::Counter>,
}

impl CacheMetrics {
    /// Registers the family with its three series at zero.
    pub fn register(registry: &mut prometheus_client::registry::Registry, cache: &'static str) -> Self {
        let metrics = CacheMetrics { cache, requests: Default::default() };
        registry.register("cache_requests", "Cache lookups by result", metrics.requests.clone());
        for result in ["hit", "miss", "error"] {
            metrics.requests.get_or_create_owned(&CacheLabels { cache, result });
        }
        metrics
    }

    pub fn hit(&self) {
        self.count("hit");
    }

    pub fn miss(&self) {
        self.count("miss");
    }

    /// The cache failed or timed out; the caller carried on without it.
    pub fn error(&self) {
        self.count("error");
    }

    fn count(&self, result: &'static str) {
        self.requests.get_or_create(&CacheLabels { cache: self.cache, result }).inc();
    }
}
