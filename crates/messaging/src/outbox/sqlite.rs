//! The outbox in SQLite (table `outbox`, created by each service's SQLite migrations), for the
//! embedded mode.
//!
//! SQLite has no `SKIP LOCKED`: one relay per database is assumed. A claim reads and leases its
//! rows inside one `BEGIN IMMEDIATE` transaction, so it cannot interleave with another writer.
//! Times are stored as fixed-width UTC text (see `platform::sqlite`), compared as text.

use std::{collections::BTreeMap, time::Duration};

use async_trait::async_trait;
use chrono::{TimeDelta, Utc};
use platform::sqlite::{begin_write, parse_time, time_text};
use sqlx::{QueryBuilder, Row, SqlitePool};
use uuid::Uuid;

use super::{Backlog, OutboxError, OutboxRecord, OutboxStore, where_in};
use crate::OutgoingMessage;

const MAX_ERROR_LENGTH: usize = 1000;

pub struct SqliteOutbox {
    pool: SqlitePool,
}

impl SqliteOutbox {
    pub fn new(pool: SqlitePool) -> Self {
        SqliteOutbox { pool }
    }

    /// Makes every unpublished row due now. Call once at start, before the relay runs: with one
    /// relay per database, a lease still running was taken by a process that is gone, and its
    /// rows should not wait for it to end.
    pub async fn release_leases(&self) -> Result<u64, OutboxError> {
        let now = time_text(Utc::now());
        let released = sqlx::query("UPDATE outbox SET available_at = ? WHERE available_at > ?")
            .bind(&now)
            .bind(&now)
            .execute(&self.pool)
            .await?;
        Ok(released.rows_affected())
    }
}

type ClaimedRow = (i64, Uuid, String, String, Vec<u8>, String, String, i64);

/// `delay` as a time offset, capped at a century so that date arithmetic cannot overflow.
fn offset(delay: Duration) -> TimeDelta {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    TimeDelta::from_std(delay.min(CENTURY)).unwrap_or_default()
}

fn after(delay: Duration) -> String {
    time_text(Utc::now() + offset(delay))
}

#[async_trait]
impl OutboxStore for SqliteOutbox {
    async fn claim(&self, limit: usize, lease: Duration) -> Result<Vec<OutboxRecord>, OutboxError> {
        let mut tx = begin_write(&self.pool).await?;
        let rows: Vec<ClaimedRow> = sqlx::query_as(
            "SELECT id, event_id, event_type, routing_key, payload, headers, created_at, attempts \
             FROM outbox WHERE available_at <= ? ORDER BY available_at, id LIMIT ?",
        )
        .bind(time_text(Utc::now()))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = rows.iter().map(|row| row.0).collect();
        let mut lease_update =
            QueryBuilder::new("UPDATE outbox SET attempts = attempts + 1, available_at = ");
        lease_update.push_bind(after(lease));
        where_in(&mut lease_update, "id", &ids);
        lease_update.build().execute(&mut *tx).await?;
        tx.commit().await?;

        rows.into_iter()
            .map(|(id, event_id, event_type, routing_key, payload, headers, created_at, attempts)| {
                let headers: BTreeMap<String, String> = serde_json::from_str(&headers)
                    .map_err(|e| OutboxError::Corrupt { id, reason: format!("headers: {e}") })?;
                let timestamp = parse_time(&created_at)
                    .map_err(|e| OutboxError::Corrupt { id, reason: format!("created_at: {e}") })?;
                Ok(OutboxRecord {
                    id,
                    message: OutgoingMessage {
                        event_id,
                        event_type,
                        routing_key,
                        payload,
                        headers,
                        timestamp,
                    },
                    attempts: u32::try_from(attempts.max(0)).unwrap_or(u32::MAX).saturating_add(1),
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
        let mut query = QueryBuilder::new("UPDATE outbox SET available_at = ");
        query.push_bind(after(retry_after)).push(", last_error = ").push_bind(error);
        where_in(&mut query, "event_id", event_ids);
        query.build().execute(&self.pool).await?;
        Ok(())
    }

    async fn backlog(&self) -> Result<Backlog, OutboxError> {
        let row = sqlx::query("SELECT COUNT(*) AS pending, MIN(created_at) AS oldest FROM outbox")
            .fetch_one(&self.pool)
            .await?;
        let pending: i64 = row.try_get("pending")?;
        let oldest: Option<String> = row.try_get("oldest")?;
        let oldest_age = match oldest {
            Some(text) => Some((Utc::now() - parse_time(&text)?).to_std().unwrap_or_default()),
            None => None,
        };
        Ok(Backlog { pending: u64::try_from(pending).unwrap_or_default(), oldest_age })
    }
}

#[cfg(test)]
mod tests {
    use test_support::TempDir;

    use super::*;

    /// The services' outbox table, in a database file of its own.
    async fn outbox() -> (SqliteOutbox, TempDir) {
        static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate::Migrator::DEFAULT;
        let directory = std::env::temp_dir().join(format!("outbox-sqlite-{}", Uuid::new_v4().simple()));
        let pool = platform::sqlite::open(&directory.join("outbox.db"), &MIGRATOR).await.unwrap();
        for migration in [
            include_str!("../../../../migrations/order-service/sqlite/20261124000002_create_outbox.sql"),
            include_str!(
                "../../../../migrations/order-service/sqlite/20261130000001_outbox_rows_leave_when_published.sql"
            ),
        ] {
            sqlx::raw_sql(migration).execute(&pool).await.unwrap();
        }
        (SqliteOutbox::new(pool), TempDir(directory))
    }

    fn message(n: u32) -> OutgoingMessage {
        OutgoingMessage {
            event_id: Uuid::now_v7(),
            event_type: "OrderCreated".into(),
            routing_key: "order.created".into(),
            payload: format!(r#"{{"n": {n}}}"#).into_bytes(),
            headers: BTreeMap::from([("traceparent".to_owned(), "00-abc-def-01".to_owned())]),
            // Stored to the microsecond, as in MySQL.
            timestamp: chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 6),
        }
    }

    async fn enqueue_all(outbox: &SqliteOutbox, messages: &[OutgoingMessage]) {
        let mut tx = begin_write(&outbox.pool).await.unwrap();
        crate::outbox::enqueue_reserved(&mut tx, messages, Duration::ZERO).await.unwrap();
        tx.commit().await.unwrap();
    }

    #[tokio::test]
    async fn claims_lease_rows_oldest_first_until_published_then_removes_them() {
        let (outbox, directory) = outbox().await;
        let messages: Vec<_> = (0..5).map(message).collect();
        enqueue_all(&outbox, &messages).await;
        assert_eq!(outbox.backlog().await.unwrap().pending, 5);

        let first = outbox.claim(3, Duration::from_secs(30)).await.unwrap();
        assert_eq!(first.iter().map(|r| r.message.clone()).collect::<Vec<_>>(), messages[..3].to_vec());
        assert!(first.iter().all(|record| record.attempts == 1));
        // Leased rows are not claimed again while the lease runs.
        let second = outbox.claim(10, Duration::from_secs(30)).await.unwrap();
        assert_eq!(second.len(), 2);
        assert!(outbox.claim(10, Duration::from_secs(30)).await.unwrap().is_empty());

        outbox.remove_published(&first.iter().map(|r| r.message.event_id).collect::<Vec<_>>()).await.unwrap();
        let backlog = outbox.backlog().await.unwrap();
        assert_eq!(backlog.pending, 2);
        assert!(backlog.oldest_age.is_some());
        let rows: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox").fetch_one(&outbox.pool).await.unwrap();
        assert_eq!(rows, 2, "published rows are gone");

        // A failed publish makes the rows due after the backoff, with one more attempt counted.
        let ids: Vec<i64> = second.iter().map(|r| r.id).collect();
        let event_ids: Vec<Uuid> = second.iter().map(|r| r.message.event_id).collect();
        outbox.mark_failed(&event_ids, Duration::ZERO, "broker down").await.unwrap();
        let retried = outbox.claim(10, Duration::from_secs(30)).await.unwrap();
        assert_eq!(retried.iter().map(|r| r.id).collect::<Vec<_>>(), ids);
        assert!(retried.iter().all(|record| record.attempts == 2));
        outbox.pool.close().await;
        drop(directory);
    }

    #[tokio::test]
    async fn a_restart_releases_the_leases_of_the_process_before() {
        let (outbox, directory) = outbox().await;
        enqueue_all(&outbox, &[message(1), message(2)]).await;
        assert_eq!(outbox.claim(10, Duration::from_secs(3600)).await.unwrap().len(), 2);
        assert_eq!(outbox.release_leases().await.unwrap(), 2);
        assert_eq!(outbox.claim(10, Duration::from_secs(3600)).await.unwrap().len(), 2);
        outbox.pool.close().await;
        drop(directory);
    }
}
