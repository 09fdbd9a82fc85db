//! The messaging integration tests: one test binary, one module per area.

mod rabbitmq;
