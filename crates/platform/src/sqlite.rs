//! SQLite for the embedded mode: one database file per service, opened the one way that is safe
//! for a pool of connections.
//!
//! - WAL journal: readers never block the writer nor the writer the readers.
//! - `busy_timeout`: a connection that finds the database locked waits instead of failing.
//! - Write transactions must start with [`begin_write`] (`BEGIN IMMEDIATE`): a deferred transaction
//!   that reads and then writes fails with `SQLITE_BUSY` at once, without waiting, when another
//!   connection wrote in between.
//! - `synchronous = FULL` by default: a committed transaction survives a power cut too, as a
//!   `201 Created` promises (see [`Durability`]).
//!
//! Times are stored as TEXT in one fixed-width UTC format ([`time_text`]), so that comparing and
//! sorting the text compares and sorts the instants.

use std::{path::Path, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::{
    Sqlite, SqlitePool, Transaction,
    error::DatabaseError,
    migrate::Migrator,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

/// How long a connection waits for a lock held by another one before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections per pool: one writes at a time anyway; the others serve concurrent reads.
const MAX_CONNECTIONS: u32 = 8;

#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    #[error("cannot create the directory {path}: {source}")]
    Directory { path: String, source: std::io::Error },
    #[error("cannot open the database {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("migrating the database {path} failed: {source}")]
    Migrate { path: String, source: sqlx::migrate::MigrateError },
}

/// How far a commit has gone when it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Synced to disk: it survives a power cut (`synchronous = FULL`, one sync per commit).
    PowerCut,
    /// Handed to the operating system: it survives the process crashing, not the machine
    /// (`synchronous = NORMAL`, no sync per commit). Only for data whose loss costs a repeat,
    /// never a loss, such as deduplication marks.
    ProcessCrash,
}

/// Opens (creating it if needed) the database file at `path` and applies `migrator`; commits
/// survive a power cut.
pub async fn open(path: &Path, migrator: &Migrator) -> Result<SqlitePool, SqliteError> {
    open_with(path, migrator, Durability::PowerCut).await
}

/// [`open`] with the given durability.
pub async fn open_with(
    path: &Path,
    migrator: &Migrator,
    durability: Durability,
) -> Result<SqlitePool, SqliteError> {
    let shown = path.display().to_string();
    if let Some(directory) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(directory)
            .map_err(|source| SqliteError::Directory { path: directory.display().to_string(), source })?;
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(match durability {
            Durability::PowerCut => SqliteSynchronous::Full,
            Durability::ProcessCrash => SqliteSynchronous::Normal,
        })
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT);
    let pool = SqlitePoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .acquire_timeout(BUSY_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|source| SqliteError::Open { path: shown.clone(), source })?;
    migrator.run(&pool).await.map_err(|source| SqliteError::Migrate { path: shown, source })?;
    Ok(pool)
}

/// Starts a write transaction: takes the write lock now (waiting up to the busy timeout), so that
/// nothing it reads can change before it writes.
pub async fn begin_write(pool: &SqlitePool) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
    pool.begin_with("BEGIN IMMEDIATE").await
}

/// `2026-01-09T10:15:00.000000Z`: UTC, microseconds, always the same width.
pub fn time_text(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Reads a time written by [`time_text`].
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|e| sqlx::Error::Decode(format!("{text:?} is not a stored time: {e}").into()))
}

/// Classifies an SQLite error (see [`crate::database::Failure`]) by its primary result code.
pub(crate) fn failure(error: &dyn DatabaseError) -> crate::database::Failure {
    use crate::database::Failure;
    let Some(sqlite) = error.try_downcast_ref::<sqlx::sqlite::SqliteError>() else { return Failure::Other };
    let Some(code) = sqlite.code().and_then(|code| code.parse::<i32>().ok()) else { return Failure::Other };
    match code & 0xff {
        // BUSY, LOCKED
        5 | 6 => Failure::Conflict,
        // NOMEM, READONLY, IOERR, CORRUPT, FULL, CANTOPEN
        7 | 8 | 10 | 11 | 13 | 14 => Failure::Outage,
        // TOOBIG, CONSTRAINT, MISMATCH
        18..=20 => Failure::Rejected,
        _ => Failure::Other,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn times_sort_as_text() {
        let times = [
            Utc.with_ymd_and_hms(2026, 1, 9, 10, 15, 0).unwrap(),
            Utc.with_ymd_and_hms(2026, 1, 9, 10, 15, 0).unwrap() + chrono::TimeDelta::microseconds(5),
            Utc.with_ymd_and_hms(2026, 1, 9, 10, 15, 0).unwrap() + chrono::TimeDelta::milliseconds(500),
            Utc.with_ymd_and_hms(2026, 1, 10, 0, 0, 0).unwrap(),
        ];
        let texts: Vec<String> = times.iter().copied().map(time_text).collect();
        assert_eq!(texts[0], "2026-01-09T10:15:00.000000Z");
        assert!(texts.windows(2).all(|pair| pair[0] < pair[1]), "{texts:?}");
        for (time, text) in times.iter().zip(&texts) {
            assert_eq!(&parse_time(text).unwrap(), time);
        }
    }

    #[tokio::test]
    async fn opens_a_file_database_in_wal_mode() {
        static NO_MIGRATIONS: Migrator = Migrator::DEFAULT;
        let directory = std::env::temp_dir().join(format!("platform-sqlite-{}", std::process::id()));
        let path = directory.join("nested").join("test.db");
        let pool = open(&path, &NO_MIGRATIONS).await.unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&pool).await.unwrap();
        assert_eq!(mode, "wal");
        let keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys").fetch_one(&pool).await.unwrap();
        assert_eq!(keys, 1);
        let mut tx = begin_write(&pool).await.unwrap();
        sqlx::query("CREATE TABLE t (x INTEGER)").execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
        pool.close().await;
        std::fs::remove_dir_all(directory).unwrap();
    }
}
