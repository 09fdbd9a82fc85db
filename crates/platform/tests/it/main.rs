//! The platform integration tests: one test binary, one module per area.

mod cache;
mod config;
mod http;
mod telemetry;
