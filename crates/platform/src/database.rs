//! MySQL connection settings and pool.

use std::{str::FromStr, time::Duration};

use sqlx::{Connection, Executor, migrate::Migrator};

use crate::shutdown::Shutdown;

use serde::{Deserialize, Serialize};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};

use crate::{config::ConfigError, settings::Secret};

/// Idle time after which a pooled connection is pinged before it is used again.
const STALE_AFTER: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DatabaseSettings {
    /// `mysql://user:password@host:port/database`; when set, it wins over the separate fields.
    pub url: Option<String>,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Secret,
    pub name: String,
    pub max_connections: u32,
    /// How long a request waits for a free connection before failing.
    pub acquire_timeout_ms: u64,
}

impl DatabaseSettings {
    pub fn named(name: &str, user: &str) -> Self {
        DatabaseSettings { name: name.into(), user: user.into(), ..Default::default() }
    }

    pub fn connect_options(&self) -> Result<MySqlConnectOptions, ConfigError> {
        match self.url.as_deref().filter(|u| !u.is_empty()) {
            Some(url) => {
                if !(url.starts_with("mysql://") || url.starts_with("mariadb://")) {
                    return Err(ConfigError::invalid(
                        "database.url",
                        "must start with mysql:// or mariadb://",
                    ));
                }
                MySqlConnectOptions::from_str(url)
                    .map_err(|e| ConfigError::invalid("database.url", format!("not a MySQL URL: {e}")))
            }
            None => {
                if self.host.is_empty() {
                    return Err(ConfigError::invalid("database.host", "must not be empty"));
                }
                if self.name.is_empty() {
                    return Err(ConfigError::invalid("database.name", "must not be empty"));
                }
                let options = MySqlConnectOptions::new()
                    .host(&self.host)
                    .port(self.port)
                    .username(&self.user)
                    .database(&self.name);
                // An empty password means "no password": sending an empty one fails against an
                // account that has none.
                Ok(if self.password.is_empty() { options } else { options.password(self.password.expose()) })
            }
        }
    }

    /// The database name, from the URL or the separate field.
    pub fn database_name(&self) -> Result<String, ConfigError> {
        Ok(self.connect_options()?.get_database().unwrap_or_default().to_owned())
    }

    /// A pool that connects on first use, so that a database that is down at start is retried.
    pub fn pool(&self) -> Result<MySqlPool, ConfigError> {
        crate::config::require_positive(&[("database.max_connections", u64::from(self.max_connections))])?;
        Ok(MySqlPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(Duration::from_millis(self.acquire_timeout_ms))
            // A connection used a moment ago is alive: pinging it before every use would add a
            // round trip to every transaction. One that sat idle is checked before it is handed out.
            .test_before_acquire(false)
            .before_acquire(|connection, meta| {
                Box::pin(async move {
                    if meta.idle_for > STALE_AFTER {
                        connection.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_lazy_with(self.connect_options()?))
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            url: None,
            host: "localhost".into(),
            port: 3306,
            user: "root".into(),
            password: Secret::default(),
            name: String::new(),
            max_connections: 16,
            acquire_timeout_ms: 3_000,
        }
    }
}

/// Creates the database if it is missing and the user may create it; otherwise does nothing
/// (a managed database usually exists already and its user may not create databases).
pub async fn create_database_if_missing(settings: &DatabaseSettings) {
    let Ok(options) = settings.connect_options() else { return };
    let Some(name) = options.get_database().map(str::to_owned) else { return };
    let Ok(mut connection) =
        sqlx::MySqlConnection::connect_with(&options.database("information_schema")).await
    else {
        return;
    };
    let statement = format!("CREATE DATABASE IF NOT EXISTS `{}`", name.replace('`', "``"));
    if let Err(error) = connection.execute(sqlx::AssertSqlSafe(statement)).await {
        tracing::debug!(event = "create_database_skipped", error = %error, "could not create the database");
    }
}

/// Applies `migrator` to the database, waiting (with backoff) while the database is unreachable.
/// Concurrent replicas are safe: the migrator holds a database lock while it runs.
pub async fn migrate(
    settings: &DatabaseSettings,
    pool: &MySqlPool,
    migrator: &Migrator,
    shutdown: &Shutdown,
) -> Result<(), sqlx::migrate::MigrateError> {
    let mut delay = Duration::from_millis(250);
    loop {
        create_database_if_missing(settings).await;
        match migrator.run(pool).await {
            Ok(()) => return Ok(()),
            Err(sqlx::migrate::MigrateError::Execute(error)) if is_connection_error(&error) => {
                tracing::warn!(event = "database_unreachable", error = %error, retry_in_ms = delay.as_millis() as u64, "database unreachable; retrying migrations");
            }
            Err(error) => return Err(error),
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.requested() => return Err(sqlx::migrate::MigrateError::Execute(sqlx::Error::PoolClosed)),
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

fn is_connection_error(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Protocol(_)
    ) || error
        .as_database_error()
        .and_then(|e| e.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
        .is_some_and(|e| {
            // unknown database (created by a moment's delay), server shutting down, too many connections
            matches!(e.number(), 1049 | 1053 | 1040)
        })
}

/// What a database error means for the work that hit it (MySQL, MariaDB and SQLite alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The database serves nothing right now: unreachable, shutting down, out of connections,
    /// read-only during a failover, disk full, or not the database we expect (credentials,
    /// missing schema). Work should wait for it, whatever the work is.
    Outage,
    /// This piece of work met a passing conflict (deadlock, lock wait timeout): it may pass if
    /// tried again.
    Conflict,
    /// The data itself is refused (too long, out of range, a constraint): it never will pass.
    Rejected,
    /// Anything else.
    Other,
}

/// Classifies `error`; see [`Failure`].
pub fn failure(error: &sqlx::Error) -> Failure {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => Failure::Outage,
        sqlx::Error::Database(db) => {
            if let Some(mysql) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                match mysql.number() {
                    // access denied (user, database, command), unknown database, shutting down,
                    // too many connections, disk or table full, missing table or column,
                    // read-only during a failover, connection killed
                    1044 | 1045 | 1049 | 1053 | 1040 | 1021 | 1114 | 1142 | 1146 | 1054 | 1290 | 1927 => {
                        Failure::Outage
                    }
                    // lock wait timeout, deadlock, query interrupted
                    1205 | 1213 | 1317 => Failure::Conflict,
                    // null in a NOT NULL column, value out of range, data too long, incorrect
                    // or truncated value, foreign key, check constraint (MySQL, MariaDB)
                    1048 | 1264 | 1690 | 1406 | 1366 | 1292 | 1451 | 1452 | 3819 | 4025 => Failure::Rejected,
                    _ => Failure::Other,
                }
            } else {
                crate::sqlite::failure(db.as_ref())
            }
        }
        _ => Failure::Other,
    }
}
