//! order-service: accepts orders over HTTP, stores them with their `OrderCreated` event in one
//! transaction (outbox), serves them from a Redis cache-aside, and moves them to `processed` when
//! analytics reports it.

pub mod consumer;
pub mod domain;
pub mod http;
pub mod metrics;
pub mod service;
pub mod settings;
pub mod store;

use std::{path::Path, sync::Arc};

use anyhow::Context;
use contracts::{Queues, routing_key};
use messaging::{
    EventBus, MessagingMetrics, Subscription,
    outbox::{OutboxStore, Relay, store::SqlOutbox},
    rabbitmq::RabbitMq,
};
use platform::{
    Runtime,
    access::ApiGuard,
    cache::{VersionedCache, memory::MemoryCache, redis::RedisCache},
    http::Server,
};

use crate::{
    consumer::OrderProcessedHandler,
    metrics::OrderMetrics,
    service::OrderService,
    settings::Settings,
    store::{OrderStore, sql::SqlOrderStore},
};

pub const SERVICE_NAME: &str = "order-service";

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/order-service/mysql");

/// The backends order-service runs on: MySQL, Redis and RabbitMQ in production; SQLite, memory
/// and an in-process bus in the embedded mode.
pub struct Backends {
    pub store: Arc<dyn OrderStore>,
    pub outbox: Arc<dyn OutboxStore>,
    pub cache: Arc<dyn VersionedCache>,
    pub bus: Arc<dyn EventBus>,
    /// Readiness names of the store and the cache (`mysql`, `redis`).
    pub store_name: &'static str,
    pub cache_name: &'static str,
}

impl Backends {
    /// The production backends: MySQL (waiting for it, then migrating), Redis and RabbitMQ (both
    /// connected in the background).
    pub async fn production(
        settings: &Settings,
        runtime: &Runtime,
        messaging_metrics: &MessagingMetrics,
    ) -> anyhow::Result<Backends> {
        let pool = settings.database.pool()?;
        platform::database::migrate(&settings.database, &pool, &MIGRATOR, &runtime.shutdown)
            .await
            .context("database migrations failed")?;
        let rabbit = RabbitMq::new(
            settings.rabbitmq.clone(),
            settings.queues.bindings(),
            runtime.health.add_status("rabbitmq", false),
            messaging_metrics.clone(),
            runtime.shutdown.clone(),
        )?;
        Ok(Backends {
            store: Arc::new(SqlOrderStore::new(pool.clone(), settings.orders.writer_limits())),
            outbox: Arc::new(SqlOutbox::new(pool)),
            cache: Arc::new(RedisCache::new(&settings.redis)?),
            bus: Arc::new(rabbit),
            store_name: "mysql",
            cache_name: "redis",
        })
    }

    /// The embedded backends: the SQLite database at `database` (created and migrated if
    /// needed), `cache` and `bus`. The outbox leases of a process that ran on this database
    /// before are released: one relay per database is assumed.
    pub async fn embedded(
        database: &Path,
        settings: &Settings,
        cache: MemoryCache,
        bus: Arc<dyn EventBus>,
    ) -> anyhow::Result<Backends> {
        let pool = store::sqlite::open(database).await.context("cannot open the order database")?;
        let outbox = SqlOutbox::new(pool.clone());
        outbox.release_leases().await.context("cannot prepare the order outbox")?;
        Ok(Backends {
            store: Arc::new(SqlOrderStore::new(pool.clone(), settings.orders.writer_limits())),
            outbox: Arc::new(outbox),
            cache: Arc::new(cache),
            bus,
            store_name: "sqlite",
            cache_name: "memory",
        })
    }
}

/// Builds order-service into a listening [`Server`], on the production backends or on given ones.
pub struct Application;

impl Application {
    /// The production service: connects to MySQL (waiting for it, then migrating), Redis and
    /// RabbitMQ (both in the background), and binds the HTTP listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Server> {
        let mut runtime = Runtime::new();
        let messaging_metrics = MessagingMetrics::register(&mut runtime.registry);
        let backends = Backends::production(&settings, &runtime, &messaging_metrics).await?;
        Self::assemble(settings, runtime, messaging_metrics, backends).await
    }

    /// The service on the given backends: outbox relay, `OrderProcessed` consumer, HTTP listener.
    pub async fn assemble(
        settings: Settings,
        runtime: Runtime,
        messaging_metrics: MessagingMetrics,
        backends: Backends,
    ) -> anyhow::Result<Server> {
        let mut runtime = runtime;
        let order_metrics = OrderMetrics::register(&mut runtime.registry);
        messaging_metrics.init_routing_key(routing_key::ORDER_CREATED);
        let relay =
            Relay::new(backends.outbox, backends.bus.clone(), settings.outbox.clone(), messaging_metrics);
        let store = backends.store.clone();
        platform::retention::forget_periodically(
            &runtime.shutdown,
            "idempotency keys",
            settings.orders.idempotency_key_retention(),
            move |before, limit| {
                let store = store.clone();
                async move { store.purge_idempotency_keys(before, limit).await }
            },
        );
        let service = OrderService::new(
            backends.store,
            backends.cache,
            settings.orders.cache_ttl(),
            settings.orders.write_timeout(),
            relay.handoff(),
            order_metrics,
        );
        runtime.shutdown.spawn(relay.run(runtime.shutdown.clone()));
        backends
            .bus
            .subscribe(
                Subscription::new(
                    settings.queues.order_processed.clone(),
                    Queues::ORDER_PROCESSED_KEYS,
                    Arc::new(OrderProcessedHandler::new(
                        service.clone(),
                        settings.queues.order_processed.clone(),
                    )),
                )
                .with_readiness(runtime.health.add_status("consumer", false)),
            )
            .await
            .context("cannot consume OrderProcessed events")?;

        let probe_service = service.clone();
        runtime.health.add_probe(backends.store_name, true, move || {
            let service = probe_service.clone();
            async move { service.ping_store().await.map_err(|e| e.to_string()) }
        });
        let probe_service = service.clone();
        runtime.health.add_probe(backends.cache_name, false, move || {
            let service = probe_service.clone();
            async move { service.ping_cache().await }
        });

        let guard = ApiGuard::new(&settings.auth, &settings.rate_limit, http::required_scope, &mut runtime);
        Ok(Server::bind(http::router(service, &guard), runtime, &settings.http, &settings.shutdown).await?)
    }
}
