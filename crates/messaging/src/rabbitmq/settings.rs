//! Settings of the RabbitMQ adapter (configuration section `rabbitmq`).

use std::time::Duration;

use lapin::uri::AMQPUri;
use platform::{ConfigError, settings::Secret};
use serde::{Deserialize, Serialize};

/// Longest name RabbitMQ accepts for a queue, an exchange or a routing key.
pub(crate) const MAX_NAME_LENGTH: usize = 255;

/// Heartbeat asked for when the URL does not say: a dead peer is noticed within about twice this
/// many seconds instead of the broker's default of a minute.
const DEFAULT_HEARTBEAT_SECONDS: u16 = 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RabbitSettings {
    /// `amqp://user:password@host:port/vhost`; when set, it wins over the separate fields.
    pub url: Option<String>,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Secret,
    pub vhost: String,
    /// The broker's nodes, `host` or `host:port` each (port 5672 when left out), for a cluster:
    /// they replace the host and port of `url` (or of `host`/`port`). A service connects to the
    /// first that answers, and after losing a connection it tries the next node first. Also read
    /// from a comma-separated string (`RABBITMQ_ADDRESSES=rabbit-0:5672,rabbit-1:5672`).
    #[serde(deserialize_with = "platform::settings::list_or_comma_separated")]
    pub addresses: Vec<String>,
    /// The topic exchange events are published to. The retry and dead-letter exchanges are named
    /// after it (`<exchange>.retry`, `<exchange>.dlx`).
    pub exchange: String,
    /// Unacknowledged deliveries the broker may push to each consumer.
    pub prefetch: u16,
    /// Most deliveries handed to a handler at once. A batch holds what has already arrived; the
    /// consumer never waits to fill one.
    pub batch_size: usize,
    /// Delay before each retry of a delivery that failed transiently; after the last one it is
    /// parked in the dead-letter queue. Also read from a comma-separated string (`"200,500"`).
    #[serde(deserialize_with = "platform::settings::list_or_comma_separated")]
    pub retry_delays_ms: Vec<u64>,
    /// Deliveries of one message that ended without an acknowledgement (its consumer crashed or
    /// lost its connection while holding it) before the broker dead-letters it. A consumer that
    /// stops gracefully, or pauses for an outage, hands its deliveries back without counting.
    pub delivery_limit: u32,
    /// Longest a consumer paused by an outage holds a batch unacknowledged before handing it
    /// back to the queue and taking it again; keep it well under the broker's `consumer_timeout`
    /// (30 minutes by default), past which the broker closes the channel.
    pub paused_hold_ms: u64,
    /// Upper bound on publishing a batch and receiving all its confirms.
    pub publish_timeout_ms: u64,
    /// Longest pause between two connection attempts.
    pub reconnect_max_backoff_ms: u64,
}

impl Default for RabbitSettings {
    fn default() -> Self {
        RabbitSettings {
            url: None,
            host: "localhost".into(),
            port: 5672,
            user: "guest".into(),
            password: "guest".into(),
            vhost: "/".into(),
            addresses: Vec::new(),
            exchange: "orders".into(),
            // A consumer that fell behind catches up in large batches: a batch costs a few
            // statements whatever its size.
            prefetch: 1024,
            batch_size: 512,
            retry_delays_ms: vec![1_000, 5_000, 30_000, 120_000],
            delivery_limit: 10,
            paused_hold_ms: 60_000,
            publish_timeout_ms: 5_000,
            reconnect_max_backoff_ms: 30_000,
        }
    }
}

impl RabbitSettings {
    /// Checks every value; the error names the offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.uris()?;
        if self.exchange.is_empty() {
            return Err(ConfigError::invalid("rabbitmq.exchange", "must not be empty"));
        }
        // The longest derived name is `<exchange>.retry`.
        if self.exchange.len() + ".retry".len() > MAX_NAME_LENGTH {
            return Err(ConfigError::invalid(
                "rabbitmq.exchange",
                format!("must be at most {} bytes", MAX_NAME_LENGTH - ".retry".len()),
            ));
        }
        if self.retry_delays_ms.contains(&0) {
            return Err(ConfigError::invalid(
                "rabbitmq.retry_delays_ms",
                "every delay must be greater than 0",
            ));
        }
        // x-message-ttl is a 32-bit signed integer on the broker.
        if self.retry_delays_ms.iter().any(|&delay| delay > i32::MAX as u64) {
            return Err(ConfigError::invalid(
                "rabbitmq.retry_delays_ms",
                format!("every delay must be at most {} ms", i32::MAX),
            ));
        }
        platform::config::require_positive(&[
            ("rabbitmq.prefetch", u64::from(self.prefetch)),
            ("rabbitmq.batch_size", self.batch_size as u64),
            ("rabbitmq.delivery_limit", u64::from(self.delivery_limit)),
            ("rabbitmq.paused_hold_ms", self.paused_hold_ms),
            ("rabbitmq.publish_timeout_ms", self.publish_timeout_ms),
            ("rabbitmq.reconnect_max_backoff_ms", self.reconnect_max_backoff_ms),
        ])
    }

    /// The URL to connect to: `url` when set, else one composed from the separate fields.
    pub fn connection_url(&self) -> String {
        match self.url.as_deref().filter(|url| !url.is_empty()) {
            Some(url) => url.to_owned(),
            None => format!(
                "amqp://{}:{}@{}:{}/{}",
                percent_encode(&self.user),
                percent_encode(self.password.expose()),
                self.host,
                self.port,
                percent_encode(&self.vhost),
            ),
        }
    }

    /// The parsed connection URL, with a short heartbeat unless the URL sets one.
    pub(crate) fn uri(&self) -> Result<AMQPUri, ConfigError> {
        let key = if self.url.as_deref().is_some_and(|url| !url.is_empty()) {
            "rabbitmq.url"
        } else {
            if self.host.is_empty() {
                return Err(ConfigError::invalid("rabbitmq.host", "must not be empty"));
            }
            "rabbitmq.host"
        };
        let mut uri: AMQPUri = self
            .connection_url()
            .parse()
            .map_err(|e| ConfigError::invalid(key, format!("not an AMQP URL: {e}")))?;
        uri.query.heartbeat.get_or_insert(DEFAULT_HEARTBEAT_SECONDS);
        Ok(uri)
    }

    /// The URI of every node to connect to, in the order they are tried: the connection URL
    /// with each of `addresses` as its host and port, or the URL alone when there are none.
    pub(crate) fn uris(&self) -> Result<Vec<AMQPUri>, ConfigError> {
        let uri = self.uri()?;
        if self.addresses.is_empty() {
            return Ok(vec![uri]);
        }
        self.addresses
            .iter()
            .map(|address| {
                let (host, port) = host_and_port(address).ok_or_else(|| {
                    ConfigError::invalid(
                        "rabbitmq.addresses",
                        format!("{address:?} is not host or host:port"),
                    )
                })?;
                let mut node = uri.clone();
                node.authority.host = host.to_owned();
                node.authority.port = port;
                Ok(node)
            })
            .collect()
    }

    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.publish_timeout_ms)
    }

    pub fn retry_delays(&self) -> Vec<Duration> {
        self.retry_delays_ms.iter().map(|&ms| Duration::from_millis(ms)).collect()
    }

    pub fn paused_hold(&self) -> Duration {
        Duration::from_millis(self.paused_hold_ms)
    }

    pub fn reconnect_max_backoff(&self) -> Duration {
        Duration::from_millis(self.reconnect_max_backoff_ms)
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; the AMQP port when none is given.
fn host_and_port(address: &str) -> Option<(&str, u16)> {
    const AMQP_PORT: u16 = 5672;
    let address = address.trim();
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match address.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (address, None),
        }
    };
    let port = match port {
        Some(port) => port.parse().ok().filter(|&port| port != 0)?,
        None => AMQP_PORT,
    };
    (!host.is_empty() && !host.contains(['/', '@', ' '])).then_some((host, port))
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so that any user, password or
/// vhost (`/` included) survives the URL.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composes_an_encoded_url_from_the_fields() {
        let settings = RabbitSettings {
            user: "svc@orders".into(),
            password: "p:ss/w%rd".into(),
            vhost: "/".into(),
            host: "rabbit".into(),
            port: 5673,
            ..Default::default()
        };
        assert_eq!(settings.connection_url(), "amqp://svc%40orders:p%3Ass%2Fw%25rd@rabbit:5673/%2F");
        let uri = settings.uri().unwrap();
        assert_eq!(uri.authority.userinfo.username, "svc@orders");
        assert_eq!(uri.authority.userinfo.password, "p:ss/w%rd");
        assert_eq!(uri.vhost, "/");
        assert_eq!(uri.query.heartbeat, Some(DEFAULT_HEARTBEAT_SECONDS));
    }

    #[test]
    fn the_url_wins_and_keeps_its_heartbeat() {
        let settings =
            RabbitSettings { url: Some("amqp://u:p@h:1234/v?heartbeat=3".into()), ..Default::default() };
        let uri = settings.uri().unwrap();
        assert_eq!(uri.authority.host, "h");
        assert_eq!(uri.vhost, "v");
        assert_eq!(uri.query.heartbeat, Some(3));
    }

    #[test]
    fn every_address_gets_the_credentials_and_vhost() {
        let settings = RabbitSettings {
            url: Some("amqp://u:p@ignored:1/v".into()),
            addresses: vec!["rabbit-0:5681".into(), " rabbit-1 ".into(), "[::1]:5683".into()],
            ..Default::default()
        };
        let uris = settings.uris().unwrap();
        let nodes: Vec<_> =
            uris.iter().map(|uri| (uri.authority.host.as_str(), uri.authority.port)).collect();
        assert_eq!(nodes, [("rabbit-0", 5681), ("rabbit-1", 5672), ("::1", 5683)]);
        for uri in &uris {
            assert_eq!((uri.authority.userinfo.username.as_str(), uri.vhost.as_str()), ("u", "v"));
            assert_eq!(uri.query.heartbeat, Some(DEFAULT_HEARTBEAT_SECONDS));
        }
        assert_eq!(RabbitSettings::default().uris().unwrap().len(), 1, "no addresses: the URL alone");
        for bad in ["rabbit:0", "rabbit:x", ":5672", "[::1", "user@rabbit"] {
            let settings = RabbitSettings { addresses: vec![bad.into()], ..Default::default() };
            let error = settings.validate().unwrap_err().to_string();
            assert!(error.contains("rabbitmq.addresses"), "{bad}: {error}");
        }
    }

    #[test]
    fn delays_come_from_a_list_or_a_string() {
        let from_list: RabbitSettings = serde_json::from_str(r#"{"retry_delays_ms": [200, "500"]}"#).unwrap();
        assert_eq!(from_list.retry_delays_ms, vec![200, 500]);
        let from_string: RabbitSettings =
            serde_json::from_str(r#"{"retry_delays_ms": " 200, 500 "}"#).unwrap();
        assert_eq!(from_string.retry_delays_ms, vec![200, 500]);
        let single: RabbitSettings = serde_json::from_str(r#"{"retry_delays_ms": "750"}"#).unwrap();
        assert_eq!(single.retry_delays_ms, vec![750]);
        assert!(serde_json::from_str::<RabbitSettings>(r#"{"retry_delays_ms": "1s"}"#).is_err());
    }

    #[test]
    fn loads_from_the_environment() {
        #[derive(Default, Serialize, Deserialize)]
        #[serde(default)]
        struct Config {
            rabbitmq: RabbitSettings,
        }
        let env = [
            ("RABBITMQ_HOST", "rabbit"),
            ("RABBITMQ_PASSWORD", "007"),
            ("ORDERFLOW_RABBITMQ__RETRY_DELAYS_MS", "200,500"),
            ("ORDERFLOW_RABBITMQ__PREFETCH", "16"),
            ("RABBITMQ_ADDRESSES", "rabbit-0:5672,rabbit-1:5672"),
        ]
        .map(|(name, value)| (name.to_owned(), value.to_owned()));
        let config: Config = platform::config::load_from(&Config::default(), &[], env).unwrap();
        assert_eq!(config.rabbitmq.host, "rabbit");
        assert_eq!(config.rabbitmq.password.expose(), "007");
        assert_eq!(config.rabbitmq.retry_delays_ms, vec![200, 500]);
        assert_eq!(config.rabbitmq.prefetch, 16);
        assert_eq!(config.rabbitmq.addresses, ["rabbit-0:5672", "rabbit-1:5672"]);
        assert_eq!(config.rabbitmq.exchange, "orders");
    }

    #[test]
    fn validation_names_the_key() {
        let invalid = [
            RabbitSettings { prefetch: 0, ..Default::default() },
            RabbitSettings { retry_delays_ms: vec![100, 0], ..Default::default() },
            RabbitSettings { exchange: String::new(), ..Default::default() },
            RabbitSettings { url: Some("http://nope".into()), ..Default::default() },
        ];
        let keys = ["rabbitmq.prefetch", "rabbitmq.retry_delays_ms", "rabbitmq.exchange", "rabbitmq.url"];
        for (settings, key) in invalid.iter().zip(keys) {
            let error = settings.validate().unwrap_err().to_string();
            assert!(error.contains(key), "{error} should name {key}");
        }
        RabbitSettings::default().validate().unwrap();
    }
}
