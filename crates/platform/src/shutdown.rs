//! Graceful shutdown: one token that every long-running part watches, and a tracker of the tasks
//! that must finish before the process exits.

use std::time::Duration;

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::health::Health;

#[derive(Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tasks: TaskTracker,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Begins shutdown: listeners stop accepting, consumers stop taking new messages.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes when shutdown has begun.
    pub async fn requested(&self) {
        self.token.cancelled().await
    }

    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Runs a background task that shutdown waits for (it should watch [`Shutdown::requested`]).
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(task)
    }

    /// Runs `task` every `period` (the first time after one period) until shutdown.
    pub fn spawn_periodic<F, Fut>(&self, period: Duration, mut task: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let stop = self.clone();
        self.spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(period) => task().await,
                    () = stop.requested() => return,
                }
            }
        });
    }

    /// Waits for the tracked tasks to finish; false if `grace` ran out first.
    pub async fn wait_for_tasks(&self, grace: Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(grace, self.tasks.wait()).await.is_ok()
    }
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// On SIGTERM/SIGINT: report not ready at once, wait `drain_delay` so that load balancers notice,
/// then trigger `shutdown`.
pub fn trigger_on_signal(health: Health, shutdown: Shutdown, drain_delay: Duration) {
    tokio::spawn(async move {
        tokio::select! {
            () = signal() => {}
            () = shutdown.requested() => return,
        }
        tracing::info!(event = "shutdown_requested", "shutdown requested, draining");
        health.set_shutting_down();
        tokio::time::sleep(drain_delay).await;
        shutdown.trigger();
    });
}
