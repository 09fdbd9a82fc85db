//! What every orderflow service needs and none of them owns: configuration, telemetry, metrics,
//! health, HTTP plumbing, graceful shutdown, and the MySQL/Redis connection settings.

pub mod cache;
pub mod config;
pub mod database;
pub mod health;
pub mod http;
pub mod metrics;
pub mod redis;
pub mod settings;
pub mod shutdown;
pub mod telemetry;

pub use config::ConfigError;
pub use health::{DependencyStatus, Health};
pub use http::{ApiError, JsonBody};
pub use settings::{HttpSettings, ShutdownSettings, TelemetrySettings};
pub use shutdown::Shutdown;

/// Installs rustls' process-wide crypto provider (ring). Call once at start, before any TLS use.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
