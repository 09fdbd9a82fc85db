//! Settings sections shared by the services. Each service's settings struct embeds the ones it needs.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// The HTTP listener and its limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpSettings {
    pub host: String,
    pub port: u16,
    /// A request still running after this long is answered 503.
    pub request_timeout_ms: u64,
    /// Larger request bodies are answered 413.
    pub body_limit_bytes: usize,
    /// A client that has not sent a whole request head after this long, idle keep-alive ones
    /// included, is disconnected. Keep it above the idle timeout of any proxy in front (60 s for
    /// most), or the proxy may send a request on a connection just as it closes.
    pub header_read_timeout_ms: u64,
    /// Connections served at once; further clients wait in the listen backlog until one closes.
    pub max_connections: usize,
}

impl HttpSettings {
    pub fn with_port(port: u16) -> Self {
        HttpSettings { port, ..Default::default() }
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::config::require_positive(&[
            ("http.request_timeout_ms", self.request_timeout_ms),
            ("http.body_limit_bytes", self.body_limit_bytes as u64),
            ("http.header_read_timeout_ms", self.header_read_timeout_ms),
            ("http.max_connections", self.max_connections as u64),
        ])
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            host: "0.0.0.0".into(),
            port: 8080,
            request_timeout_ms: 10_000,
            body_limit_bytes: 64 * 1024,
            header_read_timeout_ms: 65_000,
            max_connections: 10_000,
        }
    }
}

/// Graceful shutdown.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ShutdownSettings {
    /// Time allowed, after SIGTERM, for in-flight work to finish. Keep it below the pod's
    /// `terminationGracePeriodSeconds`.
    pub grace_period_seconds: u64,
    /// Time between failing readiness and closing the listener, so that load balancers stop
    /// sending new requests first.
    pub drain_delay_ms: u64,
}

impl ShutdownSettings {
    pub fn grace_period(&self) -> Duration {
        Duration::from_secs(self.grace_period_seconds)
    }

    pub fn drain_delay(&self) -> Duration {
        Duration::from_millis(self.drain_delay_ms)
    }
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        ShutdownSettings { grace_period_seconds: 20, drain_delay_ms: 0 }
    }
}

/// Logs and traces.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TelemetrySettings {
    /// A `tracing` filter: `info`, `debug`, `info,sqlx=warn`, …
    pub log_level: String,
    pub log_format: LogFormat,
    /// OTLP/gRPC collector, e.g. `http://otel-collector:4317`. Traces are exported only when set.
    pub otlp_endpoint: Option<String>,
    /// Overrides the service name reported in logs and traces.
    pub service_name: Option<String>,
    /// Where this runs (`development`, `staging`, `production`, …): the traces'
    /// `deployment.environment.name`.
    pub environment: Option<String>,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings {
            // lapin reports connection trouble the supervisor already logs with context.
            log_level: "info,lapin=off".into(),
            log_format: LogFormat::Json,
            otlp_endpoint: None,
            service_name: None,
            environment: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines, for a terminal.
    Text,
}

/// A secret setting (a password, a signing key): `Debug` never shows it, and its memory is zeroed
/// when dropped. Read it with [`Secret::expose`] where it is used. It serializes as itself only
/// because the loader merges the defaults into the configuration through serde.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(SecretString);

impl Secret {
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl From<&str> for Secret {
    fn from(secret: &str) -> Self {
        Secret(SecretString::from(secret))
    }
}

impl From<String> for Secret {
    fn from(secret: String) -> Self {
        Secret(SecretString::from(secret))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_empty() { "\"\"" } else { "[redacted]" })
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.expose())
    }
}

/// Deserializes a list setting from a list (`[200, "500"]` from TOML) or from a string separated
/// by commas or newlines (`"200,500"` from the environment, where every value is a string). Each element is
/// parsed with `T::from_str`; blank elements are skipped. Use with
/// `#[serde(deserialize_with = "platform::settings::list_or_comma_separated")]`.
pub fn list_or_comma_separated<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    use serde::de::{self, Error};

    fn element<T: std::str::FromStr, E: Error>(text: &str) -> Result<T, E>
    where
        T::Err: std::fmt::Display,
    {
        text.trim().parse().map_err(|error| E::custom(format!("{:?}: {error}", text.trim())))
    }

    /// One list element: a string, or a number written without quotes.
    struct Element(String);

    impl<'de> Deserialize<'de> for Element {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct ElementVisitor;
            impl de::Visitor<'_> for ElementVisitor {
                type Value = Element;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a string or a number")
                }
                fn visit_str<E: Error>(self, text: &str) -> Result<Element, E> {
                    Ok(Element(text.to_owned()))
                }
                fn visit_u64<E: Error>(self, number: u64) -> Result<Element, E> {
                    Ok(Element(number.to_string()))
                }
                fn visit_i64<E: Error>(self, number: i64) -> Result<Element, E> {
                    Ok(Element(number.to_string()))
                }
            }
            deserializer.deserialize_any(ElementVisitor)
        }
    }

    struct List<T>(std::marker::PhantomData<T>);

    impl<'de, T: std::str::FromStr> de::Visitor<'de> for List<T>
    where
        T::Err: std::fmt::Display,
    {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list or a comma-separated string")
        }

        fn visit_str<E: Error>(self, text: &str) -> Result<Vec<T>, E> {
            text.split([',', '\n']).filter(|part| !part.trim().is_empty()).map(element).collect()
        }

        fn visit_u64<E: Error>(self, number: u64) -> Result<Vec<T>, E> {
            Ok(vec![element(&number.to_string())?])
        }

        fn visit_i64<E: Error>(self, number: i64) -> Result<Vec<T>, E> {
            Ok(vec![element(&number.to_string())?])
        }

        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut list = Vec::new();
            while let Some(Element(text)) = seq.next_element()? {
                if !text.trim().is_empty() {
                    list.push(element(&text)?);
                }
            }
            Ok(list)
        }
    }

    deserializer.deserialize_any(List(std::marker::PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_limits_must_be_positive() {
        assert!(HttpSettings::default().validate().is_ok());
        let no_time = HttpSettings { header_read_timeout_ms: 0, ..HttpSettings::default() };
        assert!(no_time.validate().unwrap_err().to_string().contains("http.header_read_timeout_ms"));
        let no_room = HttpSettings { max_connections: 0, ..HttpSettings::default() };
        assert!(no_room.validate().unwrap_err().to_string().contains("http.max_connections"));
    }

    #[test]
    fn lists_come_from_a_list_or_a_comma_separated_string() {
        #[derive(Debug, Deserialize)]
        struct Settings {
            #[serde(deserialize_with = "list_or_comma_separated")]
            delays: Vec<u64>,
        }
        let parse = |json: &str| serde_json::from_str::<Settings>(json).map(|s| s.delays);
        assert_eq!(parse(r#"{"delays": [200, "500"]}"#).unwrap(), vec![200, 500]);
        assert_eq!(parse(r#"{"delays": " 200, ,500 "}"#).unwrap(), vec![200, 500]);
        assert_eq!(parse(r#"{"delays": "750"}"#).unwrap(), vec![750]);
        assert_eq!(parse(r#"{"delays": 750}"#).unwrap(), vec![750]);
        assert_eq!(parse(r#"{"delays": ""}"#).unwrap(), Vec::<u64>::new());
        let error = parse(r#"{"delays": "200,1s"}"#).unwrap_err().to_string();
        assert!(error.contains("\"1s\""), "{error}");
        assert!(parse(r#"{"delays": [-1]}"#).is_err());
    }
}
