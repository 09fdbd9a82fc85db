//! analytics-service: counts every `OrderCreated` exactly once into aggregates kept current
//! incrementally (so reading them costs the same at ten orders or ten million), serves them over
//! HTTP with the summary cached in Redis, and emits `OrderProcessed` through its outbox.

pub mod consumer;
pub mod domain;
pub mod http;
pub mod metrics;
pub mod service;
pub mod settings;
pub mod store;

use std::sync::Arc;

use anyhow::Context;
use contracts::routing_key;
use messaging::{
    MessagingMetrics, Subscription,
    outbox::{Relay, mysql::MySqlOutbox},
    rabbitmq::RabbitMq,
};
use platform::{Health, Shutdown, cache::redis::RedisCache, http::with_middleware, metrics::HttpMetrics};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::{
    consumer::OrderEventsHandler, metrics::AnalyticsMetrics, service::AnalyticsService, settings::Settings,
    store::mysql::MySqlAnalyticsStore,
};

pub const SERVICE_NAME: &str = "analytics-service";

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/analytics-service/mysql");

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    shutdown: Shutdown,
    health: Health,
    settings: Settings,
}

impl Application {
    /// Connects to MySQL (waiting for it, then migrating), Redis and RabbitMQ (both in the
    /// background), starts consuming, and binds the HTTP listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let shutdown = Shutdown::new();
        let mut registry = Registry::default();
        let health = Health::new(&mut registry);
        let http_metrics = HttpMetrics::register(&mut registry);
        let messaging_metrics = MessagingMetrics::register(&mut registry);
        let analytics_metrics = AnalyticsMetrics::register(&mut registry);

        let pool = settings.database.pool()?;
        platform::database::migrate(&settings.database, &pool, &MIGRATOR, &shutdown)
            .await
            .context("database migrations failed")?;

        let rabbit = RabbitMq::new(
            settings.rabbitmq.clone(),
            health.add_status("rabbitmq", false),
            messaging_metrics.clone(),
            shutdown.clone(),
        )?;
        let relay = Relay::new(
            Arc::new(MySqlOutbox::new(pool.clone())),
            Arc::new(rabbit.clone()),
            settings.outbox.clone(),
            messaging_metrics,
        );
        let service = AnalyticsService::new(
            Arc::new(MySqlAnalyticsStore::new(pool.clone())),
            Arc::new(RedisCache::new(&settings.redis)?),
            settings.analytics.summary_cache_ttl(),
            relay.waker(),
            analytics_metrics,
        );
        shutdown.spawn(relay.run(shutdown.clone()));
        rabbit
            .consume(Subscription {
                queue: settings.analytics.queue.clone(),
                routing_keys: vec![routing_key::ORDER_CREATED.to_owned()],
                handler: Arc::new(OrderEventsHandler::new(service.clone(), settings.analytics.queue.clone())),
            })
            .await
            .context("cannot consume OrderCreated events")?;

        let probe_service = service.clone();
        health.add_probe("mysql", true, move || {
            let service = probe_service.clone();
            async move { service.store().ping().await.map_err(|e| e.to_string()) }
        });
        let probe_service = service.clone();
        health.add_probe("redis", false, move || {
            let service = probe_service.clone();
            async move { service.ping_cache().await }
        });

        let router =
            http::router(service).merge(platform::http::ops_router(health.clone(), Arc::new(registry)));
        let router = with_middleware(router, &settings.http, http_metrics);
        let listener = TcpListener::bind((settings.http.host.as_str(), settings.http.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", settings.http.host, settings.http.port))?;
        Ok(Application { listener, router, shutdown, health, settings })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or_default()
    }

    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    pub fn health(&self) -> Health {
        self.health.clone()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        platform::http::serve(self.listener, self.router, self.shutdown, &self.settings.shutdown).await
    }
}
