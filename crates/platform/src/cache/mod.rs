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
    Unavailable(String),
    #[error("cache did not answer within {0:?}")]
    Timeout(Duration),
}

#[async_trait]
pub trait VersionedCache: Send + Sync {
    /// The cached body under `key`, if any.
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError>;
    /// Caches `body` as version `version` under `key` for `ttl`, unless a newer version is cached.
    async fn put(&self, key: &str, version: i64, body: Bytes, ttl: Duration) -> Result<(), CacheError>;
    async fn ping(&self) -> Result<(), CacheError>;
}
