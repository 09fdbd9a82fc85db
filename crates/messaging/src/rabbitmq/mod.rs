//! RabbitMQ adapter of the event bus.
//!
//! One AMQP connection per process, owned by a supervisor task that (re)connects with backoff,
//! declares the topology, starts every registered consumer, and rebuilds everything from scratch
//! on any loss. Publishing uses a dedicated confirm-mode channel; each consumer has its own
//! channel. See [`topology`] for the exchanges and queues.
//!
//! Lapin's own connection recovery is left off on purpose: the supervisor already rebuilds the
//! connection, channels, topology and consumers, and two recovery mechanisms would race each
//! other (lapin re-registering consumers the supervisor also restarts).

mod admin;
pub mod cli;
mod consumer;
pub mod headers;
mod publisher;
mod settings;
mod supervisor;
pub mod topology;

use std::{
    sync::{Arc, Mutex, MutexGuard, atomic::AtomicU64},
    time::Duration,
};

use contracts::QueueBinding;
use platform::{ConfigError, DependencyStatus, Shutdown};

pub use settings::RabbitSettings;
pub use topology::{ExchangeNames, QueueNames, RetryQueue, queue_names_of};

use crate::{MessagingMetrics, Subscription};
use supervisor::Session;

/// Why an operation on the broker did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RabbitError {
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    #[error("invalid subscription: {0}")]
    InvalidSubscription(String),
    #[error("queue {0:?} does not exist")]
    QueueNotFound(String),
    #[error("no answer from the broker within {0:?}")]
    Timeout(Duration),
    #[error("shutting down")]
    ShuttingDown,
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
}

/// Handle on the RabbitMQ adapter; cheap to clone, all clones share one connection.
#[derive(Clone)]
pub struct RabbitMq {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) settings: RabbitSettings,
    pub(crate) exchanges: ExchangeNames,
    /// Every consumer queue of the system, declared on each connection before anything is
    /// published on it.
    pub(crate) topology: Vec<QueueBinding>,
    pub(crate) status: DependencyStatus,
    pub(crate) metrics: MessagingMetrics,
    pub(crate) shutdown: Shutdown,
    /// Connections established so far.
    pub(crate) connections: AtomicU64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The live connection, if any.
    session: Option<Arc<Session>>,
    /// Every consumer ever registered; each is started on every new session.
    subscriptions: Vec<Subscription>,
}

impl RabbitMq {
    /// Validates `settings` and starts the connection supervisor. The broker need not be up: the
    /// supervisor keeps trying, and `status` tells whether it is connected. On every connection
    /// the queues of `topology` and their bindings are declared before anything is published, so
    /// that no event goes out while a queue that should take it is missing.
    ///
    /// Must be called inside a Tokio runtime. The supervisor and the consumers are tasks of
    /// `shutdown`: after it is triggered they finish the batches in hand and close the connection.
    pub fn new(
        settings: RabbitSettings,
        topology: Vec<QueueBinding>,
        status: DependencyStatus,
        metrics: MessagingMetrics,
        shutdown: Shutdown,
    ) -> Result<RabbitMq, ConfigError> {
        settings.validate()?;
        for binding in &topology {
            if binding.queue.trim().is_empty() {
                return Err(ConfigError::invalid(binding.key, "must not be empty"));
            }
            QueueNames::new(&binding.queue, &settings)
                .check_lengths()
                .map_err(|reason| ConfigError::invalid(binding.key, reason))?;
        }
        status.set_down("not connected yet");
        let shared = Arc::new(Shared {
            exchanges: ExchangeNames::new(&settings),
            topology,
            settings,
            status,
            metrics,
            shutdown: shutdown.clone(),
            connections: AtomicU64::new(0),
            state: Mutex::default(),
        });
        shutdown.spawn(supervisor::supervise(shared.clone()));
        Ok(RabbitMq { shared })
    }

    pub fn settings(&self) -> &RabbitSettings {
        &self.shared.settings
    }

    pub fn exchanges(&self) -> &ExchangeNames {
        &self.shared.exchanges
    }

    /// The queues that serve `queue` (its retry queues and dead-letter queue).
    pub fn queue_names(&self, queue: &str) -> QueueNames {
        QueueNames::new(queue, &self.shared.settings)
    }

    /// Connected, and the broker is not blocking publishers.
    pub fn is_available(&self) -> bool {
        self.shared.session().is_some_and(|session| session.unavailable_reason().is_none())
    }

    /// Connections established so far: 1 + reconnections, for diagnostics.
    pub fn connections_established(&self) -> u64 {
        self.shared.connections.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Registers a consumer: its queues are declared and it is started now if the broker is
    /// connected, and again after every reconnection.
    ///
    /// Returns once the consumer is running, or at once when the broker is unavailable.
    pub async fn consume(&self, subscription: Subscription) -> Result<(), RabbitError> {
        check_subscription(&subscription, &self.shared.settings)?;
        if self.shared.shutdown.is_triggered() {
            return Err(RabbitError::ShuttingDown);
        }
        let started = {
            let mut state = self.shared.lock_state();
            if state.subscriptions.iter().any(|existing| existing.queue == subscription.queue) {
                return Err(RabbitError::InvalidSubscription(format!(
                    "queue {:?} is already consumed",
                    subscription.queue
                )));
            }
            state.subscriptions.push(subscription.clone());
            state.session.clone().map(|session| consumer::start(&self.shared, &session, subscription.clone()))
        };
        crate::parked::sample_queue_depths(
            self.clone(),
            subscription.queue,
            self.shared.metrics.clone(),
            self.shared.shutdown.clone(),
        );
        if let Some(started) = started {
            // The consumer keeps trying across reconnections even if this wait ends first.
            let _ = tokio::time::timeout(self.shared.settings.publish_timeout(), started).await;
        }
        Ok(())
    }
}

impl Shared {
    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live session, if any.
    pub(crate) fn session(&self) -> Option<Arc<Session>> {
        self.lock_state().session.clone()
    }

    /// The live session, or why there is none.
    pub(crate) fn available_session(&self) -> Result<Arc<Session>, RabbitError> {
        let session = self.session().ok_or_else(|| RabbitError::Unavailable("not connected".into()))?;
        match session.unavailable_reason() {
            Some(reason) => Err(RabbitError::Unavailable(reason)),
            None => Ok(session),
        }
    }

    /// Makes `session` the live one and starts every registered consumer on it. Done under the
    /// state lock, so that a consumer registered concurrently is started exactly once.
    fn attach(self: &Arc<Self>, session: &Arc<Session>) {
        let mut state = self.lock_state();
        state.session = Some(session.clone());
        for subscription in state.subscriptions.clone() {
            // Nobody waits for these to start.
            drop(consumer::start(self, session, subscription));
        }
    }

    fn detach(&self, session: &Arc<Session>) {
        let mut state = self.lock_state();
        if state.session.as_ref().is_some_and(|current| Arc::ptr_eq(current, session)) {
            state.session = None;
        }
    }
}

fn check_subscription(subscription: &Subscription, settings: &RabbitSettings) -> Result<(), RabbitError> {
    if subscription.queue.is_empty() {
        return Err(RabbitError::InvalidSubscription("the queue name is empty".into()));
    }
    QueueNames::new(&subscription.queue, settings)
        .check_lengths()
        .map_err(RabbitError::InvalidSubscription)?;
    if let Some(key) = subscription.routing_keys.iter().find(|key| key.len() > settings::MAX_NAME_LENGTH) {
        return Err(RabbitError::InvalidSubscription(format!(
            "routing key {key:?} is longer than {} bytes",
            settings::MAX_NAME_LENGTH
        )));
    }
    Ok(())
}

#[async_trait::async_trait]
impl crate::EventBus for RabbitMq {
    async fn subscribe(&self, subscription: Subscription) -> Result<(), crate::SubscribeError> {
        self.consume(subscription).await.map_err(|e| crate::SubscribeError(e.to_string()))
    }
}
