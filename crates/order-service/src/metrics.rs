use platform::cache::CacheMetrics;
use prometheus_client::{
    metrics::{counter::Counter, histogram::Histogram},
    registry::{Registry, Unit},
};

#[derive(Clone)]
pub struct OrderMetrics {
    pub orders_created: Counter,
    pub orders_cancelled: Counter,
    pub create_duration: Histogram,
    pub cache: CacheMetrics,
}

impl OrderMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = OrderMetrics {
            orders_created: Counter::default(),
            orders_cancelled: Counter::default(),
            create_duration: platform::metrics::latency_histogram(),
            cache: CacheMetrics::register(registry, "orders"),
        };
        registry.register("orders_created", "Orders accepted", metrics.orders_created.clone());
        registry.register("orders_cancelled", "Orders cancelled", metrics.orders_cancelled.clone());
        registry.register_with_unit(
            "orders_created_duration",
            "Time to validate, store and acknowledge an order",
            Unit::Seconds,
            metrics.create_duration.clone(),
        );
        metrics
    }
}
