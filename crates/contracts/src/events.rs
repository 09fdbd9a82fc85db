use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::Money;

/// `event_type` values, as the public API documents them.
pub mod event_type {
    pub const ORDER_CREATED: &str = "OrderCreated";
    pub const ORDER_PROCESSED: &str = "OrderProcessed";
    pub const ORDER_CANCELLED: &str = "OrderCancelled";
}

/// Bounds every `OrderCreated` respects: order-service accepts nothing beyond them, and a
/// consumer treats an event beyond them as breaking the contract (so no column limit and no sum
/// of a batch can be exceeded by one event).
pub mod limits {
    use crate::Money;

    /// Characters in `customer_id` and `product_id`.
    pub const MAX_ID_LENGTH: usize = 128;
    pub const MAX_QUANTITY: u32 = 1_000_000;
    /// 100,000,000.00
    pub const MAX_TOTAL: Money = Money::from_minor(10_000_000_000);
    /// Characters in a cancellation's `reason`.
    pub const MAX_REASON_LENGTH: usize = 500;
}

/// Routing keys on the `orders` topic exchange.
pub mod routing_key {
    pub const ORDER_CREATED: &str = "order.created";
    pub const ORDER_PROCESSED: &str = "order.processed";
    pub const ORDER_CANCELLED: &str = "order.cancelled";
}

/// The envelope every event travels in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub event_type: String,
    /// Unique per event; consumers deduplicate on it. Also the AMQP `message_id`.
    pub event_id: Uuid,
    pub timestamp: DateTime<Utc>,
    pub data: T,
}

/// Emitted by order-service when an order is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCreated {
    pub order_id: Uuid,
    pub customer_id: String,
    pub product_id: String,
    pub quantity: u32,
    pub total_amount: Money,
}

/// Emitted by analytics-service once an order's effect on the aggregates is committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderProcessed {
    pub order_id: Uuid,
    pub processed_by: String,
    pub metrics_updated: bool,
}

/// Emitted by order-service when an order is cancelled (once per order: cancelling a cancelled
/// order emits nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub order_id: Uuid,
    /// Why, as the customer gave it; `null` when not given.
    pub reason: Option<String>,
    pub cancelled_at: DateTime<Utc>,
}

/// Lifecycle of an order: `created` on acceptance, `processed` once analytics has counted it,
/// `cancelled` once cancelled (from either; final).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Created,
    Processed,
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Created => "created",
            OrderStatus::Processed => "processed",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "created" => Some(OrderStatus::Created),
            "processed" => Some(OrderStatus::Processed),
            "cancelled" => Some(OrderStatus::Cancelled),
            _ => None,
        }
    }
}

/// Why a message does not honour the contract. Such a message can never be processed: it is
/// dead-lettered, not retried.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("not a valid event envelope: {0}")]
    Malformed(#[source] serde_json::Error),
    #[error("unknown event_type {0:?}")]
    UnknownEventType(String),
    #[error("invalid {event_type} payload: {source}")]
    InvalidPayload {
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid {event_type} payload: {reason}")]
    Violation { event_type: String, reason: String },
}

/// Any event of the contract, parsed and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    OrderCreated(Envelope<OrderCreated>),
    OrderProcessed(Envelope<OrderProcessed>),
    OrderCancelled(Envelope<OrderCancelled>),
}

impl Envelope<OrderCreated> {
    pub fn order_created(event_id: Uuid, timestamp: DateTime<Utc>, data: OrderCreated) -> Self {
        Envelope { event_type: event_type::ORDER_CREATED.to_owned(), event_id, timestamp, data }
    }
}

impl Envelope<OrderProcessed> {
    pub fn order_processed(event_id: Uuid, timestamp: DateTime<Utc>, data: OrderProcessed) -> Self {
        Envelope { event_type: event_type::ORDER_PROCESSED.to_owned(), event_id, timestamp, data }
    }
}

impl Envelope<OrderCancelled> {
    pub fn order_cancelled(event_id: Uuid, timestamp: DateTime<Utc>, data: OrderCancelled) -> Self {
        Envelope { event_type: event_type::ORDER_CANCELLED.to_owned(), event_id, timestamp, data }
    }
}

impl Event {
    /// Parses and validates any event of the contract from its JSON bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Event, ContractError> {
        let raw: Envelope<Box<RawValue>> = serde_json::from_slice(bytes).map_err(ContractError::Malformed)?;
        match raw.event_type.as_str() {
            event_type::ORDER_CREATED => {
                let event = typed::<OrderCreated>(raw)?;
                let data = &event.data;
                let too_long = |id: &str| id.chars().count() > limits::MAX_ID_LENGTH;
                let violation = if data.customer_id.trim().is_empty() {
                    Some("customer_id is empty")
                } else if data.product_id.trim().is_empty() {
                    Some("product_id is empty")
                } else if too_long(&data.customer_id) || too_long(&data.product_id) {
                    Some("customer_id and product_id have at most 128 characters")
                } else if data.quantity == 0 || data.quantity > limits::MAX_QUANTITY {
                    Some("quantity must be from 1 to 1000000")
                } else if data.total_amount <= Money::ZERO || data.total_amount > limits::MAX_TOTAL {
                    Some("total_amount must be greater than 0 and at most 100000000")
                } else {
                    None
                };
                match violation {
                    Some(reason) => Err(ContractError::Violation {
                        event_type: event.event_type,
                        reason: reason.to_owned(),
                    }),
                    None => Ok(Event::OrderCreated(event)),
                }
            }
            event_type::ORDER_PROCESSED => Ok(Event::OrderProcessed(typed::<OrderProcessed>(raw)?)),
            event_type::ORDER_CANCELLED => {
                let event = typed::<OrderCancelled>(raw)?;
                if event
                    .data
                    .reason
                    .as_ref()
                    .is_some_and(|reason| reason.chars().count() > limits::MAX_REASON_LENGTH)
                {
                    return Err(ContractError::Violation {
                        event_type: event.event_type,
                        reason: "reason has at most 500 characters".to_owned(),
                    });
                }
                Ok(Event::OrderCancelled(event))
            }
            other => Err(ContractError::UnknownEventType(other.to_owned())),
        }
    }

    pub fn event_id(&self) -> Uuid {
        match self {
            Event::OrderCreated(e) => e.event_id,
            Event::OrderProcessed(e) => e.event_id,
            Event::OrderCancelled(e) => e.event_id,
        }
    }

    pub fn order_id(&self) -> Uuid {
        match self {
            Event::OrderCreated(e) => e.data.order_id,
            Event::OrderProcessed(e) => e.data.order_id,
            Event::OrderCancelled(e) => e.data.order_id,
        }
    }

    pub fn event_type(&self) -> &str {
        match self {
            Event::OrderCreated(e) => &e.event_type,
            Event::OrderProcessed(e) => &e.event_type,
            Event::OrderCancelled(e) => &e.event_type,
        }
    }
}

fn typed<T: DeserializeOwned>(raw: Envelope<Box<RawValue>>) -> Result<Envelope<T>, ContractError> {
    let data = serde_json::from_str(raw.data.get())
        .map_err(|source| ContractError::InvalidPayload { event_type: raw.event_type.clone(), source })?;
    Ok(Envelope { event_type: raw.event_type, event_id: raw.event_id, timestamp: raw.timestamp, data })
}
