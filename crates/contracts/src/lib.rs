//! The wire contract between orderflow's services.
//!
//! Every event travels in the same envelope, exactly as the public API documents it:
//!
//! ```json
//! {"event_type": "OrderCreated", "event_id": "…", "timestamp": "…", "data": {…}}
//! ```
//!
//! **Versioning rule**: changes are additive only. A producer may add fields; a consumer ignores
//! fields it does not know and gives new optional fields a default. Renaming or removing a field,
//! or changing its type or meaning, needs a new `event_type`.

mod events;
mod money;
pub mod topology;

pub use events::{
    ContractError, Envelope, Event, OrderCancelled, OrderCreated, OrderProcessed, OrderStatus, event_type,
    limits, routing_key,
};
pub use money::{Money, MoneyError, SCALE as MONEY_SCALE};
pub use topology::{QueueBinding, Queues};
