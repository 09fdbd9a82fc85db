use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub cache: &'static str,
    /// `hit`, `miss` or `error`.
    pub result: &'static str,
}

#[derive(Clone)]
pub struct AnalyticsMetrics {
    pub cache_requests: Family<CacheLabels, Counter>,
}

impl AnalyticsMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = AnalyticsMetrics { cache_requests: Family::default() };
        registry.register("cache_requests", "Cache lookups by result", metrics.cache_requests.clone());
        metrics
    }

    pub fn cache(&self, result: &'static str) {
        self.cache_requests.get_or_create(&CacheLabels { cache: "summary", result }).inc();
    }
}
