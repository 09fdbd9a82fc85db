//! Consumes `OrderCreated` and `OrderCancelled`: a whole batch of deliveries is applied in one
//! transaction.

use async_trait::async_trait;
use contracts::Event;
use messaging::{Delivery, EventHandler, HandleError, Handled, consume::apply_isolating};
use platform::ErrorChain;

use crate::{
    domain::{Effect, OrderChange, OrderFact},
    service::{AnalyticsService, processed_event},
    store::Incoming,
};

pub struct OrderEventsHandler {
    service: AnalyticsService,
    queue: String,
}

impl OrderEventsHandler {
    pub fn new(service: AnalyticsService, queue: String) -> Self {
        OrderEventsHandler { service, queue }
    }
}

/// The change a delivery announces, or why it can never be applied.
fn parse(delivery: &Delivery) -> Result<Incoming, HandleError> {
    match Event::from_json(&delivery.payload) {
        Ok(Event::OrderCreated(event)) => {
            let fact = OrderFact::from(&event);
            let processed_event = Some(processed_event(&fact));
            Ok(Incoming { event_id: event.event_id, change: OrderChange::Created(fact), processed_event })
        }
        Ok(Event::OrderCancelled(event)) => Ok(Incoming {
            event_id: event.event_id,
            change: OrderChange::Cancelled { order_id: event.data.order_id },
            processed_event: None,
        }),
        Ok(other) => {
            tracing::warn!(
                event = "unexpected_event",
                event_type = other.event_type(),
                "parking an unexpected event"
            );
            Err(HandleError::Permanent(format!("unexpected {} on this queue", other.event_type())))
        }
        Err(error) => {
            let reason = ErrorChain(&error).to_string();
            tracing::warn!(event = "invalid_event", error = %reason, "parking an event that breaks the contract");
            Err(HandleError::Permanent(reason))
        }
    }
}

#[async_trait]
impl EventHandler for OrderEventsHandler {
    async fn handle(&self, batch: &[Delivery]) -> Vec<Result<Handled, HandleError>> {
        let mut outcomes: Vec<Result<Handled, HandleError>> =
            vec![Err(HandleError::Transient("not handled".into())); batch.len()];
        let mut incoming = Vec::with_capacity(batch.len());
        // Position in the batch and span of each delivery being applied.
        let mut pending = Vec::with_capacity(batch.len());
        for (position, delivery) in batch.iter().enumerate() {
            let span = delivery.span(&self.queue);
            match span.in_scope(|| parse(delivery)) {
                Ok(event) => {
                    incoming.push(event);
                    pending.push((position, span));
                }
                Err(error) => outcomes[position] = Err(error),
            }
        }
        if incoming.is_empty() {
            return outcomes;
        }

        let order_ids: Vec<_> = incoming.iter().map(|event| event.change.order_id()).collect();
        // One transaction for the batch; should it fail for a reason of its own, each event is
        // applied on its own so that only the offending ones fail.
        let results = apply_isolating(&incoming, |batch| async move {
            match self.service.apply(&batch).await {
                Ok(applied) => Ok(applied.effects),
                Err(error) => {
                    tracing::warn!(event = "apply_failed", error = %error, "could not apply events");
                    Err(error.into_handle_error())
                }
            }
        })
        .await;
        for (((position, span), result), order_id) in pending.into_iter().zip(results).zip(order_ids) {
            let _entered = span.enter();
            outcomes[position] = result.map(|effect| match effect {
                Effect::Counted => {
                    tracing::info!(event = "order_counted", order_id = %order_id, "order counted");
                    Handled::Processed
                }
                Effect::Cancelled => {
                    tracing::info!(event = "order_cancelled", order_id = %order_id, "order cancelled");
                    Handled::Processed
                }
                Effect::CreatedAfterCancellation => {
                    tracing::info!(
                        event = "cancelled_order_created",
                        order_id = %order_id,
                        "order created after its cancellation arrived; not counted"
                    );
                    Handled::Processed
                }
                Effect::NoChange => {
                    tracing::info!(event = "duplicate_event", order_id = %order_id, "event already applied; skipped");
                    Handled::Duplicate
                }
            });
        }
        outcomes
    }
}
