//! One consumer: its own channel, batches of whatever has arrived, the shared pipeline's decision
//! for each delivery, and the broker side of it: acks, retry and dead-letter copies, and copies
//! back into the queue for deliveries handed back unhandled.
//!
//! Handing back is done by publishing a copy and acknowledging the original, never by a requeue:
//! RabbitMQ counts every requeue, and every delivery returned by a closing channel, towards the
//! queue's delivery limit (and RabbitMQ 4 gives quorum queues a limit by default), so restarts and
//! outages would otherwise park healthy messages.

use std::{sync::Arc, time::Duration};

use futures::{FutureExt, StreamExt, future::join_all};
use lapin::{
    BasicProperties, Channel, Confirmation, Consumer,
    message::Delivery as AmqpDelivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions,
        BasicQosOptions, ConfirmSelectOptions,
    },
    types::{FieldTable, ShortString},
};
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::{
    Shared, headers,
    publisher::PERSISTENT,
    supervisor::{CLOSE_TIMEOUT, Session},
    topology::{self, QueueNames, short},
};
use crate::{
    Delivery, Subscription,
    consume::{self, Action, Handling, Pipeline},
};

/// Pause before requeueing deliveries whose copy could not be published, so that a broker in
/// trouble is not hammered; the queue's delivery limit bounds the repetitions.
const REQUEUE_PAUSE: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
enum ConsumeError {
    #[error(transparent)]
    Broker(#[from] lapin::Error),
    #[error("the broker cancelled the consumer")]
    Cancelled,
    #[error("the channel no longer accepts acknowledgements")]
    AckRefused,
}

/// Starts `subscription` on `session` as a task that shutdown waits for. The receiver completes
/// once the consumer is registered with the broker.
pub(crate) fn start(
    shared: &Arc<Shared>,
    session: &Arc<Session>,
    subscription: Subscription,
) -> oneshot::Receiver<()> {
    let (started, started_receiver) = oneshot::channel();
    let task = shared.shutdown.spawn(run(shared.clone(), session.clone(), subscription, started));
    session.add_consumer(task);
    started_receiver
}

async fn run(
    shared: Arc<Shared>,
    session: Arc<Session>,
    subscription: Subscription,
    started: oneshot::Sender<()>,
) {
    let queue = subscription.queue.clone();
    let queues = QueueNames::new(&subscription.queue, &shared.settings);
    let pipeline = Pipeline::new(
        &subscription.queue,
        subscription.handler.clone(),
        queues.retries.len(),
        shared.metrics.clone(),
        subscription.readiness.clone(),
        Some(shared.settings.paused_hold()),
    );
    let consumer = QueueConsumer { queues, shared, session, subscription, pipeline };
    if let Err(error) = consumer.run(started).await {
        // After shutdown or a loss, errors are the expected echo of the closing connection.
        if !consumer.session.is_lost() && !consumer.shared.shutdown.is_triggered() {
            consumer.session.mark_lost(format!("consumer of {queue} stopped: {error}"));
        }
    }
}

struct QueueConsumer {
    shared: Arc<Shared>,
    session: Arc<Session>,
    subscription: Subscription,
    queues: QueueNames,
    pipeline: Pipeline,
}

impl QueueConsumer {
    async fn run(&self, started: oneshot::Sender<()>) -> Result<(), ConsumeError> {
        let settings = &self.shared.settings;
        // A lost connection can leave a broker call unanswered for ever: give up on it.
        let Some(setup) = self.session.unless_lost(self.subscribe()).await else { return Ok(()) };
        let (channel, mut consumer) = setup?;
        info!(event = "consumer_started", queue = %self.queues.queue, "consumer started");
        let _ = started.send(());

        loop {
            let first = tokio::select! {
                biased;
                () = self.shared.shutdown.requested() => break,
                () = self.session.lost() => return Ok(()),
                next = consumer.next() => next,
            };
            // An error after the first delivery ends the consumer once the batch is settled.
            let mut ended = None;
            let batch = consume::gather(received(first)?, settings.batch_size, || {
                match received(consumer.next().now_or_never()?) {
                    Ok(delivery) => Some(delivery),
                    Err(error) => {
                        ended = Some(error);
                        None
                    }
                }
            });
            self.process(&channel, batch).await?;
            if let Some(error) = ended {
                return Err(error);
            }
        }
        self.stop(&channel, consumer).await;
        Ok(())
    }

    /// Shutdown: no new deliveries; those the broker pushed ahead and nobody handled go back to
    /// the queue as fresh copies, so that a restart does not age them.
    async fn stop(&self, channel: &Channel, mut consumer: Consumer) {
        let cancelled = tokio::time::timeout(
            CLOSE_TIMEOUT,
            channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()),
        )
        .await;
        if matches!(cancelled, Ok(Ok(()))) {
            // After the cancellation the stream yields what was already pushed, then ends.
            let mut unhandled = Vec::new();
            let drained = tokio::time::timeout(CLOSE_TIMEOUT, async {
                while let Some(Ok(delivery)) = consumer.next().await {
                    unhandled.push(delivery);
                }
            });
            let _ = self.session.unless_lost(drained).await;
            if !unhandled.is_empty() {
                let _ = self.hand_back(channel, unhandled).await;
            }
        }
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, channel.close(200, "shutting down".into())).await;
        info!(event = "consumer_stopped", queue = %self.queues.queue, "consumer stopped");
    }

    /// Declares the queues and registers the consumer on a channel of its own.
    async fn subscribe(&self) -> Result<(Channel, Consumer), ConsumeError> {
        let settings = &self.shared.settings;
        let channel = self.session.connection.create_channel().await?;
        topology::declare_queues(
            &channel,
            &self.shared.exchanges,
            &self.queues,
            &self.subscription.routing_keys,
            settings.delivery_limit,
        )
        .await?;
        // Quorum queues refuse a global (per-channel) prefetch.
        channel.basic_qos(settings.prefetch, BasicQosOptions { global: false }).await?;
        // Retry, dead-letter and hand-back copies are published on this channel, with confirms.
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        let consumer = channel
            .basic_consume(
                short(&self.queues.queue),
                ShortString::default(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok((channel, consumer))
    }

    /// Hands `batch` to the pipeline, then settles every delivery.
    async fn process(&self, channel: &Channel, batch: Vec<AmqpDelivery>) -> Result<(), ConsumeError> {
        let deliveries: Vec<Delivery> = batch.iter().map(to_delivery).collect();
        let stop = async {
            tokio::select! {
                () = self.shared.shutdown.requested() => {}
                () = self.session.lost() => {}
            }
        };
        let actions = match self.pipeline.handle(&deliveries, stop).await {
            Handling::Done(actions) => actions,
            // The broker gives back what a lost connection held.
            Handling::Interrupted if self.session.is_lost() => return Ok(()),
            Handling::Interrupted => vec![Action::Requeue; batch.len()],
        };
        self.settle_with_copies(channel, &batch, &deliveries, &actions).await
    }

    /// Puts `batch` back into the queue unhandled.
    async fn hand_back(&self, channel: &Channel, batch: Vec<AmqpDelivery>) -> Result<(), ConsumeError> {
        let deliveries: Vec<Delivery> = batch.iter().map(to_delivery).collect();
        let actions = vec![Action::Requeue; batch.len()];
        self.settle_with_copies(channel, &batch, &deliveries, &actions).await
    }

    async fn settle_with_copies(
        &self,
        channel: &Channel,
        batch: &[AmqpDelivery],
        deliveries: &[Delivery],
        actions: &[Action],
    ) -> Result<(), ConsumeError> {
        // Once the connection is lost, acknowledgements are moot (the broker redelivers whatever
        // was not acknowledged) and may never be answered.
        let settled = self.session.unless_lost(async {
            let copied = self.publish_copies(channel, batch, actions).await;
            self.settle(batch, deliveries, actions, &copied).await
        });
        settled.await.unwrap_or(Ok(()))
    }

    /// Publishes the retry, dead-letter and hand-back copies, pipelined and confirmed. Returns,
    /// per delivery, whether its copy is safely stored (always true when there is no copy to make).
    async fn publish_copies(
        &self,
        channel: &Channel,
        batch: &[AmqpDelivery],
        actions: &[Action],
    ) -> Vec<bool> {
        // Nothing to copy counts as stored; a copy counts once the broker has confirmed it.
        let mut copied: Vec<bool> =
            actions.iter().map(|action| matches!(action, Action::Ack { .. })).collect();
        let mut pending = Vec::new();
        for (index, (delivery, action)) in batch.iter().zip(actions).enumerate() {
            let (exchange, routing_key, properties) = match action {
                Action::Ack { .. } => continue,
                Action::Retry { retry_queue } => (
                    self.shared.exchanges.retry.as_str(),
                    self.queues.retries[*retry_queue].name.as_str(),
                    retry_properties(delivery, u32::try_from(*retry_queue).unwrap_or(u32::MAX) + 1),
                ),
                Action::Park { reason, .. } => (
                    self.shared.exchanges.dead_letter.as_str(),
                    self.queues.queue.as_str(),
                    park_properties(delivery, reason),
                ),
                // The default exchange routes by queue name.
                Action::Requeue => ("", self.queues.queue.as_str(), requeue_properties(delivery)),
            };
            let published = channel
                .basic_publish(
                    short(exchange),
                    short(routing_key),
                    BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() },
                    &delivery.data,
                    properties,
                )
                .await;
            match published {
                Ok(confirm) => pending.push((index, confirm)),
                Err(error) => {
                    warn!(
                        event = "copy_publish_failed",
                        queue = %self.queues.queue,
                        error = %error,
                        "cannot publish a retry, dead-letter or hand-back copy"
                    );
                    break;
                }
            }
        }
        if pending.is_empty() {
            return copied;
        }

        let timeout = self.shared.settings.publish_timeout();
        let confirmations = match tokio::time::timeout(
            timeout,
            join_all(pending.into_iter().map(|(index, confirm)| async move { (index, confirm.await) })),
        )
        .await
        {
            Ok(confirmations) => confirmations,
            Err(_) => {
                warn!(
                    event = "copy_publish_failed",
                    queue = %self.queues.queue,
                    "no confirms for retry, dead-letter or hand-back copies within {timeout:?}"
                );
                return copied;
            }
        };
        // A returned copy cannot be told apart from its siblings (they may share a message id),
        // so any return fails the whole set: the deliveries are requeued and, at worst, handled twice.
        let any_returned = confirmations.iter().any(|(_, confirmation)| {
            matches!(confirmation, Ok(Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_))))
        });
        for (index, confirmation) in confirmations {
            copied[index] = !any_returned && matches!(confirmation, Ok(Confirmation::Ack(None)));
        }
        copied
    }

    /// Acks what is done (or safely copied) and requeues the rest.
    async fn settle(
        &self,
        batch: &[AmqpDelivery],
        deliveries: &[Delivery],
        actions: &[Action],
        copied: &[bool],
    ) -> Result<(), ConsumeError> {
        if copied.iter().all(|&copied| copied) {
            // Deliveries on this channel are settled in order, so one multiple-ack covers the batch.
            if let Some(last) = batch.last()
                && !last.acker.ack(BasicAckOptions { multiple: true }).await?
            {
                return Err(ConsumeError::AckRefused);
            }
            for (delivery, action) in deliveries.iter().zip(actions) {
                self.pipeline.settled(delivery, action);
            }
            return Ok(());
        }

        warn!(
            event = "deliveries_requeued",
            queue = %self.queues.queue,
            count = copied.iter().filter(|&&copied| !copied).count(),
            "copies could not be stored; requeueing the deliveries"
        );
        tokio::time::sleep(REQUEUE_PAUSE).await;
        for (((amqp, delivery), action), &copied) in batch.iter().zip(deliveries).zip(actions).zip(copied) {
            let settled = if copied {
                amqp.acker.ack(BasicAckOptions::default()).await?
            } else {
                amqp.acker.nack(BasicNackOptions { multiple: false, requeue: true }).await?
            };
            if !settled {
                return Err(ConsumeError::AckRefused);
            }
            if copied {
                self.pipeline.settled(delivery, action);
            }
        }
        Ok(())
    }
}

/// A delivery from the consumer stream; the stream ending or failing ends this consumer.
fn received(next: Option<lapin::Result<AmqpDelivery>>) -> Result<AmqpDelivery, ConsumeError> {
    match next {
        Some(Ok(delivery)) => Ok(delivery),
        Some(Err(error)) => Err(error.into()),
        None => Err(ConsumeError::Cancelled),
    }
}

pub(crate) fn to_delivery(delivery: &AmqpDelivery) -> Delivery {
    let properties = &delivery.properties;
    let amqp_headers = properties.headers().as_ref();
    Delivery {
        message_id: properties.message_id().as_ref().map(|id| id.as_str().to_owned()),
        event_type: properties.kind().as_ref().map(|kind| kind.as_str().to_owned()),
        routing_key: headers::original_routing_key(amqp_headers, delivery.routing_key.as_str()),
        headers: headers::application_headers(amqp_headers),
        payload: delivery.data.clone(),
        attempt: headers::retry_count(amqp_headers).saturating_add(1),
        redelivered: delivery.redelivered,
    }
}

/// The copy sent to a retry queue: same message, retry count bumped, original routing key kept.
fn retry_properties(delivery: &AmqpDelivery, retry_count: u32) -> BasicProperties {
    let mut copy = copied_headers(delivery);
    headers::insert_text(&mut copy, headers::RETRY_COUNT, &retry_count.to_string());
    delivery.properties.clone().with_delivery_mode(PERSISTENT).with_headers(copy)
}

/// The copy parked in the dead-letter queue, with why and when.
fn park_properties(delivery: &AmqpDelivery, reason: &str) -> BasicProperties {
    let mut copy = copied_headers(delivery);
    headers::insert_text(&mut copy, headers::DEATH_REASON, reason);
    headers::insert_text(&mut copy, headers::FAILED_AT, &chrono::Utc::now().to_rfc3339());
    delivery.properties.clone().with_delivery_mode(PERSISTENT).with_headers(copy)
}

/// The copy handed back to the queue: the same message, as it was (its retry count included).
fn requeue_properties(delivery: &AmqpDelivery) -> BasicProperties {
    delivery.properties.clone().with_delivery_mode(PERSISTENT).with_headers(copied_headers(delivery))
}

fn copied_headers(delivery: &AmqpDelivery) -> FieldTable {
    let amqp_headers = delivery.properties.headers().as_ref();
    let mut copy = headers::copy_without(amqp_headers, &[]);
    let original = headers::original_routing_key(amqp_headers, delivery.routing_key.as_str());
    headers::insert_text(&mut copy, headers::ORIGINAL_ROUTING_KEY, &original);
    copy
}
