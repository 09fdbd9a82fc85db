//! A test consumer: sees what services publish.

use std::{collections::BTreeMap, time::Duration};

use tokio::sync::mpsc;

use futures::StreamExt;
use lapin::{
    options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions},
    types::FieldTable,
};
use serde_json::Value;

/// Receives what is published on one routing key of an exchange, through a queue of its own.
pub struct EventListener {
    consumer: lapin::Consumer,
    _connection: lapin::Connection,
}

pub struct ReceivedEvent {
    pub body: Value,
    pub message_id: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub routing_key: String,
}

impl EventListener {
    pub async fn start(exchange: &str, queue: &str, routing_key: &str) -> EventListener {
        let connection =
            lapin::Connection::connect(&crate::amqp_url(), lapin::ConnectionProperties::default())
                .await
                .expect("connect to RabbitMQ");
        let channel = connection.create_channel().await.expect("channel");
        // The service declares the exchange; make sure it exists even before it connects.
        channel
            .exchange_declare(
                exchange.into(),
                lapin::ExchangeKind::Topic,
                lapin::options::ExchangeDeclareOptions { durable: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .expect("declare exchange");
        channel
            .queue_declare(queue.into(), QueueDeclareOptions::default(), FieldTable::default())
            .await
            .expect("queue");
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind");
        let consumer = channel
            .basic_consume(
                queue.into(),
                "test-listener".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume");
        EventListener { consumer, _connection: connection }
    }

    /// The next event, or `None` after `wait` without one.
    pub async fn next(&mut self, wait: Duration) -> Option<ReceivedEvent> {
        let delivery = tokio::time::timeout(wait, self.consumer.next()).await.ok()??.ok()?;
        delivery.ack(BasicAckOptions::default()).await.ok()?;
        let headers = delivery
            .properties
            .headers()
            .as_ref()
            .map(|table| {
                table
                    .inner()
                    .iter()
                    .filter_map(|(k, v)| match v {
                        lapin::types::AMQPValue::LongString(s) => Some((k.to_string(), s.to_string())),
                        lapin::types::AMQPValue::ShortString(s) => Some((k.to_string(), s.to_string())),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(ReceivedEvent {
            routing_key: delivery.routing_key.to_string(),
            body: serde_json::from_slice(&delivery.data).unwrap_or(Value::Null),
            message_id: delivery.properties.message_id().as_ref().map(|s| s.to_string()),
            headers,
        })
    }
}

/// Events a test receives: through the broker, or from a consumer on the in-process bus that
/// forwards what it is given.
pub enum Listener {
    Broker(Box<EventListener>),
    Bus(mpsc::UnboundedReceiver<ReceivedEvent>),
}

impl Listener {
    /// The next event, or `None` after `wait` without one.
    pub async fn next(&mut self, wait: Duration) -> Option<ReceivedEvent> {
        match self {
            Listener::Broker(listener) => listener.next(wait).await,
            Listener::Bus(received) => tokio::time::timeout(wait, received.recv()).await.ok()?,
        }
    }

    /// Collects events until `count` have arrived or `wait` passes without a new one.
    pub async fn collect(&mut self, count: usize, wait: Duration) -> Vec<ReceivedEvent> {
        let mut events = Vec::new();
        while events.len() < count {
            match self.next(wait).await {
                Some(event) => events.push(event),
                None => break,
            }
        }
        events
    }
}
