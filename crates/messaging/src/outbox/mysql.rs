//! The outbox in MySQL / MariaDB (table `outbox`, created by each service's migrations).
//!
//! Claims use `FOR UPDATE SKIP LOCKED` (MySQL 8.0.1+, MariaDB 10.6+) in a short READ COMMITTED
//! transaction: relays never wait for each other, and no lock is held while publishing.

use std::{collections::BTreeMap, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Acquire, MySqlPool, QueryBuilder, Row};
use uuid::Uuid;

use super::{Backlog, OutboxError, OutboxRecord, OutboxStore, where_in};
use crate::OutgoingMessage;

const MAX_ERROR_LENGTH: usize = 1000;

pub struct MySqlOutbox {
    pool: MySqlPool,
}

impl MySqlOutbox {
    pub fn new(pool: MySqlPool) -> Self {
        MySqlOutbox { pool }
    }
}

type ClaimedRow = (i64, Uuid, String, String, Vec<u8>, String, DateTime<Utc>, i32);

#[async_trait]
impl OutboxStore for MySqlOutbox {
    async fn claim(&self, limit: usize, lease: Duration) -> Result<Vec<OutboxRecord>, OutboxError> {
        let mut connection = self.pool.acquire().await?;
        // Applies to the next transaction only. Under REPEATABLE READ the locking read would also
        // lock gaps and block concurrent inserts into the outbox.
        sqlx::raw_sql("SET TRANSACTION ISOLATION LEVEL READ COMMITTED").execute(&mut *connection).await?;
        let mut tx = connection.begin().await?;
        let rows: Vec<ClaimedRow> = sqlx::query_as(
            "SELECT id, event_id, event_type, routing_key, payload, headers, created_at, attempts \
             FROM outbox WHERE available_at <= NOW(6) \
             ORDER BY available_at, id LIMIT ? FOR UPDATE SKIP LOCKED",
        )
        .bind(limit as u64)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = rows.iter().map(|row| row.0).collect();
        let mut lease_update = QueryBuilder::new(
            "UPDATE outbox SET attempts = attempts + 1, available_at = DATE_ADD(NOW(6), INTERVAL ",
        );
        lease_update.push_bind(lease.as_micros() as i64).push(" MICROSECOND)");
        where_in(&mut lease_update, "id", &ids);
        lease_update.build().execute(&mut *tx).await?;
        tx.commit().await?;

        rows.into_iter()
            .map(|(id, event_id, event_type, routing_key, payload, headers, created_at, attempts)| {
                let headers: BTreeMap<String, String> = serde_json::from_str(&headers)
                    .map_err(|e| OutboxError::Corrupt { id, reason: format!("headers: {e}") })?;
                Ok(OutboxRecord {
                    id,
                    message: OutgoingMessage {
                        event_id,
                        event_type,
                        routing_key,
                        payload,
                        headers,
                        timestamp: created_at,
                    },
                    attempts: attempts.max(0) as u32 + 1,
                })
            })
            .collect()
    }

    async fn remove_published(&self, event_ids: &[Uuid]) -> Result<(), OutboxError> {
        if event_ids.is_empty() {
            return Ok(());
        }
        let mut query = QueryBuilder::new("DELETE FROM outbox");
        where_in(&mut query, "event_id", event_ids);
        query.build().execute(&self.pool).await?;
        Ok(())
    }

    async fn mark_failed(
        &self,
        event_ids: &[Uuid],
        retry_after: Duration,
        error: &str,
    ) -> Result<(), OutboxError> {
        if event_ids.is_empty() {
            return Ok(());
        }
        let error: String = error.chars().take(MAX_ERROR_LENGTH).collect();
        let mut query = QueryBuilder::new("UPDATE outbox SET available_at = DATE_ADD(NOW(6), INTERVAL ");
        query.push_bind(retry_after.as_micros() as i64).push(" MICROSECOND), last_error = ").push_bind(error);
        where_in(&mut query, "event_id", event_ids);
        query.build().execute(&self.pool).await?;
        Ok(())
    }

    async fn backlog(&self) -> Result<Backlog, OutboxError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS pending, TIMESTAMPDIFF(MICROSECOND, MIN(created_at), NOW(6)) AS oldest_us \
             FROM outbox",
        )
        .fetch_one(&self.pool)
        .await?;
        let pending: i64 = row.try_get("pending")?;
        let oldest_us: Option<i64> = row.try_get("oldest_us")?;
        Ok(Backlog {
            pending: pending.max(0) as u64,
            oldest_age: oldest_us.map(|us| Duration::from_micros(us.max(0) as u64)),
        })
    }
}
