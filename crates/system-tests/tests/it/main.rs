//! The system-tests integration tests: one test binary, one module per area.

mod chart_contract;
mod drill;
mod e2e;
mod scale_out;
