//! notification-worker: sends a notification for every `OrderCreated` and `OrderProcessed`
//! event, through pluggable channels (`log`, `webhook`), once per channel and event
//! (deduplicated in Redis by `event_id`; see [`dedupe`]). It has no API: its HTTP port serves
//! `/livez`, `/readyz` and `/metrics`.

pub mod channel;
pub mod consumer;
pub mod dedupe;
pub mod metrics;
pub mod settings;

use std::{path::Path, sync::Arc};

use anyhow::Context;
use contracts::Queues;
use messaging::{EventBus, MessagingMetrics, Subscription, rabbitmq::RabbitMq};
use platform::{Runtime, http::Server, redis::RedisClient};

use crate::{
    consumer::NotificationHandler,
    dedupe::{Dedupe, RedisDedupe, SqliteDedupe},
    metrics::NotificationMetrics,
    settings::Settings,
};

pub const SERVICE_NAME: &str = "notification-worker";

/// The backends the worker runs on: Redis and RabbitMQ in production; SQLite and an in-process
/// bus in the embedded mode.
pub struct Backends {
    pub dedupe: Arc<dyn Dedupe>,
    pub bus: Arc<dyn EventBus>,
    /// Readiness name of the deduplication store (`redis`).
    pub dedupe_name: &'static str,
}

impl Backends {
    /// The production backends: Redis and RabbitMQ, connected in the background (neither need be
    /// up yet; readiness says when they are).
    pub fn production(
        settings: &Settings,
        runtime: &Runtime,
        messaging_metrics: MessagingMetrics,
    ) -> anyhow::Result<Backends> {
        let rabbit = RabbitMq::new(
            settings.rabbitmq.clone(),
            settings.queues.bindings(),
            // Without the broker there is nothing to do.
            runtime.health.add_status("rabbitmq", true),
            messaging_metrics,
            runtime.shutdown.clone(),
        )?;
        let notifications = &settings.notifications;
        Ok(Backends {
            dedupe: Arc::new(RedisDedupe::new(
                RedisClient::new(&settings.redis)?,
                &settings.redis.key_prefix,
                notifications.claim_ttl(),
                notifications.sent_ttl(),
            )),
            bus: Arc::new(rabbit),
            dedupe_name: "redis",
        })
    }

    /// The embedded backends: the SQLite deduplication store at `database` (created and
    /// migrated if needed; claims of a process that used it before are forgotten) and `bus`.
    pub async fn embedded(
        database: &Path,
        settings: &Settings,
        bus: Arc<dyn EventBus>,
    ) -> anyhow::Result<Backends> {
        let pool = dedupe::sqlite::open(database).await.context("cannot open the notification database")?;
        let notifications = &settings.notifications;
        let dedupe = SqliteDedupe::new(pool, notifications.claim_ttl(), notifications.sent_ttl());
        dedupe.forget_claims().await.context("cannot prepare the notification database")?;
        Ok(Backends { dedupe: Arc::new(dedupe), bus, dedupe_name: "sqlite" })
    }
}

/// Builds notification-worker into a consuming, listening [`Server`], on the production backends
/// or on given ones.
pub struct Application;

impl Application {
    /// The production worker: connects to Redis and RabbitMQ (in the background: neither need be
    /// up yet, readiness says when they are), starts consuming, and binds the HTTP listener.
    /// `settings` are used as [`Settings::load`] checked them.
    pub async fn build(settings: Settings) -> anyhow::Result<Server> {
        let mut runtime = Runtime::new();
        let messaging_metrics = MessagingMetrics::register(&mut runtime.registry);
        let backends = Backends::production(&settings, &runtime, messaging_metrics)?;
        Self::assemble(settings, runtime, backends).await
    }

    /// The worker on the given backends: the channels `settings` turn on, the consumer, the HTTP
    /// listener.
    pub async fn assemble(
        settings: Settings,
        runtime: Runtime,
        backends: Backends,
    ) -> anyhow::Result<Server> {
        let mut runtime = runtime;
        let notification_metrics = NotificationMetrics::register(&mut runtime.registry);
        let notifications = &settings.notifications;
        let handler = NotificationHandler::new(
            channel::from_settings(notifications)?,
            backends.dedupe.clone(),
            notification_metrics,
            &settings.queues.notifications,
            notifications.concurrency,
        );
        backends
            .bus
            .subscribe(
                Subscription::new(
                    settings.queues.notifications.clone(),
                    Queues::NOTIFICATIONS_KEYS,
                    Arc::new(handler),
                )
                .with_readiness(runtime.health.add_status("consumer", false)),
            )
            .await
            .context("cannot consume order events")?;
        // Without the store nothing can be deduplicated, so nothing is sent.
        let dedupe = backends.dedupe;
        runtime.health.add_probe(backends.dedupe_name, true, move || {
            let dedupe = dedupe.clone();
            async move { dedupe.ping().await.map_err(|e| e.to_string()) }
        });

        let server = Server::bind(axum::Router::new(), runtime, &settings.http, &settings.shutdown).await?;
        Ok(server)
    }
}
