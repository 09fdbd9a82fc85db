//! Consumes `OrderCreated` and `OrderProcessed`: each event goes out once through every channel.
//!
//! Per delivery and channel: claim (event id, channel) in the deduplication store, send, record
//! it as sent. A delivery is
//! - `Processed` when every channel sent it or had sent it before,
//! - `Duplicate` when every channel had sent it before,
//! - a permanent failure (parked at once) when it is not a valid event, or a channel refuses it
//!   for good: retrying cannot help, and a replay later skips the channels that did send it,
//! - a pause (handled again once the dependency is back, however long it takes) when the
//!   deduplication store or a receiver cannot be reached at all,
//! - a transient failure (retried later, parked after the last retry) otherwise, e.g. a receiver
//!   answering 503.

use std::sync::Arc;

use async_trait::async_trait;
use contracts::Event;
use futures::StreamExt;
use messaging::{Delivery, EventHandler, HandleError, Handled};
use tracing::Instrument;

use crate::{
    channel::{Channel, Notification, SendError},
    dedupe::{Claim, Dedupe},
    metrics::NotificationMetrics,
};

pub struct NotificationHandler {
    channels: Vec<Arc<dyn Channel>>,
    dedupe: Arc<dyn Dedupe>,
    metrics: NotificationMetrics,
    queue: String,
    concurrency: usize,
}

impl NotificationHandler {
    /// `concurrency`: deliveries of one batch notified at the same time (at least 1).
    pub fn new(
        channels: Vec<Arc<dyn Channel>>,
        dedupe: Arc<dyn Dedupe>,
        metrics: NotificationMetrics,
        queue: &str,
        concurrency: usize,
    ) -> Self {
        NotificationHandler {
            channels,
            dedupe,
            metrics,
            queue: queue.to_owned(),
            concurrency: concurrency.max(1),
        }
    }

    async fn handle_one(&self, delivery: &Delivery) -> Result<Handled, HandleError> {
        let event = Event::from_json(&delivery.payload).map_err(|e| HandleError::Permanent(e.to_string()))?;
        let notification = Notification::new(&event, &delivery.payload);
        // Every channel gets its chance, so that one receiver being down holds back no other.
        let mut results = Vec::with_capacity(self.channels.len());
        for channel in &self.channels {
            results.push(self.notify(channel.as_ref(), &notification).await);
        }
        combine(results)
    }

    async fn notify(
        &self,
        channel: &dyn Channel,
        notification: &Notification,
    ) -> Result<Handled, HandleError> {
        let name = channel.name();
        let event_id = notification.event_id;
        match self.dedupe.claim(name, event_id).await {
            Ok(Claim::Acquired) => {}
            Ok(Claim::AlreadySent) => {
                tracing::debug!(event = "notification_duplicate", channel = name, "sent before, skipped");
                self.metrics.count(name, "duplicate");
                return Ok(Handled::Duplicate);
            }
            Ok(Claim::InProgress) => {
                self.metrics.count(name, "failed");
                return Err(HandleError::Transient(format!("{name}: another worker is sending it")));
            }
            Err(error) => {
                self.metrics.count(name, "failed");
                return Err(HandleError::Unavailable(format!("{name}: not sent, {error}")));
            }
        }
        match channel.send(notification).await {
            Ok(()) => {
                if let Err(error) = self.dedupe.mark_sent(name, event_id).await {
                    // The delivery is acknowledged anyway: only a copy of the event arriving after
                    // the claim expires would be sent again.
                    tracing::warn!(
                        event = "notification_unrecorded",
                        channel = name,
                        error = %error,
                        "sent, but could not record it as sent"
                    );
                }
                self.metrics.count(name, "sent");
                Ok(Handled::Processed)
            }
            Err(error) => {
                if let Err(release) = self.dedupe.release(name, event_id).await {
                    tracing::warn!(
                        event = "notification_claim_kept",
                        channel = name,
                        error = %release,
                        "could not release the claim; a retry waits until it expires"
                    );
                }
                self.metrics.count(name, "failed");
                Err(match error {
                    SendError::Transient(reason) => HandleError::Transient(format!("{name}: {reason}")),
                    SendError::Permanent(reason) => HandleError::Permanent(format!("{name}: {reason}")),
                    SendError::Unavailable(reason) => HandleError::Unavailable(format!("{name}: {reason}")),
                })
            }
        }
    }
}

#[async_trait]
impl EventHandler for NotificationHandler {
    async fn handle(&self, batch: &[Delivery]) -> Vec<Result<Handled, HandleError>> {
        // Once a dependency turns out to be down, the rest of the batch waits with it instead of
        // asking it again, delivery after delivery.
        let unavailable = std::sync::OnceLock::<String>::new();
        let unavailable = &unavailable;
        let deliveries: Vec<_> = batch
            .iter()
            .map(|delivery| {
                let span = tracing::info_span!(
                    "notify",
                    otel.kind = "consumer",
                    queue = %self.queue,
                    message_id = delivery.message_id.as_deref().unwrap_or(""),
                    attempt = delivery.attempt,
                );
                // The order's trace continues here, so the notification shares its trace id.
                platform::telemetry::set_parent_from_headers(&span, |name| {
                    delivery.headers.get(name).cloned()
                });
                async move {
                    if let Some(reason) = unavailable.get() {
                        return Err(HandleError::Unavailable(reason.clone()));
                    }
                    let outcome = self.handle_one(delivery).await;
                    if let Err(HandleError::Unavailable(reason)) = &outcome {
                        let _ = unavailable.set(reason.clone());
                    }
                    outcome
                }
                .instrument(span)
            })
            .collect();
        // `buffered` keeps the outcomes in delivery order.
        futures::stream::iter(deliveries).buffered(self.concurrency).collect().await
    }
}

/// One outcome for the delivery from one per channel: a permanent failure wins (retrying cannot
/// fix it), then an unavailable dependency (wait for it rather than spend a retry), then a
/// transient failure; otherwise it is a duplicate only if no channel sent anything.
fn combine(results: Vec<Result<Handled, HandleError>>) -> Result<Handled, HandleError> {
    let mut permanent = Vec::new();
    let mut unavailable = Vec::new();
    let mut transient = Vec::new();
    let mut sent = false;
    for result in results {
        match result {
            Ok(Handled::Processed) => sent = true,
            Ok(Handled::Duplicate) => {}
            Err(HandleError::Permanent(reason)) => permanent.push(reason),
            Err(HandleError::Unavailable(reason)) => unavailable.push(reason),
            Err(HandleError::Transient(reason)) => transient.push(reason),
        }
    }
    if !permanent.is_empty() {
        permanent.extend(unavailable);
        permanent.extend(transient);
        Err(HandleError::Permanent(permanent.join("; ")))
    } else if !unavailable.is_empty() {
        unavailable.extend(transient);
        Err(HandleError::Unavailable(unavailable.join("; ")))
    } else if !transient.is_empty() {
        Err(HandleError::Transient(transient.join("; ")))
    } else if sent {
        Ok(Handled::Processed)
    } else {
        Ok(Handled::Duplicate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transient(reason: &str) -> Result<Handled, HandleError> {
        Err(HandleError::Transient(reason.into()))
    }

    fn permanent(reason: &str) -> Result<Handled, HandleError> {
        Err(HandleError::Permanent(reason.into()))
    }

    #[test]
    fn channel_outcomes_combine_into_one() {
        assert_eq!(combine(vec![Ok(Handled::Processed), Ok(Handled::Duplicate)]), Ok(Handled::Processed));
        assert_eq!(combine(vec![Ok(Handled::Duplicate), Ok(Handled::Duplicate)]), Ok(Handled::Duplicate));
        assert_eq!(
            combine(vec![Ok(Handled::Processed), transient("webhook: 503")]),
            transient("webhook: 503")
        );
        assert_eq!(
            combine(vec![transient("log: down"), permanent("webhook: 404")]),
            permanent("webhook: 404; log: down")
        );
        assert_eq!(
            combine(vec![transient("webhook: 503"), Err(HandleError::Unavailable("redis: down".into()))]),
            Err(HandleError::Unavailable("redis: down; webhook: 503".into()))
        );
    }
}
