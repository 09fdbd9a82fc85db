//! The connection supervisor: connect with backoff, declare, start consumers, watch, and on any
//! loss tear everything down and start over.

use std::{
    pin::{Pin, pin},
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, Instant},
};

use futures::{Stream, StreamExt, future::join_all};
use lapin::{Channel, Connection, ConnectionProperties, Event, options::ConfirmSelectOptions, uri::AMQPUri};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Shared, topology};

/// Longest wait for a TCP connection, the AMQP handshake and the topology declarations.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// First pause between connection attempts; it doubles on each failure up to the configured cap.
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// A session that lasted this long was healthy: the next loss starts the backoff afresh.
const STABLE_SESSION: Duration = Duration::from_secs(30);
/// How often the connection and the publishing channel are checked, in addition to events.
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// Longest wait for the broker to acknowledge a close.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Connection-level events: errors, blocked/unblocked.
type Events = Pin<Box<dyn Stream<Item = Event> + Send>>;

/// One connection and what lives on it.
pub(crate) struct Session {
    pub(crate) connection: Connection,
    /// Confirm-mode channel shared by all publishers.
    pub(crate) publisher: Channel,
    /// One batch at a time on `publisher`: lapin hands a returned (unroutable) message to whichever
    /// confirmation completes next, so it can be attributed by message id only when no other batch
    /// is in flight. This also keeps delivery tags in publish order across tasks.
    pub(crate) publish_lock: tokio::sync::Mutex<()>,
    lost: CancellationToken,
    lost_reason: Mutex<Option<String>>,
    consumers: Mutex<Vec<JoinHandle<()>>>,
}

impl Session {
    async fn open(shared: &Shared, uri: AMQPUri) -> lapin::Result<(Arc<Session>, Events)> {
        let properties = ConnectionProperties::default().with_connection_name("orderflow".into());
        let connection = Connection::connect_uri(uri, properties).await?;
        let events: Events = Box::pin(connection.events_listener());
        let publisher = connection.create_channel().await?;
        topology::declare_exchanges(&publisher, &shared.exchanges).await?;
        for binding in &shared.topology {
            let queues = topology::QueueNames::new(&binding.queue, &shared.settings);
            topology::declare_queues(
                &publisher,
                &shared.exchanges,
                &queues,
                &binding.routing_keys,
                shared.settings.delivery_limit,
            )
            .await?;
        }
        publisher.confirm_select(ConfirmSelectOptions::default()).await?;
        let session = Session {
            connection,
            publisher,
            publish_lock: tokio::sync::Mutex::new(()),
            lost: CancellationToken::new(),
            lost_reason: Mutex::new(None),
            consumers: Mutex::new(Vec::new()),
        };
        Ok((Arc::new(session), events))
    }

    /// Declares this session dead; the supervisor then replaces it. The first reason is kept.
    pub(crate) fn mark_lost(&self, reason: impl std::fmt::Display) {
        let mut lost_reason = self.lost_reason.lock().unwrap_or_else(|e| e.into_inner());
        if lost_reason.is_none() {
            warn!(event = "rabbitmq_connection_lost", reason = %reason, "RabbitMQ connection lost");
            *lost_reason = Some(reason.to_string());
        }
        self.lost.cancel();
    }

    /// Runs `work` unless the session is lost first (then `None`): a call on a dead connection
    /// may never be answered.
    pub(crate) async fn unless_lost<T>(&self, work: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            biased;
            () = self.lost() => None,
            value = work => Some(value),
        }
    }

    pub(crate) fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Completes when the session is declared dead.
    pub(crate) async fn lost(&self) {
        self.lost.cancelled().await
    }

    fn lost_reason(&self) -> String {
        self.lost_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| "connection lost".into())
    }

    /// Why nothing can be published right now, if that is the case.
    pub(crate) fn unavailable_reason(&self) -> Option<String> {
        if self.is_lost() {
            Some(self.lost_reason())
        } else if self.connection.status().blocked() {
            Some("the broker is blocking publishers (resource alarm)".into())
        } else {
            None
        }
    }

    pub(crate) fn add_consumer(&self, task: JoinHandle<()>) {
        let mut consumers = self.consumers.lock().unwrap_or_else(|e| e.into_inner());
        consumers.retain(|task| !task.is_finished());
        consumers.push(task);
    }

    fn health_problem(&self) -> Option<&'static str> {
        if !self.connection.status().connected() {
            Some("the connection is closed")
        } else if !self.publisher.status().connected() {
            Some("the publishing channel is closed")
        } else {
            None
        }
    }
}

/// Keeps a session open: connects to the broker's nodes in turn, and after a lost session or a
/// failed attempt tries the next node first. Only when every node has failed in a row does it
/// pause, longer after each such round.
pub(crate) async fn supervise(shared: Arc<Shared>) {
    // Validated when the handle was built.
    let nodes = match shared.settings.uris() {
        Ok(nodes) => nodes,
        Err(error) => {
            shared.status.set_down(error.to_string());
            return;
        }
    };
    let mut next = 0;
    let mut failed_in_a_row = 0;
    let mut failed_rounds: u32 = 0;
    while !shared.shutdown.is_triggered() {
        let uri = nodes[next % nodes.len()].clone();
        let node = format!("{}:{}", uri.authority.host, uri.authority.port);
        next += 1;
        let opened = tokio::select! {
            () = shared.shutdown.requested() => break,
            opened = tokio::time::timeout(CONNECT_TIMEOUT, Session::open(&shared, uri)) => opened,
        };
        let failure = match opened {
            Ok(Ok((session, events))) => {
                info!(event = "rabbitmq_connected", node = %node, "connected to RabbitMQ");
                failed_in_a_row = 0;
                let started = Instant::now();
                let reason = run_session(&shared, &session, events).await;
                if !shared.shutdown.is_triggered() {
                    shared.status.set_down(&reason);
                }
                close_session(&shared, &session).await;
                if shared.shutdown.is_triggered() {
                    break;
                }
                failed_rounds =
                    if started.elapsed() >= STABLE_SESSION { 0 } else { failed_rounds.saturating_add(1) };
                None
            }
            Ok(Err(error)) => Some(format!("cannot connect to {node}: {error}")),
            Err(_) => Some(format!("no connection to {node} within {CONNECT_TIMEOUT:?}")),
        };
        if let Some(failure) = failure {
            warn!(event = "rabbitmq_connect_failed", node = %node, error = %failure, "cannot connect to RabbitMQ");
            shared.status.set_down(failure);
            failed_in_a_row += 1;
            if failed_in_a_row < nodes.len() {
                continue; // another node may answer at once
            }
            failed_in_a_row = 0;
            failed_rounds = failed_rounds.saturating_add(1);
        }
        let pause = backoff(failed_rounds, shared.settings.reconnect_max_backoff());
        tokio::select! {
            () = shared.shutdown.requested() => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
    shared.status.set_down("shut down");
}

/// Serves one session until it is lost or shutdown begins; returns why it ended.
async fn run_session(shared: &Arc<Shared>, session: &Arc<Session>, mut events: Events) -> String {
    shared.connections.fetch_add(1, Ordering::Relaxed);
    shared.attach(session);
    if session.connection.status().blocked() {
        shared.status.set_down("the broker is blocking publishers (resource alarm)");
    } else {
        shared.status.set_up();
    }
    let mut health_check = tokio::time::interval(HEALTH_CHECK_INTERVAL);
    loop {
        tokio::select! {
            () = shared.shutdown.requested() => return "shutting down".into(),
            () = session.lost() => return session.lost_reason(),
            event = events.next() => match event {
                // Lapin also reports here every channel the broker closes with an error (an
                // operator's query for a missing queue, say): only a dead connection or publishing
                // channel is this loop's business; consumers watch their own channels.
                Some(Event::Error(error)) => {
                    if let Some(problem) = session.health_problem() {
                        session.mark_lost(format!("{problem}: {error}"));
                    }
                }
                Some(Event::ConnectionBlocked(reason)) => {
                    warn!(event = "rabbitmq_blocked", reason = %reason, "RabbitMQ blocks publishers");
                    shared.status.set_down(format!("the broker is blocking publishers: {reason}"));
                }
                Some(Event::ConnectionUnblocked) => {
                    info!(event = "rabbitmq_unblocked", "RabbitMQ accepts publishers again");
                    shared.status.set_up();
                }
                Some(_) => {}
                None => session.mark_lost("the connection's event stream ended"),
            },
            _ = health_check.tick() => {
                if let Some(problem) = session.health_problem() {
                    session.mark_lost(problem);
                }
            }
        }
    }
}

/// Stops using `session`. On shutdown the consumers first finish the batches they hold.
async fn close_session(shared: &Shared, session: &Arc<Session>) {
    shared.detach(session);
    if shared.shutdown.is_triggered() {
        let consumers = std::mem::take(&mut *session.consumers.lock().unwrap_or_else(|e| e.into_inner()));
        let mut finished = pin!(join_all(consumers));
        // Keep watching the connection: if it dies now, the consumers must hear of it to stop.
        loop {
            tokio::select! {
                _ = &mut finished => break,
                () = tokio::time::sleep(HEALTH_CHECK_INTERVAL) => {
                    if let Some(problem) = session.health_problem() {
                        session.mark_lost(problem);
                    }
                }
            }
        }
    }
    session.lost.cancel();
    if session.connection.status().connected() {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, session.connection.close(200, "closing".into())).await;
    }
}

/// Exponential, capped, with jitter so that many instances do not reconnect in lockstep.
fn backoff(failures: u32, max: Duration) -> Duration {
    let exponential = INITIAL_BACKOFF.saturating_mul(2u32.saturating_pow(failures.min(16)));
    exponential.min(max).mul_f64(rand::random_range(0.5..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let max = Duration::from_secs(30);
        assert!(backoff(0, max) <= INITIAL_BACKOFF);
        assert!(backoff(3, max) >= INITIAL_BACKOFF * 4);
        for failures in [10, 100, u32::MAX] {
            let pause = backoff(failures, max);
            assert!(pause <= max && pause >= max / 2, "{pause:?}");
        }
    }
}
