//! Configuration of the one-process system (see `platform::config` for where values come from:
//! defaults < the TOML file `ORDERFLOW_CONFIG` names < environment).
//!
//! | variable | setting | default |
//! |---|---|---|
//! | `ORDERFLOW_DATA_DIR` | `data_dir`: where the SQLite files live | `./data` |
//! | `ORDERFLOW_HOST` | `host`: interface every service listens on | `127.0.0.1` |
//! | `ORDERFLOW_ORDER_PORT` | `order_port` | `8080` |
//! | `ORDERFLOW_ANALYTICS_PORT` | `analytics_port` | `8081` |
//! | `ORDERFLOW_NOTIFICATION_PORT` | `notification_port` | `8082` |
//! | `ORDERFLOW_BUS__RETRY_DELAYS_MS` | `bus.*`: the in-process bus | `100,500,2000` |
//! | `ORDERFLOW_OUTBOX__…`, `ORDERFLOW_ORDERS__…`, `ORDERFLOW_ANALYTICS__…` | the services' own sections | |
//! | `NOTIFY_CHANNELS`, `WEBHOOK_URL`, `WEBHOOK_SECRET`, `ORDERFLOW_NOTIFICATIONS__…` | the worker's channels | `log` |
//! | `API_KEYS`, `RATE_LIMIT_PER_SECOND`, `RATE_LIMIT_BURST`, `RATE_LIMIT_TRUSTED_PROXIES` | `auth`, `rate_limit`: both APIs' keys and rate limit (`platform::access`) | no keys; 1000/s, burst 2000 |
//! | `LOG_LEVEL`, `LOG_FORMAT`, `SHUTDOWN_GRACE_PERIOD_SECONDS`, … | as for every service | |

use std::path::{Path, PathBuf};

use contracts::Queues;
use messaging::{inprocess::InProcessSettings, outbox::RelaySettings};
use platform::{
    ConfigError, HttpSettings, ShutdownSettings, TelemetrySettings,
    access::{AuthSettings, RateLimitSettings},
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub host: String,
    /// A port of 0 lets the system pick a free one (printed at start).
    pub order_port: u16,
    pub analytics_port: u16,
    pub notification_port: u16,
    pub telemetry: TelemetrySettings,
    pub shutdown: ShutdownSettings,
    /// API keys of both APIs (off while none is set).
    pub auth: AuthSettings,
    /// Each client's token bucket, on each API.
    pub rate_limit: RateLimitSettings,
    pub bus: InProcessSettings,
    /// The names of the system's queues on the bus.
    pub queues: Queues,
    /// Both services' outbox relays.
    pub outbox: RelaySettings,
    pub orders: order_service::settings::OrderSettings,
    pub analytics: analytics_service::settings::AnalyticsSettings,
    pub notifications: notification_worker::settings::NotificationSettings,
    /// Bound of each service's in-memory cache.
    pub cache_max_bytes: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            data_dir: PathBuf::from("data"),
            host: "127.0.0.1".into(),
            order_port: 8080,
            analytics_port: 8081,
            notification_port: 8082,
            telemetry: TelemetrySettings::default(),
            shutdown: ShutdownSettings::default(),
            auth: AuthSettings::default(),
            rate_limit: RateLimitSettings::default(),
            bus: InProcessSettings::default(),
            queues: Queues::default(),
            outbox: RelaySettings::default(),
            orders: order_service::settings::OrderSettings::default(),
            analytics: analytics_service::settings::AnalyticsSettings::default(),
            notifications: notification_worker::settings::NotificationSettings::default(),
            cache_max_bytes: platform::cache::memory::DEFAULT_MAX_BYTES,
        }
    }
}

impl Settings {
    /// Reads the settings from the environment, `.env` and the file `ORDERFLOW_CONFIG` names, checked.
    pub fn load() -> Result<Settings, ConfigError> {
        Self::load_from(platform::config::environment()?)
    }

    /// Reads the settings from the given environment, checked.
    pub fn load_from(env: impl IntoIterator<Item = (String, String)>) -> Result<Settings, ConfigError> {
        let settings: Settings =
            platform::config::load_from(&Settings::default(), notification_worker::settings::FLAT_ENV, env)?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid("data_dir", "must not be empty"));
        }
        platform::config::require_positive(&[("cache_max_bytes", self.cache_max_bytes)])?;
        self.bus.validate()?;
        self.order_service().validate()?;
        self.analytics_service().validate()?;
        self.notification_worker().validate()
    }

    /// The SQLite file of one part of the system.
    pub fn data_file(&self, name: &str) -> PathBuf {
        self.data_dir.join(name)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn http(&self, port: u16) -> HttpSettings {
        HttpSettings { host: self.host.clone(), port, ..HttpSettings::default() }
    }

    /// order-service's settings, as this system runs it.
    pub fn order_service(&self) -> order_service::settings::Settings {
        order_service::settings::Settings {
            http: self.http(self.order_port),
            shutdown: self.shutdown.clone(),
            telemetry: self.telemetry.clone(),
            auth: self.auth.clone(),
            rate_limit: self.rate_limit.clone(),
            outbox: self.outbox.clone(),
            queues: self.queues.clone(),
            orders: self.orders.clone(),
            ..Default::default()
        }
    }

    /// analytics-service's settings, as this system runs it.
    pub fn analytics_service(&self) -> analytics_service::settings::Settings {
        analytics_service::settings::Settings {
            http: self.http(self.analytics_port),
            shutdown: self.shutdown.clone(),
            telemetry: self.telemetry.clone(),
            auth: self.auth.clone(),
            rate_limit: self.rate_limit.clone(),
            outbox: self.outbox.clone(),
            queues: self.queues.clone(),
            analytics: self.analytics.clone(),
            ..Default::default()
        }
    }

    /// notification-worker's settings, as this system runs it.
    pub fn notification_worker(&self) -> notification_worker::settings::Settings {
        notification_worker::settings::Settings {
            http: self.http(self.notification_port),
            shutdown: self.shutdown.clone(),
            telemetry: self.telemetry.clone(),
            queues: self.queues.clone(),
            notifications: self.notifications.clone(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect()
    }

    #[test]
    fn defaults_run_the_system_locally() {
        let settings = Settings::load_from(env(&[])).unwrap();
        assert_eq!(settings.data_dir, PathBuf::from("data"));
        assert_eq!(settings.order_service().http.port, 8080);
        assert_eq!(settings.analytics_service().http.port, 8081);
        assert_eq!(settings.notification_worker().http.port, 8082);
        assert_eq!(settings.order_service().http.host, "127.0.0.1");
    }

    #[test]
    fn reads_the_environment() {
        let settings = Settings::load_from(env(&[
            ("ORDERFLOW_DATA_DIR", "/var/lib/orderflow"),
            ("ORDERFLOW_HOST", "0.0.0.0"),
            ("ORDERFLOW_ORDER_PORT", "9080"),
            ("ORDERFLOW_ANALYTICS_PORT", "9081"),
            ("ORDERFLOW_NOTIFICATION_PORT", "9082"),
            ("ORDERFLOW_BUS__RETRY_DELAYS_MS", "50,100"),
            ("ORDERFLOW_OUTBOX__POLL_INTERVAL_MS", "250"),
            ("NOTIFY_CHANNELS", "log,webhook"),
            ("WEBHOOK_URL", "http://127.0.0.1:9999/hook"),
            ("WEBHOOK_SECRET", "s3cret"),
            ("LOG_LEVEL", "debug"),
        ]))
        .unwrap();
        assert_eq!(settings.data_file("bus.db"), PathBuf::from("/var/lib/orderflow/bus.db"));
        let order = settings.order_service();
        assert_eq!((order.http.host.as_str(), order.http.port), ("0.0.0.0", 9080));
        assert_eq!(order.outbox.poll_interval_ms, 250);
        assert_eq!(order.telemetry.log_level, "debug");
        assert_eq!(settings.analytics_service().http.port, 9081);
        assert_eq!(settings.analytics_service().outbox.poll_interval_ms, 250);
        let worker = settings.notification_worker();
        assert_eq!(worker.http.port, 9082);
        assert_eq!(worker.notifications.channels.len(), 2);
        assert_eq!(settings.bus.retry_delays_ms, vec![50, 100]);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (name, value, key) in [
            ("ORDERFLOW_ORDER_PORT", "http", "order_port"),
            ("ORDERFLOW_BUS__BATCH_SIZE", "0", "bus.batch_size"),
            ("ORDERFLOW_DATA_DIR", "", "data_dir"),
        ] {
            let error = Settings::load_from(env(&[(name, value)])).unwrap_err().to_string();
            assert!(error.contains(key) || error.contains(name), "{error} should name {key}");
        }
    }
}
