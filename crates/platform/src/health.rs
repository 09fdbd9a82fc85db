//! Liveness and readiness.
//!
//! Each dependency registers either a *probe* (run when readiness is asked, e.g. `SELECT 1`) or a
//! *status* that a background component keeps up to date (e.g. the broker connection supervisor).
//! A *critical* dependency that is down makes the service not ready; a non-critical one is reported
//! but does not (order-service keeps taking orders while Redis or RabbitMQ is down).

use std::{
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::future::BoxFuture;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};
use serde::Serialize;

/// Longest time a probe may take before it counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

type Probe = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

#[derive(Clone)]
enum Check {
    Probe(Probe),
    Status(DependencyStatus),
}

#[derive(Clone)]
struct Dependency {
    name: &'static str,
    critical: bool,
    check: Check,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DependencyLabels {
    dependency: String,
}

/// The readiness of one service: its dependencies and whether it is shutting down.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

struct Inner {
    dependencies: RwLock<Vec<Dependency>>,
    shutting_down: AtomicBool,
    up: Family<DependencyLabels, Gauge>,
}

/// A dependency state kept current by the component that watches it.
#[derive(Clone, Debug)]
pub struct DependencyStatus {
    state: Arc<Mutex<Result<(), String>>>,
}

impl DependencyStatus {
    fn new() -> Self {
        DependencyStatus { state: Arc::new(Mutex::new(Err("not connected yet".into()))) }
    }

    pub fn set_up(&self) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = Ok(());
    }

    pub fn set_down(&self, reason: impl std::fmt::Display) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = Err(reason.to_string());
    }

    pub fn is_up(&self) -> bool {
        self.get().is_ok()
    }

    fn get(&self) -> Result<(), String> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What `/readyz` answers.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    #[schema(value_type = String, example = "ready")]
    pub status: &'static str,
    /// Each dependency by name (`database`, `redis`, `rabbitmq`, `consumer`, …).
    #[schema(value_type = std::collections::BTreeMap<String, CheckReport>)]
    pub checks: std::collections::BTreeMap<&'static str, CheckReport>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CheckReport {
    /// `up` or `down`.
    #[schema(value_type = String, example = "up")]
    pub status: &'static str,
    /// Whether readiness depends on it.
    pub critical: bool,
    /// Why it is down, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error: Option<String>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.status == "ready"
    }
}

impl Health {
    /// Registers `dependency_up{dependency}` in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let up = Family::<DependencyLabels, Gauge>::default();
        registry.register("dependency_up", "1 when the dependency answers, 0 when it does not", up.clone());
        Health {
            inner: Arc::new(Inner {
                dependencies: RwLock::default(),
                shutting_down: AtomicBool::new(false),
                up,
            }),
        }
    }

    /// Adds a dependency checked by running `probe` each time readiness is asked.
    pub fn add_probe<F, Fut>(&self, name: &'static str, critical: bool, probe: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let probe: Probe = Arc::new(move || Box::pin(probe()));
        self.add(Dependency { name, critical, check: Check::Probe(probe) });
    }

    /// Adds a dependency whose state the caller keeps current through the returned handle.
    pub fn add_status(&self, name: &'static str, critical: bool) -> DependencyStatus {
        let status = DependencyStatus::new();
        self.add(Dependency { name, critical, check: Check::Status(status.clone()) });
        status
    }

    fn add(&self, dependency: Dependency) {
        self.inner.dependencies.write().unwrap_or_else(|e| e.into_inner()).push(dependency);
    }

    /// From now on the service reports not ready, so that traffic moves elsewhere before it stops.
    pub fn set_shutting_down(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    /// Checks every dependency (probes concurrently, each bounded in time).
    pub async fn readiness(&self) -> Readiness {
        let dependencies = self.inner.dependencies.read().unwrap_or_else(|e| e.into_inner()).clone();
        let results = futures::future::join_all(dependencies.iter().map(|dependency| async move {
            let result = match &dependency.check {
                Check::Status(status) => status.get(),
                Check::Probe(probe) => match tokio::time::timeout(PROBE_TIMEOUT, probe()).await {
                    Ok(result) => result,
                    Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
                },
            };
            (dependency, result)
        }))
        .await;

        let mut ready = !self.is_shutting_down();
        let mut checks = std::collections::BTreeMap::new();
        for (dependency, result) in results {
            self.inner
                .up
                .get_or_create(&DependencyLabels { dependency: dependency.name.to_owned() })
                .set(i64::from(result.is_ok()));
            if dependency.critical && result.is_err() {
                ready = false;
            }
            checks.insert(
                dependency.name,
                CheckReport {
                    status: if result.is_ok() { "up" } else { "down" },
                    critical: dependency.critical,
                    error: result.err(),
                },
            );
        }
        let status = match (ready, self.is_shutting_down()) {
            (_, true) => "shutting_down",
            (true, false) => "ready",
            (false, false) => "not_ready",
        };
        Readiness { status, checks }
    }
}
