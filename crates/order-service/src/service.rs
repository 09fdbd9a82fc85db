//! The use cases of order-service, independent of HTTP and of the concrete backends.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use chrono::{DateTime, SubsecRound, Utc};
use contracts::{Envelope, OrderCancelled, OrderCreated, routing_key};
use messaging::{OutgoingMessage, outbox::OutboxHandoff};
use tracing::Instrument;
use uuid::Uuid;

use platform::cache::{CacheEntry, VersionedCache};

use crate::{
    domain::{Cancellation, NewOrder, Order},
    metrics::OrderMetrics,
    store::{
        CancelCommand, Cancelled, CreateCommand, Created, IdempotencyClaim, ListQuery, OrderStore,
        StoreError, writer::WriteGate,
    },
};

#[derive(Clone)]
pub struct OrderService {
    store: Arc<dyn OrderStore>,
    cache: Arc<dyn VersionedCache>,
    cache_ttl: Duration,
    /// Longest a create waits for its write (see [`OrderService::create`]).
    write_timeout: Duration,
    outbox: OutboxHandoff,
    metrics: OrderMetrics,
    /// Idempotency keys whose create is under way in this process.
    keys_in_progress: Arc<Mutex<HashSet<String>>>,
}

/// An idempotency key held as in progress until this is dropped.
struct KeyInProgress {
    keys: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl KeyInProgress {
    /// Marks `key` in progress, unless it already is.
    fn take(keys: &Arc<Mutex<HashSet<String>>>, key: &str) -> Option<KeyInProgress> {
        let mut held = keys.lock().unwrap_or_else(|e| e.into_inner());
        held.insert(key.to_owned()).then(|| KeyInProgress { keys: keys.clone(), key: key.to_owned() })
    }
}

impl Drop for KeyInProgress {
    fn drop(&mut self) {
        self.keys.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.key);
    }
}

impl OrderService {
    pub fn new(
        store: Arc<dyn OrderStore>,
        cache: Arc<dyn VersionedCache>,
        cache_ttl: Duration,
        write_timeout: Duration,
        outbox: OutboxHandoff,
        metrics: OrderMetrics,
    ) -> Self {
        OrderService {
            store,
            cache,
            cache_ttl,
            write_timeout,
            outbox,
            metrics,
            keys_in_progress: Arc::default(),
        }
    }

    /// Accepts an order: once this returns `Ok`, the order and its `OrderCreated` event are
    /// durable. The write has `write_timeout` to begin: if it has not by then it never will
    /// (`Expired`, nothing written); if it began and has not finished, the outcome is unknown
    /// (`OutcomeUnknown`: it may still commit, and a retry with the same `Idempotency-Key` tells).
    pub async fn create(
        &self,
        new: NewOrder,
        idempotency_key: Option<String>,
    ) -> Result<Created, StoreError> {
        let started = std::time::Instant::now();
        // A repeat of a request this process is still storing is refused, as the Idempotency-Key
        // draft asks; one that another replica is storing waits for it and gets its answer.
        let in_progress = match &idempotency_key {
            Some(key) => Some(
                KeyInProgress::take(&self.keys_in_progress, key)
                    .ok_or(StoreError::IdempotencyKeyInProgress)?,
            ),
            None => None,
        };
        let deadline = tokio::time::Instant::now() + self.write_timeout;
        let idempotency = idempotency_key.map(|key| IdempotencyClaim { key, fingerprint: new.fingerprint() });
        let order = Order::accept(new);
        let event = order_created_event(&order);
        let gate = WriteGate::default();
        let command =
            CreateCommand { order, event: event.clone(), idempotency, deadline, gate: gate.clone() };
        // The write and the handoff of its event run in a task of their own: a client that hangs
        // up drops this future, and an order committed meanwhile must still go out at once.
        let (outcome, answer) = tokio::sync::oneshot::channel();
        let service = self.clone();
        tokio::spawn(
            async move {
                let created = service.store.create(command).await;
                if let Ok(Created::New(order)) = &created {
                    service.outbox.publish_committed([event]);
                    service.metrics.orders_created.inc();
                    service.metrics.create_duration.observe(started.elapsed().as_secs_f64());
                    tracing::info!(event = "order_created", order_id = %order.id, customer_id = %order.customer_id, "order created");
                }
                // Held until the outcome is settled, also when the caller stopped waiting; let go
                // before answering, so that a repeat sent on the answer finds the stored order.
                drop(in_progress);
                let _ = outcome.send(created);
            }
            .in_current_span(),
        );
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(created)) => created,
            Ok(Err(_)) => Err(StoreError::WriterStopped),
            Err(_) if gate.abandon() => Err(StoreError::Expired),
            Err(_) => Err(StoreError::OutcomeUnknown),
        }
    }

    /// Cancels an order (see [`OrderStore::cancel`]); `None` if there is no such order. Once this
    /// returns `Cancelled::Now`, the cancellation and its `OrderCancelled` event are durable. The
    /// write runs in a task of its own, as a create's does; if it has not finished within
    /// `write_timeout`, the outcome is unknown (a retry with the same `Idempotency-Key` tells).
    pub async fn cancel(
        &self,
        cancellation: Cancellation,
        idempotency_key: Option<String>,
    ) -> Result<Option<Cancelled>, StoreError> {
        let in_progress = match &idempotency_key {
            Some(key) => Some(
                KeyInProgress::take(&self.keys_in_progress, key)
                    .ok_or(StoreError::IdempotencyKeyInProgress)?,
            ),
            None => None,
        };
        let at = Utc::now().trunc_subsecs(6);
        let event = order_cancelled_event(&cancellation, at);
        let idempotency =
            idempotency_key.map(|key| IdempotencyClaim { key, fingerprint: cancellation.fingerprint() });
        let command =
            CancelCommand { order_id: cancellation.order_id, at, event: event.clone(), idempotency };
        let service = self.clone();
        let write = tokio::spawn(
            async move {
                let cancelled = service.store.cancel(command).await;
                if let Ok(Some(Cancelled::Now(order))) = &cancelled {
                    service.outbox.publish_committed([event]);
                    service.metrics.orders_cancelled.inc();
                    service.refresh_cached(std::slice::from_ref(order)).await;
                    tracing::info!(event = "order_cancelled", order_id = %order.id, "order cancelled");
                }
                drop(in_progress);
                cancelled
            }
            .in_current_span(),
        );
        match tokio::time::timeout(self.write_timeout, write).await {
            Ok(Ok(cancelled)) => cancelled,
            Ok(Err(_)) => Err(StoreError::WriterStopped),
            Err(_) => Err(StoreError::OutcomeUnknown),
        }
    }

    /// Replaces the cached bodies of `orders` with their new versions, so that readers see the
    /// change at once.
    async fn refresh_cached(&self, orders: &[Order]) {
        let refreshed = orders
            .iter()
            .map(|order| CacheEntry {
                key: cache_key(order.id),
                version: order.version(),
                body: order_json(order),
            })
            .collect();
        if let Err(error) = self.cache.put_many(refreshed, self.cache_ttl).await {
            self.metrics.cache.error();
            tracing::warn!(event = "cache_failed", orders = orders.len(), error = %error, "could not refresh the cached orders");
        }
    }

    /// The order's JSON body: from the cache when it has it, else from the store (then cached).
    /// A cache failure is counted and otherwise ignored.
    pub async fn get_json(&self, id: Uuid) -> Result<Option<Bytes>, StoreError> {
        match self.cache.get(&cache_key(id)).await {
            Ok(Some(body)) => {
                self.metrics.cache.hit();
                return Ok(Some(body));
            }
            Ok(None) => self.metrics.cache.miss(),
            Err(error) => {
                self.metrics.cache.error();
                tracing::debug!(event = "cache_failed", error = %error, "order cache unavailable; reading the database");
            }
        }
        let Some(order) = self.store.get(id).await? else { return Ok(None) };
        let body = order_json(&order);
        if let Err(error) =
            self.cache.put(&cache_key(id), order.version(), body.clone(), self.cache_ttl).await
        {
            self.metrics.cache.error();
            tracing::debug!(event = "cache_failed", error = %error, "could not cache the order");
        }
        Ok(Some(body))
    }

    pub async fn list(&self, query: &ListQuery) -> Result<Vec<Order>, StoreError> {
        self.store.list(query).await
    }

    /// Records that analytics has processed these orders; idempotent. Returns the ids that
    /// changed now.
    pub async fn mark_processed(&self, ids: &[Uuid], at: DateTime<Utc>) -> Result<Vec<Uuid>, StoreError> {
        let changed = self.store.mark_processed(ids, at).await?;
        self.refresh_cached(&changed).await;
        Ok(changed.iter().map(|order| order.id).collect())
    }

    pub async fn ping_store(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }

    pub async fn ping_cache(&self) -> Result<(), String> {
        self.cache.ping().await.map_err(|e| e.to_string())
    }
}

fn cache_key(id: Uuid) -> String {
    format!("order:{}", id.hyphenated())
}

pub fn order_json(order: &Order) -> Bytes {
    Bytes::from(serde_json::to_vec(order).expect("an order always serialises"))
}

fn order_created_event(order: &Order) -> OutgoingMessage {
    let envelope = Envelope::order_created(
        Uuid::now_v7(),
        order.created_at,
        OrderCreated {
            order_id: order.id,
            customer_id: order.customer_id.clone(),
            product_id: order.product_id.clone(),
            quantity: order.quantity,
            total_amount: order.total_amount,
        },
    );
    OutgoingMessage::from_envelope(&envelope, routing_key::ORDER_CREATED)
}

fn order_cancelled_event(cancellation: &Cancellation, at: DateTime<Utc>) -> OutgoingMessage {
    let envelope = Envelope::order_cancelled(
        Uuid::now_v7(),
        at,
        OrderCancelled {
            order_id: cancellation.order_id,
            reason: cancellation.reason.clone(),
            cancelled_at: at,
        },
    );
    OutgoingMessage::from_envelope(&envelope, routing_key::ORDER_CANCELLED)
}
