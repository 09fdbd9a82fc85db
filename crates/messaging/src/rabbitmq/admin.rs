//! Operator tools for dead-letter queues: look at parked messages, move them back, count.
//!
//! Each operation runs on a channel of its own, closed at the end. A message taken with
//! `basic.get` and not acknowledged stays owned by the queue: should anything fail half-way, the
//! broker puts it back when the channel closes, so none of these operations can lose a message.

use std::time::Duration;

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
use crate::ParkedMessage;

/// Upper bound on one operator command.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

impl RabbitMq {
    /// Up to `limit` messages parked in the dead-letter queue of `queue`, oldest first. They stay
    /// where they are, in the same order.
    ///
    /// A quorum queue serves returned messages before all others, in the order they were returned.
    /// So the whole queue (as deep as it is now) is taken and then returned in one go: returning
    /// only the first `limit` would put them behind the rest.
    pub async fn list_parked(&self, queue: &str, limit: usize) -> Result<Vec<ParkedMessage>, RabbitError> {
        let dead_letter = self.queue_names(queue).dead_letter;
        self.admin(async |channel| {
            let mut parked = Vec::new();
            let mut remaining = 1;
            let mut last = None;
            while remaining > 0 {
                let Some(message) = get(channel, &dead_letter).await? else { break };
                remaining = if last.is_none() { message.message_count } else { remaining - 1 };
                if parked.len() < limit {
                    parked.push(to_parked(&message.delivery));
                }
                last = Some(message.delivery);
            }
            if let Some(last) = last {
                last.acker.nack(BasicNackOptions { multiple: true, requeue: true }).await?;
            }
            Ok(parked)
        })
        .await
    }

    /// Moves up to `limit` parked messages of `queue` back to it, for another round of attempts
    /// (their retry count starts over). Each is removed from the dead-letter queue only once the
    /// broker has confirmed its copy in `queue`. Returns how many were moved.
    pub async fn replay_parked(&self, queue: &str, limit: usize) -> Result<usize, RabbitError> {
        let dead_letter = self.queue_names(queue).dead_letter;
        self.admin(async |channel| {
            channel.confirm_select(ConfirmSelectOptions::default()).await?;
            let taken = take(channel, &dead_letter, limit).await?;
            let mut pending = Vec::with_capacity(taken.len());
            for message in &taken {
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
            // A return means `queue` is gone: keep every message parked rather than guess which.
            let any_returned = confirmations.iter().any(|confirmation| {
                matches!(confirmation, Ok(Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_))))
            });
            let mut moved = 0;
            for (message, confirmation) in taken.iter().zip(confirmations) {
                if !any_returned && matches!(confirmation, Ok(Confirmation::Ack(None))) {
                    message.acker.ack(BasicAckOptions::default()).await?;
                    moved += 1;
                } else {
                    message.acker.nack(BasicNackOptions { multiple: false, requeue: true }).await?;
                }
            }
            Ok(moved)
        })
        .await
    }

    /// Messages ready in `queue` and messages parked in its dead-letter queue.
    pub async fn queue_depths(&self, queue: &str) -> Result<(u32, u32), RabbitError> {
        let dead_letter = self.queue_names(queue).dead_letter;
        self.admin(async |channel| {
            let ready = message_count(channel, queue).await?;
            let parked = message_count(channel, &dead_letter).await?;
            Ok((ready, parked))
        })
        .await
    }

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

/// Takes up to `limit` messages without acknowledging them.
async fn take(channel: &Channel, queue: &str, limit: usize) -> Result<Vec<AmqpDelivery>, RabbitError> {
    let mut taken = Vec::new();
    while taken.len() < limit {
        match get(channel, queue).await? {
            Some(message) => taken.push(message.delivery),
            None => break,
        }
    }
    Ok(taken)
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
