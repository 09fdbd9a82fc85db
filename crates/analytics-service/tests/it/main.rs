//! The analytics-service integration tests: one test binary, one module per area.

mod analytics;
mod store;
mod support;
