//! Forgetting what is no longer needed: rows older than their retention, deleted in short rounds
//! so that purging never holds locks for long and keeps up with any write rate.

use std::{fmt::Display, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};

use crate::Shutdown;

/// How often old rows are looked for.
pub const PURGE_PERIOD: Duration = Duration::from_secs(60);
/// Rows deleted by one statement.
const ROUND: u32 = 1_000;

/// Until shutdown, every [`PURGE_PERIOD`]: deletes the rows `purge(before, limit)` finds older
/// than `retention`, round after round until a round deletes fewer than it may. A failure is
/// logged and the rest waits for the next period.
pub fn forget_periodically<F, Fut, E>(shutdown: &Shutdown, what: &'static str, retention: Duration, purge: F)
where
    F: Fn(DateTime<Utc>, u32) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<u64, E>> + Send,
    E: Display,
{
    let purge = Arc::new(purge);
    shutdown.spawn_periodic(PURGE_PERIOD, move || {
        let purge = purge.clone();
        async move {
            forget(what, retention, purge.as_ref()).await;
        }
    });
}

/// One pass: everything older than `retention`; how many rows went.
pub async fn forget<F, Fut, E>(what: &str, retention: Duration, purge: &F) -> u64
where
    F: Fn(DateTime<Utc>, u32) -> Fut,
    Fut: Future<Output = Result<u64, E>>,
    E: Display,
{
    let before = Utc::now() - chrono::TimeDelta::from_std(retention).unwrap_or(chrono::TimeDelta::MAX);
    let mut forgotten = 0;
    loop {
        match purge(before, ROUND).await {
            Ok(deleted) => {
                forgotten += deleted;
                if deleted < u64::from(ROUND) {
                    break;
                }
            }
            Err(error) => {
                tracing::warn!(event = "housekeeping_failed", what, error = %error, "could not forget old rows");
                break;
            }
        }
    }
    if forgotten > 0 {
        tracing::debug!(event = "rows_forgotten", what, rows = forgotten, "old rows forgotten");
    }
    forgotten
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[tokio::test]
    async fn deletes_round_after_round_until_nothing_is_left() {
        let left = AtomicU64::new(2_500);
        let purge = |_before: DateTime<Utc>, limit: u32| {
            let deleted = left.load(Ordering::SeqCst).min(u64::from(limit));
            left.fetch_sub(deleted, Ordering::SeqCst);
            async move { Ok::<_, String>(deleted) }
        };
        assert_eq!(forget("rows", Duration::from_secs(60), &purge).await, 2_500);
        assert_eq!(left.load(Ordering::SeqCst), 0);
    }
}
