//! One queue's consumer: batches of what has arrived, handled by the pipeline the RabbitMQ
//! consumer shares (ack, delayed retry, parking, pauses while a dependency is down); plus the
//! replayer that brings replayed parked messages back to it.

use std::sync::{Arc, atomic::Ordering};

use futures::future::join_all;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use super::{Hub, Pending, Queue, parked::Replay};
use crate::consume::{self, Action, Handling, Pipeline};
use platform::Shutdown;

pub(super) struct Consumer {
    pub queue: Arc<Queue>,
    pub pipeline: Pipeline,
    pub hub: Arc<Hub>,
    pub shutdown: Shutdown,
}

impl Consumer {
    /// Runs the consumer and its replayer as tasks that the shutdown waits for.
    pub fn start(self, receiver: mpsc::UnboundedReceiver<Pending>) {
        let consumer = Arc::new(self);
        consumer.shutdown.spawn(consumer.clone().consume(receiver));
        consumer.shutdown.spawn(consumer.clone().replay());
    }

    async fn consume(self: Arc<Self>, mut receiver: mpsc::UnboundedReceiver<Pending>) {
        info!(event = "consumer_started", queue = %self.queue.name, "consumer started");
        let batch_size = self.hub.settings.batch_size;
        loop {
            let first = tokio::select! {
                biased;
                () = self.shutdown.requested() => break,
                next = receiver.recv() => match next {
                    Some(pending) => pending,
                    None => break,
                },
            };
            let batch = consume::gather(first, batch_size, || receiver.try_recv().ok());
            self.queue.ready.fetch_sub(batch.len(), Ordering::SeqCst);
            self.process(batch).await;
        }
        // Whatever is still queued is dropped with the receiver: its publishers see it
        // unconfirmed, and their outbox publishes it again after the restart.
        info!(event = "consumer_stopped", queue = %self.queue.name, "consumer stopped");
    }

    /// Hands `batch` to the pipeline, then settles every delivery. Interrupted (shutdown while
    /// paused), the batch is dropped unconfirmed, like what is still queued.
    async fn process(&self, batch: Vec<Pending>) {
        let deliveries: Vec<_> = batch.iter().map(|pending| pending.delivery.clone()).collect();
        let Handling::Done(actions) = self.pipeline.handle(&deliveries, self.shutdown.requested()).await
        else {
            return;
        };
        for (pending, action) in batch.into_iter().zip(actions) {
            self.settle(pending, action).await;
        }
    }

    async fn settle(&self, pending: Pending, action: Action) {
        match action {
            Action::Ack { .. } => {
                if let Some(id) = pending.replay_of
                    && let Err(error) = self.hub.parked.remove(id).await
                {
                    warn!(event = "replay_settle_failed", queue = %self.queue.name, error = %error, "cannot unpark a handled message; it will be delivered again");
                    let _ = pending.reply.send(Err(format!("cannot unpark message {id}: {error}")));
                    return;
                }
                self.pipeline.settled(&pending.delivery, &action);
                let _ = pending.reply.send(Ok(()));
            }
            Action::Retry { retry_queue } => {
                let delay = self.hub.settings.retry_delays()[retry_queue];
                self.pipeline.settled(&pending.delivery, &action);
                self.retry_later(pending, delay);
            }
            Action::Park { ref reason, .. } => {
                let stored = match pending.replay_of {
                    Some(id) => self.hub.parked.park_again(id, reason).await,
                    None => self.hub.parked.park(&self.queue.name, &pending.delivery, reason).await,
                };
                match stored {
                    Ok(()) => {
                        self.pipeline.settled(&pending.delivery, &action);
                        let _ = pending.reply.send(Ok(()));
                    }
                    Err(error) => {
                        error!(event = "park_failed", queue = %self.queue.name, error = %error, "cannot park a delivery; it stays unconfirmed");
                        let _ = pending.reply.send(Err(format!("cannot park the message: {error}")));
                    }
                }
            }
            Action::Requeue => {
                self.pipeline.settled(&pending.delivery, &action);
                self.queue.send(pending);
            }
        }
    }

    /// Sends `pending` back to the queue after `delay`, as its next attempt. Dropped at shutdown:
    /// its publisher then sees it unconfirmed.
    fn retry_later(&self, mut pending: Pending, delay: std::time::Duration) {
        pending.delivery.attempt = pending.delivery.attempt.saturating_add(1);
        let queue = self.queue.clone();
        let shutdown = self.shutdown.clone();
        self.shutdown.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(delay) => {
                    queue.send(pending);
                }
                () = shutdown.requested() => {}
            }
        });
    }

    /// Delivers replayed parked messages, oldest first: when asked, and on a poll for replays asked
    /// from another process. Each batch is settled before the next is read.
    async fn replay(self: Arc<Self>) {
        let batch_size = self.hub.settings.batch_size;
        let poll = self.hub.settings.replay_poll_interval();
        loop {
            let mut more = false;
            match self.hub.parked.replays(&self.queue.name, batch_size).await {
                Ok(replays) if !replays.is_empty() => {
                    let full = replays.len() == batch_size;
                    info!(event = "parked_replayed", queue = %self.queue.name, count = replays.len(), "delivering replayed messages");
                    let mut answers = Vec::with_capacity(replays.len());
                    for Replay { id, delivery } in replays {
                        let (reply, answer) = oneshot::channel();
                        if !self.queue.send(Pending { delivery, replay_of: Some(id), reply }) {
                            return;
                        }
                        answers.push(answer);
                    }
                    let settled = tokio::select! {
                        settled = join_all(answers) => settled,
                        () = self.shutdown.requested() => return,
                    };
                    more = full && settled.iter().all(|answer| matches!(answer, Ok(Ok(()))));
                }
                Ok(_) => {}
                Err(error) => {
                    warn!(event = "replay_read_failed", queue = %self.queue.name, error = %error, "cannot read replayed messages");
                }
            }
            if more {
                continue;
            }
            tokio::select! {
                () = self.queue.replays.notified() => {}
                () = tokio::time::sleep(poll) => {}
                () = self.shutdown.requested() => return,
            }
        }
    }
}
