//! Aggregates in MySQL / MariaDB. A batch costs a fixed number of statements whatever its size:
//! one multi-row statement per aggregate table.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use contracts::Money;
use sqlx::{MySql, MySqlPool, QueryBuilder, Row};
use uuid::Uuid;

use super::{AnalyticsStore, Applied, Counted, StoreError};
use crate::domain::{
    BatchDelta, Bucket, CustomerTotal, Interval, OrderFact, ProductTotal, Ranking, Summary, average,
};

pub struct MySqlAnalyticsStore {
    pool: MySqlPool,
}

impl MySqlAnalyticsStore {
    pub fn new(pool: MySqlPool) -> Self {
        MySqlAnalyticsStore { pool }
    }
}

fn summary_from_row(row: &sqlx::mysql::MySqlRow) -> Result<Summary, sqlx::Error> {
    Ok(Summary::new(
        row.try_get("total_orders")?,
        row.try_get("total_quantity")?,
        row.try_get("total_revenue_minor")?,
        row.try_get("last_updated")?,
    ))
}

const SUMMARY_QUERY: &str =
    "SELECT total_orders, total_quantity, total_revenue_minor, last_updated FROM order_totals WHERE id = 1";

/// Upserts that add to what is there. (`VALUES(col)` names the inserted value; it is what both
/// MySQL 8 and MariaDB understand.)
fn upsert<'a, T: 'a>(
    table: &str,
    columns: &str,
    rows: impl IntoIterator<Item = T>,
    push: impl FnMut(sqlx::query_builder::Separated<'_, MySql, &'static str>, T),
    on_duplicate: &str,
) -> QueryBuilder<MySql> {
    let mut query = QueryBuilder::new(format!("INSERT INTO {table} ({columns}) "));
    query.push_values(rows, push);
    query.push(format!(" ON DUPLICATE KEY UPDATE {on_duplicate}"));
    query
}

#[async_trait]
impl AnalyticsStore for MySqlAnalyticsStore {
    async fn apply(&self, batch: &[Counted]) -> Result<Applied, StoreError> {
        let mut tx = self.pool.begin().await?;

        // Which events were counted before (by an earlier delivery or earlier in this batch)?
        let ids: Vec<Uuid> = batch.iter().map(|c| c.fact.event_id).collect();
        let mut seen: HashSet<Uuid> = HashSet::new();
        if !ids.is_empty() {
            let mut query = QueryBuilder::new("SELECT event_id FROM processed_events WHERE event_id IN (");
            let mut separated = query.separated(", ");
            for id in &ids {
                separated.push_bind(*id);
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
            let now = Utc::now();
            // A concurrent consumer inserting the same event id makes this fail with a unique
            // violation: the whole batch rolls back and is retried, then seen as a duplicate.
            let mut inbox = QueryBuilder::new("INSERT INTO processed_events (event_id, processed_at) ");
            inbox.push_values(&fresh, |mut row, counted| {
                row.push_bind(counted.fact.event_id).push_bind(now);
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
            .bind(now)
            .execute(&mut *tx)
            .await?;

            upsert(
                "product_totals",
                "product_id, orders, quantity, revenue_minor",
                &delta.products,
                |mut row, (product, totals)| {
                    row.push_bind(product.clone())
                        .push_bind(totals.orders)
                        .push_bind(totals.quantity)
                        .push_bind(totals.revenue_minor);
                },
                "orders = orders + VALUES(orders), quantity = quantity + VALUES(quantity), \
                 revenue_minor = revenue_minor + VALUES(revenue_minor)",
            )
            .build()
            .execute(&mut *tx)
            .await?;

            upsert(
                "customer_totals",
                "customer_id, orders, quantity, revenue_minor, first_order_at, last_order_at",
                &delta.customers,
                |mut row, (customer, c)| {
                    row.push_bind(customer.clone())
                        .push_bind(c.totals.orders)
                        .push_bind(c.totals.quantity)
                        .push_bind(c.totals.revenue_minor)
                        .push_bind(c.first_order_at)
                        .push_bind(c.last_order_at);
                },
                "orders = orders + VALUES(orders), quantity = quantity + VALUES(quantity), \
                 revenue_minor = revenue_minor + VALUES(revenue_minor), \
                 first_order_at = LEAST(first_order_at, VALUES(first_order_at)), \
                 last_order_at = GREATEST(last_order_at, VALUES(last_order_at))",
            )
            .build()
            .execute(&mut *tx)
            .await?;

            let bucket_update =
                "orders = orders + VALUES(orders), revenue_minor = revenue_minor + VALUES(revenue_minor)";
            upsert(
                "hourly_totals",
                "bucket_start, orders, revenue_minor",
                &delta.hours,
                |mut row, (start, totals)| {
                    row.push_bind(start.naive_utc()).push_bind(totals.orders).push_bind(totals.revenue_minor);
                },
                bucket_update,
            )
            .build()
            .execute(&mut *tx)
            .await?;
            upsert(
                "daily_totals",
                "bucket_start, orders, revenue_minor",
                &delta.days,
                |mut row, (day, totals)| {
                    row.push_bind(*day).push_bind(totals.orders).push_bind(totals.revenue_minor);
                },
                bucket_update,
            )
            .build()
            .execute(&mut *tx)
            .await?;

            let events: Vec<_> = fresh.iter().map(|c| c.processed_event.clone()).collect();
            messaging::outbox::mysql::enqueue(&mut tx, &events, messaging::outbox::HANDOFF_RESERVATION)
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
            first_order_at: row.try_get("first_order_at")?,
            last_order_at: row.try_get("last_order_at")?,
        }))
    }

    async fn series(
        &self,
        interval: Interval,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Bucket>, StoreError> {
        let buckets = match interval {
            Interval::Hour => {
                let rows: Vec<(NaiveDateTime, i64, i64)> = sqlx::query_as(
                    "SELECT bucket_start, orders, revenue_minor FROM hourly_totals \
                     WHERE bucket_start >= ? AND bucket_start < ? ORDER BY bucket_start",
                )
                .bind(from.naive_utc())
                .bind(to.naive_utc())
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(start, orders, revenue)| Bucket {
                        bucket_start: start.and_utc(),
                        orders,
                        revenue: Money::from_minor(revenue),
                    })
                    .collect()
            }
            Interval::Day => {
                let rows: Vec<(NaiveDate, i64, i64)> = sqlx::query_as(
                    "SELECT bucket_start, orders, revenue_minor FROM daily_totals \
                     WHERE bucket_start >= ? AND bucket_start < ? ORDER BY bucket_start",
                )
                .bind(from.date_naive())
                .bind(to.date_naive())
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(day, orders, revenue)| Bucket {
                        bucket_start: day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc(),
                        orders,
                        revenue: Money::from_minor(revenue),
                    })
                    .collect()
            }
        };
        Ok(buckets)
    }

    async fn purge_inbox(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        let deleted = sqlx::query("DELETE FROM processed_events WHERE processed_at < ? LIMIT ?")
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
