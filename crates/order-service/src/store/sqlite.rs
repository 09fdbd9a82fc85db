//! Orders in SQLite, for the embedded mode (schema: `migrations/order-service/sqlite`).
//!
//! SQLite takes one writer at a time, so writes are grouped ([`super::writer`]) by one writer
//! task: it stores whatever is waiting in one `BEGIN IMMEDIATE` transaction (one commit, one sync
//! to disk for the whole group). Idempotency keys are checked inside that transaction, where
//! nothing can change under it.

use std::{collections::HashMap, path::Path, sync::Arc};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use contracts::{Money, OrderStatus};
use platform::sqlite::{SqliteError, begin_write, parse_time, time_text};
use sqlx::{QueryBuilder, Row, SqliteConnection, SqlitePool, sqlite::SqliteRow};
use uuid::Uuid;

use super::{
    CreateCommand, Created, IdempotencyClaim, ListQuery, OrderStore, StoreError,
    writer::{BatchWrite, WriteQueue, WriteRequest, WriterLimits},
};
use crate::domain::Order;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/order-service/sqlite");

const ORDER_COLUMNS: &str =
    "o.id, o.customer_id, o.product_id, o.quantity, o.total_minor, o.status, o.created_at, o.updated_at";

/// Opens (creating and migrating it if needed) the order database at `path`.
pub async fn open(path: &Path) -> Result<SqlitePool, SqliteError> {
    platform::sqlite::open(path, &MIGRATOR).await
}

pub struct SqliteOrderStore {
    pool: SqlitePool,
    writes: WriteQueue,
}

impl SqliteOrderStore {
    /// Starts the writer task (one: SQLite has one writer at a time, whatever `limits` say).
    pub fn new(pool: SqlitePool, limits: WriterLimits) -> Self {
        let limits = WriterLimits { writers: 1, ..limits };
        let writes = WriteQueue::start(Arc::new(SqliteWriter { pool: pool.clone() }), limits);
        SqliteOrderStore { pool, writes }
    }
}

struct SqliteWriter {
    pool: SqlitePool,
}

#[async_trait]
impl BatchWrite for SqliteWriter {
    async fn write_batch(&self, requests: Vec<WriteRequest>) {
        let commands: Vec<&CreateCommand> = requests.iter().map(|request| &request.command).collect();
        match write_batch(&self.pool, &commands).await {
            Ok(outcomes) => {
                for (request, outcome) in requests.into_iter().zip(outcomes) {
                    let _ = request.reply.send(outcome);
                }
            }
            Err(error) => {
                for request in requests {
                    let _ = request.reply.send(Err(StoreError::for_each_caller(&error)));
                }
            }
        }
    }
}

/// Stores the orders of `commands` that are new, in one transaction; answers each command.
async fn write_batch(
    pool: &SqlitePool,
    commands: &[&CreateCommand],
) -> Result<Vec<Result<Created, StoreError>>, sqlx::Error> {
    let mut tx = begin_write(pool).await?;
    let keys: Vec<&str> =
        commands.iter().filter_map(|c| c.idempotency.as_ref().map(|claim| claim.key.as_str())).collect();
    // Keys used before, and those taken earlier in this batch: their order and fingerprint.
    let mut known = existing_keys(&mut tx, &keys).await?;
    let mut outcomes = Vec::with_capacity(commands.len());
    let mut fresh: Vec<&CreateCommand> = Vec::with_capacity(commands.len());
    for command in commands {
        if let Some(claim) = &command.idempotency {
            if let Some((order, fingerprint)) = known.get(&claim.key) {
                outcomes.push(replay(claim, order, fingerprint));
                continue;
            }
            known.insert(claim.key.clone(), (command.order.clone(), claim.fingerprint));
        }
        fresh.push(command);
        outcomes.push(Ok(Created::New(command.order.clone())));
    }
    insert_all(&mut tx, &fresh).await?;
    tx.commit().await?;
    Ok(outcomes)
}

/// A repeated key: the original order if the request is the same, a conflict otherwise.
fn replay(claim: &IdempotencyClaim, order: &Order, fingerprint: &[u8; 32]) -> Result<Created, StoreError> {
    if &claim.fingerprint == fingerprint {
        Ok(Created::Existing(order.clone()))
    } else {
        Err(StoreError::IdempotencyKeyReused)
    }
}

async fn existing_keys(
    connection: &mut SqliteConnection,
    keys: &[&str],
) -> Result<HashMap<String, (Order, [u8; 32])>, sqlx::Error> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let mut query = QueryBuilder::new(format!(
        "SELECT k.idempotency_key, k.request_hash, {ORDER_COLUMNS} FROM idempotency_keys k \
         JOIN orders o ON o.id = k.order_id WHERE k.idempotency_key IN ("
    ));
    let mut separated = query.separated(", ");
    for key in keys {
        separated.push_bind(key.to_string());
    }
    query.push(")");
    let rows = query.build().fetch_all(connection).await?;
    rows.iter()
        .map(|row| {
            let key: String = row.try_get("idempotency_key")?;
            let hash: Vec<u8> = row.try_get("request_hash")?;
            let fingerprint: [u8; 32] =
                hash.try_into().map_err(|_| decode_error("request_hash is not 32 bytes".into()))?;
            Ok((key, (order_from_row(row)?, fingerprint)))
        })
        .collect()
}

async fn insert_all(tx: &mut SqliteConnection, commands: &[&CreateCommand]) -> Result<(), sqlx::Error> {
    if commands.is_empty() {
        return Ok(());
    }
    let mut orders = QueryBuilder::new(
        "INSERT INTO orders (id, customer_id, product_id, quantity, total_minor, status, created_at, updated_at) ",
    );
    orders.push_values(commands, |mut row, command| {
        let order = &command.order;
        row.push_bind(order.id)
            .push_bind(order.customer_id.clone())
            .push_bind(order.product_id.clone())
            .push_bind(order.quantity)
            .push_bind(order.total_amount.minor())
            .push_bind(order.status.as_str())
            .push_bind(time_text(order.created_at))
            .push_bind(time_text(order.updated_at));
    });
    orders.build().execute(&mut *tx).await?;

    let events: Vec<_> = commands.iter().map(|command| command.event.clone()).collect();
    messaging::outbox::enqueue(tx, &events).await?;

    let claims: Vec<(&IdempotencyClaim, &Order)> = commands
        .iter()
        .filter_map(|command| command.idempotency.as_ref().map(|claim| (claim, &command.order)))
        .collect();
    if !claims.is_empty() {
        let mut keys = QueryBuilder::new(
            "INSERT INTO idempotency_keys (idempotency_key, request_hash, order_id, created_at) ",
        );
        keys.push_values(claims, |mut row, (claim, order)| {
            row.push_bind(claim.key.clone())
                .push_bind(claim.fingerprint.to_vec())
                .push_bind(order.id)
                .push_bind(time_text(order.created_at));
        });
        keys.build().execute(&mut *tx).await?;
    }
    Ok(())
}

fn decode_error(message: String) -> sqlx::Error {
    sqlx::Error::Decode(message.into())
}

fn order_from_row(row: &SqliteRow) -> Result<Order, sqlx::Error> {
    let status: String = row.try_get("status")?;
    let status =
        OrderStatus::parse(&status).ok_or_else(|| decode_error(format!("unknown status {status:?}")))?;
    let quantity: i64 = row.try_get("quantity")?;
    Ok(Order {
        id: row.try_get("id")?,
        customer_id: row.try_get("customer_id")?,
        product_id: row.try_get("product_id")?,
        quantity: u32::try_from(quantity).map_err(|_| decode_error(format!("quantity {quantity}")))?,
        total_amount: Money::from_minor(row.try_get("total_minor")?),
        status,
        created_at: parse_time(row.try_get("created_at")?)?,
        updated_at: parse_time(row.try_get("updated_at")?)?,
    })
}

#[async_trait]
impl OrderStore for SqliteOrderStore {
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut update = QueryBuilder::new("UPDATE orders SET status = ");
        update
            .push_bind(OrderStatus::Processed.as_str())
            .push(", updated_at = ")
            .push_bind(time_text(at))
            .push(" WHERE status = ")
            .push_bind(OrderStatus::Created.as_str())
            .push(" AND id IN (");
        let mut separated = update.separated(", ");
        for id in ids {
            separated.push_bind(*id);
        }
        update.push(
            ") RETURNING id, customer_id, product_id, quantity, total_minor, status, created_at, updated_at",
        );
        let rows = update.build().fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(rows.iter().map(order_from_row).collect::<Result<_, _>>()?)
    }

    async fn purge_idempotency_keys(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        // SQLite has no DELETE … LIMIT (without a compile option): pick the rows first.
        let deleted = sqlx::query(
            "DELETE FROM idempotency_keys WHERE idempotency_key IN \
             (SELECT idempotency_key FROM idempotency_keys WHERE created_at < ? LIMIT ?)",
        )
        .bind(time_text(before))
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
