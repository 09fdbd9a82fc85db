//! A test producer: injects raw messages, as a service or a misbehaving client would.

use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions},
    types::FieldTable,
};

pub struct TestPublisher {
    channel: Channel,
    exchange: String,
    _connection: Connection,
}

impl TestPublisher {
    /// Publishes to `exchange` (declared as the services declare it, if missing), with confirms.
    pub async fn connect(exchange: &str) -> anyhow::Result<TestPublisher> {
        let connection = Connection::connect(&crate::amqp_url(), ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        channel
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions { durable: true, ..Default::default() },
                FieldTable::default(),
            )
            .await?;
        Ok(TestPublisher { channel, exchange: exchange.to_owned(), _connection: connection })
    }

    /// Publishes `body` persistently and waits for the broker's confirmation.
    pub async fn publish(
        &self,
        routing_key: &str,
        message_id: Option<&str>,
        body: &[u8],
    ) -> anyhow::Result<()> {
        let mut properties =
            BasicProperties::default().with_delivery_mode(2).with_content_type("application/json".into());
        if let Some(id) = message_id {
            properties = properties.with_message_id(id.into());
        }
        let confirm = self
            .channel
            .basic_publish(
                self.exchange.as_str().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await?
            .await?;
        anyhow::ensure!(confirm.is_ack(), "broker refused the message");
        Ok(())
    }
}
