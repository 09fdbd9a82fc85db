//! Consumes `OrderProcessed`: analytics has counted the order, so it moves to `processed`. A whole
//! batch of deliveries is applied in one transaction.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::Utc;
use contracts::Event;
use messaging::{Delivery, EventHandler, HandleError, Handled, consume::apply_isolating};
use platform::ErrorChain;
use uuid::Uuid;

use crate::{service::OrderService, store::StoreError};

pub struct OrderProcessedHandler {
    service: OrderService,
    queue: String,
}

impl OrderProcessedHandler {
    pub fn new(service: OrderService, queue: String) -> Self {
        OrderProcessedHandler { service, queue }
    }

    /// The order a delivery says was processed, or why it never can be.
    fn order_id(&self, delivery: &Delivery) -> Result<Uuid, HandleError> {
        let _entered = delivery.span(&self.queue).entered();
        match Event::from_json(&delivery.payload) {
            Ok(Event::OrderProcessed(processed)) => {
                tracing::info!(event = "order_processed", order_id = %processed.data.order_id, "order processed");
                Ok(processed.data.order_id)
            }
            Ok(other) => {
                Err(HandleError::Permanent(format!("unexpected {} on this queue", other.event_type())))
            }
            Err(error) => Err(HandleError::Permanent(ErrorChain(&error).to_string())),
        }
    }
}

#[async_trait]
impl EventHandler for OrderProcessedHandler {
    async fn handle(&self, batch: &[Delivery]) -> Vec<Result<Handled, HandleError>> {
        let parsed: Vec<Result<Uuid, HandleError>> = batch.iter().map(|d| self.order_id(d)).collect();
        let ids: Vec<Uuid> = parsed.iter().filter_map(|p| p.as_ref().ok().copied()).collect();
        // One transaction for the batch; should it fail for a reason of its own, each order is
        // moved on its own so that only the offending ones fail.
        let mut results = apply_isolating(&ids, |ids| async move {
            let mut changed: HashSet<Uuid> = match self.service.mark_processed(&ids, Utc::now()).await {
                Ok(changed) => changed.into_iter().collect(),
                Err(error @ (StoreError::Unavailable(_) | StoreError::WriterStopped)) => {
                    return Err(HandleError::Unavailable(ErrorChain(&error).to_string()));
                }
                Err(error) => return Err(HandleError::Transient(ErrorChain(&error).to_string())),
            };
            // The first delivery naming a changed order is the one that changed it; any other is
            // a redelivery.
            Ok(ids
                .iter()
                .map(|id| if changed.remove(id) { Handled::Processed } else { Handled::Duplicate })
                .collect())
        })
        .await
        .into_iter();
        parsed
            .into_iter()
            .map(|p| {
                p.and_then(|_| results.next().unwrap_or(Err(HandleError::Transient("not handled".into()))))
            })
            .collect()
    }
}
