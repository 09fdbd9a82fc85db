//! The consume pipeline both buses share: run the handler on a batch, wait out outages, and decide
//! what becomes of each delivery (ack, delayed retry, parking), with its logs and metrics.
//!
//! An outage pauses the consumer: deliveries whose handler reported a dependency unavailable are
//! handled again after a growing pause, for as long as it takes, and never count as an attempt.
//! Retries and parking are for failures of one message.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::FutureExt;
use platform::DependencyStatus;
use tracing::{info, warn};

use crate::{
    Delivery, EventHandler, HandleError, Handled, MessagingMetrics,
    metrics::{DeadLetterLabels, OutcomeLabels, QueueLabels},
};

/// First pause after a dependency was found unavailable; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(250);
/// Longest pause between two tries while a dependency is down: also the longest a consumer
/// takes to notice that it is back.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// What becomes of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Done (`ack`) or done before (`duplicate`).
    Ack { outcome: &'static str },
    /// Into the `retry_queue`-th delayed retry (0-based).
    Retry { retry_queue: usize },
    /// Into the dead-letter queue.
    Park { reason: String, label: &'static str },
    /// Back into its queue unhandled, as it was: the consumer is stopping, or has held it as
    /// long as it may while paused.
    Requeue,
}

/// How handling a batch ended.
pub(crate) enum Handling {
    /// One action per delivery, in order.
    Done(Vec<Action>),
    /// Stopped while paused, or paused for longer than the consumer may hold deliveries: none
    /// of the batch is settled; the adapter puts it back.
    Interrupted,
}

/// One queue's consumer logic, independent of the bus.
pub(crate) struct Pipeline {
    pub queue: String,
    pub handler: Arc<dyn EventHandler>,
    /// Delayed retries before a transiently failing delivery is parked.
    pub retries: usize,
    pub metrics: MessagingMetrics,
    pub readiness: Option<DependencyStatus>,
    /// Longest a paused consumer holds a batch before handing it back (a broker closes the
    /// channel of a consumer that holds a delivery unacknowledged for too long).
    pub max_hold: Option<Duration>,
    paused: AtomicBool,
}

impl Pipeline {
    pub fn new(
        queue: &str,
        handler: Arc<dyn EventHandler>,
        retries: usize,
        metrics: MessagingMetrics,
        readiness: Option<DependencyStatus>,
        max_hold: Option<Duration>,
    ) -> Pipeline {
        metrics.init_queue(queue);
        if let Some(status) = &readiness {
            status.set_up();
        }
        Pipeline {
            queue: queue.to_owned(),
            handler,
            retries,
            metrics,
            readiness,
            max_hold,
            paused: AtomicBool::new(false),
        }
    }

    /// Handles `deliveries` until each has a final outcome. While a dependency is unavailable the
    /// consumer pauses and tries the affected deliveries again; `stop` (shutdown, a lost
    /// connection) or holding them longer than `max_hold` interrupts the pause.
    pub async fn handle(&self, deliveries: &[Delivery], stop: impl Future<Output = ()>) -> Handling {
        let started = Instant::now();
        let mut outcomes = self.handle_guarded(deliveries).await;
        let mut stop = std::pin::pin!(stop);
        let mut pause = FIRST_PAUSE;
        loop {
            let waiting: Vec<usize> = outcomes
                .iter()
                .enumerate()
                .filter(|(_, outcome)| matches!(outcome, Err(HandleError::Unavailable(_))))
                .map(|(index, _)| index)
                .collect();
            let Some(&first) = waiting.first() else { break };
            self.set_paused(Some(
                outcomes[first].as_ref().err().map(HandleError::reason).unwrap_or_default(),
            ));
            if self.max_hold.is_some_and(|max| started.elapsed() >= max) {
                return Handling::Interrupted;
            }
            tokio::select! {
                biased;
                () = &mut stop => return Handling::Interrupted,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(MAX_PAUSE);
            // One delivery probes the dependency; the others follow only once it is back, so that
            // a dependency that is still down is not asked once per waiting delivery.
            let probe = self.handle_guarded(std::slice::from_ref(&deliveries[first])).await;
            let back = !matches!(probe.first(), Some(Err(HandleError::Unavailable(_))));
            outcomes[first] =
                probe.into_iter().next().unwrap_or(Err(HandleError::Unavailable(String::new())));
            if back && waiting.len() > 1 {
                let rest: Vec<usize> = waiting[1..].to_vec();
                let subset: Vec<Delivery> = rest.iter().map(|&index| deliveries[index].clone()).collect();
                for (index, outcome) in rest.into_iter().zip(self.handle_guarded(&subset).await) {
                    outcomes[index] = outcome;
                }
            }
        }
        self.set_paused(None);
        self.metrics
            .processing_duration
            .get_or_create(&QueueLabels { queue: self.queue.clone() })
            .observe(started.elapsed().as_secs_f64());
        Handling::Done(
            deliveries
                .iter()
                .zip(outcomes)
                .map(|(delivery, outcome)| self.decide(delivery, outcome))
                .collect(),
        )
    }

    /// Runs the handler. Whatever happens, there is one outcome per delivery: a panic, or an
    /// outcome the handler left out, is a transient failure.
    async fn handle_guarded(&self, deliveries: &[Delivery]) -> Vec<Result<Handled, HandleError>> {
        let handled = std::panic::AssertUnwindSafe(self.handler.handle(deliveries)).catch_unwind().await;
        let mut outcomes = match handled {
            Ok(outcomes) => outcomes,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|text| (*text).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                tracing::error!(event = "handler_panicked", queue = %self.queue, panic = %message, "handler panicked");
                vec![Err(HandleError::Transient(format!("handler panicked: {message}"))); deliveries.len()]
            }
        };
        if outcomes.len() != deliveries.len() {
            tracing::error!(
                event = "handler_outcome_mismatch",
                queue = %self.queue,
                deliveries = deliveries.len(),
                outcomes = outcomes.len(),
                "handler returned a wrong number of outcomes"
            );
            outcomes.resize(
                deliveries.len(),
                Err(HandleError::Transient("the handler returned no outcome".into())),
            );
        }
        outcomes
    }

    /// Enters (`Some(reason)`) or leaves (`None`) the paused state, telling logs, metrics and
    /// readiness when it changes.
    fn set_paused(&self, reason: Option<&str>) {
        let paused = reason.is_some();
        if self.paused.swap(paused, Ordering::SeqCst) == paused {
            return;
        }
        let gauge = self.metrics.paused.get_or_create(&QueueLabels { queue: self.queue.clone() });
        match reason {
            Some(reason) => {
                warn!(event = "consumer_paused", queue = %self.queue, reason = %reason, "a dependency is unavailable; consumer paused");
                gauge.set(1);
                if let Some(status) = &self.readiness {
                    status.set_down(format!("paused: {reason}"));
                }
            }
            None => {
                info!(event = "consumer_resumed", queue = %self.queue, "dependency back; consumer resumed");
                gauge.set(0);
                if let Some(status) = &self.readiness {
                    status.set_up();
                }
            }
        }
    }

    fn decide(&self, delivery: &Delivery, outcome: Result<Handled, HandleError>) -> Action {
        match outcome {
            Ok(Handled::Processed) => Action::Ack { outcome: "ack" },
            Ok(Handled::Duplicate) => Action::Ack { outcome: "duplicate" },
            Err(HandleError::Permanent(reason)) => Action::Park { reason, label: "permanent" },
            // Only reached if the pause loop was left without an outcome: hand it back untouched.
            Err(HandleError::Unavailable(_)) => Action::Requeue,
            Err(HandleError::Transient(reason)) => {
                // Attempt n (1-based) waits in the n-th retry queue.
                let retry_queue = delivery.attempt.saturating_sub(1) as usize;
                if retry_queue < self.retries {
                    warn!(
                        event = "delivery_retry",
                        queue = %self.queue,
                        message_id = delivery.message_id.as_deref().unwrap_or_default(),
                        attempt = delivery.attempt,
                        reason = %reason,
                        "delivery failed, retrying later"
                    );
                    Action::Retry { retry_queue }
                } else {
                    Action::Park { reason, label: "retries_exhausted" }
                }
            }
        }
    }

    /// Logs a parking and counts a settled delivery.
    pub fn settled(&self, delivery: &Delivery, action: &Action) {
        let metrics = &self.metrics;
        let queue = &self.queue;
        let outcome = match action {
            Action::Ack { outcome } => outcome,
            Action::Retry { .. } => {
                metrics.retried.get_or_create(&QueueLabels { queue: queue.clone() }).inc();
                "retry"
            }
            Action::Park { reason, label } => {
                warn!(
                    event = "delivery_dead_lettered",
                    queue = %queue,
                    message_id = delivery.message_id.as_deref().unwrap_or_default(),
                    reason = %reason,
                    kind = label,
                    "parked the delivery in the dead-letter queue"
                );
                metrics
                    .dead_lettered
                    .get_or_create(&DeadLetterLabels { queue: queue.clone(), reason: label })
                    .inc();
                "dead_lettered"
            }
            Action::Requeue => "requeued",
        };
        metrics.consumed.get_or_create(&OutcomeLabels { queue: queue.clone(), outcome }).inc();
    }
}

/// A batch: `first`, then what `next_ready` yields without waiting (it answers `None` when
/// nothing more has arrived), up to `size` deliveries.
pub(crate) fn gather<T>(first: T, size: usize, mut next_ready: impl FnMut() -> Option<T>) -> Vec<T> {
    let mut batch = vec![first];
    while batch.len() < size {
        match next_ready() {
            Some(item) => batch.push(item),
            None => break,
        }
    }
    batch
}

/// For handlers that apply a batch in one transaction: applies `items` together and, when that
/// fails for a reason other than an outage, applies each item on its own, so that one bad item
/// fails alone and the others succeed once. `apply` returns one result per item, in order.
pub async fn apply_isolating<T, R, F, Fut>(items: &[T], apply: F) -> Vec<Result<R, HandleError>>
where
    T: Clone,
    F: Fn(Vec<T>) -> Fut,
    Fut: Future<Output = Result<Vec<R>, HandleError>>,
{
    match apply(items.to_vec()).await {
        Ok(results) => results.into_iter().map(Ok).collect(),
        Err(error @ HandleError::Unavailable(_)) => items.iter().map(|_| Err(error.clone())).collect(),
        Err(error) if items.len() == 1 => vec![Err(error)],
        Err(error) => {
            tracing::info!(event = "batch_isolating", items = items.len(), error = %error, "batch failed; applying its items one by one");
            let mut results = Vec::with_capacity(items.len());
            for item in items {
                results.push(match apply(vec![item.clone()]).await {
                    Ok(mut single) => single.pop().ok_or_else(|| HandleError::Transient("no result".into())),
                    Err(error) => Err(error),
                });
            }
            results
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bad_item_fails_alone() {
        let apply = |items: Vec<i32>| async move {
            if items.contains(&3) {
                Err(HandleError::Permanent("3 is bad".into()))
            } else {
                Ok(items.iter().map(|item| item * 10).collect())
            }
        };
        let results = apply_isolating(&[1, 2, 3, 4], apply).await;
        assert_eq!(results, [Ok(10), Ok(20), Err(HandleError::Permanent("3 is bad".into())), Ok(40)]);
    }

    #[tokio::test]
    async fn an_outage_is_not_split() {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let apply = |_items: Vec<i32>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<Vec<i32>, _>(HandleError::Unavailable("down".into())) }
        };
        let results = apply_isolating(&[1, 2, 3], apply).await;
        assert!(results.iter().all(|result| matches!(result, Err(HandleError::Unavailable(_)))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
