//! Aggregates in SQLite, for the embedded mode (schema: `migrations/analytics-service/sqlite`).
//! A batch costs a fixed number of statements whatever its size, in one `BEGIN IMMEDIATE`
//! transaction: one multi-row statement per aggregate table. Times are fixed-width UTC text (see
//! `platform::sqlite`), so `MIN`/`MAX` and range conditions on them compare instants.

use std::{collections::HashSet, path::Path};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use contracts::Money;
use platform::sqlite::{SqliteError, begin_write, parse_time, time_text};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool, sqlite::SqliteRow};
use uuid::Uuid;

use super::{AnalyticsStore, Applied, Counted, StoreError};
use crate::domain::{
    BatchDelta, Bucket, CustomerTotal, Interval, OrderFact, ProductTotal, Ranking, Summary, average,
};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/analytics-service/sqlite");

/// Opens (creating and migrating it if needed) the analytics database at `path`.
pub async fn open(path: &Path) -> Result<SqlitePool, SqliteError> {
    platform::sqlite::open(path, &MIGRATOR).await
}

pub struct SqliteAnalyticsStore {
    pool: SqlitePool,
}

impl SqliteAnalyticsStore {
    pub fn new(pool: SqlitePool) -> Self {
        SqliteAnalyticsStore { pool }
    }
}

const SUMMARY_QUERY: &str =
    "SELECT total_orders, total_quantity, total_revenue_minor, last_updated FROM order_totals WHERE id = 1";

fn summary_from_row(row: &SqliteRow) -> Result<Summary, sqlx::Error> {
    let last_updated: Option<&str> = row.try_get("last_updated")?;
    Ok(Summary::new(
        row.try_get("total_orders")?,
        row.try_get("total_quantity")?,
        row.try_get("total_revenue_minor")?,
        last_updated.map(parse_time).transpose()?,
    ))
}

/// The first instant of `day`, in the stored time format.
fn midnight(day: NaiveDate) -> String {
    time_text(day.and_time(NaiveTime::MIN).and_utc())
}

/// Upserts that add to what is there (`excluded` names the inserted row).
fn upsert<'a, T: 'a>(
    table: &str,
    columns: &str,
    key: &str,
    rows: impl IntoIterator<Item = T>,
    push: impl FnMut(sqlx::query_builder::Separated<'_, Sqlite, &'static str>, T),
    on_conflict: &str,
) -> QueryBuilder<Sqlite> {
    let mut query = QueryBuilder::new(format!("INSERT INTO {table} ({columns}) "));
    query.push_values(rows, push);
    query.push(format!(" ON CONFLICT ({key}) DO UPDATE SET {on_conflict}"));
    query
}

#[async_trait]
impl AnalyticsStore for SqliteAnalyticsStore {
    async fn apply(&self, batch: &[Counted]) -> Result<Applied, StoreError> {
        let mut tx = begin_write(&self.pool).await?;

        // Which events were counted before (by an earlier delivery or earlier in this batch)?
        let mut seen: HashSet<Uuid> = HashSet::new();
        if !batch.is_empty() {
            let mut query = QueryBuilder::new("SELECT event_id FROM processed_events WHERE event_id IN (");
            let mut separated = query.separated(", ");
            for counted in batch {
                separated.push_bind(counted.fact.event_id);
            }
            query.push(")");
            for row in query.build().fetch_all(&mut *tx).await? {
                seen.insert(row.try_get("event_id")?);
            }
        }
        let mut new = Vec::with_capacity(batch.len());
        let mut fresh: Vec<&Counted> = Vec::new();
        for counted in batch {
            let is_new = seen.insert(counted.fact.event_id);
            new.push(is_new);
            if is_new {
                fresh.push(counted);
            }
        }

        if !fresh.is_empty() {
            let now = time_text(Utc::now());
            let mut inbox = QueryBuilder::new("INSERT INTO processed_events (event_id, processed_at) ");
            inbox.push_values(&fresh, |mut row, counted| {
                row.push_bind(counted.fact.event_id).push_bind(now.clone());
            });
            inbox.build().execute(&mut *tx).await?;

            let facts: Vec<&OrderFact> = fresh.iter().map(|c| &c.fact).collect();
            let delta = BatchDelta::of(&facts);

            sqlx::query(
                "UPDATE order_totals SET total_orders = total_orders + ?, total_quantity = total_quantity + ?, \
                 total_revenue_minor = total_revenue_minor + ?, last_updated = ? WHERE id = 1",
            )
            .bind(delta.totals.orders)
            .bind(delta.totals.quantity)
            .bind(delta.totals.revenue_minor)
            .bind(&now)
            .execute(&mut *tx)
            .await?;

            upsert(
                "product_totals",
                "product_id, orders, quantity, revenue_minor",
                "product_id",
                &delta.products,
                |mut row, (product, totals)| {
                    row.push_bind(product.clone())
                        .push_bind(totals.orders)
                        .push_bind(totals.quantity)
                        .push_bind(totals.revenue_minor);
                },
                "orders = orders + excluded.orders, quantity = quantity + excluded.quantity, \
                 revenue_minor = revenue_minor + excluded.revenue_minor",
            )
            .build()
            .execute(&mut *tx)
            .await?;

            upsert(
                "customer_totals",
                "customer_id, orders, quantity, revenue_minor, first_order_at, last_order_at",
                "customer_id",
                &delta.customers,
                |mut row, (customer, c)| {
                    row.push_bind(customer.clone())
                        .push_bind(c.totals.orders)
                        .push_bind(c.totals.quantity)
                        .push_bind(c.totals.revenue_minor)
                        .push_bind(time_text(c.first_order_at))
                        .push_bind(time_text(c.last_order_at));
                },
                "orders = orders + excluded.orders, quantity = quantity + excluded.quantity, \
                 revenue_minor = revenue_minor + excluded.revenue_minor, \
                 first_order_at = MIN(first_order_at, excluded.first_order_at), \
                 last_order_at = MAX(last_order_at, excluded.last_order_at)",
            )
            .build()
            .execute(&mut *tx)
            .await?;

            let bucket_update =
                "orders = orders + excluded.orders, revenue_minor = revenue_minor + excluded.revenue_minor";
            upsert(
                "hourly_totals",
                "bucket_start, orders, revenue_minor",
                "bucket_start",
                &delta.hours,
                |mut row, (start, totals)| {
                    row.push_bind(time_text(*start)).push_bind(totals.orders).push_bind(totals.revenue_minor);
                },
                bucket_update,
            )
            .build()
            .execute(&mut *tx)
            .await?;
            upsert(
                "daily_totals",
                "bucket_start, orders, revenue_minor",
                "bucket_start",
                &delta.days,
                |mut row, (day, totals)| {
                    row.push_bind(midnight(*day)).push_bind(totals.orders).push_bind(totals.revenue_minor);
                },
                bucket_update,
            )
            .build()
            .execute(&mut *tx)
            .await?;

            let events: Vec<_> = fresh.iter().map(|c| c.processed_event.clone()).collect();
            messaging::outbox::sqlite::enqueue(&mut tx, &events, messaging::outbox::HANDOFF_RESERVATION)
                .await?;
        }

        // Read back inside the transaction: exactly the state this commit creates.
        let summary = summary_from_row(&sqlx::query(SUMMARY_QUERY).fetch_one(&mut *tx).await?)?;
        tx.commit().await?;
        Ok(Applied { new, summary })
    }

    async fn summary(&self) -> Result<Summary, StoreError> {
        Ok(summary_from_row(&sqlx::query(SUMMARY_QUERY).fetch_one(&self.pool).await?)?)
    }

    async fn top_products(&self, ranking: Ranking, limit: u32) -> Result<Vec<ProductTotal>, StoreError> {
        let sql = match ranking {
            Ranking::Revenue => {
                "SELECT product_id, orders, quantity, revenue_minor FROM product_totals \
                 ORDER BY revenue_minor DESC, product_id DESC LIMIT ?"
            }
            Ranking::Quantity => {
                "SELECT product_id, orders, quantity, revenue_minor FROM product_totals \
                 ORDER BY quantity DESC, product_id DESC LIMIT ?"
            }
        };
        let rows = sqlx::query(sql).bind(limit).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(ProductTotal {
                    product_id: row.try_get("product_id")?,
                    orders: row.try_get("orders")?,
                    quantity: row.try_get("quantity")?,
                    revenue: Money::from_minor(row.try_get("revenue_minor")?),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    async fn customer(&self, customer_id: &str) -> Result<Option<CustomerTotal>, StoreError> {
        let row = sqlx::query(
            "SELECT customer_id, orders, quantity, revenue_minor, first_order_at, last_order_at \
             FROM customer_totals WHERE customer_id = ?",
        )
        .bind(customer_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let orders: i64 = row.try_get("orders")?;
        let revenue: i64 = row.try_get("revenue_minor")?;
        Ok(Some(CustomerTotal {
            customer_id: row.try_get("customer_id")?,
            total_orders: orders,
            total_quantity: row.try_get("quantity")?,
            total_revenue: Money::from_minor(revenue),
            average_order_value: average(revenue, orders),
            first_order_at: parse_time(row.try_get("first_order_at")?)?,
            last_order_at: parse_time(row.try_get("last_order_at")?)?,
        }))
    }

    async fn series(
        &self,
        interval: Interval,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Bucket>, StoreError> {
        let (sql, from, to) = match interval {
            Interval::Hour => (
                "SELECT bucket_start, orders, revenue_minor FROM hourly_totals \
                 WHERE bucket_start >= ? AND bucket_start < ? ORDER BY bucket_start",
                time_text(from),
                time_text(to),
            ),
            // Whole days, as the MySQL store compares dates.
            Interval::Day => (
                "SELECT bucket_start, orders, revenue_minor FROM daily_totals \
                 WHERE bucket_start >= ? AND bucket_start < ? ORDER BY bucket_start",
                midnight(from.date_naive()),
                midnight(to.date_naive()),
            ),
        };
        let rows: Vec<(String, i64, i64)> =
            sqlx::query_as(sql).bind(from).bind(to).fetch_all(&self.pool).await?;
        rows.into_iter()
            .map(|(start, orders, revenue)| {
                Ok(Bucket { bucket_start: parse_time(&start)?, orders, revenue: Money::from_minor(revenue) })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    async fn purge_inbox(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        let deleted = sqlx::query(
            "DELETE FROM processed_events WHERE event_id IN \
             (SELECT event_id FROM processed_events WHERE processed_at < ? LIMIT ?)",
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
