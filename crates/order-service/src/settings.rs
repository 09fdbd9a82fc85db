//! order-service configuration (see `platform::config` for where values come from).

use std::time::Duration;

use contracts::Queues;

use crate::store::writer::WriterLimits;
use messaging::{outbox::RelaySettings, rabbitmq::RabbitSettings};
use platform::{
    ConfigError, HttpSettings, ShutdownSettings, TelemetrySettings,
    access::{AuthSettings, RateLimitSettings},
    database::DatabaseSettings,
    redis::RedisSettings,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub http: HttpSettings,
    /// API keys (off while none is set).
    pub auth: AuthSettings,
    /// Each client's token bucket.
    pub rate_limit: RateLimitSettings,
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
    /// Longest a `POST /orders` waits for its write to begin and commit. Not begun by then: it is
    /// dropped and answered 503 (nothing written). Begun and not finished: answered 504 (the
    /// outcome is unknown; retry with the same `Idempotency-Key`). Below `http.request_timeout_ms`.
    pub write_timeout_ms: u64,
    /// Writes that may wait for a writer; one more is answered 503 at once.
    pub max_waiting_writes: usize,
    /// How long an `Idempotency-Key` is remembered (24 hours): a client retrying with the same key
    /// later creates a new order. It covers any client's retries of one request.
    pub idempotency_key_retention_minutes: u64,
}

impl Default for OrderSettings {
    fn default() -> Self {
        OrderSettings {
            cache_ttl_seconds: 300,
            writers: 4,
            write_batch_size: 128,
            write_timeout_ms: 5_000,
            max_waiting_writes: 1_024,
            idempotency_key_retention_minutes: 24 * 60,
        }
    }
}

impl OrderSettings {
    /// The write timeout must end before the request's own, or the client would be told "the
    /// request took too long" about a write that may still happen.
    pub fn check_write_timeout(&self, http: &HttpSettings) -> Result<(), ConfigError> {
        if self.write_timeout_ms == 0 || self.write_timeout_ms >= http.request_timeout_ms {
            return Err(ConfigError::invalid(
                "orders.write_timeout_ms",
                format!(
                    "must be greater than 0 and less than http.request_timeout_ms ({})",
                    http.request_timeout_ms
                ),
            ));
        }
        Ok(())
    }

    pub fn cache_ttl(&self) -> Duration {
        Duration::from_secs(self.cache_ttl_seconds)
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }

    pub fn writer_limits(&self) -> WriterLimits {
        WriterLimits {
            writers: self.writers,
            batch_size: self.write_batch_size,
            queue_capacity: self.max_waiting_writes,
        }
    }

    pub fn idempotency_key_retention(&self) -> Duration {
        Duration::from_secs(self.idempotency_key_retention_minutes.saturating_mul(60))
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            http: HttpSettings::with_port(8080),
            auth: AuthSettings::default(),
            rate_limit: RateLimitSettings::default(),
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
        self.auth.validate()?;
        self.rate_limit.validate()?;
        self.database.connect_options()?;
        self.rabbitmq.validate()?;
        self.outbox.validate()?;
        messaging::validate_queues(&self.queues)?;
        platform::config::require_positive(&[
            ("orders.cache_ttl_seconds", self.orders.cache_ttl_seconds),
            ("orders.writers", self.orders.writers as u64),
            ("orders.write_batch_size", self.orders.write_batch_size as u64),
            ("orders.max_waiting_writes", self.orders.max_waiting_writes as u64),
        ])?;
        self.orders.check_write_timeout(&self.http)?;
        Ok(())
    }
}
