//! notification-worker configuration (see `platform::config` for where values come from).
//!
//! Besides the shared sections it reads `notifications.*`, also set by the flat variables in
//! [`FLAT_ENV`] (`NOTIFY_CHANNELS=log,webhook`, `WEBHOOK_URL`, `WEBHOOK_SECRET`, …).

use contracts::Queues;
use std::time::Duration;

use messaging::rabbitmq::RabbitSettings;
use platform::{
    ConfigError, HttpSettings, ShutdownSettings, TelemetrySettings, redis::RedisSettings, settings::Secret,
};
use serde::{Deserialize, Serialize};

/// The worker's own flat environment variables and the settings they set.
pub const FLAT_ENV: &[(&str, &str)] = &[
    ("NOTIFY_CHANNELS", "notifications.channels"),
    ("WEBHOOK_URL", "notifications.webhook.url"),
    ("WEBHOOK_SECRET", "notifications.webhook.secret"),
    ("WEBHOOK_TIMEOUT_MS", "notifications.webhook.timeout_ms"),
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub http: HttpSettings,
    pub shutdown: ShutdownSettings,
    pub telemetry: TelemetrySettings,
    pub redis: RedisSettings,
    pub rabbitmq: RabbitSettings,
    /// The system's consumer queues (every service declares them all).
    pub queues: Queues,
    pub notifications: NotificationSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            http: HttpSettings::with_port(8082),
            shutdown: ShutdownSettings::default(),
            telemetry: TelemetrySettings::default(),
            redis: RedisSettings::default(),
            rabbitmq: RabbitSettings::default(),
            queues: Queues::default(),
            notifications: NotificationSettings::default(),
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
        let settings: Settings = platform::config::load_from(&Settings::default(), FLAT_ENV, env)?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.http.validate()?;
        self.rabbitmq.validate()?;
        messaging::validate_queues(&self.queues)?;
        self.notifications.validate()
    }
}

/// A way of notifying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// One structured log line per notification.
    Log,
    /// A signed HTTP POST to `notifications.webhook.url`.
    Webhook,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Log => "log",
            ChannelKind::Webhook => "webhook",
        }
    }
}

impl std::str::FromStr for ChannelKind {
    type Err = String;

    fn from_str(name: &str) -> Result<ChannelKind, String> {
        match name.trim().to_ascii_lowercase().as_str() {
            "log" => Ok(ChannelKind::Log),
            "webhook" => Ok(ChannelKind::Webhook),
            _ => Err("unknown channel (known: log, webhook)".into()),
        }
    }
}

/// Configuration section `notifications`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct NotificationSettings {
    /// Channels every event is sent through. Also read from a comma-separated string
    /// (`NOTIFY_CHANNELS=log,webhook`).
    #[serde(deserialize_with = "platform::settings::list_or_comma_separated")]
    pub channels: Vec<ChannelKind>,
    pub webhook: WebhookSettings,
    /// How long a worker may hold the claim on one (channel, event) while sending it. A worker
    /// that dies mid-send blocks that notification for at most this long.
    pub claim_ttl_ms: u64,
    /// How long a sent notification is remembered, i.e. the window in which a redelivered event
    /// is recognised as a duplicate.
    pub sent_ttl_seconds: u64,
    /// Deliveries of one batch notified at the same time.
    pub concurrency: usize,
}

impl Default for NotificationSettings {
    fn default() -> Self {
        NotificationSettings {
            channels: vec![ChannelKind::Log],
            webhook: WebhookSettings::default(),
            claim_ttl_ms: 30_000,
            sent_ttl_seconds: 7 * 24 * 3600,
            concurrency: 16,
        }
    }
}

impl NotificationSettings {
    pub fn claim_ttl(&self) -> Duration {
        Duration::from_millis(self.claim_ttl_ms)
    }

    pub fn sent_ttl(&self) -> Duration {
        Duration::from_secs(self.sent_ttl_seconds)
    }

    pub fn uses(&self, channel: ChannelKind) -> bool {
        self.channels.contains(&channel)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.channels.is_empty() {
            return Err(ConfigError::invalid(
                "notifications.channels",
                "must name at least one channel (log, webhook)",
            ));
        }
        for (index, channel) in self.channels.iter().enumerate() {
            if self.channels[..index].contains(channel) {
                return Err(ConfigError::invalid(
                    "notifications.channels",
                    format!("lists {} twice", channel.as_str()),
                ));
            }
        }
        platform::config::require_positive(&[
            ("notifications.claim_ttl_ms", self.claim_ttl_ms),
            ("notifications.sent_ttl_seconds", self.sent_ttl_seconds),
            ("notifications.concurrency", self.concurrency as u64),
        ])?;
        if self.uses(ChannelKind::Webhook) {
            self.webhook.validate()?;
            // A claim that expired mid-send would let a second worker send the same notification.
            if self.claim_ttl_ms <= self.webhook.timeout_ms {
                return Err(ConfigError::invalid(
                    "notifications.claim_ttl_ms",
                    format!(
                        "must be greater than notifications.webhook.timeout_ms ({} ms)",
                        self.webhook.timeout_ms
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Configuration section `notifications.webhook`, used when the `webhook` channel is on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct WebhookSettings {
    /// Where notifications are POSTed (`http://` or `https://`). Flat variable `WEBHOOK_URL`.
    pub url: Option<String>,
    /// Key of the HMAC-SHA256 signature of each body. Flat variable `WEBHOOK_SECRET`.
    pub secret: Option<Secret>,
    /// Upper bound on one POST, connection included.
    pub timeout_ms: u64,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings { url: None, secret: None, timeout_ms: 5_000 }
    }
}

impl WebhookSettings {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The endpoint, checked to be an absolute HTTP(S) URL.
    pub fn endpoint(&self) -> Result<reqwest::Url, ConfigError> {
        let key = "notifications.webhook.url";
        let url = self.url.as_deref().map(str::trim).filter(|url| !url.is_empty()).ok_or_else(|| {
            ConfigError::invalid(key, "required when the webhook channel is on (set WEBHOOK_URL)")
        })?;
        let parsed =
            reqwest::Url::parse(url).map_err(|e| ConfigError::invalid(key, format!("not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(ConfigError::invalid(key, "must be an http:// or https:// URL with a host"));
        }
        Ok(parsed)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.endpoint()?;
        if self.secret.as_ref().is_none_or(Secret::is_empty) {
            return Err(ConfigError::invalid(
                "notifications.webhook.secret",
                "required when the webhook channel is on (set WEBHOOK_SECRET)",
            ));
        }
        platform::config::require_positive(&[("notifications.webhook.timeout_ms", self.timeout_ms)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::load_from(vars.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())))
    }

    #[test]
    fn defaults_notify_through_the_log_on_port_8082() {
        let settings = load(&[]).unwrap();
        assert_eq!(settings.http.port, 8082);
        assert_eq!(settings.queues.notifications, "notifications.orders");
        assert_eq!(settings.notifications.channels, vec![ChannelKind::Log]);
        assert_eq!(settings.notifications.sent_ttl(), Duration::from_secs(7 * 24 * 3600));
        assert_eq!(settings.rabbitmq.exchange, "orders");
    }

    #[test]
    fn flat_variables_set_the_channels_and_the_webhook() {
        let settings = load(&[
            ("NOTIFY_CHANNELS", " log , Webhook "),
            ("WEBHOOK_URL", "https://hooks.example.com/orders"),
            ("WEBHOOK_SECRET", "007"),
            ("WEBHOOK_TIMEOUT_MS", "1500"),
            ("SERVICE_PORT", "9000"),
        ])
        .unwrap();
        let notifications = &settings.notifications;
        assert_eq!(notifications.channels, vec![ChannelKind::Log, ChannelKind::Webhook]);
        assert_eq!(notifications.webhook.url.as_deref(), Some("https://hooks.example.com/orders"));
        assert_eq!(
            notifications.webhook.secret.as_ref().map(Secret::expose),
            Some("007"),
            "secrets are read verbatim"
        );
        assert_eq!(notifications.webhook.timeout(), Duration::from_millis(1500));
        assert_eq!(settings.http.port, 9000);
    }

    #[test]
    fn channels_come_from_a_toml_list_too() {
        let dir = std::env::temp_dir().join(format!("notification-worker-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("worker.toml");
        std::fs::write(
            &file,
            "[notifications]\nchannels = [\"webhook\"]\n[notifications.webhook]\nurl = \"http://127.0.0.1:9/hook\"\nsecret = \"s\"\n",
        )
        .unwrap();
        let settings = load(&[("ORDERFLOW_CONFIG", file.to_str().unwrap())]).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(settings.notifications.channels, vec![ChannelKind::Webhook]);
    }

    #[test]
    fn errors_name_the_key() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("NOTIFY_CHANNELS", "webhook")], "notifications.webhook.url"),
            (&[("NOTIFY_CHANNELS", "webhook")], "WEBHOOK_URL"),
            (&[("NOTIFY_CHANNELS", "webhook"), ("WEBHOOK_URL", "ftp://x/y")], "notifications.webhook.url"),
            (
                &[("NOTIFY_CHANNELS", "webhook"), ("WEBHOOK_URL", "http://x/y")],
                "notifications.webhook.secret",
            ),
            (
                &[
                    ("NOTIFY_CHANNELS", "webhook"),
                    ("WEBHOOK_URL", "http://x/y"),
                    ("WEBHOOK_SECRET", "s"),
                    ("ORDERFLOW_NOTIFICATIONS__CLAIM_TTL_MS", "5000"),
                ],
                "notifications.claim_ttl_ms",
            ),
            (&[("NOTIFY_CHANNELS", "log,sms")], "NOTIFY_CHANNELS"),
            (&[("NOTIFY_CHANNELS", " , ")], "notifications.channels"),
            (&[("NOTIFY_CHANNELS", "log,log")], "notifications.channels"),
            (&[("ORDERFLOW_QUEUES__NOTIFICATIONS", " ")], "queues.notifications"),
        ];
        for (vars, key) in cases {
            let error = load(vars).expect_err(&format!("{vars:?} must be refused")).to_string();
            assert!(error.contains(key), "{error:?} should name {key}");
        }
    }

    #[test]
    fn the_secret_is_not_printed() {
        let webhook = WebhookSettings { secret: Some("hunter2".into()), ..Default::default() };
        assert!(!format!("{webhook:?}").contains("hunter2"));
    }
}
