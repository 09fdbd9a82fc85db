//! What every orderflow service needs and none of them owns: configuration, telemetry, metrics,
//! health, HTTP plumbing and API access (keys, rate limits), graceful shutdown, the MySQL/Redis connection settings, and the SQLite
//! opening rules of the embedded mode.

pub mod access;
pub mod cache;
pub mod config;
pub mod database;
pub mod error;
pub mod health;
pub mod http;
pub mod metrics;
pub mod redis;
pub mod retention;
pub mod settings;
pub mod shutdown;
pub mod sql;
pub mod sqlite;
pub mod telemetry;

pub use config::ConfigError;
pub use error::ErrorChain;
pub use health::{DependencyStatus, Health};
pub use http::{ApiError, JsonBody, OptionalJsonBody};
pub use settings::{HttpSettings, ShutdownSettings, TelemetrySettings};
pub use shutdown::Shutdown;

/// What every service is assembled with: its metrics registry, its readiness, its shutdown.
pub struct Runtime {
    pub registry: prometheus_client::registry::Registry,
    pub health: Health,
    pub shutdown: Shutdown,
}

impl Runtime {
    pub fn new() -> Self {
        let mut registry = prometheus_client::registry::Registry::default();
        let health = Health::new(&mut registry);
        Runtime { registry, health, shutdown: Shutdown::new() }
    }
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}

/// Installs rustls' process-wide crypto provider (ring). Call once at start, before any TLS use.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
