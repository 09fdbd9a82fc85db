//! Redis connection settings and pool.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use deadpool_redis::{
    ConnectionAddr, ConnectionInfo, Pool, PoolConfig, ProtocolVersion, RedisConnectionInfo, Runtime,
    Timeouts,
    redis::{Cmd, FromRedisValue, RedisResult, aio::MultiplexedConnection},
};
use serde::{Deserialize, Serialize};

use crate::{config::ConfigError, error::Cause, settings::Secret};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RedisSettings {
    /// `redis://[:password@]host:port[/db]`; when set, it wins over the separate fields.
    pub url: Option<String>,
    pub host: String,
    pub port: u16,
    pub password: Option<Secret>,
    pub db: i64,
    /// Prepended to every key, so that several systems (or test runs) can share one server.
    pub key_prefix: String,
    /// Upper bound on any single Redis operation; past it the caller carries on without Redis.
    pub timeout_ms: u64,
    pub pool_size: usize,
}

impl RedisSettings {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn pool(&self) -> Result<Pool, ConfigError> {
        let mut config = match self.url.as_deref().filter(|u| !u.is_empty()) {
            Some(url) => deadpool_redis::Config::from_url(url),
            None => deadpool_redis::Config {
                url: None,
                connection: Some(ConnectionInfo {
                    addr: ConnectionAddr::Tcp(self.host.clone(), self.port),
                    redis: RedisConnectionInfo {
                        db: self.db,
                        username: None,
                        password: self
                            .password
                            .as_ref()
                            .filter(|p| !p.is_empty())
                            .map(|p| p.expose().to_owned()),
                        protocol: ProtocolVersion::RESP2,
                    },
                }),
                pool: None,
            },
        };
        let timeout = Some(self.timeout());
        config.pool = Some(PoolConfig {
            max_size: self.pool_size.max(1),
            timeouts: Timeouts { wait: timeout, create: timeout, recycle: timeout },
            ..PoolConfig::default()
        });
        config
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| ConfigError::invalid(if self.url.is_some() { "redis.url" } else { "redis.host" }, e))
    }
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            url: None,
            host: "localhost".into(),
            port: 6379,
            password: None,
            db: 0,
            key_prefix: "orderflow:".into(),
            timeout_ms: 250,
            pool_size: 16,
        }
    }
}

/// Why a Redis command did not complete.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RedisError {
    #[error("redis unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// Redis answered, with an error (an unknown or forbidden command, a wrong type).
    #[error("redis refused the command: {0}")]
    Refused(#[source] Cause),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}

/// A Redis client for request paths. All callers share one multiplexed connection, so concurrent
/// commands are pipelined on it and no pool checkout (which costs a `PING` round trip) is paid
/// per command; after an error the next command takes a fresh, checked connection from the pool.
/// Every command is bounded by the configured timeout.
#[derive(Clone)]
pub struct RedisClient {
    pool: Pool,
    shared: Arc<Mutex<Option<MultiplexedConnection>>>,
    timeout: Duration,
}

impl RedisClient {
    pub fn new(settings: &RedisSettings) -> Result<Self, ConfigError> {
        Ok(RedisClient { pool: settings.pool()?, shared: Arc::default(), timeout: settings.timeout() })
    }

    async fn connection(&self) -> Result<MultiplexedConnection, RedisError> {
        if let Some(connection) = self.shared.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(connection);
        }
        let pooled = self.pool.get().await.map_err(|e| RedisError::Unavailable(Arc::new(e)))?;
        let connection = MultiplexedConnection::clone(&pooled);
        *self.shared.lock().unwrap_or_else(|e| e.into_inner()) = Some(connection.clone());
        Ok(connection)
    }

    /// Runs `operation` on the shared connection within the time budget.
    pub async fn run<T, F>(&self, operation: F) -> Result<T, RedisError>
    where
        F: AsyncFnOnce(&mut MultiplexedConnection) -> RedisResult<T>,
    {
        let work = async {
            let mut connection = self.connection().await?;
            operation(&mut connection).await.map_err(|error| {
                if error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal() {
                    RedisError::Unavailable(Arc::new(error))
                } else {
                    RedisError::Refused(Arc::new(error))
                }
            })
        };
        let result = match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(RedisError::Timeout(self.timeout)),
        };
        if result.is_err() {
            *self.shared.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        result
    }

    /// Runs one command.
    pub async fn query<T: FromRedisValue>(&self, command: &Cmd) -> Result<T, RedisError> {
        self.run(async |connection| command.query_async(connection).await).await
    }
}
