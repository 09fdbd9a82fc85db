//! order-service configuration (see `platform::config` for where values come from).

use std::time::Duration;

use contracts::Queues;
use messaging::{outbox::RelaySettings, rabbitmq::RabbitSettings};
use platform::{
    ConfigError, HttpSettings, ShutdownSettings, TelemetrySettings, database::DatabaseSettings,
    redis::RedisSettings,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub http: HttpSettings,
    pub shutdown: ShutdownSettings,
    pub telemetry: TelemetrySettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub rabbitmq: RabbitSettings,
    pub outbox: RelaySettings,
    /// The system's consumer queues (every service declares them all).
    pub queues: Queues,
    pub orders: OrderSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct OrderSettings {
    /// How long a cached order lives in Redis.
    pub cache_ttl_seconds: u64,
    /// Writer tasks, each committing a group of orders per transaction.
    pub writers: usize,
    /// Most orders committed in one transaction.
    pub write_batch_size: usize,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_key_retention_hours: u64,
}

impl Default for OrderSettings {
    fn default() -> Self {
        OrderSettings {
            cache_ttl_seconds: 300,
            writers: 4,
            write_batch_size: 128,
            idempotency_key_retention_hours: 24,
        }
    }
}

impl OrderSettings {
    pub fn cache_ttl(&self) -> Duration {
        Duration::from_secs(self.cache_ttl_seconds)
    }

    pub fn idempotency_key_retention(&self) -> Duration {
        Duration::from_secs(self.idempotency_key_retention_hours * 3600)
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            http: HttpSettings::with_port(8080),
            shutdown: ShutdownSettings::default(),
            telemetry: TelemetrySettings::default(),
            database: DatabaseSettings::named("order_db", "root"),
            redis: RedisSettings::default(),
            rabbitmq: RabbitSettings::default(),
            outbox: RelaySettings::default(),
            queues: Queues::default(),
            orders: OrderSettings::default(),
        }
    }
}

impl Settings {
    /// Reads the settings from the environment (and the file `ORDERFLOW_CONFIG` names), checked.
    pub fn load() -> Result<Settings, ConfigError> {
        let settings: Settings = platform::config::load(&Settings::default(), &[])?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.http.validate()?;
        self.database.connect_options()?;
        self.rabbitmq.validate()?;
        self.outbox.validate()?;
        messaging::validate_queues(&self.queues)?;
        if self.orders.cache_ttl_seconds == 0 {
            return Err(ConfigError::invalid("orders.cache_ttl_seconds", "must be greater than 0"));
        }
        if self.orders.writers == 0 {
            return Err(ConfigError::invalid("orders.writers", "must be greater than 0"));
        }
        if self.orders.write_batch_size == 0 {
            return Err(ConfigError::invalid("orders.write_batch_size", "must be greater than 0"));
        }
        Ok(())
    }
}
