//! [`Dedupe`] on SQLite, for the embedded mode: the same claim / sent / release protocol as the
//! Redis store, kept in a file so that a notification sent before a restart is not sent again
//! after it.

use std::{path::Path, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::Utc;
use platform::sqlite::{Durability, SqliteError, time_text};
use sqlx::SqlitePool;
use uuid::Uuid;

use super::{Claim, Dedupe, DedupeError, PENDING, SENT};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/notification-worker/sqlite");

pub struct SqliteDedupe {
    pool: SqlitePool,
    claim_ttl: Duration,
    sent_ttl: Duration,
}

fn unavailable(error: sqlx::Error) -> DedupeError {
    DedupeError::Unavailable(Arc::new(error))
}

/// Now plus `ttl`, in the stored time format (capped at a century: no date overflow).
fn expiry(ttl: Duration) -> String {
    let ttl =
        chrono::TimeDelta::from_std(ttl.min(Duration::from_secs(100 * 365 * 24 * 3600))).unwrap_or_default();
    time_text(Utc::now() + ttl)
}

/// Opens (creating and migrating it if needed) the deduplication database at `path`. Its commits
/// survive the process crashing but not a power cut: like Redis in production, a lost mark costs
/// at most a notification sent twice, and not syncing each one keeps the worker from holding up
/// the bus.
pub async fn open(path: &Path) -> Result<SqlitePool, SqliteError> {
    platform::sqlite::open_with(path, &MIGRATOR, Durability::ProcessCrash).await
}

impl SqliteDedupe {
    pub fn new(pool: SqlitePool, claim_ttl: Duration, sent_ttl: Duration) -> Self {
        SqliteDedupe { pool, claim_ttl, sent_ttl }
    }

    /// Forgets what has expired and every claim in progress. Call once at start: this process is
    /// the store's only user, so a claim still held was held by a process that is gone (its
    /// delivery comes again, and must not wait for the claim to expire).
    pub async fn forget_claims(&self) -> Result<u64, sqlx::Error> {
        let forgotten = sqlx::query("DELETE FROM notifications WHERE status = ? OR expires_at <= ?")
            .bind(PENDING)
            .bind(time_text(Utc::now()))
            .execute(&self.pool)
            .await?;
        Ok(forgotten.rows_affected())
    }
}

/// One transaction per call: a batch's claims (or marks) cost one commit.
#[async_trait]
impl Dedupe for SqliteDedupe {
    async fn claim(&self, channel: &str, event_ids: &[Uuid]) -> Result<Vec<Claim>, DedupeError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let mut claims = Vec::with_capacity(event_ids.len());
        for event_id in event_ids {
            // Taken when absent or expired, in one statement.
            let claimed = sqlx::query(
                "INSERT INTO notifications (channel, event_id, status, expires_at) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (channel, event_id) DO UPDATE SET status = excluded.status, \
                 expires_at = excluded.expires_at WHERE notifications.expires_at <= ?",
            )
            .bind(channel)
            .bind(event_id)
            .bind(PENDING)
            .bind(expiry(self.claim_ttl))
            .bind(time_text(Utc::now()))
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
            if claimed.rows_affected() == 1 {
                claims.push(Claim::Acquired);
                continue;
            }
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM notifications WHERE channel = ? AND event_id = ?")
                    .bind(channel)
                    .bind(event_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(unavailable)?;
            claims.push(if status.as_deref() == Some(SENT) { Claim::AlreadySent } else { Claim::InProgress });
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(claims)
    }

    async fn mark_sent(&self, channel: &str, event_ids: &[Uuid]) -> Result<(), DedupeError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        for event_id in event_ids {
            sqlx::query(
                "INSERT INTO notifications (channel, event_id, status, expires_at) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (channel, event_id) DO UPDATE SET status = excluded.status, \
                 expires_at = excluded.expires_at",
            )
            .bind(channel)
            .bind(event_id)
            .bind(SENT)
            .bind(expiry(self.sent_ttl))
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn release(&self, channel: &str, event_ids: &[Uuid]) -> Result<(), DedupeError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        for event_id in event_ids {
            sqlx::query("DELETE FROM notifications WHERE channel = ? AND event_id = ?")
                .bind(channel)
                .bind(event_id)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn ping(&self) -> Result<(), DedupeError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(unavailable)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use test_support::TempDir;

    use super::*;

    #[tokio::test]
    async fn claims_once_and_remembers_across_restarts() {
        let directory = TempDir::new();
        let path = directory.0.join("notifications.db");
        let ttl = Duration::from_secs(60);
        let dedupe = SqliteDedupe::new(open(&path).await.unwrap(), ttl, ttl);
        let (sent, interrupted, failed) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());

        assert_eq!(dedupe.claim("log", &[sent]).await.unwrap()[0], Claim::Acquired);
        assert_eq!(dedupe.claim("log", &[sent]).await.unwrap()[0], Claim::InProgress);
        assert_eq!(dedupe.claim("webhook", &[sent]).await.unwrap()[0], Claim::Acquired, "per channel");
        dedupe.mark_sent("log", &[sent]).await.unwrap();
        assert_eq!(dedupe.claim("log", &[sent]).await.unwrap()[0], Claim::AlreadySent);

        assert_eq!(dedupe.claim("log", &[failed]).await.unwrap()[0], Claim::Acquired);
        dedupe.release("log", &[failed]).await.unwrap();
        assert_eq!(
            dedupe.claim("log", &[failed]).await.unwrap()[0],
            Claim::Acquired,
            "a released claim is free"
        );

        assert_eq!(dedupe.claim("log", &[interrupted]).await.unwrap()[0], Claim::Acquired);
        dedupe.ping().await.unwrap();
        dedupe.pool.close().await;

        // After a restart: what was sent stays sent; what was in progress may be sent now.
        let reopened = SqliteDedupe::new(open(&path).await.unwrap(), ttl, ttl);
        // The three claims left pending: webhook/sent, log/failed (taken again), log/interrupted.
        assert_eq!(reopened.forget_claims().await.unwrap(), 3);
        assert_eq!(reopened.claim("log", &[sent]).await.unwrap()[0], Claim::AlreadySent);
        assert_eq!(reopened.claim("log", &[interrupted]).await.unwrap()[0], Claim::Acquired);
        reopened.pool.close().await;
    }

    #[tokio::test]
    async fn an_expired_claim_can_be_taken_again() {
        let directory = TempDir::new();
        let pool = open(&directory.0.join("n.db")).await.unwrap();
        let dedupe = SqliteDedupe::new(pool, Duration::from_millis(50), Duration::from_secs(60));
        let event = Uuid::now_v7();
        assert_eq!(dedupe.claim("log", &[event]).await.unwrap()[0], Claim::Acquired);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(dedupe.claim("log", &[event]).await.unwrap()[0], Claim::Acquired);
        dedupe.pool.close().await;
    }
}
