//! The notification-worker integration tests: one test binary, one module per area.

mod config;
mod process;
mod support;
mod worker;
