//! Redis connection settings and pool.

use std::time::Duration;

use deadpool_redis::{
    ConnectionAddr, ConnectionInfo, Pool, PoolConfig, ProtocolVersion, RedisConnectionInfo, Runtime, Timeouts,
};
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RedisSettings {
    /// `redis://[:password@]host:port[/db]`; when set, it wins over the separate fields.
    pub url: Option<String>,
    pub host: String,
    pub port: u16,
    pub password: Option<String>,
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
                        password: self.password.clone().filter(|p| !p.is_empty()),
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
