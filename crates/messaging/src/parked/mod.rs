//! Parked messages: what operators see of a dead-letter queue, which of them a command acts on,
//! and the operations every bus adapter offers on them ([`DeadLetters`]).

pub mod cli;
pub mod headers;

use std::collections::BTreeMap;

use async_trait::async_trait;

/// A message parked in a dead-letter queue, as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ParkedMessage {
    pub message_id: Option<String>,
    pub event_type: Option<String>,
    pub routing_key: String,
    /// Why it was parked (`x-death-reason` / `x-error` headers, or the broker's own reason).
    pub reason: Option<String>,
    pub headers: BTreeMap<String, String>,
    /// The body, as text when it is UTF-8.
    pub payload: String,
}

/// Which parked messages a command acts on: the oldest `limit` of those that match every filter
/// given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Only messages with one of these message ids (any id when empty).
    pub ids: Vec<String>,
    /// Only messages whose reason contains this text.
    pub reason: Option<String>,
    pub limit: usize,
}

impl Selection {
    /// The oldest `limit` parked messages.
    pub fn first(limit: usize) -> Selection {
        Selection { ids: Vec::new(), reason: None, limit }
    }

    /// Every parked message.
    pub fn all() -> Selection {
        Selection::first(usize::MAX)
    }

    /// The messages with these ids.
    pub fn ids(ids: impl IntoIterator<Item = String>) -> Selection {
        Selection { ids: ids.into_iter().collect(), ..Selection::all() }
    }

    pub fn matches(&self, message: &ParkedMessage) -> bool {
        let id_matches =
            self.ids.is_empty() || message.message_id.as_ref().is_some_and(|id| self.ids.contains(id));
        let reason_matches = self.reason.as_ref().is_none_or(|wanted| {
            message.reason.as_ref().is_some_and(|reason| reason.contains(wanted.as_str()))
        });
        id_matches && reason_matches
    }
}

/// The dead-letter queues of a bus, as operators act on them. Every operation leaves the messages
/// it does not select parked, in the same order.
#[async_trait]
pub trait DeadLetters: Send + Sync {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Messages waiting in `queue` for its consumer, and messages parked in its dead-letter queue.
    async fn queue_depths(&self, queue: &str) -> Result<(u32, u32), Self::Error>;

    /// The parked messages of `queue` that `selection` names, oldest first; they stay parked.
    async fn list_parked(
        &self,
        queue: &str,
        selection: &Selection,
    ) -> Result<Vec<ParkedMessage>, Self::Error>;

    /// Sends the selected parked messages of `queue` back to its consumer, for a fresh round of
    /// attempts; `progress` hears how many have moved so far, of how many selected. Returns how
    /// many moved.
    async fn replay_parked(
        &self,
        queue: &str,
        selection: &Selection,
        progress: &(dyn Fn(usize, usize) + Send + Sync),
    ) -> Result<usize, Self::Error>;

    /// Deletes the selected parked messages of `queue` for good; returns how many.
    async fn discard_parked(&self, queue: &str, selection: &Selection) -> Result<usize, Self::Error>;
}

/// How often [`sample_queue_depths`] asks the bus.
pub const DEPTH_SAMPLE_PERIOD: std::time::Duration = std::time::Duration::from_secs(15);

/// After a failed sample, the next one comes this soon: the first samples after a start or an
/// outage then follow the connection closely.
const DEPTH_RETRY_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

/// Until shutdown, at once and then every [`DEPTH_SAMPLE_PERIOD`]: how many messages wait in
/// `queue` and are parked in its dead-letter queue, into the `queue_messages_ready` and
/// `queue_messages_parked` gauges. The services' own view of their queues, so that alerts need no
/// metrics from the broker. While the bus cannot answer, the two series are removed rather than
/// left at a stale value, and it asks again every [`DEPTH_RETRY_PERIOD`].
pub(crate) fn sample_queue_depths<D>(
    bus: D,
    queue: String,
    metrics: crate::MessagingMetrics,
    shutdown: platform::Shutdown,
) where
    D: DeadLetters + 'static,
{
    let stop = shutdown.clone();
    shutdown.spawn(async move {
        let labels = crate::metrics::QueueLabels { queue };
        loop {
            let next = match bus.queue_depths(&labels.queue).await {
                Ok((ready, parked)) => {
                    metrics.queue_ready.get_or_create(&labels).set(i64::from(ready));
                    metrics.queue_parked.get_or_create(&labels).set(i64::from(parked));
                    DEPTH_SAMPLE_PERIOD
                }
                Err(error) => {
                    tracing::debug!(event = "queue_depths_failed", queue = %labels.queue, error = %error, "cannot sample the queue's depths");
                    metrics.queue_ready.remove(&labels);
                    metrics.queue_parked.remove(&labels);
                    DEPTH_RETRY_PERIOD
                }
            };
            tokio::select! {
                () = stop.requested() => return,
                () = tokio::time::sleep(next) => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parked(id: &str, reason: &str) -> ParkedMessage {
        ParkedMessage {
            message_id: Some(id.into()),
            event_type: None,
            routing_key: "order.created".into(),
            reason: Some(reason.into()),
            headers: BTreeMap::new(),
            payload: String::new(),
        }
    }

    #[test]
    fn a_selection_matches_every_filter_it_has() {
        let message = parked("a", "webhook answered 410 Gone");
        assert!(Selection::all().matches(&message));
        assert!(Selection::ids(["a".to_owned(), "b".to_owned()]).matches(&message));
        assert!(!Selection::ids(["b".to_owned()]).matches(&message));
        let by_reason = |reason: &str| Selection { reason: Some(reason.into()), ..Selection::all() };
        assert!(by_reason("410").matches(&message));
        assert!(!by_reason("timeout").matches(&message));
        let both = Selection { ids: vec!["a".into()], reason: Some("timeout".into()), limit: 1 };
        assert!(!both.matches(&message), "both filters must match");
        let anonymous = ParkedMessage { message_id: None, ..message };
        assert!(!Selection::ids(["a".to_owned()]).matches(&anonymous));
    }
}
