//! Operator tools for dead-letter queues: look at parked messages, move them back, count.
//!
//! Each operation runs on a channel of its own, closed at the end. A message taken with
//! `basic.get` and not acknowledged stays owned by the queue: should anything fail half-way, the
//! broker puts it back when the channel closes, so none of these operations can lose a message.

use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use lapin::{
    Channel, Confirmation, ErrorKind,
    message::{BasicGetMessage, Delivery as AmqpDelivery},
    options::{
        BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
        QueueDeclareOptions,
    },
    protocol::{AMQPErrorKind, AMQPSoftError},
    types::{FieldTable, ShortString},
};

use super::{RabbitError, RabbitMq, headers, publisher::PERSISTENT, topology::short};
use crate::parked::{DeadLetters, ParkedMessage, Selection};

/// Upper bound on one operator command.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Messages published back per round of confirms during a replay.
const REPLAY_CHUNK: usize = 200;

#[async_trait]
impl DeadLetters for RabbitMq {
    type Error = RabbitError;

    async fn queue_depths(&self, queue: &str) -> Result<(u32, u32), RabbitError> {
        let dead_letter = self.queue_names(queue).dead_letter;
        self.admin(async |channel| {
            let ready = message_count(channel, queue).await?;
            let parked = message_count(channel, &dead_letter).await?;
            Ok((ready, parked))
        })
        .await
    }

    async fn list_parked(
        &self,
        queue: &str,
        selection: &Selection,
    ) -> Result<Vec<ParkedMessage>, RabbitError> {
        let dead_letter = self.queue_names(queue).dead_letter;
        self.admin(async |channel| {
            let scanned = scan(channel, &dead_letter, selection).await?;
            let listed = scanned.selected.iter().map(|(_, parked)| parked.clone()).collect();
            return_all(channel, &dead_letter, &scanned).await?;
            Ok(listed)
        })
        .await
    }

    /// Each message is removed from the dead-letter queue only once the broker has confirmed its
    /// copy in `queue`.
    async fn replay_parked(
        &self,
        queue: &str,
        selection: &Selection,
        progress: &(dyn Fn(usize, usize) + Send + Sync),
    ) -> Result<usize, RabbitError> {
        let dead_letter = self.queue_names(queue).dead_letter;
        self.admin(async |channel| {
            channel.confirm_select(ConfirmSelectOptions::default()).await?;
            let scanned = scan(channel, &dead_letter, selection).await?;
            let total = scanned.selected.len();
            let mut moved = 0;
            for chunk in scanned.selected.chunks(REPLAY_CHUNK) {
                let mut pending = Vec::with_capacity(chunk.len());
                for (message, _) in chunk {
                    let confirm = channel
                        .basic_publish(
                            ShortString::default(),
                            short(queue),
                            BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() },
                            &message.data,
                            replay_properties(message),
                        )
                        .await?;
                    pending.push(confirm);
                }
                let confirmations = join_all(pending).await;
                // A return means `queue` is gone: keep the rest parked rather than guess which.
                let any_returned = confirmations.iter().any(|confirmation| {
                    matches!(confirmation, Ok(Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_))))
                });
                let mut all_confirmed = !any_returned;
                for ((message, _), confirmation) in chunk.iter().zip(confirmations) {
                    if !any_returned && matches!(confirmation, Ok(Confirmation::Ack(None))) {
                        message.acker.ack(BasicAckOptions::default()).await?;
                        moved += 1;
                    } else {
                        all_confirmed = false;
                    }
                }
                progress(moved, total);
                if !all_confirmed {
                    break;
                }
            }
            // Whatever was selected but not moved is still unacknowledged: back in its place.
            return_all(channel, &dead_letter, &scanned).await?;
            Ok(moved)
        })
        .await
    }

    async fn discard_parked(&self, queue: &str, selection: &Selection) -> Result<usize, RabbitError> {
        let dead_letter = self.queue_names(queue).dead_letter;
        self.admin(async |channel| {
            let scanned = scan(channel, &dead_letter, selection).await?;
            for (message, _) in &scanned.selected {
                message.acker.ack(BasicAckOptions::default()).await?;
            }
            return_all(channel, &dead_letter, &scanned).await?;
            Ok(scanned.selected.len())
        })
        .await
    }
}

/// A dead-letter queue taken whole, unacknowledged: the messages a selection picked, oldest
/// first, and the others.
struct Scanned {
    selected: Vec<(AmqpDelivery, ParkedMessage)>,
    unselected: Vec<AmqpDelivery>,
}

/// Takes every message of `dead_letter` (as deep as it is now) without acknowledging it, and picks
/// the oldest `selection.limit` that match, by when they were parked.
///
/// Oldest by their parking time, not by their place in the queue: a quorum queue serves returned
/// messages before all others, and not always in the order they were returned.
async fn scan(channel: &Channel, dead_letter: &str, selection: &Selection) -> Result<Scanned, RabbitError> {
    let mut taken = Vec::new();
    let mut remaining = 1;
    while remaining > 0 {
        let Some(message) = get(channel, dead_letter).await? else { break };
        remaining = if taken.is_empty() { message.message_count } else { remaining - 1 };
        let parked = to_parked(&message.delivery);
        taken.push((message.delivery, parked));
    }
    // Stable: messages parked at the same instant, or without the header, keep their queue order.
    taken.sort_by_key(|(_, parked)| {
        parked.headers.get(headers::FAILED_AT).and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
    });
    let mut scanned = Scanned { selected: Vec::new(), unselected: Vec::new() };
    for (delivery, parked) in taken {
        if scanned.selected.len() < selection.limit && selection.matches(&parked) {
            scanned.selected.push((delivery, parked));
        } else {
            scanned.unselected.push(delivery);
        }
    }
    Ok(scanned)
}

/// Returns every message still unacknowledged on the channel, and waits until the queue holds
/// them again: the broker applies returns after it has answered them, and the next command must
/// find the whole queue.
async fn return_all(channel: &Channel, dead_letter: &str, scanned: &Scanned) -> Result<(), RabbitError> {
    let unacknowledged: Vec<&AmqpDelivery> = scanned
        .selected
        .iter()
        .map(|(message, _)| message)
        .chain(&scanned.unselected)
        .filter(|message| message.acker.usable())
        .collect();
    // `multiple` returns every unacknowledged delivery up to the one it names: name the last.
    if let Some(last) = unacknowledged.iter().max_by_key(|message| message.delivery_tag) {
        last.acker.nack(BasicNackOptions { multiple: true, requeue: true }).await?;
    }
    let returned = u32::try_from(unacknowledged.len()).unwrap_or(u32::MAX);
    while message_count(channel, dead_letter).await? < returned {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

impl RabbitMq {
    /// Runs `operation` on a fresh channel of the live connection, bounded in time.
    async fn admin<T>(
        &self,
        operation: impl AsyncFnOnce(&Channel) -> Result<T, RabbitError>,
    ) -> Result<T, RabbitError> {
        let session =
            self.shared.session().ok_or_else(|| RabbitError::Unavailable("not connected".into()))?;
        let work = async {
            let channel = session.connection.create_channel().await?;
            let result = operation(&channel).await;
            if channel.status().connected() {
                let _ = channel.close(200, "done".into()).await;
            }
            result
        };
        match session.unless_lost(tokio::time::timeout(ADMIN_TIMEOUT, work)).await {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(RabbitError::Timeout(ADMIN_TIMEOUT)),
            None => Err(RabbitError::Unavailable(session.unavailable_reason().unwrap_or_default())),
        }
    }
}

/// One message, not acknowledged; `None` when the queue is empty.
async fn get(channel: &Channel, queue: &str) -> Result<Option<BasicGetMessage>, RabbitError> {
    channel
        .basic_get(short(queue), BasicGetOptions { no_ack: false })
        .await
        .map_err(|error| not_found_or(error, queue))
}

async fn message_count(channel: &Channel, queue: &str) -> Result<u32, RabbitError> {
    let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    channel
        .queue_declare(short(queue), options, FieldTable::default())
        .await
        .map(|declared| declared.message_count())
        .map_err(|error| not_found_or(error, queue))
}

fn not_found_or(error: lapin::Error, queue: &str) -> RabbitError {
    match error.kind() {
        ErrorKind::ProtocolError(amqp)
            if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)) =>
        {
            RabbitError::QueueNotFound(queue.to_owned())
        }
        _ => RabbitError::Broker(error),
    }
}

fn to_parked(message: &AmqpDelivery) -> ParkedMessage {
    let properties = &message.properties;
    let amqp_headers = properties.headers().as_ref();
    ParkedMessage {
        message_id: properties.message_id().as_ref().map(|id| id.as_str().to_owned()),
        event_type: properties.kind().as_ref().map(|kind| kind.as_str().to_owned()),
        routing_key: headers::original_routing_key(amqp_headers, message.routing_key.as_str()),
        reason: headers::text(amqp_headers, headers::DEATH_REASON)
            .or_else(|| headers::text(amqp_headers, headers::ERROR))
            .or_else(|| headers::text(amqp_headers, headers::FIRST_DEATH_REASON)),
        headers: headers::text_headers(amqp_headers),
        payload: String::from_utf8_lossy(&message.data).into_owned(),
    }
}

/// The replayed copy starts a fresh round: no retry count, no parking marks.
fn replay_properties(message: &AmqpDelivery) -> lapin::BasicProperties {
    let amqp_headers = message.properties.headers().as_ref();
    let mut copy = headers::copy_without(
        amqp_headers,
        &[headers::RETRY_COUNT, headers::DEATH_REASON, headers::FAILED_AT],
    );
    let original = headers::original_routing_key(amqp_headers, message.routing_key.as_str());
    headers::insert_text(&mut copy, headers::ORIGINAL_ROUTING_KEY, &original);
    message.properties.clone().with_delivery_mode(PERSISTENT).with_headers(copy)
}
