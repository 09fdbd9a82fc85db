//! Cache-aside for single orders. The cache holds each order's JSON body exactly as the API
//! answers it, tagged with a version, so that a hit is answered without touching the database or
//! re-encoding, and a slow reader can never overwrite a newer version with an older one.

pub mod redis;

use async_trait::async_trait;
use bytes::Bytes;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache unavailable: {0}")]
    Unavailable(String),
    #[error("cache timed out")]
    Timeout,
}

#[async_trait]
pub trait OrderCache: Send + Sync {
    /// The cached JSON body of the order, if any.
    async fn get(&self, id: Uuid) -> Result<Option<Bytes>, CacheError>;
    /// Caches `body` as version `version` of the order, unless a newer version is cached.
    async fn put(&self, id: Uuid, version: i64, body: Bytes) -> Result<(), CacheError>;
    async fn ping(&self) -> Result<(), CacheError>;
}
