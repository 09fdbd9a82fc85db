//! The order database in SQLite, for the embedded mode (schema: `migrations/order-service/sqlite`).

use std::path::Path;

use platform::sqlite::SqliteError;
use sqlx::SqlitePool;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/order-service/sqlite");

/// Opens (creating and migrating it if needed) the order database at `path`.
pub async fn open(path: &Path) -> Result<SqlitePool, SqliteError> {
    platform::sqlite::open(path, &MIGRATOR).await
}
