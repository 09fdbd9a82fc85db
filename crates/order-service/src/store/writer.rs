//! Grouped writes, the same for both dialects: `create` calls wait in a bounded queue, writer
//! tasks each take whatever is waiting and hand it to the dialect, which stores it in one
//! transaction (one commit for the whole group) and answers each request.
//!
//! Every write carries a deadline. A request still waiting when its deadline passes is dropped,
//! never written: whoever gets there first (the writer beginning the batch, or the caller giving
//! up) decides, through the request's [`WriteGate`]. A full queue refuses at once.

use std::sync::{
    Arc,
    atomic::{AtomicU8, Ordering},
};

use async_trait::async_trait;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{CreateCommand, Created, StoreError};

/// One queued `create`, and where its outcome goes.
pub struct WriteRequest {
    pub command: CreateCommand,
    pub reply: oneshot::Sender<Result<Created, StoreError>>,
}

/// A dialect's way of storing a group of orders.
#[async_trait]
pub trait BatchWrite: Send + Sync + 'static {
    /// Stores the new orders of `batch` in one transaction and answers every request.
    async fn write_batch(&self, batch: Vec<WriteRequest>);
}

/// How many writers, how large a group, how many requests may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterLimits {
    pub writers: usize,
    pub batch_size: usize,
    /// Requests waiting beyond the groups being written; one more is refused at once.
    pub queue_capacity: usize,
}

const WAITING: u8 = 0;
const BEGUN: u8 = 1;
const ABANDONED: u8 = 2;

/// Whether a queued write may still begin; shared by the caller and the writer.
#[derive(Debug, Clone, Default)]
pub struct WriteGate(Arc<AtomicU8>);

impl WriteGate {
    /// The writer takes the request into a batch; false if the caller gave up on it first.
    fn begin(&self) -> bool {
        self.0.compare_exchange(WAITING, BEGUN, Ordering::SeqCst, Ordering::SeqCst).is_ok()
    }

    /// The caller stops waiting; true if the write had not begun (then it never will), false if
    /// it had (then it may yet commit).
    pub fn abandon(&self) -> bool {
        self.0.compare_exchange(WAITING, ABANDONED, Ordering::SeqCst, Ordering::SeqCst).is_ok()
            || self.0.load(Ordering::SeqCst) == ABANDONED
    }
}

/// The queue in front of the writer tasks.
pub struct WriteQueue {
    sender: mpsc::Sender<WriteRequest>,
}

impl WriteQueue {
    /// Starts `limits.writers` writer tasks storing through `dialect`.
    pub fn start(dialect: Arc<dyn BatchWrite>, limits: WriterLimits) -> WriteQueue {
        let batch_size = limits.batch_size.max(1);
        let (sender, receiver) = mpsc::channel(limits.queue_capacity.max(1));
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..limits.writers.max(1) {
            tokio::spawn(writer(dialect.clone(), receiver.clone(), batch_size));
        }
        WriteQueue { sender }
    }

    /// Queues `command` and waits for its outcome: `Busy` at once when the queue is full.
    pub async fn create(&self, command: CreateCommand) -> Result<Created, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.sender.try_send(WriteRequest { command, reply }).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => StoreError::Busy,
            mpsc::error::TrySendError::Closed(_) => StoreError::WriterStopped,
        })?;
        // Dropped unanswered: the caller gave the write up before it began.
        answer.await.unwrap_or(Err(StoreError::Expired))
    }
}

async fn writer(
    dialect: Arc<dyn BatchWrite>,
    queue: Arc<Mutex<mpsc::Receiver<WriteRequest>>>,
    batch_size: usize,
) {
    loop {
        let mut waiting = Vec::with_capacity(batch_size);
        // Take everything waiting (at least one), then let the next writer gather while this one
        // talks to the database.
        if queue.lock().await.recv_many(&mut waiting, batch_size).await == 0 {
            return; // the store was dropped
        }
        let batch = begin(waiting);
        if !batch.is_empty() {
            dialect.write_batch(batch).await;
        }
    }
}

/// The requests of `waiting` that may still be written; the others are answered or dropped.
fn begin(waiting: Vec<WriteRequest>) -> Vec<WriteRequest> {
    let now = tokio::time::Instant::now();
    let mut batch = Vec::with_capacity(waiting.len());
    for request in waiting {
        if request.command.deadline <= now {
            if request.command.gate.abandon() {
                let _ = request.reply.send(Err(StoreError::Expired));
            }
        } else if request.command.gate.begin() {
            batch.push(request);
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_of_writer_and_caller_decides() {
        let gate = WriteGate::default();
        assert!(gate.begin());
        assert!(!gate.abandon(), "begun: the caller cannot take it back");

        let gate = WriteGate::default();
        assert!(gate.abandon());
        assert!(!gate.begin(), "abandoned: it never begins");
        assert!(gate.abandon(), "abandoning twice is harmless");
    }
}
