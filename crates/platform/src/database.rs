//! MySQL connection settings and pool.

use std::{str::FromStr, time::Duration};

use serde::{Deserialize, Serialize};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};

use crate::config::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DatabaseSettings {
    /// `mysql://user:password@host:port/database`; when set, it wins over the separate fields.
    pub url: Option<String>,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub name: String,
    pub max_connections: u32,
    /// How long a request waits for a free connection before failing.
    pub acquire_timeout_ms: u64,
}

impl DatabaseSettings {
    pub fn named(name: &str, user: &str) -> Self {
        DatabaseSettings { name: name.into(), user: user.into(), ..Default::default() }
    }

    pub fn connect_options(&self) -> Result<MySqlConnectOptions, ConfigError> {
        match self.url.as_deref().filter(|u| !u.is_empty()) {
            Some(url) => MySqlConnectOptions::from_str(url)
                .map_err(|e| ConfigError::invalid("database.url", format!("not a MySQL URL: {e}"))),
            None => {
                if self.host.is_empty() {
                    return Err(ConfigError::invalid("database.host", "must not be empty"));
                }
                if self.name.is_empty() {
                    return Err(ConfigError::invalid("database.name", "must not be empty"));
                }
                Ok(MySqlConnectOptions::new()
                    .host(&self.host)
                    .port(self.port)
                    .username(&self.user)
                    .password(&self.password)
                    .database(&self.name))
            }
        }
    }

    /// The database name, from the URL or the separate field.
    pub fn database_name(&self) -> Result<String, ConfigError> {
        Ok(self.connect_options()?.get_database().unwrap_or_default().to_owned())
    }

    /// A pool that connects on first use, so that a database that is down at start is retried.
    pub fn pool(&self) -> Result<MySqlPool, ConfigError> {
        if self.max_connections == 0 {
            return Err(ConfigError::invalid("database.max_connections", "must be greater than 0"));
        }
        Ok(MySqlPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(Duration::from_millis(self.acquire_timeout_ms))
            .connect_lazy_with(self.connect_options()?))
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            url: None,
            host: "localhost".into(),
            port: 3306,
            user: "root".into(),
            password: String::new(),
            name: String::new(),
            max_connections: 16,
            acquire_timeout_ms: 3_000,
        }
    }
}
