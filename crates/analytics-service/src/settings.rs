//! analytics-service configuration (see `platform::config` for where values come from).

use std::time::Duration;

use contracts::Queues;
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
    pub analytics: AnalyticsSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AnalyticsSettings {
    /// Longest time a cached summary can outlive a failed cache refresh.
    pub summary_cache_ttl_seconds: u64,
    /// How long a counted event's id is remembered (30 days): a second copy of the event arriving
    /// later would be counted again. Copies come from a redelivery after a crash or a lost
    /// connection (seconds), a relay that published but died before removing its row (the outbox
    /// lease, 30 s), the retry queues (their delays, minutes), a pause for an outage (its length),
    /// and a replay from the dead-letter queue (whenever an operator replays).
    pub inbox_retention_minutes: u64,
}

impl Default for AnalyticsSettings {
    fn default() -> Self {
        AnalyticsSettings { summary_cache_ttl_seconds: 10, inbox_retention_minutes: 30 * 24 * 60 }
    }
}

impl AnalyticsSettings {
    pub fn summary_cache_ttl(&self) -> Duration {
        Duration::from_secs(self.summary_cache_ttl_seconds)
    }

    pub fn inbox_retention(&self) -> Duration {
        Duration::from_secs(self.inbox_retention_minutes.saturating_mul(60))
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            http: HttpSettings::with_port(8081),
            auth: AuthSettings::default(),
            rate_limit: RateLimitSettings::default(),
            shutdown: ShutdownSettings::default(),
            telemetry: TelemetrySettings::default(),
            database: DatabaseSettings::named("analytics_db", "root"),
            redis: RedisSettings::default(),
            rabbitmq: RabbitSettings::default(),
            outbox: RelaySettings::default(),
            queues: Queues::default(),
            analytics: AnalyticsSettings::default(),
        }
    }
}

impl Settings {
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
        platform::config::require_positive(&[(
            "analytics.summary_cache_ttl_seconds",
            self.analytics.summary_cache_ttl_seconds,
        )])
    }
}
