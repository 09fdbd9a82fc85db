//! Publishing with confirms on the session's dedicated channel.

use std::collections::HashSet;

use async_trait::async_trait;
use futures::future::join_all;
use lapin::{
    BasicProperties, Confirmation, PublisherConfirm,
    options::BasicPublishOptions,
    types::{AMQPValue, FieldTable, LongString, ShortString},
};

use super::{RabbitMq, supervisor::Session, topology::short};
use crate::{EventPublisher, OutgoingMessage, PublishError};

/// Persistent: the broker writes the message to disk before confirming it.
pub(crate) const PERSISTENT: u8 = 2;

#[async_trait]
impl EventPublisher for RabbitMq {
    async fn publish(&self, messages: &[OutgoingMessage]) -> Vec<Result<(), PublishError>> {
        if messages.is_empty() {
            return Vec::new();
        }
        let session = match self.shared.available_session() {
            Ok(session) => session,
            Err(error) => return vec![Err(PublishError::Unavailable(error.to_string())); messages.len()],
        };
        let timeout = self.shared.settings.publish_timeout();
        let exchange = short(&self.shared.exchanges.events);
        let published =
            session.unless_lost(tokio::time::timeout(timeout, publish_batch(&session, exchange, messages)));
        match published.await {
            None => {
                let reason = session.unavailable_reason().unwrap_or_default();
                vec![Err(PublishError::Unavailable(reason)); messages.len()]
            }
            Some(Ok(results)) => results,
            Some(Err(_)) => {
                // Confirms that never come mean a stuck connection: start over.
                session.mark_lost(format!("no publisher confirms within {timeout:?}"));
                vec![Err(PublishError::Timeout(timeout)); messages.len()]
            }
        }
    }
}

/// Publishes every message before waiting for any confirm (pipelining), then collects them.
/// The publishes are started together, so that their frames leave in as few socket writes as
/// the connection allows instead of one write (and one wake-up of the I/O thread) each.
async fn publish_batch(
    session: &Session,
    exchange: ShortString,
    messages: &[OutgoingMessage],
) -> Vec<Result<(), PublishError>> {
    let _one_batch_at_a_time = session.publish_lock.lock().await;
    let mut results: Vec<Option<Result<(), PublishError>>> = vec![None; messages.len()];
    let mut publishes = Vec::with_capacity(messages.len());
    for (index, message) in messages.iter().enumerate() {
        match encode(message) {
            Ok((routing_key, properties)) => {
                let exchange = exchange.clone();
                publishes.push(async move {
                    let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
                    let published = session
                        .publisher
                        .basic_publish(exchange, routing_key, options, &message.payload, properties)
                        .await;
                    (index, published)
                });
            }
            Err(error) => results[index] = Some(Err(error)),
        }
    }
    // `join_all` polls them in order, so the delivery tags follow the order of `messages`.
    let mut pending: Vec<(usize, PublisherConfirm)> = Vec::with_capacity(publishes.len());
    for (index, published) in join_all(publishes).await {
        match published {
            Ok(confirm) => pending.push((index, confirm)),
            Err(error) => {
                session.mark_lost(format!("publishing failed: {error}"));
                results[index] = Some(Err(PublishError::Unavailable(error.to_string())));
            }
        }
    }

    let confirmations =
        join_all(pending.into_iter().map(|(index, confirm)| async move { (index, confirm.await) })).await;
    let mut returned_ids = HashSet::new();
    for (index, confirmation) in confirmations {
        let (result, returned) = match confirmation {
            Ok(Confirmation::Ack(returned)) => (Ok(()), returned),
            Ok(Confirmation::Nack(returned)) => (Err(PublishError::Nacked), returned),
            Ok(Confirmation::NotRequested) => {
                (Err(PublishError::Unavailable("the publishing channel is not in confirm mode".into())), None)
            }
            Err(error) => (Err(PublishError::Unavailable(error.to_string())), None),
        };
        if let Some(id) = returned.and_then(|message| message.properties.message_id().clone()) {
            returned_ids.insert(id.to_string());
        }
        results[index] = Some(result);
    }

    messages
        .iter()
        .zip(results)
        .map(|(message, result)| {
            // The broker returns an unroutable message and then acks it: success needs both an
            // ack and no return. Returns are matched by message id, not by which confirm carried them.
            if returned_ids.contains(&message.event_id.to_string()) {
                Err(PublishError::Unroutable(message.routing_key.clone()))
            } else {
                result.unwrap_or_else(|| Err(PublishError::Unavailable("not published".into())))
            }
        })
        .collect()
}

/// Routing key and properties of `message`. AMQP caps names and short strings at 255 bytes; a
/// message that exceeds that could never be accepted, and is reported like a refusal.
fn encode(message: &OutgoingMessage) -> Result<(ShortString, BasicProperties), PublishError> {
    let routing_key = ShortString::try_new(message.routing_key.as_str())
        .map_err(|_| PublishError::Unroutable(message.routing_key.clone()))?;
    let event_type = ShortString::try_new(message.event_type.as_str()).map_err(|_| PublishError::Nacked)?;
    let mut headers = FieldTable::default();
    for (name, value) in &message.headers {
        let name = ShortString::try_new(name.as_str()).map_err(|_| PublishError::Nacked)?;
        headers.insert(name, AMQPValue::LongString(LongString::from(value.as_str())));
    }
    let properties = BasicProperties::default()
        .with_message_id(ShortString::from(message.event_id.to_string()))
        .with_type(event_type)
        .with_content_type(ShortString::from("application/json"))
        .with_delivery_mode(PERSISTENT)
        .with_timestamp(u64::try_from(message.timestamp.timestamp()).unwrap_or(0))
        .with_headers(headers);
    Ok((routing_key, properties))
}
