//! Orders in MySQL / MariaDB.
//!
//! Writes are grouped ([`super::writer`]): a few writer tasks each store whatever is waiting in
//! one transaction (one multi-row INSERT per table, one commit). Under load this turns thousands
//! of small transactions into a few dozen, which is what lets the outbox's extra row cost almost
//! nothing.

use std::{collections::HashMap, sync::Arc};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use contracts::{Money, OrderStatus};
use sqlx::{MySqlPool, QueryBuilder, Row, mysql::MySqlRow};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{
    CreateCommand, Created, IdempotencyClaim, ListQuery, OrderStore, StoreError,
    writer::{BatchWrite, WriteQueue, WriteRequest, WriterLimits},
};
use crate::domain::Order;

const ORDER_COLUMNS: &str =
    "o.id, o.customer_id, o.product_id, o.quantity, o.total_minor, o.status, o.created_at, o.updated_at";

pub struct MySqlOrderStore {
    pool: MySqlPool,
    writes: WriteQueue,
}

impl MySqlOrderStore {
    /// Starts the writer tasks.
    pub fn new(pool: MySqlPool, limits: WriterLimits) -> Self {
        let writes = WriteQueue::start(Arc::new(MySqlWriter { pool: pool.clone() }), limits);
        MySqlOrderStore { pool, writes }
    }
}

struct MySqlWriter {
    pool: MySqlPool,
}

#[async_trait]
impl BatchWrite for MySqlWriter {
    async fn write_batch(&self, batch: Vec<WriteRequest>) {
        write_batch(&self.pool, batch).await;
    }
}

/// Requests that share an idempotency key with an earlier request of the same batch wait for it.
struct Follower {
    request: WriteRequest,
    leader_key: String,
}

async fn write_batch(pool: &MySqlPool, batch: Vec<WriteRequest>) {
    // 1. Within the batch, the first request with a key leads; repeats follow its outcome.
    let mut leaders: Vec<WriteRequest> = Vec::with_capacity(batch.len());
    let mut followers: Vec<Follower> = Vec::new();
    let mut seen: HashMap<String, ()> = HashMap::new();
    for request in batch {
        match &request.command.idempotency {
            Some(claim) if seen.contains_key(&claim.key) => {
                followers.push(Follower { leader_key: claim.key.clone(), request });
            }
            Some(claim) => {
                seen.insert(claim.key.clone(), ());
                leaders.push(request);
            }
            None => leaders.push(request),
        }
    }

    // 2. Keys used before this batch: answer from what they created.
    let keys: Vec<&str> =
        leaders.iter().filter_map(|r| r.command.idempotency.as_ref().map(|c| c.key.as_str())).collect();
    let mut outcomes: HashMap<String, Result<(Order, [u8; 32]), String>> = HashMap::new();
    if !keys.is_empty() {
        match existing_keys(pool, &keys).await {
            Ok(existing) => {
                let mut fresh = Vec::with_capacity(leaders.len());
                for request in leaders {
                    let found = request
                        .command
                        .idempotency
                        .as_ref()
                        .and_then(|c| existing.get(&c.key).map(|e| (c, e)));
                    match found {
                        Some((claim, (order, fingerprint))) => {
                            outcomes.insert(claim.key.clone(), Ok((order.clone(), *fingerprint)));
                            let _ = request.reply.send(replay(claim, order, fingerprint));
                        }
                        None => fresh.push(request),
                    }
                }
                leaders = fresh;
            }
            Err(error) => {
                for request in leaders.into_iter().chain(followers.into_iter().map(|f| f.request)) {
                    let _ = request.reply.send(Err(StoreError::for_each_caller(&error)));
                }
                return;
            }
        }
    }

    // 3. Everything new in one transaction.
    if !leaders.is_empty() {
        match insert_all(pool, &leaders).await {
            Ok(()) => {
                for request in leaders {
                    if let Some(claim) = &request.command.idempotency {
                        outcomes.insert(
                            claim.key.clone(),
                            Ok((request.command.order.clone(), claim.fingerprint)),
                        );
                    }
                    let _ = request.reply.send(Ok(Created::New(request.command.order)));
                }
            }
            Err(error) if is_unique_violation(&error) => {
                // Another replica took one of these keys meanwhile: settle each on its own.
                for request in leaders {
                    let result = write_one(pool, &request.command).await;
                    if let Some(claim) = &request.command.idempotency {
                        let outcome = match &result {
                            Ok(Created::New(order) | Created::Existing(order)) => {
                                Ok((order.clone(), claim.fingerprint))
                            }
                            Err(e) => Err(e.to_string()),
                        };
                        outcomes.insert(claim.key.clone(), outcome);
                    }
                    let _ = request.reply.send(result);
                }
            }
            Err(error) => {
                for request in leaders {
                    if let Some(claim) = &request.command.idempotency {
                        outcomes.insert(claim.key.clone(), Err(error.to_string()));
                    }
                    let _ = request.reply.send(Err(StoreError::for_each_caller(&error)));
                }
            }
        }
    }

    // 4. Repeats within the batch get their leader's order, or a conflict.
    for follower in followers {
        let claim = follower.request.command.idempotency.as_ref().expect("followers carry a key");
        let result = match outcomes.get(&follower.leader_key) {
            Some(Ok((order, fingerprint))) => replay(claim, order, fingerprint),
            Some(Err(message)) => Err(StoreError::Unavailable(message.clone())),
            None => Err(StoreError::Unavailable("idempotent request could not be settled".into())),
        };
        let _ = follower.request.reply.send(result);
    }
}

fn replay(claim: &IdempotencyClaim, order: &Order, fingerprint: &[u8; 32]) -> Result<Created, StoreError> {
    if &claim.fingerprint == fingerprint {
        Ok(Created::Existing(order.clone()))
    } else {
        Err(StoreError::IdempotencyKeyReused)
    }
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    error.as_database_error().is_some_and(|e| e.is_unique_violation())
}

async fn existing_keys(
    pool: &MySqlPool,
    keys: &[&str],
) -> Result<HashMap<String, (Order, [u8; 32])>, sqlx::Error> {
    let mut query = QueryBuilder::new(format!(
        "SELECT k.idempotency_key, k.request_hash, {ORDER_COLUMNS} FROM idempotency_keys k \
         JOIN orders o ON o.id = k.order_id WHERE k.idempotency_key IN ("
    ));
    let mut separated = query.separated(", ");
    for key in keys {
        separated.push_bind(key.to_string());
    }
    query.push(")");
    let rows = query.build().fetch_all(pool).await?;
    rows.iter()
        .map(|row| {
            let key: String = row.try_get("idempotency_key")?;
            let hash: Vec<u8> = row.try_get("request_hash")?;
            let fingerprint: [u8; 32] =
                hash.try_into().map_err(|_| decode_error("request_hash is not 32 bytes"))?;
            Ok((key, (order_from_row(row)?, fingerprint)))
        })
        .collect()
}

fn decode_error(message: &str) -> sqlx::Error {
    sqlx::Error::Decode(message.into())
}

async fn insert_all(pool: &MySqlPool, requests: &[WriteRequest]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut orders = QueryBuilder::new(
        "INSERT INTO orders (id, customer_id, product_id, quantity, total_minor, status, created_at, updated_at) ",
    );
    orders.push_values(requests, |mut row, request| {
        let order = &request.command.order;
        row.push_bind(order.id)
            .push_bind(order.customer_id.clone())
            .push_bind(order.product_id.clone())
            .push_bind(order.quantity)
            .push_bind(order.total_amount.minor())
            .push_bind(order.status.as_str())
            .push_bind(order.created_at)
            .push_bind(order.updated_at);
    });
    orders.build().execute(&mut *tx).await?;

    let events: Vec<_> = requests.iter().map(|r| r.command.event.clone()).collect();
    messaging::outbox::enqueue(&mut *tx, &events).await?;

    let claims: Vec<(&IdempotencyClaim, &Order)> = requests
        .iter()
        .filter_map(|r| r.command.idempotency.as_ref().map(|claim| (claim, &r.command.order)))
        .collect();
    if !claims.is_empty() {
        let mut keys = QueryBuilder::new(
            "INSERT INTO idempotency_keys (idempotency_key, request_hash, order_id, created_at) ",
        );
        keys.push_values(claims, |mut row, (claim, order)| {
            row.push_bind(claim.key.clone())
                .push_bind(claim.fingerprint.to_vec())
                .push_bind(order.id)
                .push_bind(order.created_at);
        });
        keys.build().execute(&mut *tx).await?;
    }
    tx.commit().await
}

/// The slow path: one order in its own transaction, resolving a key taken concurrently.
async fn write_one(pool: &MySqlPool, command: &CreateCommand) -> Result<Created, StoreError> {
    if let Some(claim) = &command.idempotency
        && let Some((order, fingerprint)) =
            existing_keys(pool, &[claim.key.as_str()]).await?.remove(&claim.key)
    {
        return replay(claim, &order, &fingerprint);
    }
    let (reply, _) = oneshot::channel();
    let single = [WriteRequest { command: command.clone(), reply }];
    match insert_all(pool, &single).await {
        Ok(()) => Ok(Created::New(command.order.clone())),
        Err(error) if is_unique_violation(&error) => match &command.idempotency {
            Some(claim) => match existing_keys(pool, &[claim.key.as_str()]).await?.remove(&claim.key) {
                Some((order, fingerprint)) => replay(claim, &order, &fingerprint),
                None => Err(StoreError::Database(error)),
            },
            None => Err(StoreError::Database(error)),
        },
        Err(error) => Err(error.into()),
    }
}

fn order_from_row(row: &MySqlRow) -> Result<Order, sqlx::Error> {
    let status: String = row.try_get("status")?;
    let status = OrderStatus::parse(&status).ok_or_else(|| decode_error("unknown order status"))?;
    Ok(Order {
        id: row.try_get("id")?,
        customer_id: row.try_get("customer_id")?,
        product_id: row.try_get("product_id")?,
        quantity: row.try_get("quantity")?,
        total_amount: Money::from_minor(row.try_get("total_minor")?),
        status,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

#[async_trait]
impl OrderStore for MySqlOrderStore {
    async fn create(&self, command: CreateCommand) -> Result<Created, StoreError> {
        self.writes.create(command).await
    }

    async fn get(&self, id: Uuid) -> Result<Option<Order>, StoreError> {
        let sql = format!("SELECT {ORDER_COLUMNS} FROM orders o WHERE o.id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(order_from_row).transpose()?)
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Order>, StoreError> {
        let mut sql = QueryBuilder::new(format!("SELECT {ORDER_COLUMNS} FROM orders o WHERE 1 = 1"));
        if let Some(customer) = &query.customer_id {
            sql.push(" AND o.customer_id = ").push_bind(customer.clone());
        }
        if let Some(before) = query.before {
            sql.push(" AND o.id < ").push_bind(before);
        }
        sql.push(" ORDER BY o.id DESC LIMIT ").push_bind(query.limit);
        let rows = sql.build().fetch_all(&self.pool).await?;
        Ok(rows.iter().map(order_from_row).collect::<Result<_, _>>()?)
    }

    async fn mark_processed(&self, ids: &[Uuid], at: DateTime<Utc>) -> Result<Vec<Order>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        let mut select = QueryBuilder::new(format!("SELECT {ORDER_COLUMNS} FROM orders o WHERE o.status = "));
        select.push_bind(OrderStatus::Created.as_str()).push(" AND o.id IN (");
        let mut separated = select.separated(", ");
        for id in ids {
            separated.push_bind(*id);
        }
        select.push(") FOR UPDATE");
        let rows = select.build().fetch_all(&mut *tx).await?;
        let mut changed = rows.iter().map(order_from_row).collect::<Result<Vec<_>, _>>()?;
        if !changed.is_empty() {
            let mut update = QueryBuilder::new("UPDATE orders SET status = ");
            update
                .push_bind(OrderStatus::Processed.as_str())
                .push(", updated_at = ")
                .push_bind(at)
                .push(" WHERE id IN (");
            let mut separated = update.separated(", ");
            for order in &changed {
                separated.push_bind(order.id);
            }
            update.push(")");
            update.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        for order in &mut changed {
            order.status = OrderStatus::Processed;
            order.updated_at = at;
        }
        Ok(changed)
    }

    async fn purge_idempotency_keys(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        let deleted = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < ? LIMIT ?")
            .bind(before)
            .bind(limit)
            .execute(&self.pool)
            .await?;
        Ok(deleted.rows_affected())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
