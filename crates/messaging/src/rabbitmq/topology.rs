//! Exchanges, queues and bindings, all named after the settings so that several systems (or test
//! runs) can share one broker. Declarations are idempotent and repeated on every connection.
//!
//! ```text
//! <exchange>        topic   ── routing keys ──▶ Q (quorum, delivery limit, DLX <exchange>.dlx / Q)
//! <exchange>.retry  direct  ── Q.retry.<d> ──▶ Q.retry.<d> (TTL d, dead-letters to "" / Q, i.e. back to Q)
//! <exchange>.dlx    direct  ── Q ──────────▶ Q.dlq (quorum, no practical delivery limit: parked messages)
//! ```

use std::time::Duration;

use lapin::{
    Channel, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, LongString, ShortString},
};

use super::settings::{MAX_NAME_LENGTH, RabbitSettings};

/// The three exchanges of one system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeNames {
    /// Topic exchange events are published to.
    pub events: String,
    /// Direct exchange routing delayed retries to their TTL queue.
    pub retry: String,
    /// Direct exchange routing parked messages to their dead-letter queue.
    pub dead_letter: String,
}

impl ExchangeNames {
    pub fn new(settings: &RabbitSettings) -> Self {
        ExchangeNames {
            events: settings.exchange.clone(),
            retry: format!("{}.retry", settings.exchange),
            dead_letter: format!("{}.dlx", settings.exchange),
        }
    }

    pub fn all(&self) -> Vec<String> {
        vec![self.events.clone(), self.retry.clone(), self.dead_letter.clone()]
    }
}

/// Every queue a system with these subscription `queues` declares: each with its retry and
/// dead-letter queues.
pub fn queue_names_of(queues: &contracts::Queues, settings: &RabbitSettings) -> Vec<String> {
    queues.bindings().iter().flat_map(|binding| QueueNames::new(&binding.queue, settings).all()).collect()
}

/// The queues that serve one subscription queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueNames {
    pub queue: String,
    /// `Q.dlq`: parked messages.
    pub dead_letter: String,
    /// One `Q.retry.<delay>` per retry delay, in order.
    pub retries: Vec<RetryQueue>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryQueue {
    pub delay: Duration,
    pub name: String,
}

impl QueueNames {
    pub fn new(queue: &str, settings: &RabbitSettings) -> Self {
        QueueNames {
            queue: queue.to_owned(),
            dead_letter: format!("{queue}.dlq"),
            retries: settings
                .retry_delays()
                .into_iter()
                .map(|delay| RetryQueue { delay, name: format!("{queue}.retry.{}", delay_label(delay)) })
                .collect(),
        }
    }

    pub fn all(&self) -> Vec<String> {
        let mut names = vec![self.queue.clone(), self.dead_letter.clone()];
        names.extend(self.retries.iter().map(|retry| retry.name.clone()));
        names
    }

    /// Every name fits in an AMQP short string.
    pub(crate) fn check_lengths(&self) -> Result<(), String> {
        match self.all().into_iter().find(|name| name.len() > MAX_NAME_LENGTH) {
            Some(name) => Err(format!("queue name {name:?} is longer than {MAX_NAME_LENGTH} bytes")),
            None => Ok(()),
        }
    }
}

/// `200ms`, `5s`, `2m`, `1h`: the largest unit that divides the delay exactly.
fn delay_label(delay: Duration) -> String {
    let ms = delay.as_millis();
    match ms {
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        ms => format!("{ms}ms"),
    }
}

pub(crate) async fn declare_exchanges(channel: &Channel, exchanges: &ExchangeNames) -> lapin::Result<()> {
    let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    for (name, kind) in [
        (&exchanges.events, ExchangeKind::Topic),
        (&exchanges.retry, ExchangeKind::Direct),
        (&exchanges.dead_letter, ExchangeKind::Direct),
    ] {
        channel.exchange_declare(short(name), kind, durable, FieldTable::default()).await?;
    }
    Ok(())
}

/// Declares Q, its retry queues and its dead-letter queue, and binds them.
pub(crate) async fn declare_queues(
    channel: &Channel,
    exchanges: &ExchangeNames,
    queues: &QueueNames,
    routing_keys: &[String],
    delivery_limit: u32,
) -> lapin::Result<()> {
    let durable = QueueDeclareOptions::durable();

    let mut main = quorum_arguments();
    main.insert("x-dead-letter-exchange".into(), text(&exchanges.dead_letter));
    main.insert("x-dead-letter-routing-key".into(), text(&queues.queue));
    main.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(i64::from(delivery_limit)));
    // Without these two the broker drops a message it dead-letters when the DLQ cannot take it.
    main.insert("x-dead-letter-strategy".into(), text("at-least-once"));
    main.insert("x-overflow".into(), text("reject-publish"));
    channel.queue_declare(short(&queues.queue), durable, main).await?;
    for routing_key in routing_keys {
        channel
            .queue_bind(
                short(&queues.queue),
                short(&exchanges.events),
                short(routing_key),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }

    // Operators list parked messages by taking and returning them, and RabbitMQ 4 gives every
    // quorum queue a delivery limit of 20 unless one is set: without an explicit limit of its
    // own, a parked message would be dropped after a few listings.
    let mut parked = quorum_arguments();
    parked.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(UNLIMITED_DELIVERIES));
    channel.queue_declare(short(&queues.dead_letter), durable, parked).await?;
    channel
        .queue_bind(
            short(&queues.dead_letter),
            short(&exchanges.dead_letter),
            short(&queues.queue),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

    for retry in &queues.retries {
        let mut arguments = quorum_arguments();
        arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(retry.delay.as_millis() as i64));
        // The default exchange routes by queue name: an expired retry goes straight back to Q.
        arguments.insert("x-dead-letter-exchange".into(), text(""));
        arguments.insert("x-dead-letter-routing-key".into(), text(&queues.queue));
        arguments.insert("x-dead-letter-strategy".into(), text("at-least-once"));
        arguments.insert("x-overflow".into(), text("reject-publish"));
        channel.queue_declare(short(&retry.name), durable, arguments).await?;
        channel
            .queue_bind(
                short(&retry.name),
                short(&exchanges.retry),
                short(&retry.name),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// A delivery limit no operator will reach. (RabbitMQ 4 reads -1 as "no limit", but RabbitMQ 3
/// reads it as a limit below every count and drops the message at its first return; a large
/// limit means the same on both.)
const UNLIMITED_DELIVERIES: i64 = i32::MAX as i64;

fn quorum_arguments() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), text("quorum"));
    arguments
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// Names are checked against the AMQP limit where they enter (settings, subscriptions), so the
/// conversion cannot fail here.
pub(crate) fn short(name: &str) -> ShortString {
    ShortString::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_queue_names_show_the_delay() {
        let settings = RabbitSettings {
            retry_delays_ms: vec![200, 1_000, 5_000, 120_000, 7_200_000],
            ..Default::default()
        };
        let names = QueueNames::new("analytics.orders", &settings);
        let retries: Vec<&str> = names.retries.iter().map(|retry| retry.name.as_str()).collect();
        assert_eq!(
            retries,
            [
                "analytics.orders.retry.200ms",
                "analytics.orders.retry.1s",
                "analytics.orders.retry.5s",
                "analytics.orders.retry.2m",
                "analytics.orders.retry.2h",
            ]
        );
        assert_eq!(names.dead_letter, "analytics.orders.dlq");
        let exchanges = ExchangeNames::new(&settings);
        assert_eq!(exchanges.all(), ["orders", "orders.retry", "orders.dlx"]);
    }
}
