//! Consumes `OrderCreated` and `OrderProcessed`: each event goes out once through every channel.
//!
//! Per channel, for the deliveries of a batch together: claim (event id, channel) in the
//! deduplication store, send, record as sent. A delivery is
//! - `Processed` when every channel sent it or had sent it before,
//! - `Duplicate` when every channel had sent it before,
//! - a permanent failure (parked at once) when it is not a valid event, or a channel refuses it
//!   for good: retrying cannot help, and a replay later skips the channels that did send it,
//! - a pause (handled again once the dependency is back, however long it takes) when the
//!   deduplication store or a receiver cannot be reached at all,
//! - a transient failure (retried later, parked after the last retry) otherwise, e.g. a receiver
//!   answering 503.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use contracts::Event;
use futures::StreamExt;
use messaging::{Delivery, EventHandler, HandleError, Handled};
use platform::ErrorChain;
use tracing::Instrument;
use uuid::Uuid;

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

    /// Sends every notification through `channel` once: claims the events of the batch in one
    /// call, sends what it claimed (`concurrency` at a time), and records what was sent, or gives
    /// up the claims of failed sends, chunk by chunk as the sends finish: a crash leaves unrecorded
    /// only the sends in flight and the chunk being recorded.
    async fn notify(&self, channel: &dyn Channel, pending: &[Pending]) -> Vec<Result<Handled, HandleError>> {
        let name = channel.name();
        let event_ids: Vec<Uuid> = pending.iter().map(|p| p.notification.event_id).collect();
        let claims = match self.dedupe.claim(name, &event_ids).await {
            Ok(claims) => claims,
            Err(error) => {
                return pending
                    .iter()
                    .map(|_| {
                        self.metrics.count(name, "failed");
                        Err(HandleError::Unavailable(format!("{name}: not sent, {error}")))
                    })
                    .collect();
            }
        };
        // Once the receiver turns out to be unreachable, the rest of the batch waits with it
        // instead of asking it again, notification after notification.
        let unreachable = OnceLock::<String>::new();
        let unreachable = &unreachable;
        let mut sends = Vec::with_capacity(pending.len());
        for (index, (pending, claim)) in pending.iter().zip(claims).enumerate() {
            sends.push(async move {
                let attempt = match claim {
                    Claim::AlreadySent => Attempt::SentBefore,
                    Claim::InProgress => Attempt::ClaimedElsewhere,
                    Claim::Acquired => match unreachable.get() {
                        Some(reason) => Attempt::Send(Err(SendError::Unavailable(reason.clone()))),
                        None => {
                            let sent =
                                channel.send(&pending.notification).instrument(pending.span.clone()).await;
                            if let Err(SendError::Unavailable(reason)) = &sent {
                                let _ = unreachable.set(reason.clone());
                            }
                            Attempt::Send(sent)
                        }
                    },
                };
                (index, attempt)
            });
        }
        let mut results: Vec<Option<Result<Handled, HandleError>>> = vec![None; pending.len()];
        let mut finished =
            futures::stream::iter(sends).buffer_unordered(self.concurrency).ready_chunks(self.concurrency);
        while let Some(attempts) = finished.next().await {
            self.record(name, &event_ids, &attempts).await;
            for (index, attempt) in attempts {
                results[index] = Some(self.outcome(name, attempt));
            }
        }
        results.into_iter().map(|result| result.expect("every notification was attempted")).collect()
    }

    /// Records the successful sends of `attempts` as sent, and gives up the claims of the others.
    async fn record(&self, channel: &'static str, event_ids: &[Uuid], attempts: &[(usize, Attempt)]) {
        let sends = |succeeded: bool| -> Vec<Uuid> {
            attempts
                .iter()
                .filter(|(_, attempt)| matches!(attempt, Attempt::Send(sent) if sent.is_ok() == succeeded))
                .map(|(index, _)| event_ids[*index])
                .collect()
        };
        let (sent, failed) = (sends(true), sends(false));
        if let Err(error) = self.dedupe.mark_sent(channel, &sent).await {
            // The deliveries are acknowledged anyway: only a copy of an event arriving after its
            // claim expires would be sent again.
            tracing::warn!(
                event = "notification_unrecorded",
                channel,
                notifications = sent.len(),
                error = %error,
                "sent, but could not record it as sent"
            );
        }
        if let Err(error) = self.dedupe.release(channel, &failed).await {
            tracing::warn!(
                event = "notification_claim_kept",
                channel,
                notifications = failed.len(),
                error = %error,
                "could not release the claim; a retry waits until it expires"
            );
        }
    }

    fn outcome(&self, channel: &'static str, attempt: Attempt) -> Result<Handled, HandleError> {
        match attempt {
            Attempt::SentBefore => {
                tracing::debug!(event = "notification_duplicate", channel, "sent before, skipped");
                self.metrics.count(channel, "duplicate");
                Ok(Handled::Duplicate)
            }
            Attempt::ClaimedElsewhere => {
                self.metrics.count(channel, "failed");
                Err(HandleError::Transient(format!("{channel}: another worker is sending it")))
            }
            Attempt::Send(Ok(())) => {
                self.metrics.count(channel, "sent");
                Ok(Handled::Processed)
            }
            Attempt::Send(Err(error)) => {
                self.metrics.count(channel, "failed");
                Err(match error {
                    SendError::Transient(reason) => HandleError::Transient(format!("{channel}: {reason}")),
                    SendError::Permanent(reason) => HandleError::Permanent(format!("{channel}: {reason}")),
                    SendError::Unavailable(reason) => {
                        HandleError::Unavailable(format!("{channel}: {reason}"))
                    }
                })
            }
        }
    }
}

/// A valid event of the batch, waiting to be notified.
struct Pending {
    notification: Notification,
    span: tracing::Span,
}

/// What came of one notification on one channel.
enum Attempt {
    SentBefore,
    ClaimedElsewhere,
    Send(Result<(), SendError>),
}

#[async_trait]
impl EventHandler for NotificationHandler {
    async fn handle(&self, batch: &[Delivery]) -> Vec<Result<Handled, HandleError>> {
        let mut outcomes: Vec<Option<Result<Handled, HandleError>>> = vec![None; batch.len()];
        let mut pending = Vec::with_capacity(batch.len());
        let mut positions = Vec::with_capacity(batch.len());
        for (index, delivery) in batch.iter().enumerate() {
            match Event::from_json(&delivery.payload) {
                Ok(event) => {
                    pending.push(Pending {
                        notification: Notification::new(&event, &delivery.payload),
                        span: delivery.span(&self.queue),
                    });
                    positions.push(index);
                }
                Err(error) => {
                    outcomes[index] = Some(Err(HandleError::Permanent(ErrorChain(&error).to_string())));
                }
            }
        }
        // Every channel gets its chance, so that one receiver being down holds back no other.
        let mut per_channel = Vec::with_capacity(self.channels.len());
        for channel in &self.channels {
            per_channel.push(self.notify(channel.as_ref(), &pending).await.into_iter());
        }
        for index in positions {
            let results = per_channel.iter_mut().map(|results| results.next().expect("one result per event"));
            outcomes[index] = Some(combine(results.collect()));
        }
        outcomes.into_iter().map(|outcome| outcome.expect("every delivery has an outcome")).collect()
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
