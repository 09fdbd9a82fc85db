//! SQL written once for both databases: MySQL / MariaDB in production, SQLite in the embedded
//! mode.
//!
//! A [`Statement`] is SQL text with `?` placeholders (both dialects' syntax) and its arguments as
//! [`Value`]s; each database binds and reads values its own way (times are `DATETIME(6)` in
//! MySQL and fixed-width UTC text in SQLite, see [`crate::sqlite::time_text`]). Where the
//! dialects' syntax differs (upserts, `LEAST`/`MIN`), [`Dialect`] writes the piece. A store then
//! holds an `Arc<dyn Pool>` and runs the same code on either database.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use sqlx::{
    AssertSqlSafe, MySql, MySqlPool, Row as _, Sqlite, SqlitePool, mysql::MySqlRow, sqlite::SqliteRow,
};
use uuid::Uuid;

use crate::sqlite::{begin_write, parse_time, time_text};

/// An argument of a statement, or a column of a row read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
    Id(Uuid),
    Time(DateTime<Utc>),
    Day(NaiveDate),
}

/// `impl From<$type> for Value`, each into `Value::$variant`.
macro_rules! values_from {
    ($($type:ty => $variant:ident),* $(,)?) => {
        $(impl From<$type> for Value {
            fn from(value: $type) -> Self {
                Value::$variant(value.into())
            }
        })*
    };
}

values_from!(i64 => Int, u32 => Int, &str => Text, String => Text, Vec<u8> => Bytes, Uuid => Id,
    DateTime<Utc> => Time, NaiveDate => Day);

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Self {
        value.map_or(Value::Null, Into::into)
    }
}

/// What a column read holds; `NULL` reads as [`Value::Null`] whatever the kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Text,
    Bytes,
    Id,
    Time,
    Day,
}

/// SQL text with `?` placeholders, and their arguments in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Statement {
    pub sql: String,
    pub args: Vec<Value>,
}

impl Statement {
    pub fn new(sql: impl Into<String>) -> Self {
        Statement { sql: sql.into(), args: Vec::new() }
    }

    /// Appends an argument for the next placeholder.
    pub fn bind(mut self, value: impl Into<Value>) -> Self {
        self.args.push(value.into());
        self
    }

    /// Appends text (no placeholders).
    pub fn push(mut self, sql: &str) -> Self {
        self.sql.push_str(sql);
        self
    }

    /// Appends `column IN (?, ?, …)` with `values` as its arguments. An empty list matches
    /// nothing (`IN (NULL)`), where `IN ()` would be a syntax error.
    pub fn where_in<T: Into<Value>>(mut self, column: &str, values: impl IntoIterator<Item = T>) -> Self {
        self.sql.push_str(column);
        self.sql.push_str(" IN (");
        let before = self.args.len();
        for value in values {
            if self.args.len() > before {
                self.sql.push_str(", ");
            }
            self.sql.push('?');
            self.args.push(value.into());
        }
        if self.args.len() == before {
            self.sql.push_str("NULL");
        }
        self.sql.push(')');
        self
    }

    /// `INSERT INTO table (columns) VALUES (?, …), (?, …)`, one tuple per row. Every row must
    /// have one value per column.
    pub fn insert(table: &str, columns: &[&str], rows: impl IntoIterator<Item = Vec<Value>>) -> Self {
        let mut statement = Statement::new(format!("INSERT INTO {table} ({}) VALUES ", columns.join(", ")));
        for (index, row) in rows.into_iter().enumerate() {
            debug_assert_eq!(row.len(), columns.len(), "one value per column of {table}");
            if index > 0 {
                statement.sql.push_str(", ");
            }
            statement.sql.push('(');
            statement.sql.push_str(&vec!["?"; row.len()].join(", "));
            statement.sql.push(')');
            statement.args.extend(row);
        }
        statement
    }
}

/// Where the two dialects write the same thing differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    MySql,
    Sqlite,
}

/// How an upsert sets a column of a row that exists already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict<'a> {
    /// `column = column + inserted`
    Add(&'a str),
    /// the smaller of the two
    Least(&'a str),
    /// the greater of the two
    Greatest(&'a str),
    /// `column = inserted`
    Replace(&'a str),
}

impl Dialect {
    /// What ends a `SELECT` that locks the rows it reads until the transaction ends: `FOR
    /// UPDATE` in MySQL; nothing in SQLite, whose write transaction holds the whole database.
    pub fn lock_rows(self) -> &'static str {
        match self {
            Dialect::MySql => " FOR UPDATE",
            Dialect::Sqlite => "",
        }
    }

    /// `DELETE` of at most `?` (the second argument) rows of `table` whose `column` is before
    /// `?` (the first), rows named by their primary key `key`. SQLite has no `DELETE … LIMIT`
    /// (unless built for it), so it picks the rows first; MySQL cannot limit such a subquery.
    pub fn delete_older_than(self, table: &str, key: &str, column: &str) -> String {
        match self {
            Dialect::MySql => format!("DELETE FROM {table} WHERE {column} < ? LIMIT ?"),
            Dialect::Sqlite => {
                format!(
                    "DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE {column} < ? LIMIT ?)"
                )
            }
        }
    }

    /// The clause that turns an `INSERT` into an upsert on the primary key `key` (a column list),
    /// setting each of `updates`.
    pub fn on_conflict(self, key: &str, updates: &[OnConflict<'_>]) -> String {
        let inserted = |column: &str| match self {
            Dialect::MySql => format!("VALUES({column})"),
            Dialect::Sqlite => format!("excluded.{column}"),
        };
        let (least, greatest) = match self {
            Dialect::MySql => ("LEAST", "GREATEST"),
            Dialect::Sqlite => ("MIN", "MAX"),
        };
        let sets: Vec<String> = updates
            .iter()
            .map(|update| match *update {
                OnConflict::Add(column) => format!("{column} = {column} + {}", inserted(column)),
                OnConflict::Least(column) => format!("{column} = {least}({column}, {})", inserted(column)),
                OnConflict::Greatest(column) => {
                    format!("{column} = {greatest}({column}, {})", inserted(column))
                }
                OnConflict::Replace(column) => format!("{column} = {}", inserted(column)),
            })
            .collect();
        match self {
            // `VALUES(col)` is what both MySQL 8 and MariaDB understand.
            Dialect::MySql => format!(" ON DUPLICATE KEY UPDATE {}", sets.join(", ")),
            Dialect::Sqlite => format!(" ON CONFLICT ({key}) DO UPDATE SET {}", sets.join(", ")),
        }
    }
}

/// A row read: its columns in the order of the statement's select list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn column(&self, index: usize) -> Result<&Value, sqlx::Error> {
        self.0.get(index).ok_or(sqlx::Error::ColumnIndexOutOfBounds { index, len: self.0.len() })
    }

    fn mismatch(&self, index: usize, wanted: &str) -> sqlx::Error {
        sqlx::Error::ColumnDecode {
            index: index.to_string(),
            source: format!("expected {wanted}, found {:?}", self.0.get(index)).into(),
        }
    }

    pub fn int(&self, index: usize) -> Result<i64, sqlx::Error> {
        match self.column(index)? {
            Value::Int(value) => Ok(*value),
            _ => Err(self.mismatch(index, "an integer")),
        }
    }

    pub fn text(&self, index: usize) -> Result<String, sqlx::Error> {
        match self.column(index)? {
            Value::Text(value) => Ok(value.clone()),
            _ => Err(self.mismatch(index, "text")),
        }
    }

    pub fn optional_text(&self, index: usize) -> Result<Option<String>, sqlx::Error> {
        match self.column(index)? {
            Value::Text(value) => Ok(Some(value.clone())),
            Value::Null => Ok(None),
            _ => Err(self.mismatch(index, "text")),
        }
    }

    pub fn bytes(&self, index: usize) -> Result<Vec<u8>, sqlx::Error> {
        match self.column(index)? {
            Value::Bytes(value) => Ok(value.clone()),
            _ => Err(self.mismatch(index, "bytes")),
        }
    }

    pub fn id(&self, index: usize) -> Result<Uuid, sqlx::Error> {
        match self.column(index)? {
            Value::Id(value) => Ok(*value),
            _ => Err(self.mismatch(index, "an id")),
        }
    }

    pub fn time(&self, index: usize) -> Result<DateTime<Utc>, sqlx::Error> {
        self.optional_time(index)?.ok_or_else(|| self.mismatch(index, "a time"))
    }

    pub fn optional_time(&self, index: usize) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        match self.column(index)? {
            Value::Time(value) => Ok(Some(*value)),
            Value::Null => Ok(None),
            _ => Err(self.mismatch(index, "a time")),
        }
    }

    pub fn day(&self, index: usize) -> Result<NaiveDate, sqlx::Error> {
        match self.column(index)? {
            Value::Day(value) => Ok(*value),
            _ => Err(self.mismatch(index, "a day")),
        }
    }
}

/// Runs statements: a pool (each on a connection of its own) or a transaction.
#[async_trait]
pub trait Executor: Send {
    fn dialect(&self) -> Dialect;
    /// Rows affected.
    async fn execute(&mut self, statement: &Statement) -> Result<u64, sqlx::Error>;
    /// Rows read, each column read as `columns` says.
    async fn fetch(&mut self, statement: &Statement, columns: &[Kind]) -> Result<Vec<Row>, sqlx::Error>;
}

/// A transaction: dropped without [`Transaction::commit`], it rolls back.
#[async_trait]
pub trait Transaction: Executor {
    async fn commit(self: Box<Self>) -> Result<(), sqlx::Error>;
}

/// A database: reads outside a transaction, and write transactions.
#[async_trait]
pub trait Pool: Send + Sync {
    fn dialect(&self) -> Dialect;
    /// A write transaction. In SQLite it takes the write lock at once, so that nothing it reads
    /// changes before it writes.
    async fn begin(&self) -> Result<Box<dyn Transaction>, sqlx::Error>;
    /// A write transaction in READ COMMITTED isolation where the database has a choice (MySQL):
    /// its locking reads lock the rows they return, not the gaps between them.
    async fn begin_read_committed(&self) -> Result<Box<dyn Transaction>, sqlx::Error> {
        self.begin().await
    }
    /// A handle on the pool itself, for statements that need no transaction.
    fn executor(&self) -> Box<dyn Executor>;
}

/// Binds a statement's values and reads rows for one database: `$module::query` and
/// `$module::row`. Only times, days and integers differ between the two: `$time` and `$day` are
/// what a time or a day is bound as, `$read_int`, `$read_time` and `$read_day` read such a column
/// (`row`, `index`) as an `Option`.
macro_rules! codec {
    (
        $module:ident, $database:ty, $row:ty, $arguments:ty,
        bind time |$time_value:ident| $time:expr, bind day |$day_value:ident| $day:expr,
        read int |$int_row:ident, $int_index:ident| $read_int:expr,
        read time |$time_row:ident, $time_index:ident| $read_time:expr,
        read day |$day_row:ident, $day_index:ident| $read_day:expr $(,)?
    ) => {
        mod $module {
            use super::*;

            pub fn query(statement: &Statement) -> sqlx::query::Query<'_, $database, $arguments> {
                let sql = sqlx::query(AssertSqlSafe(statement.sql.as_str()));
                statement.args.iter().fold(sql, |query, value| match value {
                    Value::Null => query.bind(None::<i64>),
                    Value::Int(value) => query.bind(*value),
                    Value::Text(value) => query.bind(value.as_str()),
                    Value::Bytes(value) => query.bind(value.as_slice()),
                    Value::Id(value) => query.bind(*value),
                    Value::Time($time_value) => query.bind($time),
                    Value::Day($day_value) => query.bind($day),
                })
            }

            pub fn row(row: &$row, columns: &[Kind]) -> Result<Row, sqlx::Error> {
                let read_int =
                    |$int_row: &$row, $int_index: usize| -> Result<Option<i64>, sqlx::Error> { $read_int };
                let read_time = |$time_row: &$row,
                                 $time_index: usize|
                 -> Result<Option<DateTime<Utc>>, sqlx::Error> { $read_time };
                let read_day = |$day_row: &$row,
                                $day_index: usize|
                 -> Result<Option<NaiveDate>, sqlx::Error> { $read_day };
                let mut values = Vec::with_capacity(columns.len());
                for (index, kind) in columns.iter().enumerate() {
                    values.push(match kind {
                        Kind::Int => read_int(row, index)?.into(),
                        Kind::Text => row.try_get::<Option<String>, _>(index)?.into(),
                        Kind::Bytes => row.try_get::<Option<Vec<u8>>, _>(index)?.into(),
                        Kind::Id => row.try_get::<Option<Uuid>, _>(index)?.into(),
                        Kind::Time => read_time(row, index)?.into(),
                        Kind::Day => read_day(row, index)?.into(),
                    });
                }
                Ok(Row(values))
            }
        }
    };
}

// MySQL: times and days native; an `UNSIGNED` integer column is one sqlx reads only as an
// unsigned type.
codec!(
    mysql, MySql, MySqlRow, sqlx::mysql::MySqlArguments,
    bind time |time| *time,
    bind day |day| *day,
    read int |row, index| match row.try_get::<Option<i64>, _>(index) {
        Ok(value) => Ok(value),
        Err(signed) => match row.try_get::<Option<u64>, _>(index) {
            Ok(value) => value.map(i64::try_from).transpose().map_err(|e| sqlx::Error::Decode(e.into())),
            Err(_) => Err(signed),
        },
    },
    read time |row, index| row.try_get::<Option<DateTime<Utc>>, _>(index),
    read day |row, index| row.try_get::<Option<NaiveDate>, _>(index),
);

// SQLite: times as fixed-width UTC text, days as the text of their midnight.
codec!(
    sqlite, Sqlite, SqliteRow, sqlx::sqlite::SqliteArguments,
    bind time |time| time_text(*time),
    bind day |day| time_text(day.and_time(NaiveTime::MIN).and_utc()),
    read int |row, index| row.try_get::<Option<i64>, _>(index),
    read time |row, index| row.try_get::<Option<&str>, _>(index)?.map(parse_time).transpose(),
    read day |row, index| Ok(row.try_get::<Option<&str>, _>(index)?.map(parse_time).transpose()?.map(|t| t.date_naive())),
);

/// Implements [`Executor`] for a MySQL or SQLite handle (`$executor` reborrows it as sqlx's
/// executor).
macro_rules! executor {
    ($type:ty, $dialect:expr, $module:ident, |$this:ident| $executor:expr) => {
        #[async_trait]
        impl Executor for $type {
            fn dialect(&self) -> Dialect {
                $dialect
            }

            async fn execute(&mut self, statement: &Statement) -> Result<u64, sqlx::Error> {
                let $this = self;
                Ok($module::query(statement).execute($executor).await?.rows_affected())
            }

            async fn fetch(
                &mut self,
                statement: &Statement,
                columns: &[Kind],
            ) -> Result<Vec<Row>, sqlx::Error> {
                let $this = self;
                let rows = $module::query(statement).fetch_all($executor).await?;
                rows.iter().map(|row| $module::row(row, columns)).collect()
            }
        }
    };
}

executor!(sqlx::Transaction<'static, MySql>, Dialect::MySql, mysql, |this| &mut **this);
executor!(sqlx::Transaction<'static, Sqlite>, Dialect::Sqlite, sqlite, |this| &mut **this);
executor!(sqlx::MySqlConnection, Dialect::MySql, mysql, |this| &mut *this);
executor!(sqlx::SqliteConnection, Dialect::Sqlite, sqlite, |this| &mut *this);
executor!(MySqlPool, Dialect::MySql, mysql, |this| &*this);
executor!(SqlitePool, Dialect::Sqlite, sqlite, |this| &*this);

#[async_trait]
impl Transaction for sqlx::Transaction<'static, MySql> {
    async fn commit(self: Box<Self>) -> Result<(), sqlx::Error> {
        (*self).commit().await
    }
}

#[async_trait]
impl Transaction for sqlx::Transaction<'static, Sqlite> {
    async fn commit(self: Box<Self>) -> Result<(), sqlx::Error> {
        (*self).commit().await
    }
}

#[async_trait]
impl Pool for MySqlPool {
    fn dialect(&self) -> Dialect {
        Dialect::MySql
    }

    async fn begin(&self) -> Result<Box<dyn Transaction>, sqlx::Error> {
        Ok(Box::new(sqlx::Pool::begin(self).await?))
    }

    async fn begin_read_committed(&self) -> Result<Box<dyn Transaction>, sqlx::Error> {
        let mut connection = self.acquire().await?;
        // Applies to the next transaction on this connection only.
        sqlx::raw_sql("SET TRANSACTION ISOLATION LEVEL READ COMMITTED").execute(&mut *connection).await?;
        Ok(Box::new(sqlx::Transaction::begin(connection, None).await?))
    }

    fn executor(&self) -> Box<dyn Executor> {
        Box::new(self.clone())
    }
}

#[async_trait]
impl Pool for SqlitePool {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn begin(&self) -> Result<Box<dyn Transaction>, sqlx::Error> {
        Ok(Box::new(begin_write(self).await?))
    }

    fn executor(&self) -> Box<dyn Executor> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_in_lists_a_placeholder_per_value() {
        let statement = Statement::new("SELECT id FROM t WHERE ").where_in("id", [1_i64, 2, 3]);
        assert_eq!(statement.sql, "SELECT id FROM t WHERE id IN (?, ?, ?)");
        assert_eq!(statement.args, [Value::Int(1), Value::Int(2), Value::Int(3)]);
        let none = Statement::new("SELECT id FROM t WHERE ").where_in("id", Vec::<i64>::new());
        assert_eq!(none.sql, "SELECT id FROM t WHERE id IN (NULL)");
    }

    #[test]
    fn insert_writes_a_tuple_per_row() {
        let rows = vec![vec![Value::Int(1), "a".into()], vec![Value::Int(2), Value::Null]];
        let statement = Statement::insert("t", &["id", "name"], rows);
        assert_eq!(statement.sql, "INSERT INTO t (id, name) VALUES (?, ?), (?, ?)");
        assert_eq!(statement.args.len(), 4);
    }

    #[test]
    fn upserts_in_each_dialect() {
        let updates =
            [OnConflict::Add("orders"), OnConflict::Least("first_at"), OnConflict::Replace("state")];
        assert_eq!(
            Dialect::MySql.on_conflict("id", &updates),
            " ON DUPLICATE KEY UPDATE orders = orders + VALUES(orders), first_at = LEAST(first_at, VALUES(first_at)), \
             state = VALUES(state)"
        );
        assert_eq!(
            Dialect::Sqlite.on_conflict("id", &updates),
            " ON CONFLICT (id) DO UPDATE SET orders = orders + excluded.orders, first_at = MIN(first_at, excluded.first_at), \
             state = excluded.state"
        );
    }
}
