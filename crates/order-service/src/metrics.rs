use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::{Registry, Unit},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub cache: &'static str,
    /// `hit`, `miss` or `error`.
    pub result: &'static str,
}

#[derive(Clone)]
pub struct OrderMetrics {
    pub orders_created: Counter,
    pub create_duration: Histogram,
    pub cache_requests: Family<CacheLabels, Counter>,
}

impl OrderMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = OrderMetrics {
            orders_created: Counter::default(),
            create_duration: platform::metrics::latency_histogram(),
            cache_requests: Family::default(),
        };
        registry.register("orders_created", "Orders accepted", metrics.orders_created.clone());
        registry.register_with_unit(
            "orders_created_duration",
            "Time to validate, store and acknowledge an order",
            Unit::Seconds,
            metrics.create_duration.clone(),
        );
        registry.register("cache_requests", "Cache lookups by result", metrics.cache_requests.clone());
        metrics
    }

    pub fn cache(&self, result: &'static str) {
        self.cache_requests.get_or_create(&CacheLabels { cache: "orders", result }).inc();
    }
}
