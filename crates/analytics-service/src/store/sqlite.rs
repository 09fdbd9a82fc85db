//! The analytics database in SQLite, for the embedded mode (schema:
//! `migrations/analytics-service/sqlite`). Times are fixed-width UTC text (see
//! `platform::sqlite`), so `MIN`/`MAX` and range conditions on them compare instants.

use std::path::Path;

use platform::sqlite::SqliteError;
use sqlx::SqlitePool;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/analytics-service/sqlite");

/// Opens (creating and migrating it if needed) the analytics database at `path`.
pub async fn open(path: &Path) -> Result<SqlitePool, SqliteError> {
    platform::sqlite::open(path, &MIGRATOR).await
}
