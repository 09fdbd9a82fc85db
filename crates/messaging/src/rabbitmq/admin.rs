//! Operator tools for dead-letter queues: look at parked messages, move them back, count.
//!
//! Each operation runs on a channel of its own, closed at the end. It takes the dead-letter queue
//! through a consumer of its own; a message taken and not acknowledged stays owned by the queue:
//! should anything fail half-way, the broker puts it back when the channel closes, so none of
//! these operations can lose a message.
//!
//! Acknowledgements must stick: a quorum queue's channel sends at most 32 commands ahead of the
//! queue and holds later acknowledgements back until the queue catches up; a channel closed
//! meanwhile drops them, and the queue hands those messages back as if never acknowledged (a
//! replay would leave its originals parked). So an operation settles everything at its end, each
//! run of neighbouring messages with one `multiple` command, and cancels its consumer before the
//! channel closes: the cancel sends what is held back and is answered once the queue has applied
//! it.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::future::join_all;
use lapin::{
    Channel, Confirmation, ErrorKind,
    message::Delivery as AmqpDelivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions,
        BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions,
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

/// How long a scan waits for the next message the queue said it holds: past it, another
/// command took them.
const SCAN_WAIT: Duration = Duration::from_secs(5);

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
        self.on_dead_letters(&dead_letter, async |channel| {
            let scanned = scan(channel, &dead_letter, selection).await?;
            let listed = scanned.selected.iter().map(|(_, parked)| parked.clone()).collect();
            Ok((listed, release(channel, &scanned, &[]).await?))
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
        self.on_dead_letters(&dead_letter, async |channel| {
            channel.confirm_select(ConfirmSelectOptions::default()).await?;
            let scanned = scan(channel, &dead_letter, selection).await?;
            let total = scanned.selected.len();
            // Per selected message: its copy is confirmed, so the original goes.
            let mut copied = Vec::with_capacity(total);
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
                copied.extend(confirmations.iter().map(|confirmation| {
                    !any_returned && matches!(confirmation, Ok(Confirmation::Ack(None)))
                }));
                let moved = copied.iter().filter(|&&copied| copied).count();
                progress(moved, total);
                if moved < copied.len() {
                    break;
                }
            }
            // Whatever was selected but not copied stays parked, in its place.
            copied.resize(total, false);
            let moved = copied.iter().filter(|&&copied| copied).count();
            Ok((moved, release(channel, &scanned, &copied).await?))
        })
        .await
    }

    async fn discard_parked(&self, queue: &str, selection: &Selection) -> Result<usize, RabbitError> {
        let dead_letter = self.queue_names(queue).dead_letter;
        self.on_dead_letters(&dead_letter, async |channel| {
            let scanned = scan(channel, &dead_letter, selection).await?;
            let discarded = vec![true; scanned.selected.len()];
            Ok((discarded.len(), release(channel, &scanned, &discarded).await?))
        })
        .await
    }
}

/// A dead-letter queue taken whole, unacknowledged: the messages a selection picked, oldest
/// first, and the others, and the consumer that holds them.
struct Scanned {
    selected: Vec<(AmqpDelivery, ParkedMessage)>,
    unselected: Vec<AmqpDelivery>,
    consumer: Option<ShortString>,
}

/// Takes every message of `dead_letter` (as deep as it is now, up to 65,535) without
/// acknowledging it, and picks the oldest `selection.limit` that match, by when they were parked.
///
/// Oldest by their parking time, not by their place in the queue: a quorum queue serves returned
/// messages before all others, and not always in the order they were returned.
async fn scan(channel: &Channel, dead_letter: &str, selection: &Selection) -> Result<Scanned, RabbitError> {
    let mut scanned = Scanned { selected: Vec::new(), unselected: Vec::new(), consumer: None };
    let depth = message_count(channel, dead_letter).await?;
    if depth == 0 {
        return Ok(scanned);
    }
    // The consumer is given exactly the messages there are now (a prefetch is 16 bits).
    let prefetch = u16::try_from(depth).unwrap_or(u16::MAX);
    channel.basic_qos(prefetch, BasicQosOptions { global: false }).await?;
    let mut consumer = channel
        .basic_consume(
            short(dead_letter),
            ShortString::default(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|error| not_found_or(error, dead_letter))?;
    scanned.consumer = Some(consumer.tag());
    let mut taken = Vec::with_capacity(usize::from(prefetch));
    while taken.len() < usize::from(prefetch) {
        match tokio::time::timeout(SCAN_WAIT, consumer.next()).await {
            Ok(Some(delivery)) => {
                let delivery = delivery?;
                let parked = to_parked(&delivery);
                taken.push((delivery, parked));
            }
            Ok(None) | Err(_) => break,
        }
    }
    // Stable: messages parked at the same instant, or without the header, keep their queue order.
    taken.sort_by_key(|(_, parked)| {
        parked.headers.get(headers::FAILED_AT).and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
    });
    for (delivery, parked) in taken {
        if scanned.selected.len() < selection.limit && selection.matches(&parked) {
            scanned.selected.push((delivery, parked));
        } else {
            scanned.unselected.push(delivery);
        }
    }
    Ok(scanned)
}

/// Ends an operation's hold on the queue: acknowledges the selected messages `remove` marks and
/// returns all others, then cancels the scan's consumer. Neighbours (by delivery tag) that go the
/// same way are settled with one `multiple` command: the fewer commands, the fewer a quorum
/// queue's channel may hold back (see the module's notes); the cancel sends what it holds and is
/// answered once the queue has applied it. Returns how many of the scanned messages go back.
async fn release(channel: &Channel, scanned: &Scanned, remove: &[bool]) -> Result<u32, RabbitError> {
    let Some(consumer) = &scanned.consumer else { return Ok(0) };
    let mut order: Vec<(&AmqpDelivery, bool)> = scanned
        .selected
        .iter()
        .enumerate()
        .map(|(index, (delivery, _))| (delivery, remove.get(index).copied().unwrap_or(false)))
        .chain(scanned.unselected.iter().map(|delivery| (delivery, false)))
        .collect();
    order.sort_unstable_by_key(|(delivery, _)| delivery.delivery_tag);
    for (index, (delivery, goes)) in order.iter().enumerate() {
        if order.get(index + 1).is_some_and(|(_, next)| next == goes) {
            continue;
        }
        // `multiple` settles every delivery up to this one not settled yet: the run it ends.
        if *goes {
            delivery.acker.ack(BasicAckOptions { multiple: true }).await?;
        } else {
            delivery.acker.nack(BasicNackOptions { multiple: true, requeue: true }).await?;
        }
    }
    // Tag 0 with `multiple`: whatever the consumer received after the scan (returned messages
    // come back to it while it lasts).
    channel.basic_nack(0, BasicNackOptions { multiple: true, requeue: true }).await?;
    channel.basic_cancel(consumer.clone(), BasicCancelOptions::default()).await?;
    let returned = order.iter().filter(|(_, goes)| !goes).count();
    Ok(u32::try_from(returned).unwrap_or(u32::MAX))
}

impl RabbitMq {
    /// Runs `operation` on `dead_letter` (it answers its result and how many messages it gave
    /// back), then waits until the queue holds those again: the broker applies returns after it
    /// has answered them (and those the consumer was still holding once the channel has closed),
    /// and the next command must find the whole queue.
    async fn on_dead_letters<T>(
        &self,
        dead_letter: &str,
        operation: impl AsyncFnOnce(&Channel) -> Result<(T, u32), RabbitError>,
    ) -> Result<T, RabbitError> {
        let (result, returned) = self.admin(operation).await?;
        if returned > 0 {
            self.admin(async |channel| {
                while message_count(channel, dead_letter).await? < returned {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Ok(())
            })
            .await?;
        }
        Ok(result)
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
