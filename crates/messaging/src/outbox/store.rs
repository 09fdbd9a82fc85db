//! Where the outbox rows live: the table `outbox` of the service's own database (created by each
//! service's migrations), written once for MySQL / MariaDB and SQLite (`platform::sql`). Producers
//! write rows with [`enqueue`] inside their own transaction; the relay reads them through
//! [`OutboxStore`].
//!
//! MySQL: claims use `FOR UPDATE SKIP LOCKED` (MySQL 8.0.1+, MariaDB 10.6+) in a short READ
//! COMMITTED transaction, so relays of several replicas never wait for each other and no lock is
//! held while publishing; lease and retry times come from the database's clock, which every
//! replica shares. SQLite has no `SKIP LOCKED`: one relay per database is assumed, and a claim
//! reads and leases its rows in one `BEGIN IMMEDIATE` transaction; times come from the process's
//! clock.

use std::{collections::BTreeMap, time::Duration};

use async_trait::async_trait;
use chrono::{TimeDelta, Utc};
use platform::sql::{self, Dialect, Kind, Pool, Statement, Value};
use uuid::Uuid;

use super::relay::HANDOFF_RESERVATION;
use crate::OutgoingMessage;

/// An outbox row leased for publishing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRecord {
    pub id: i64,
    pub message: OutgoingMessage,
    /// Publish attempts so far, this one included.
    pub attempts: u32,
}

/// Rows waiting to be published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    pub pending: u64,
    pub oldest_age: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("outbox row {id} is corrupt: {reason}")]
    Corrupt { id: i64, reason: String },
}

/// Where the outbox rows live: the service's own database.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Leases up to `limit` unpublished rows that are due, oldest first, for `lease`.
    async fn claim(&self, limit: usize, lease: Duration) -> Result<Vec<OutboxRecord>, OutboxError>;
    /// Removes the rows whose events the broker has confirmed.
    async fn remove_published(&self, event_ids: &[Uuid]) -> Result<(), OutboxError>;
    /// Makes the rows due again after `retry_after`, recording why they failed.
    async fn mark_failed(
        &self,
        event_ids: &[Uuid],
        retry_after: Duration,
        error: &str,
    ) -> Result<(), OutboxError>;
    async fn backlog(&self) -> Result<Backlog, OutboxError>;
}

/// Writes `messages` into the outbox inside the producer's transaction, reserved for
/// [`HANDOFF_RESERVATION`]: after the commit, hand them to the relay with
/// [`super::OutboxHandoff::publish_committed`].
pub async fn enqueue(
    executor: &mut dyn sql::Executor,
    messages: &[OutgoingMessage],
) -> Result<(), sqlx::Error> {
    enqueue_reserved(executor, messages, HANDOFF_RESERVATION).await
}

/// Writes `messages` into the outbox, out of the polling relays' reach for `reserved_for`.
pub async fn enqueue_reserved(
    executor: &mut dyn sql::Executor,
    messages: &[OutgoingMessage],
    reserved_for: Duration,
) -> Result<(), sqlx::Error> {
    if messages.is_empty() {
        return Ok(());
    }
    let rows = messages.iter().map(|message| {
        let headers = serde_json::to_string(&message.headers).unwrap_or_else(|_| "{}".into());
        vec![
            message.event_id.into(),
            message.event_type.as_str().into(),
            message.routing_key.as_str().into(),
            message.payload.clone().into(),
            headers.into(),
            message.timestamp.into(),
            (message.timestamp + reserved_for).into(),
        ]
    });
    let insert = sql::Statement::insert(
        "outbox",
        &["event_id", "event_type", "routing_key", "payload", "headers", "created_at", "available_at"],
        rows,
    );
    executor.execute(&insert).await?;
    Ok(())
}

const MAX_ERROR_LENGTH: usize = 1000;

pub struct SqlOutbox {
    pool: Box<dyn Pool>,
}

impl SqlOutbox {
    pub fn new(pool: impl Pool + 'static) -> Self {
        SqlOutbox { pool: Box::new(pool) }
    }

    /// Makes every unpublished row due now. Only for a database with one relay (the embedded
    /// mode), once at start, before the relay runs: a lease still running was taken by a process
    /// that is gone, and its rows should not wait for it to end.
    pub async fn release_leases(&self) -> Result<u64, OutboxError> {
        let (now, value) = time_after(self.pool.dialect(), Duration::ZERO);
        let update =
            Statement::new(format!("UPDATE outbox SET available_at = {now} WHERE available_at > {now}"))
                .bind(value.clone())
                .bind(value);
        Ok(self.pool.executor().execute(&update).await?)
    }
}

/// `delay` from now, as SQL and its argument: the database's clock in MySQL, the process's in
/// SQLite (capped at a century so that date arithmetic cannot overflow).
fn time_after(dialect: Dialect, delay: Duration) -> (&'static str, Value) {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let delay = delay.min(CENTURY);
    match dialect {
        Dialect::MySql => (
            "DATE_ADD(NOW(6), INTERVAL ? MICROSECOND)",
            Value::Int(i64::try_from(delay.as_micros()).unwrap_or(i64::MAX)),
        ),
        Dialect::Sqlite => ("?", Value::Time(Utc::now() + TimeDelta::from_std(delay).unwrap_or_default())),
    }
}

const CLAIMED_KINDS: &[Kind] =
    &[Kind::Int, Kind::Id, Kind::Text, Kind::Text, Kind::Bytes, Kind::Text, Kind::Time, Kind::Int];

#[async_trait]
impl OutboxStore for SqlOutbox {
    async fn claim(&self, limit: usize, lease: Duration) -> Result<Vec<OutboxRecord>, OutboxError> {
        let dialect = self.pool.dialect();
        // Under REPEATABLE READ the locking read would also lock gaps and block concurrent
        // inserts into the outbox.
        let mut tx = self.pool.begin_read_committed().await?;
        let (now, now_value) = time_after(dialect, Duration::ZERO);
        let skip_locked = match dialect {
            Dialect::MySql => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let select = Statement::new(format!(
            "SELECT id, event_id, event_type, routing_key, payload, headers, created_at, attempts \
             FROM outbox WHERE available_at <= {now} ORDER BY available_at, id LIMIT ?{skip_locked}"
        ))
        .bind(now_value)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX));
        let rows = tx.fetch(&select, CLAIMED_KINDS).await?;
        if !rows.is_empty() {
            let (until, until_value) = time_after(dialect, lease);
            let lease_update = Statement::new(format!(
                "UPDATE outbox SET attempts = attempts + 1, available_at = {until} WHERE "
            ))
            .bind(until_value)
            .where_in("id", rows.iter().map(|row| row.int(0)).collect::<Result<Vec<_>, _>>()?);
            tx.execute(&lease_update).await?;
        }
        tx.commit().await?;

        rows.iter()
            .map(|row| {
                let id = row.int(0)?;
                let corrupt = |what: &str, reason: String| OutboxError::Corrupt {
                    id,
                    reason: format!("{what}: {reason}"),
                };
                let headers: BTreeMap<String, String> =
                    serde_json::from_str(&row.text(5)?).map_err(|e| corrupt("headers", e.to_string()))?;
                Ok(OutboxRecord {
                    id,
                    message: OutgoingMessage {
                        event_id: row.id(1)?,
                        event_type: row.text(2)?,
                        routing_key: row.text(3)?,
                        payload: row.bytes(4)?,
                        headers,
                        timestamp: row.time(6).map_err(|e| corrupt("created_at", e.to_string()))?,
                    },
                    attempts: u32::try_from(row.int(7)?.max(0)).unwrap_or(u32::MAX).saturating_add(1),
                })
            })
            .collect()
    }

    async fn remove_published(&self, event_ids: &[Uuid]) -> Result<(), OutboxError> {
        if event_ids.is_empty() {
            return Ok(());
        }
        let delete =
            Statement::new("DELETE FROM outbox WHERE ").where_in("event_id", event_ids.iter().copied());
        self.pool.executor().execute(&delete).await?;
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
        let (due, due_value) = time_after(self.pool.dialect(), retry_after);
        let update = Statement::new(format!("UPDATE outbox SET available_at = {due}, last_error = ? WHERE "))
            .bind(due_value)
            .bind(error)
            .where_in("event_id", event_ids.iter().copied());
        self.pool.executor().execute(&update).await?;
        Ok(())
    }

    async fn backlog(&self) -> Result<Backlog, OutboxError> {
        let select = Statement::new("SELECT COUNT(*), MIN(created_at) FROM outbox");
        let rows = self.pool.executor().fetch(&select, &[Kind::Int, Kind::Time]).await?;
        let row = rows.first().ok_or(sqlx::Error::RowNotFound)?;
        Ok(Backlog {
            pending: u64::try_from(row.int(0)?).unwrap_or_default(),
            oldest_age: row
                .optional_time(1)?
                .map(|oldest| (Utc::now() - oldest).to_std().unwrap_or_default()),
        })
    }
}

#[cfg(test)]
mod tests {
    use test_support::TempDir;

    use super::*;

    /// The services' outbox table, in a database file of its own.
    async fn outbox() -> (SqlOutbox, sqlx::SqlitePool, TempDir) {
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
        (SqlOutbox::new(pool.clone()), pool, TempDir(directory))
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

    async fn enqueue_all(pool: &sqlx::SqlitePool, messages: &[OutgoingMessage]) {
        let mut tx = Pool::begin(pool).await.unwrap();
        crate::outbox::enqueue_reserved(tx.as_mut(), messages, Duration::ZERO).await.unwrap();
        tx.commit().await.unwrap();
    }

    #[tokio::test]
    async fn claims_lease_rows_oldest_first_until_published_then_removes_them() {
        let (outbox, pool, directory) = outbox().await;
        let messages: Vec<_> = (0..5).map(message).collect();
        enqueue_all(&pool, &messages).await;
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
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox").fetch_one(&pool).await.unwrap();
        assert_eq!(rows, 2, "published rows are gone");

        // A failed publish makes the rows due after the backoff, with one more attempt counted.
        let ids: Vec<i64> = second.iter().map(|r| r.id).collect();
        let event_ids: Vec<Uuid> = second.iter().map(|r| r.message.event_id).collect();
        outbox.mark_failed(&event_ids, Duration::ZERO, "broker down").await.unwrap();
        let retried = outbox.claim(10, Duration::from_secs(30)).await.unwrap();
        assert_eq!(retried.iter().map(|r| r.id).collect::<Vec<_>>(), ids);
        assert!(retried.iter().all(|record| record.attempts == 2));
        pool.close().await;
        drop(directory);
    }

    #[tokio::test]
    async fn a_restart_releases_the_leases_of_the_process_before() {
        let (outbox, pool, directory) = outbox().await;
        enqueue_all(&pool, &[message(1), message(2)]).await;
        assert_eq!(outbox.claim(10, Duration::from_secs(3600)).await.unwrap().len(), 2);
        assert_eq!(outbox.release_leases().await.unwrap(), 2);
        assert_eq!(outbox.claim(10, Duration::from_secs(3600)).await.unwrap().len(), 2);
        pool.close().await;
        drop(directory);
    }
}
