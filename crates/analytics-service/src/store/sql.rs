//! The analytics store, written once for MySQL / MariaDB and SQLite (`platform::sql`; schemas in
//! `migrations/analytics-service/{mysql,sqlite}`).
//!
//! A batch is one transaction of a fixed number of statements whatever its size: the events'
//! ids against the inbox, the orders' entries in the ledger, then one multi-row statement per
//! table written. What the batch changes is decided from the ledger as read ([`plan`]); the
//! ledger's writes check that no one changed those entries meanwhile (another replica applying
//! an event of the same order), and the batch is tried again if someone did.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use contracts::Money;
use platform::sql::{Dialect, Executor, Kind, OnConflict, Pool, Row, Statement, Value};
use uuid::Uuid;

use super::{AnalyticsStore, Applied, Incoming, StoreError, VersionedSummary};
use crate::domain::{
    BatchDelta, Bucket, CustomerTotal, Effect, Interval, LedgerEntry, OrderFact, Plan, ProductTotal, Ranking,
    Summary, Totals, average, plan,
};

pub struct SqlAnalyticsStore {
    pool: Box<dyn Pool>,
}

impl SqlAnalyticsStore {
    pub fn new(pool: impl Pool + 'static) -> Self {
        SqlAnalyticsStore { pool: Box::new(pool) }
    }
}

const SUMMARY: &str = "SELECT total_orders, total_quantity, total_revenue_minor, cancelled_orders, revision, \
                       last_updated FROM order_totals WHERE id = 1";
const SUMMARY_COLUMNS: &[Kind] = &[Kind::Int, Kind::Int, Kind::Int, Kind::Int, Kind::Int, Kind::Time];

async fn read_summary(executor: &mut dyn Executor) -> Result<VersionedSummary, StoreError> {
    let rows = executor.fetch(&Statement::new(SUMMARY), SUMMARY_COLUMNS).await?;
    let row = rows.first().ok_or(sqlx::Error::RowNotFound)?;
    let totals = Totals { orders: row.int(0)?, quantity: row.int(1)?, revenue_minor: row.int(2)? };
    Ok(VersionedSummary {
        summary: Summary::new(totals, row.int(3)?, row.optional_time(5)?),
        revision: row.int(4)?,
    })
}

const LEDGER_COLUMNS: [&str; 7] =
    ["order_id", "customer_id", "product_id", "quantity", "total_minor", "created_at", "cancelled_at"];
const LEDGER_KINDS: &[Kind] =
    &[Kind::Id, Kind::Text, Kind::Text, Kind::Int, Kind::Int, Kind::Time, Kind::Time];

fn ledger_entry(row: &Row) -> Result<LedgerEntry, sqlx::Error> {
    let order_id = row.id(0)?;
    let fact = match row.optional_time(5)? {
        None => None,
        Some(created_at) => Some(OrderFact {
            order_id,
            customer_id: row.text(1)?,
            product_id: row.text(2)?,
            quantity: u32::try_from(row.int(3)?).map_err(|e| sqlx::Error::Decode(e.into()))?,
            total: Money::from_minor(row.int(4)?),
            created_at,
        }),
    };
    Ok(LedgerEntry { order_id, fact, cancelled_at: row.optional_time(6)? })
}

fn ledger_values(entry: &LedgerEntry) -> Vec<Value> {
    let fact = entry.fact.as_ref();
    vec![
        entry.order_id.into(),
        fact.map(|f| f.customer_id.as_str()).into(),
        fact.map(|f| f.product_id.as_str()).into(),
        fact.map(|f| f.quantity).into(),
        fact.map(|f| f.total.minor()).into(),
        fact.map(|f| f.created_at).into(),
        entry.cancelled_at.into(),
    ]
}

/// The entries of `orders` in the ledger.
async fn read_ledger(
    executor: &mut dyn Executor,
    orders: impl IntoIterator<Item = Uuid>,
) -> Result<HashMap<Uuid, LedgerEntry>, StoreError> {
    let select = Statement::new(format!("SELECT {} FROM order_ledger WHERE ", LEDGER_COLUMNS.join(", ")))
        .where_in("order_id", orders);
    let rows = executor.fetch(&select, LEDGER_KINDS).await?;
    let entries = rows.iter().map(ledger_entry).collect::<Result<Vec<_>, _>>()?;
    Ok(entries.into_iter().map(|entry| (entry.order_id, entry)).collect())
}

/// Writes the ledger as `plan` leaves it. New entries are inserted (a concurrent insert of the
/// same order fails on the key); changed ones are updated only if they are still as read.
async fn write_ledger(
    executor: &mut dyn Executor,
    plan: &Plan,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if !plan.inserted.is_empty() {
        executor
            .execute(&Statement::insert(
                "order_ledger",
                &LEDGER_COLUMNS,
                plan.inserted.iter().map(ledger_values),
            ))
            .await?;
    }
    // Counted orders cancelled now: one statement for all of them.
    let cancelled: Vec<Uuid> =
        plan.updated.iter().filter(|(was, _)| was.fact.is_some()).map(|(_, entry)| entry.order_id).collect();
    if !cancelled.is_empty() {
        let update =
            Statement::new("UPDATE order_ledger SET cancelled_at = ? WHERE cancelled_at IS NULL AND ")
                .bind(now)
                .where_in("order_id", cancelled.iter().copied());
        if executor.execute(&update).await? != cancelled.len() as u64 {
            return Err(StoreError::Raced);
        }
    }
    // Cancelled orders whose creation arrives now (rare: only events out of order).
    for (was, entry) in plan.updated.iter().filter(|(was, _)| was.fact.is_none()) {
        let Some(fact) = &entry.fact else { continue };
        let update = Statement::new(
            "UPDATE order_ledger SET customer_id = ?, product_id = ?, quantity = ?, total_minor = ?, created_at = ? \
             WHERE order_id = ? AND created_at IS NULL",
        )
        .bind(fact.customer_id.as_str())
        .bind(fact.product_id.as_str())
        .bind(fact.quantity)
        .bind(fact.total.minor())
        .bind(fact.created_at)
        .bind(was.order_id);
        if executor.execute(&update).await? != 1 {
            return Err(StoreError::Raced);
        }
    }
    Ok(())
}

/// Adds `delta` to every aggregate; rows left without an order go.
async fn write_aggregates(
    executor: &mut dyn Executor,
    delta: &BatchDelta,
    cancelled: i64,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let dialect = executor.dialect();
    let totals = Statement::new(
        "UPDATE order_totals SET total_orders = total_orders + ?, total_quantity = total_quantity + ?, \
         total_revenue_minor = total_revenue_minor + ?, cancelled_orders = cancelled_orders + ?, \
         revision = revision + 1, last_updated = ? WHERE id = 1",
    )
    .bind(delta.totals.orders)
    .bind(delta.totals.quantity)
    .bind(delta.totals.revenue_minor)
    .bind(cancelled)
    .bind(now);
    executor.execute(&totals).await?;

    let adding = |columns: &[&'static str]| -> Vec<OnConflict<'static>> {
        columns.iter().map(|column| OnConflict::Add(column)).collect()
    };
    if !delta.products.is_empty() {
        let rows = delta.products.iter().map(|(product, t)| {
            vec![product.as_str().into(), t.orders.into(), t.quantity.into(), t.revenue_minor.into()]
        });
        let upsert = upsert(
            dialect,
            "product_totals",
            &["product_id", "orders", "quantity", "revenue_minor"],
            rows,
            &adding(&["orders", "quantity", "revenue_minor"]),
        );
        executor.execute(&upsert).await?;
    }
    if !delta.customers.is_empty() {
        let rows = delta.customers.iter().map(|(customer, c)| {
            vec![
                customer.as_str().into(),
                c.totals.orders.into(),
                c.totals.quantity.into(),
                c.totals.revenue_minor.into(),
                c.first_order_at.into(),
                c.last_order_at.into(),
            ]
        });
        let mut updates = adding(&["orders", "quantity", "revenue_minor"]);
        updates.extend([OnConflict::Least("first_order_at"), OnConflict::Greatest("last_order_at")]);
        let columns =
            ["customer_id", "orders", "quantity", "revenue_minor", "first_order_at", "last_order_at"];
        executor.execute(&upsert(dialect, "customer_totals", &columns, rows, &updates)).await?;
    }
    let buckets = adding(&["orders", "revenue_minor"]);
    if !delta.hours.is_empty() {
        let rows = delta
            .hours
            .iter()
            .map(|(start, t)| vec![(*start).into(), t.orders.into(), t.revenue_minor.into()]);
        let columns = ["bucket_start", "orders", "revenue_minor"];
        executor.execute(&upsert(dialect, "hourly_totals", &columns, rows, &buckets)).await?;
    }
    if !delta.days.is_empty() {
        let rows =
            delta.days.iter().map(|(day, t)| vec![(*day).into(), t.orders.into(), t.revenue_minor.into()]);
        let columns = ["bucket_start", "orders", "revenue_minor"];
        executor.execute(&upsert(dialect, "daily_totals", &columns, rows, &buckets)).await?;
    }

    let shrunk = &delta.shrunk;
    let emptied = |table: &str, key: &str, values: Vec<Value>| {
        Statement::new(format!("DELETE FROM {table} WHERE orders = 0 AND ")).where_in(key, values)
    };
    if !shrunk.products.is_empty() {
        let keys = shrunk.products.iter().map(|p| p.as_str().into()).collect();
        executor.execute(&emptied("product_totals", "product_id", keys)).await?;
    }
    if !shrunk.hours.is_empty() {
        let keys = shrunk.hours.iter().map(|h| (*h).into()).collect();
        executor.execute(&emptied("hourly_totals", "bucket_start", keys)).await?;
    }
    if !shrunk.days.is_empty() {
        let keys = shrunk.days.iter().map(|d| (*d).into()).collect();
        executor.execute(&emptied("daily_totals", "bucket_start", keys)).await?;
    }
    if !shrunk.customers.is_empty() {
        let keys: Vec<Value> = shrunk.customers.iter().map(|c| c.as_str().into()).collect();
        executor.execute(&emptied("customer_totals", "customer_id", keys.clone())).await?;
        // A customer's first and last orders may be gone: read them again from the orders that
        // stand (kept as they were for a customer whose standing orders all predate the ledger).
        let standing = |bound: &str, column: &str| {
            format!(
                "COALESCE((SELECT {bound}(l.created_at) FROM order_ledger l \
                 WHERE l.customer_id = customer_totals.customer_id AND l.created_at IS NOT NULL \
                 AND l.cancelled_at IS NULL), {column})"
            )
        };
        let recompute = Statement::new(format!(
            "UPDATE customer_totals SET first_order_at = {}, last_order_at = {} WHERE ",
            standing("MIN", "first_order_at"),
            standing("MAX", "last_order_at")
        ))
        .where_in("customer_id", keys);
        executor.execute(&recompute).await?;
    }
    Ok(())
}

/// `INSERT … VALUES …` that, for a row whose key (the first column) exists, applies `updates`.
fn upsert(
    dialect: Dialect,
    table: &str,
    columns: &[&str],
    rows: impl IntoIterator<Item = Vec<Value>>,
    updates: &[OnConflict<'_>],
) -> Statement {
    Statement::insert(table, columns, rows).push(&dialect.on_conflict(columns[0], updates))
}

#[async_trait]
impl AnalyticsStore for SqlAnalyticsStore {
    async fn apply(&self, batch: &[Incoming]) -> Result<Applied, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut effects = vec![Effect::NoChange; batch.len()];
        let mut emitted = Vec::new();

        // Events applied before (by an earlier delivery, or earlier in this batch) change nothing.
        let select = Statement::new("SELECT event_id FROM processed_events WHERE ")
            .where_in("event_id", batch.iter().map(|incoming| incoming.event_id));
        let mut seen: HashSet<Uuid> =
            tx.fetch(&select, &[Kind::Id]).await?.iter().map(|row| row.id(0)).collect::<Result<_, _>>()?;
        let fresh: Vec<(usize, &Incoming)> =
            batch.iter().enumerate().filter(|(_, incoming)| seen.insert(incoming.event_id)).collect();

        if !fresh.is_empty() {
            let now = Utc::now();
            // A concurrent consumer inserting the same event id makes this fail with a unique
            // violation: the whole batch rolls back and is retried, then seen as a duplicate.
            let inbox = Statement::insert(
                "processed_events",
                &["event_id", "processed_at"],
                fresh.iter().map(|(_, incoming)| vec![incoming.event_id.into(), now.into()]),
            );
            tx.execute(&inbox).await?;

            let ledger =
                read_ledger(tx.as_mut(), fresh.iter().map(|(_, incoming)| incoming.change.order_id()))
                    .await?;
            let changes: Vec<_> = fresh.iter().map(|(_, incoming)| incoming.change.clone()).collect();
            let plan = plan(&ledger, &changes, now);
            for ((position, incoming), effect) in fresh.iter().zip(&plan.effects) {
                effects[*position] = *effect;
                if *effect == Effect::Counted {
                    emitted.extend(incoming.processed_event.clone());
                }
            }
            write_ledger(tx.as_mut(), &plan, now).await?;
            if plan.effects.iter().any(|effect| matches!(effect, Effect::Counted | Effect::Cancelled)) {
                write_aggregates(tx.as_mut(), &plan.delta, plan.cancelled, now).await?;
            }
            messaging::outbox::enqueue(tx.as_mut(), &emitted).await?;
        }

        // Read back inside the transaction: exactly the state this commit creates.
        let summary = read_summary(tx.as_mut()).await?;
        tx.commit().await?;
        Ok(Applied { effects, emitted, summary })
    }

    async fn summary(&self) -> Result<VersionedSummary, StoreError> {
        read_summary(self.pool.executor().as_mut()).await
    }

    async fn top_products(&self, ranking: Ranking, limit: u32) -> Result<Vec<ProductTotal>, StoreError> {
        let order = match ranking {
            Ranking::Revenue => "revenue_minor",
            Ranking::Quantity => "quantity",
        };
        let select = Statement::new(format!(
            "SELECT product_id, orders, quantity, revenue_minor FROM product_totals \
             ORDER BY {order} DESC, product_id DESC LIMIT ?"
        ))
        .bind(limit);
        let rows =
            self.pool.executor().fetch(&select, &[Kind::Text, Kind::Int, Kind::Int, Kind::Int]).await?;
        let products = rows
            .iter()
            .map(|row| {
                Ok(ProductTotal {
                    product_id: row.text(0)?,
                    orders: row.int(1)?,
                    quantity: row.int(2)?,
                    revenue: Money::from_minor(row.int(3)?),
                })
            })
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(products)
    }

    async fn customer(&self, customer_id: &str) -> Result<Option<CustomerTotal>, StoreError> {
        let select = Statement::new(
            "SELECT customer_id, orders, quantity, revenue_minor, first_order_at, last_order_at \
             FROM customer_totals WHERE customer_id = ?",
        )
        .bind(customer_id);
        let kinds = [Kind::Text, Kind::Int, Kind::Int, Kind::Int, Kind::Time, Kind::Time];
        let rows = self.pool.executor().fetch(&select, &kinds).await?;
        let Some(row) = rows.first() else { return Ok(None) };
        let (orders, revenue) = (row.int(1)?, row.int(3)?);
        Ok(Some(CustomerTotal {
            customer_id: row.text(0)?,
            total_orders: orders,
            total_quantity: row.int(2)?,
            total_revenue: Money::from_minor(revenue),
            average_order_value: average(revenue, orders),
            first_order_at: row.time(4)?,
            last_order_at: row.time(5)?,
        }))
    }

    async fn series(
        &self,
        interval: Interval,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Bucket>, StoreError> {
        // Days compare as whole days.
        let (table, from, to, kind) = match interval {
            Interval::Hour => ("hourly_totals", Value::from(from), Value::from(to), Kind::Time),
            Interval::Day => ("daily_totals", from.date_naive().into(), to.date_naive().into(), Kind::Day),
        };
        let select = Statement::new(format!(
            "SELECT bucket_start, orders, revenue_minor FROM {table} \
             WHERE bucket_start >= ? AND bucket_start < ? ORDER BY bucket_start"
        ))
        .bind(from)
        .bind(to);
        let rows = self.pool.executor().fetch(&select, &[kind, Kind::Int, Kind::Int]).await?;
        let buckets = rows
            .iter()
            .map(|row| {
                let bucket_start = match interval {
                    Interval::Hour => row.time(0)?,
                    Interval::Day => row.day(0)?.and_time(chrono::NaiveTime::MIN).and_utc(),
                };
                Ok(Bucket { bucket_start, orders: row.int(1)?, revenue: Money::from_minor(row.int(2)?) })
            })
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(buckets)
    }

    async fn purge_inbox(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        let delete = self.pool.dialect().delete_older_than("processed_events", "event_id", "processed_at");
        Ok(self.pool.executor().execute(&Statement::new(delete).bind(before).bind(limit)).await?)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.pool.executor().execute(&Statement::new("SELECT 1")).await?;
        Ok(())
    }
}
