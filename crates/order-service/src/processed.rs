//! Consumes `OrderProcessed`: analytics has counted the order, so it moves to `processed`.

use async_trait::async_trait;
use chrono::Utc;
use contracts::Event;
use messaging::{Delivery, EventHandler, HandleError, Handled};
use tracing::Instrument;

use crate::{service::OrderService, store::StoreError};

pub struct OrderProcessedHandler {
    service: OrderService,
}

impl OrderProcessedHandler {
    pub fn new(service: OrderService) -> Self {
        OrderProcessedHandler { service }
    }

    async fn handle_one(&self, delivery: &Delivery) -> Result<Handled, HandleError> {
        let event = Event::from_json(&delivery.payload).map_err(|e| HandleError::Permanent(e.to_string()))?;
        let Event::OrderProcessed(processed) = event else {
            return Err(HandleError::Permanent(format!("unexpected {} on this queue", event.event_type())));
        };
        match self.service.mark_processed(processed.data.order_id, Utc::now()).await {
            Ok(true) => Ok(Handled::Processed),
            Ok(false) => Ok(Handled::Duplicate),
            Err(StoreError::Unavailable(reason)) => Err(HandleError::Transient(reason)),
            Err(other) => Err(HandleError::Transient(other.to_string())),
        }
    }
}

#[async_trait]
impl EventHandler for OrderProcessedHandler {
    async fn handle(&self, batch: &[Delivery]) -> Vec<Result<Handled, HandleError>> {
        let mut outcomes = Vec::with_capacity(batch.len());
        for delivery in batch {
            let span = tracing::info_span!(
                "consume",
                otel.kind = "consumer",
                queue = "orders.processed",
                event_id = delivery.message_id.as_deref().unwrap_or(""),
            );
            platform::telemetry::set_parent_from_headers(&span, |name| delivery.headers.get(name).cloned());
            outcomes.push(self.handle_one(delivery).instrument(span).await);
        }
        outcomes
    }
}
