//! The transactional outbox: events are written in the same database transaction as the change
//! they describe, and a relay publishes them afterwards with broker confirms.
//!
//! Two paths lead from the table to the broker:
//! - **handoff**: right after its commit, the producer hands the events to its own relay, which
//!   publishes them at once. The rows were written reserved for [`HANDOFF_RESERVATION`], so other
//!   replicas' relays leave them alone meanwhile.
//! - **polling**: the relay leases due rows for a short time (rows whose reservation ran out
//!   because their process died, rows whose publish failed, rows of other replicas) and publishes
//!   them outside any transaction.
//!
//! Several replicas can therefore run the relay at once: a row is published by one of them, and
//! published again only if that one died before removing it (consumers deduplicate on
//! `event_id`).
//!
//! A row leaves the table as soon as the broker has confirmed its event, so the table holds what
//! waits to be published and nothing else: its size follows the backlog, not the history.

pub mod relay;
pub mod store;

pub use relay::{HANDOFF_RESERVATION, OutboxHandoff, Published, Relay, RelaySettings};
pub use store::{Backlog, OutboxError, OutboxRecord, OutboxStore, enqueue, enqueue_reserved};
