//! The in-process bus's dead-letter queues: parked messages in a SQLite file, so that they
//! survive restarts like messages in a broker's dead-letter queue do.
//!
//! A row is either parked, or waiting to be delivered again (an operator replayed it). A replayed
//! row stays until its queue's consumer has handled it: it is deleted once handled, or parked
//! again with the new reason; a crash in between delivers it again after the restart.

use std::{collections::BTreeMap, path::Path};

use chrono::Utc;
use platform::{
    sql::{Executor, Kind, Row, Statement},
    sqlite::{begin_write, time_text},
};
use sqlx::SqlitePool;

use crate::{
    Delivery,
    parked::{ParkedMessage, Selection, headers},
};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/inprocess-bus/sqlite");

/// A parked message waiting to be delivered again, with its row id.
pub(crate) struct Replay {
    pub id: i64,
    pub delivery: Delivery,
}

#[derive(Clone)]
pub struct ParkedStore {
    pool: SqlitePool,
}

type ParkedRow = (i64, Option<String>, Option<String>, String, String, Vec<u8>, String, String);

const PARKED_COLUMNS: &str = "id, message_id, event_type, routing_key, headers, payload, reason, parked_at";

impl ParkedStore {
    /// Opens (creating it if needed) the store in the SQLite file at `path`.
    pub async fn open(path: &Path) -> Result<ParkedStore, platform::sqlite::SqliteError> {
        Ok(ParkedStore { pool: platform::sqlite::open(path, &MIGRATOR).await? })
    }

    pub(crate) async fn park(
        &self,
        queue: &str,
        delivery: &Delivery,
        reason: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO parked_messages \
             (queue, message_id, event_type, routing_key, headers, payload, reason, parked_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(queue)
        .bind(delivery.message_id.as_deref())
        .bind(delivery.event_type.as_deref())
        .bind(&delivery.routing_key)
        .bind(serde_json::to_string(&delivery.headers).unwrap_or_else(|_| "{}".into()))
        .bind(&delivery.payload)
        .bind(reason)
        .bind(time_text(Utc::now()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A replayed message failed again: back to parked, with the new reason.
    pub(crate) async fn park_again(&self, id: i64, reason: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE parked_messages SET replay = 0, reason = ?, parked_at = ? WHERE id = ?")
            .bind(reason)
            .bind(time_text(Utc::now()))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A replayed message was handled: it is no longer parked.
    pub(crate) async fn remove(&self, id: i64) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM parked_messages WHERE id = ?").bind(id).execute(&self.pool).await?;
        Ok(())
    }

    /// Up to `limit` messages of `queue` waiting to be delivered again, oldest first.
    pub(crate) async fn replays(&self, queue: &str, limit: usize) -> Result<Vec<Replay>, sqlx::Error> {
        let sql = format!(
            "SELECT {PARKED_COLUMNS} FROM parked_messages WHERE queue = ? AND replay = 1 ORDER BY id LIMIT ?"
        );
        let rows: Vec<ParkedRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(queue)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, message_id, event_type, routing_key, headers, payload, _, _)| Replay {
                id,
                delivery: Delivery {
                    message_id,
                    event_type,
                    routing_key,
                    headers: serde_json::from_str(&headers).unwrap_or_default(),
                    payload,
                    attempt: 1,
                    redelivered: false,
                },
            })
            .collect())
    }

    /// The parked messages of `queue` that `selection` names, oldest first; they stay parked.
    pub async fn list(&self, queue: &str, selection: &Selection) -> Result<Vec<ParkedMessage>, sqlx::Error> {
        let select = selected(PARKED_COLUMNS, queue, selection);
        let rows = Executor::fetch(&mut self.pool.clone(), &select, &PARKED_KINDS).await?;
        rows.iter().map(parked_message).collect()
    }

    /// Marks the selected parked messages of `queue` for delivery again; returns how many. The
    /// consumer of `queue` picks them up, now or when it next runs.
    pub async fn request_replay(&self, queue: &str, selection: &Selection) -> Result<usize, sqlx::Error> {
        self.change_selected("UPDATE parked_messages SET replay = 1", queue, selection).await
    }

    /// Deletes the selected parked messages of `queue`; returns how many.
    pub async fn discard(&self, queue: &str, selection: &Selection) -> Result<usize, sqlx::Error> {
        self.change_selected("DELETE FROM parked_messages", queue, selection).await
    }

    /// Runs `change` (an UPDATE or DELETE without its WHERE) on the selected rows, in one
    /// transaction with their selection.
    async fn change_selected(
        &self,
        change: &str,
        queue: &str,
        selection: &Selection,
    ) -> Result<usize, sqlx::Error> {
        let mut tx = begin_write(&self.pool).await?;
        let select = selected("id", queue, selection);
        let ids: Vec<i64> = Executor::fetch(&mut tx, &select, &[Kind::Int])
            .await?
            .iter()
            .map(|row| row.int(0))
            .collect::<Result<_, _>>()?;
        if !ids.is_empty() {
            let update = Statement::new(format!("{change} WHERE ")).where_in("id", ids.iter().copied());
            Executor::execute(&mut tx, &update).await?;
        }
        tx.commit().await?;
        Ok(ids.len())
    }

    /// Messages of `queue` waiting to be delivered again, and messages parked.
    pub async fn counts(&self, queue: &str) -> Result<(u32, u32), sqlx::Error> {
        let (replaying, parked): (i64, i64) = sqlx::query_as(
            "SELECT COALESCE(SUM(replay = 1), 0), COALESCE(SUM(replay = 0), 0) \
             FROM parked_messages WHERE queue = ?",
        )
        .bind(queue)
        .fetch_one(&self.pool)
        .await?;
        Ok((u32::try_from(replaying).unwrap_or(u32::MAX), u32::try_from(parked).unwrap_or(u32::MAX)))
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// `WHERE`, order and limit of the parked (not replaying) rows of `queue` that `selection` names.
/// `SELECT columns` of the parked (not replaying) messages of `queue` that `selection` names,
/// oldest first.
fn selected(columns: &str, queue: &str, selection: &Selection) -> Statement {
    let mut select =
        Statement::new(format!("SELECT {columns} FROM parked_messages WHERE queue = ? AND replay = 0"))
            .bind(queue);
    if !selection.ids.is_empty() {
        select = select.push(" AND ").where_in("message_id", selection.ids.iter().map(String::as_str));
    }
    if let Some(reason) = &selection.reason {
        select = select.push(" AND instr(reason, ?) > 0").bind(reason.as_str());
    }
    select.push(" ORDER BY id LIMIT ?").bind(i64::try_from(selection.limit).unwrap_or(i64::MAX))
}

/// How the columns of [`PARKED_COLUMNS`] are read.
const PARKED_KINDS: [Kind; 8] =
    [Kind::Int, Kind::Text, Kind::Text, Kind::Text, Kind::Text, Kind::Bytes, Kind::Text, Kind::Text];

/// A row of [`PARKED_COLUMNS`] as operators see it: the parking marks among its headers, as a
/// broker's dead-letter queue shows them.
fn parked_message(row: &Row) -> Result<ParkedMessage, sqlx::Error> {
    let routing_key = row.text(3)?;
    let reason = row.text(6)?;
    let mut headers: BTreeMap<String, String> = serde_json::from_str(&row.text(4)?).unwrap_or_default();
    headers.insert(headers::DEATH_REASON.into(), reason.clone());
    headers.insert(headers::FAILED_AT.into(), row.text(7)?);
    headers.insert(headers::ORIGINAL_ROUTING_KEY.into(), routing_key.clone());
    Ok(ParkedMessage {
        message_id: row.optional_text(1)?,
        event_type: row.optional_text(2)?,
        routing_key,
        reason: Some(reason),
        headers,
        payload: String::from_utf8_lossy(&row.bytes(5)?).into_owned(),
    })
}
