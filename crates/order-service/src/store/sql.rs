//! The order store, written once for MySQL / MariaDB and SQLite (`platform::sql`; schemas in
//! `migrations/order-service/{mysql,sqlite}`).
//!
//! Creates are grouped ([`super::writer`]): writer tasks each store whatever is waiting in one
//! transaction (one multi-row INSERT per table, one commit). Under load this turns thousands of
//! small transactions into a few dozen, which is what lets the outbox's extra row cost almost
//! nothing. SQLite takes one writer at a time, so it gets one writer task.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use contracts::{Money, OrderStatus};
use platform::sql::{Dialect, Executor, Kind, Pool, Row, Statement};
use uuid::Uuid;

use super::{
    CancelCommand, Cancelled, CreateCommand, Created, IdempotencyClaim, ListQuery, OrderStore, StoreError,
    writer::{BatchWrite, WriteQueue, WriteRequest, WriterLimits},
};
use crate::domain::Order;

const ORDER_COLUMNS: &str =
    "o.id, o.customer_id, o.product_id, o.quantity, o.total_minor, o.status, o.created_at, o.updated_at";
const ORDER_KINDS: [Kind; 8] =
    [Kind::Id, Kind::Text, Kind::Text, Kind::Int, Kind::Int, Kind::Text, Kind::Time, Kind::Time];

pub struct SqlOrderStore {
    pool: Arc<dyn Pool>,
    writes: WriteQueue,
}

impl SqlOrderStore {
    /// Starts the writer tasks (one on SQLite, whatever `limits` say).
    pub fn new(pool: impl Pool + 'static, limits: WriterLimits) -> Self {
        let pool: Arc<dyn Pool> = Arc::new(pool);
        let limits = match pool.dialect() {
            Dialect::MySql => limits,
            Dialect::Sqlite => WriterLimits { writers: 1, ..limits },
        };
        let writes = WriteQueue::start(Arc::new(SqlWriter { pool: pool.clone() }), limits);
        SqlOrderStore { pool, writes }
    }
}

fn decode_error(message: String) -> sqlx::Error {
    sqlx::Error::Decode(message.into())
}

/// An order from the first eight columns of `row` (as [`ORDER_COLUMNS`]).
fn order_from_row(row: &Row) -> Result<Order, sqlx::Error> {
    let status = row.text(5)?;
    let status =
        OrderStatus::parse(&status).ok_or_else(|| decode_error(format!("unknown status {status:?}")))?;
    let quantity = row.int(3)?;
    Ok(Order {
        id: row.id(0)?,
        customer_id: row.text(1)?,
        product_id: row.text(2)?,
        quantity: u32::try_from(quantity).map_err(|_| decode_error(format!("quantity {quantity}")))?,
        total_amount: Money::from_minor(row.int(4)?),
        status,
        created_at: row.time(6)?,
        updated_at: row.time(7)?,
    })
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    error.as_database_error().is_some_and(|e| e.is_unique_violation())
}

/// A repeated key: the order it is for if the request is the same, a conflict otherwise.
fn replay(claim: &IdempotencyClaim, order: &Order, fingerprint: &[u8; 32]) -> Result<Order, StoreError> {
    if &claim.fingerprint == fingerprint { Ok(order.clone()) } else { Err(StoreError::IdempotencyKeyReused) }
}

/// The keys among `keys` used before: the order each is for (as it is now), and the fingerprint
/// of the request that used it.
async fn existing_keys(
    executor: &mut dyn Executor,
    keys: impl IntoIterator<Item = &str>,
) -> Result<HashMap<String, (Order, [u8; 32])>, sqlx::Error> {
    let select = Statement::new(format!(
        "SELECT {ORDER_COLUMNS}, k.idempotency_key, k.request_hash FROM idempotency_keys k \
         JOIN orders o ON o.id = k.order_id WHERE "
    ))
    .where_in("k.idempotency_key", keys);
    let mut kinds = ORDER_KINDS.to_vec();
    kinds.extend([Kind::Text, Kind::Bytes]);
    let rows = executor.fetch(&select, &kinds).await?;
    rows.iter()
        .map(|row| {
            let fingerprint: [u8; 32] =
                row.bytes(9)?.try_into().map_err(|_| decode_error("request_hash is not 32 bytes".into()))?;
            Ok((row.text(8)?, (order_from_row(row)?, fingerprint)))
        })
        .collect()
}

/// Records `claims`, each for its order.
async fn insert_keys(
    executor: &mut dyn Executor,
    claims: &[(&IdempotencyClaim, &Order)],
) -> Result<(), sqlx::Error> {
    if claims.is_empty() {
        return Ok(());
    }
    let rows = claims.iter().map(|(claim, order)| {
        vec![
            claim.key.as_str().into(),
            claim.fingerprint.to_vec().into(),
            order.id.into(),
            order.updated_at.into(),
        ]
    });
    let insert = Statement::insert(
        "idempotency_keys",
        &["idempotency_key", "request_hash", "order_id", "created_at"],
        rows,
    );
    executor.execute(&insert).await?;
    Ok(())
}

/// Stores the orders of `commands` that are new, with their events and keys, in one
/// transaction; answers each command (a key used before, or earlier in the batch, is replayed).
async fn store_orders(
    pool: &dyn Pool,
    commands: &[&CreateCommand],
) -> Result<Vec<Result<Created, StoreError>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let keys: Vec<&str> =
        commands.iter().filter_map(|c| c.idempotency.as_ref().map(|claim| claim.key.as_str())).collect();
    let mut known = if keys.is_empty() { HashMap::new() } else { existing_keys(tx.as_mut(), keys).await? };
    let mut outcomes = Vec::with_capacity(commands.len());
    let mut fresh: Vec<&CreateCommand> = Vec::with_capacity(commands.len());
    for command in commands {
        if let Some(claim) = &command.idempotency {
            if let Some((order, fingerprint)) = known.get(&claim.key) {
                outcomes.push(replay(claim, order, fingerprint).map(Created::Existing));
                continue;
            }
            known.insert(claim.key.clone(), (command.order.clone(), claim.fingerprint));
        }
        fresh.push(command);
        outcomes.push(Ok(Created::New(command.order.clone())));
    }
    if !fresh.is_empty() {
        let rows = fresh.iter().map(|command| {
            let order = &command.order;
            vec![
                order.id.into(),
                order.customer_id.as_str().into(),
                order.product_id.as_str().into(),
                order.quantity.into(),
                order.total_amount.minor().into(),
                order.status.as_str().into(),
                order.created_at.into(),
                order.updated_at.into(),
            ]
        });
        let columns = [
            "id",
            "customer_id",
            "product_id",
            "quantity",
            "total_minor",
            "status",
            "created_at",
            "updated_at",
        ];
        tx.execute(&Statement::insert("orders", &columns, rows)).await?;
        let events: Vec<_> = fresh.iter().map(|command| command.event.clone()).collect();
        messaging::outbox::enqueue(tx.as_mut(), &events).await?;
        let claims: Vec<(&IdempotencyClaim, &Order)> = fresh
            .iter()
            .filter_map(|command| command.idempotency.as_ref().map(|claim| (claim, &command.order)))
            .collect();
        insert_keys(tx.as_mut(), &claims).await?;
    }
    tx.commit().await?;
    Ok(outcomes)
}

struct SqlWriter {
    pool: Arc<dyn Pool>,
}

#[async_trait]
impl BatchWrite for SqlWriter {
    async fn write_batch(&self, requests: Vec<WriteRequest>) {
        let commands: Vec<&CreateCommand> = requests.iter().map(|request| &request.command).collect();
        let outcomes = match store_orders(self.pool.as_ref(), &commands).await {
            Ok(outcomes) => outcomes,
            // Another replica took one of these keys meanwhile: settle each on its own.
            Err(error) if is_unique_violation(&error) => {
                let mut outcomes = Vec::with_capacity(commands.len());
                for command in &commands {
                    outcomes.push(self.store_one(command).await);
                }
                outcomes
            }
            Err(error) => {
                let error = StoreError::from(error);
                commands.iter().map(|_| Err(error.clone())).collect()
            }
        };
        for (request, outcome) in requests.into_iter().zip(outcomes) {
            let _ = request.reply.send(outcome);
        }
    }
}

impl SqlWriter {
    /// One order in its own transaction; a key taken concurrently is replayed once committed.
    async fn store_one(&self, command: &CreateCommand) -> Result<Created, StoreError> {
        match store_orders(self.pool.as_ref(), &[command]).await {
            Ok(mut outcomes) => outcomes.pop().expect("one outcome per order"),
            Err(error) if is_unique_violation(&error) => {
                let Some(claim) = &command.idempotency else { return Err(error.into()) };
                match existing_keys(self.pool.executor().as_mut(), [claim.key.as_str()])
                    .await?
                    .remove(&claim.key)
                {
                    Some((order, fingerprint)) => replay(claim, &order, &fingerprint).map(Created::Existing),
                    None => Err(error.into()),
                }
            }
            Err(error) => Err(error.into()),
        }
    }
}

/// Cancels in one transaction (see [`OrderStore::cancel`]).
async fn cancel(pool: &dyn Pool, command: &CancelCommand) -> Result<Option<Cancelled>, StoreError> {
    let mut tx = pool.begin().await?;
    if let Some(claim) = &command.idempotency
        && let Some((order, fingerprint)) =
            existing_keys(tx.as_mut(), [claim.key.as_str()]).await?.remove(&claim.key)
    {
        return replay(claim, &order, &fingerprint).map(|order| Some(Cancelled::Replayed(order)));
    }
    let select = Statement::new(format!(
        "SELECT {ORDER_COLUMNS} FROM orders o WHERE o.id = ?{}",
        pool.dialect().lock_rows()
    ))
    .bind(command.order_id);
    let rows = tx.fetch(&select, &ORDER_KINDS).await?;
    let Some(row) = rows.first() else { return Ok(None) };
    let mut order = order_from_row(row)?;
    let cancelled = if order.status == OrderStatus::Cancelled {
        Cancelled::Before
    } else {
        order.updated_at = order.next_update_time(command.at);
        order.status = OrderStatus::Cancelled;
        let update = Statement::new("UPDATE orders SET status = ?, updated_at = ? WHERE id = ?")
            .bind(order.status.as_str())
            .bind(order.updated_at)
            .bind(order.id);
        tx.execute(&update).await?;
        messaging::outbox::enqueue(tx.as_mut(), std::slice::from_ref(&command.event)).await?;
        Cancelled::Now
    };
    if let Some(claim) = &command.idempotency {
        insert_keys(tx.as_mut(), &[(claim, &order)]).await?;
    }
    tx.commit().await?;
    Ok(Some(cancelled(order)))
}

#[async_trait]
impl OrderStore for SqlOrderStore {
    async fn create(&self, command: CreateCommand) -> Result<Created, StoreError> {
        self.writes.create(command).await
    }

    async fn cancel(&self, command: CancelCommand) -> Result<Option<Cancelled>, StoreError> {
        match cancel(self.pool.as_ref(), &command).await {
            // Another replica recorded the same key meanwhile: its outcome is committed now.
            Err(StoreError::Database(error)) if is_unique_violation(&error) => {
                cancel(self.pool.as_ref(), &command).await
            }
            outcome => outcome,
        }
    }

    async fn get(&self, id: Uuid) -> Result<Option<Order>, StoreError> {
        let select = Statement::new(format!("SELECT {ORDER_COLUMNS} FROM orders o WHERE o.id = ?")).bind(id);
        let rows = self.pool.executor().fetch(&select, &ORDER_KINDS).await?;
        Ok(rows.first().map(order_from_row).transpose()?)
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Order>, StoreError> {
        let mut select = Statement::new(format!("SELECT {ORDER_COLUMNS} FROM orders o WHERE 1 = 1"));
        if let Some(customer) = &query.customer_id {
            select = select.push(" AND o.customer_id = ?").bind(customer.as_str());
        }
        if let Some(status) = query.status {
            select = select.push(" AND o.status = ?").bind(status.as_str());
        }
        if let Some(before) = query.before {
            select = select.push(" AND o.id < ?").bind(before);
        }
        select = select.push(" ORDER BY o.id DESC LIMIT ?").bind(query.limit);
        let rows = self.pool.executor().fetch(&select, &ORDER_KINDS).await?;
        Ok(rows.iter().map(order_from_row).collect::<Result<_, _>>()?)
    }

    async fn mark_processed(&self, ids: &[Uuid], at: DateTime<Utc>) -> Result<Vec<Order>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        // By primary key alone, so that MySQL locks these rows only: a locking read through the
        // status index would lock ranges of it, and deadlock with the inserts of new orders.
        let select = Statement::new(format!("SELECT {ORDER_COLUMNS} FROM orders o WHERE "))
            .where_in("o.id", ids.iter().copied())
            .push(self.pool.dialect().lock_rows());
        let rows = tx.fetch(&select, &ORDER_KINDS).await?;
        let mut changed = rows.iter().map(order_from_row).collect::<Result<Vec<_>, _>>()?;
        changed.retain(|order| order.status == OrderStatus::Created);
        if !changed.is_empty() {
            let update = Statement::new("UPDATE orders SET status = ?, updated_at = ? WHERE ")
                .bind(OrderStatus::Processed.as_str())
                .bind(at)
                .where_in("id", changed.iter().map(|order| order.id));
            tx.execute(&update).await?;
        }
        tx.commit().await?;
        let mut seen = HashSet::new();
        changed.retain(|order| seen.insert(order.id));
        for order in &mut changed {
            order.status = OrderStatus::Processed;
            order.updated_at = at;
        }
        Ok(changed)
    }

    async fn purge_idempotency_keys(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        let delete =
            self.pool.dialect().delete_older_than("idempotency_keys", "idempotency_key", "created_at");
        Ok(self.pool.executor().execute(&Statement::new(delete).bind(before).bind(limit)).await?)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.pool.executor().execute(&Statement::new("SELECT 1")).await?;
        Ok(())
    }
}
