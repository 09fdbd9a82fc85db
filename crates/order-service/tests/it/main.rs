//! The order-service integration tests: one test binary, one module per area.

mod api;
mod housekeeping;
mod resilience;
mod support;
